//! A64PTEOf: hand-computed descriptors (Arm ARM D8, VMSAv8-64 4 KiB granule) and the
//! `GenericPTE` contract, in both regimes.

mod common;

use common::{EXAMPLE, Format, all_flags, leaf_addrs};
use memory_addr::PhysAddr;
use page_table_entry::{
    GenericPTE, MappingFlags as MF,
    aarch64::{A64PTE, A64PTEEl1, A64PTEEl2, A64PTEOf, DescriptorAttr as DA, MemAttr, Regime},
};

const FORMAT: Format = Format {
    small_leaf_is_huge: false,
    table_at_zero_is_unused: false,
};

fn el1(flags: MF, huge: bool) -> u64 {
    A64PTEEl1::new_page(PhysAddr::from(EXAMPLE), flags, huge).bits() as u64
}

fn el2(flags: MF, huge: bool) -> u64 {
    A64PTEEl2::new_page(PhysAddr::from(EXAMPLE), flags, huge).bits() as u64
}

#[test]
fn mair_value() {
    assert_eq!(MemAttr::MAIR_VALUE, 0x44_ff_04);
    assert_eq!(MemAttr::Device as u64, 0);
    assert_eq!(MemAttr::Normal as u64, 1);
    assert_eq!(MemAttr::NormalNonCacheable as u64, 2);
    assert_eq!(DA::from_mem_attr(MemAttr::Device).bits(), 0);
    assert_eq!(DA::from_mem_attr(MemAttr::Normal).bits(), 0x304); // AttrIndx 1, SH = 11
    assert_eq!(DA::from_mem_attr(MemAttr::NormalNonCacheable).bits(), 0x308);
    assert_eq!(
        DA::from_bits_retain(0x70b).mem_attr(),
        Some(MemAttr::NormalNonCacheable)
    );
    assert_eq!(
        DA::from_bits_retain(0x403).mem_attr(),
        Some(MemAttr::Device)
    );
    assert_eq!(DA::from_bits_retain(0x0c).mem_attr(), None); // AttrIndx 3
}

#[test]
fn literal_el1() {
    // The 0.6.2 values, where the encoding agrees: 0.6.2 never set nG, so its leaves match
    // ours with GLOBAL.
    // R: VALID|NON_BLOCK|AttrIndx 1|AP_RO|SH 11|AF, UXN|PXN.
    let g = MF::GLOBAL;
    assert_eq!(el1(MF::READ | g, false), 0x0060_0000_4020_0787);
    assert_eq!(el1(MF::READ | MF::WRITE | g, false), 0x0060_0000_4020_0707);
    assert_eq!(
        el1(MF::READ | MF::WRITE | MF::EXECUTE | g, false),
        0x0040_0000_4020_0707
    );
    assert_eq!(
        el1(MF::READ | MF::WRITE | MF::DEVICE | g, false),
        0x0060_0000_4020_0403
    );
    assert_eq!(
        el1(MF::READ | MF::WRITE | MF::UNCACHED | g, false),
        0x0060_0000_4020_070b
    );
    assert_eq!(el1(MF::READ | MF::WRITE | g, true), 0x0060_0000_4020_0705); // block: bit 1 clear
    assert_eq!(el1(MF::empty(), false), 0x0000_0000_4020_0402); // AF | NON_BLOCK, not valid
    assert_eq!(el1(g, false), 0x0000_0000_4020_0402); // GLOBAL alone grants no access

    // Deliberate differences from 0.6.2:
    // Without GLOBAL a leaf is non-global (nG, bit 11): tagged with the ASID.
    assert_eq!(el1(MF::READ, false), 0x0060_0000_4020_0f87);
    assert_eq!(el1(MF::READ | MF::WRITE, true), 0x0060_0000_4020_0f05);
    // User pages (0.6.2: 0x0060_..._0747 and 0x0020_..._0747).
    assert_eq!(
        el1(MF::READ | MF::WRITE | MF::USER, false),
        0x0060_0000_4020_0f47
    );
    assert_eq!(
        el1(MF::READ | MF::WRITE | MF::EXECUTE | MF::USER, false),
        0x0020_0000_4020_0f47
    );
    // A global user page (a vDSO-style page shared by every address space).
    assert_eq!(
        el1(MF::READ | MF::EXECUTE | MF::USER | g, false),
        0x0020_0000_4020_07c7
    );
    // WRITE or EXECUTE without READ give a valid, readable descriptor (0.6.2: invalid).
    assert_eq!(el1(MF::WRITE, false), 0x0060_0000_4020_0f07);
    assert_eq!(el1(MF::EXECUTE, false), 0x0040_0000_4020_0f87);
    assert_eq!(el1(MF::EXECUTE | MF::USER, false), 0x0020_0000_4020_0fc7);
    // A huge PROT_NONE reservation: AF only (bit 1 clear marks the block).
    assert_eq!(el1(MF::USER, true), 0x0000_0000_4020_0400);
}

#[test]
fn literal_el2() {
    // Deliberate difference from 0.6.2 (0x0040_..._0707 and 0x..._0707): AP[1] (bit 6) is
    // RES1 in a regime with one Exception level (Arm ARM D8.4.1.2.1), so it is set.
    assert_eq!(el2(MF::READ | MF::WRITE, false), 0x0040_0000_4020_0747);
    assert_eq!(
        el2(MF::READ | MF::WRITE | MF::EXECUTE, false),
        0x0000_0000_4020_0747
    );
    // USER cannot be expressed and is dropped; bit 53 (RES0) is never set.
    assert_eq!(
        el2(MF::READ | MF::WRITE | MF::USER, false),
        0x0040_0000_4020_0747
    );
    assert_eq!(el2(MF::READ | MF::DEVICE, true), 0x0040_0000_4020_04c1);
    // No ASID: nG is never set, and GLOBAL is neither encoded nor reported.
    assert_eq!(
        el2(MF::READ | MF::WRITE | MF::GLOBAL, false),
        0x0040_0000_4020_0747
    );
    assert_eq!(el2(MF::empty(), false), 0x0000_0000_4020_0402);
    assert_eq!(
        A64PTEEl2::new_page(PhysAddr::from(EXAMPLE), MF::READ | MF::USER, false).flags(),
        MF::READ
    );
}

#[test]
fn literal_tables() {
    assert_eq!(
        A64PTEEl1::new_table(PhysAddr::from(0x8000_3000)).bits(),
        0x8000_3003
    );
    assert_eq!(
        A64PTEEl2::new_table(PhysAddr::from(0x8000_3000)).bits(),
        0x8000_3003
    );
    assert_eq!(
        A64PTEEl1::from_raw(0x8000_3003).paddr(),
        PhysAddr::from(0x8000_3000)
    );
}

#[test]
fn literal_decoding() {
    let e1 = |raw: u64| A64PTEEl1::from_raw(raw).flags();
    let e2 = |raw: u64| A64PTEEl2::from_raw(raw).flags();
    // 0.6.2 user page without nG decodes as a global user page.
    assert_eq!(
        e1(0x0020_0000_4020_0747),
        MF::READ | MF::WRITE | MF::EXECUTE | MF::USER | MF::GLOBAL
    );
    assert_eq!(
        e1(0x0020_0000_4020_0f47),
        MF::READ | MF::WRITE | MF::EXECUTE | MF::USER
    );
    // Kernel page: EXECUTE follows PXN, and UXN does not matter.
    assert_eq!(e1(0x0020_0000_4020_0f07), MF::READ | MF::WRITE);
    assert_eq!(
        e1(0x0040_0000_4020_0707),
        MF::READ | MF::WRITE | MF::EXECUTE | MF::GLOBAL
    );
    // EL2: only bit 54 counts, AP[1] does not mean USER.
    assert_eq!(
        e2(0x0020_0000_4020_0747),
        MF::READ | MF::WRITE | MF::EXECUTE
    );
    assert_eq!(e2(0x0040_0000_4020_0747), MF::READ | MF::WRITE);
    // Not valid.
    assert_eq!(e1(0x0000_0000_4020_0402), MF::empty());
    assert_eq!(e2(0x0060_0000_4020_0786), MF::empty());
}

#[test]
fn alias_and_conversions() {
    // `A64PTE` works as in 0.6.
    assert!(A64PTE::empty().is_unused());
    assert!(!A64PTE::empty().is_huge()); // 0.6.2 reported an all-zero entry as huge
    let pte = A64PTE::new_page(
        PhysAddr::from(EXAMPLE),
        MF::READ | MF::WRITE | MF::USER,
        false,
    );
    let attr = DA::from(MF::READ | MF::WRITE | MF::USER);
    if cfg!(feature = "arm-el2") {
        assert_eq!(
            pte.bits(),
            A64PTEEl2::new_page(
                PhysAddr::from(EXAMPLE),
                MF::READ | MF::WRITE | MF::USER,
                false
            )
            .bits()
        );
        assert_eq!(pte.flags(), MF::READ | MF::WRITE);
        assert_eq!(attr.bits(), 0x0040_0000_0000_0345);
        assert_eq!(MF::from(attr), MF::READ | MF::WRITE);
    } else {
        assert_eq!(pte.bits(), 0x0060_0000_4020_0f47);
        assert_eq!(pte.flags(), MF::READ | MF::WRITE | MF::USER);
        assert_eq!(attr.bits(), 0x0060_0000_0000_0b45);
        assert_eq!(MF::from(attr), MF::READ | MF::WRITE | MF::USER);
    }
    assert_eq!(DA::from(MF::empty()), DA::empty());
    assert_eq!(DA::from(MF::USER | MF::DEVICE), DA::empty());
    // A table descriptor has no attributes; it decodes like 0.6.2, plus GLOBAL (nG clear)
    // in the EL1&0 regime.
    let global = if cfg!(feature = "arm-el2") {
        MF::empty()
    } else {
        MF::GLOBAL
    };
    assert_eq!(
        MF::from(DA::VALID | DA::NON_BLOCK),
        MF::READ | MF::WRITE | MF::EXECUTE | MF::DEVICE | global
    );
}

fn contract<R: Regime>() {
    common::check_leaves::<A64PTEOf<R>>(&FORMAT);
    common::check_updates::<A64PTEOf<R>>(&FORMAT);
    common::check_tables::<A64PTEOf<R>>(&FORMAT);
    common::check_bare_address_not_present(A64PTEOf::<R>::from_raw);
}

#[test]
fn contract_el1() {
    contract::<page_table_entry::aarch64::El1>();
    // USER and GLOBAL survive in EL1&0, and nG is set exactly without GLOBAL.
    for f in all_flags().filter(|f| f.is_accessible()) {
        let e = A64PTEEl1::effective_flags(f);
        assert_eq!(e.contains(MF::USER), f.contains(MF::USER));
        assert_eq!(e.contains(MF::GLOBAL), f.contains(MF::GLOBAL));
        let raw = el1(f, false);
        assert_eq!(raw & DA::NG.bits() == 0, f.contains(MF::GLOBAL), "{f:?}");
    }
}

#[test]
fn contract_el2() {
    contract::<page_table_entry::aarch64::El2>();
    for f in all_flags() {
        assert!(!A64PTEEl2::effective_flags(f).intersects(MF::USER | MF::GLOBAL));
    }
}

fn keeps_bits<R: Regime>() {
    // DBM (51), Contiguous (52), software bits 55-58, NS.
    let extras = 1 << 51 | DA::CONTIGUOUS.bits() | 0xf << 55 | DA::NS.bits();
    for huge in [false, true] {
        for pa in leaf_addrs::<A64PTEOf<R>>(huge) {
            for f1 in all_flags() {
                let base = A64PTEOf::<R>::new_page(PhysAddr::from(pa), f1, huge).bits() as u64;
                for f2 in all_flags() {
                    let mut pte = A64PTEOf::<R>::from_raw(base | extras);
                    pte.set_flags(f2, huge);
                    let want = A64PTEOf::<R>::new_page(PhysAddr::from(pa), f2, huge).bits() as u64;
                    assert_eq!(pte.bits() as u64, want | extras, "{f1:?} -> {f2:?}");
                }
            }
        }
    }
}

#[test]
fn set_flags_keeps_hardware_and_software_bits() {
    keeps_bits::<page_table_entry::aarch64::El1>();
    keeps_bits::<page_table_entry::aarch64::El2>();
    // nG follows GLOBAL both ways.
    let mut pte = A64PTEEl1::from_raw(0x0060_0000_4020_0707);
    pte.set_flags(MF::READ | MF::USER, false);
    assert_eq!(pte.bits(), 0x0060_0000_4020_0fc7);
    pte.set_flags(MF::READ | MF::GLOBAL, false);
    assert_eq!(pte.bits(), 0x0060_0000_4020_0787);
    // EL2 clears the ignored nG.
    let mut pte = A64PTEEl2::from_raw(0x0060_0000_4020_0f47);
    pte.set_flags(MF::READ, false);
    assert_eq!(pte.bits(), 0x0040_0000_4020_07c7);
}

fn no_reserved<R: Regime>(el2: bool) {
    for f in all_flags() {
        for huge in [false, true] {
            for pa in leaf_addrs::<A64PTEOf<R>>(huge) {
                let raw = A64PTEOf::<R>::new_page(PhysAddr::from(pa), f, huge).bits() as u64;
                let valid = raw & DA::VALID.bits() != 0;
                let non_block = raw & DA::NON_BLOCK.bits() != 0;
                // bit0 = 1, bit1 = 0 (a block; reserved at level 3) only when asked for huge.
                assert_eq!(non_block, !huge, "{f:?} huge={huge}");
                if valid {
                    assert_ne!(raw & DA::AF.bits(), 0);
                    // Never the reserved SH = 01; never a table-only bit.
                    assert_ne!(raw & 0x300, 0x100);
                    assert_eq!(raw & (0x1f << 59), 0);
                    assert!(DA::from_bits_retain(raw).mem_attr().is_some());
                    if el2 {
                        assert_ne!(raw & DA::AP_EL0.bits(), 0, "AP[1] is RES1 at EL2");
                        assert_eq!(raw & DA::PXN.bits(), 0, "bit 53 is RES0 at EL2");
                        assert_eq!(raw & DA::NG.bits(), 0);
                    }
                }
            }
        }
    }
}

#[test]
fn no_reserved_encodings() {
    no_reserved::<page_table_entry::aarch64::El1>(false);
    no_reserved::<page_table_entry::aarch64::El2>(true);
}

/// The used-entry count of a table descriptor lives in bits 11:2, which the Arm ARM (D8.3.1,
/// table descriptor format) defines as ignored.
#[test]
fn table_count_field() {
    let mut pte = A64PTEEl1::new_table(PhysAddr::from(0x8000_3000));
    pte.set_table_count(512);
    assert_eq!(pte.bits(), 0x8000_3803);
    assert_eq!(pte.table_count(), 512);
    assert_eq!(pte.add_table_count(-1), 511);
    assert_eq!(pte.bits(), 0x8000_37ff);
    assert_eq!(pte.add_table_count(-511), 0);
    assert_eq!(pte.bits(), 0x8000_3003);
    assert_eq!(pte.add_table_count(5), 5);
    assert_eq!(pte.bits(), 0x8000_3017);
    // The table attributes (bits 63:59) and the address are kept whatever the count does.
    let base = 0xf800_0000_8000_3003u64;
    for count in 0..=512usize {
        let mut pte = A64PTEEl1::from_raw(base);
        pte.set_table_count(count);
        if count < 512 {
            let mut up = pte;
            assert_eq!(up.add_table_count(1), count + 1);
            assert_eq!(up.bits() as u64, base | ((count as u64 + 1) << 2));
        }
        if count > 0 {
            let mut down = pte;
            assert_eq!(down.add_table_count(-1), count - 1);
            assert_eq!(down.bits() as u64, base | ((count as u64 - 1) << 2));
        }
    }
}
