//! LA64PTE: hand-computed entries (LoongArch Reference Manual vol. 1, 4 KiB pages) and the
//! `GenericPTE` contract.

mod common;

use common::{EXAMPLE, Format, all_flags, leaf_addrs};
use memory_addr::PhysAddr;
use page_table_entry::{
    GenericPTE, MappingFlags as MF,
    loongarch64::{LA64PTE, PTEFlags},
};

// A directory entry is the bare table address, so a table at address 0 is all zero.
const FORMAT: Format = Format {
    small_leaf_is_huge: false,
    table_at_zero_is_unused: true,
};

fn page(flags: MF, huge: bool) -> u64 {
    LA64PTE::new_page(PhysAddr::from(EXAMPLE), flags, huge).bits() as u64
}

#[test]
fn literal_leaves() {
    // The 0.6.2 values. R: V | P | MAT=CC (0x10) | NX.
    assert_eq!(page(MF::READ, false), 0x4000_0000_4020_0091);
    // RW: + W | D.
    assert_eq!(page(MF::READ | MF::WRITE, false), 0x4000_0000_4020_0193);
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::EXECUTE, false),
        0x0000_0000_4020_0193
    );
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::USER, false),
        0x4000_0000_4020_019f
    ); // PLV 3
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::DEVICE, false),
        0x4000_0000_4020_0183
    ); // SUC
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::UNCACHED, false),
        0x4000_0000_4020_01a3
    ); // WUC
    assert_eq!(page(MF::READ | MF::WRITE, true), 0x4000_0000_4020_01d3); // + GH
    assert_eq!(page(MF::WRITE, false), 0x6000_0000_4020_0193); // NR | NX
    assert_eq!(page(MF::EXECUTE, false), 0x2000_0000_4020_0091); // NR

    // Deliberate difference from 0.6.2: empty flags are a PROT_NONE reservation marked with
    // software bit 10 (0.6.2 wrote the bare address, which LDDIR would follow as a table).
    assert_eq!(page(MF::empty(), false), 0x0000_0000_4020_0400);
    assert_eq!(page(MF::USER, true), 0x0000_0000_4020_0440);
}

#[test]
fn literal_decoding() {
    let flags = |raw: u64| LA64PTE::from_raw(raw).flags();
    assert_eq!(
        flags(0x4000_0000_4020_019f),
        MF::READ | MF::WRITE | MF::USER
    );
    assert_eq!(flags(0x6000_0000_4020_0193), MF::WRITE);
    assert_eq!(
        flags(0x4000_0000_4020_0183),
        MF::READ | MF::WRITE | MF::DEVICE
    );
    assert_eq!(
        flags(0x4000_0000_4020_01a3),
        MF::READ | MF::WRITE | MF::UNCACHED
    );
    assert_eq!(flags(0x4000_0000_4020_01b3), MF::READ | MF::WRITE); // MAT 3
    assert_eq!(flags(0x4000_0000_4020_0113), MF::empty()); // P clear
    assert_eq!(flags(0x8000_3000), MF::empty()); // a table
    assert_eq!(PTEFlags::from(MF::empty()), PTEFlags::empty());
    assert_eq!(PTEFlags::from(MF::USER | MF::DEVICE), PTEFlags::empty());
    assert_eq!(
        MF::from(PTEFlags::from(MF::WRITE | MF::EXECUTE)),
        MF::WRITE | MF::EXECUTE
    );
}

#[test]
fn literal_tables() {
    // A directory entry is the next table's address only (LDDIR reads the raw value).
    let t = LA64PTE::new_table(PhysAddr::from(0x8000_3000));
    assert_eq!(t.bits(), 0x8000_3000);
    // Deliberate difference from 0.6.2: a table counts as present, so a walk sees it.
    assert!(t.is_present() && !t.is_huge() && !t.is_unused());
    assert!(!LA64PTE::empty().is_present());
    // A PROT_NONE reservation is not a table.
    assert!(!LA64PTE::from_raw(0x400).is_present());
}

#[test]
fn huge_global_bit_is_not_address() {
    // A huge RW leaf with HG (bit 12) set.
    let mut pte = LA64PTE::from_raw(0x4000_0000_4020_11d3);
    assert!(pte.is_huge());
    assert_eq!(pte.paddr(), PhysAddr::from(0x4020_0000));
    pte.set_paddr(PhysAddr::from(0x8000_0000));
    assert_eq!(pte.bits(), 0x4000_0000_8000_11d3);
    assert_eq!(pte.flags(), MF::READ | MF::WRITE | MF::GLOBAL);
    // HG follows GLOBAL.
    pte.set_flags(MF::READ, true);
    assert_eq!(pte.bits(), 0x4000_0000_8000_00d1);
    pte.set_flags(MF::READ | MF::GLOBAL, true);
    assert_eq!(pte.bits(), 0x4000_0000_8000_10d1);
    assert_eq!(
        LA64PTE::new_page(PhysAddr::from(0x4020_1000), MF::READ, true).bits(),
        0x4000_0000_4020_00d1
    );
    assert_eq!(
        LA64PTE::new_page(PhysAddr::from(0x4020_1000), MF::READ | MF::GLOBAL, true).bits(),
        0x4000_0000_4020_10d1
    );
}

#[test]
fn global_page_keeps_address_bit_12() {
    // A 4 KiB page's global bit is bit 6 (which reads as GH in a directory entry); software
    // bit 11 marks that use, and bit 12 stays an address bit.
    let mut pte = LA64PTE::new_page(PhysAddr::from(0x4020_1000), MF::READ | MF::GLOBAL, false);
    assert_eq!(pte.bits(), 0x4000_0000_4020_18d1);
    assert!(!pte.is_huge());
    assert_eq!(pte.paddr(), PhysAddr::from(0x4020_1000));
    assert_eq!(pte.flags(), MF::READ | MF::GLOBAL);
    pte.set_paddr(PhysAddr::from(0x8000_3000));
    assert_eq!(pte.paddr(), PhysAddr::from(0x8000_3000));
    pte.set_flags(MF::READ | MF::WRITE, false);
    assert_eq!(pte.bits(), 0x4000_0000_8000_3193);
    assert_eq!(pte.flags(), MF::READ | MF::WRITE);
    // GLOBAL without access: a plain reservation.
    assert_eq!(
        LA64PTE::new_page(PhysAddr::from(0x4020_1000), MF::GLOBAL, false).bits(),
        0x4020_1400
    );
}

#[test]
fn all_leaves() {
    common::check_leaves::<LA64PTE>(&FORMAT);
}

#[test]
fn updates() {
    common::check_updates::<LA64PTE>(&FORMAT);
}

#[test]
fn tables() {
    common::check_tables::<LA64PTE>(&FORMAT);
}

#[test]
fn set_flags_keeps_hardware_and_software_bits() {
    for huge in [false, true] {
        // Software bit 9, RPLV.
        let extras = 1 << 9 | PTEFlags::RPLV.bits();
        for pa in leaf_addrs::<LA64PTE>(huge) {
            for f1 in all_flags() {
                let base = LA64PTE::new_page(PhysAddr::from(pa), f1, huge).bits() as u64;
                for f2 in all_flags() {
                    let mut pte = LA64PTE::from_raw(base | extras);
                    pte.set_flags(f2, huge);
                    let want = LA64PTE::new_page(PhysAddr::from(pa), f2, huge).bits() as u64;
                    assert_eq!(pte.bits() as u64, want | extras, "{f1:?} -> {f2:?}");
                    assert_eq!(pte.paddr(), PhysAddr::from(pa));
                }
            }
        }
    }
}

#[test]
fn no_reserved_encodings() {
    for f in all_flags() {
        for huge in [false, true] {
            for pa in leaf_addrs::<LA64PTE>(huge) {
                let raw = LA64PTE::new_page(PhysAddr::from(pa), f, huge).bits() as u64;
                // MAT 3 is reserved; RPLV is never set; D only with W.
                assert_ne!(raw >> 4 & 3, 3, "{f:?}");
                assert_eq!(raw & PTEFlags::RPLV.bits(), 0, "{f:?}");
                assert_eq!(raw >> 1 & 1, raw >> 8 & 1, "{f:?}");
                let global = f.is_accessible() && f.contains(MF::GLOBAL);
                // HG (bit 12 of a huge leaf) exactly for a global huge page.
                if huge {
                    assert_eq!(raw & PTEFlags::G.bits() != 0, global, "{f:?}");
                }
                // Bit 6 is GH in a huge leaf, and G (marked by bit 11) in a page.
                assert_eq!(raw & PTEFlags::GH.bits() != 0, huge || global, "{f:?}");
                assert_eq!(raw & 1 << 11 != 0, !huge && global, "{f:?}");
                // V and P together.
                assert_eq!(raw & 1, raw >> 7 & 1, "{f:?}");
            }
        }
    }
}
