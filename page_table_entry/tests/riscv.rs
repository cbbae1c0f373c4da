//! Rv64PTE: hand-computed entries (RISC-V privileged spec, Sv39/Sv48/Sv57 and Svpbmt) and the
//! `GenericPTE` contract.

mod common;

use common::{EXAMPLE, Format, all_flags, leaf_addrs};
use memory_addr::PhysAddr;
use page_table_entry::{
    GenericPTE, MappingFlags as MF,
    riscv::{PTEFlags, Rv64PTE},
};

// The format has no level information: every leaf reports `is_huge`.
const FORMAT: Format = Format {
    small_leaf_is_huge: true,
    table_at_zero_is_unused: false,
};

fn page(flags: MF) -> u64 {
    Rv64PTE::new_page(PhysAddr::from(EXAMPLE), flags, false).bits() as u64
}

/// The memory-type bits of normal memory: none with Svpbmt (PMA), `C | B | SH` with the
/// T-Head MAEE attributes.
const NORMAL: u64 = if cfg!(feature = "xuantie-c9xx") {
    0x7000_0000_0000_0000
} else {
    0
};

#[test]
fn literal_leaves() {
    // The 0.6.2 values: PPN = 0x4020_0000 >> 12 in bits 10.., V|A|D on every leaf.
    assert_eq!(page(MF::READ), NORMAL | 0x1008_00c3);
    assert_eq!(page(MF::READ | MF::WRITE), NORMAL | 0x1008_00c7);
    assert_eq!(page(MF::READ | MF::EXECUTE), NORMAL | 0x1008_00cb);
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::EXECUTE),
        NORMAL | 0x1008_00cf
    );
    assert_eq!(page(MF::READ | MF::WRITE | MF::USER), NORMAL | 0x1008_00d7);
    assert_eq!(page(MF::EXECUTE), NORMAL | 0x1008_00c9); // execute-only is legal
    // `is_huge` does not change a leaf.
    let huge = Rv64PTE::new_page(PhysAddr::from(EXAMPLE), MF::READ, true);
    assert_eq!(huge.bits() as u64, NORMAL | 0x1008_00c3);

    // Deliberate differences from 0.6.2:
    // W without R is reserved, so WRITE implies R (0.6.2 panicked in debug builds).
    assert_eq!(page(MF::WRITE), NORMAL | 0x1008_00c7);
    assert_eq!(page(MF::WRITE | MF::EXECUTE), NORMAL | 0x1008_00cf);
    // Empty flags are a PROT_NONE reservation marked with RSW bit 8 (0.6.2 panicked).
    assert_eq!(page(MF::empty()), 0x1008_0100);
    assert_eq!(
        Rv64PTE::new_page(PhysAddr::from(0), MF::USER, true).bits(),
        0x100
    );
}

#[cfg(not(feature = "xuantie-c9xx"))]
#[test]
fn literal_svpbmt() {
    // Svpbmt (bits 62:61): IO = 2, NC = 1 (0.6.2 ignored DEVICE and UNCACHED).
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::DEVICE),
        0x4000_0000_1008_00c7
    );
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::UNCACHED),
        0x2000_0000_1008_00c7
    );
    assert_eq!(
        page(MF::READ | MF::DEVICE | MF::UNCACHED),
        0x4000_0000_1008_00c3
    );
    // GLOBAL: G (bit 5).
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::DEVICE | MF::GLOBAL),
        0x4000_0000_1008_00e7
    );
    let flags = |raw: u64| Rv64PTE::from_raw(raw).flags();
    assert_eq!(
        flags(0x4000_0000_1008_00c7),
        MF::READ | MF::WRITE | MF::DEVICE
    );
    assert_eq!(
        flags(0x2000_0000_1008_00c7),
        MF::READ | MF::WRITE | MF::UNCACHED
    );
    assert_eq!(flags(0x6000_0000_1008_00c7), MF::READ | MF::WRITE); // reserved PBMT 3
}

#[cfg(feature = "xuantie-c9xx")]
#[test]
fn literal_xuantie() {
    // The 0.6.2 values: normal memory C|B|SH, device SO|B.
    assert_eq!(page(MF::READ | MF::WRITE), 0x7000_0000_1008_00c7);
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::DEVICE),
        0xa000_0000_1008_00c7
    );
    assert_eq!(
        page(MF::READ | MF::WRITE | MF::UNCACHED),
        0x7000_0000_1008_00c7
    );
    assert_eq!(PTEFlags::XUANTIE_C9XX_DEVICE, PTEFlags::SO | PTEFlags::B);
    assert_eq!(
        PTEFlags::XUANTIE_C9XX_NORMAL,
        PTEFlags::C | PTEFlags::B | PTEFlags::SH
    );
    // Decoding reports DEVICE for strongly ordered memory.
    let flags = |raw: u64| Rv64PTE::from_raw(raw).flags();
    assert_eq!(
        flags(0xa000_0000_1008_00c7),
        MF::READ | MF::WRITE | MF::DEVICE
    );
    assert_eq!(flags(0x7000_0000_1008_00c7), MF::READ | MF::WRITE);
    // No Svpbmt bits besides the MAEE ones; the PROT_NONE reservation has none.
    assert_eq!(page(MF::empty()), 0x1008_0100);
}

#[test]
fn literal_tables_and_conversions() {
    let t = Rv64PTE::new_table(PhysAddr::from(0x8000_3000));
    assert_eq!(t.bits(), 0x2000_0c01);
    assert!(t.is_present() && !t.is_huge());
    assert_eq!(t.flags(), MF::empty()); // R = W = X = 0
    assert_eq!(PTEFlags::from(MF::empty()), PTEFlags::empty());
    assert_eq!(PTEFlags::from(MF::USER | MF::DEVICE), PTEFlags::empty());
    let f = PTEFlags::from(MF::WRITE | MF::USER);
    assert!(f.contains(
        PTEFlags::V | PTEFlags::R | PTEFlags::W | PTEFlags::U | PTEFlags::A | PTEFlags::D
    ));
    assert_eq!(MF::from(f) & MF::ACCESS, MF::READ | MF::WRITE);
    assert_eq!(MF::from(PTEFlags::R | PTEFlags::X), MF::empty()); // not valid
}

#[test]
fn all_leaves() {
    common::check_leaves::<Rv64PTE>(&FORMAT);
}

#[test]
fn updates() {
    common::check_updates::<Rv64PTE>(&FORMAT);
}

#[test]
fn tables() {
    common::check_tables::<Rv64PTE>(&FORMAT);
    common::check_bare_address_not_present(Rv64PTE::from_raw);
}

#[test]
fn paddr_field() {
    let top = (1usize << 56) - 0x1000;
    let pte = Rv64PTE::new_page(PhysAddr::from(top), MF::READ, false);
    // PPN bits 10-53 all set.
    assert_eq!(pte.bits() as u64 & !0x3ff & !NORMAL, 0x003f_ffff_ffff_fc00);
    assert_eq!(pte.paddr(), PhysAddr::from(top));
}

#[test]
fn set_flags_keeps_hardware_and_software_bits() {
    // A, D, RSW bit 9.
    let extras = (PTEFlags::A | PTEFlags::D).bits() as u64 | 1 << 9;
    for huge in [false, true] {
        for pa in leaf_addrs::<Rv64PTE>(huge) {
            for f1 in all_flags() {
                let base = Rv64PTE::new_page(PhysAddr::from(pa), f1, huge).bits() as u64;
                for f2 in all_flags() {
                    let mut pte = Rv64PTE::from_raw(base | extras);
                    pte.set_flags(f2, huge);
                    let want = Rv64PTE::new_page(PhysAddr::from(pa), f2, huge).bits() as u64;
                    assert_eq!(pte.bits() as u64, want | extras, "{f1:?} -> {f2:?}");
                }
            }
        }
    }
}

#[test]
fn no_reserved_encodings() {
    for f in all_flags() {
        for huge in [false, true] {
            for pa in leaf_addrs::<Rv64PTE>(huge) {
                let pte = Rv64PTE::new_page(PhysAddr::from(pa), f, huge);
                let raw = pte.bits() as u64;
                let flags = PTEFlags::from_bits_retain(pte.bits());
                if flags.contains(PTEFlags::V) {
                    // W without R is reserved; a valid leaf has R or X.
                    assert!(
                        !flags.contains(PTEFlags::W) || flags.contains(PTEFlags::R),
                        "{f:?}"
                    );
                    assert!(flags.intersects(PTEFlags::R | PTEFlags::X), "{f:?}");
                    if cfg!(feature = "xuantie-c9xx") {
                        assert_eq!(raw & (0x3f << 54), 0, "{f:?}");
                    } else {
                        // Bits 60:54 are reserved, PBMT 3 is reserved, N needs Svnapot.
                        assert_eq!(raw & (0x7f << 54), 0, "{f:?}");
                        assert_ne!(raw >> 61 & 3, 3, "{f:?}");
                        assert_eq!(raw >> 63, 0, "{f:?}");
                    }
                } else {
                    // A reservation: nothing but the marker and the PPN.
                    assert_eq!(raw & !0x003f_ffff_ffff_fc00, 0x100, "{f:?}");
                }
            }
        }
    }
    // A table has no leaf-only bits.
    let t = Rv64PTE::new_table(PhysAddr::from(EXAMPLE)).bits() as u64;
    assert_eq!(t & 0x3ff, 1);
    assert_eq!(t >> 54, 0);
}
