//! RISC-V Sv39/Sv48/Sv57 page table entries (RISC-V privileged specification, "Supervisor-Level
//! ISA", with the Svpbmt extension).
//!
//! # Encoding
//!
//! * A present leaf sets `V | A | D`, `R` if `READ`, `W` if `WRITE`, `X` if `EXECUTE`, `U` if
//!   `USER` and `G` if `GLOBAL`. `W` without `R` is reserved, so `WRITE` implies `R`;
//!   execute-only is allowed. Table entries never set `G` (which would make every
//!   translation below them global).
//! * The memory type goes in the Svpbmt field (bits 62:61): `DEVICE` gives IO, else `UNCACHED`
//!   gives NC, else PMA (0). With the `xuantie-c9xx` feature the T-Head MAEE bits are used
//!   instead: `DEVICE` gives `SO | B`, anything else `C | B | SH`.
//! * A leaf created without any access permission is a non-present reservation: `V` clear,
//!   RSW bit 8 set as a marker, and the PPN.
//! * A table entry is `V | PPN` (`R = W = X = 0`).
//!
//! The format does not say at which level a leaf is, so [`Rv64PTE::is_huge`] is true for any
//! leaf (present or reserved); it is only meaningful above the last level.

use core::fmt;

use memory_addr::PhysAddr;

use crate::{GenericPTE, MappingFlags};

bitflags::bitflags! {
    /// Flag bits of an Sv39/Sv48/Sv57 page table entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PTEFlags: usize {
        /// The entry is valid.
        const V =   1 << 0;
        /// The page is readable.
        const R =   1 << 1;
        /// The page is writable.
        const W =   1 << 2;
        /// The page is executable.
        const X =   1 << 3;
        /// The page is accessible in U-mode.
        const U =   1 << 4;
        /// The mapping is global (present in every address space).
        const G =   1 << 5;
        /// The page has been accessed since A was last cleared.
        const A =   1 << 6;
        /// The page has been written since D was last cleared.
        const D =   1 << 7;

        /// T-Head MAEE: strong order (device memory).
        #[cfg(feature = "xuantie-c9xx")]
        const SO =  1 << 63;
        /// T-Head MAEE: cacheable.
        #[cfg(feature = "xuantie-c9xx")]
        const C =   1 << 62;
        /// T-Head MAEE: bufferable.
        #[cfg(feature = "xuantie-c9xx")]
        const B =   1 << 61;
        /// T-Head MAEE: shareable.
        #[cfg(feature = "xuantie-c9xx")]
        const SH =  1 << 60;

        /// T-Head MAEE attributes of device memory: `SO | B`.
        #[cfg(feature = "xuantie-c9xx")]
        const XUANTIE_C9XX_DEVICE = Self::SO.bits() | Self::B.bits();
        /// T-Head MAEE attributes of normal memory: `C | B | SH`.
        #[cfg(feature = "xuantie-c9xx")]
        const XUANTIE_C9XX_NORMAL = Self::C.bits() | Self::B.bits() | Self::SH.bits();
    }
}

/// RSW bit 8: the marker of a non-present reservation.
const PROT_NONE: u64 = 1 << 8;
/// Svpbmt field (bits 62:61).
#[cfg_attr(feature = "xuantie-c9xx", allow(dead_code))]
const PBMT_MASK: u64 = 0b11 << 61;
/// Svpbmt NC: non-cacheable, idempotent, weakly ordered main memory.
#[cfg_attr(feature = "xuantie-c9xx", allow(dead_code))]
const PBMT_NC: u64 = 1 << 61;
/// Svpbmt IO: non-cacheable, non-idempotent, strongly ordered I/O memory.
#[cfg_attr(feature = "xuantie-c9xx", allow(dead_code))]
const PBMT_IO: u64 = 2 << 61;
/// The T-Head MAEE attribute bits (63:60).
#[cfg(feature = "xuantie-c9xx")]
const MAEE_MASK: u64 = 0b1111 << 60;

/// The memory-type bits this build writes.
#[cfg(not(feature = "xuantie-c9xx"))]
const MEM_TYPE_MASK: u64 = PBMT_MASK;
#[cfg(feature = "xuantie-c9xx")]
const MEM_TYPE_MASK: u64 = MAEE_MASK;

/// The memory-type bits of a present leaf.
fn mem_type_bits(flags: MappingFlags) -> u64 {
    #[cfg(not(feature = "xuantie-c9xx"))]
    {
        if flags.contains(MappingFlags::DEVICE) {
            PBMT_IO
        } else if flags.contains(MappingFlags::UNCACHED) {
            PBMT_NC
        } else {
            0
        }
    }
    #[cfg(feature = "xuantie-c9xx")]
    {
        if flags.contains(MappingFlags::DEVICE) {
            PTEFlags::XUANTIE_C9XX_DEVICE.bits() as u64
        } else {
            PTEFlags::XUANTIE_C9XX_NORMAL.bits() as u64
        }
    }
}

/// The memory type encoded in the raw bits of a present leaf.
fn mem_type_flags(bits: u64) -> MappingFlags {
    #[cfg(not(feature = "xuantie-c9xx"))]
    {
        match bits & PBMT_MASK {
            PBMT_IO => MappingFlags::DEVICE,
            PBMT_NC => MappingFlags::UNCACHED,
            _ => MappingFlags::empty(),
        }
    }
    #[cfg(feature = "xuantie-c9xx")]
    {
        if bits & (PTEFlags::SO.bits() as u64) != 0 {
            MappingFlags::DEVICE
        } else {
            MappingFlags::empty()
        }
    }
}

impl From<PTEFlags> for MappingFlags {
    /// Decodes the permissions and memory type of a leaf (empty if not valid).
    #[inline]
    fn from(f: PTEFlags) -> Self {
        if !f.contains(PTEFlags::V) {
            return Self::empty();
        }
        let mut ret = Self::empty();
        if f.contains(PTEFlags::R) {
            ret |= Self::READ;
        }
        if f.contains(PTEFlags::W) {
            ret |= Self::WRITE;
        }
        if f.contains(PTEFlags::X) {
            ret |= Self::EXECUTE;
        }
        if f.contains(PTEFlags::U) {
            ret |= Self::USER;
        }
        if f.contains(PTEFlags::G) {
            ret |= Self::GLOBAL;
        }
        ret | mem_type_flags(f.bits() as u64)
    }
}

impl From<MappingFlags> for PTEFlags {
    /// Encodes a present leaf: `V | A | D`, the permissions and the memory type.
    ///
    /// Flags without any access permission give the empty set (not valid).
    #[inline]
    fn from(f: MappingFlags) -> Self {
        if !f.is_accessible() {
            return Self::empty();
        }
        let mut ret = Self::V | Self::A | Self::D;
        if f.intersects(MappingFlags::READ | MappingFlags::WRITE) {
            ret |= Self::R;
        }
        if f.contains(MappingFlags::WRITE) {
            ret |= Self::W;
        }
        if f.contains(MappingFlags::EXECUTE) {
            ret |= Self::X;
        }
        if f.contains(MappingFlags::USER) {
            ret |= Self::U;
        }
        if f.contains(MappingFlags::GLOBAL) {
            ret |= Self::G;
        }
        ret | Self::from_bits_retain(mem_type_bits(f) as usize)
    }
}

/// An Sv39/Sv48/Sv57 page table entry.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Rv64PTE(u64);

impl Rv64PTE {
    /// The PPN field, bits 10-53.
    const PPN_MASK: u64 = ((1 << 54) - 1) & !((1 << 10) - 1);
    /// `R | W | X`.
    const RWX: u64 =
        PTEFlags::R.bits() as u64 | PTEFlags::W.bits() as u64 | PTEFlags::X.bits() as u64;
    /// The bits `set_flags` rewrites (`A` and `D` are only ever added).
    const FLAGS_MASK: u64 = PTEFlags::V.bits() as u64
        | Self::RWX
        | PTEFlags::U.bits() as u64
        | PTEFlags::G.bits() as u64
        | PROT_NONE
        | MEM_TYPE_MASK;

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

    #[inline]
    const fn ppn_bits(paddr: PhysAddr) -> u64 {
        (paddr.as_usize() as u64 >> 2) & Self::PPN_MASK
    }

    /// Every bit of a leaf but the PPN.
    #[inline]
    fn leaf_bits(flags: MappingFlags) -> u64 {
        if flags.is_accessible() {
            PTEFlags::from(flags).bits() as u64
        } else {
            PROT_NONE
        }
    }

    #[inline]
    const fn is_valid(&self) -> bool {
        self.0 & PTEFlags::V.bits() as u64 != 0
    }
}

impl GenericPTE for Rv64PTE {
    #[inline]
    fn new_page(paddr: PhysAddr, flags: MappingFlags, _is_huge: bool) -> Self {
        Self(Self::leaf_bits(flags) | Self::ppn_bits(paddr))
    }

    #[inline]
    fn new_table(paddr: PhysAddr) -> Self {
        Self(PTEFlags::V.bits() as u64 | Self::ppn_bits(paddr))
    }

    #[inline]
    fn paddr(&self) -> PhysAddr {
        PhysAddr::from(((self.0 & Self::PPN_MASK) << 2) as usize)
    }

    #[inline]
    fn flags(&self) -> MappingFlags {
        PTEFlags::from_bits_retain(self.0 as usize).into()
    }

    #[inline]
    fn set_paddr(&mut self, paddr: PhysAddr) {
        self.0 = (self.0 & !Self::PPN_MASK) | Self::ppn_bits(paddr);
    }

    #[inline]
    fn set_flags(&mut self, flags: MappingFlags, _is_huge: bool) {
        self.0 = (self.0 & !Self::FLAGS_MASK) | Self::leaf_bits(flags);
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
        self.is_valid()
    }

    #[inline]
    fn is_huge(&self) -> bool {
        if self.is_valid() {
            self.0 & Self::RWX != 0
        } else {
            self.0 & PROT_NONE != 0
        }
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
            & (MappingFlags::WRITE
                | MappingFlags::EXECUTE
                | MappingFlags::USER
                | MappingFlags::GLOBAL);
        if flags.intersects(MappingFlags::READ | MappingFlags::WRITE) {
            ret |= MappingFlags::READ;
        }
        ret | mem_type_flags(mem_type_bits(flags))
    }

    const PA_BITS: usize = 56;
}

impl fmt::Debug for Rv64PTE {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rv64PTE")
            .field("raw", &format_args!("{:#x}", self.0))
            .field("paddr", &self.paddr())
            .field("flags", &self.flags())
            .finish()
    }
}
