//! AArch64 VMSAv8-64 stage-1 translation, 4 KiB granule, 48-bit input (T0SZ = 16), one
//! table (TTBR0), no FEAT_LPA2, no TCR.HA/HD, no PAN, SCTLR.WXN = 0, TCR.HPD = 0
//! (Arm ARM DDI 0487, chapter D8).
//!
//! Per descriptor, L0 first (our level 3):
//! * bit 0 = 0 → translation fault: `NotMapped`;
//! * a block descriptor (`0b01`) at L0, or the reserved encoding `0b01` at L3 → the hardware
//!   reports a translation fault; this walker reports `Reserved` so that a table holding
//!   such an encoding is told apart from an empty one (compare with hardware as a translation
//!   fault);
//! * the next-table or output address has bits at or above `pa_bits` set (bits 51:48 count:
//!   they are RES0 with a 4 KiB granule and no LPA2) → `AddressSize`;
//! * table descriptors accumulate APTable (bit 61: no EL0 access below; bit 62: no write
//!   below), PXNTable (59) and UXNTable/XNTable (60).
//!
//! At the leaf: AF = 0 → `AccessFlag` (checked before permissions, as in QEMU's
//! `get_phys_addr_lpae`); then permissions from AP\[2:1\] (00 EL1 RW; 01 EL1 RW, EL0 RW;
//! 10 EL1 RO; 11 EL1 RO, EL0 RO) with the table restrictions applied, PXN/UXN, and EL1 may
//! not execute a page that EL0 can write. EL0 may execute whatever UXN allows, whatever AP
//! says (execute-only memory). Block output addresses are masked to the block size (the low
//! bits are RES0; QEMU ignores them too).
//!
//! [`Regime::El2`] models the non-VHE EL2 regime: one privilege level, AP\[1\] and PXN ignored,
//! bit 54 is XN, APTable\[0\] and PXNTable ignored; a user (EL0) access always faults with
//! `Permission`, since the regime has no EL0.
//!
//! The memory type is the MAIR attribute byte selected by AttrIndx (bits 4:2): `0000ddxx`
//! (any Device type) → `Device`; inner and outer Normal Write-Back → `WriteBack`; inner and
//! outer Non-cacheable (`0x44`) → `Uncached`; anything else → `Other(byte)`.

use super::{Access, AccessKind, Fault, FaultKind, MemType, Outcome, Translation};

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const PXN_TABLE: u64 = 1 << 59;
const UXN_TABLE: u64 = 1 << 60;
const AP_TABLE_NO_EL0: u64 = 1 << 61;
const AP_TABLE_NO_WRITE: u64 = 1 << 62;
/// Output address bits 47:12.
const OA_MASK: u64 = 0x0000_FFFF_FFFF_F000;
/// Descriptor bits 51:48 (RES0 here, OA[51:48] with larger physical addresses).
const OA_HIGH: u64 = 0x000F_0000_0000_0000;

/// The translation regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// EL1&0: two privilege levels, PXN and UXN.
    El1,
    /// Non-VHE EL2: one privilege level, XN.
    El2,
}

/// The translation configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The regime. Default: [`Regime::El1`].
    pub regime: Regime,
    /// MAIR_ELx. Default: `0x44_FF_04` (index 0 Device-nGnRE, 1 Normal WB, 2 Normal NC).
    pub mair: u64,
    /// The physical address size (TCR.IPS / PARange), at most 48. Default: 48.
    pub pa_bits: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            regime: Regime::El1,
            mair: 0x0044_FF04,
            pa_bits: 48,
        }
    }
}

fn memtype(attr: u8) -> MemType {
    let write_back = |n: u8| n & 0b1100 == 0b1100 || (n & 0b1100 == 0b0100 && n & 0b11 != 0);
    let (outer, inner) = (attr >> 4, attr & 0xF);
    if outer == 0 {
        MemType::Device
    } else if write_back(outer) && write_back(inner) {
        MemType::WriteBack
    } else if outer == 0b0100 && inner == 0b0100 {
        MemType::Uncached
    } else {
        MemType::Other(attr)
    }
}

/// Translates `va`; `root` is the table address in TTBR0 (BADDR).
pub fn translate(
    read: &dyn Fn(u64) -> u64,
    root: u64,
    va: u64,
    access: Access,
    cfg: &Config,
) -> Outcome {
    assert!(
        (32..=48).contains(&cfg.pa_bits),
        "pa_bits {} out of range",
        cfg.pa_bits
    );
    let fault = |kind, level| Err(Fault { kind, level });
    if va >> 48 != 0 {
        return fault(FaultKind::NonCanonical, 3);
    }
    let too_big = |addr: u64| addr >> cfg.pa_bits != 0;
    if too_big(root) {
        return fault(FaultKind::AddressSize, 3);
    }
    let el1 = cfg.regime == Regime::El1;
    let mut table = root & OA_MASK;
    let (mut no_el0, mut no_write, mut pxn_table, mut uxn_table) = (false, false, false, false);
    for level in (0..4).rev() {
        let d = read(table + super::index(va, level) * 8);
        if d & VALID == 0 {
            return fault(FaultKind::NotMapped, level);
        }
        let tp = d & TABLE_OR_PAGE != 0;
        if !tp && (level == 0 || level == 3) {
            return fault(FaultKind::Reserved, level);
        }
        if too_big(d & (OA_MASK | OA_HIGH)) {
            return fault(FaultKind::AddressSize, level);
        }
        if tp && level > 0 {
            no_write |= d & AP_TABLE_NO_WRITE != 0;
            uxn_table |= d & UXN_TABLE != 0;
            if el1 {
                no_el0 |= d & AP_TABLE_NO_EL0 != 0;
                pxn_table |= d & PXN_TABLE != 0;
            }
            table = d & OA_MASK;
            continue;
        }

        // Block (levels 2 and 1) or page (level 0).
        if d & AF == 0 {
            return fault(FaultKind::AccessFlag, level);
        }
        // AP[2] = bit 7 (read-only), AP[1] = bit 6 (EL0 access).
        let mut read_only = d & (1 << 7) != 0;
        let mut el0 = d & (1 << 6) != 0;
        read_only |= no_write;
        el0 &= !no_el0;
        let allowed = if el1 {
            let el0_write = el0 && !read_only;
            let uxn = d & UXN != 0 || uxn_table;
            let pxn = d & PXN != 0 || pxn_table;
            match (access.user, access.kind) {
                (true, AccessKind::Read) => el0,
                (true, AccessKind::Write) => el0_write,
                (true, AccessKind::Exec) => !uxn,
                (false, AccessKind::Read) => true,
                (false, AccessKind::Write) => !read_only,
                (false, AccessKind::Exec) => !pxn && !el0_write,
            }
        } else {
            let xn = d & UXN != 0 || uxn_table;
            match (access.user, access.kind) {
                (true, _) => false,
                (false, AccessKind::Read) => true,
                (false, AccessKind::Write) => !read_only,
                (false, AccessKind::Exec) => !xn,
            }
        };
        if !allowed {
            return fault(FaultKind::Permission, level);
        }
        let size = super::level_size(level);
        let attr_index = (d >> 2) & 0x7;
        return Ok(Translation {
            pa: (d & OA_MASK & !(size - 1)) | (va & (size - 1)),
            page_size: size,
            mem: memtype((cfg.mair >> (8 * attr_index)) as u8),
            // nG (bit 11) tags the entry with the ASID; a regime without ASIDs ignores it.
            global: !el1 || d & (1 << 11) == 0,
            level,
            entry: d,
        });
    }
    unreachable!("level 0 ends the walk")
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rd, setup};
    use super::super::{Access, FaultKind::*, MemType};
    use super::*;

    // L0 0x8000_1000, L1 0x8000_2000, L2 0x8000_3000, L3 0x8000_4000, a second L1 0x8000_5000.
    const ROOT: u64 = 0x8000_1000;

    fn tables() {
        setup(&[
            (0x8000_1000, 0x8000_2003),           // L0[0] → L1
            (0x8000_1008, 0x0000_0000_0000_0401), // L0[1]: block at L0 → reserved
            (0x8000_1010, 0x2000_0000_8000_5003), // L0[2] → L1b, APTable[0] (no EL0)
            (0x8000_1018, 0x4000_0000_8000_5003), // L0[3] → L1b, APTable[1] (no write)
            (0x8000_1020, 0x1000_0000_8000_5003), // L0[4] → L1b, UXNTable
            (0x8000_2000, 0x8000_3003),           // L1[0] → L2
            (0x8000_2008, 0xC000_04C5),           // L1[1]: 1G block 0xC000_0000, AP=11, attr 1, AF
            (0x8000_2010, 0x0001_0000_4000_0401), // L1[2]: 1G block with OA bit 48
            (0x8000_2018, 0x0000_0100_0000_0405), // L1[3]: 1G block at 2^40, attr 1, AP=00
            (0x8000_3000, 0x8000_4003),           // L2[0] → L3
            (0x8000_3008, 0x4020_0489),           // L2[1]: 2M block 0x4020_0000, AP=10, attr 2, AF
            (0x8000_4008, 0x4000_1747),           // L3[1]: page, AP=01, SH=11, attr 1, AF
            (0x8000_4010, 0x0060_0000_4000_2403), // L3[2]: page, AP=00, attr 0, PXN|UXN
            (0x8000_4018, 0x4000_3007),           // L3[3]: page with AF = 0
            (0x8000_4020, 0x4000_4401),           // L3[4]: encoding 0b01 at L3
            (0x8000_4028, 0x0020_0000_4000_5407), // L3[5]: page, AP=00, attr 1, PXN only
            (0x8000_5000, 0x4000_0445),           // L1b[0]: 1G block, AP=01 (EL0 RW), attr 1
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
        let t = tr(0x1ABC, Access::USER_READ, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.level, t.mem),
            (0x4000_1ABC, 0x1000, 0, MemType::WriteBack)
        );
        assert!(tr(0x1000, Access::USER_WRITE, &c).is_ok());
        assert!(tr(0x1000, Access::USER_EXEC, &c).is_ok(), "UXN = 0");
        assert_eq!(
            tr(0x1000, Access::EXEC, &c),
            err(Permission, 0),
            "EL0-writable"
        );
        let t = tr(0x2008, Access::READ, &c).unwrap();
        assert_eq!((t.pa, t.mem), (0x4000_2008, MemType::Device));
        assert_eq!(tr(0x2000, Access::USER_READ, &c), err(Permission, 0));
        assert_eq!(tr(0x2000, Access::EXEC, &c), err(Permission, 0), "PXN");
        assert_eq!(tr(0x3000, Access::READ, &c), err(AccessFlag, 0));
        assert_eq!(tr(0x4000, Access::READ, &c), err(Reserved, 0));
        assert_eq!(tr(0x6000, Access::READ, &c), err(NotMapped, 0));
        assert_eq!(tr(0x5000, Access::EXEC, &c), err(Permission, 0), "PXN only");
        assert!(
            tr(0x5000, Access::USER_EXEC, &c).is_ok(),
            "EL0 execute-only memory"
        );
        assert_eq!(tr(0x5000, Access::USER_READ, &c), err(Permission, 0));
    }

    #[test]
    fn blocks() {
        tables();
        let c = Config::default();
        let t = tr(0x21_2345, Access::READ, &c).unwrap();
        assert_eq!(
            (t.pa, t.page_size, t.level, t.mem),
            (0x4021_2345, 0x20_0000, 1, MemType::Uncached)
        );
        assert_eq!(tr(0x21_2345, Access::WRITE, &c), err(Permission, 1));
        assert_eq!(tr(0x21_2345, Access::USER_READ, &c), err(Permission, 1));
        assert!(tr(0x21_2345, Access::EXEC, &c).is_ok());
        let t = tr(0x4123_4567, Access::USER_READ, &c).unwrap();
        assert_eq!((t.pa, t.page_size, t.level), (0xC123_4567, 0x4000_0000, 2));
        assert_eq!(tr(0x4123_4567, Access::USER_WRITE, &c), err(Permission, 2));
        assert_eq!(
            tr(0x80_0000_0000, Access::READ, &c),
            err(Reserved, 3),
            "block at L0"
        );
        assert_eq!(tr(0x200_0000, Access::READ, &c), err(NotMapped, 1));
    }

    #[test]
    fn address_size_and_canonical() {
        tables();
        let c = Config::default();
        assert_eq!(tr(0x8000_0000, Access::READ, &c), err(AddressSize, 2));
        assert_eq!(
            tr(0xC000_0008, Access::READ, &c).unwrap().pa,
            0x100_0000_0008
        );
        assert_eq!(
            tr(0xC000_0000, Access::READ, &Config { pa_bits: 40, ..c }),
            err(AddressSize, 2)
        );
        assert_eq!(
            tr(0xFFFF_0000_0000_1000, Access::READ, &c),
            err(NonCanonical, 3)
        );
        assert_eq!(tr(0x8000_0000_0000, Access::READ, &c), err(NotMapped, 3));
    }

    #[test]
    fn table_attributes() {
        tables();
        let c = Config::default();
        // APTable[0]: the EL0-writable block loses EL0 access, so EL1 may execute it.
        let va = 0x100_0000_0000;
        assert_eq!(tr(va, Access::USER_READ, &c), err(Permission, 2));
        assert!(tr(va, Access::WRITE, &c).is_ok());
        assert!(tr(va, Access::EXEC, &c).is_ok());
        // APTable[1]: read-only everywhere.
        let va = 0x180_0000_0000;
        assert_eq!(tr(va, Access::WRITE, &c), err(Permission, 2));
        assert_eq!(tr(va, Access::USER_WRITE, &c), err(Permission, 2));
        assert_eq!(
            tr(va + 0x10, Access::USER_READ, &c).unwrap().pa,
            0x4000_0010
        );
        // UXNTable.
        let va = 0x200_0000_0000;
        assert_eq!(tr(va, Access::USER_EXEC, &c), err(Permission, 2));
        assert!(tr(va, Access::USER_WRITE, &c).is_ok());
    }

    #[test]
    fn el2_regime() {
        tables();
        let c = Config {
            regime: Regime::El2,
            ..Config::default()
        };
        assert!(tr(0x1000, Access::WRITE, &c).is_ok(), "AP[2] = 0");
        assert!(
            tr(0x1000, Access::EXEC, &c).is_ok(),
            "no EL0-writable rule at EL2"
        );
        assert_eq!(
            tr(0x1000, Access::USER_READ, &c),
            err(Permission, 0),
            "no EL0"
        );
        assert_eq!(
            tr(0x2000, Access::EXEC, &c),
            err(Permission, 0),
            "XN (bit 54)"
        );
        assert!(tr(0x5000, Access::EXEC, &c).is_ok(), "PXN is ignored");
        assert!(
            tr(0x100_0000_0000, Access::READ, &c).is_ok(),
            "APTable[0] is ignored"
        );
        assert_eq!(
            tr(0x200_0000_0000, Access::EXEC, &c),
            err(Permission, 2),
            "XNTable"
        );
        assert_eq!(tr(0x21_0000, Access::WRITE, &c), err(Permission, 1));
    }

    #[test]
    fn mair_decoding() {
        assert_eq!(memtype(0x00), MemType::Device);
        assert_eq!(memtype(0x04), MemType::Device);
        assert_eq!(memtype(0xFF), MemType::WriteBack);
        assert_eq!(memtype(0xEE), MemType::WriteBack, "WB no-write-allocate");
        assert_eq!(memtype(0x44), MemType::Uncached);
        assert_eq!(memtype(0xBB), MemType::Other(0xBB), "write-through");
        assert_eq!(memtype(0x4F), MemType::Other(0x4F));
    }
}
