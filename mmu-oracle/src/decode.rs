//! Per-architecture decoding of the guests' raw records into normalised outcomes.

use crate::layout::status;
use crate::runner::Record;
use crate::{Access, Arch, Config, FaultKind, Outcome, Probe};

/// The contents of physical page 0 on LoongArch: every word is [`LA_PAGE0_WORD`], which reads both as a
/// directory entry pointing back at page 0 and as a valid, writable PLV3 leaf mapping
/// page 0. The LoongArch walk has no valid bit in directory entries and walks physical
/// page 0 through a zero directory entry, so with this page a table that leaves such an
/// entry reachable translates (to page 0) instead of faulting, at any level.
pub(crate) fn page0(config: &Config) -> Vec<u8> {
    debug_assert_eq!(config.arch(), Arch::LoongArch64);
    (0..0x1000u64 / 8)
        .flat_map(|_| LA_PAGE0_WORD.to_le_bytes())
        .collect()
}

/// LoongArch page-0 poison: address 0 with V | D | PLV3 | MAT=CC | P | W.
pub const LA_PAGE0_WORD: u64 = 1 | 1 << 1 | 3 << 2 | 1 << 4 | 1 << 7 | 1 << 8;

/// The KVM backend's pseudo-vector for a `hlt` exit (`kvm::VECTOR_HLT`).
const VECTOR_HLT: u64 = 0x100;

fn va_word(p: &Probe) -> u64 {
    p.va & !7
}

pub(crate) fn outcome(config: &Config, p: &Probe, r: &Record, pa: Option<u64>) -> Outcome {
    if r.status == status::OK {
        return match (config, pa) {
            (Config::Aarch64 { .. }, None) if p.kind != Access::Exec => aarch64_par_pa(r, p),
            _ => Outcome::Ok { pa },
        };
    }
    let kind = match config {
        Config::X86_64 { .. } => x86(config, p, r),
        Config::Aarch64 { .. } => aarch64(config, p, r),
        Config::Riscv64 { .. } => riscv(config, p, r),
        Config::LoongArch64 => loongarch(config, p, r),
    };
    match kind {
        Some(k) => Outcome::Fault(k),
        None => Outcome::Ok { pa: None },
    }
}

/// x86: `info = [vector, error code, CR2, RIP]`. `None` means the exception shows the
/// access was allowed (an instruction fetch that reached the `int3` of the tag).
fn x86(config: &Config, p: &Probe, r: &Record) -> Option<FaultKind> {
    let [vector, err, _cr2, rip] = r.info;
    let kvm = matches!(
        config,
        Config::X86_64 {
            accel: crate::X86Accel::Kvm(_),
            ..
        }
    );
    let exec = p.kind == Access::Exec;
    Some(match vector {
        3 if exec && rip == va_word(p) + 1 => return None,
        // KVM: the `hlt` tag reached at CPL0 (an exit after it), or at CPL3 (#GP(0) on it).
        VECTOR_HLT if kvm && exec && !p.user && rip == va_word(p) + 1 => return None,
        13 if kvm && exec && p.user && err == 0 && rip == va_word(p) => return None,
        14 if err & 8 != 0 => FaultKind::Reserved,
        14 if err & 1 == 0 => FaultKind::NotMapped,
        14 => FaultKind::Permission,
        13 if !config.is_canonical(p.va) => FaultKind::NonCanonical,
        v => FaultKind::Other(v << 32 | err),
    })
}

fn aarch64_fsc(config: &Config, p: &Probe, fsc: u64) -> FaultKind {
    match fsc {
        0x00..=0x03 => FaultKind::AddressSize,
        0x04..=0x07 if !config.is_canonical(p.va) => FaultKind::NonCanonical,
        0x04..=0x07 => FaultKind::NotMapped,
        0x08..=0x0B => FaultKind::AccessFlag,
        0x0C..=0x0F => FaultKind::Permission,
        0x10 | 0x14..=0x17 => FaultKind::External,
        other => FaultKind::Other(other),
    }
}

fn aarch64_par_pa(r: &Record, p: &Probe) -> Outcome {
    let par = r.info[3];
    if par & 1 == 0 {
        Outcome::ok((par & 0x0000_FFFF_FFFF_F000) | (p.va & 0xFFF))
    } else {
        Outcome::Ok { pa: None }
    }
}

/// AArch64: `info = [ESR_EL1, FAR_EL1, ELR_EL1, PAR_EL1]`.
fn aarch64(config: &Config, p: &Probe, r: &Record) -> Option<FaultKind> {
    let [esr, _far, elr, _par] = r.info;
    let ec = (esr >> 26) & 0x3F;
    Some(match ec {
        // Unknown reason: the UDF of the tag word, reached by a fetch at the VA.
        0x00 if p.kind == Access::Exec && elr == va_word(p) => return None,
        0x20 | 0x21 | 0x24 | 0x25 => aarch64_fsc(config, p, esr & 0x3F),
        _ => FaultKind::Other(ec << 32 | (esr & 0x1FF_FFFF)),
    })
}

/// RISC-V: `info = [mcause, mtval, mepc, status | mcause << 8 of a permissive load]`.
/// Page faults do not say why; a second load of the same VA in S-mode with SUM and MXR set
/// tells a valid leaf (`Permission`: the load completes, or translates and then raises an
/// access fault because no memory is there) from no translation (`NotMapped`).
fn riscv(config: &Config, p: &Probe, r: &Record) -> Option<FaultKind> {
    let [cause, _tval, epc, permissive] = r.info;
    let translated = permissive == status::OK || permissive >> 8 == 5;
    Some(match cause {
        2 if p.kind == Access::Exec && epc == va_word(p) => return None,
        12 | 13 | 15 if !config.is_canonical(p.va) => FaultKind::NonCanonical,
        12 | 13 | 15 if translated => FaultKind::Permission,
        12 | 13 | 15 => FaultKind::NotMapped,
        1 | 5 | 7 => FaultKind::External,
        c => FaultKind::Other(c),
    })
}

/// LoongArch: `info = [ESTAT, BADV, ERA, 0]`; Ecode is ESTAT bits 21:16, EsubCode 30:22.
fn loongarch(config: &Config, p: &Probe, r: &Record) -> Option<FaultKind> {
    let [estat, _badv, era, _] = r.info;
    let ecode = (estat >> 16) & 0x3F;
    Some(match ecode {
        // INE: the tag word (0) reached by a fetch at the VA.
        0x0D if p.kind == Access::Exec && era == va_word(p) => return None,
        // PIL, PIS, PIF: page invalid for load / store / fetch.
        0x01..=0x03 => FaultKind::NotMapped,
        // PME (page modified: D=0), PNR, PNX, PPI (privilege).
        0x04..=0x07 => FaultKind::Permission,
        // ADE (ADEF / ADEM).
        0x08 if !config.is_canonical(p.va) => FaultKind::NonCanonical,
        e => FaultKind::Other(e << 32 | (estat >> 22) & 0x1FF),
    })
}
