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

use memory_addr::VirtAddr;
use page_table_entry::{GenericPTE, MappingFlags};
use page_table_multiarch::{PageTable64, PagingError, PagingHandler, PagingMetaData};

use crate::{Access, Config, FaultKind, Outcome, Probe};

/// A translation as the library reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapping {
    /// Physical address of the probed byte (the leaf's address plus the VA's offset in it).
    pub pa: u64,
    /// The flags of the leaf.
    pub flags: MappingFlags,
    /// The size of the leaf (4 KiB, 2 MiB or 1 GiB).
    pub size: u64,
}

/// What the library says about a virtual address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Translation {
    /// A present leaf maps it.
    Mapped(Mapping),
    /// Nothing (present) maps it.
    NotMapped,
    /// The address is not one the table translates (not canonical).
    InvalidVa,
}

/// What `table.query(va)` says about `va`.
///
/// # Panics
///
/// If `query` fails with an error other than `NotMapped` or `InvalidVirtAddr`.
pub fn query<M, PTE, H>(table: &PageTable64<M, PTE, H>, va: u64) -> Translation
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
    H: PagingHandler,
{
    match table.query(VirtAddr::from(va as usize)) {
        Ok((pa, flags, size)) => Translation::Mapped(Mapping {
            pa: pa.as_usize() as u64,
            flags,
            size: size as u64,
        }),
        Err(PagingError::NotMapped) => Translation::NotMapped,
        Err(PagingError::InvalidVirtAddr) => Translation::InvalidVa,
        Err(e) => panic!("query({va:#x}) failed: {e:?}"),
    }
}

/// The outcome the hardware should produce for `probe` when the library says its VA
/// translates as `t`.
///
/// On x86_64 under KVM the vCPU's [`KvmCaps`](crate::KvmCaps) apply first: without 1 GiB
/// pages, a 1 GiB leaf is a reserved-bit violation (#PF with RSVD) for every access.
pub fn expected(config: &Config, probe: &Probe, t: Translation) -> Outcome {
    let kvm = match config {
        Config::X86_64 {
            accel: crate::X86Accel::Kvm(caps),
            ..
        } => Some(*caps),
        _ => None,
    };
    let m = match t {
        Translation::Mapped(m) => m,
        Translation::NotMapped => return Outcome::Fault(FaultKind::NotMapped),
        Translation::InvalidVa => return Outcome::Fault(FaultKind::NonCanonical),
    };
    let f = m.flags;
    if !f.is_accessible() {
        return Outcome::Fault(FaultKind::NotMapped);
    }
    if kvm.is_some_and(|caps| !caps.pdpe1gb) && m.size == 1 << 30 {
        return Outcome::Fault(FaultKind::Reserved);
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

/// One probe whose hardware outcome differs from the library's answer.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Index of the probe in the batch.
    pub index: usize,
    /// The probe.
    pub probe: Probe,
    /// What the library's `query` implies.
    pub expected: Outcome,
    /// What the MMU did.
    pub hardware: Outcome,
    /// The guest's raw record.
    pub record: crate::Record,
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "#{} {}: hardware {}, library {}; record {:x?}",
            self.index, self.probe, self.hardware, self.expected, self.record
        )
    }
}

/// The result of [`check_table`].
#[derive(Debug)]
pub struct Comparison {
    /// The probes whose outcomes differ.
    pub mismatches: Vec<Mismatch>,
    /// The boot's report.
    pub report: crate::RunReport,
}

/// The outcome `table`'s `query` implies for each probe ([`expected`]).
pub fn expectations<M, PTE, H>(
    config: &Config,
    table: &PageTable64<M, PTE, H>,
    probes: &[Probe],
) -> Vec<Outcome>
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
    H: PagingHandler,
{
    probes
        .iter()
        .map(|p| expected(config, p, query(table, p.va)))
        .collect()
}

/// The probes of `report` whose hardware outcome does not agree with `want` (one
/// expectation per probe, in order).
pub fn mismatches(probes: &[Probe], want: &[Outcome], report: &crate::RunReport) -> Vec<Mismatch> {
    assert_eq!(probes.len(), want.len(), "one expectation per probe");
    probes
        .iter()
        .zip(want)
        .zip(report.outcomes.iter().zip(&report.records))
        .enumerate()
        .filter(|(_, ((p, w), (got, _)))| !got.agrees_with(w, p.kind == Access::Exec))
        .map(|(index, ((p, w), (got, rec)))| Mismatch {
            index,
            probe: *p,
            expected: *w,
            hardware: *got,
            record: *rec,
        })
        .collect()
}

/// Runs `probes` through `table` on the MMU and compares each outcome with the one the
/// table's `query` implies ([`expected`]).
pub fn check_table<M, PTE>(
    img: &crate::Image,
    config: &Config,
    table: &PageTable64<M, PTE, crate::OracleHandler>,
    probes: &[Probe],
) -> Result<Comparison, crate::OracleError>
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let root = table.root_paddr().as_usize() as u64;
    let want = expectations(config, table, probes);
    let report = img.run(config, root, probes)?;
    let mismatches = mismatches(probes, &want, &report);
    Ok(Comparison { mismatches, report })
}
