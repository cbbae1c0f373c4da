//! LoongArch64 page walk as done by the TLB refill handler (`LDDIR`/`LDPTE`) with the 4 KiB
//! layouts (LoongArch Reference Manual Vol. 1, §5.4 and §7.5; Linux `tlbex.S`):
//!
//! * 4 levels: PWCL = 0x13E4D52C, PWCH = 0x267 — PT 20:12, Dir1 29:21, Dir2 38:30, Dir3 47:39;
//! * 3 levels: PWCL = 0x0004D52C, PWCH = 0x25E — PT 20:12, Dir1 29:21, Dir3 38:30 (Dir2
//!   unused).
//!
//! Directory entries have **no valid bit**: `LDDIR` uses whatever the entry holds. An entry
//! with bit 6 (HUGE) set is a huge leaf at its level (2 MiB in a Dir1 table, 1 GiB in the
//! table whose index is bits 38:30); a huge entry in a table indexed by bits 47:39 (a 512 GiB
//! page) is refused with `Reserved`. Any other value, masked to bits 47:12 (PALEN = 48), is
//! the next table's address, **even 0**: the walk then reads physical page 0, as the hardware
//! does (give the reader a page 0, [`mem`](crate::mem) has one).
//!
//! Leaf checks, in the order of the TLB lookup (QEMU `loongarch_check_pte`): V = 0 →
//! `NotMapped` (PIL/PIS/PIF); fetch with NX → `Permission` (PNX); load with NR →
//! `Permission` (PNR); privilege (RPLV = 0: the current PLV must not exceed the PTE's PLV;
//! RPLV = 1: it must equal it) → `Permission` (PPI); store with D = 0 → `Permission` (the
//! "page modify" exception PME, which is how software tracks dirtiness; it is reported as a
//! permission fault, never `AccessFlag`). Kernel accesses run at PLV0, user accesses at
//! [`Config::user_plv`].
//!
//! The address must be sign-extended from bit 47 (VALEN = 48), else `NonCanonical` (ADE).
//! The memory type comes from MAT (bits 5:4): 0 SUC → `Device`, 1 CC → `WriteBack`, 2 WUC →
//! `Uncached`, 3 → `Other(3)`. A huge leaf's physical address is masked to its size (bit 12,
//! HGLOBAL, and the other low bits are not address bits).

use super::{Access, AccessKind, Fault, FaultKind, MemType, Outcome, Translation};

const V: u64 = 1 << 0;
const D: u64 = 1 << 1;
const PLV_SHIFT: u32 = 2;
const MAT_SHIFT: u32 = 4;
const HUGE: u64 = 1 << 6;
const NR: u64 = 1 << 61;
const NX: u64 = 1 << 62;
const RPLV: u64 = 1 << 63;
/// Physical address bits 47:12.
const ADDR_MASK: u64 = 0x0000_FFFF_FFFF_F000;

/// The walk configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// 3 or 4 levels (the layouts above). Default: 4.
    pub levels: usize,
    /// The PLV of user accesses. Default: 3.
    pub user_plv: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            levels: 4,
            user_plv: 3,
        }
    }
}

/// Translates `va`; `root` is the directory address in PGDL/PGDH (the caller picks which).
pub fn translate(
    read: &dyn Fn(u64) -> u64,
    root: u64,
    va: u64,
    access: Access,
    cfg: &Config,
) -> Outcome {
    assert!(
        cfg.levels == 3 || cfg.levels == 4,
        "LoongArch walker: 3 or 4 levels"
    );
    assert!(cfg.user_plv <= 3, "PLV is 0..=3");
    let fault = |kind, level| Err(Fault { kind, level });
    if !super::sign_extended(va, 48) {
        return fault(FaultKind::NonCanonical, cfg.levels - 1);
    }
    let mut base = root & ADDR_MASK;
    let mut leaf = None;
    for level in (1..cfg.levels).rev() {
        let e = read(base + super::index(va, level) * 8);
        if e & HUGE != 0 {
            if level == 3 {
                return fault(FaultKind::Reserved, level);
            }
            leaf = Some((e, level));
            break;
        }
        base = e & ADDR_MASK;
    }
    let (e, level) = leaf.unwrap_or_else(|| (read(base + super::index(va, 0) * 8), 0));

    if e & V == 0 {
        return fault(FaultKind::NotMapped, level);
    }
    let plv = if access.user {
        u64::from(cfg.user_plv)
    } else {
        0
    };
    let pte_plv = (e >> PLV_SHIFT) & 0b11;
    let plv_ok = if e & RPLV != 0 {
        plv == pte_plv
    } else {
        plv <= pte_plv
    };
    let denied = (access.kind == AccessKind::Exec && e & NX != 0)
        || (access.kind == AccessKind::Read && e & NR != 0)
        || !plv_ok
        || (access.kind == AccessKind::Write && e & D == 0);
    if denied {
        return fault(FaultKind::Permission, level);
    }
    let size = super::level_size(level);
    Ok(Translation {
        pa: (e & ADDR_MASK & !(size - 1)) | (va & (size - 1)),
        page_size: size,
        mem: match (e >> MAT_SHIFT) & 0b11 {
            0 => MemType::Device,
            1 => MemType::WriteBack,
            2 => MemType::Uncached,
            other => MemType::Other(other as u8),
        },
        // G is bit 6 of a page; in a huge entry bit 6 is HUGE and G moves to bit 12 (HG).
        global: if level == 0 {
            e & (1 << 6) != 0
        } else {
            e & (1 << 12) != 0
        },
        level,
        entry: e,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rd, setup};
    use super::super::{Access, FaultKind::*, MemType};
    use super::*;
    use crate::mem;

    // Dir3 0x8000_1000 (root), Dir2 0x8000_2000, Dir1 0x8000_3000, PT 0x8000_4000.
    const ROOT: u64 = 0x8000_1000;

    fn tables() {
        setup(&[
            (0x8000_1000, 0x8000_2000),           // Dir3[0] → Dir2
            (0x8000_1008, 0x0000_0000_0000_0053), // Dir3[1]: HUGE → refused
            (0x8000_2000, 0x8000_3000),           // Dir2[0] → Dir1
            (0x8000_2008, 0xC000_0053),           // Dir2[1]: 1G at 0xC000_0000, V|D|MAT=CC|HUGE
            (0x8000_3000, 0x8000_4000),           // Dir1[0] → PT
            (0x8000_3008, 0x4020_0053),           // Dir1[1]: 2M at 0x4020_0000, PLV0
            (0x8000_3010, 0x4040_105F),           // Dir1[2]: 2M at 0x4040_0000, HGLOBAL, PLV3
            (0x8000_4008, 0x4000_101F),           // PT[1]: V|D|PLV3|MAT=CC
            (0x8000_4010, 0x4000_2003),           // PT[2]: V|D|PLV0|MAT=SUC
            (0x8000_4018, 0x6000_0000_4000_302D), // PT[3]: V|PLV3|MAT=WUC|NR|NX, D = 0
            (0x8000_4020, 0x8000_0000_4000_401F), // PT[4]: RPLV, PLV3
        ]);
    }

    fn tr(va: u64, access: Access, cfg: &Config) -> Outcome {
        translate(rd(), ROOT, va, access, cfg)
    }

    fn err(kind: FaultKind, level: usize) -> Outcome {
        Err(Fault { kind, level })
    }

    #[test]
    fn pages() {
        tables();
        let c = Config::default();
        let t = tr(0x1ABC, Access::USER_WRITE, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.level, t.mem),
            (0x4000_1ABC, 0x1000, 0, MemType::WriteBack)
        );
        assert!(tr(0x1000, Access::USER_EXEC, &c).is_ok());
        assert!(
            tr(0x1000, Access::READ, &c).is_ok(),
            "PLV0 may use a PLV3 page"
        );
        assert_eq!(tr(0x2000, Access::READ, &c).unwrap().mem, MemType::Device);
        assert_eq!(tr(0x2000, Access::USER_READ, &c), err(Permission, 0));
        assert_eq!(tr(0x3000, Access::USER_READ, &c), err(Permission, 0), "NR");
        assert_eq!(tr(0x3000, Access::USER_EXEC, &c), err(Permission, 0), "NX");
        assert_eq!(
            tr(0x3000, Access::USER_WRITE, &c),
            err(Permission, 0),
            "D = 0 (PME)"
        );
        assert_eq!(
            tr(0x4000, Access::READ, &c),
            err(Permission, 0),
            "RPLV: PLV0 != 3"
        );
        assert!(tr(0x4000, Access::USER_READ, &c).is_ok());
        assert_eq!(tr(0x5000, Access::READ, &c), err(NotMapped, 0));
    }

    #[test]
    fn mat_uncached() {
        tables();
        // PT[3] with NR clear: readable, weakly-ordered uncached.
        mem::write_u64(0x8000_4018, 0x4000_0000_4000_302D);
        let t = Config::default();
        assert_eq!(
            tr(0x3008, Access::USER_READ, &t).unwrap().mem,
            MemType::Uncached
        );
    }

    #[test]
    fn huge_pages() {
        tables();
        let c = Config::default();
        let t = tr(0x21_2345, Access::WRITE, &c).unwrap();
        assert_eq!((t.pa, t.page_size, t.level), (0x4021_2345, 0x20_0000, 1));
        assert_eq!(tr(0x21_2345, Access::USER_READ, &c), err(Permission, 1));
        let t = tr(0x41_2345, Access::USER_READ, &c).unwrap();
        assert_eq!(t.pa, 0x4041_2345, "HGLOBAL (bit 12) is not an address bit");
        let t = tr(0x4123_4567, Access::READ, &c).unwrap();
        assert_eq!((t.pa, t.page_size, t.level), (0xC123_4567, 0x4000_0000, 2));
        assert_eq!(tr(0x80_0000_0000, Access::READ, &c), err(Reserved, 3));
    }

    #[test]
    fn zero_directory_entry_reads_page_zero() {
        tables();
        let c = Config::default();
        // Dir2[2] is 0: the Dir1 "table" is physical page 0, whose entry 0 is 0 too, so the
        // PT is page 0 as well; its entry 3 decides.
        let va = 0x8000_3000;
        assert_eq!(tr(va, Access::READ, &c), err(NotMapped, 0));
        mem::write_u64(0x18, 0x4000_901F);
        assert_eq!(tr(va + 4, Access::READ, &c).unwrap().pa, 0x4000_9004);
    }

    #[test]
    fn canonical_and_three_levels() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x8000_0000_0000, Access::READ, &c), err(NonCanonical, 3));
        assert_eq!(
            tr(0xFFFF_0000_0000_0000, Access::READ, &c),
            err(NonCanonical, 3)
        );
        // Upper half: Dir3[256] is 0, then page 0 all the way down.
        assert_eq!(
            tr(0xFFFF_8000_0000_0000, Access::READ, &c),
            err(NotMapped, 0)
        );
        // Three levels rooted at the Dir2 table: bits 38:30 index the root.
        let c3 = Config { levels: 3, ..c };
        let t = translate(rd(), 0x8000_2000, 0x4123_4567, Access::READ, &c3).unwrap();
        assert_eq!((t.pa, t.level), (0xC123_4567, 2));
        assert_eq!(
            translate(rd(), 0x8000_2000, 0x1008, Access::READ, &c3)
                .unwrap()
                .pa,
            0x4000_1008
        );
        assert_eq!(
            translate(rd(), 0x8000_2000, 0x4000_0000_0000, Access::READ, &c3),
            err(NotMapped, 0)
        );
    }
}
