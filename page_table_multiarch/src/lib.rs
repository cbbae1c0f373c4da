#![doc = include_str!("../README.md")]
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::fmt;

use memory_addr::{MemoryAddr, PhysAddr, VirtAddr};

pub mod arch;
mod cursor;
mod dump;
mod flush;
mod geometry;
mod immediate;
mod table;

pub use arch::*;
pub use cursor::PageTable64Cursor;
pub use dump::{Dump, Mapping, Mappings};
pub use flush::{FlushBatch, LocalFlush, TlbFlush, TlbFlushAll, TlbInvalidate};
pub use geometry::Geometry;
#[doc(no_inline)]
pub use page_table_entry::{GenericPTE, MappingFlags};
pub use table::PageTable64;

/// Why a paging operation failed.
///
/// Every failed operation leaves the page table exactly as it was and leaks no frame (see
/// each method's `# Errors` section for the one documented exception inherited from 0.6,
/// [`PageTable64Cursor::unmap`] on a non-present leaf).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum PagingError {
    /// The frame allocator ([`PagingHandler`]) could not provide a frame.
    NoMemory,
    /// An address or size is not aligned to the page size it is used with.
    NotAligned,
    /// The address is not mapped.
    NotMapped,
    /// The address (or part of the range) is already mapped.
    AlreadyMapped,
    /// A huge page covers the address where a smaller page or a table was expected.
    MappedToHugePage,
    /// The virtual address is not canonical, or lies beyond what the table translates.
    InvalidVirtAddr,
    /// The physical address lies beyond what the entry format or the metadata allows.
    InvalidPhysAddr,
    /// The page size cannot be mapped by this table (for example `Size1M` on a 64-bit
    /// table, or a size larger than the metadata's largest page).
    UnsupportedPageSize,
    /// `vaddr + size` overflows the address space.
    RangeOverflow,
    /// The [`PagingHandler`] returned a frame that is not 4 KiB aligned (or not aligned as
    /// requested) or not a valid physical address. The frame was handed back.
    BadFrame,
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoMemory => "no memory for a page table frame",
            Self::NotAligned => "address or size not aligned to the page size",
            Self::NotMapped => "address not mapped",
            Self::AlreadyMapped => "address already mapped",
            Self::MappedToHugePage => "address covered by a huge page",
            Self::InvalidVirtAddr => "virtual address not canonical or out of range",
            Self::InvalidPhysAddr => "physical address out of range",
            Self::UnsupportedPageSize => "page size not supported by this page table",
            Self::RangeOverflow => "address range overflows",
            Self::BadFrame => "frame allocator returned an unaligned or invalid frame",
        })
    }
}

impl core::error::Error for PagingError {}

#[cfg(feature = "axerrno")]
impl From<PagingError> for axerrno::AxError {
    fn from(value: PagingError) -> Self {
        match value {
            PagingError::NoMemory => axerrno::AxError::NoMemory,
            _ => axerrno::AxError::InvalidInput,
        }
    }
}

/// The result type of paging operations.
pub type PagingResult<T = ()> = Result<T, PagingError>;

/// The architecture constants of a page table format and its TLB maintenance.
///
/// The first group of items is that of page_table_multiarch 0.6. Every item added since has
/// a default, so metadata types written for 0.6 keep compiling.
pub trait PagingMetaData: Sync + Send {
    /// The number of levels of the table (3, 4 or 5).
    const LEVELS: usize;
    /// The number of physical address bits.
    const PA_MAX_BITS: usize;
    /// The number of virtual (input) address bits the table translates.
    const VA_MAX_BITS: usize;
    /// The largest physical address.
    const PA_MAX_ADDR: usize = (1 << Self::PA_MAX_BITS) - 1;

    /// The type of the addresses the table translates (a virtual address, or a
    /// guest-physical address for a stage-2 table).
    type VirtAddr: MemoryAddr;

    /// Whether `paddr` is a physical address this format can hold.
    #[inline]
    fn paddr_is_valid(paddr: usize) -> bool {
        paddr <= Self::PA_MAX_ADDR
    }

    /// Whether `vaddr` is an address the table translates: by default, sign-extended from
    /// bit `VA_MAX_BITS - 1` (canonical).
    #[inline]
    fn vaddr_is_valid(vaddr: usize) -> bool {
        let top_bits = vaddr >> (Self::VA_MAX_BITS - 1);
        let all_ones = usize::MAX >> (Self::VA_MAX_BITS - 1);
        top_bits == 0 || top_bits == all_ones
    }

    /// Invalidates the TLB entries for `vaddr`, or every entry when `vaddr` is `None`.
    ///
    /// The implementations in this crate execute their instruction only on a bare-metal
    /// target of their own architecture; on a hosted target they do nothing.
    fn flush_tlb(vaddr: Option<Self::VirtAddr>);

    /// Turns the translated bits of an address (bits `0..VA_MAX_BITS`) into the address
    /// software uses: by default, sign-extended from bit `VA_MAX_BITS - 1`.
    ///
    /// Used by [`PageTable64::walk`] and the dumps to report addresses.
    #[inline]
    fn canonicalize(vaddr: usize) -> usize {
        let shift = usize::BITS as usize - Self::VA_MAX_BITS;
        (((vaddr << shift) as isize) >> shift) as usize
    }

    /// The largest leaf page the table may hold. Defaults to 1 GiB; a format whose hardware
    /// lacks 1 GiB pages (or a hypervisor whose CPU lacks them) sets `Size2M` or `Size4K`.
    const MAX_PAGE_SIZE: PageSize = PageSize::Size1G;

    /// The number of per-page invalidations above which one full flush is issued instead.
    const FLUSH_THRESHOLD: usize = 32;

    /// Whether a per-address invalidation ([`flush_tlb`](Self::flush_tlb) with `Some`) also
    /// drops cached copies of the *table* entries on the path to that address
    /// (paging-structure caches, walk caches). When it does not, freeing a table triggers a
    /// full flush. Defaults to `false` (always safe).
    const FLUSH_BY_VA_COVERS_TABLES: bool = false;

    /// Whether the architecture requires break-before-make: replacing a valid entry with a
    /// valid entry of a different output address or size (a block split into a table)
    /// must first write an invalid entry and complete a TLB invalidation (AArch64).
    /// Defaults to `false`.
    const BREAK_BEFORE_MAKE: bool = false;
}

/// The operating system's side of the page table: frames for tables, and access to them.
///
/// Every function is an associated function, as in 0.6: the allocator state is global.
/// Frames given to the table do not need to be zeroed; the table zeroes them.
pub trait PagingHandler: Sized {
    /// Allocates one 4 KiB frame for a page table.
    fn alloc_frame() -> Option<PhysAddr> {
        Self::alloc_frames(1, PAGE_SIZE_4K)
    }
    /// Allocates `num` contiguous 4 KiB frames aligned to `align` bytes (a power of two, at
    /// least 4 KiB).
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr>;
    /// Frees a frame returned by [`alloc_frame`](Self::alloc_frame).
    fn dealloc_frame(paddr: PhysAddr) {
        Self::dealloc_frames(paddr, 1)
    }
    /// Frees `num` frames returned together by [`alloc_frames`](Self::alloc_frames).
    fn dealloc_frames(paddr: PhysAddr, num: usize);
    /// A virtual address through which the frame at `paddr` can be read and written.
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr;
}

const PAGE_SIZE_4K: usize = 0x1000;

/// The size of a page or block.
#[repr(usize)]
#[derive(Debug, Copy, Clone, Eq, PartialEq)]
pub enum PageSize {
    /// 4 KiB.
    Size4K = 0x1000,
    /// 1 MiB (ARMv7-A sections only; a 64-bit table rejects it).
    Size1M = 0x10_0000,
    /// 2 MiB.
    Size2M = 0x20_0000,
    /// 1 GiB.
    Size1G = 0x4000_0000,
}

impl PageSize {
    /// Whether this is a huge page (larger than 4 KiB).
    pub const fn is_huge(self) -> bool {
        matches!(self, Self::Size1G | Self::Size2M | Self::Size1M)
    }

    /// Whether `addr_or_size` is aligned to this page size.
    pub const fn is_aligned(self, addr_or_size: usize) -> bool {
        addr_or_size & (self as usize - 1) == 0
    }

    /// The offset of `addr` within its page.
    pub const fn align_offset(self, addr: usize) -> usize {
        addr & (self as usize - 1)
    }
}

impl From<PageSize> for usize {
    #[inline]
    fn from(size: PageSize) -> usize {
        size as usize
    }
}
