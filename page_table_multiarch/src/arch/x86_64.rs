//! x86-64 paging: 4-level (48-bit) and 5-level (LA57, 57-bit) tables.

use memory_addr::VirtAddr;

use crate::{PageTable64, PageTable64Cursor, PagingMetaData};
use page_table_entry::x86_64::X64PTE;

/// Metadata of x86-64 4-level paging (48-bit virtual, 52-bit physical addresses).
#[derive(Debug, Clone, Copy)]
pub struct X64PagingMetaData;

/// Metadata of x86-64 5-level paging (CR4.LA57: 57-bit virtual, 52-bit physical addresses).
#[derive(Debug, Clone, Copy)]
pub struct X64PagingMetaDataLa57;

/// Invalidates one page (`invlpg`, which also drops every paging-structure cache entry),
/// or everything including global entries (toggling CR4.PGE; a CR3 reload when PGE is
/// clear).
#[inline]
fn flush_tlb(vaddr: Option<VirtAddr>) {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    // SAFETY: `invlpg` and the CR3/CR4 accesses only drop cached translations; they are
    // valid in ring 0, where a bare-metal kernel using this table runs.
    unsafe {
        if let Some(vaddr) = vaddr {
            core::arch::asm!("invlpg [{0}]", in(reg) vaddr.as_usize(), options(nostack, preserves_flags));
        } else {
            const PGE: usize = 1 << 7;
            let cr4: usize;
            core::arch::asm!("mov {0}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
            if cr4 & PGE != 0 {
                core::arch::asm!("mov cr4, {0}", "mov cr4, {1}", in(reg) cr4 & !PGE, in(reg) cr4, options(nostack, preserves_flags));
            } else {
                core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags));
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    let _ = vaddr;
}

impl PagingMetaData for X64PagingMetaData {
    const LEVELS: usize = 4;
    const PA_MAX_BITS: usize = 52;
    const VA_MAX_BITS: usize = 48;
    type VirtAddr = VirtAddr;
    /// Linux's `tlb_single_page_flush_ceiling`: about 100 ns per `invlpg`.
    const FLUSH_THRESHOLD: usize = 33;
    const FLUSH_BY_VA_COVERS_TABLES: bool = true;

    #[inline]
    fn flush_tlb(vaddr: Option<VirtAddr>) {
        flush_tlb(vaddr)
    }
}

impl PagingMetaData for X64PagingMetaDataLa57 {
    const LEVELS: usize = 5;
    const PA_MAX_BITS: usize = 52;
    const VA_MAX_BITS: usize = 57;
    type VirtAddr = VirtAddr;
    const FLUSH_THRESHOLD: usize = 33;
    const FLUSH_BY_VA_COVERS_TABLES: bool = true;

    #[inline]
    fn flush_tlb(vaddr: Option<VirtAddr>) {
        flush_tlb(vaddr)
    }
}

/// An x86-64 4-level page table.
pub type X64PageTable<H> = PageTable64<X64PagingMetaData, X64PTE, H>;
/// A cursor over an [`X64PageTable`].
pub type X64PageTableCursor<'a, H> = PageTable64Cursor<'a, X64PagingMetaData, X64PTE, H>;
/// An x86-64 5-level (LA57) page table.
pub type X64La57PageTable<H> = PageTable64<X64PagingMetaDataLa57, X64PTE, H>;
/// A cursor over an [`X64La57PageTable`].
pub type X64La57PageTableCursor<'a, H> = PageTable64Cursor<'a, X64PagingMetaDataLa57, X64PTE, H>;
