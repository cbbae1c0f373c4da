//! What the hardware should do, derived from what the library says about an address.
//!
//! [`expected`] turns the answer of the library's `query` for a probe's VA (the physical
//! address of the probed byte and the [`MappingFlags`] of its leaf, or "not mapped") into
//! the [`Outcome`] the MMU should produce, per architecture and privilege. The rules are the
//! architectural ones, plus the encoding choices the library documents:
//!
//! * x86: a present page is readable; stores need `WRITE` at both privileges (CR0.WP=1);
//!   CPL3 needs `USER`; with SMEP a kernel fetch from a `USER` page faults, with SMAP a
//!   kernel data access to a `USER` page faults.
//! * AArch64: EL0 needs `USER`; a `USER` page is never executable at EL1 (the entry sets
//!   PXN, and EL0-writable memory is implicitly PXN anyway).
//! * RISC-V: U-mode needs `USER`; S-mode data accesses to a `USER` page need `SUM`, and
//!   S-mode never executes a `USER` page; a load of an execute-only page needs `MXR`.
//! * LoongArch: PLV3 needs `USER` (PLV0 may access any page: RPLV is not used).

use page_table_entry::MappingFlags;

use crate::{Access, Config, FaultKind, Outcome, Probe};

/// A translation as the library reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapping {
    /// Physical address of the probed byte (the leaf's address plus the VA's offset in it).
    pub pa: u64,
    /// The flags of the leaf.
    pub flags: MappingFlags,
}

/// The outcome the hardware should produce for `probe` when the library says the VA maps
/// as `mapping` (`None`: not mapped).
pub fn expected(config: &Config, probe: &Probe, mapping: Option<Mapping>) -> Outcome {
    if !config.is_canonical(probe.va) {
        return Outcome::Fault(FaultKind::NonCanonical);
    }
    let Some(m) = mapping else {
        return Outcome::Fault(FaultKind::NotMapped);
    };
    let f = m.flags;
    if !f.is_accessible() {
        return Outcome::Fault(FaultKind::NotMapped);
    }
    let user_page = f.contains(MappingFlags::USER);
    let allowed = match config {
        Config::X86_64 { smep, smap, .. } => {
            let priv_ok = if probe.user {
                user_page
            } else {
                match probe.kind {
                    Access::Exec => !(*smep && user_page),
                    _ => !(*smap && user_page),
                }
            };
            priv_ok
                && match probe.kind {
                    Access::Load => true,
                    Access::Store => f.contains(MappingFlags::WRITE),
                    Access::Exec => f.contains(MappingFlags::EXECUTE),
                }
        }
        Config::Aarch64 { .. } => {
            let priv_ok = if probe.user {
                user_page
            } else {
                probe.kind != Access::Exec || !user_page
            };
            priv_ok
                && match probe.kind {
                    Access::Load => f.contains(MappingFlags::READ),
                    Access::Store => f.contains(MappingFlags::WRITE),
                    Access::Exec => f.contains(MappingFlags::EXECUTE),
                }
        }
        Config::Riscv64 { .. } => {
            let priv_ok = if probe.user {
                user_page
            } else if user_page {
                probe.kind != Access::Exec && probe.sum
            } else {
                true
            };
            priv_ok
                && match probe.kind {
                    Access::Load => {
                        f.contains(MappingFlags::READ)
                            || (probe.mxr && f.contains(MappingFlags::EXECUTE))
                    }
                    Access::Store => f.contains(MappingFlags::WRITE),
                    Access::Exec => f.contains(MappingFlags::EXECUTE),
                }
        }
        Config::LoongArch64 => {
            (!probe.user || user_page)
                && match probe.kind {
                    Access::Load => f.contains(MappingFlags::READ),
                    Access::Store => f.contains(MappingFlags::WRITE),
                    Access::Exec => f.contains(MappingFlags::EXECUTE),
                }
        }
    };
    if allowed {
        Outcome::ok(m.pa)
    } else {
        Outcome::Fault(FaultKind::Permission)
    }
}
