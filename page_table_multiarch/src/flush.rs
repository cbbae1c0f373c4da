//! TLB invalidation: the batch a cursor records, the deferred frees that wait for it, and
//! the `#[must_use]` tokens of the immediate API.

use core::marker::PhantomData;
use core::mem::MaybeUninit;

use memory_addr::PhysAddr;

use crate::PagingMetaData;

/// Ranges kept before falling back to one full flush.
const MAX_RANGES: usize = 8;

/// One recorded range: invalidate every `1 << shift` bytes in `start..end`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct FlushRange {
    start: usize,
    end: usize,
    shift: u32,
}

/// The invalidations a cursor owes, handed to a [`TlbInvalidate`] when it flushes.
///
/// Addresses are in the caller's (canonical) form. Adjacent changed leaves of the same size
/// are merged into one range; `page_size` is the size of the leaves in a range (one
/// invalidation per page covers it).
#[derive(Debug)]
pub struct FlushBatch<'a> {
    ranges: &'a [FlushRange],
    everything: bool,
    tables_freed: bool,
    pages: usize,
}

impl FlushBatch<'_> {
    /// The changed ranges as `(start, end, page_size)`, unless [`everything`](Self::everything).
    pub fn ranges(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.ranges
            .iter()
            .map(|r| (r.start, r.end, 1usize << r.shift))
    }

    /// Whether too many ranges were changed to list (or the change was global, as
    /// `copy_from`): everything must be invalidated.
    pub fn everything(&self) -> bool {
        self.everything
    }

    /// Whether page tables were unlinked: cached table entries (paging-structure caches,
    /// walk caches) must be invalidated too before the tables are freed, which happens right
    /// after [`TlbInvalidate::invalidate`] returns.
    pub fn tables_freed(&self) -> bool {
        self.tables_freed
    }

    /// The number of per-page invalidations the ranges stand for (changes recorded once
    /// [`everything`](Self::everything) was owed are not counted).
    pub fn pages(&self) -> usize {
        self.pages
    }
}

/// Performs the invalidations of a cursor's batch: plug in ASID-scoped, broadcast or remote
/// (cross-CPU shootdown) invalidation with [`PageTable64::cursor_with`](crate::PageTable64::cursor_with).
///
/// The tables the batch unlinked are freed as soon as `invalidate` returns, so it must not
/// return before every CPU that may use the table has dropped its cached entries.
pub trait TlbInvalidate<M: PagingMetaData> {
    /// Invalidates what `batch` describes.
    fn invalidate(&mut self, batch: &FlushBatch<'_>);
}

/// The default invalidation: on this CPU, with [`PagingMetaData::flush_tlb`] once per page,
/// or once for everything above [`PagingMetaData::FLUSH_THRESHOLD`] pages (or when tables
/// were freed and [`PagingMetaData::FLUSH_BY_VA_COVERS_TABLES`] is false).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalFlush;

impl<M: PagingMetaData> TlbInvalidate<M> for LocalFlush {
    #[inline]
    fn invalidate(&mut self, batch: &FlushBatch<'_>) {
        if batch.everything()
            || batch.pages() > M::FLUSH_THRESHOLD
            || (batch.tables_freed() && !M::FLUSH_BY_VA_COVERS_TABLES)
        {
            M::flush_tlb(None);
            return;
        }
        for (start, end, page_size) in batch.ranges() {
            let mut va = start;
            while va != end {
                M::flush_tlb(Some(M::VirtAddr::from(va)));
                va = va.wrapping_add(page_size);
            }
        }
    }
}

/// Unlinked tables kept before a flush is forced to free them.
const MAX_FREES: usize = 64;

/// The invalidations a cursor owes and the table frames waiting for them.
///
/// Freed tables are kept in a small array, so waiting needs no allocation and never touches
/// the frames; when it fills, the cursor flushes early.
pub(crate) struct Pending {
    /// `ranges[..len]` are initialised.
    ranges: [MaybeUninit<FlushRange>; MAX_RANGES],
    len: usize,
    pages: usize,
    everything: bool,
    /// `frees[..nfrees]` are initialised.
    frees: [MaybeUninit<PhysAddr>; MAX_FREES],
    nfrees: usize,
}

impl Pending {
    pub(crate) const fn new() -> Self {
        // The arrays stay uninitialised: a cursor that records nothing costs nothing.
        Self {
            ranges: [const { MaybeUninit::uninit() }; MAX_RANGES],
            len: 0,
            pages: 0,
            everything: false,
            frees: [const { MaybeUninit::uninit() }; MAX_FREES],
            nfrees: 0,
        }
    }

    /// The recorded ranges.
    #[inline]
    fn ranges(&self) -> &[FlushRange] {
        // SAFETY: `ranges[..len]` are initialised, and `MaybeUninit<T>` has `T`'s layout.
        unsafe { core::slice::from_raw_parts(self.ranges.as_ptr() as *const FlushRange, self.len) }
    }

    /// Forgets everything recorded (the arrays are left as they are).
    #[inline]
    fn clear(&mut self) {
        self.len = 0;
        self.pages = 0;
        self.everything = false;
        self.nfrees = 0;
    }

    /// Whether nothing is owed.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && !self.everything && self.nfrees == 0
    }

    /// Whether table frames wait for a flush.
    #[inline]
    pub(crate) fn has_frees(&self) -> bool {
        self.nfrees != 0
    }

    /// Records that the translation of `[va, va + (1 << shift))` changed (`va` canonical).
    #[inline(always)]
    pub(crate) fn record(&mut self, va: usize, shift: u32) {
        // Once a full flush is owed, nothing more is counted (or stored).
        if self.everything {
            return;
        }
        self.pages += 1;
        let end = va.wrapping_add(1 << shift);
        if self.len > 0 {
            // SAFETY: `ranges[len - 1]` is initialised.
            let last = unsafe { self.ranges[self.len - 1].assume_init_mut() };
            if last.shift == shift && last.end == va {
                last.end = end;
                return;
            }
        }
        self.push_range(va, end, shift);
    }

    /// Starts a new range (the uncommon case of [`record`](Self::record)).
    #[inline(never)]
    fn push_range(&mut self, va: usize, end: usize, shift: u32) {
        if self.len == MAX_RANGES {
            self.everything = true;
            return;
        }
        self.ranges[self.len].write(FlushRange {
            start: va,
            end,
            shift,
        });
        self.len += 1;
    }

    /// Records that the translations of `count` consecutive pages of `1 << shift` bytes
    /// from `va` changed.
    #[inline]
    pub(crate) fn record_pages(&mut self, va: usize, count: usize, shift: u32) {
        if self.everything {
            return;
        }
        self.pages += count - 1;
        self.record(va, shift);
        if !self.everything && count > 1 {
            // SAFETY: `record` left `ranges[len - 1]` initialised, ending at `va + page`.
            let last = unsafe { self.ranges[self.len - 1].assume_init_mut() };
            last.end = va.wrapping_add(count << shift);
        }
    }

    /// Records that cached copies of the entry linking a table that spans
    /// `[va, va + (1 << shift))` must go, for a format whose per-address invalidation drops
    /// them: one invalidation anywhere in the span is enough, so nothing is added when a
    /// recorded range already starts inside it.
    #[inline]
    pub(crate) fn record_table(&mut self, va: usize, shift: u32) {
        if self.everything {
            return;
        }
        let span_end = va.wrapping_add(1 << shift);
        let covered = self
            .ranges()
            .iter()
            .any(|r| r.start.wrapping_sub(va) < span_end.wrapping_sub(va));
        if !covered {
            self.record(va, shift);
        }
    }

    /// Records that everything must be flushed.
    #[cfg(feature = "copy-from")]
    #[inline]
    pub(crate) fn record_all(&mut self) {
        self.everything = true;
    }

    /// Queues an unlinked table frame to be freed after the next flush. Returns whether the
    /// queue is full (the caller must flush).
    #[inline]
    pub(crate) fn defer_free(&mut self, frame: PhysAddr) -> bool {
        self.frees[self.nfrees].write(frame);
        self.nfrees += 1;
        self.nfrees == MAX_FREES
    }

    /// Hands the batch to `invalidator`, then every deferred frame to `free`.
    pub(crate) fn flush<M: PagingMetaData, I: TlbInvalidate<M> + ?Sized>(
        &mut self,
        invalidator: &mut I,
        mut free: impl FnMut(PhysAddr),
    ) {
        invalidator.invalidate(&FlushBatch {
            ranges: self.ranges(),
            everything: self.everything,
            tables_freed: self.nfrees != 0,
            pages: self.pages,
        });
        for frame in &self.frees[..self.nfrees] {
            // SAFETY: `frees[..nfrees]` are initialised.
            free(unsafe { frame.assume_init() });
        }
        self.clear();
    }

    /// Forgets the recorded invalidations (the caller takes responsibility for them).
    /// Deferred frees are kept.
    pub(crate) fn discard_invalidations(&mut self) {
        self.len = 0;
        self.pages = 0;
        self.everything = false;
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
