//! x86-64 4-level and 5-level paging entries (Intel SDM vol. 3A, chapter 4).
//!
//! # Encoding
//!
//! * A present leaf sets `P`, `RW` if `WRITE`, `US` if `USER`, `XD` (bit 63) unless `EXECUTE`,
//!   `G` (bit 8) if `GLOBAL`, and `PS` (bit 7) for a huge page. `G` takes effect only with
//!   `CR4.PGE` set, and then a `CR3` load keeps the translation (see the engine's full
//!   flush, which also drops global ones). x86 cannot make a present page unreadable, so a present
//!   entry always decodes with `READ`.
//! * The memory type is chosen through `PCD`/`PWT` and the power-on PAT: `DEVICE` gives
//!   `PCD | PWT` (UC), `UNCACHED` gives `PCD` only (UC-), anything else gives write-back. The
//!   PAT bit (bit 12 of a huge leaf, bit 7 of a 4 KiB leaf) is never set.
//! * A leaf created without any access permission is a non-present reservation: `P` clear,
//!   the available bit 9 set as a marker, `PS` if huge, and the address.
//! * A table entry is `P | RW | US | address`: the leaves decide the permissions.
//!
//! In a huge leaf bit 12 is the PAT bit, not an address bit; [`X64PTE::paddr`] masks it out
//! of any entry with `PS` set. `PS` is only meaningful above the last level (at the last level
//! bit 7 is the PAT bit of a 4 KiB page, which this module never sets).

use core::fmt;

use memory_addr::PhysAddr;

use crate::{GenericPTE, MappingFlags};

bitflags::bitflags! {
    /// The flag bits of an x86-64 paging-structure entry.
    ///
    /// The names are those of `x86_64::structures::paging::PageTableFlags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PTF: u64 {
        /// P: the entry is present.
        const PRESENT =         1 << 0;
        /// R/W: writes are allowed.
        const WRITABLE =        1 << 1;
        /// U/S: accesses at CPL 3 are allowed.
        const USER_ACCESSIBLE = 1 << 2;
        /// PWT: page-level write-through.
        const WRITE_THROUGH =   1 << 3;
        /// PCD: page-level cache disable.
        const NO_CACHE =        1 << 4;
        /// A: set by the processor when the entry is used for a translation.
        const ACCESSED =        1 << 5;
        /// D: set by the processor on a write through a leaf entry.
        const DIRTY =           1 << 6;
        /// PS: the entry maps a huge page (a 2 MiB or 1 GiB leaf above the last level).
        const HUGE_PAGE =       1 << 7;
        /// G: the translation is global (kept across CR3 writes when CR4.PGE = 1).
        const GLOBAL =          1 << 8;
        /// Available to software (bit 9). Marks a non-present reservation in this crate.
        const BIT_9 =           1 << 9;
        /// Available to software (bit 10).
        const BIT_10 =          1 << 10;
        /// Available to software (bit 11).
        const BIT_11 =          1 << 11;
        /// Available to software (bit 52).
        const BIT_52 =          1 << 52;
        /// Available to software (bit 53).
        const BIT_53 =          1 << 53;
        /// Available to software (bit 54).
        const BIT_54 =          1 << 54;
        /// Available to software (bit 55).
        const BIT_55 =          1 << 55;
        /// Available to software (bit 56).
        const BIT_56 =          1 << 56;
        /// Available to software (bit 57).
        const BIT_57 =          1 << 57;
        /// Available to software (bit 58).
        const BIT_58 =          1 << 58;
        /// Available to software, or protection key bit 0 when CR4.PKE/PKS = 1 (bit 59).
        const BIT_59 =          1 << 59;
        /// Available to software, or protection key bit 1 when CR4.PKE/PKS = 1 (bit 60).
        const BIT_60 =          1 << 60;
        /// Available to software, or protection key bit 2 when CR4.PKE/PKS = 1 (bit 61).
        const BIT_61 =          1 << 61;
        /// Available to software, or protection key bit 3 when CR4.PKE/PKS = 1 (bit 62).
        const BIT_62 =          1 << 62;
        /// XD: instruction fetches are not allowed (needs EFER.NXE = 1).
        const NO_EXECUTE =      1 << 63;
    }
}

impl From<PTF> for MappingFlags {
    /// Decodes the permissions and memory type of a leaf entry (empty if not present).
    #[inline]
    fn from(f: PTF) -> Self {
        if !f.contains(PTF::PRESENT) {
            return Self::empty();
        }
        let mut ret = Self::READ;
        if f.contains(PTF::WRITABLE) {
            ret |= Self::WRITE;
        }
        if !f.contains(PTF::NO_EXECUTE) {
            ret |= Self::EXECUTE;
        }
        if f.contains(PTF::USER_ACCESSIBLE) {
            ret |= Self::USER;
        }
        if f.contains(PTF::GLOBAL) {
            ret |= Self::GLOBAL;
        }
        if f.contains(PTF::NO_CACHE) {
            if f.contains(PTF::WRITE_THROUGH) {
                ret |= Self::DEVICE;
            } else {
                ret |= Self::UNCACHED;
            }
        }
        ret
    }
}

impl From<MappingFlags> for PTF {
    /// Encodes the permissions and memory type of a present leaf (without `HUGE_PAGE`).
    ///
    /// Flags without any access permission give the empty set (not present).
    #[inline]
    fn from(f: MappingFlags) -> Self {
        if !f.is_accessible() {
            return Self::empty();
        }
        let mut ret = Self::PRESENT;
        if f.contains(MappingFlags::WRITE) {
            ret |= Self::WRITABLE;
        }
        if !f.contains(MappingFlags::EXECUTE) {
            ret |= Self::NO_EXECUTE;
        }
        if f.contains(MappingFlags::USER) {
            ret |= Self::USER_ACCESSIBLE;
        }
        if f.contains(MappingFlags::GLOBAL) {
            ret |= Self::GLOBAL;
        }
        if f.contains(MappingFlags::DEVICE) {
            ret |= Self::NO_CACHE | Self::WRITE_THROUGH;
        } else if f.contains(MappingFlags::UNCACHED) {
            ret |= Self::NO_CACHE;
        }
        ret
    }
}

/// An x86-64 paging-structure entry (PML5E, PML4E, PDPTE, PDE or PTE).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct X64PTE(u64);

impl X64PTE {
    /// Physical address bits 12-51.
    const PHYS_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Software bits 62:52 of a table entry, holding the used-entry count of that table.
    const TABLE_COUNT_SHIFT: u32 = 52;
    const TABLE_COUNT_MASK: u64 = 0x7ff << 52;
    /// Bit 12 is the PAT bit of a huge leaf, not an address bit.
    const HUGE_PAT: u64 = 1 << 12;
    /// The marker of a non-present reservation.
    const PROT_NONE: u64 = PTF::BIT_9.bits();
    /// The bits `set_flags` rewrites (the PAT bit of a huge leaf is handled separately).
    const FLAGS_MASK: u64 = PTF::PRESENT
        .union(PTF::WRITABLE)
        .union(PTF::USER_ACCESSIBLE)
        .union(PTF::WRITE_THROUGH)
        .union(PTF::NO_CACHE)
        .union(PTF::HUGE_PAGE)
        .union(PTF::GLOBAL)
        .union(PTF::BIT_9)
        .union(PTF::NO_EXECUTE)
        .bits();

    /// An unused (all zero) entry.
    #[inline]
    pub const fn empty() -> Self {
        Self(0)
    }

    /// An entry with the raw value `bits`.
    #[inline]
    pub const fn from_raw(bits: u64) -> Self {
        Self(bits)
    }

    /// The address field of an entry: bits 12-51, without bit 12 if `huge`.
    #[inline]
    const fn addr_mask(huge: bool) -> u64 {
        if huge {
            Self::PHYS_ADDR_MASK & !Self::HUGE_PAT
        } else {
            Self::PHYS_ADDR_MASK
        }
    }

    /// The permission, memory-type, present, huge and marker bits for a leaf.
    #[inline]
    fn leaf_bits(flags: MappingFlags, is_huge: bool) -> u64 {
        let mut bits = if flags.is_accessible() {
            PTF::from(flags).bits()
        } else {
            Self::PROT_NONE
        };
        if is_huge {
            bits |= PTF::HUGE_PAGE.bits();
        }
        bits
    }

    #[inline]
    const fn has_ps(&self) -> bool {
        self.0 & PTF::HUGE_PAGE.bits() != 0
    }
}

impl GenericPTE for X64PTE {
    #[inline]
    fn new_page(paddr: PhysAddr, flags: MappingFlags, is_huge: bool) -> Self {
        let addr = paddr.as_usize() as u64 & Self::addr_mask(is_huge);
        Self(Self::leaf_bits(flags, is_huge) | addr)
    }

    #[inline]
    fn new_table(paddr: PhysAddr) -> Self {
        let flags = PTF::PRESENT | PTF::WRITABLE | PTF::USER_ACCESSIBLE;
        Self(flags.bits() | (paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK))
    }

    #[inline]
    fn paddr(&self) -> PhysAddr {
        PhysAddr::from((self.0 & Self::addr_mask(self.has_ps())) as usize)
    }

    #[inline]
    fn flags(&self) -> MappingFlags {
        PTF::from_bits_retain(self.0).into()
    }

    #[inline]
    fn set_paddr(&mut self, paddr: PhysAddr) {
        let mask = Self::addr_mask(self.has_ps());
        self.0 = (self.0 & !mask) | (paddr.as_usize() as u64 & mask);
    }

    #[inline]
    fn set_flags(&mut self, flags: MappingFlags, is_huge: bool) {
        let mut keep = !Self::FLAGS_MASK;
        if is_huge || self.has_ps() {
            // Bit 12 is (or becomes) the PAT bit: part of the memory type.
            keep &= !Self::HUGE_PAT;
        }
        self.0 = (self.0 & keep) | Self::leaf_bits(flags, is_huge);
    }

    #[inline]
    fn bits(self) -> usize {
        self.0 as usize
    }

    #[inline]
    fn is_unused(&self) -> bool {
        self.0 == 0
    }

    #[inline]
    fn is_present(&self) -> bool {
        self.0 & PTF::PRESENT.bits() != 0
    }

    #[inline]
    fn is_huge(&self) -> bool {
        self.has_ps()
    }

    #[inline]
    fn clear(&mut self) {
        self.0 = 0
    }

    #[inline]
    fn effective_flags(flags: MappingFlags) -> MappingFlags {
        if !flags.is_accessible() {
            return MappingFlags::empty();
        }
        let mut ret = MappingFlags::READ
            | (flags
                & (MappingFlags::WRITE
                    | MappingFlags::EXECUTE
                    | MappingFlags::USER
                    | MappingFlags::GLOBAL));
        if flags.contains(MappingFlags::DEVICE) {
            ret |= MappingFlags::DEVICE;
        } else if flags.contains(MappingFlags::UNCACHED) {
            ret |= MappingFlags::UNCACHED;
        }
        ret
    }

    /// Bits 62:52 of a non-leaf entry are ignored by the processor (SDM vol. 3A,
    /// tables 4-15 to 4-19); the engine keeps the table's used-entry count there.
    const COUNTS_TABLE_ENTRIES: bool = true;

    #[inline]
    fn table_count(&self) -> usize {
        ((self.0 & Self::TABLE_COUNT_MASK) >> Self::TABLE_COUNT_SHIFT) as usize
    }

    #[inline]
    fn set_table_count(&mut self, count: usize) {
        self.0 = (self.0 & !Self::TABLE_COUNT_MASK)
            | (((count as u64) << Self::TABLE_COUNT_SHIFT) & Self::TABLE_COUNT_MASK);
    }

    #[inline]
    fn add_table_count(&mut self, delta: isize) -> usize {
        // The field is bits 62:52; a result within 0..=2047 neither carries nor borrows
        // out of it, so the add leaves every other bit alone.
        self.0 = self
            .0
            .wrapping_add((delta as i64 as u64) << Self::TABLE_COUNT_SHIFT);
        self.table_count()
    }

    const PA_BITS: usize = 52;
}

impl fmt::Debug for X64PTE {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X64PTE")
            .field("raw", &format_args!("{:#x}", self.0))
            .field("paddr", &self.paddr())
            .field("flags", &self.flags())
            .finish()
    }
}
