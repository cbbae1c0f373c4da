//! `MappingFlags` keeps the 0.6 bit values and `Debug` form.

use page_table_entry::MappingFlags as F;

#[test]
fn bits_are_those_of_0_6() {
    assert_eq!(
        [
            F::READ,
            F::WRITE,
            F::EXECUTE,
            F::USER,
            F::DEVICE,
            F::UNCACHED
        ]
        .map(|f| f.bits()),
        [1, 2, 4, 8, 16, 32]
    );
}

#[test]
fn debug_prints_the_flag_names() {
    assert_eq!(format!("{:?}", F::READ | F::WRITE), "READ | WRITE");
    assert_eq!(format!("{:?}", F::empty()), "0x0");
}

#[test]
fn accessible_means_any_access_permission() {
    assert!(!F::empty().is_accessible());
    assert!(!(F::USER | F::DEVICE).is_accessible());
    assert!(F::EXECUTE.is_accessible());
}
