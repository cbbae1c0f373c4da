//! AArch64 oracle tests.

mod common;

use common::check;
use mmu_oracle::{Arch, Config, FaultKind, Image, Outcome, Probe};

const TABLE: u64 = 0b11;
const PAGE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const ATTR_NORMAL: u64 = 1 << 2;
const AP_EL0: u64 = 1 << 6;
const AP_RO: u64 = 1 << 7;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const NORMAL: u64 = ATTR_NORMAL | SH_INNER | AF;

const NM: Outcome = Outcome::Fault(FaultKind::NotMapped);
const PERM: Outcome = Outcome::Fault(FaultKind::Permission);
const AFF: Outcome = Outcome::Fault(FaultKind::AccessFlag);
const ASZ: Outcome = Outcome::Fault(FaultKind::AddressSize);
const NC: Outcome = Outcome::Fault(FaultKind::NonCanonical);
const EXEC_OK: Outcome = Outcome::Ok { pa: None };

/// A hand-written 4-level, 4 KiB-granule stage-1 table with literal descriptor bits
/// (Arm ARM D8).
#[test]
fn raw_tables() {
    if !mmu_oracle::available(Arch::Aarch64) {
        return;
    }
    let img = Image::new(Arch::Aarch64);
    let l0 = img.alloc_table();
    let l1 = img.alloc_table();
    let l2 = img.alloc_table();
    let l3 = img.alloc_table();
    let a = img.alloc_data(0x1000, 0x1000);
    let b = img.alloc_data(0x1000, 0x1000);
    let c = img.alloc_data(0x1000, 0x1000);
    let d = img.alloc_data(0x1000, 0x1000);
    let big = img.alloc_data(0x20_0000, 0x20_0000);
    let huge = img.huge_1g_frame();
    img.write_u64(l0, l1 | TABLE);
    img.write_u64(l1, l2 | TABLE);
    img.write_u64(l1 + 8, huge | BLOCK | NORMAL | UXN | PXN);
    img.write_u64(l2 + 128 * 8, l3 | TABLE);
    img.write_u64(l2 + 129 * 8, big | BLOCK | NORMAL | UXN | PXN | AP_RO);
    img.write_u64(l3, a | PAGE | NORMAL | UXN); // EL1 RWX
    img.write_u64(l3 + 8, b | PAGE | NORMAL | UXN | PXN | AP_RO); // EL1 RO
    img.write_u64(l3 + 16, c | PAGE | NORMAL | AP_EL0); // EL0+EL1 RW, EL0 exec
    img.write_u64(l3 + 24, d | PAGE | NORMAL | AP_EL0 | AP_RO | PXN); // EL0 RO+X
    img.write_u64(l3 + 32, a | PAGE | ATTR_NORMAL | SH_INNER | UXN); // AF = 0
    img.write_u64(l3 + 40, (1 << 44) | PAGE | NORMAL | UXN); // OA beyond 44 bits
    let base = 0x1000_0000u64;
    let cases = vec![
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
        (Probe::store(base + 0x2008), Outcome::ok(c + 8)),
        (Probe::exec(base + 0x2010).user(), EXEC_OK),
        // EL0-writable memory is never executable at EL1.
        (Probe::exec(base + 0x2010), PERM),
        (Probe::store(base + 0x3000).user(), PERM),
        (Probe::exec(base + 0x3000).user(), EXEC_OK),
        (Probe::exec(base + 0x3000), PERM),
        (Probe::load(base + 0x3ff8).user(), Outcome::ok(d + 0xff8)),
        (Probe::load(base + 0x4000), AFF),
        (Probe::load(base + 0x5000), ASZ),
        (Probe::load(base + 0x6000), NM),
        (
            Probe::load(base + 0x20_0000 + 0x1234),
            Outcome::ok(big + 0x1234),
        ),
        (Probe::load(base + 0x3F_FFFF), Outcome::ok(big + 0x1F_FFFF)),
        (Probe::store(base + 0x20_0000), PERM),
        (Probe::load(base + 0x20_0000).user(), PERM),
        (Probe::load(0x4000_0000), Outcome::ok(huge)),
        (Probe::store(0x7FFF_FFF8), Outcome::ok(huge + 0x3FFF_FFF8)),
        (Probe::exec(0x4000_0000), PERM),
        (Probe::load(0x8000_0000), NM),
        (Probe::load(0x8000_0000_0000), NM),
        (Probe::load(0x1_0000_0000_0000), NC),
        (Probe::load(0x8000_0000_0000_0000), NC),
    ];
    check(&img, &Config::aarch64(), l0, &cases);
}

/// Tables built by page_table_multiarch.
#[test]
fn library() {
    if !mmu_oracle::available(Arch::Aarch64) {
        return;
    }
    common::library_suite::<
        page_table_multiarch::aarch64::A64PagingMetaData,
        // The EL1&0 format explicitly: the guest runs at EL1, whatever `arm-el2` selects.
        page_table_entry::aarch64::A64PTEEl1,
    >(
        Config::Aarch64 {
            mair: page_table_entry::aarch64::MemAttr::MAIR_VALUE,
        },
        true,
        &common::strict,
    );
}

/// A broken encoding makes the oracle fail: AP[2] (read-only) cleared on a kernel RX
/// 4 KiB page, AP[1] (EL0) set on a kernel RW 2 MiB block, in the image after the library
/// wrote them.
#[test]
fn tampered_leaf_is_detected() {
    if !mmu_oracle::available(Arch::Aarch64) {
        return;
    }
    use page_table_multiarch::{MappingFlags as F, PageSize};
    let n = common::tamper_suite::<
        page_table_multiarch::aarch64::A64PagingMetaData,
        page_table_entry::aarch64::A64PTEEl1,
    >(
        Config::Aarch64 {
            mair: page_table_entry::aarch64::MemAttr::MAIR_VALUE,
        },
        &[
            common::Tamper {
                size: PageSize::Size4K,
                flags: F::READ | F::EXECUTE,
                set: 0,
                clear: AP_RO,
                becomes: F::READ | F::WRITE | F::EXECUTE,
            },
            common::Tamper {
                size: PageSize::Size2M,
                flags: F::READ | F::WRITE,
                set: AP_EL0,
                clear: 0,
                becomes: F::READ | F::WRITE | F::USER,
            },
        ],
    );
    assert!(n > 0);
}

/// Seeded random sequences of cursor operations, then every leaf on the MMU.
#[test]
fn random_tables() {
    if !mmu_oracle::available(Arch::Aarch64) {
        return;
    }
    for seed in common::random::seeds(0xa64) {
        common::random::random_suite::<
            page_table_multiarch::aarch64::A64PagingMetaData,
            page_table_entry::aarch64::A64PTEEl1,
        >(
            Config::Aarch64 {
                mair: page_table_entry::aarch64::MemAttr::MAIR_VALUE,
            },
            seed,
            common::random::STEPS,
        );
    }
}

/// A kernel address space as in the tour example: built, split, unmapped.
#[test]
fn kernel_space() {
    if !mmu_oracle::available(Arch::Aarch64) {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::aarch64::A64PagingMetaData,
        page_table_entry::aarch64::A64PTEEl1,
    >(Config::Aarch64 {
        mair: page_table_entry::aarch64::MemAttr::MAIR_VALUE,
    });
}
