//! TLB invalidation: the batch a cursor records, the deferred frees that wait for it, and
//! the `#[must_use]` tokens of the immediate API.

use core::marker::PhantomData;

use memory_addr::PhysAddr;

use crate::PagingMetaData;

/// Ranges kept before falling back to one full flush.
const MAX_RANGES: usize = 8;

/// One recorded range: invalidate every `1 << shift` bytes in `start..end`.
#[derive(Clone, Copy, Default)]
struct FlushRange {
    start: usize,
    end: usize,
    shift: u32,
}

/// The invalidations a cursor owes and the table frames waiting for them.
///
/// Frames of unlinked tables are kept on an intrusive list threaded through the first
/// entry of each frame (a 4 KiB-aligned physical address, which every format reads as a
/// non-present entry), so recording needs no allocation.
pub(crate) struct Pending {
    ranges: [FlushRange; MAX_RANGES],
    len: usize,
    ops: usize,
    full: bool,
    tables_freed: bool,
    free_head: PhysAddr,
    free_count: usize,
}

impl Pending {
    pub(crate) const fn new() -> Self {
        Self {
            ranges: [FlushRange {
                start: 0,
                end: 0,
                shift: 0,
            }; MAX_RANGES],
            len: 0,
            ops: 0,
            full: false,
            tables_freed: false,
            free_head: PhysAddr::from_usize(0),
            free_count: 0,
        }
    }

    /// Whether nothing is owed.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && !self.full && self.free_count == 0
    }

    /// Whether table frames wait for a flush.
    #[inline]
    pub(crate) fn has_frees(&self) -> bool {
        self.free_count != 0
    }

    /// Records that the translation of `[va, va + (1 << shift))` changed (`va` canonical).
    #[inline]
    pub(crate) fn record<M: PagingMetaData>(&mut self, va: usize, shift: u32) {
        if self.full {
            return;
        }
        self.ops += 1;
        if self.ops > M::FLUSH_THRESHOLD {
            self.full = true;
            return;
        }
        let end = va.wrapping_add(1 << shift);
        if self.len > 0 {
            let last = &mut self.ranges[self.len - 1];
            if last.shift == shift && last.end == va {
                last.end = end;
                return;
            }
        }
        if self.len == MAX_RANGES {
            self.full = true;
            return;
        }
        self.ranges[self.len] = FlushRange {
            start: va,
            end,
            shift,
        };
        self.len += 1;
    }

    /// Records that everything must be flushed.
    #[inline]
    pub(crate) fn record_all(&mut self) {
        self.full = true;
    }

    /// Queues an unlinked table frame to be freed after the next flush.
    ///
    /// # Safety
    /// `frame` must be a 4 KiB table frame that is no longer linked into any table and that
    /// the caller owns; `table` must be its accessible address.
    #[inline]
    pub(crate) unsafe fn defer_free(&mut self, frame: PhysAddr, table: *mut usize) {
        // SAFETY: the caller owns the unlinked frame; its first word becomes the list link.
        unsafe {
            table.write_volatile(if self.free_count == 0 {
                0
            } else {
                self.free_head.as_usize()
            })
        };
        self.free_head = frame;
        self.free_count += 1;
        self.tables_freed = true;
    }

    /// Performs the recorded invalidations with `M::flush_tlb`, then hands every deferred
    /// frame to `free`. `read_link` reads the list link stored in a deferred frame.
    pub(crate) fn flush<M: PagingMetaData>(
        &mut self,
        read_link: impl Fn(PhysAddr) -> usize,
        mut free: impl FnMut(PhysAddr),
    ) {
        if self.tables_freed && !M::FLUSH_BY_VA_COVERS_TABLES {
            self.full = true;
        }
        if self.full {
            M::flush_tlb(None);
        } else {
            for range in &self.ranges[..self.len] {
                let mut va = range.start;
                while va != range.end {
                    M::flush_tlb(Some(M::VirtAddr::from(va)));
                    va = va.wrapping_add(1 << range.shift);
                }
            }
        }
        let mut frame = self.free_head;
        for _ in 0..self.free_count {
            let next = read_link(frame);
            free(frame);
            frame = PhysAddr::from_usize(next);
        }
        *self = Self::new();
    }

    /// Forgets the recorded invalidations (the caller takes responsibility for them).
    /// Deferred frees are kept.
    pub(crate) fn discard_invalidations(&mut self) {
        self.len = 0;
        self.ops = 0;
        self.full = false;
    }
}

/// A pending invalidation of one page, returned by the immediate API
/// ([`PageTable64::map`](crate::PageTable64::map) and friends).
///
/// Call [`flush`](Self::flush) once the change must be visible, or [`ignore`](Self::ignore)
/// when the table is not active (or a full flush follows).
#[must_use = "the TLB may still hold the old translation: call `flush()` or `ignore()`"]
pub struct TlbFlush<M: PagingMetaData>(M::VirtAddr, PhantomData<M>);

impl<M: PagingMetaData> TlbFlush<M> {
    pub(crate) const fn new(vaddr: M::VirtAddr) -> Self {
        Self(vaddr, PhantomData)
    }

    /// Invalidates the page's TLB entries on this CPU (`M::flush_tlb(Some(vaddr))`).
    pub fn flush(self) {
        M::flush_tlb(Some(self.0))
    }

    /// Drops the token without invalidating.
    pub fn ignore(self) {}
}

/// A pending invalidation of the whole TLB, returned by the immediate region API.
#[must_use = "the TLB may still hold old translations: call `flush_all()` or `ignore()`"]
pub struct TlbFlushAll<M: PagingMetaData>(PhantomData<M>);

impl<M: PagingMetaData> TlbFlushAll<M> {
    pub(crate) const fn new() -> Self {
        Self(PhantomData)
    }

    /// Invalidates the whole TLB on this CPU (`M::flush_tlb(None)`).
    pub fn flush_all(self) {
        M::flush_tlb(None)
    }

    /// Drops the token without invalidating.
    pub fn ignore(self) {}
}
