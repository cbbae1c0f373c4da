//! The cursor: the one place that changes a page table.
//!
//! Every operation validates its input before touching anything, walks the tree once per
//! table (range operations fill each table's entries in one loop), splits huge pages that a
//! range only partly covers, unlinks tables that become empty, and records what the TLB must
//! forget. Unlinked tables are freed only after the flush that covers them.
//!
//! All or nothing: `map`/`map_region` build new subtrees unlinked and publish each one with
//! a single store once it is complete; if anything fails, unpublished subtrees are freed at
//! once and the published part of the range is unmapped again. `unmap_region` and
//! `protect_region` reserve the frames their boundary splits need before changing anything.

use core::ops::Deref;
use core::sync::atomic::{Ordering, fence};

use memory_addr::PhysAddr;

use crate::flush::{LocalFlush, Pending, TlbInvalidate};
use crate::geometry::{Chunk, ENTRIES, Geometry, MAX_LEVELS};
use crate::table::{
    Init, Kind, alloc_table, check_table_frame, empty_entry, free_tree, init_for, is_leaf, kind,
    next_table, read, table_ptr, write,
};
use crate::{GenericPTE, MappingFlags, PageSize, PageTable64, PagingError, PagingHandler};
use crate::{PagingMetaData, PagingResult};

/// The last table a single-page operation reached, so the next operation on a neighbouring
/// address starts there instead of at the root.
///
/// Kept small: a random single-page call writes it every time.
#[derive(Clone, Copy)]
struct PathCache<PTE> {
    /// [`cache_key`] of the table (which names its height, its span and the half of the
    /// address space it was reached in), or [`NO_KEY`] when the cache is empty.
    key: usize,
    /// The table, as a pointer (its physical address is in `link`).
    ptr: *mut PTE,
    /// The entry that links the table (never the root, so never null).
    link: *mut PTE,
    /// Where the format keeps used-entry counts: the change of the table's count that the
    /// fast paths of single-page `map` and `unmap` made and that `link` does not show yet.
    /// Applied by [`PageTable64Cursor::settle`], which every call that may move the cache
    /// or read counts runs first: a run of single-page calls in one last-level table
    /// writes its count once.
    delta: isize,
}

/// The key of the table at `height` whose span holds the canonical address `va`: the bits
/// of `va` above that span, and the height in the low 3 bits.
#[inline(always)]
const fn cache_key(va: usize, height: usize) -> usize {
    ((va >> Geometry::shift(height + 1)) << 3) | height
}

/// The key of an empty path cache: no [`cache_key`] has its top bits set.
const NO_KEY: usize = usize::MAX;

/// A table found by [`PageTable64Cursor::descend`]: where it is, its height, and the two
/// entries above it on the path.
#[derive(Clone, Copy)]
struct Found<PTE> {
    /// The table's physical address (0 in the one handed to the fast paths by
    /// [`PageTable64Cursor::cached_last_level`], which never need it).
    table: PhysAddr,
    /// `table` as a pointer.
    ptr: *mut PTE,
    height: usize,
    /// The entry that links `table` (null for the root).
    link: *mut PTE,
    /// The entry that links the table holding `link`, when the descent started at the
    /// root (null otherwise, and when the table holding `link` is the root).
    plink: *mut PTE,
}

/// A 4 KiB leaf for one set of flags, with physical address 0, kept by the cursor so
/// consecutive `map` calls with the same flags do not encode them again.
#[derive(Clone, Copy)]
struct PageTemplate<PTE> {
    flags: MappingFlags,
    pte: PTE,
}

/// Frames reserved for the boundary splits of a range operation.
struct Reserve {
    frames: [PhysAddr; 2 * MAX_LEVELS],
    len: usize,
}

impl Reserve {
    const fn new() -> Self {
        Self {
            frames: [PhysAddr::from_usize(0); 2 * MAX_LEVELS],
            len: 0,
        }
    }

    fn take(&mut self) -> Option<PhysAddr> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.frames[self.len])
    }

    /// Frees the frames that were not used (they were never linked).
    fn release<H: PagingHandler>(&mut self) {
        while let Some(frame) = self.take() {
            H::dealloc_frame(frame);
        }
    }
}

/// How `map_range` chooses leaf sizes.
struct MapSpec<F> {
    flags: MappingFlags,
    /// `Some(h)`: every leaf at height `h` (single `map`). `None`: the largest that fits.
    fixed: Option<usize>,
    /// The greatest height `None` mode may use.
    max_leaf: usize,
    /// The physical address for a canonical virtual address.
    get_paddr: F,
}

/// A failure inside `map_range`, with the first address whose mapping was not published.
type MapFailure = (PagingError, usize);

/// Root entries shared from another table by [`PageTable64Cursor::copy_from`].
#[cfg(feature = "copy-from")]
#[derive(Default, Clone)]
pub(crate) struct Borrowed([u64; 32]);

#[cfg(feature = "copy-from")]
impl Borrowed {
    pub(crate) fn get(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
}

/// Root entries whose subtree another table links after [`PageTable64Cursor::copy_from`].
///
/// Set through a shared reference (the lender is only borrowed by `copy_from`), hence
/// atomic. The table linked by a lent root entry is never freed: not when it empties, not
/// when its range is unmapped, not when the lender is dropped, because other tables may
/// still walk it.
#[cfg(feature = "copy-from")]
#[derive(Default)]
pub(crate) struct Lent([core::sync::atomic::AtomicU64; 32]);

#[cfg(feature = "copy-from")]
impl Lent {
    pub(crate) fn get(&self, index: usize) -> bool {
        self.0[index / 64].load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }

    fn set(&self, index: usize) {
        self.0[index / 64].fetch_or(1 << (index % 64), Ordering::Relaxed);
    }
}

/// A cursor over a [`PageTable64`]: the one way to change it.
///
/// It dereferences to the table, so `query`, `walk` and `root_paddr` are available. The TLB
/// invalidations it records are performed by [`flush`](Self::flush), or when it is dropped;
/// tables it unlinked are freed right after that flush.
pub struct PageTable64Cursor<'a, M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> {
    table: &'a mut PageTable64<M, PTE, H>,
    pending: Pending,
    cache: PathCache<PTE>,
    template: Option<PageTemplate<PTE>>,
    /// The bits above the translated ones of the current operation's addresses (its half of
    /// the address space), so recorded invalidations use the caller's form of the address.
    high: usize,
    /// Where invalidations go; `None` is [`LocalFlush`].
    invalidator: Option<&'a mut dyn TlbInvalidate<M>>,
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> Deref
    for PageTable64Cursor<'_, M, PTE, H>
{
    type Target = PageTable64<M, PTE, H>;

    fn deref(&self) -> &Self::Target {
        self.table
    }
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> Drop
    for PageTable64Cursor<'_, M, PTE, H>
{
    fn drop(&mut self) {
        self.flush();
    }
}

impl<'a, M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> PageTable64Cursor<'a, M, PTE, H> {
    const GEO: Geometry = PageTable64::<M, PTE, H>::GEOMETRY;

    pub(crate) fn new(
        table: &'a mut PageTable64<M, PTE, H>,
        invalidator: Option<&'a mut dyn TlbInvalidate<M>>,
    ) -> Self {
        Self {
            invalidator,
            table,
            pending: Pending::new(),
            cache: PathCache {
                key: NO_KEY,
                ptr: core::ptr::null_mut(),
                link: core::ptr::null_mut(),
                delta: 0,
            },
            template: None,
            high: 0,
        }
    }

    // ---------------------------------------------------------------------------------
    // Input validation
    // ---------------------------------------------------------------------------------

    /// Checks `va`, records its high bits for [`canonical`](Self::canonical) and returns
    /// its translated bits.
    #[inline]
    fn check_va(&mut self, va: usize) -> PagingResult<usize> {
        let tva = self.translate_va(va)?;
        self.high = va & !Self::GEO.va_mask();
        Ok(tva)
    }

    /// [`check_va`](Self::check_va) without recording the high bits, for a caller that
    /// records with `va` itself.
    #[inline(always)]
    fn translate_va(&self, va: usize) -> PagingResult<usize> {
        if !M::vaddr_is_valid(va) {
            return Err(PagingError::InvalidVirtAddr);
        }
        let tva = va & Self::GEO.va_mask();
        self.check_not_borrowed(tva, tva + 1)?;
        Ok(tva)
    }

    /// Checks a range and returns its translated bounds `[start, end)`, or `None` when it
    /// is empty (an empty range with aligned bounds does nothing).
    fn check_region(&mut self, va: usize, size: usize) -> PagingResult<Option<(usize, usize)>> {
        if va & 0xfff != 0 || size & 0xfff != 0 {
            return Err(PagingError::NotAligned);
        }
        if size == 0 {
            return Ok(None);
        }
        let last = va.checked_add(size - 1).ok_or(PagingError::RangeOverflow)?;
        if !M::vaddr_is_valid(va) || !M::vaddr_is_valid(last) {
            return Err(PagingError::InvalidVirtAddr);
        }
        let mask = Self::GEO.va_mask();
        let (start, tlast) = (va & mask, last & mask);
        if tlast < start || tlast - start != size - 1 {
            // The range crosses the non-canonical hole.
            return Err(PagingError::InvalidVirtAddr);
        }
        self.high = va & !mask;
        self.check_not_borrowed(start, tlast + 1)?;
        Ok(Some((start, tlast + 1)))
    }

    /// Checks that `[pa, pa + size)` (`size` a power of two) is aligned to `size` and
    /// addressable.
    #[inline]
    fn check_pa(pa: PhysAddr, size: usize) -> PagingResult {
        let pa = pa.as_usize();
        if pa & (size - 1) != 0 {
            return Err(PagingError::NotAligned);
        }
        if !Self::aligned_pa_addressable(pa, size) {
            return Err(PagingError::InvalidPhysAddr);
        }
        Ok(())
    }

    /// Whether `[pa, pa + size)`, with `pa` aligned to `size` (a power of two), is within
    /// what the metadata and the entry format can address. Aligned, so the last byte's
    /// address cannot overflow.
    #[inline(always)]
    fn aligned_pa_addressable(pa: usize, size: usize) -> bool {
        let last = pa | (size - 1);
        M::paddr_is_valid(last)
            && (PTE::PA_BITS >= usize::BITS as usize || last >> PTE::PA_BITS == 0)
    }

    #[cfg(feature = "copy-from")]
    fn check_not_borrowed(&self, start: usize, end: usize) -> PagingResult {
        let root_h = Self::GEO.root_height();
        let (first, last) = (
            Self::GEO.index(start, root_h),
            Self::GEO.index(end - 1, root_h),
        );
        if (first..=last).any(|i| self.table.borrowed.get(i)) {
            return Err(PagingError::AlreadyMapped);
        }
        Ok(())
    }

    #[cfg(not(feature = "copy-from"))]
    #[inline(always)]
    fn check_not_borrowed(&self, _start: usize, _end: usize) -> PagingResult {
        Ok(())
    }

    /// The caller's form of translated address `tva`.
    #[inline(always)]
    fn canonical(&self, tva: usize) -> usize {
        tva | self.high
    }

    /// Records `count` changed 4 KiB pages from `tva`.
    #[inline]
    fn record_pages(&mut self, tva: usize, count: usize) {
        let va = self.canonical(tva);
        self.pending
            .record_pages(va, count, Geometry::shift(0) as u32);
    }

    #[inline(always)]
    fn record(&mut self, tva: usize, height: usize) {
        let va = self.canonical(tva);
        self.pending.record(va, Geometry::shift(height) as u32);
    }

    /// Records the change of the leaf at `height` covering `va`, an address in the
    /// caller's (canonical) form.
    #[inline(always)]
    fn record_canonical(&mut self, va: usize, height: usize) {
        let base = va & !(Geometry::span(height) - 1);
        self.pending.record(base, Geometry::shift(height) as u32);
    }

    // ---------------------------------------------------------------------------------
    // Descent
    // ---------------------------------------------------------------------------------

    /// Descends towards `tva` until the table at height `target`, or until the slot on the
    /// path is not a table, starting from the path cache when it covers `tva`. Returns that
    /// table with the entries above it, and keeps it in the path cache.
    #[inline(always)]
    fn descend(&mut self, tva: usize, target: usize) -> Found<PTE> {
        let c = &self.cache;
        let from = c.key & 7;
        if !(c.key != NO_KEY && from >= target && cache_key(self.canonical(tva), from) == c.key) {
            return self.descend_from_root(tva, target);
        }
        let mut f = Found {
            // SAFETY: a filled cache's `link` is a live entry linking its table.
            table: unsafe { read(c.link, 0) }.paddr(),
            ptr: c.ptr,
            height: from,
            link: c.link,
            plink: core::ptr::null_mut(),
        };
        while f.height > target {
            let Ok(next) = self.step(&f, tva) else {
                break;
            };
            f = next;
        }
        if f.height != from {
            self.remember(tva, &f);
        }
        f
    }

    /// [`descend`](Self::descend) from the root, without looking at the path cache.
    #[inline(always)]
    fn descend_from_root(&mut self, tva: usize, target: usize) -> Found<PTE> {
        let (Ok(f) | Err((f, _))) = self.walk_from_root(tva, target);
        self.remember(tva, &f);
        f
    }

    /// The root, as the start of a walk.
    #[inline(always)]
    fn root(&self) -> Found<PTE> {
        let root = self.table.root_paddr();
        Found {
            table: root,
            ptr: table_ptr::<PTE, H>(root),
            height: Self::GEO.root_height(),
            link: core::ptr::null_mut(),
            plink: core::ptr::null_mut(),
        }
    }

    /// The walk from the root towards `tva`: the table at height `target` on its path
    /// (with `link` and `plink` known), or the deepest table reached whose slot is not a
    /// table, with that slot's value. Unlike [`descend_from_root`](Self::descend_from_root)
    /// it leaves the path cache alone, and every early exit leads out of the walk: a
    /// straight line for the common case (unrolled for a constant `target`).
    #[inline(always)]
    fn walk_from_root(&self, tva: usize, target: usize) -> Result<Found<PTE>, (Found<PTE>, PTE)> {
        let mut f = self.root();
        for _ in target..Self::GEO.root_height() {
            f = self.step(&f, tva).map_err(|slot| (f, slot))?;
        }
        Ok(f)
    }

    /// One step from the table `f` towards `tva`: the table its slot links, or the slot's
    /// value if it links none.
    #[inline(always)]
    fn step(&self, f: &Found<PTE>, tva: usize) -> Result<Found<PTE>, PTE> {
        let index = Self::GEO.index(tva, f.height);
        // SAFETY: `f.ptr` is a live table at `f.height`; `index` is within its entries.
        let pte = unsafe { read(f.ptr, index) };
        let Some(next) = next_table(&pte, f.height, self.table.invalid) else {
            return Err(pte);
        };
        Ok(Found {
            table: next,
            ptr: table_ptr::<PTE, H>(next),
            height: f.height - 1,
            // SAFETY: as above.
            link: unsafe { f.ptr.add(index) },
            plink: f.link,
        })
    }

    /// Keeps `f`, a table on the path of `tva`, in the path cache. The
    /// cache's count change must have been applied ([`settle`](Self::settle)), so it is
    /// zero and stays so.
    #[inline(always)]
    fn remember(&mut self, tva: usize, f: &Found<PTE>) {
        self.remember_canonical(self.canonical(tva), f);
    }

    /// [`remember`](Self::remember) with the canonical form `va` of the address. The root
    /// is never kept (the cache needs the entry linking its table): a walk that ends there
    /// leaves the cache as it is.
    #[inline(always)]
    fn remember_canonical(&mut self, va: usize, f: &Found<PTE>) {
        if f.height >= Self::GEO.root_height() {
            return;
        }
        debug_assert!(
            self.cache.delta == 0,
            "the path cache moves with an unapplied count change"
        );
        self.cache.key = cache_key(va, f.height);
        self.cache.ptr = f.ptr;
        self.cache.link = f.link;
    }

    /// Finds the leaf covering `tva`: the table holding it (with the entries above), its
    /// index there and its value.
    #[inline(always)]
    fn find_leaf(&mut self, tva: usize) -> PagingResult<(Found<PTE>, usize, PTE)> {
        let f = self.descend(tva, 0);
        Self::leaf_in(f, tva)
    }

    /// The leaf covering `tva` in the table `f`, where a descent towards `tva` stopped.
    #[inline(always)]
    fn leaf_in(f: Found<PTE>, tva: usize) -> PagingResult<(Found<PTE>, usize, PTE)> {
        let index = Self::GEO.index(tva, f.height);
        // SAFETY: `f.ptr` is a live table at `f.height`; `index` is within its entries.
        let pte = unsafe { read(f.ptr, index) };
        if is_leaf(&pte, f.height) {
            Ok((f, index, pte))
        } else {
            Err(PagingError::NotMapped)
        }
    }

    /// The fast path of single-page calls: when `va` is valid and lies in the last-level
    /// table the path cache holds, returns its translated bits and that table. The caller
    /// records invalidations with `va` itself (its canonical form), not through
    /// [`canonical`](Self::canonical).
    #[inline(always)]
    fn cached_last_level(&self, va: usize) -> Option<(usize, Found<PTE>)> {
        let c = &self.cache;
        // A cached table never lies under a borrowed root entry (`check_va` rejects those
        // before any descent, and `copy_from` empties the cache).
        if cache_key(va, 0) == c.key && M::vaddr_is_valid(va) {
            let f = Found {
                // Not needed by the fast paths; the walks read it from `link`.
                table: PhysAddr::from_usize(0),
                ptr: c.ptr,
                height: 0,
                link: c.link,
                plink: core::ptr::null_mut(),
            };
            return Some((va & Self::GEO.va_mask(), f));
        }
        None
    }

    /// A 4 KiB leaf mapping `paddr` with `flags` (encoded once per run of equal flags).
    #[inline(always)]
    fn page_entry(&mut self, paddr: PhysAddr, flags: MappingFlags) -> PTE {
        let mut pte = match self.template {
            Some(t) if t.flags == flags => t.pte,
            _ => {
                let pte = PTE::new_page(PhysAddr::from_usize(0), flags, false);
                self.template = Some(PageTemplate { flags, pte });
                pte
            }
        };
        pte.set_paddr(paddr);
        pte
    }

    /// Adds `delta` to the used-entry count kept in `link` (an entry linking a table).
    /// Returns the new count, or `None` when the format keeps no counts or `link` is null
    /// (the root, which is never freed).
    #[inline(always)]
    fn adjust_count(link: *mut PTE, delta: isize) -> Option<usize> {
        if !PTE::COUNTS_TABLE_ENTRIES || link.is_null() {
            return None;
        }
        // SAFETY: `link` is a live entry of this table that links a table.
        let mut pte = unsafe { read(link, 0) };
        let count = pte.add_table_count(delta);
        // SAFETY: as above.
        unsafe { write(link, 0, pte) };
        Some(count)
    }

    /// After `cleared` entries of the table `t` at `height` (linked by `link`) became
    /// unused: whether it is now empty, from the count kept in `link` where the format keeps
    /// one, otherwise by scanning the table from `near`, an entry just cleared.
    #[inline]
    fn emptied(
        &self,
        link: *mut PTE,
        t: *const PTE,
        height: usize,
        cleared: usize,
        near: usize,
    ) -> bool {
        match Self::adjust_count(link, -(cleared as isize)) {
            Some(count) => count == 0,
            None => table_is_empty_near::<PTE>(t, near, height, self.table.invalid),
        }
    }

    // ---------------------------------------------------------------------------------
    // Single-page operations (the 0.6 cursor API)
    // ---------------------------------------------------------------------------------

    /// Maps the page of `page_size` at `vaddr` to `target` with `flags`, creating tables as
    /// needed. Empty `flags` create a non-present reservation that keeps `target`.
    ///
    /// # Errors
    /// - [`PagingError::UnsupportedPageSize`]: `Size1M`, or larger than the table allows.
    /// - [`PagingError::InvalidVirtAddr`] / [`PagingError::InvalidPhysAddr`]: out of range.
    /// - [`PagingError::NotAligned`]: `vaddr` or `target` not aligned to `page_size`.
    /// - [`PagingError::AlreadyMapped`]: a leaf (present or reserved) or a table holds the
    ///   slot.
    /// - [`PagingError::MappedToHugePage`]: a larger page covers `vaddr`.
    /// - [`PagingError::NoMemory`] / [`PagingError::BadFrame`]: no frame for a new table.
    ///
    /// On error the table is unchanged.
    #[inline(always)]
    pub fn map(
        &mut self,
        vaddr: M::VirtAddr,
        target: PhysAddr,
        page_size: PageSize,
        flags: MappingFlags,
    ) -> PagingResult {
        if page_size == PageSize::Size4K {
            if let Some((tva, f)) = self.cached_last_level(vaddr.into()) {
                if tva & 0xfff != 0 {
                    return Err(PagingError::NotAligned);
                }
                Self::check_pa(target, 0x1000)?;
                let index = Self::GEO.index(tva, 0);
                // SAFETY: `f.ptr` is the live last-level table covering `tva`.
                if !unsafe { read(f.ptr, index) }.is_unused() {
                    return Err(PagingError::AlreadyMapped);
                }
                let pte = self.page_entry(target, flags);
                // SAFETY: as above.
                unsafe { write(f.ptr, index, pte) };
                if PTE::COUNTS_TABLE_ENTRIES {
                    self.cache.delta += 1;
                }
                self.record_canonical(vaddr.into(), 0);
                return Ok(());
            }
            return self.map_page_slow(vaddr, target, flags);
        }
        self.map_slow(vaddr, target, page_size, flags)
    }

    /// [`map`](Self::map) of a 4 KiB page outside the path cache's last-level table.
    #[inline(never)]
    fn map_page_slow(
        &mut self,
        vaddr: M::VirtAddr,
        target: PhysAddr,
        flags: MappingFlags,
    ) -> PagingResult {
        self.map_leaf(vaddr.into(), target, 0, flags)
    }

    /// [`map`](Self::map) of a huge page (or of an unsupported size).
    #[inline(never)]
    fn map_slow(
        &mut self,
        vaddr: M::VirtAddr,
        target: PhysAddr,
        page_size: PageSize,
        flags: MappingFlags,
    ) -> PagingResult {
        let height = Self::GEO
            .leaf_height(page_size)
            .ok_or(PagingError::UnsupportedPageSize)?;
        self.map_leaf(vaddr.into(), target, height, flags)
    }

    /// Maps one leaf at `height` for `va` outside the path cache's last-level table: one
    /// walk from the root, then the slot filled, or the missing table at `height` created
    /// with the leaf in it; anything else (several tables missing, a huge leaf in the way)
    /// through the range engine. Inlined into its two callers, so the 4 KiB walk unrolls.
    #[inline(always)]
    fn map_leaf(
        &mut self,
        va: usize,
        target: PhysAddr,
        height: usize,
        flags: MappingFlags,
    ) -> PagingResult {
        self.settle();
        let tva = self.translate_va(va)?;
        let size = Geometry::span(height);
        if tva & (size - 1) != 0 {
            return Err(PagingError::NotAligned);
        }
        Self::check_pa(target, size)?;
        let geo = Self::GEO;
        let index = geo.index(tva, height);
        match self.walk_from_root(tva, height) {
            Ok(f) => {
                // SAFETY: `f.ptr` is a live table at `height` covering `tva`.
                if kind(&unsafe { read(f.ptr, index) }, height, self.table.invalid) != Kind::Empty {
                    return Err(PagingError::AlreadyMapped);
                }
                let pte = self.leaf_entry(target, flags, height);
                // SAFETY: as above.
                unsafe { write(f.ptr, index, pte) };
                Self::adjust_count(f.link, 1);
                self.remember_canonical(va, &f);
            }
            Err((p, slot))
                if p.height == height + 1
                    && kind(&slot, p.height, self.table.invalid) == Kind::Empty =>
            {
                // The parent's count first: stores after the zeroing of the new table wait
                // for it to complete.
                Self::adjust_count(p.link, 1);
                let init = init_for::<PTE>(height, self.table.invalid);
                let child = match alloc_table::<M, PTE, H>(init) {
                    Ok(child) => child,
                    Err(e) => {
                        Self::adjust_count(p.link, -1);
                        return Err(e);
                    }
                };
                let c = table_ptr::<PTE, H>(child);
                let pte = self.leaf_entry(target, flags, height);
                // SAFETY: `c` is the new table at `height`, not yet published.
                unsafe { write(c, index, pte) };
                let mut link = PTE::new_table(child);
                link.set_table_count(1);
                fence(Ordering::Release);
                // SAFETY: `p.ptr` is a live table at `height + 1` covering `tva`.
                unsafe { write(p.ptr, geo.index(tva, p.height), link) };
                // Not kept in the path cache: stores after zeroing a table wait for the
                // zeroing to reach the cache, and a run of maps picks the table up at its
                // next page anyway.
            }
            Err((p, _)) => {
                // Several tables missing, or a leaf in the way: the range engine decides.
                self.high = va & !geo.va_mask();
                let spec = MapSpec {
                    flags,
                    fixed: Some(height),
                    max_leaf: height,
                    get_paddr: |_| target,
                };
                let (added, result) =
                    self.map_range(p.table, p.height, tva, tva + size, &spec, false);
                Self::adjust_count(p.link, added as isize);
                return result.map_err(|(e, _)| e);
            }
        }
        self.record_canonical(va, height);
        Ok(())
    }

    /// A leaf at `height` mapping `paddr` with `flags` (4 KiB ones from the template).
    #[inline(always)]
    fn leaf_entry(&mut self, paddr: PhysAddr, flags: MappingFlags, height: usize) -> PTE {
        if height == 0 {
            self.page_entry(paddr, flags)
        } else {
            PTE::new_page(paddr, flags, true)
        }
    }

    /// Changes the physical address and flags of the leaf covering `vaddr` (present or a
    /// reservation) and returns its size.
    ///
    /// # Errors
    /// [`PagingError::InvalidVirtAddr`], [`PagingError::NotMapped`] (no leaf),
    /// [`PagingError::NotAligned`] (`paddr` not aligned to the leaf's size),
    /// [`PagingError::InvalidPhysAddr`]. On error the table is unchanged.
    pub fn remap(
        &mut self,
        vaddr: M::VirtAddr,
        paddr: PhysAddr,
        flags: MappingFlags,
    ) -> PagingResult<PageSize> {
        self.settle();
        let tva = self.check_va(vaddr.into())?;
        let (Found { ptr: t, height, .. }, index, old) = self.find_leaf(tva)?;
        let size = Geometry::page_size(height).ok_or(PagingError::MappedToHugePage)?;
        Self::check_pa(paddr, size as usize)?;
        let mut new = old;
        new.set_paddr(paddr);
        new.set_flags(flags, height > 0);
        let base = tva & !(size as usize - 1);
        if M::BREAK_BEFORE_MAKE && old.is_present() && new.is_present() && old.paddr() != paddr {
            self.break_entry(t, index, height, base);
        }
        // SAFETY: as above.
        unsafe { write(t, index, new) };
        if old.is_present() || new.is_present() {
            self.record(base, height);
        }
        Ok(size)
    }

    /// Changes the flags of the present leaf covering `vaddr` and returns its size. Empty
    /// `flags` turn it into a non-present reservation that keeps its address.
    ///
    /// # Errors
    /// [`PagingError::InvalidVirtAddr`], [`PagingError::NotMapped`] (no present leaf). On
    /// error the table is unchanged.
    #[inline(always)]
    pub fn protect(&mut self, vaddr: M::VirtAddr, flags: MappingFlags) -> PagingResult<PageSize> {
        if let Some((tva, Found { ptr: t, .. })) = self.cached_last_level(vaddr.into()) {
            let index = Self::GEO.index(tva, 0);
            // SAFETY: `t` is the live last-level table covering `tva`.
            let mut pte = unsafe { read(t, index) };
            // An unused entry is not present either.
            if !pte.is_present() {
                return Err(PagingError::NotMapped);
            }
            pte.set_flags(flags, false);
            // SAFETY: as above.
            unsafe { write(t, index, pte) };
            self.record_canonical(vaddr.into(), 0);
            return Ok(PageSize::Size4K);
        }
        self.protect_slow(vaddr, flags)
    }

    /// [`protect`](Self::protect) without the path cache's last-level table.
    #[inline(never)]
    fn protect_slow(&mut self, vaddr: M::VirtAddr, flags: MappingFlags) -> PagingResult<PageSize> {
        self.settle();
        let tva = self.check_va(vaddr.into())?;
        let (Found { ptr: t, height, .. }, index, mut pte) = self.find_leaf(tva)?;
        if !pte.is_present() {
            return Err(PagingError::NotMapped);
        }
        let size = Geometry::page_size(height).ok_or(PagingError::MappedToHugePage)?;
        pte.set_flags(flags, height > 0);
        // SAFETY: as above.
        unsafe { write(t, index, pte) };
        self.record(tva & !(size as usize - 1), height);
        Ok(size)
    }

    /// Removes the whole leaf covering `vaddr` and returns its base physical address, flags
    /// and size. Tables left empty are unlinked (the last-level table of a run of unmaps
    /// when the run moves on, see [`reclaim`](Self::reclaim)) and freed after the next
    /// flush.
    ///
    /// # Errors
    /// [`PagingError::InvalidVirtAddr`]; [`PagingError::NotMapped`] when no present leaf
    /// covers `vaddr`. As in 0.6, a non-present reservation is removed all the same (and
    /// `NotMapped` returned): the one error after which the table has changed.
    #[inline(always)]
    pub fn unmap(
        &mut self,
        vaddr: M::VirtAddr,
    ) -> PagingResult<(PhysAddr, MappingFlags, PageSize)> {
        let va: usize = vaddr.into();
        if let Some((tva, f)) = self.cached_last_level(va) {
            let (index, pte) = self.clear_page(&f, tva, va)?;
            self.note_cleared(&f, index, va, true);
            return Self::unmapped(pte, 0);
        }
        self.settle();
        // The invalidations and the path cache take `va` itself; the rare paths that go
        // through `canonical` record the high bits first.
        let tva = self.translate_va(va)?;
        // The common case in one straight descent; huge leaves and holes take the general
        // path.
        let f = match self.walk_from_root(tva, 0) {
            Ok(f) => f,
            Err((f, slot)) => return self.unmap_above(va, tva, f, slot),
        };
        let (index, pte) = self.clear_page(&f, tva, va)?;
        if PTE::COUNTS_TABLE_ENTRIES {
            self.count_unmapped(&f, va, pte.is_present());
        } else {
            self.remember_canonical(va, &f);
            self.note_cleared(&f, index, va, false);
        }
        Self::unmapped(pte, 0)
    }

    /// Clears the 4 KiB leaf covering `tva` (canonical form `va`) in the last-level table
    /// `f` and records its invalidation; returns its index and old value, or `NotMapped`
    /// (with nothing changed) if the slot is unused.
    #[inline(always)]
    fn clear_page(&mut self, f: &Found<PTE>, tva: usize, va: usize) -> PagingResult<(usize, PTE)> {
        let index = Self::GEO.index(tva, 0);
        // SAFETY: `f.ptr` is a live last-level table covering `tva`.
        let pte = unsafe { read(f.ptr, index) };
        if pte.is_unused() {
            return Err(PagingError::NotMapped);
        }
        self.clear_entry(f.ptr, index, 0);
        self.record_unmapped(va, &pte, 0);
        Ok((index, pte))
    }

    /// [`unmap`](Self::unmap) where the walk from the root stopped above the last level, at
    /// the table `f` (reached from the root) whose slot for `tva` holds `pte`: a huge leaf,
    /// or nothing.
    #[inline(never)]
    fn unmap_above(
        &mut self,
        va: usize,
        tva: usize,
        f: Found<PTE>,
        pte: PTE,
    ) -> PagingResult<(PhysAddr, MappingFlags, PageSize)> {
        if !is_leaf(&pte, f.height) {
            return Err(PagingError::NotMapped);
        }
        self.high = va & !Self::GEO.va_mask();
        let height = f.height;
        let index = Self::GEO.index(tva, height);
        Geometry::page_size(height).ok_or(PagingError::MappedToHugePage)?;
        self.clear_entry(f.ptr, index, height);
        self.record_unmapped(va, &pte, height);
        if height < Self::GEO.root_height() {
            self.note_cleared(&f, index, va, false);
        }
        Self::unmapped(pte, height)
    }

    /// Records the invalidation of `pte`, a leaf at `height` covering `va` that was just
    /// cleared, if it was present. Before any reclaim: an invalidation inside an emptied
    /// table's span then covers its link too.
    #[inline(always)]
    fn record_unmapped(&mut self, va: usize, pte: &PTE, height: usize) {
        if pte.is_present() {
            self.record_canonical(va, height);
        }
    }

    /// The result of unmapping `pte`, a leaf at `height`.
    #[inline(always)]
    fn unmapped(pte: PTE, height: usize) -> PagingResult<(PhysAddr, MappingFlags, PageSize)> {
        if !pte.is_present() {
            return Err(PagingError::NotMapped);
        }
        match Geometry::page_size(height) {
            Some(size) => Ok((pte.paddr(), pte.flags(), size)),
            None => Err(PagingError::MappedToHugePage),
        }
    }

    // ---------------------------------------------------------------------------------
    // Range operations
    // ---------------------------------------------------------------------------------

    /// Maps `[vaddr, vaddr + size)` with `flags`; the page at `va` maps to `get_paddr(va)`.
    ///
    /// With `allow_huge`, each step uses the largest page the geometry allows whose virtual
    /// address, physical address and remaining length are aligned to it; otherwise 4 KiB
    /// pages. `get_paddr` is called once per page (and once more for each larger size
    /// considered, and for the pages of a new last-level table in which it returned an
    /// invalid address, to find the first). `size == 0` does nothing.
    ///
    /// # Errors
    /// [`PagingError::NotAligned`] (`vaddr`/`size` not 4 KiB aligned, or a physical address
    /// not aligned to its page), [`PagingError::RangeOverflow`],
    /// [`PagingError::InvalidVirtAddr`], [`PagingError::InvalidPhysAddr`],
    /// [`PagingError::AlreadyMapped`] / [`PagingError::MappedToHugePage`] (something already
    /// mapped in the range), [`PagingError::NoMemory`], [`PagingError::BadFrame`].
    ///
    /// On error nothing of the range stays mapped and no frame leaks (tables created for the
    /// range are freed at once if never published, otherwise after the next flush).
    pub fn map_region(
        &mut self,
        vaddr: M::VirtAddr,
        get_paddr: impl Fn(M::VirtAddr) -> PhysAddr,
        size: usize,
        flags: MappingFlags,
        allow_huge: bool,
    ) -> PagingResult {
        self.settle();
        let Some((start, end)) = self.check_region(vaddr.into(), size)? else {
            return Ok(());
        };
        if let Some(done) = self.map_one_leaf(start, size, &get_paddr, flags, allow_huge) {
            return done;
        }
        let spec = MapSpec {
            flags,
            fixed: None,
            max_leaf: if allow_huge {
                Self::GEO.max_leaf_height
            } else {
                0
            },
            get_paddr: |va: usize| get_paddr(M::VirtAddr::from(va)),
        };
        let root = self.table.root_paddr();
        match self
            .map_range(root, Self::GEO.root_height(), start, end, &spec, false)
            .1
        {
            Ok(()) => Ok(()),
            Err((err, failed_at)) => {
                if failed_at > start {
                    let mut none = Reserve::new();
                    self.unmap_range(root, Self::GEO.root_height(), start, failed_at, &mut none);
                }
                Err(err)
            }
        }
    }

    /// `map_region`'s shortcut for a region that is exactly one leaf (a 4 KiB page, or with
    /// `allow_huge` an aligned 2 MiB or 1 GiB one) whose table exists and whose slot is free:
    /// one descent and one store. `None` when the general path must decide.
    #[inline]
    fn map_one_leaf(
        &mut self,
        start: usize,
        size: usize,
        get_paddr: &impl Fn(M::VirtAddr) -> PhysAddr,
        flags: MappingFlags,
        allow_huge: bool,
    ) -> Option<PagingResult> {
        let geo = Self::GEO;
        let height = (0..=if allow_huge { geo.max_leaf_height } else { 0 })
            .find(|&h| Geometry::span(h) == size)?;
        if start & (size - 1) != 0 {
            return None;
        }
        let pa = get_paddr(M::VirtAddr::from(self.canonical(start)));
        if pa.as_usize() & (size - 1) != 0 {
            return None;
        }
        // A walk from the root that leaves the path cache alone: a cursor that maps one
        // region rarely touches the same table again.
        let f = self.walk_from_root(start, height).ok()?;
        let (t, link) = (f.ptr, f.link);
        let index = geo.index(start, height);
        // SAFETY: `t` is a live table at `height`; `index` is within its entries.
        if kind(&unsafe { read(t, index) }, height, self.table.invalid) != Kind::Empty {
            return None;
        }
        if let Err(e) = Self::check_pa(pa, size) {
            return Some(Err(e));
        }
        let pte = self.leaf_entry(pa, flags, height);
        // SAFETY: as above.
        unsafe { write(t, index, pte) };
        Self::adjust_count(link, 1);
        self.record(start, height);
        Some(Ok(()))
    }

    /// Removes every leaf in `[vaddr, vaddr + size)`, present or reserved. Huge pages the
    /// range only partly covers are split first, so every byte outside the range keeps its
    /// translation. Holes are skipped; tables left empty are freed after the next flush.
    ///
    /// # Errors
    /// [`PagingError::NotAligned`], [`PagingError::RangeOverflow`],
    /// [`PagingError::InvalidVirtAddr`], [`PagingError::NoMemory`] /
    /// [`PagingError::BadFrame`] (no frame for a split). On error the table is unchanged.
    pub fn unmap_region(&mut self, vaddr: M::VirtAddr, size: usize) -> PagingResult {
        let Some((start, end)) = self.check_region(vaddr.into(), size)? else {
            return Ok(());
        };
        // The path cache's count change applies to a table this call may unlink.
        self.settle();
        let mut reserve = self.reserve_splits(start, end, true)?;
        let root = self.table.root_paddr();
        self.unmap_range(root, Self::GEO.root_height(), start, end, &mut reserve);
        reserve.release::<H>();
        Ok(())
    }

    /// Sets `flags` on every present leaf in `[vaddr, vaddr + size)`, splitting huge pages
    /// the range only partly covers. Holes and reservations are skipped.
    ///
    /// # Errors
    /// As [`unmap_region`](Self::unmap_region). On error the table is unchanged.
    pub fn protect_region(
        &mut self,
        vaddr: M::VirtAddr,
        size: usize,
        flags: MappingFlags,
    ) -> PagingResult {
        let Some((start, end)) = self.check_region(vaddr.into(), size)? else {
            return Ok(());
        };
        let mut reserve = self.reserve_splits(start, end, false)?;
        let root = self.table.root_paddr();
        self.protect_range(
            root,
            Self::GEO.root_height(),
            start,
            end,
            flags,
            &mut reserve,
        );
        reserve.release::<H>();
        Ok(())
    }

    /// Shares the root entries of `other` that cover `[start, start + size)` (feature
    /// `copy-from`), as 0.6 does: this table's own subtrees there are unlinked (and freed
    /// after the flush), the entries are copied, and the range becomes read-only through this
    /// table: later changes to it through this cursor fail with
    /// [`PagingError::AlreadyMapped`]; change it through `other`, and every table that
    /// shares it sees the change (invalidating other address spaces' TLB entries is the
    /// caller's part, as for any shared mapping).
    ///
    /// # Ownership
    ///
    /// The shared subtrees stay owned by `other`, which *lends* them, and they cannot dangle
    /// whatever is dropped or unmapped first:
    /// - this table never frees a borrowed subtree (not on drop, not on a later `copy_from`);
    /// - `other` never frees the top table of a lent subtree: when it empties, or its whole
    ///   range is unmapped, it stays linked (empty) and the tables below it are freed as
    ///   usual, since every sharer sees them unlinked;
    /// - dropping `other` does not free its lent subtrees, because borrowers may still use
    ///   them. Lending is for a table that lives as long as its borrowers (a kernel's master
    ///   table, typically never dropped); when a lender is dropped anyway, the tables of its
    ///   lent subtrees stay allocated for good rather than freed under a borrower.
    ///
    /// Root entries of `other` that are empty at the time are copied as empty: tables
    /// `other` creates there later are not seen by this table (share ranges that are already
    /// populated, as kernels do with their upper half).
    ///
    /// An empty range does nothing; an invalid one is ignored.
    #[cfg(feature = "copy-from")]
    pub fn copy_from(&mut self, other: &PageTable64<M, PTE, H>, start: M::VirtAddr, size: usize) {
        self.settle();
        let va: usize = start.into();
        if size == 0 {
            return;
        }
        let Some(last) = va.checked_add(size - 1) else {
            return;
        };
        if !M::vaddr_is_valid(va) || !M::vaddr_is_valid(last) {
            return;
        }
        let geo = Self::GEO;
        let root_h = geo.root_height();
        let mask = geo.va_mask();
        let (first, last) = (geo.index(va & mask, root_h), geo.index(last & mask, root_h));
        if first > last {
            return;
        }
        let dst = table_ptr::<PTE, H>(self.table.root_paddr());
        let src = table_ptr::<PTE, H>(other.root_paddr());
        for index in first..=last {
            // SAFETY: both roots are live and have `root_entries` entries.
            let own = unsafe { read(dst, index) };
            // A subtree this table lent to others stays allocated (and unreachable from
            // here): those tables may still walk it.
            if !self.table.borrowed.get(index) && !self.table.lent.get(index) {
                if let Kind::Table(child) = kind(&own, root_h, self.table.invalid) {
                    self.high = 0;
                    self.defer_subtree(child, root_h - 1, index << Geometry::shift(root_h));
                }
            }
            // SAFETY: as above.
            let shared = unsafe { read(src, index) };
            // An empty slot of `other` links to `other`'s invalid table; use ours.
            let shared = match kind(&shared, root_h, other.invalid) {
                Kind::Empty => empty_entry::<PTE>(root_h, self.table.invalid),
                Kind::Table(_) => {
                    other.lent.set(index);
                    shared
                }
                Kind::Leaf => shared,
            };
            // SAFETY: as above.
            unsafe { write(dst, index, shared) };
            self.table.borrowed.set(index);
        }
        self.cache.key = NO_KEY;
        self.pending.record_all();
    }

    /// Unlinks now the last-level table that a run of single-page [`unmap`](Self::unmap)
    /// calls in it left empty. The cursor otherwise does so when the run moves to another
    /// table, before any call that reads counts or may unlink tables, and at the latest at
    /// the next [`flush`](Self::flush). Only needed to inspect the table through the cursor
    /// (its [`table_frames`](PageTable64::table_frames), say) in the middle of such a run;
    /// the frame is freed after the next flush, as every unlinked table is.
    pub fn reclaim(&mut self) {
        self.settle();
    }

    /// Performs the recorded TLB invalidations on this CPU, then frees the tables unlinked
    /// since the last flush. Called automatically when the cursor is dropped.
    pub fn flush(&mut self) {
        self.settle();
        self.flush_pending();
    }

    /// Performs the recorded invalidations and frees the tables waiting for them, leaving
    /// the path cache's count change as it is.
    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let free = |frame| H::dealloc_frame(frame);
        match &mut self.invalidator {
            Some(custom) => self.pending.flush::<M, _>(&mut **custom, free),
            // Static dispatch: the default invalidation inlines.
            None => self.pending.flush::<M, _>(&mut LocalFlush, free),
        }
    }

    /// For the immediate API: frees deferred tables (flushing first, as they require), and
    /// otherwise leaves the invalidations to the caller's token.
    pub(crate) fn finish_immediate(&mut self, flush_now: bool) {
        self.settle();
        if flush_now || self.pending.has_frees() {
            self.flush();
        } else {
            self.pending.discard_invalidations();
        }
    }

    // ---------------------------------------------------------------------------------
    // The engine
    // ---------------------------------------------------------------------------------

    /// Maps `[start, end)` inside the table at `paddr` (height `height`). Returns how many
    /// of this table's entries became used, and the failure with the first address of the
    /// range whose mapping was not published.
    fn map_range<F: Fn(usize) -> PhysAddr>(
        &mut self,
        paddr: PhysAddr,
        height: usize,
        start: usize,
        end: usize,
        spec: &MapSpec<F>,
        fresh: bool,
    ) -> (usize, Result<(), MapFailure>) {
        let geo = Self::GEO;
        let t = table_ptr::<PTE, H>(paddr);
        if height == 0 {
            return self.map_pages(t, start, end, spec, false);
        }
        let span = Geometry::span(height);
        let fresh_leaves = |h: usize| spec.fixed.is_none() && h > 0 && h <= spec.max_leaf;
        let mut added = 0;
        let mut at = start;
        if fresh {
            // A new table the range covers entirely, not initialised: the leading run of
            // leaves needs no check of its slots, and the slots after it are initialised
            // before anything else reads them (or the table is freed on failure).
            let (next, result) = self.map_leaf_run(t, height, at, end, spec, true);
            added += (next - at) >> Geometry::shift(height);
            let empty = empty_entry::<PTE>(height, self.table.invalid);
            let first = geo.index(next, height);
            for i in 0..(end - next) >> Geometry::shift(height) {
                // SAFETY: `t` is the new table at `height`; `first + i` is below its 512
                // entries, since `[next, end)` lies inside its span.
                unsafe { write(t, first + i, empty) };
            }
            if let Err(failure) = result {
                return (added, Err(failure));
            }
            at = next;
        }
        while at < end {
            if fresh_leaves(height) {
                // Whole free slots whose physical address is aligned: leaves in one loop.
                let (next, result) = self.map_leaf_run(t, height, at, end, spec, false);
                added += (next - at) >> Geometry::shift(height);
                if let Err(failure) = result {
                    return (added, Err(failure));
                }
                at = next;
                if at >= end {
                    break;
                }
            }
            let Some(Chunk {
                index,
                va,
                base,
                end: chunk_end,
                whole,
            }) = geo.chunks(height, at, end).next()
            else {
                break;
            };
            at = chunk_end;
            // SAFETY: `t` is a live table at `height`; `index` is within its entries.
            let pte = unsafe { read(t, index) };
            // Whether to put a leaf in this slot, and its physical address.
            let leaf_pa = match spec.fixed {
                Some(h) => (h == height).then(|| (spec.get_paddr)(self.canonical(va))),
                None if height == 0 => Some((spec.get_paddr)(self.canonical(va))),
                None if whole && height <= spec.max_leaf => {
                    let pa = (spec.get_paddr)(self.canonical(va));
                    (pa.as_usize() & (span - 1) == 0).then_some(pa)
                }
                None => None,
            };
            let failure = match (kind(&pte, height, self.table.invalid), leaf_pa) {
                (Kind::Empty, Some(pa)) => match Self::check_pa(pa, span) {
                    Ok(()) => {
                        let leaf = PTE::new_page(pa, spec.flags, true);
                        // SAFETY: as above.
                        unsafe { write(t, index, leaf) };
                        self.record(base, height);
                        added += 1;
                        continue;
                    }
                    Err(e) => (e, va),
                },
                // A table the range covers entirely is written without being initialised
                // first: a last-level one is filled, one that takes huge leaves has its slots
                // after the leading run of leaves initialised by `map_range`.
                (Kind::Empty, None) => match alloc_table::<M, PTE, H>(
                    if whole && (height == 1 || fresh_leaves(height - 1)) {
                        Init::Skip
                    } else {
                        init_for::<PTE>(height - 1, self.table.invalid)
                    },
                ) {
                    Ok(child) => match if whole && height == 1 {
                        self.map_pages(table_ptr::<PTE, H>(child), va, chunk_end, spec, true)
                    } else {
                        let fresh = whole && fresh_leaves(height - 1);
                        self.map_range(child, height - 1, va, chunk_end, spec, fresh)
                    } {
                        (used, Ok(())) => {
                            // The subtree is complete; publish it with one store.
                            let mut link = PTE::new_table(child);
                            link.set_table_count(used);
                            fence(Ordering::Release);
                            // SAFETY: as above.
                            unsafe { write(t, index, link) };
                            added += 1;
                            continue;
                        }
                        (_, Err((e, _))) => {
                            // Never published: no walker can have seen it.
                            free_tree::<PTE, H>(child, height - 1, self.table.invalid);
                            (e, va)
                        }
                    },
                    Err(e) => (e, va),
                },
                // Descend into an existing table, unless a leaf of a fixed size belongs here.
                (Kind::Table(child), _) if spec.fixed.is_none() || leaf_pa.is_none() => {
                    // SAFETY: as above.
                    let link = unsafe { t.add(index) };
                    let (used, result) =
                        self.map_range(child, height - 1, va, chunk_end, spec, false);
                    Self::adjust_count(link, used as isize);
                    match result {
                        Ok(()) => continue,
                        Err(failure) => failure,
                    }
                }
                (Kind::Table(_), _) | (Kind::Leaf, Some(_)) => (PagingError::AlreadyMapped, va),
                (Kind::Leaf, None) => (PagingError::MappedToHugePage, va),
            };
            return (added, Err(failure));
        }
        (added, Ok(()))
    }

    /// `map_range`'s loop for leaves above the last level: from `at` (if aligned to the
    /// span of an entry at `height`), fills whole free slots of the table `t` whose physical
    /// address is aligned, with one entry template and one recorded range. Returns where it
    /// stopped (at the first slot that needs the general path, or `end`), and a failure if
    /// a physical address is out of range.
    /// `fresh`: the table is new and not initialised, so its slots are known to be free.
    #[inline]
    fn map_leaf_run<F: Fn(usize) -> PhysAddr>(
        &mut self,
        t: *mut PTE,
        height: usize,
        at: usize,
        end: usize,
        spec: &MapSpec<F>,
        fresh: bool,
    ) -> (usize, Result<(), MapFailure>) {
        let span = Geometry::span(height);
        if at & (span - 1) != 0 {
            return (at, Ok(()));
        }
        let template = PTE::new_page(PhysAddr::from_usize(0), spec.flags, true);
        let invalid = self.table.invalid;
        let mut va = at;
        let mut result = Ok(());
        while end - va >= span {
            let index = Self::GEO.index(va, height);
            // SAFETY: `t` is a live table at `height`; `index` is within its entries.
            if !fresh && kind(&unsafe { read(t, index) }, height, invalid) != Kind::Empty {
                break;
            }
            let pa = (spec.get_paddr)(self.canonical(va));
            if pa.as_usize() & (span - 1) != 0 {
                break;
            }
            if !Self::aligned_pa_addressable(pa.as_usize(), span) {
                result = Err((PagingError::InvalidPhysAddr, va));
                break;
            }
            let mut leaf = template;
            leaf.set_paddr(pa);
            // SAFETY: as above.
            unsafe { write(t, index, leaf) };
            va += span;
        }
        if va > at {
            let first = self.canonical(at);
            self.pending.record_pages(
                first,
                (va - at) >> Geometry::shift(height),
                Geometry::shift(height) as u32,
            );
        }
        (va, result)
    }

    /// `map_range` at the last level: fills consecutive 4 KiB slots of the table `t` in one
    /// loop, with one entry template and one recorded range.
    /// `fresh`: the table is new and not zeroed, so its slots are known to be free.
    fn map_pages<F: Fn(usize) -> PhysAddr>(
        &mut self,
        t: *mut PTE,
        start: usize,
        end: usize,
        spec: &MapSpec<F>,
        fresh: bool,
    ) -> (usize, Result<(), MapFailure>) {
        if fresh {
            return self.fill_pages(t, start, end, spec);
        }
        let first = Self::GEO.index(start, 0);
        let count = (end - start) >> Geometry::shift(0);
        let template = PTE::new_page(PhysAddr::from_usize(0), spec.flags, false);
        let mut done = 0;
        let mut result = Ok(());
        while done < count {
            let va = start + (done << Geometry::shift(0));
            // SAFETY: `t` is a live last-level table; `first + done` is below 512 because
            // `[start, end)` lies inside the table's span.
            if !fresh && !unsafe { read(t, first + done) }.is_unused() {
                result = Err((PagingError::AlreadyMapped, va));
                break;
            }
            let pa = (spec.get_paddr)(self.canonical(va));
            if let Err(e) = Self::check_pa(pa, Geometry::span(0)) {
                result = Err((e, va));
                break;
            }
            let mut pte = template;
            pte.set_paddr(pa);
            // SAFETY: as above.
            unsafe { write(t, first + done, pte) };
            done += 1;
        }
        if done > 0 {
            let va = self.canonical(start);
            self.pending
                .record_pages(va, done, Geometry::shift(0) as u32);
        }
        (done, result)
    }

    /// [`map_pages`](Self::map_pages) into a new last-level table that no walker can reach
    /// yet: the slots need no check, and the physical addresses are checked without a
    /// branch per page (a bad one is looked for after the loop), so the loop is a few
    /// instructions per entry. On failure the caller frees the table, so the slots written
    /// past the bad address do not matter.
    fn fill_pages<F: Fn(usize) -> PhysAddr>(
        &mut self,
        t: *mut PTE,
        start: usize,
        end: usize,
        spec: &MapSpec<F>,
    ) -> (usize, Result<(), MapFailure>) {
        let first = Self::GEO.index(start, 0);
        let count = (end - start) >> Geometry::shift(0);
        let template = PTE::new_page(PhysAddr::from_usize(0), spec.flags, false);
        let high = self.high;
        let page = Geometry::span(0);
        // Every address ORed together: alignment is checked once, after the loop, and the
        // rest as if every address were aligned (a misaligned one fails anyway).
        let mut bits = 0;
        let mut valid = true;
        for k in 0..count {
            let pa = (spec.get_paddr)((start + k * page) | high).as_usize();
            bits |= pa;
            valid &= Self::aligned_pa_addressable(pa, page);
            let mut pte = template;
            pte.set_paddr(PhysAddr::from_usize(pa));
            // SAFETY: `t` is a new, unpublished last-level table this cursor owns, and
            // `first + k` is below its 512 entries since `[start, end)` lies inside its
            // span.
            unsafe { write(t, first + k, pte) };
        }
        if !valid || bits & (page - 1) != 0 {
            // The first bad address, and the error `map_pages` would give.
            for k in 0..count {
                let va = start + k * page;
                if let Err(e) = Self::check_pa((spec.get_paddr)(va | high), page) {
                    return (k, Err((e, va)));
                }
            }
        }
        self.pending
            .record_pages(start | high, count, Geometry::shift(0) as u32);
        (count, Ok(()))
    }

    /// Removes every leaf in `[start, end)` inside the table at `paddr` (height `height`).
    /// Returns how many of this table's entries became unused.
    fn unmap_range(
        &mut self,
        paddr: PhysAddr,
        height: usize,
        start: usize,
        end: usize,
        reserve: &mut Reserve,
    ) -> usize {
        let geo = Self::GEO;
        let t = table_ptr::<PTE, H>(paddr);
        let mut cleared = 0;
        for Chunk {
            index,
            va,
            base,
            end: chunk_end,
            whole,
        } in geo.chunks(height, start, end)
        {
            // SAFETY: `t` is a live table at `height`; `index` is within its entries.
            let pte = unsafe { read(t, index) };
            // SAFETY: as above.
            let link = unsafe { t.add(index) };
            match kind(&pte, height, self.table.invalid) {
                Kind::Empty => {}
                Kind::Leaf if whole => {
                    self.clear_entry(t, index, height);
                    if pte.is_present() {
                        self.record(base, height);
                    }
                    cleared += 1;
                }
                Kind::Leaf => {
                    // The rest of the huge page stays mapped, so the child is not empty.
                    if let Some(child) = self.split(t, index, height, base, reserve) {
                        let gone = self.unmap_range(child, height - 1, va, chunk_end, reserve);
                        Self::adjust_count(link, -(gone as isize));
                    }
                }
                Kind::Table(child) if whole && !self.keeps_table(height, index) => {
                    self.clear_entry(t, index, height);
                    self.defer_subtree(child, height - 1, base);
                    cleared += 1;
                }
                Kind::Table(child) => {
                    let gone = self.unmap_range(child, height - 1, va, chunk_end, reserve);
                    let near = geo.index(va, height - 1);
                    let c = table_ptr::<PTE, H>(child);
                    if gone > 0
                        && self.emptied(link, c, height - 1, gone, near)
                        && !self.keeps_table(height, index)
                    {
                        self.clear_entry(t, index, height);
                        self.defer_table(child, base, height);
                        cleared += 1;
                    }
                }
            }
        }
        cleared
    }

    /// Sets `flags` on every present leaf in `[start, end)` inside the table at `paddr`.
    fn protect_range(
        &mut self,
        paddr: PhysAddr,
        height: usize,
        start: usize,
        end: usize,
        flags: MappingFlags,
        reserve: &mut Reserve,
    ) {
        let geo = Self::GEO;
        let t = table_ptr::<PTE, H>(paddr);
        if height == 0 {
            // The last level: one loop over the slots, one recorded range per run of
            // changed pages.
            let first = geo.index(start, 0);
            let count = (end - start) >> Geometry::shift(0);
            let mut run = 0;
            for k in 0..count {
                // SAFETY: `t` is a live last-level table and `[start, end)` lies inside its
                // span, so `first + k` is below 512.
                let mut pte = unsafe { read(t, first + k) };
                if pte.is_present() {
                    pte.set_flags(flags, false);
                    // SAFETY: as above.
                    unsafe { write(t, first + k, pte) };
                    run += 1;
                } else if run > 0 {
                    self.record_pages(start + ((k - run) << Geometry::shift(0)), run);
                    run = 0;
                }
            }
            if run > 0 {
                self.record_pages(start + ((count - run) << Geometry::shift(0)), run);
            }
            return;
        }
        for Chunk {
            index,
            va,
            base,
            end: chunk_end,
            whole,
        } in geo.chunks(height, start, end)
        {
            // SAFETY: `t` is a live table at `height`; `index` is within its entries.
            let mut pte = unsafe { read(t, index) };
            match kind(&pte, height, self.table.invalid) {
                Kind::Empty => {}
                Kind::Leaf if !pte.is_present() => {}
                Kind::Leaf if whole => {
                    pte.set_flags(flags, height > 0);
                    // SAFETY: as above.
                    unsafe { write(t, index, pte) };
                    self.record(base, height);
                }
                Kind::Leaf => {
                    if let Some(child) = self.split(t, index, height, base, reserve) {
                        self.protect_range(child, height - 1, va, chunk_end, flags, reserve);
                    }
                }
                Kind::Table(child) => {
                    self.protect_range(child, height - 1, va, chunk_end, flags, reserve)
                }
            }
        }
    }

    /// Replaces the leaf at `t[index]` (height `height > 0`, covering `base`) with a table of
    /// 512 leaves of the next smaller size that translate every byte exactly as before.
    /// Returns the new table, or `None` if no frame was reserved for it.
    fn split(
        &mut self,
        t: *mut PTE,
        index: usize,
        height: usize,
        base: usize,
        reserve: &mut Reserve,
    ) -> Option<PhysAddr> {
        let child = reserve.take();
        debug_assert!(child.is_some(), "split frames are reserved beforehand");
        let child = child?;
        // SAFETY: `t[index]` is a leaf of this table.
        let old = unsafe { read(t, index) };
        let flags = old.flags();
        let step = Geometry::span(height - 1);
        let c = table_ptr::<PTE, H>(child);
        for i in 0..ENTRIES {
            // Flags first: they decide how the address field is read (an x86 huge leaf
            // keeps its PAT bit where a 4 KiB page has address bit 12).
            let mut pte = old;
            pte.set_flags(flags, height - 1 > 0);
            pte.set_paddr(old.paddr() + i * step);
            // SAFETY: `c` is a reserved, unlinked frame of 512 entries.
            unsafe { write(c, i, pte) };
        }
        fence(Ordering::Release);
        if M::BREAK_BEFORE_MAKE && old.is_present() {
            self.break_entry(t, index, height, base);
        }
        let mut link = PTE::new_table(child);
        link.set_table_count(ENTRIES);
        // SAFETY: as above.
        unsafe { write(t, index, link) };
        Some(child)
    }

    /// Break-before-make: invalidates `t[index]` and completes the TLB invalidation of its
    /// address before the caller writes the new entry.
    fn break_entry(&mut self, t: *mut PTE, index: usize, height: usize, base: usize) {
        self.clear_entry(t, index, height);
        M::flush_tlb(Some(M::VirtAddr::from(self.canonical(base))));
    }

    /// Empties `t[index]`, an entry at `height`.
    #[inline]
    fn clear_entry(&mut self, t: *mut PTE, index: usize, height: usize) {
        // SAFETY: `t[index]` is an entry of this table.
        unsafe { write(t, index, empty_entry::<PTE>(height, self.table.invalid)) };
    }

    /// Queues an unlinked table for freeing after the next flush, and makes sure the flush
    /// drops cached copies of the entry that linked it (the entry at `link_height` covering
    /// `base`): an invalidation inside its span where that is enough, otherwise a full one.
    /// Flushes at once when the queue is full.
    fn defer_table(&mut self, table: PhysAddr, base: usize, link_height: usize) {
        if self.queue_free(table, base, link_height) {
            self.flush();
        }
    }

    /// [`defer_table`](Self::defer_table) without the flush: returns whether the queue of
    /// deferred frees is full (the caller must flush before deferring another).
    #[inline]
    fn queue_free(&mut self, table: PhysAddr, base: usize, link_height: usize) -> bool {
        debug_assert!(
            self.cache.delta == 0,
            "a count update left in the path cache"
        );
        self.cache.key = NO_KEY;
        if M::FLUSH_BY_VA_COVERS_TABLES {
            let va = self.canonical(base);
            self.pending
                .record_table(va, Geometry::shift(link_height) as u32);
        }
        self.pending.defer_free(table)
    }

    /// Records the invalidation of every present leaf of an unlinked subtree and queues all
    /// its tables for freeing after the next flush.
    fn defer_subtree(&mut self, table: PhysAddr, height: usize, base: usize) {
        let t = table_ptr::<PTE, H>(table);
        let span = Geometry::span(height);
        if height == 0 {
            // Only leaves: one recorded range per run of present pages.
            let mut run = 0;
            for index in 0..ENTRIES {
                // SAFETY: `t` is an unlinked, still intact last-level table.
                if unsafe { read(t, index) }.is_present() {
                    run += 1;
                } else if run > 0 {
                    self.record_pages(base + (index - run) * span, run);
                    run = 0;
                }
            }
            if run > 0 {
                self.record_pages(base + (ENTRIES - run) * span, run);
            }
            return self.defer_table(table, base, 1);
        }
        for index in 0..ENTRIES {
            // SAFETY: `t` is an unlinked, still intact table at `height`.
            let pte = unsafe { read(t, index) };
            let va = base + index * span;
            match kind(&pte, height, self.table.invalid) {
                Kind::Empty => {}
                Kind::Leaf => {
                    if pte.is_present() {
                        self.record(va, height);
                    }
                }
                Kind::Table(child) => self.defer_subtree(child, height - 1, va),
            }
        }
        // Every entry has been read: the table may be freed from now on.
        self.defer_table(table, base, height + 1);
    }

    /// Whether the table linked by entry `index` of the table at `height` must stay linked
    /// even when empty: the top table of a subtree lent with `copy_from`.
    #[inline(always)]
    fn keeps_table(&self, height: usize, index: usize) -> bool {
        #[cfg(feature = "copy-from")]
        {
            height == Self::GEO.root_height() && self.table.lent.get(index)
        }
        #[cfg(not(feature = "copy-from"))]
        {
            let _ = (height, index);
            false
        }
    }

    /// After single-page `unmap` cleared entry `index` of the table `f` below the root,
    /// for the canonical address `va`. `cached`: `f` is the path cache's last-level table,
    /// reached by the fast path, whose count change accumulates in the cache; otherwise the
    /// slow path reached `f` from the root, and its count is updated now. Formats without
    /// counts scan the table. A table left empty is reclaimed.
    #[inline(always)]
    fn note_cleared(&mut self, f: &Found<PTE>, index: usize, va: usize, cached: bool) {
        let mask = Self::GEO.va_mask();
        let tva = va & mask;
        if !PTE::COUNTS_TABLE_ENTRIES || f.link.is_null() {
            if self.emptied(f.link, f.ptr, f.height, 1, index) {
                self.high = va & !mask;
                self.reclaim_path(tva, f.height);
            }
        } else if cached {
            self.cache.delta -= 1;
        } else if Self::adjust_count(f.link, -1) == Some(0) {
            self.unlink_empty(f.table, f.height, f.link, f.plink, tva);
        }
    }

    /// Applies the path cache's count change to the entry linking its table, and reclaims
    /// the table if that leaves it empty. Runs first in every call that may move the cache,
    /// read counts or unlink tables, and before every flush, so no other code sees a
    /// stale count.
    #[inline(always)]
    fn settle(&mut self) {
        if PTE::COUNTS_TABLE_ENTRIES && self.cache.delta != 0 {
            self.settle_slow();
        }
    }

    #[inline(never)]
    fn settle_slow(&mut self) {
        let c = self.cache;
        self.cache.delta = 0;
        // A count change is only made through a valid cache, which holds a linked table
        // below the root (`link` is not null).
        if Self::adjust_count(c.link, c.delta) == Some(0) {
            // The first address of the table's span, in the form it was reached in (the
            // invalidations use that form).
            let height = c.key & 7;
            let base = (c.key >> 3) << Geometry::shift(height + 1);
            let mask = Self::GEO.va_mask();
            self.high = base & !mask;
            self.reclaim_path(base & mask, height);
        }
    }

    /// The slow path of single-page `unmap` cleared a leaf of the last-level table `f`,
    /// reached from the root: decrements the table's count and, if that empties it,
    /// unlinks it and queues it for freeing after the flush; otherwise keeps it in the path
    /// cache for the next call.
    ///
    /// Unlinking here has less to do than [`unlink_empty`](Self::unlink_empty): when the
    /// leaf was present, its recorded invalidation lies in the table's span, which is all a
    /// per-address flush needs to drop the cached link, and the path cache, which missed,
    /// cannot hold the table. (A branch-free form, which rewrote the link, the free queue
    /// and the parent's count whether or not the table emptied, ran slower on random
    /// unmaps: the extra stores cost more than the mispredictions they avoid.)
    #[inline(always)]
    fn count_unmapped(&mut self, f: &Found<PTE>, va: usize, present: bool) {
        // SAFETY: `f.link` is the live entry linking `f.table`.
        let mut link = unsafe { read(f.link, 0) };
        if link.add_table_count(-1) != 0 {
            // SAFETY: as above.
            unsafe { write(f.link, 0, link) };
            return self.remember_canonical(va, f);
        }
        let mask = Self::GEO.va_mask();
        let tva = va & mask;
        if !present || self.keeps_table(1, Self::GEO.index(tva, 1)) {
            // SAFETY: as above.
            unsafe { write(f.link, 0, link) };
            self.high = va & !mask;
            return self.unlink_empty(f.table, 0, f.link, f.plink, tva);
        }
        // One store: the link goes straight from its last count to empty.
        // SAFETY: as above.
        unsafe { write(f.link, 0, empty_entry::<PTE>(1, self.table.invalid)) };
        if self.pending.defer_free(f.table) {
            self.flush();
        }
        // `f.plink` lies in a table that is still linked (or is null for the root).
        if Self::adjust_count(f.plink, -1) == Some(0) {
            self.high = va & !mask;
            self.reclaim_path(tva, 1);
        }
    }

    /// The table at `table`, at `height` on the path of `tva` below the root, linked by the
    /// entry `link` that the entry `plink` links in turn (null when `link` lies in the
    /// root), has no used entry left (its count says so): unlinks it, unless it tops a
    /// subtree lent with `copy_from`, queues it for freeing after the flush, and reclaims
    /// the ancestors that this leaves empty. Arguments by value: a reference would make
    /// every caller store them, taken or not.
    #[inline(never)]
    fn unlink_empty(
        &mut self,
        table: PhysAddr,
        height: usize,
        link: *mut PTE,
        plink: *mut PTE,
        tva: usize,
    ) {
        let up = height + 1;
        if self.keeps_table(up, Self::GEO.index(tva, up)) {
            return;
        }
        // SAFETY: `link` is the live entry linking `table`.
        unsafe { write(link, 0, empty_entry::<PTE>(up, self.table.invalid)) };
        self.defer_table(table, tva & !(Geometry::span(up) - 1), up);
        // `plink` lies in a table that is still linked (or is null for the root).
        if Self::adjust_count(plink, -1) == Some(0) {
            self.reclaim_path(tva, up);
        }
    }

    /// After the table at `height` on the path of `tva` became empty: unlinks it, and every
    /// ancestor (below the root) that becomes empty in turn.
    fn reclaim_path(&mut self, tva: usize, height: usize) {
        let geo = Self::GEO;
        // path[h]: the table at height h on the path and the index of `tva` in it.
        let mut path = [(PhysAddr::from_usize(0), 0usize); MAX_LEVELS];
        let mut table = self.table.root_paddr();
        let mut h = geo.root_height();
        while h > height {
            let index = geo.index(tva, h);
            path[h] = (table, index);
            // SAFETY: `table` is a live table at `h` on the path of `tva`.
            let pte = unsafe { read(table_ptr::<PTE, H>(table), index) };
            let Some(next) = next_table(&pte, h, self.table.invalid) else {
                return;
            };
            table = next;
            h -= 1;
        }
        // `table` (height `h`) is empty.
        while h < geo.root_height() {
            let (parent, index) = path[h + 1];
            if self.keeps_table(h + 1, index) {
                return;
            }
            let p = table_ptr::<PTE, H>(parent);
            self.clear_entry(p, index, h + 1);
            self.defer_table(table, tva & !(Geometry::span(h + 1) - 1), h + 1);
            if h + 1 == geo.root_height() {
                return;
            }
            let (grand, gindex) = path[h + 2];
            // SAFETY: `grand[gindex]` is the entry that links `parent`.
            let plink = unsafe { table_ptr::<PTE, H>(grand).add(gindex) };
            if !self.emptied(plink, p, h + 1, 1, index) {
                return;
            }
            table = parent;
            h += 1;
        }
    }

    /// Reserves the frames that splitting the huge pages at the boundaries of
    /// `[start, end)` will take. `reservations`: whether non-present leaves count.
    fn reserve_splits(
        &mut self,
        start: usize,
        end: usize,
        reservations: bool,
    ) -> PagingResult<Reserve> {
        let geo = Self::GEO;
        let mut keys = [(0usize, 0usize); 2 * MAX_LEVELS];
        let mut n = 0;
        for boundary in [start, end] {
            if boundary >> geo.va_bits != 0 {
                continue;
            }
            let Ok((pte, leaf_h)) = self.leaf_of_tree(boundary) else {
                continue;
            };
            if !reservations && !pte.is_present() {
                continue;
            }
            for h in (1..=leaf_h).rev() {
                if boundary & (Geometry::span(h) - 1) == 0 {
                    break;
                }
                let key = (h, boundary >> Geometry::shift(h));
                if !keys[..n].contains(&key) {
                    keys[n] = key;
                    n += 1;
                }
            }
        }
        let mut reserve = Reserve::new();
        for _ in 0..n {
            match H::alloc_frame() {
                Some(frame) if check_table_frame::<M, PTE>(frame) => {
                    reserve.frames[reserve.len] = frame;
                    reserve.len += 1;
                }
                other => {
                    let err = match other {
                        Some(frame) => {
                            H::dealloc_frame(frame);
                            PagingError::BadFrame
                        }
                        None => PagingError::NoMemory,
                    };
                    reserve.release::<H>();
                    return Err(err);
                }
            }
        }
        Ok(reserve)
    }

    /// The leaf covering translated address `tva` and its height.
    fn leaf_of_tree(&self, tva: usize) -> PagingResult<(PTE, usize)> {
        let geo = Self::GEO;
        let mut t = table_ptr::<PTE, H>(self.table.root_paddr());
        let mut h = geo.root_height();
        loop {
            // SAFETY: `t` is a live table at `h`; the index is within its entries.
            let pte = unsafe { read(t, geo.index(tva, h)) };
            match kind(&pte, h, self.table.invalid) {
                Kind::Empty => return Err(PagingError::NotMapped),
                Kind::Leaf => return Ok((pte, h)),
                Kind::Table(next) => {
                    t = table_ptr::<PTE, H>(next);
                    h -= 1;
                }
            }
        }
    }
}

/// Whether every entry of a (non-root) table is unused, looking first at `index` and its
/// neighbours (next to an entry just cleared is where a live entry is most likely).
fn table_is_empty_near<PTE: GenericPTE>(
    t: *const PTE,
    index: usize,
    height: usize,
    invalid: PhysAddr,
) -> bool {
    let used = |i: usize| {
        // SAFETY: callers pass indices below the 512 entries of a non-root table.
        kind(&unsafe { read(t, i) }, height, invalid) != Kind::Empty
    };
    if used(index) {
        return false;
    }
    for d in 1..ENTRIES {
        let (up, down) = (index + d < ENTRIES, d <= index);
        if !up && !down {
            break;
        }
        if (up && used(index + d)) || (down && used(index - d)) {
            return false;
        }
    }
    true
}
