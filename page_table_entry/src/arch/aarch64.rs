//! AArch64 VMSAv8-64 stage-1 translation table descriptors, 4 KiB granule (Arm ARM, D8).
//!
//! The same descriptor layout is read differently by the two stage-1 regimes this module
//! supports, so the entry type [`A64PTEOf`] is generic over a regime marker:
//!
//! * [`El1`]: the EL1&0 regime (and EL2&0 with `HCR_EL2.{E2H,TGE} = {1,1}`): two VA ranges,
//!   `AP[1]` grants EL0 access, `PXN` and `UXN` control execution, and `nG` tags a
//!   translation with the current ASID.
//! * [`El2`]: the non-VHE EL2 regime: one VA range, no EL0 (`AP[1]` is RES1), a single `XN`
//!   bit (bit 54; bit 53 is RES0), and no ASID (`nG` is ignored).
//!
//! # Encoding
//!
//! * A present leaf is `VALID | AF | AttrIndx/SH | address`, plus `NON_BLOCK` (bit 1) for a
//!   page (`is_huge = false`, level 3) and not for a block (`is_huge = true`, levels 1-2).
//!   `AP[2]` (read-only) is set unless `WRITE`. Every present leaf is readable, so `WRITE` or
//!   `EXECUTE` alone decode with `READ`.
//! * Memory type: `DEVICE` selects AttrIndx 0 (Device-nGnRE, non-shareable), else `UNCACHED`
//!   selects AttrIndx 2 (Normal non-cacheable, inner shareable), else AttrIndx 1 (Normal
//!   write-back, inner shareable). Program `MAIR_ELx` with [`MemAttr::MAIR_VALUE`].
//! * [`El1`]: a `USER` leaf gets `AP[1]` and `PXN`, plus `UXN` unless `EXECUTE`; a kernel
//!   leaf gets `UXN`, plus `PXN` unless `EXECUTE`. Every leaf gets `nG` unless `GLOBAL`: a
//!   translation is tagged with the ASID unless the caller asks for a global one.
//! * [`El2`]: `AP[1]` (RES1) is always set and `XN` (bit 54) unless `EXECUTE`; `USER` and
//!   `GLOBAL` cannot be expressed (the regime has no EL0 and no ASID) and are dropped.
//! * A leaf created without any access permission is a non-present reservation: `VALID`
//!   clear, `AF` set as a marker (so the entry is never zero), `NON_BLOCK` unless huge, and the
//!   address.
//! * A table descriptor is `VALID | NON_BLOCK | address`, without hierarchical attributes.
//!
//! A non-zero entry with bit 1 clear is a block (or a non-present block reservation); bit 1
//! set is a table or a page. This module never writes the reserved level-3 encoding
//! `bit0 = 1, bit1 = 0` unless asked for a huge leaf.

use core::{fmt, marker::PhantomData};

use memory_addr::PhysAddr;

use crate::{GenericPTE, MappingFlags};

bitflags::bitflags! {
    /// Fields of a VMSAv8-64 stage-1 translation table descriptor.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct DescriptorAttr: u64 {
        // Attribute fields common to every descriptor.
        /// The descriptor is valid.
        const VALID =       1 << 0;
        /// Table descriptor (levels 0-2) or page descriptor (level 3); clear for a block.
        const NON_BLOCK =   1 << 1;
        /// AttrIndx\[2:0\]: the `MAIR_ELx` attribute index (see [`MemAttr`]).
        const ATTR_INDX =   0b111 << 2;
        /// NS: the output address is in the Non-secure address space (Secure state only).
        const NS =          1 << 5;
        /// AP\[1\]: EL0 can access the memory (EL1&0 regime; RES1 in the EL2 regime).
        const AP_EL0 =      1 << 6;
        /// AP\[2\]: the memory is read-only.
        const AP_RO =       1 << 7;
        /// SH\[0\]: with `SHAREABLE`, inner shareable.
        const INNER =       1 << 8;
        /// SH\[1\]: shareable (outer shareable without `INNER`).
        const SHAREABLE =   1 << 9;
        /// AF: the Access flag.
        const AF =          1 << 10;
        /// nG: the translation is not global (it is tagged with the ASID).
        const NG =          1 << 11;
        /// Contiguous hint: the entry is one of a set of contiguous entries.
        const CONTIGUOUS =  1 << 52;
        /// PXN: privileged execute-never (EL1&0 regime; RES0 in the EL2 regime).
        const PXN =         1 << 53;
        /// UXN: unprivileged execute-never (EL1&0 regime); XN in the EL2 regime.
        const UXN =         1 << 54;

        // Next-level attributes in table descriptors.
        /// PXNTable: privileged execution is not allowed at any later level.
        const PXN_TABLE =           1 << 59;
        /// UXNTable (XNTable at EL2): execution is not allowed at any later level.
        const XN_TABLE =            1 << 60;
        /// APTable\[0\]: EL0 access is not allowed at any later level.
        const AP_NO_EL0_TABLE =     1 << 61;
        /// APTable\[1\]: writes are not allowed at any later level.
        const AP_NO_WRITE_TABLE =   1 << 62;
        /// NSTable: later levels are in the Non-secure address space.
        const NS_TABLE =            1 << 63;
    }
}

/// The memory attribute indices this crate uses (AttrIndx of a descriptor).
///
/// `MAIR_ELx` must be programmed with [`MemAttr::MAIR_VALUE`].
#[repr(u64)]
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum MemAttr {
    /// Device-nGnRE memory (MAIR attribute `0x04`).
    Device = 0,
    /// Normal memory, inner and outer write-back non-transient read/write-allocate
    /// (MAIR attribute `0xff`).
    Normal = 1,
    /// Normal memory, inner and outer non-cacheable (MAIR attribute `0x44`).
    NormalNonCacheable = 2,
}

impl MemAttr {
    /// The `MAIR_ELx` value matching the attribute indices: Attr0 = `0x04` (Device-nGnRE),
    /// Attr1 = `0xff` (Normal write-back), Attr2 = `0x44` (Normal non-cacheable).
    pub const MAIR_VALUE: u64 = {
        let attr0 = 0x04; // Device-nGnRE
        let attr1 = 0xff; // Normal, inner/outer WB non-transient, read/write-allocate
        let attr2 = 0x44; // Normal, inner/outer non-cacheable
        attr0 | (attr1 << 8) | (attr2 << 16)
    };
}

impl DescriptorAttr {
    const ATTR_INDX_SHIFT: u32 = 2;

    /// The AttrIndx field for `idx`, with inner-shareable SH for the Normal types, leaving
    /// every other field empty.
    #[inline]
    pub const fn from_mem_attr(idx: MemAttr) -> Self {
        let mut bits = (idx as u64) << Self::ATTR_INDX_SHIFT;
        if matches!(idx, MemAttr::Normal | MemAttr::NormalNonCacheable) {
            bits |= Self::INNER.bits() | Self::SHAREABLE.bits();
        }
        Self::from_bits_retain(bits)
    }

    /// The memory attribute selected by the AttrIndx field, if it is one this crate uses.
    #[inline]
    pub const fn mem_attr(&self) -> Option<MemAttr> {
        match (self.bits() & Self::ATTR_INDX.bits()) >> Self::ATTR_INDX_SHIFT {
            0 => Some(MemAttr::Device),
            1 => Some(MemAttr::Normal),
            2 => Some(MemAttr::NormalNonCacheable),
            _ => None,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::El1 {}
    impl Sealed for super::El2 {}
}

/// A stage-1 translation regime, which decides how the permission bits are read.
///
/// Implemented by [`El1`] and [`El2`] only.
pub trait Regime: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The name of the entry type, for `Debug`.
    const NAME: &'static str;
    /// Whether the regime has EL0: `AP[1]` grants EL0 access and `PXN`/`UXN` are separate.
    /// Without EL0, `AP[1]` is RES1 and bit 54 is the single `XN` bit.
    const HAS_EL0: bool;
}

/// The EL1&0 stage-1 regime (also EL2&0 with `HCR_EL2.{E2H,TGE} = {1,1}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct El1;

/// The non-VHE EL2 stage-1 regime (a single VA range, no EL0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct El2;

impl Regime for El1 {
    const NAME: &'static str = "A64PTEEl1";
    const HAS_EL0: bool = true;
}

impl Regime for El2 {
    const NAME: &'static str = "A64PTEEl2";
    const HAS_EL0: bool = false;
}

/// The regime of [`A64PTE`] and of the `From` conversions between [`DescriptorAttr`] and
/// [`MappingFlags`].
#[cfg(not(feature = "arm-el2"))]
type DefaultRegime = El1;
#[cfg(feature = "arm-el2")]
type DefaultRegime = El2;

/// The permission and memory-type attributes of a present leaf (`VALID` included; `AF`,
/// `NON_BLOCK` and the address excluded). Empty if `flags` has no access permission.
fn encode<R: Regime>(flags: MappingFlags) -> DescriptorAttr {
    if !flags.is_accessible() {
        return DescriptorAttr::empty();
    }
    let mut attr = DescriptorAttr::VALID;
    attr |= if flags.contains(MappingFlags::DEVICE) {
        DescriptorAttr::from_mem_attr(MemAttr::Device)
    } else if flags.contains(MappingFlags::UNCACHED) {
        DescriptorAttr::from_mem_attr(MemAttr::NormalNonCacheable)
    } else {
        DescriptorAttr::from_mem_attr(MemAttr::Normal)
    };
    if !flags.contains(MappingFlags::WRITE) {
        attr |= DescriptorAttr::AP_RO;
    }
    let exec = flags.contains(MappingFlags::EXECUTE);
    if R::HAS_EL0 {
        if !flags.contains(MappingFlags::GLOBAL) {
            attr |= DescriptorAttr::NG;
        }
        if flags.contains(MappingFlags::USER) {
            attr |= DescriptorAttr::AP_EL0 | DescriptorAttr::PXN;
            if !exec {
                attr |= DescriptorAttr::UXN;
            }
        } else {
            attr |= DescriptorAttr::UXN;
            if !exec {
                attr |= DescriptorAttr::PXN;
            }
        }
    } else {
        // AP[1] is RES1 in a regime with one Exception level; bit 54 is XN.
        attr |= DescriptorAttr::AP_EL0;
        if !exec {
            attr |= DescriptorAttr::UXN;
        }
    }
    attr
}

/// The permissions and memory type the regime grants for a descriptor (empty if not valid).
fn decode<R: Regime>(attr: DescriptorAttr) -> MappingFlags {
    if !attr.contains(DescriptorAttr::VALID) {
        return MappingFlags::empty();
    }
    let mut flags = MappingFlags::READ;
    if !attr.contains(DescriptorAttr::AP_RO) {
        flags |= MappingFlags::WRITE;
    }
    if R::HAS_EL0 {
        if !attr.contains(DescriptorAttr::NG) {
            flags |= MappingFlags::GLOBAL;
        }
        if attr.contains(DescriptorAttr::AP_EL0) {
            flags |= MappingFlags::USER;
            if !attr.contains(DescriptorAttr::UXN) {
                flags |= MappingFlags::EXECUTE;
            }
        } else if !attr.contains(DescriptorAttr::PXN) {
            flags |= MappingFlags::EXECUTE;
        }
    } else if !attr.contains(DescriptorAttr::UXN) {
        flags |= MappingFlags::EXECUTE;
    }
    match attr.mem_attr() {
        Some(MemAttr::Device) => flags |= MappingFlags::DEVICE,
        Some(MemAttr::NormalNonCacheable) => flags |= MappingFlags::UNCACHED,
        _ => {}
    }
    flags
}

impl From<DescriptorAttr> for MappingFlags {
    /// Decodes a descriptor in the regime of [`A64PTE`] (EL1&0, or EL2 with the `arm-el2`
    /// feature).
    #[inline]
    fn from(attr: DescriptorAttr) -> Self {
        decode::<DefaultRegime>(attr)
    }
}

impl From<MappingFlags> for DescriptorAttr {
    /// Encodes the permissions and memory type of a present leaf in the regime of [`A64PTE`]
    /// (EL1&0, or EL2 with the `arm-el2` feature), without `AF` and `NON_BLOCK`.
    #[inline]
    fn from(flags: MappingFlags) -> Self {
        encode::<DefaultRegime>(flags)
    }
}

/// A VMSAv8-64 stage-1 descriptor (4 KiB granule) for the regime `R`.
#[repr(transparent)]
pub struct A64PTEOf<R>(u64, PhantomData<R>);

/// A descriptor of the EL1&0 regime.
pub type A64PTEEl1 = A64PTEOf<El1>;
/// A descriptor of the non-VHE EL2 regime.
pub type A64PTEEl2 = A64PTEOf<El2>;

/// The descriptor type of page_table_entry 0.6: [`A64PTEEl1`] (the `arm-el2` feature makes
/// it [`A64PTEEl2`]).
#[cfg(not(feature = "arm-el2"))]
pub type A64PTE = A64PTEEl1;
/// The descriptor type of page_table_entry 0.6: [`A64PTEEl2`] because the `arm-el2` feature
/// is enabled (it is [`A64PTEEl1`] otherwise).
#[cfg(feature = "arm-el2")]
pub type A64PTE = A64PTEEl2;

impl<R> Clone for A64PTEOf<R> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for A64PTEOf<R> {}

impl<R> A64PTEOf<R> {
    /// Output address bits 12-47.
    const PHYS_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
    /// The marker of a non-present reservation.
    const PROT_NONE: u64 = DescriptorAttr::AF.bits();
    /// The bits `set_flags` rewrites.
    const FLAGS_MASK: u64 = DescriptorAttr::VALID
        .union(DescriptorAttr::NG)
        .union(DescriptorAttr::NON_BLOCK)
        .union(DescriptorAttr::ATTR_INDX)
        .union(DescriptorAttr::AP_EL0)
        .union(DescriptorAttr::AP_RO)
        .union(DescriptorAttr::INNER)
        .union(DescriptorAttr::SHAREABLE)
        .union(DescriptorAttr::AF)
        .union(DescriptorAttr::PXN)
        .union(DescriptorAttr::UXN)
        .bits();

    /// An unused (all zero) entry.
    #[inline]
    pub const fn empty() -> Self {
        Self(0, PhantomData)
    }

    /// An entry with the raw value `bits`.
    #[inline]
    pub const fn from_raw(bits: u64) -> Self {
        Self(bits, PhantomData)
    }
}

impl<R: Regime> A64PTEOf<R> {
    /// Every bit of a leaf but the address and the bits kept by `set_flags`.
    #[inline]
    fn leaf_bits(flags: MappingFlags, is_huge: bool) -> u64 {
        let mut bits = if flags.is_accessible() {
            encode::<R>(flags).bits() | DescriptorAttr::AF.bits()
        } else {
            Self::PROT_NONE
        };
        if !is_huge {
            bits |= DescriptorAttr::NON_BLOCK.bits();
        }
        bits
    }
}

impl<R: Regime> GenericPTE for A64PTEOf<R> {
    #[inline]
    fn new_page(paddr: PhysAddr, flags: MappingFlags, is_huge: bool) -> Self {
        let addr = paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK;
        Self::from_raw(Self::leaf_bits(flags, is_huge) | addr)
    }

    #[inline]
    fn new_table(paddr: PhysAddr) -> Self {
        let attr = DescriptorAttr::VALID | DescriptorAttr::NON_BLOCK;
        Self::from_raw(attr.bits() | (paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK))
    }

    #[inline]
    fn paddr(&self) -> PhysAddr {
        PhysAddr::from((self.0 & Self::PHYS_ADDR_MASK) as usize)
    }

    #[inline]
    fn flags(&self) -> MappingFlags {
        decode::<R>(DescriptorAttr::from_bits_retain(self.0))
    }

    #[inline]
    fn set_paddr(&mut self, paddr: PhysAddr) {
        self.0 = (self.0 & !Self::PHYS_ADDR_MASK) | (paddr.as_usize() as u64 & Self::PHYS_ADDR_MASK)
    }

    #[inline]
    fn set_flags(&mut self, flags: MappingFlags, is_huge: bool) {
        self.0 = (self.0 & !Self::FLAGS_MASK) | Self::leaf_bits(flags, is_huge);
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
        self.0 & DescriptorAttr::VALID.bits() != 0
    }

    #[inline]
    fn is_huge(&self) -> bool {
        self.0 != 0 && self.0 & DescriptorAttr::NON_BLOCK.bits() == 0
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
        let mut ret = MappingFlags::READ | (flags & (MappingFlags::WRITE | MappingFlags::EXECUTE));
        if R::HAS_EL0 {
            ret |= flags & (MappingFlags::USER | MappingFlags::GLOBAL);
        }
        if flags.contains(MappingFlags::DEVICE) {
            ret |= MappingFlags::DEVICE;
        } else if flags.contains(MappingFlags::UNCACHED) {
            ret |= MappingFlags::UNCACHED;
        }
        ret
    }

    /// Bits 11:2 of a stage-1 table descriptor are ignored (Arm ARM D8.3.1, without
    /// FEAT_HAFT enabled); the engine keeps the table's used-entry count there.
    const COUNTS_TABLE_ENTRIES: bool = true;

    #[inline]
    fn table_count(&self) -> usize {
        ((self.0 >> 2) & 0x3ff) as usize
    }

    #[inline]
    fn set_table_count(&mut self, count: usize) {
        self.0 = (self.0 & !(0x3ff << 2)) | (((count as u64) & 0x3ff) << 2);
    }

    #[inline]
    fn add_table_count(&mut self, delta: isize) -> usize {
        // The field is bits 11:2; a result within 0..=1023 neither carries nor borrows out
        // of it, so the add leaves every other bit alone.
        self.0 = self.0.wrapping_add((delta as i64 as u64) << 2);
        self.table_count()
    }

    const PA_BITS: usize = 48;
}

impl<R: Regime> fmt::Debug for A64PTEOf<R> {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(R::NAME)
            .field("raw", &format_args!("{:#x}", self.0))
            .field("paddr", &self.paddr())
            .field("flags", &self.flags())
            .finish()
    }
}
