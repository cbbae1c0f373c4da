//! x86_64 oracle tests.

mod common;

use common::check;
use mmu_oracle::{Arch, Config, FaultKind, Image, Outcome, Probe};

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

const NM: Outcome = Outcome::Fault(FaultKind::NotMapped);
const PERM: Outcome = Outcome::Fault(FaultKind::Permission);
const RSVD: Outcome = Outcome::Fault(FaultKind::Reserved);
const NC: Outcome = Outcome::Fault(FaultKind::NonCanonical);

/// A hand-written 4-level table with literal entry bits (Intel SDM vol. 3A §4.5).
#[test]
fn raw_tables() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    let img = Image::new(Arch::X86_64);
    let pml4 = img.alloc_table();
    let pdpt = img.alloc_table();
    let pd = img.alloc_table();
    let pt = img.alloc_table();
    let a = img.alloc_data(0x1000, 0x1000);
    let b = img.alloc_data(0x1000, 0x1000);
    let c = img.alloc_data(0x1000, 0x1000);
    let d = img.alloc_data(0x1000, 0x1000);
    let big = img.alloc_data(0x20_0000, 0x20_0000);
    let huge = img.huge_1g_frame();
    img.write_u64(pml4, pdpt | P | RW | US);
    img.write_u64(pdpt, pd | P | RW | US);
    img.write_u64(pdpt + 8, huge | P | RW | PS);
    img.write_u64(pd + 128 * 8, pt | P | RW | US);
    img.write_u64(pd + 129 * 8, big | P | RW | PS | XD);
    img.write_u64(pt, a | P | RW);
    img.write_u64(pt + 8, b | P);
    img.write_u64(pt + 16, c | P | RW | US);
    img.write_u64(pt + 24, d | P | US | XD);
    img.write_u64(pt + 40, a | P | 1 << 51);
    let base = 0x1000_0000u64;
    let cases = vec![
        (Probe::load(base), Outcome::ok(a)),
        (Probe::load(base + 0xFFF), Outcome::ok(a + 0xFFF)),
        (Probe::store(base + 0x10), Outcome::ok(a + 0x10)),
        (Probe::exec(base + 0x20), Outcome::Ok { pa: None }),
        (Probe::load(base).user(), PERM),
        (Probe::store(base + 0x1000), PERM),
        (Probe::load(base + 0x1008), Outcome::ok(b + 8)),
        (Probe::load(base + 0x2000).user(), Outcome::ok(c)),
        (Probe::store(base + 0x2008).user(), Outcome::ok(c + 8)),
        (Probe::exec(base + 0x2010).user(), Outcome::Ok { pa: None }),
        (Probe::store(base + 0x3000).user(), PERM),
        (Probe::exec(base + 0x3000).user(), PERM),
        (Probe::load(base + 0x3ff8).user(), Outcome::ok(d + 0xff8)),
        (Probe::load(base + 0x4000), NM),
        (Probe::load(base + 0x5000), RSVD),
        (
            Probe::load(base + 0x20_0000 + 0x1234),
            Outcome::ok(big + 0x1234),
        ),
        (Probe::store(base + 0x3F_FFFF), Outcome::ok(big + 0x1F_FFFF)),
        (Probe::exec(base + 0x20_0000), PERM),
        (Probe::load(base + 0x20_0000).user(), PERM),
        (Probe::load(0x4000_0000), Outcome::ok(huge)),
        (Probe::store(0x7FFF_FFF8), Outcome::ok(huge + 0x3FFF_FFF8)),
        (Probe::load(0x8000_0000), NM),
        (Probe::load(0x8000_0000_0000), NC),
        (Probe::load(0xFFFF_8000_0000_0000), NM),
    ];
    check(&img, &Config::x86_64(), pml4, &cases);
}

/// Tables built by page_table_multiarch, 4-level.
#[test]
fn library_4level() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    common::library_suite::<
        page_table_multiarch::x86_64::X64PagingMetaData,
        page_table_entry::x86_64::X64PTE,
    >(Config::x86_64(), true, &common::strict);
}

/// Tables built by page_table_multiarch, 5-level (LA57).
#[test]
fn library_la57() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    common::library_suite::<
        page_table_multiarch::x86_64::X64PagingMetaDataLa57,
        page_table_entry::x86_64::X64PTE,
    >(Config::x86_64_la57(), true, &common::strict);
}

/// Tables built by page_table_multiarch with CR4.SMEP and CR4.SMAP set: kernel fetches
/// from and kernel data accesses to user pages fault.
#[test]
fn library_smep_smap() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    common::library_suite::<
        page_table_multiarch::x86_64::X64PagingMetaData,
        page_table_entry::x86_64::X64PTE,
    >(
        Config::X86_64 {
            la57: false,
            smep: true,
            smap: true,
            accel: mmu_oracle::X86Accel::Tcg,
        },
        true,
        &common::strict,
    );
}

/// A broken encoding makes the oracle fail: US set and NX cleared on a kernel RW 4 KiB
/// page, RW set on a read-only 2 MiB page, in the image after the library wrote them.
#[test]
fn tampered_leaf_is_detected() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    use page_table_multiarch::{MappingFlags as F, PageSize};
    let n = common::tamper_suite::<
        page_table_multiarch::x86_64::X64PagingMetaData,
        page_table_entry::x86_64::X64PTE,
    >(
        Config::x86_64(),
        &[
            common::Tamper {
                size: PageSize::Size4K,
                flags: F::READ | F::WRITE,
                set: US,
                clear: XD,
                becomes: F::READ | F::WRITE | F::EXECUTE | F::USER,
            },
            common::Tamper {
                size: PageSize::Size2M,
                flags: F::READ,
                set: RW,
                clear: 0,
                becomes: F::READ | F::WRITE,
            },
        ],
    );
    assert!(n > 0);
}

/// Seeded random sequences of cursor operations, then every leaf on the MMU.
#[test]
fn random_tables_4level() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    for seed in common::random::seeds(0x8640) {
        common::random::random_suite::<
            page_table_multiarch::x86_64::X64PagingMetaData,
            page_table_entry::x86_64::X64PTE,
        >(Config::x86_64(), seed, common::random::STEPS);
    }
}

/// Seeded random sequences of cursor operations (5-level), then every leaf on the MMU.
#[test]
fn random_tables_la57() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    for seed in common::random::seeds(0x8650) {
        common::random::random_suite::<
            page_table_multiarch::x86_64::X64PagingMetaDataLa57,
            page_table_entry::x86_64::X64PTE,
        >(Config::x86_64_la57(), seed, common::random::STEPS);
    }
}

/// A kernel address space as in the tour example: built, split, unmapped.
#[test]
fn kernel_space_4level() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::x86_64::X64PagingMetaData,
        page_table_entry::x86_64::X64PTE,
    >(Config::x86_64());
}

/// A kernel address space as in the tour example (5-level): built, split, unmapped.
#[test]
fn kernel_space_la57() {
    if !mmu_oracle::available(Arch::X86_64) {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::x86_64::X64PagingMetaDataLa57,
        page_table_entry::x86_64::X64PTE,
    >(Config::x86_64_la57());
}
