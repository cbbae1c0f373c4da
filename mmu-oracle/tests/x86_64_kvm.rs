//! The x86_64 library suites on KVM: the table under test is walked by this machine's MMU
//! (under PVM, by KVM's shadow-paging walker) instead of QEMU TCG. Each test prints
//! `skipped: <reason>` and passes where `/dev/kvm` is unusable or lacks a feature the test
//! needs, also under `CI=true`: KVM is a property of the machine, not of an install step.
//! The expectations follow the capabilities KVM reports (`mmu_oracle::KvmCaps`): without
//! 1 GiB pages a 1 GiB leaf faults as reserved.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use mmu_oracle::Config;
use page_table_entry::x86_64::X64PTE;
use page_table_multiarch::x86_64::{X64PagingMetaData, X64PagingMetaDataLa57};

/// `config` on KVM, or `None` (printing why) when KVM cannot run it here.
fn on_kvm(config: Config) -> Option<Config> {
    let caps = mmu_oracle::kvm::available()?;
    let Config::X86_64 {
        la57, smep, smap, ..
    } = config
    else {
        unreachable!()
    };
    for (want, have, name) in [
        (la57, caps.la57, "LA57"),
        (smep, caps.smep, "SMEP"),
        (smap, caps.smap, "SMAP"),
    ] {
        if want && !have {
            // Past the test harness's capture, so that the skip is visible.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: this machine's KVM offers no {name} ({caps:?})"
            );
            return None;
        }
    }
    Some(config.on_kvm(caps))
}

/// The capabilities and what the calibration found, for the log.
#[test]
fn capabilities() {
    if let Some(caps) = mmu_oracle::kvm::available() {
        eprintln!("KVM: {caps:?}");
    }
}

/// Tables built by page_table_multiarch, 4-level.
#[test]
fn library_4level() {
    let Some(config) = on_kvm(Config::x86_64()) else {
        return;
    };
    common::library_suite::<X64PagingMetaData, X64PTE>(config, true, &common::strict);
}

/// Tables built by page_table_multiarch, 5-level (LA57).
#[test]
fn library_la57() {
    let Some(config) = on_kvm(Config::x86_64_la57()) else {
        return;
    };
    common::library_suite::<X64PagingMetaDataLa57, X64PTE>(config, true, &common::strict);
}

/// Tables built by page_table_multiarch with CR4.SMEP and CR4.SMAP set.
#[test]
fn library_smep_smap() {
    let Some(config) = on_kvm(Config::X86_64 {
        la57: false,
        smep: true,
        smap: true,
        accel: mmu_oracle::X86Accel::Tcg,
    }) else {
        return;
    };
    common::library_suite::<X64PagingMetaData, X64PTE>(config, true, &common::strict);
}

/// A broken encoding makes the oracle fail on KVM too.
#[test]
fn tampered_leaf_is_detected() {
    let Some(config) = on_kvm(Config::x86_64()) else {
        return;
    };
    use page_table_multiarch::{MappingFlags as F, PageSize};
    let n = common::tamper_suite::<X64PagingMetaData, X64PTE>(
        config,
        &[
            common::Tamper {
                size: PageSize::Size4K,
                flags: F::READ | F::WRITE,
                set: 1 << 2,
                clear: 1 << 63,
                becomes: F::READ | F::WRITE | F::EXECUTE | F::USER,
            },
            common::Tamper {
                size: PageSize::Size2M,
                flags: F::READ,
                set: 1 << 1,
                clear: 0,
                becomes: F::READ | F::WRITE,
            },
        ],
    );
    assert!(n > 0);
}

/// Seeded random tables, 4-level.
#[test]
fn random_tables_4level() {
    let Some(config) = on_kvm(Config::x86_64()) else {
        return;
    };
    for seed in common::random::seeds(0x8640) {
        common::random::random_suite::<X64PagingMetaData, X64PTE>(
            config,
            seed,
            common::random::STEPS,
        );
    }
}

/// Seeded random tables, 5-level.
#[test]
fn random_tables_la57() {
    let Some(config) = on_kvm(Config::x86_64_la57()) else {
        return;
    };
    for seed in common::random::seeds(0x8650) {
        common::random::random_suite::<X64PagingMetaDataLa57, X64PTE>(
            config,
            seed,
            common::random::STEPS,
        );
    }
}

/// The tour's kernel address space, 4-level.
#[test]
fn kernel_space_4level() {
    let Some(config) = on_kvm(Config::x86_64()) else {
        return;
    };
    common::kernel::kernel_space::<X64PagingMetaData, X64PTE>(config);
}

/// The tour's kernel address space, 5-level.
#[test]
fn kernel_space_la57() {
    let Some(config) = on_kvm(Config::x86_64_la57()) else {
        return;
    };
    common::kernel::kernel_space::<X64PagingMetaDataLa57, X64PTE>(config);
}

/// A guest that never reports (a fetch into `jmp $`) is stopped after the timeout and
/// reported with the probe it was running.
#[test]
fn hang_is_stopped_and_reported() {
    let Some(config) = on_kvm(Config::x86_64()) else {
        return;
    };
    use memory_addr::{PhysAddr, VirtAddr};
    use mmu_oracle::{Arch, Image, OracleHandler, Probe};
    use page_table_multiarch::{MappingFlags as F, PageSize, PageTable64};
    let img = Image::new(Arch::X86_64);
    let mut pt = PageTable64::<X64PagingMetaData, X64PTE, OracleHandler>::try_new().unwrap();
    let frame = img.alloc_data(0x1000, 0x1000);
    img.write_u64(frame + 0x10, 0xFEEB); // jmp $
    pt.cursor()
        .map(
            VirtAddr::from(0x1000_0000),
            PhysAddr::from(frame as usize),
            PageSize::Size4K,
            F::READ | F::EXECUTE,
        )
        .unwrap();
    let root = pt.root_paddr().as_usize() as u64;
    let probes = [
        Probe::load(0x1000_0000),
        Probe::exec(0x1000_0010),
        Probe::load(0x1000_0000),
    ];
    let t = std::time::Instant::now();
    let err = img
        .run_with_timeout(&config, root, &probes, std::time::Duration::from_secs(1))
        .expect_err("the fetch into `jmp $` should never finish");
    assert!(t.elapsed() < std::time::Duration::from_secs(4));
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
