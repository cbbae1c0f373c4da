//! RISC-V Sv39, Sv48 and Sv57 translation (privileged ISA, "Virtual Address Translation
//! Process"; Svpbmt; Svade/Svadu), for S-mode and U-mode accesses.
//!
//! The walk follows the specification's steps:
//! 1. the address must be sign-extended from its top bit, else `NonCanonical`;
//! 2. for each PTE, root first: V = 0 → `NotMapped`; W = 1 with R = 0, reserved bits 60:54,
//!    PBMT = 3 (or PBMT ≠ 0 without Svpbmt), N = 1 (no Svnapot) → `Reserved`;
//! 3. R = X = 0 is a pointer: A, D, U or PBMT set in it → `Reserved`; at level 0 → `Reserved`;
//! 4. at a leaf, permissions: U-mode needs U = 1; S-mode may load/store a U = 1 page only with
//!    SUM and never execute one; loads need R (or X with MXR), stores W, fetches X →
//!    `Permission`;
//! 5. then a superpage whose low PPN fields are not zero is misaligned → `Reserved`;
//! 6. then, without hardware A/D update (Svade), A = 0, or D = 0 on a store → `AccessFlag`.
//!
//! The memory type comes from PBMT: 0 (PMA: taken as main memory) → `WriteBack`, 1 (NC) →
//! `Uncached`, 2 (IO) → `Device`.

use super::{Access, AccessKind, Fault, FaultKind, MemType, Outcome, Translation};

const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const G: u64 = 1 << 5;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
const PPN_SHIFT: u32 = 10;
const PPN_BITS: u32 = 44;
const RESERVED: u64 = 0x7F << 54;
const PBMT_SHIFT: u32 = 61;
const N: u64 = 1 << 63;

/// The translation mode (satp.MODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 3 levels, 39-bit addresses.
    Sv39,
    /// 4 levels, 48-bit addresses.
    Sv48,
    /// 5 levels, 57-bit addresses.
    Sv57,
}

impl Mode {
    /// The number of levels.
    pub const fn levels(self) -> usize {
        match self {
            Self::Sv39 => 3,
            Self::Sv48 => 4,
            Self::Sv57 => 5,
        }
    }
}

/// The translation configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// satp.MODE. Default: Sv39.
    pub mode: Mode,
    /// sstatus.SUM: S-mode may load and store to U pages. Default: false.
    pub sum: bool,
    /// sstatus.MXR: loads may read execute-only pages. Default: false.
    pub mxr: bool,
    /// The hardware sets A and D (Svadu with ADUE = 1); when false (Svade), A = 0 or a store
    /// to D = 0 faults. Default: false.
    pub hw_ad: bool,
    /// Svpbmt is implemented and enabled (menvcfg.PBMTE). Default: true.
    pub svpbmt: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Sv39,
            sum: false,
            mxr: false,
            hw_ad: false,
            svpbmt: true,
        }
    }
}

/// Translates `va`; `root` is the root table address (satp.PPN × 4096). `access.user`
/// selects U-mode, otherwise S-mode.
pub fn translate(
    read: &dyn Fn(u64) -> u64,
    root: u64,
    va: u64,
    access: Access,
    cfg: &Config,
) -> Outcome {
    let levels = cfg.mode.levels();
    let fault = |kind, level| Err(Fault { kind, level });
    if !super::sign_extended(va, 12 + 9 * levels as u32) {
        return fault(FaultKind::NonCanonical, levels - 1);
    }
    let mut table = root;
    // A global non-leaf entry makes every translation below it global.
    let mut global = false;
    for level in (0..levels).rev() {
        let pte = read(table + super::index(va, level) * 8);
        global |= pte & G != 0;
        if pte & V == 0 {
            return fault(FaultKind::NotMapped, level);
        }
        let pbmt = (pte >> PBMT_SHIFT) & 0b11;
        if (pte & W != 0 && pte & R == 0)
            || pte & RESERVED != 0
            || pbmt == 3
            || (pbmt != 0 && !cfg.svpbmt)
            || pte & N != 0
        {
            return fault(FaultKind::Reserved, level);
        }
        let ppn = (pte >> PPN_SHIFT) & ((1 << PPN_BITS) - 1);
        if pte & (R | X) == 0 {
            if pte & (A | D | U) != 0 || pbmt != 0 || level == 0 {
                return fault(FaultKind::Reserved, level);
            }
            table = ppn << 12;
            continue;
        }

        // Leaf.
        let user_page = pte & U != 0;
        let mode_ok = if access.user {
            user_page
        } else {
            !user_page || (cfg.sum && access.kind != AccessKind::Exec)
        };
        let rwx_ok = match access.kind {
            AccessKind::Read => pte & R != 0 || (cfg.mxr && pte & X != 0),
            AccessKind::Write => pte & W != 0,
            AccessKind::Exec => pte & X != 0,
        };
        if !mode_ok || !rwx_ok {
            return fault(FaultKind::Permission, level);
        }
        if ppn & ((1 << (9 * level)) - 1) != 0 {
            return fault(FaultKind::Reserved, level);
        }
        if !cfg.hw_ad && (pte & A == 0 || (access.kind == AccessKind::Write && pte & D == 0)) {
            return fault(FaultKind::AccessFlag, level);
        }
        let size = super::level_size(level);
        return Ok(Translation {
            pa: ((ppn << 12) & !(size - 1)) | (va & (size - 1)),
            page_size: size,
            mem: match pbmt {
                0 => MemType::WriteBack,
                1 => MemType::Uncached,
                _ => MemType::Device,
            },
            global,
            level,
            entry: pte,
        });
    }
    unreachable!("a pointer at level 0 is reserved")
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rd, setup};
    use super::super::{Access, FaultKind::*, MemType};
    use super::*;

    // Sv39: root 0x8000_1000 (level 2), L1 0x8000_2000, L0 0x8000_3000; an Sv48 root
    // 0x8000_5000 whose entry 0 points to the Sv39 root.
    const ROOT: u64 = 0x8000_1000;
    const ROOT48: u64 = 0x8000_5000;

    fn tables() {
        setup(&[
            (0x8000_1000, 0x2000_0801),           // root[0] → L1 (PPN 0x80002), V
            (0x8000_1008, 0x3000_00CF),           // root[1]: gigapage 0xC000_0000, VRWXAD
            (0x8000_1010, 0x3008_00CF),           // root[2]: gigapage 0xC020_0000 (misaligned)
            (0x8000_2000, 0x2000_0C01),           // L1[0] → L0 (PPN 0x80003)
            (0x8000_2008, 0x2018_00CF),           // L1[1]: megapage 0x8060_0000
            (0x8000_2010, 0x2018_04CF),           // L1[2]: megapage 0x8060_1000 (misaligned)
            (0x8000_2018, 0x2000_0C41),           // L1[3]: pointer with A set
            (0x8000_3008, 0x2010_04C7),           // L0[1]: 0x8040_1000 VRWAD
            (0x8000_3010, 0x2010_085B),           // L0[2]: 0x8040_2000 VRXUA (D = 0)
            (0x8000_3018, 0x2010_0CC5),           // L0[3]: VWAD (W without R)
            (0x8000_3020, 0x2010_1007),           // L0[4]: 0x8040_4000 VRW, A = 0
            (0x8000_3028, 0x2010_1447),           // L0[5]: 0x8040_5000 VRWA, D = 0
            (0x8000_3030, 0x2010_1849),           // L0[6]: 0x8040_6000 VXA (execute-only)
            (0x8000_3038, 0x0040_0000_2010_1CC7), // L0[7]: reserved bit 54
            (0x8000_3040, 0x2000_0000_2010_20C7), // L0[8]: 0x8040_8000, PBMT = 1 (NC)
            (0x8000_3048, 0x4000_0000_2010_24C7), // L0[9]: 0x8040_9000, PBMT = 2 (IO)
            (0x8000_3050, 0x6000_0000_2010_28C7), // L0[10]: PBMT = 3
            (0x8000_3058, 0x8000_0000_2010_2CC7), // L0[11]: N = 1
            (0x8000_3060, 0x2000_0C01),           // L0[12]: pointer at level 0
            (0x8000_5000, 0x2000_0401),           // Sv48 root[0] → 0x8000_1000
        ]);
    }

    fn tr(va: u64, access: Access, cfg: &Config) -> Outcome {
        translate(rd(), ROOT, va, access, cfg)
    }

    fn err(kind: FaultKind, level: usize) -> Outcome {
        Err(Fault { kind, level })
    }

    #[test]
    fn pages_and_privilege() {
        tables();
        let c = Config::default();
        let t = tr(0x1ABC, Access::WRITE, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.level, t.mem),
            (0x8040_1ABC, 0x1000, 0, MemType::WriteBack)
        );
        assert_eq!(tr(0x1000, Access::USER_READ, &c), err(Permission, 0));
        assert_eq!(tr(0x1000, Access::EXEC, &c), err(Permission, 0));
        // User RX page.
        assert_eq!(tr(0x2010, Access::USER_READ, &c).unwrap().pa, 0x8040_2010);
        assert!(tr(0x2000, Access::USER_EXEC, &c).is_ok());
        assert_eq!(tr(0x2000, Access::USER_WRITE, &c), err(Permission, 0));
        assert_eq!(tr(0x2000, Access::READ, &c), err(Permission, 0), "SUM = 0");
        let sum = Config { sum: true, ..c };
        assert!(tr(0x2000, Access::READ, &sum).is_ok());
        assert_eq!(
            tr(0x2000, Access::EXEC, &sum),
            err(Permission, 0),
            "S never executes U pages"
        );
        assert_eq!(tr(0x6000, Access::READ, &c), err(Permission, 0));
        assert!(tr(0x6000, Access::READ, &Config { mxr: true, ..c }).is_ok());
        assert_eq!(tr(0xD000, Access::READ, &c), err(NotMapped, 0));
    }

    #[test]
    fn reserved_encodings() {
        tables();
        let c = Config::default();
        assert_eq!(
            tr(0x3000, Access::READ, &c),
            err(Reserved, 0),
            "W without R"
        );
        assert_eq!(tr(0x7000, Access::READ, &c), err(Reserved, 0), "bit 54");
        assert_eq!(tr(0xA000, Access::READ, &c), err(Reserved, 0), "PBMT = 3");
        assert_eq!(
            tr(0xB000, Access::READ, &c),
            err(Reserved, 0),
            "N without Svnapot"
        );
        assert_eq!(
            tr(0xC000, Access::READ, &c),
            err(Reserved, 0),
            "pointer at level 0"
        );
        assert_eq!(
            tr(0x60_0000, Access::READ, &c),
            err(Reserved, 1),
            "A in a pointer"
        );
    }

    #[test]
    fn pbmt() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x8000, Access::READ, &c).unwrap().mem, MemType::Uncached);
        assert_eq!(
            tr(0x9008, Access::READ, &c).unwrap(),
            Translation {
                pa: 0x8040_9008,
                page_size: 0x1000,
                mem: MemType::Device,
                global: false,
                level: 0,
                entry: 0x4000_0000_2010_24C7,
            }
        );
        assert_eq!(
            tr(0x8000, Access::READ, &Config { svpbmt: false, ..c }),
            err(Reserved, 0)
        );
    }

    #[test]
    fn accessed_and_dirty() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x4000, Access::READ, &c), err(AccessFlag, 0));
        assert!(tr(0x5000, Access::READ, &c).is_ok());
        assert_eq!(tr(0x5000, Access::WRITE, &c), err(AccessFlag, 0));
        let hw = Config { hw_ad: true, ..c };
        assert_eq!(tr(0x4000, Access::READ, &hw).unwrap().pa, 0x8040_4000);
        assert!(tr(0x5000, Access::WRITE, &hw).is_ok());
    }

    #[test]
    fn superpages() {
        tables();
        let c = Config::default();
        let t = tr(0x21_2345, Access::EXEC, &c).unwrap();
        assert_eq!((t.pa, t.page_size, t.level), (0x8061_2345, 0x20_0000, 1));
        assert_eq!(
            tr(0x40_0000, Access::READ, &c),
            err(Reserved, 1),
            "misaligned megapage"
        );
        let t = tr(0x4123_4567, Access::READ, &c).unwrap();
        assert_eq!((t.pa, t.page_size, t.level), (0xC123_4567, 0x4000_0000, 2));
        assert_eq!(
            tr(0x8000_0000, Access::READ, &c),
            err(Reserved, 2),
            "misaligned gigapage"
        );
        // The permission check comes before the alignment check.
        assert_eq!(tr(0x40_0000, Access::USER_READ, &c), err(Permission, 1));
    }

    #[test]
    fn canonical_and_sv48() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x40_0000_0000, Access::READ, &c), err(NonCanonical, 2));
        assert_eq!(
            tr(0xFFFF_FFC0_0000_0000, Access::READ, &c),
            err(NotMapped, 2)
        );
        let c48 = Config {
            mode: Mode::Sv48,
            ..c
        };
        let t = translate(rd(), ROOT48, 0x1008, Access::READ, &c48).unwrap();
        assert_eq!(t.pa, 0x8040_1008);
        assert_eq!(
            translate(rd(), ROOT48, 0x40_0000_0000, Access::READ, &c48),
            err(NotMapped, 2)
        );
        assert_eq!(
            translate(rd(), ROOT48, 0x8000_0000_0000, Access::READ, &c48),
            err(NonCanonical, 3)
        );
        let c57 = Config {
            mode: Mode::Sv57,
            ..c
        };
        // Sv57 root[0] → the Sv48 root's table used as level 3: entry 256 is empty.
        assert_eq!(
            translate(rd(), ROOT48, 0x8000_0000_0000, Access::READ, &c57),
            err(NotMapped, 3)
        );
        assert_eq!(
            translate(rd(), ROOT48, 0x1_0000_0000_0000, Access::READ, &c57),
            err(NotMapped, 4)
        );
    }
}
