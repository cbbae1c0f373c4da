//! Page table entry formats for x86_64, AArch64, RISC-V and LoongArch64.
//!
//! Each hardware format is a `#[repr(transparent)]` wrapper around the raw 64-bit entry and
//! implements [`GenericPTE`], which converts between the architecture-neutral
//! [`MappingFlags`] and the bits the MMU reads. The bit constants are named as in the
//! architecture manuals.
//!
//! Every format module compiles on every target: nothing here executes privileged
//! instructions, so the formats can be built, inspected and tested on a hosted machine.
//!
//! # Conventions shared by every format
//!
//! * An entry whose raw value is zero is *unused*: no table, no page, no reservation.
//! * A *leaf* created with empty flags (no `READ`, `WRITE` or `EXECUTE`) is a non-present
//!   reservation ("PROT_NONE"): the hardware faults on it, but it keeps its physical address,
//!   is never [unused](GenericPTE::is_unused), and a leaf above the last level still reports
//!   [`is_huge`](GenericPTE::is_huge).
//! * Where the hardware cannot express a permission, the entry grants the closest superset
//!   and [`GenericPTE::flags`] reports what the hardware really grants (for example, a present
//!   x86 page is always readable, so `WRITE` alone decodes as `READ | WRITE`).
//!   [`GenericPTE::effective_flags`] computes that answer without building an entry.
//!
//! ```
//! use memory_addr::PhysAddr;
//! use page_table_entry::{GenericPTE, MappingFlags, x86_64::X64PTE};
//!
//! let pte = X64PTE::new_page(PhysAddr::from(0x233000), MappingFlags::READ | MappingFlags::WRITE, false);
//! assert!(!pte.is_unused());
//! assert!(pte.is_present());
//! assert_eq!(pte.paddr(), PhysAddr::from(0x233000));
//! assert_eq!(pte.bits(), 0x8000_0000_0023_3003); // P | RW | NX
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::fmt;

use memory_addr::PhysAddr;

pub mod arch;
pub use arch::*;

bitflags::bitflags! {
    /// Architecture-neutral mapping permissions and memory type.
    ///
    /// The bit values are those of page_table_entry 0.6.
    #[derive(Clone, Copy, PartialEq)]
    pub struct MappingFlags: usize {
        /// The memory is readable.
        const READ          = 1 << 0;
        /// The memory is writable.
        const WRITE         = 1 << 1;
        /// The memory is executable.
        const EXECUTE       = 1 << 2;
        /// The memory is accessible at user privilege (EL0, U-mode, PLV3, CPL3).
        const USER          = 1 << 3;
        /// The memory is device memory (strongly ordered, uncached). Takes precedence over
        /// `UNCACHED`.
        const DEVICE        = 1 << 4;
        /// The memory is normal memory, but uncached (non-cacheable / weakly-ordered uncached).
        const UNCACHED      = 1 << 5;
        /// The translation is global: it is not tagged with an address-space identifier
        /// (PCID, ASID) and stays valid in the TLB across address-space switches. Meant for
        /// kernel mappings that every address space shares.
        ///
        /// Opt-in on every format: without it a mapping is non-global (x86 `G` clear,
        /// AArch64 `nG` set, RISC-V `G` clear, LoongArch `G`/`HG` clear). Formats without
        /// address-space identifiers (the AArch64 EL2 regime) neither encode nor report it.
        /// Invalidating a global translation needs a TLB flush that covers every address
        /// space, not an ASID-scoped one.
        const GLOBAL        = 1 << 6;
    }
}

impl fmt::Debug for MappingFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl MappingFlags {
    /// The access permissions: `READ | WRITE | EXECUTE`.
    pub const ACCESS: Self = Self::READ.union(Self::WRITE).union(Self::EXECUTE);

    /// Whether these flags describe a present mapping (any of `READ`, `WRITE`, `EXECUTE`).
    ///
    /// Flags without any access permission create a non-present leaf that keeps its
    /// physical address (a "PROT_NONE" reservation).
    #[inline]
    pub const fn is_accessible(self) -> bool {
        self.intersects(Self::ACCESS)
    }
}

/// A page table entry of one hardware format.
///
/// The first eleven methods are those of page_table_entry 0.6; the remaining items have
/// defaults so that downstream formats (a hypervisor's EPT entry, for one) keep compiling.
///
/// # Contract relied on by the page table engine
///
/// * [`new_table`](Self::new_table) gives an entry that is not [unused](Self::is_unused)
///   (for every frame the engine accepts as a table; it rejects a frame for which this
///   fails, such as physical page 0 on LoongArch) and for which [`is_huge`](Self::is_huge)
///   is false.
/// * [`new_page`](Self::new_page) gives an entry that is never unused (even with empty flags
///   and physical address 0), and with `is_huge = true` one for which `is_huge()` is true
///   (present or not). `is_huge()` is only asked of entries above the last level.
/// * [`paddr`](Self::paddr) returns the address given to `new_page`/`new_table`.
/// * The raw value 0 is an unused entry (and [`is_unused`](Self::is_unused) is true for
///   nothing else).
pub trait GenericPTE: fmt::Debug + Clone + Copy + Sync + Send + Sized {
    /// Creates a leaf entry (a page at the last level, or a block/huge page above it) that
    /// maps `paddr` with `flags`.
    fn new_page(paddr: PhysAddr, flags: MappingFlags, is_huge: bool) -> Self;
    /// Creates a non-leaf entry that points to the next-level table at `paddr`.
    fn new_table(paddr: PhysAddr) -> Self;
    /// The physical address held by the entry (of the page, block or next-level table).
    fn paddr(&self) -> PhysAddr;
    /// The mapping flags the hardware grants for this entry (empty if not present).
    fn flags(&self) -> MappingFlags;
    /// Replaces the physical address, keeping every other bit.
    fn set_paddr(&mut self, paddr: PhysAddr);
    /// Replaces the permission, memory-type and global bits, keeping the address and the bits
    /// `MappingFlags` does not describe (accessed, dirty and software bits).
    fn set_flags(&mut self, flags: MappingFlags, is_huge: bool);
    /// The raw value of the entry.
    fn bits(self) -> usize;
    /// Whether the entry is all zero: neither a table, nor a page, nor a reservation.
    fn is_unused(&self) -> bool;
    /// Whether the hardware treats the entry as valid.
    fn is_present(&self) -> bool;
    /// Whether the entry is a leaf above the last level (a block or huge page), present or
    /// not.
    fn is_huge(&self) -> bool;
    /// Clears the entry to the unused (all zero) value.
    fn clear(&mut self);

    /// The permissions the hardware grants when asked for `flags`, as [`flags`](Self::flags)
    /// would decode them from a present leaf.
    ///
    /// The default assumes every combination is expressible.
    #[inline]
    fn effective_flags(flags: MappingFlags) -> MappingFlags {
        flags
    }

    /// The number of physical address bits the format can hold (the largest physical
    /// address is `2^PA_BITS - 1`).
    const PA_BITS: usize = 52;

    /// Whether the hardware walker follows every entry above the last level that is not a
    /// huge leaf, with no valid bit to check (LoongArch's `LDDIR`): an empty slot there must
    /// not hold zero, which would make the walker read physical page 0 as a table. The
    /// engine then keeps one *invalid table* per page table, whose entries all point to
    /// itself (so it serves every level and ends in invalid leaves), and links every empty
    /// slot above the last level to it, as Linux does. Defaults to `false`.
    const DIRECTORY_HAS_NO_VALID_BIT: bool = false;

    /// Whether a table entry (one made by [`new_table`](Self::new_table)) has bits the
    /// hardware ignores, wide enough to hold the number of used entries (0 to 512) of the
    /// table it points to. The engine then keeps that count there and frees a table the
    /// moment it drops to zero; otherwise it scans the table. Defaults to `false`.
    const COUNTS_TABLE_ENTRIES: bool = false;

    /// The count stored in a table entry (see
    /// [`COUNTS_TABLE_ENTRIES`](Self::COUNTS_TABLE_ENTRIES)); 0 by default.
    #[inline]
    fn table_count(&self) -> usize {
        0
    }

    /// Stores `count` (at most 512) in a table entry, keeping every other bit. Only called
    /// when [`COUNTS_TABLE_ENTRIES`](Self::COUNTS_TABLE_ENTRIES) is true.
    #[inline]
    fn set_table_count(&mut self, count: usize) {
        let _ = count;
    }

    /// Adds `delta` to the count stored in a table entry and returns the new count, which
    /// the caller guarantees is within 0 to 512. Only called when
    /// [`COUNTS_TABLE_ENTRIES`](Self::COUNTS_TABLE_ENTRIES) is true. The default goes
    /// through [`table_count`](Self::table_count) and
    /// [`set_table_count`](Self::set_table_count); a format whose count is a plain bit
    /// field can add to the raw value instead, which the engine does on every
    /// single-page unmap.
    #[inline]
    fn add_table_count(&mut self, delta: isize) -> usize {
        let count = self.table_count().wrapping_add_signed(delta);
        self.set_table_count(count);
        count
    }
}
