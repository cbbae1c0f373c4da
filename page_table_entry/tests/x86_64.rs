//! X64PTE: hand-computed encodings (Intel SDM vol. 3A, 4.5) and the `GenericPTE` contract.

mod common;

use common::{EXAMPLE, Format, all_flags, leaf_addrs};
use memory_addr::PhysAddr;
use page_table_entry::{
    GenericPTE, MappingFlags as MF,
    x86_64::{PTF, X64PTE},
};

const FORMAT: Format = Format {
    small_leaf_is_huge: false,
    table_at_zero_is_unused: false,
};

fn page(flags: MF, huge: bool) -> u64 {
    X64PTE::new_page(PhysAddr::from(EXAMPLE), flags, huge).bits() as u64
}

#[test]
fn literal_leaves() {
    // The 0.6.2 values, where the encoding agrees.
    assert_eq!(page(MF::READ, false), 0x8000_0000_4020_0001); // P | XD
    assert_eq!(page(MF::READ | MF::WRITE, false), 0x8000_0000_4020_0003); // P | RW | XD
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::EXECUTE, false),
        0x0000_0000_4020_0003
    );
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::USER, false),
        0x8000_0000_4020_0007
    );
    // DEVICE: PCD | PWT, UC under the power-on PAT (entry 3).
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::DEVICE, false),
        0x8000_0000_4020_001b
    );
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::DEVICE | MF::UNCACHED, false),
        0x8000_0000_4020_001b
    );
    assert_eq!(page(MF::READ | MF::WRITE, true), 0x8000_0000_4020_0083); // + PS
    assert_eq!(page(MF::WRITE, false), 0x8000_0000_4020_0003); // READ is implied
    assert_eq!(page(MF::EXECUTE, false), 0x0000_0000_4020_0001);
    // GLOBAL: G (bit 8), in a page and in a huge leaf.
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::GLOBAL, false),
        0x8000_0000_4020_0103
    );
    assert_eq!(
        page(MF::READ | MF::EXECUTE | MF::GLOBAL, true),
        0x0000_0000_4020_0181
    );
    assert_eq!(
        X64PTE::from_raw(0x8000_0000_4020_0107).flags(),
        MF::READ | MF::WRITE | MF::USER | MF::GLOBAL
    );

    // Deliberate differences from 0.6.2:
    // UNCACHED is PCD alone (UC-, PAT entry 2) so that it decodes apart from DEVICE
    // (0.6.2 wrote 0x...1b and decoded it as UNCACHED).
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::UNCACHED, false),
        0x8000_0000_4020_0013
    );
    // Empty flags are a PROT_NONE reservation marked with the available bit 9 (0.6.2 wrote
    // the bare address, which is zero at address 0).
    assert_eq!(page(MF::empty(), false), 0x0000_0000_4020_0200);
    assert_eq!(page(MF::USER | MF::DEVICE, true), 0x0000_0000_4020_0280);
    assert_eq!(
        X64PTE::new_page(PhysAddr::from(0), MF::empty(), false).bits(),
        0x200
    );
}

#[test]
fn literal_decoding() {
    let flags = |raw: u64| X64PTE::from_raw(raw).flags();
    assert_eq!(flags(0x8000_0000_4020_0003), MF::READ | MF::WRITE);
    assert_eq!(
        flags(0x8000_0000_4020_001b),
        MF::READ | MF::WRITE | MF::DEVICE
    );
    assert_eq!(
        flags(0x8000_0000_4020_0013),
        MF::READ | MF::WRITE | MF::UNCACHED
    );
    // PWT alone is write-through: neither DEVICE nor UNCACHED.
    assert_eq!(
        flags(0x0000_0000_4020_000d),
        MF::READ | MF::EXECUTE | MF::USER
    );
    assert_eq!(flags(0x8000_0000_4020_0262), MF::empty()); // not present
    assert_eq!(MF::from(PTF::PRESENT | PTF::NO_EXECUTE), MF::READ);
    assert_eq!(PTF::from(MF::empty()), PTF::empty());
    assert_eq!(PTF::from(MF::USER | MF::DEVICE), PTF::empty());
    assert_eq!(
        PTF::from(MF::WRITE | MF::USER | MF::UNCACHED),
        PTF::PRESENT | PTF::WRITABLE | PTF::USER_ACCESSIBLE | PTF::NO_CACHE | PTF::NO_EXECUTE
    );
}

#[test]
fn literal_table() {
    let t = X64PTE::new_table(PhysAddr::from(0x8000_3000));
    assert_eq!(t.bits(), 0x8000_3007); // P | RW | US
    assert_eq!(X64PTE::empty().bits(), 0);
    assert_eq!(X64PTE::from_raw(0x1234_5007).bits(), 0x1234_5007);
}

#[test]
fn huge_pat_bit_is_not_address() {
    // Huge RW page at 0x4020_0000 with the PAT bit (12) set: the address is unaffected.
    let mut pte = X64PTE::from_raw(0x8000_0000_4020_1083);
    assert!(pte.is_huge());
    assert_eq!(pte.paddr(), PhysAddr::from(0x4020_0000));
    // set_paddr keeps the PAT bit, as every other bit.
    pte.set_paddr(PhysAddr::from(0x8000_0000));
    assert_eq!(pte.bits(), 0x8000_0000_8000_1083);
    // set_flags rewrites the memory type, PAT included.
    pte.set_flags(MF::READ | MF::WRITE, true);
    assert_eq!(pte.bits(), 0x8000_0000_8000_0083);
    // new_page never sets PAT, even from a misaligned address.
    let pte = X64PTE::new_page(PhysAddr::from(0x4020_1000), MF::READ, true);
    assert_eq!(pte.bits(), 0x8000_0000_4020_0081);
    // A 4 KiB leaf keeps bit 12 as an address bit.
    let pte = X64PTE::new_page(PhysAddr::from(0x4020_1000), MF::READ, false);
    assert_eq!(pte.paddr(), PhysAddr::from(0x4020_1000));
}

#[test]
fn all_leaves() {
    common::check_leaves::<X64PTE>(&FORMAT);
}

#[test]
fn updates() {
    common::check_updates::<X64PTE>(&FORMAT);
}

#[test]
fn tables() {
    common::check_tables::<X64PTE>(&FORMAT);
    common::check_bare_address_not_present(X64PTE::from_raw);
}

#[test]
fn set_flags_keeps_hardware_and_software_bits() {
    let extras = PTF::ACCESSED
        | PTF::DIRTY
        | PTF::BIT_10
        | PTF::BIT_11
        | PTF::BIT_52
        | PTF::BIT_58
        | PTF::BIT_62;
    for huge in [false, true] {
        for pa in leaf_addrs::<X64PTE>(huge) {
            for f1 in all_flags() {
                let base = X64PTE::new_page(PhysAddr::from(pa), f1, huge).bits() as u64;
                for f2 in all_flags() {
                    let mut pte = X64PTE::from_raw(base | extras.bits());
                    pte.set_flags(f2, huge);
                    let want = X64PTE::new_page(PhysAddr::from(pa), f2, huge).bits() as u64;
                    assert_eq!(pte.bits() as u64, want | extras.bits(), "{f1:?} -> {f2:?}");
                }
            }
        }
    }
}

#[test]
fn no_reserved_encodings() {
    for f in all_flags() {
        for pa in leaf_addrs::<X64PTE>(false) {
            let raw = X64PTE::new_page(PhysAddr::from(pa), f, false).bits() as u64;
            // PS (PAT of a 4 KiB page) only for a huge leaf.
            assert_eq!(raw & PTF::HUGE_PAGE.bits(), 0, "{f:?}");
            // Hardware-owned bits are never set by the library; G exactly with GLOBAL.
            assert_eq!(raw & (PTF::ACCESSED | PTF::DIRTY).bits(), 0);
            let global = f.is_accessible() && f.contains(MF::GLOBAL);
            assert_eq!(raw & PTF::GLOBAL.bits() != 0, global, "{f:?}");
        }
        for pa in leaf_addrs::<X64PTE>(true) {
            let raw = X64PTE::new_page(PhysAddr::from(pa), f, true).bits() as u64;
            assert_ne!(raw & PTF::HUGE_PAGE.bits(), 0, "{f:?}");
            assert_eq!(raw & (1 << 12), 0, "PAT set: {f:?}");
        }
    }
}

/// The used-entry count of a table entry lives in bits 62:52, which the SDM (table 4-15)
/// says the processor ignores in a PML4E/PDPTE/PDE that references a table.
#[test]
fn table_count_field() {
    let mut pte = X64PTE::new_table(PhysAddr::from(0x12_3456_7000));
    pte.set_table_count(512);
    assert_eq!(pte.bits() as u64, 0x2000_0012_3456_7007);
    assert_eq!(pte.table_count(), 512);
    assert_eq!(pte.add_table_count(-1), 511);
    assert_eq!(pte.bits() as u64, 0x1ff0_0012_3456_7007);
    assert_eq!(pte.add_table_count(-511), 0);
    assert_eq!(pte.bits() as u64, 0x0000_0012_3456_7007);
    assert_eq!(pte.add_table_count(3), 3);
    assert_eq!(pte.bits() as u64, 0x0030_0012_3456_7007);
    // Bit 63 (XD) and the address are kept whatever the count does.
    let mut pte = X64PTE::from_raw(0x8000_0012_3456_7007);
    for count in 0..=512usize {
        pte.set_table_count(count);
        let mut up = pte;
        if count < 512 {
            assert_eq!(up.add_table_count(1), count + 1);
            assert_eq!(
                up.bits() as u64,
                0x8000_0012_3456_7007 | ((count as u64 + 1) << 52)
            );
        }
        let mut down = pte;
        if count > 0 {
            assert_eq!(down.add_table_count(-1), count - 1);
            assert_eq!(
                down.bits() as u64,
                0x8000_0012_3456_7007 | ((count as u64 - 1) << 52)
            );
        }
    }
}
