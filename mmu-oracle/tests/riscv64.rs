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
    if !mmu_oracle::available(Arch::Riscv64) {
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
    if !mmu_oracle::available(Arch::Riscv64) {
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
    if !mmu_oracle::available(Arch::Riscv64) {
        return;
    }
    common::library_suite::<
        page_table_multiarch::riscv::Sv57MetaData,
        page_table_entry::riscv::Rv64PTE,
    >(Config::riscv(RiscvMode::Sv57), true, &common::strict);
}
