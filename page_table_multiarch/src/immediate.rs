//! The immediate API of the seed design (0.3 – 0.5 style): each change is a method of the
//! table that returns a `#[must_use]` flush token. It is a thin layer over the cursor.
//!
//! The token stands for the invalidation of the changed translation; the caller decides
//! when to flush it. Tables the change unlinked are the exception: they may be freed only
//! after an invalidation, so when a change frees tables, the method performs the
//! invalidation itself before freeing them (the token is then still valid, and redundant).

use memory_addr::PhysAddr;

use crate::{
    GenericPTE, MappingFlags, PageSize, PageTable64, PagingHandler, PagingMetaData, PagingResult,
};
use crate::{TlbFlush, TlbFlushAll};

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> PageTable64<M, PTE, H> {
    /// Maps one page; see [`PageTable64Cursor::map`](crate::PageTable64Cursor::map) for the
    /// rules and errors. Returns the token for invalidating `vaddr`.
    pub fn map(
        &mut self,
        vaddr: M::VirtAddr,
        target: PhysAddr,
        page_size: PageSize,
        flags: MappingFlags,
    ) -> PagingResult<TlbFlush<M>> {
        let mut cursor = self.cursor();
        let result = cursor.map(vaddr, target, page_size, flags);
        cursor.finish_immediate(false);
        result.map(|()| TlbFlush::new(vaddr))
    }

    /// Removes the leaf covering `vaddr`; see
    /// [`PageTable64Cursor::unmap`](crate::PageTable64Cursor::unmap). Returns its base
    /// physical address, its size and the token.
    pub fn unmap(&mut self, vaddr: M::VirtAddr) -> PagingResult<(PhysAddr, PageSize, TlbFlush<M>)> {
        let mut cursor = self.cursor();
        let result = cursor.unmap(vaddr);
        cursor.finish_immediate(false);
        result.map(|(paddr, _, size)| (paddr, size, TlbFlush::new(vaddr)))
    }

    /// Changes the address and flags of the leaf covering `vaddr`; see
    /// [`PageTable64Cursor::remap`](crate::PageTable64Cursor::remap).
    pub fn remap(
        &mut self,
        vaddr: M::VirtAddr,
        paddr: PhysAddr,
        flags: MappingFlags,
    ) -> PagingResult<(PageSize, TlbFlush<M>)> {
        let mut cursor = self.cursor();
        let result = cursor.remap(vaddr, paddr, flags);
        cursor.finish_immediate(false);
        result.map(|size| (size, TlbFlush::new(vaddr)))
    }

    /// Changes the flags of the present leaf covering `vaddr`; see
    /// [`PageTable64Cursor::protect`](crate::PageTable64Cursor::protect).
    pub fn protect(
        &mut self,
        vaddr: M::VirtAddr,
        flags: MappingFlags,
    ) -> PagingResult<(PageSize, TlbFlush<M>)> {
        let mut cursor = self.cursor();
        let result = cursor.protect(vaddr, flags);
        cursor.finish_immediate(false);
        result.map(|size| (size, TlbFlush::new(vaddr)))
    }

    /// Maps a region; see
    /// [`PageTable64Cursor::map_region`](crate::PageTable64Cursor::map_region). With
    /// `flush_tlb_by_page` the changed pages are invalidated now (one by one, or all at once
    /// above the metadata's threshold) and the token may be ignored.
    pub fn map_region(
        &mut self,
        vaddr: M::VirtAddr,
        get_paddr: impl Fn(M::VirtAddr) -> PhysAddr,
        size: usize,
        flags: MappingFlags,
        allow_huge: bool,
        flush_tlb_by_page: bool,
    ) -> PagingResult<TlbFlushAll<M>> {
        let mut cursor = self.cursor();
        let result = cursor.map_region(vaddr, get_paddr, size, flags, allow_huge);
        cursor.finish_immediate(flush_tlb_by_page);
        result.map(|()| TlbFlushAll::new())
    }

    /// Unmaps a region; see
    /// [`PageTable64Cursor::unmap_region`](crate::PageTable64Cursor::unmap_region) and
    /// [`map_region`](Self::map_region) for `flush_tlb_by_page`.
    pub fn unmap_region(
        &mut self,
        vaddr: M::VirtAddr,
        size: usize,
        flush_tlb_by_page: bool,
    ) -> PagingResult<TlbFlushAll<M>> {
        let mut cursor = self.cursor();
        let result = cursor.unmap_region(vaddr, size);
        cursor.finish_immediate(flush_tlb_by_page);
        result.map(|()| TlbFlushAll::new())
    }

    /// Changes the flags of a region; see
    /// [`PageTable64Cursor::protect_region`](crate::PageTable64Cursor::protect_region) and
    /// [`map_region`](Self::map_region) for `flush_tlb_by_page`.
    pub fn protect_region(
        &mut self,
        vaddr: M::VirtAddr,
        size: usize,
        flags: MappingFlags,
        flush_tlb_by_page: bool,
    ) -> PagingResult<TlbFlushAll<M>> {
        let mut cursor = self.cursor();
        let result = cursor.protect_region(vaddr, size, flags);
        cursor.finish_immediate(flush_tlb_by_page);
        result.map(|()| TlbFlushAll::new())
    }
}
