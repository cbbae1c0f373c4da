//! LoongArch64 page table entries, 4 KiB pages (LoongArch Reference Manual vol. 1, "Memory
//! Management"; the directory layout set by `PWCL`/`PWCH`).
//!
//! # Encoding
//!
//! * A present leaf sets `V | P`, `W | D` if `WRITE`, `NR` unless `READ`, `NX` unless
//!   `EXECUTE`, `PLV = 3` if `USER`, the memory type in `MAT` (`DEVICE` gives 0, strongly-ordered
//!   uncached; else `UNCACHED` gives 2, weakly-ordered uncached; else 1, coherent cached), and
//!   `GH` (bit 6) for a huge page. `GLOBAL` sets the global bit, which is bit 12 (`HG`) in a
//!   huge page and bit 6 in a 4 KiB page; the latter also sets software bit 11, because bit 6
//!   alone would read as `GH`. Every combination of `READ`, `WRITE` and `EXECUTE` is
//!   expressible. Without a hardware page table walker, `D` is what allows writes once the
//!   entry is in the TLB, so it always follows `W`.
//! * A leaf created without any access permission is a non-present reservation: `V` and `P`
//!   clear, the software bit 10 set as a marker, `GH` if huge, and the address.
//! * A directory (table) entry holds the next table's address and nothing else: `LDDIR` uses
//!   the raw value as the next table base. [`LA64PTE::is_present`] is true for such an entry.
//!
//! In a huge leaf bit 12 is the global bit `HG` (named [`PTEFlags::G`]), not an address bit;
//! [`LA64PTE::paddr`] masks it out of any entry with `GH` set and software bit 11 clear. In a
//! 4 KiB leaf bit 6 is the global bit; software bit 11 marks that use, so that such a page
//! keeps its address bit 12 and is not read as huge.

use core::fmt;

use memory_addr::PhysAddr;

use crate::{GenericPTE, MappingFlags};

bitflags::bitflags! {
    /// Flag bits of a LoongArch64 page table entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PTEFlags: u64 {
        /// The entry is valid (in the TLB).
        const V =       1 << 0;
        /// Dirty: writes are allowed through the TLB entry.
        const D =       1 << 1;
        /// Privilege level, low bit.
        const PLVL =    1 << 2;
        /// Privilege level, high bit.
        const PLVH =    1 << 3;
        /// Memory access type, low bit.
        const MATL =    1 << 4;
        /// Memory access type, high bit.
        const MATH =    1 << 5;
        /// Global bit of a 4 KiB leaf; in a directory entry, the entry is a huge page.
        const GH =      1 << 6;
        /// The page is present (the hardware page table walker's present bit).
        const P =       1 << 7;
        /// The page is writable (the hardware page table walker's write bit).
        const W =       1 << 8;
        /// Global bit of a huge page (`HG`).
        const G =       1 << 12;
        /// The page is not readable.
        const NR =      1 << 61;
        /// The page is not executable.
        const NX =      1 << 62;
        /// Restricted privilege: the page is accessible only at exactly `PLV`.
        const RPLV =    1 << 63;
    }
}

/// `MAT` field (bits 5:4).
const MAT_MASK: u64 = PTEFlags::MATL.bits() | PTEFlags::MATH.bits();
/// `MAT` = 0: strongly-ordered uncached.
const MAT_SUC: u64 = 0;
/// `MAT` = 1: coherent cached.
const MAT_CC: u64 = PTEFlags::MATL.bits();
/// `MAT` = 2: weakly-ordered uncached.
const MAT_WUC: u64 = PTEFlags::MATH.bits();
/// Software bit 10: the marker of a non-present reservation.
const PROT_NONE: u64 = 1 << 10;
/// Software bit 11: bit 6 of this leaf is the global bit of a 4 KiB page, not `GH`. An entry
/// does not say at which level it is, and bit 6 (and with it the meaning of bit 12) depends
/// on that; this marker lets `paddr`, `flags` and `is_huge` tell the two apart.
const GLOBAL_4K: u64 = 1 << 11;

impl From<PTEFlags> for MappingFlags {
    /// Decodes the permissions and memory type of a leaf (empty if not present).
    #[inline]
    fn from(f: PTEFlags) -> Self {
        if !f.contains(PTEFlags::P) {
            return Self::empty();
        }
        let mut ret = Self::empty();
        if !f.contains(PTEFlags::NR) {
            ret |= Self::READ;
        }
        if f.contains(PTEFlags::W) {
            ret |= Self::WRITE;
        }
        if !f.contains(PTEFlags::NX) {
            ret |= Self::EXECUTE;
        }
        if f.contains(PTEFlags::PLVL | PTEFlags::PLVH) {
            ret |= Self::USER;
        }
        match f.bits() & MAT_MASK {
            MAT_SUC => ret |= Self::DEVICE,
            MAT_WUC => ret |= Self::UNCACHED,
            _ => {}
        }
        ret
    }
}

impl From<MappingFlags> for PTEFlags {
    /// Encodes a present leaf (without `GH`).
    ///
    /// Flags without any access permission give the empty set (not present).
    #[inline]
    fn from(f: MappingFlags) -> Self {
        if !f.is_accessible() {
            return Self::empty();
        }
        let mut ret = Self::V | Self::P;
        if !f.contains(MappingFlags::READ) {
            ret |= Self::NR;
        }
        if f.contains(MappingFlags::WRITE) {
            ret |= Self::W | Self::D;
        }
        if !f.contains(MappingFlags::EXECUTE) {
            ret |= Self::NX;
        }
        if f.contains(MappingFlags::USER) {
            ret |= Self::PLVL | Self::PLVH;
        }
        let mat = if f.contains(MappingFlags::DEVICE) {
            MAT_SUC
        } else if f.contains(MappingFlags::UNCACHED) {
            MAT_WUC
        } else {
            MAT_CC
        };
        ret | Self::from_bits_retain(mat)
    }
}

/// A LoongArch64 page table entry (a directory entry or a leaf).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct LA64PTE(u64);

impl LA64PTE {
    /// Physical address bits 12-47.
    const PHYS_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
    /// The bits `set_flags` rewrites.
    const FLAGS_MASK: u64 = PTEFlags::V
        .union(PTEFlags::D)
        .union(PTEFlags::PLVL)
        .union(PTEFlags::PLVH)
        .union(PTEFlags::MATL)
        .union(PTEFlags::MATH)
        .union(PTEFlags::GH)
        .union(PTEFlags::P)
        .union(PTEFlags::W)
        .union(PTEFlags::NR)
        .union(PTEFlags::NX)
        .bits()
        | PROT_NONE
        | GLOBAL_4K;

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

    /// The address field: bits 12-47, without bit 12 (`HG`) if `huge`.
    #[inline]
    const fn addr_mask(huge: bool) -> u64 {
        if huge {
            Self::PHYS_ADDR_MASK & !PTEFlags::G.bits()
        } else {
            Self::PHYS_ADDR_MASK
        }
    }

    /// Whether the entry is a huge leaf: `GH` set, and not as the global bit of a 4 KiB page.
    #[inline]
    const fn is_huge_leaf(&self) -> bool {
        self.0 & (PTEFlags::GH.bits() | GLOBAL_4K) == PTEFlags::GH.bits()
    }

    /// Every bit of a leaf but the address and the bits kept by `set_flags`: the global bit
    /// is `HG` (bit 12) in a huge leaf, and bit 6 (with the `GLOBAL_4K` marker) in a page.
    #[inline]
    fn leaf_bits(flags: MappingFlags, is_huge: bool) -> u64 {
        let accessible = flags.is_accessible();
        let mut bits = if accessible {
            PTEFlags::from(flags).bits()
        } else {
            PROT_NONE
        };
        let global = accessible && flags.contains(MappingFlags::GLOBAL);
        if is_huge {
            bits |= PTEFlags::GH.bits();
            if global {
                bits |= PTEFlags::G.bits();
            }
        } else if global {
            bits |= PTEFlags::GH.bits() | GLOBAL_4K;
        }
        bits
    }
}

impl GenericPTE for LA64PTE {
    #[inline]
    fn new_page(paddr: PhysAddr, flags: MappingFlags, is_huge: bool) -> Self {
        let addr = paddr.as_usize() as u64 & Self::addr_mask(is_huge);
        Self(Self::leaf_bits(flags, is_huge) | addr)
    }

    #[inline]
    fn new_table(paddr: PhysAddr) -> Self {
        Self(paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK)
    }

    #[inline]
    fn paddr(&self) -> PhysAddr {
        PhysAddr::from((self.0 & Self::addr_mask(self.is_huge_leaf())) as usize)
    }

    #[inline]
    fn flags(&self) -> MappingFlags {
        let flags = MappingFlags::from(PTEFlags::from_bits_retain(self.0));
        let global = if self.is_huge_leaf() {
            self.0 & PTEFlags::G.bits() != 0
        } else {
            self.0 & GLOBAL_4K != 0
        };
        if global && flags.is_accessible() {
            flags | MappingFlags::GLOBAL
        } else {
            flags
        }
    }

    #[inline]
    fn set_paddr(&mut self, paddr: PhysAddr) {
        let mask = Self::addr_mask(self.is_huge_leaf());
        self.0 = (self.0 & !mask) | (paddr.as_usize() as u64 & mask);
    }

    #[inline]
    fn set_flags(&mut self, flags: MappingFlags, is_huge: bool) {
        let mut keep = !Self::FLAGS_MASK;
        if is_huge || self.is_huge_leaf() {
            // Bit 12 is (or becomes) `HG`, not an address bit.
            keep &= !PTEFlags::G.bits();
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
        // A leaf is present with P; a directory entry is a bare table address.
        self.0 & PTEFlags::P.bits() != 0 || (self.0 != 0 && self.0 & !Self::PHYS_ADDR_MASK == 0)
    }

    #[inline]
    fn is_huge(&self) -> bool {
        self.is_huge_leaf()
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
        let mut ret = flags
            & (MappingFlags::READ
                | MappingFlags::WRITE
                | MappingFlags::EXECUTE
                | MappingFlags::USER
                | MappingFlags::GLOBAL);
        if flags.contains(MappingFlags::DEVICE) {
            ret |= MappingFlags::DEVICE;
        } else if flags.contains(MappingFlags::UNCACHED) {
            ret |= MappingFlags::UNCACHED;
        }
        ret
    }

    /// `LDDIR` has no valid bit: empty directory slots must point at an invalid table.
    const DIRECTORY_HAS_NO_VALID_BIT: bool = true;

    const PA_BITS: usize = 48;
}

impl fmt::Debug for LA64PTE {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LA64PTE")
            .field("raw", &format_args!("{:#x}", self.0))
            .field("paddr", &self.paddr())
            .field("flags", &self.flags())
            .finish()
    }
}
