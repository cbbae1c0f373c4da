//! Format-independent checks of the `GenericPTE` contract, shared by the per-arch tests.
#![allow(dead_code)]

use memory_addr::PhysAddr;
use page_table_entry::{GenericPTE, MappingFlags};

/// The 128 combinations of the seven `MappingFlags`.
pub fn all_flags() -> impl Iterator<Item = MappingFlags> {
    (0..128).map(MappingFlags::from_bits_retain)
}

/// The example address of the 0.6.2 reference values.
pub const EXAMPLE: usize = 0x4020_0000;

/// Test addresses for a leaf: 0, [`EXAMPLE`], and the largest address the format holds
/// (aligned to 4 KiB, or to 2 MiB and 1 GiB for a huge leaf).
pub fn leaf_addrs<P: GenericPTE>(huge: bool) -> Vec<usize> {
    let top = 1usize << P::PA_BITS;
    if huge {
        vec![0, EXAMPLE, top - (1 << 21), top - (1 << 30)]
    } else {
        vec![0, EXAMPLE, 0x1000, top - (1 << 12)]
    }
}

/// Describes where a format's answers differ by design.
pub struct Format {
    /// Whether `is_huge()` of a leaf created with `is_huge = false` is true (RISC-V: every
    /// leaf looks the same at every level).
    pub small_leaf_is_huge: bool,
    /// Whether `new_table(0)` is the all-zero (unused) value (LoongArch: a directory entry
    /// is the bare address).
    pub table_at_zero_is_unused: bool,
}

/// Checks (b): every flag combination, huge or not, at every test address.
pub fn check_leaves<P: GenericPTE>(format: &Format) {
    for huge in [false, true] {
        let expect_huge = huge || format.small_leaf_is_huge;
        for pa in leaf_addrs::<P>(huge) {
            for f in all_flags() {
                let pte = P::new_page(PhysAddr::from(pa), f, huge);
                let ctx = format!("pa={pa:#x} flags={f:?} huge={huge} pte={pte:?}");
                let eff = P::effective_flags(f);
                assert!(!pte.is_unused(), "{ctx}");
                assert_eq!(pte.paddr(), PhysAddr::from(pa), "{ctx}");
                assert_eq!(pte.flags(), eff, "{ctx}");
                assert_eq!(pte.is_present(), f.is_accessible(), "{ctx}");
                assert_eq!(pte.is_huge(), expect_huge, "{ctx}");
                // The hardware grants at least the asked-for access, and what it grants is a
                // fixed point.
                assert!(
                    (eff & MappingFlags::ACCESS).contains(f & MappingFlags::ACCESS)
                        || !f.is_accessible(),
                    "{ctx}"
                );
                assert_eq!(P::effective_flags(eff), eff, "{ctx}");
                assert_eq!(
                    P::new_page(PhysAddr::from(pa), eff, huge).flags(),
                    eff,
                    "{ctx}"
                );
                assert_eq!(pte.bits(), pte.bits(), "{ctx}");
                assert!(!format!("{pte:?}").is_empty());

                let mut cleared = pte;
                cleared.clear();
                assert!(cleared.is_unused() && !cleared.is_present(), "{ctx}");
                assert_eq!(cleared.bits(), 0, "{ctx}");
                assert_eq!(cleared.flags(), MappingFlags::empty(), "{ctx}");
            }
        }
    }
}

/// Checks `set_flags` and `set_paddr` on entries built by `new_page`, through the trait only.
pub fn check_updates<P: GenericPTE>(format: &Format) {
    for huge in [false, true] {
        let expect_huge = huge || format.small_leaf_is_huge;
        let addrs = leaf_addrs::<P>(huge);
        for &pa in &addrs {
            for f1 in all_flags() {
                for f2 in all_flags() {
                    let mut pte = P::new_page(PhysAddr::from(pa), f1, huge);
                    pte.set_flags(f2, huge);
                    let ctx = format!("pa={pa:#x} {f1:?} -> {f2:?} huge={huge} pte={pte:?}");
                    assert!(!pte.is_unused(), "{ctx}");
                    assert_eq!(pte.paddr(), PhysAddr::from(pa), "{ctx}");
                    assert_eq!(pte.flags(), P::effective_flags(f2), "{ctx}");
                    assert_eq!(pte.is_present(), f2.is_accessible(), "{ctx}");
                    assert_eq!(pte.is_huge(), expect_huge, "{ctx}");
                }
                let pte = P::new_page(PhysAddr::from(pa), f1, huge);
                for &pa2 in &addrs {
                    let mut moved = pte;
                    moved.set_paddr(PhysAddr::from(pa2));
                    let ctx = format!("{pa:#x} -> {pa2:#x} flags={f1:?} huge={huge}");
                    assert_eq!(moved.paddr(), PhysAddr::from(pa2), "{ctx}");
                    assert_eq!(moved.flags(), pte.flags(), "{ctx}");
                    assert_eq!(moved.is_present(), pte.is_present(), "{ctx}");
                    assert_eq!(moved.is_huge(), pte.is_huge(), "{ctx}");
                    assert_eq!(
                        moved.bits(),
                        P::new_page(PhysAddr::from(pa2), f1, huge).bits(),
                        "{ctx}"
                    );
                }
            }
        }
    }
}

/// Checks (d): a table entry is present, not huge, not unused, and keeps its address.
pub fn check_tables<P: GenericPTE>(format: &Format) {
    for pa in leaf_addrs::<P>(false) {
        let pte = P::new_table(PhysAddr::from(pa));
        let ctx = format!("pa={pa:#x} pte={pte:?}");
        assert_eq!(pte.paddr(), PhysAddr::from(pa), "{ctx}");
        assert!(!pte.is_huge(), "{ctx}");
        if pa == 0 && format.table_at_zero_is_unused {
            assert!(pte.is_unused(), "{ctx}");
            continue;
        }
        assert!(!pte.is_unused(), "{ctx}");
        assert!(pte.is_present(), "{ctx}");
    }
}

/// Checks the contract on a bare 4 KiB-aligned address: a non-present entry.
pub fn check_bare_address_not_present<P: GenericPTE>(from_raw: impl Fn(u64) -> P) {
    for pa in leaf_addrs::<P>(false) {
        let pte = from_raw(pa as u64);
        assert!(!pte.is_present(), "{pte:?}");
        assert_eq!(pte.flags(), MappingFlags::empty(), "{pte:?}");
    }
}
