//! x86_64 4-level and 5-level paging (Intel SDM Vol. 3A §4.5–4.9, AMD APM Vol. 2 §5.3).
//!
//! Checks, per entry, root first: P = 0 → `NotMapped`; reserved bits → `Reserved` (physical
//! address bits at or above MAXPHYADDR, XD when EFER.NXE = 0, PS in a PML5E or PML4E, PS in a
//! PDPTE without 1 GiB page support, the bits between the PAT bit and the page frame of a
//! 1 GiB or 2 MiB page). At the leaf, the access rights are the combination over all levels:
//! writable iff R/W = 1 everywhere, user iff U/S = 1 everywhere, execute-disable iff XD = 1
//! anywhere (NXE = 1); then CR0.WP, CR4.SMEP, CR4.SMAP (with RFLAGS.AC) as in SDM §4.6.1.
//! The processor sets A and D itself, so there is no `AccessFlag` fault. Protection keys are
//! not modelled (CR4.PKE = 0). A non-canonical address raises #GP: `NonCanonical`.
//!
//! The memory type is the PAT entry selected by PAT:PCD:PWT of the leaf (PAT is bit 7 of a
//! PTE, bit 12 of a huge PDE/PDPTE); MTRRs are not modelled. UC → `Device`, UC- → `Uncached`,
//! WB → `WriteBack`, others → `Other(type)` (WC 1, WT 4, WP 5).

use super::{Access, AccessKind, Fault, FaultKind, MemType, Outcome, Translation};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const PAT_4K: u64 = 1 << 7;
const PAT_HUGE: u64 = 1 << 12;
const XD: u64 = 1 << 63;

/// The power-on value of IA32_PAT: WB, WT, UC-, UC, WB, WT, UC-, UC.
pub const POWER_ON_PAT: u64 = 0x0007_0406_0007_0406;

/// The paging configuration (control registers and CPU features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// CR4.LA57: 5-level paging (57-bit addresses). Default: false.
    pub la57: bool,
    /// CR0.WP: supervisor writes honour R/W. Default: true.
    pub wp: bool,
    /// EFER.NXE: XD is the execute-disable bit (otherwise it is reserved). Default: true.
    pub nxe: bool,
    /// CR4.SMEP: no supervisor fetch from user pages. Default: false.
    pub smep: bool,
    /// CR4.SMAP: no supervisor data access to user pages unless `ac`. Default: false.
    pub smap: bool,
    /// RFLAGS.AC for the SMAP check. Default: false.
    pub ac: bool,
    /// 1 GiB pages supported (CPUID.80000001H:EDX.Page1GB). Default: true.
    pub page_1g: bool,
    /// MAXPHYADDR, 36 to 52. Default: 52.
    pub maxphyaddr: u32,
    /// IA32_PAT. Default: [`POWER_ON_PAT`].
    pub pat: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            la57: false,
            wp: true,
            nxe: true,
            smep: false,
            smap: false,
            ac: false,
            page_1g: true,
            maxphyaddr: 52,
            pat: POWER_ON_PAT,
        }
    }
}

fn memtype(pat: u64, index: u64) -> MemType {
    match (pat >> (8 * index)) & 0x7 {
        0 => MemType::Device,
        6 => MemType::WriteBack,
        7 => MemType::Uncached,
        other => MemType::Other(other as u8),
    }
}

/// Translates `va`; `root` is the physical address in CR3 (flag bits ignored).
pub fn translate(
    read: &dyn Fn(u64) -> u64,
    root: u64,
    va: u64,
    access: Access,
    cfg: &Config,
) -> Outcome {
    assert!(
        (36..=52).contains(&cfg.maxphyaddr),
        "MAXPHYADDR {} out of range",
        cfg.maxphyaddr
    );
    let levels = if cfg.la57 { 5 } else { 4 };
    let fault = |kind, level| Err(Fault { kind, level });
    if !super::sign_extended(va, 12 + 9 * levels as u32) {
        return fault(FaultKind::NonCanonical, levels - 1);
    }
    let phys_mask = (1u64 << cfg.maxphyaddr) - 1;
    let frame_mask = phys_mask & !0xFFF;
    // Bits MAXPHYADDR..=51 must be zero in every present entry.
    let above_maxphy = ((1u64 << 52) - 1) & !phys_mask;

    let mut table = root & frame_mask;
    let (mut writable, mut user, mut no_exec) = (true, true, false);
    for level in (0..levels).rev() {
        let e = read(table + super::index(va, level) * 8);
        if e & P == 0 {
            return fault(FaultKind::NotMapped, level);
        }
        let ps = level > 0 && e & PS != 0;
        let size = super::level_size(level);
        let reserved = e & above_maxphy != 0
            || (!cfg.nxe && e & XD != 0)
            || (ps && level >= 3)
            || (ps && level == 2 && !cfg.page_1g)
            // Bits 12 (PAT) to log2(size) - 1 are reserved, except bit 12.
            || (ps && e & (size - 1) & !0x1FFF != 0);
        if reserved {
            return fault(FaultKind::Reserved, level);
        }
        writable &= e & RW != 0;
        user &= e & US != 0;
        no_exec |= cfg.nxe && e & XD != 0;
        if level > 0 && !ps {
            table = e & frame_mask;
            continue;
        }

        // Leaf: access rights (SDM §4.6.1).
        let smap_blocks = cfg.smap && user && !cfg.ac;
        let allowed = match (access.user, access.kind) {
            (true, AccessKind::Read) => user,
            (true, AccessKind::Write) => user && writable,
            (true, AccessKind::Exec) => user && !no_exec,
            (false, AccessKind::Read) => !smap_blocks,
            (false, AccessKind::Write) => !smap_blocks && (writable || !cfg.wp),
            (false, AccessKind::Exec) => !(no_exec || (cfg.smep && user)),
        };
        if !allowed {
            return fault(FaultKind::Permission, level);
        }
        let pat_bit = if level == 0 {
            e & PAT_4K != 0
        } else {
            e & PAT_HUGE != 0
        };
        let pat_index =
            (u64::from(pat_bit) << 2) | (u64::from(e & PCD != 0) << 1) | u64::from(e & PWT != 0);
        return Ok(Translation {
            pa: (e & frame_mask & !(size - 1)) | (va & (size - 1)),
            page_size: size,
            mem: memtype(cfg.pat, pat_index),
            // G (bit 8) of the leaf; it takes effect with CR4.PGE.
            global: e & (1 << 8) != 0,
            level,
            entry: e,
        });
    }
    unreachable!("the level-0 entry is always a leaf")
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rd, setup};
    use super::super::{Access, Config as Any, FaultKind::*, MemType, rights};
    use super::*;

    // PML4 0x8000_1000, PDPT 0x8000_2000, PD 0x8000_3000, PT 0x8000_4000,
    // a kernel-only PDPT 0x8000_5000, a PML5 0x8000_6000.
    const ROOT: u64 = 0x8000_1000;
    const PML5: u64 = 0x8000_6000;

    fn tables() {
        setup(&[
            (0x8000_1000, 0x8000_2007),           // PML4[0] → PDPT, P|RW|US
            (0x8000_1008, 0x8000_2087),           // PML4[1]: PS set → reserved
            (0x8000_1010, 0x8000_5003),           // PML4[2] → PDPT 5, P|RW (kernel only)
            (0x8000_2000, 0x8000_3007),           // PDPT[0] → PD
            (0x8000_2008, 0x1_4000_0083),         // PDPT[1]: 1 GiB at 0x1_4000_0000, P|RW|PS
            (0x8000_2010, 0x1_4000_2083),         // PDPT[2]: 1 GiB with bit 13 set → reserved
            (0x8000_2018, 0x1_4000_1083),         // PDPT[3]: 1 GiB with PAT (bit 12) set
            (0x8000_3010, 0x8000_4007),           // PD[2] → PT
            (0x8000_3018, 0x4020_0083),           // PD[3]: 2 MiB at 0x4020_0000, kernel RW
            (0x8000_3020, 0x4040_009B),           // PD[4]: 2 MiB, PCD|PWT (PAT 3 = UC)
            (0x8000_3028, 0x4060_0093),           // PD[5]: 2 MiB, PCD (PAT 2 = UC-)
            (0x8000_4018, 0x8000_0000_1234_5007), // PT[3]: 4K at 0x1234_5000, RW|US|XD
            (0x8000_4028, 0x1234_6005),           // PT[5]: 4K, P|US (read-only, executable)
            (0x8000_4030, 0x0000_0100_0000_0003), // PT[6]: 4K at 2^40, kernel RW
            (0x8000_5000, 0x4000_0087),           // PDPT5[0]: 1 GiB user RW under a kernel PML4E
            (0x8000_6000, 0x8000_1007),           // PML5[0] → PML4
        ]);
    }

    fn tr(va: u64, access: Access, cfg: &Config) -> Outcome {
        translate(rd(), ROOT, va, access, cfg)
    }

    fn err(kind: super::super::FaultKind, level: usize) -> Outcome {
        Err(Fault { kind, level })
    }

    #[test]
    fn user_rw_nx_4k_page() {
        tables();
        let c = Config::default();
        let t = tr(0x40_3ABC, Access::USER_READ, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.mem, t.level),
            (0x1234_5ABC, 0x1000, MemType::WriteBack, 0)
        );
        assert_eq!(t.entry, 0x8000_0000_1234_5007);
        assert!(tr(0x40_3000, Access::USER_WRITE, &c).is_ok());
        assert_eq!(tr(0x40_3000, Access::USER_EXEC, &c), err(Permission, 0));
        assert_eq!(tr(0x40_3000, Access::EXEC, &c), err(Permission, 0));
        let r = rights(rd(), ROOT, 0x40_3000, &Any::X86_64(c)).unwrap();
        assert!(r.kernel.read && r.kernel.write && !r.kernel.exec);
        assert!(r.user.read && r.user.write && !r.user.exec);
        // Without NXE the XD bit is reserved.
        let c = Config { nxe: false, ..c };
        assert_eq!(tr(0x40_3000, Access::READ, &c), err(Reserved, 0));
    }

    #[test]
    fn not_present_and_canonical() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x40_4000, Access::READ, &c), err(NotMapped, 0));
        assert_eq!(tr(0x8000_0000_0000, Access::READ, &c), err(NonCanonical, 3));
        assert_eq!(
            tr(0xFFFF_8000_0000_0000, Access::READ, &c),
            err(NotMapped, 3)
        );
        assert_eq!(
            tr(0x80_0000_0000, Access::READ, &c),
            err(Reserved, 3),
            "PS in a PML4E"
        );
    }

    #[test]
    fn two_mib_pages_and_memory_types() {
        tables();
        let c = Config::default();
        let t = tr(0x61_2345, Access::WRITE, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.level, t.mem),
            (0x4021_2345, 0x20_0000, 1, MemType::WriteBack)
        );
        assert_eq!(tr(0x61_2345, Access::USER_READ, &c), err(Permission, 1));
        assert_eq!(
            tr(0x61_2345, Access::EXEC, &c).unwrap().pa,
            0x4021_2345,
            "XD clear"
        );
        assert_eq!(
            tr(0x80_0000, Access::READ, &c).unwrap().mem,
            MemType::Device
        );
        assert_eq!(
            tr(0xA0_0000, Access::READ, &c).unwrap().mem,
            MemType::Uncached
        );
    }

    #[test]
    fn one_gib_pages() {
        tables();
        let c = Config::default();
        let t = tr(0x4567_8ABC, Access::READ, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.level),
            (0x1_4567_8ABC, 0x4000_0000, 2)
        );
        assert_eq!(
            tr(0x8000_0000, Access::READ, &c),
            err(Reserved, 2),
            "bit 13 of a 1 GiB page"
        );
        let t = tr(0xC000_0010, Access::READ, &c).unwrap();
        assert_eq!(
            (t.pa, t.mem),
            (0x1_4000_0010, MemType::WriteBack),
            "PAT index 4 = WB"
        );
        let no1g = Config {
            page_1g: false,
            ..c
        };
        assert_eq!(tr(0x4567_8ABC, Access::READ, &no1g), err(Reserved, 2));
    }

    #[test]
    fn hierarchical_user_bit() {
        tables();
        let c = Config::default();
        let va = 0x100_0000_0000 + 0x10; // PML4[2] → PDPT5[0]
        assert_eq!(tr(va, Access::USER_READ, &c), err(Permission, 2));
        assert_eq!(tr(va, Access::WRITE, &c).unwrap().pa, 0x4000_0010);
    }

    #[test]
    fn wp_smep_smap() {
        tables();
        let c = Config::default();
        let ro = 0x40_5000; // PT[5]: user, read-only, executable
        assert_eq!(tr(ro, Access::WRITE, &c), err(Permission, 0));
        assert!(tr(ro, Access::WRITE, &Config { wp: false, ..c }).is_ok());
        assert_eq!(
            tr(ro, Access::USER_WRITE, &Config { wp: false, ..c }),
            err(Permission, 0)
        );
        assert!(tr(ro, Access::EXEC, &c).is_ok());
        assert!(tr(ro, Access::USER_EXEC, &c).is_ok());
        assert_eq!(
            tr(ro, Access::EXEC, &Config { smep: true, ..c }),
            err(Permission, 0)
        );
        assert_eq!(
            tr(ro, Access::READ, &Config { smap: true, ..c }),
            err(Permission, 0)
        );
        assert!(
            tr(
                ro,
                Access::READ,
                &Config {
                    smap: true,
                    ac: true,
                    ..c
                }
            )
            .is_ok()
        );
        assert!(
            tr(
                ro,
                Access::USER_READ,
                &Config {
                    smap: true,
                    smep: true,
                    ..c
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn maxphyaddr() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x40_6008, Access::READ, &c).unwrap().pa, 0x100_0000_0008);
        let c36 = Config {
            maxphyaddr: 36,
            ..c
        };
        assert_eq!(tr(0x40_6000, Access::READ, &c36), err(Reserved, 0));
        assert_eq!(tr(0x40_3000, Access::READ, &c36).unwrap().pa, 0x1234_5000);
    }

    #[test]
    fn five_levels() {
        tables();
        let c = Config {
            la57: true,
            ..Config::default()
        };
        let t = translate(rd(), PML5, 0x40_3010, Access::USER_READ, &c).unwrap();
        assert_eq!(t.pa, 0x1234_5010);
        // Canonical with 57 bits, not with 48.
        let va = 0x0001_0000_0000_0000;
        assert_eq!(
            translate(rd(), PML5, va, Access::READ, &c),
            err(NotMapped, 4)
        );
        assert_eq!(
            tr(va, Access::READ, &Config::default()),
            err(NonCanonical, 3)
        );
        assert_eq!(
            translate(rd(), PML5, 0x0100_0000_0000_0000, Access::READ, &c),
            err(NonCanonical, 4)
        );
    }
}
