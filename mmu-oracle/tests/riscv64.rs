//! RISC-V oracle tests.

mod common;

use common::check;
use mmu_oracle::{Arch, Config, FaultKind, Image, Outcome, Probe, RiscvMode};

const V: u64 = 1;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;

const NM: Outcome = Outcome::Fault(FaultKind::NotMapped);
const PERM: Outcome = Outcome::Fault(FaultKind::Permission);
const NC: Outcome = Outcome::Fault(FaultKind::NonCanonical);
const EXEC_OK: Outcome = Outcome::Ok { pa: None };

/// Whether the library writes standard RISC-V entries. With `page_table_entry`'s
/// `xuantie-c9xx` feature (T-Head MAEE attributes in bits 63:60, which a standard MMU
/// reserves) the library's tables are meant for T-Head cores, not for QEMU's `rv64`, so
/// the library comparisons are skipped (with a message) in such a build.
fn library_entries_are_standard() -> bool {
    use page_table_entry::{GenericPTE, MappingFlags};
    let pte = page_table_entry::riscv::Rv64PTE::new_page(
        memory_addr::PhysAddr::from(0x1000),
        MappingFlags::READ,
        false,
    );
    let standard = pte.bits() >> 60 == 0;
    if !standard {
        eprintln!("skipped: the library's RISC-V entries carry T-Head (xuantie-c9xx) attributes");
    }
    standard
}

const fn pte(pa: u64, bits: u64) -> u64 {
    (pa >> 12) << 10 | bits
}

/// Hand-written Sv39 and Sv48 tables with literal PTE bits (privileged spec, "Sv39").
fn raw_tables(mode: RiscvMode) {
    if !mmu_oracle::available(Arch::Riscv64) {
        return;
    }
    let img = Image::new(Arch::Riscv64);
    let levels = match mode {
        RiscvMode::Sv39 => 3,
        RiscvMode::Sv48 => 4,
        RiscvMode::Sv57 => 5,
    };
    let root = img.alloc_table();
    // Root .. the table that holds 1 GiB leaves: one pointer per extra level (index 0).
    let mut l1g = root;
    for _ in 3..levels {
        let next = img.alloc_table();
        img.write_u64(l1g, pte(next, V));
        l1g = next;
    }
    let l2m = img.alloc_table();
    let l4k = img.alloc_table();
    let a = img.alloc_data(0x1000, 0x1000);
    let b = img.alloc_data(0x1000, 0x1000);
    let c = img.alloc_data(0x1000, 0x1000);
    let d = img.alloc_data(0x1000, 0x1000);
    let big = img.alloc_data(0x20_0000, 0x20_0000);
    let huge = img.huge_1g_frame();
    img.write_u64(l1g, pte(l2m, V));
    img.write_u64(l1g + 8, pte(huge, V | R | W | A | D));
    img.write_u64(l2m + 128 * 8, pte(l4k, V));
    img.write_u64(l2m + 129 * 8, pte(big, V | R | A));
    img.write_u64(l2m + 130 * 8, pte(big + 0x1000, V | R | A)); // misaligned megapage
    img.write_u64(l4k, pte(a, V | R | W | X | A | D));
    img.write_u64(l4k + 8, pte(b, V | R | A));
    img.write_u64(l4k + 16, pte(c, V | R | W | U | A | D));
    img.write_u64(l4k + 24, pte(d, V | X | U | A)); // user execute-only
    img.write_u64(l4k + 32, pte(a, V | W | A | D)); // W without R: reserved
    img.write_u64(l4k + 40, pte(a, R | W | A | D)); // V = 0
    let base = 0x1000_0000u64;
    let mut cases = vec![
        (Probe::load(base), Outcome::ok(a)),
        (Probe::load(base + 0xFFF), Outcome::ok(a + 0xFFF)),
        (Probe::store(base + 0x10), Outcome::ok(a + 0x10)),
        (Probe::exec(base + 0x20), EXEC_OK),
        (Probe::load(base).user(), PERM),
        (Probe::exec(base).user(), PERM),
        (Probe::store(base + 0x1000), PERM),
        (Probe::load(base + 0x1008), Outcome::ok(b + 8)),
        (Probe::exec(base + 0x1008), PERM),
        (Probe::load(base + 0x2000).user(), Outcome::ok(c)),
        (Probe::store(base + 0x2008).user(), Outcome::ok(c + 8)),
        (Probe::load(base + 0x2000), PERM),
        (Probe::load(base + 0x2000).with_sum(), Outcome::ok(c)),
        (Probe::store(base + 0x2008).with_sum(), Outcome::ok(c + 8)),
        (Probe::load(base + 0x3000).user(), PERM),
        (Probe::load(base + 0x3000).user().with_mxr(), Outcome::ok(d)),
        (Probe::exec(base + 0x3000).user(), EXEC_OK),
        (Probe::exec(base + 0x3000), PERM),
        (Probe::load(base + 0x4000), NM),
        (Probe::load(base + 0x5000), NM),
        (Probe::load(base + 0x6000), NM),
        (
            Probe::load(base + 0x20_0000 + 0x1234),
            Outcome::ok(big + 0x1234),
        ),
        (Probe::load(base + 0x3F_FFFF), Outcome::ok(big + 0x1F_FFFF)),
        (Probe::store(base + 0x20_0000), PERM),
        (Probe::load(base + 0x40_0000), NM),
        (Probe::load(0x4000_0000), Outcome::ok(huge)),
        (Probe::store(0x7FFF_FFF8), Outcome::ok(huge + 0x3FFF_FFF8)),
        (Probe::exec(0x4000_0000), PERM),
        (Probe::load(0x8000_0000), NM),
    ];
    let bits = mode.va_bits();
    cases.push((Probe::load(1 << (bits - 1)), NC));
    cases.push((Probe::load(!0u64 << (bits - 1)), NM));
    cases.push((Probe::load((1 << (bits - 1)) - 8), NM));
    cases.push((Probe::load(1 << bits), NC));
    check(&img, &Config::riscv(mode), root, &cases);
}

#[test]
fn raw_sv39() {
    raw_tables(RiscvMode::Sv39);
}

#[test]
fn raw_sv48() {
    raw_tables(RiscvMode::Sv48);
}

#[test]
fn raw_sv57() {
    raw_tables(RiscvMode::Sv57);
}

/// Tables built by page_table_multiarch, Sv39.
#[test]
fn library_sv39() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::library_suite::<
        page_table_multiarch::riscv::Sv39MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv39), true, &common::strict);
}

/// Tables built by page_table_multiarch, Sv48.
#[test]
fn library_sv48() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::library_suite::<
        page_table_multiarch::riscv::Sv48MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv48), true, &common::strict);
}

/// Tables built by page_table_multiarch, Sv57.
#[test]
fn library_sv57() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::library_suite::<
        page_table_multiarch::riscv::Sv57MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv57), true, &common::strict);
}

/// Tables built by page_table_multiarch, Sv39, on a hart that faults on A=0 / D=0
/// (Svade) instead of updating them: the library's leaves must carry A and D.
#[test]
fn library_sv39_svade() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::library_suite::<
        page_table_multiarch::riscv::Sv39MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(
        Config::Riscv64 {
            mode: RiscvMode::Sv39,
            ad: mmu_oracle::RiscvAd::Fault,
            pbmte: true,
        },
        true,
        &common::strict,
    );
}

/// The A/D knob: a leaf with A = D = 0 faults under Svade, and gets A (and D on a store)
/// set by the hardware under Svadu.
#[test]
fn raw_accessed_dirty() {
    if !mmu_oracle::available(Arch::Riscv64) {
        return;
    }
    for ad in [mmu_oracle::RiscvAd::Fault, mmu_oracle::RiscvAd::Hardware] {
        let img = Image::new(Arch::Riscv64);
        let root = img.alloc_table();
        let l1 = img.alloc_table();
        let l0 = img.alloc_table();
        let a = img.alloc_data(0x1000, 0x1000);
        img.write_u64(root, pte(l1, V));
        img.write_u64(l1, pte(l0, V));
        img.write_u64(l0, pte(a, V | R | W));
        img.write_u64(l0 + 8, pte(a, V | R | W | A));
        let config = Config::Riscv64 {
            mode: RiscvMode::Sv39,
            ad,
            pbmte: false,
        };
        let probes = [Probe::load(0), Probe::store(0x1008)];
        let report = img.run(&config, root, &probes).expect("oracle run");
        if ad == mmu_oracle::RiscvAd::Fault {
            // A = 0: even the permissive load faults; D = 0 on a store: a permission fault.
            assert_eq!(report.outcomes, [NM, PERM], "{:x?}", report.records);
            assert_eq!(report.read_u64(l0), Some(pte(a, V | R | W)));
        } else {
            assert_eq!(report.outcomes, [Outcome::ok(a), Outcome::ok(a + 8)]);
            assert_eq!(report.read_u64(l0), Some(pte(a, V | R | W | A)));
            assert_eq!(report.read_u64(l0 + 8), Some(pte(a, V | R | W | A | D)));
        }
    }
}

/// A broken encoding makes the oracle fail: U set on a kernel RW 4 KiB page, W set on a
/// kernel RX 2 MiB page, in the image after the library wrote them.
#[test]
fn tampered_leaf_is_detected() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    use page_table_multiarch::{MappingFlags as F, PageSize};
    let n = common::tamper_suite::<
        page_table_multiarch::riscv::Sv39MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(
        Config::riscv(RiscvMode::Sv39),
        &[
            common::Tamper {
                size: PageSize::Size4K,
                flags: F::READ | F::WRITE,
                set: U,
                clear: 0,
                becomes: F::READ | F::WRITE | F::USER,
            },
            common::Tamper {
                size: PageSize::Size2M,
                flags: F::READ | F::EXECUTE,
                set: W,
                clear: 0,
                becomes: F::READ | F::WRITE | F::EXECUTE,
            },
        ],
    );
    assert!(n > 0);
}

/// Seeded random sequences of cursor operations (Sv39), then every leaf on the MMU.
#[test]
fn random_tables_sv39() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    for seed in common::random::seeds(0x539) {
        common::random::random_suite::<
            page_table_multiarch::riscv::Sv39MetaData,
            page_table_entry::riscv::Rv64PTE,
        >(Config::riscv(RiscvMode::Sv39), seed, common::random::STEPS);
    }
}

/// Seeded random sequences of cursor operations (Sv48), then every leaf on the MMU.
#[test]
fn random_tables_sv48() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    for seed in common::random::seeds(0x548) {
        common::random::random_suite::<
            page_table_multiarch::riscv::Sv48MetaData,
            page_table_entry::riscv::Rv64PTE,
        >(Config::riscv(RiscvMode::Sv48), seed, common::random::STEPS);
    }
}

/// Seeded random sequences of cursor operations (Sv57), then every leaf on the MMU.
#[test]
fn random_tables_sv57() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    for seed in common::random::seeds(0x557) {
        common::random::random_suite::<
            page_table_multiarch::riscv::Sv57MetaData,
            page_table_entry::riscv::Rv64PTE,
        >(Config::riscv(RiscvMode::Sv57), seed, common::random::STEPS);
    }
}

/// A kernel address space as in the tour example (Sv39): built, split, unmapped.
#[test]
fn kernel_space_sv39() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::riscv::Sv39MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv39));
}

/// A kernel address space as in the tour example (Sv48): built, split, unmapped.
#[test]
fn kernel_space_sv48() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::riscv::Sv48MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv48));
}

/// A kernel address space as in the tour example (Sv57): built, split, unmapped.
#[test]
fn kernel_space_sv57() {
    if !mmu_oracle::available(Arch::Riscv64) || !library_entries_are_standard() {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::riscv::Sv57MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv57));
}
