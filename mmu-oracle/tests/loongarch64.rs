//! LoongArch64 oracle tests (QEMU >= 8).

mod common;

use common::check;
use mmu_oracle::{Arch, Config, FaultKind, Image, Outcome, Probe};

const V: u64 = 1;
const D: u64 = 1 << 1;
const PLV3: u64 = 3 << 2;
const MAT_CC: u64 = 1 << 4;
const HUGE: u64 = 1 << 6;
const P: u64 = 1 << 7;
const W: u64 = 1 << 8;
const NR: u64 = 1 << 61;
const NX: u64 = 1 << 62;

const NM: Outcome = Outcome::Fault(FaultKind::NotMapped);
const PERM: Outcome = Outcome::Fault(FaultKind::Permission);
const NC: Outcome = Outcome::Fault(FaultKind::NonCanonical);
const EXEC_OK: Outcome = Outcome::Ok { pa: None };

/// A hand-written 4-level table with literal entry bits (LoongArch manual vol. 1, TLB
/// entries; directory entries are bare addresses).
#[test]
fn raw_tables() {
    if !mmu_oracle::available(Arch::LoongArch64) {
        return;
    }
    let img = Image::new(Arch::LoongArch64);
    let d3 = img.alloc_table();
    let d2 = img.alloc_table();
    let d1 = img.alloc_table();
    let pt = img.alloc_table();
    let a = img.alloc_data(0x1000, 0x1000);
    let b = img.alloc_data(0x1000, 0x1000);
    let c = img.alloc_data(0x1000, 0x1000);
    let d = img.alloc_data(0x1000, 0x1000);
    let big = img.alloc_data(0x20_0000, 0x20_0000);
    let valid = V | MAT_CC | P;
    img.write_u64(d3, d2);
    img.write_u64(d2, d1);
    img.write_u64(d2 + 8, HUGE | valid | D | W | NX); // 1 GiB at PA 0
    img.write_u64(d1 + 128 * 8, pt);
    img.write_u64(d1 + 129 * 8, big | HUGE | valid | NX); // 2 MiB read-only
    img.write_u64(pt, a | valid | D | W); // PLV0 RWX
    img.write_u64(pt + 8, b | valid | NX); // PLV0 RO
    img.write_u64(pt + 16, c | valid | D | W | PLV3 | NX); // user RW
    img.write_u64(pt + 24, d | valid | PLV3 | NR); // user execute-only
    // pt + 32: zero (invalid), pt + 40: V = 0 with an address.
    img.write_u64(pt + 40, a | MAT_CC | P);
    let base = 0x1000_0000u64;
    let data_off = img.layout().img_base + mmu_oracle::layout::DATA;
    let cases = vec![
        (Probe::load(base), Outcome::ok(a)),
        (Probe::load(base + 0xFFF), Outcome::ok(a + 0xFFF)),
        (Probe::store(base + 0x10), Outcome::ok(a + 0x10)),
        (Probe::exec(base + 0x20), EXEC_OK),
        (Probe::load(base).user(), PERM),
        (Probe::store(base + 0x1000), PERM),
        (Probe::load(base + 0x1008), Outcome::ok(b + 8)),
        (Probe::load(base + 0x2000).user(), Outcome::ok(c)),
        (Probe::store(base + 0x2008).user(), Outcome::ok(c + 8)),
        (Probe::load(base + 0x2010), Outcome::ok(c + 0x10)),
        (Probe::load(base + 0x3000).user(), PERM),
        (Probe::load(base + 0x3000), PERM),
        (Probe::exec(base + 0x3000).user(), EXEC_OK),
        (Probe::load(base + 0x4000), NM),
        (Probe::load(base + 0x5000), NM),
        (
            Probe::load(base + 0x20_0000 + 0x1234),
            Outcome::ok(big + 0x1234),
        ),
        (Probe::load(base + 0x3F_FFFF), Outcome::ok(big + 0x1F_FFFF)),
        (Probe::store(base + 0x20_0000), PERM),
        (Probe::load(base + 0x30_0000).user(), PERM),
        (Probe::load(0x4000_0000 + data_off), Outcome::ok(data_off)),
        (
            Probe::store(0x4000_0000 + data_off + 0x10_0008),
            Outcome::ok(data_off + 0x10_0008),
        ),
        // Zero directory entries (Dir2 slot 2, Dir3 slot 256) walk physical page 0, whose
        // poison maps page 0.
        (Probe::load(0x8000_0000), Outcome::ok(0)),
        (Probe::load(0x8000_0000_0008), Outcome::ok(8)),
        (Probe::load(0x1_0000_0000_0000), NC),
        (Probe::load(0x7FFF_0000_0000_0000), NC),
    ];
    check(&img, &Config::LoongArch64, d3, &cases);
}

fn library_run() -> Vec<mmu_oracle::expect::Mismatch> {
    common::library_suite::<
        page_table_multiarch::loongarch64::LA64MetaData,
        page_table_entry::loongarch64::LA64PTE,
    >(Config::LoongArch64, true, &common::zero_directory_walk)
}

/// Tables built by page_table_multiarch. The LoongArch walk (LDDIR) has no valid bit, so a
/// zero directory entry would make an unmapped address next to a mapped one walk physical
/// page 0 (filled with valid-looking junk here) as its table; the library links empty
/// directory slots to an invalid table instead, and no probe may translate through page 0.
#[test]
fn library() {
    if !mmu_oracle::available(Arch::LoongArch64) {
        return;
    }
    let walks = library_run();
    let lines: Vec<String> = walks.iter().take(10).map(|m| format!("  {m}")).collect();
    assert!(
        walks.is_empty(),
        "{} probes the library calls unmapped translate through a zero directory entry:\n{}",
        walks.len(),
        lines.join("\n")
    );
}

/// A guest that hangs (QEMU livelocks on a LoongArch fetch from a non-executable page) is
/// killed after the timeout and reported with the probe it was running.
#[test]
fn hang_is_killed_and_reported() {
    if !mmu_oracle::available(Arch::LoongArch64) {
        return;
    }
    let img = Image::new(Arch::LoongArch64);
    let d3 = img.alloc_table();
    let d2 = img.alloc_table();
    let d1 = img.alloc_table();
    let pt = img.alloc_table();
    let a = img.alloc_data(0x1000, 0x1000);
    img.write_u64(d3, d2);
    img.write_u64(d2, d1);
    img.write_u64(d1, pt);
    img.write_u64(pt, a | V | MAT_CC | P | NX);
    let probes = [Probe::load(0), Probe::exec(0), Probe::load(0)];
    let t = std::time::Instant::now();
    let err = img
        .run_with_timeout(
            &Config::LoongArch64,
            d3,
            &probes,
            std::time::Duration::from_secs(2),
        )
        .expect_err("the fetch from an NX page should hang QEMU");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    match err {
        mmu_oracle::OracleError::Incomplete {
            probe, timed_out, ..
        } => {
            assert!(timed_out);
            assert_eq!(probe, Some(1));
        }
        e => panic!("unexpected error {e}"),
    }
}

/// A broken encoding makes the oracle fail: PLV set to 3 on a kernel RW 4 KiB page, W and
/// D set on a kernel RX 2 MiB page, in the image after the library wrote them.
#[test]
fn tampered_leaf_is_detected() {
    if !mmu_oracle::available(Arch::LoongArch64) {
        return;
    }
    use page_table_multiarch::{MappingFlags as F, PageSize};
    let n = common::tamper_suite::<
        page_table_multiarch::loongarch64::LA64MetaData,
        page_table_entry::loongarch64::LA64PTE,
    >(
        Config::LoongArch64,
        &[
            common::Tamper {
                size: PageSize::Size4K,
                flags: F::READ | F::WRITE,
                set: PLV3,
                clear: 0,
                becomes: F::READ | F::WRITE | F::USER,
            },
            common::Tamper {
                size: PageSize::Size2M,
                flags: F::READ | F::EXECUTE,
                set: W | D,
                clear: 0,
                becomes: F::READ | F::WRITE | F::EXECUTE,
            },
        ],
    );
    assert!(n > 0);
}

/// Seeded random sequences of cursor operations, then every leaf on the MMU.
#[test]
fn random_tables() {
    if !mmu_oracle::available(Arch::LoongArch64) {
        return;
    }
    for seed in common::random::seeds(0x1a64) {
        common::random::random_suite::<
            page_table_multiarch::loongarch64::LA64MetaData,
            page_table_entry::loongarch64::LA64PTE,
        >(Config::LoongArch64, seed, common::random::STEPS);
    }
}

/// A kernel address space as in the tour example: built, split, unmapped.
#[test]
fn kernel_space() {
    if !mmu_oracle::available(Arch::LoongArch64) {
        return;
    }
    common::kernel::kernel_space::<
        page_table_multiarch::loongarch64::LA64MetaData,
        page_table_entry::loongarch64::LA64PTE,
    >(Config::LoongArch64);
}
