//! Helpers shared by the oracle tests.
#![allow(dead_code)]

use std::time::Instant;

use mmu_oracle::{Access, Config, Image, Outcome, Probe};

/// Runs `cases` in one boot and fails with a list of every probe whose hardware outcome
/// differs from its expectation.
pub fn check(img: &Image, config: &Config, root: u64, cases: &[(Probe, Outcome)]) {
    let probes: Vec<Probe> = cases.iter().map(|c| c.0).collect();
    let t = Instant::now();
    let report = img
        .run(config, root, &probes)
        .unwrap_or_else(|e| panic!("oracle run failed: {e}"));
    let mut bad = Vec::new();
    for (i, ((p, want), got)) in cases.iter().zip(&report.outcomes).enumerate() {
        if !got.agrees_with(want, p.kind == Access::Exec) {
            bad.push(format!(
                "  #{i} {p}: hardware {got}, expected {want}; record {:x?}",
                report.records[i]
            ));
        }
    }
    eprintln!(
        "{config:?}: {} probes, QEMU {:.2?}, total {:.2?}",
        cases.len(),
        report.elapsed,
        t.elapsed()
    );
    assert!(
        bad.is_empty(),
        "{} of {} probes disagree:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// Every access kind at both privileges.
pub fn all_kinds(va: u64) -> [Probe; 6] {
    [
        Probe::load(va),
        Probe::store(va),
        Probe::exec(va),
        Probe::load(va).user(),
        Probe::store(va).user(),
        Probe::exec(va).user(),
    ]
}
