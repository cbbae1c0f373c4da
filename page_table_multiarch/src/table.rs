//! The page table: owns the root, answers queries, walks, and frees every table on drop.

use core::marker::PhantomData;
use core::ptr;

use memory_addr::PhysAddr;

use crate::geometry::{ENTRIES, Geometry};
use crate::{GenericPTE, MappingFlags, PageSize, PageTable64Cursor, PagingError, PagingHandler};
use crate::{PagingMetaData, PagingResult};

/// What an entry is, seen by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Nothing: the slot is free.
    Empty,
    /// A pointer to the next-level table.
    Table(PhysAddr),
    /// A page or block, present or a non-present reservation.
    Leaf,
}

/// Classifies an entry found at `height` (0 = last level). `invalid` is the page table's
/// invalid table (see [`GenericPTE::DIRECTORY_HAS_NO_VALID_BIT`]): a link to it is empty.
///
/// Relies on the [`GenericPTE`] contract: a zero entry is unused; above the last level a
/// leaf reports `is_huge()` whether present or not, and a table never does.
#[inline(always)]
pub(crate) fn kind<PTE: GenericPTE>(pte: &PTE, height: usize, invalid: PhysAddr) -> Kind {
    if pte.is_unused() {
        Kind::Empty
    } else if height == 0 || pte.is_huge() {
        Kind::Leaf
    } else {
        let next = pte.paddr();
        if PTE::DIRECTORY_HAS_NO_VALID_BIT && next == invalid {
            Kind::Empty
        } else {
            Kind::Table(next)
        }
    }
}

/// The table an entry at `height` links, if it links one: [`kind`]'s `Table` case, with
/// branches that compile to tighter code on hot paths than matching on the enum.
#[inline(always)]
pub(crate) fn next_table<PTE: GenericPTE>(
    pte: &PTE,
    height: usize,
    invalid: PhysAddr,
) -> Option<PhysAddr> {
    if pte.is_unused() || height == 0 || pte.is_huge() {
        return None;
    }
    let next = pte.paddr();
    if PTE::DIRECTORY_HAS_NO_VALID_BIT && next == invalid {
        None
    } else {
        Some(next)
    }
}

/// Whether an entry at `height` is a leaf (present or a reservation): [`kind`]'s `Leaf`
/// case.
#[inline(always)]
pub(crate) fn is_leaf<PTE: GenericPTE>(pte: &PTE, height: usize) -> bool {
    !pte.is_unused() && (height == 0 || pte.is_huge())
}

/// How a new table frame is initialised.
#[derive(Clone, Copy)]
pub(crate) enum Init<PTE> {
    /// Every entry empty (zero).
    Zero,
    /// Left as the allocator gave it: the caller writes every entry.
    Skip,
    /// Every entry set to this one (a link to the invalid table).
    Fill(PTE),
}

/// The value of an empty slot at `height`: zero, or a link to the invalid table above the
/// last level of a format whose walker has no valid bit there.
#[inline(always)]
pub(crate) fn empty_entry<PTE: GenericPTE>(height: usize, invalid: PhysAddr) -> PTE {
    let mut pte = PTE::new_table(invalid);
    if !(PTE::DIRECTORY_HAS_NO_VALID_BIT && height > 0) {
        pte.clear();
    }
    pte
}

/// How to initialise a new table at `height`.
#[inline(always)]
pub(crate) fn init_for<PTE: GenericPTE>(height: usize, invalid: PhysAddr) -> Init<PTE> {
    if PTE::DIRECTORY_HAS_NO_VALID_BIT && height > 0 {
        Init::Fill(empty_entry(height, invalid))
    } else {
        Init::Zero
    }
}

/// A pointer to the first entry of the table at `paddr`.
#[inline(always)]
pub(crate) fn table_ptr<PTE, H: PagingHandler>(paddr: PhysAddr) -> *mut PTE {
    H::phys_to_virt(paddr).as_mut_ptr() as *mut PTE
}

/// Reads entry `index` of a table.
///
/// # Safety
/// `table` must point to a live table with more than `index` entries.
#[inline(always)]
pub(crate) unsafe fn read<PTE: GenericPTE>(table: *const PTE, index: usize) -> PTE {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::read_volatile(table.add(index)) }
}

/// Writes entry `index` of a table with one store.
///
/// # Safety
/// `table` must point to a live table with more than `index` entries that this table owns.
#[inline(always)]
pub(crate) unsafe fn write<PTE: GenericPTE>(table: *mut PTE, index: usize, pte: PTE) {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::write_volatile(table.add(index), pte) }
}

/// A page table whose layout is given by the metadata `M`, whose entries have the format
/// `PTE`, and whose frames come from the handler `H`.
///
/// The table owns its root and every intermediate table; it never owns the frames its
/// leaves map. All mutation goes through a [`PageTable64Cursor`] (or the immediate methods
/// `map`, `unmap`, … that return flush tokens, built on the cursor).
pub struct PageTable64<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> {
    root_paddr: PhysAddr,
    /// The invalid table every empty slot above the last level links to, for formats whose
    /// walker has no valid bit there ([`GenericPTE::DIRECTORY_HAS_NO_VALID_BIT`]); 0
    /// otherwise.
    pub(crate) invalid: PhysAddr,
    #[cfg(feature = "copy-from")]
    pub(crate) borrowed: crate::cursor::Borrowed,
    #[cfg(feature = "copy-from")]
    pub(crate) lent: crate::cursor::Lent,
    _phantom: PhantomData<(M, PTE, H)>,
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> PageTable64<M, PTE, H> {
    /// The shape of this table, computed from `M`.
    pub const GEOMETRY: Geometry = Geometry::of::<M>();
    /// The frames every table holds, even with nothing mapped: the root, and the invalid
    /// table of formats whose walker has no valid bit above the last level.
    pub const BASE_FRAMES: usize =
        Self::GEOMETRY.root_frames + PTE::DIRECTORY_HAS_NO_VALID_BIT as usize;
    const ENTRY_SIZE_OK: () = assert!(core::mem::size_of::<PTE>() == 8, "entries must be 8 bytes");

    /// Allocates and zeroes an empty root table.
    ///
    /// # Errors
    /// [`PagingError::NoMemory`] when the handler has no frame, [`PagingError::BadFrame`] when
    /// it returns an unaligned or out-of-range frame (which is handed back).
    pub fn try_new() -> PagingResult<Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::ENTRY_SIZE_OK;
        // The invalid table links to itself at every level.
        let invalid = if PTE::DIRECTORY_HAS_NO_VALID_BIT {
            let frame = alloc_table::<M, PTE, H>(Init::Skip)?;
            let link = PTE::new_table(frame);
            let t = table_ptr::<PTE, H>(frame);
            for i in 0..ENTRIES {
                // SAFETY: `t` is the frame just allocated, of 512 entries.
                unsafe { write(t, i, link) };
            }
            frame
        } else {
            PhysAddr::from_usize(0)
        };
        let root_height = Self::GEOMETRY.root_height();
        let frames = Self::GEOMETRY.root_frames;
        let root = if frames == 1 {
            alloc_table::<M, PTE, H>(init_for::<PTE>(root_height, invalid))
        } else {
            // A multi-frame root is aligned to its size (RISC-V x4, AArch64 concatenated).
            let bytes = frames * 4096;
            match H::alloc_frames(frames, bytes) {
                None => Err(PagingError::NoMemory),
                Some(paddr) if !check_frame::<M, PTE>(paddr, bytes, bytes) => {
                    H::dealloc_frames(paddr, frames);
                    Err(PagingError::BadFrame)
                }
                Some(paddr) => {
                    let t = table_ptr::<PTE, H>(paddr);
                    let empty = empty_entry::<PTE>(root_height, invalid);
                    for i in 0..Self::GEOMETRY.root_entries {
                        // SAFETY: the handler gave us `frames` contiguous frames at `paddr`.
                        unsafe { write(t, i, empty) };
                    }
                    Ok(paddr)
                }
            }
        };
        let root_paddr = match root {
            Ok(root) => root,
            Err(e) => {
                if PTE::DIRECTORY_HAS_NO_VALID_BIT {
                    H::dealloc_frame(invalid);
                }
                return Err(e);
            }
        };
        Ok(Self {
            root_paddr,
            invalid,
            #[cfg(feature = "copy-from")]
            borrowed: Default::default(),
            #[cfg(feature = "copy-from")]
            lent: Default::default(),
            _phantom: PhantomData,
        })
    }

    /// The physical address of the root table: the value for CR3, TTBRn, satp, PGDL/PGDH.
    pub const fn root_paddr(&self) -> PhysAddr {
        self.root_paddr
    }

    /// The translation of `vaddr`: the physical address (with `vaddr`'s offset inside the
    /// page added), the flags and the size of the page that maps it.
    ///
    /// # Errors
    /// [`PagingError::InvalidVirtAddr`] if `vaddr` is not canonical for this table,
    /// [`PagingError::NotMapped`] if no present leaf maps it (a non-present reservation
    /// counts as not mapped).
    #[inline(always)]
    pub fn query(&self, vaddr: M::VirtAddr) -> PagingResult<(PhysAddr, MappingFlags, PageSize)> {
        let (pte, height) = self.leaf_of(vaddr.into())?;
        if !pte.is_present() {
            return Err(PagingError::NotMapped);
        }
        let size = Geometry::page_size(height).ok_or(PagingError::NotMapped)?;
        let offset = vaddr.into() & (Geometry::span(height) - 1);
        Ok((pte.paddr() + offset, pte.flags(), size))
    }

    /// The leaf entry covering `vaddr`, present or not, and its height.
    #[inline(always)]
    pub(crate) fn leaf_of(&self, vaddr: usize) -> PagingResult<(PTE, usize)> {
        if !M::vaddr_is_valid(vaddr) {
            return Err(PagingError::InvalidVirtAddr);
        }
        let geo = Self::GEOMETRY;
        let mut table = table_ptr::<PTE, H>(self.root_paddr);
        // A loop over constant bounds, which the compiler unrolls per level.
        for height in (0..geo.levels).rev() {
            // SAFETY: `table` is a live table of this page table at `height`, and the index
            // is within its entry count.
            let pte = unsafe { read(table, geo.index(vaddr, height)) };
            // `kind`, spelled out: branches on the entry give tighter code than the enum.
            if pte.is_unused() {
                return Err(PagingError::NotMapped);
            }
            if height == 0 || pte.is_huge() {
                return Ok((pte, height));
            }
            let next = pte.paddr();
            if PTE::DIRECTORY_HAS_NO_VALID_BIT && next == self.invalid {
                return Err(PagingError::NotMapped);
            }
            table = table_ptr::<PTE, H>(next);
        }
        // A table entry at height 0 is classified as a leaf, so the loop always returns.
        Err(PagingError::NotMapped)
    }

    /// Walks the table depth first, calling `pre_func` before and `post_func` after the
    /// subtree of every table entry and present leaf, with `(level, index, vaddr, entry)`.
    ///
    /// `level` 0 is the root. `vaddr` is the first address the entry covers, in canonical
    /// form ([`PagingMetaData::canonicalize`]). At most `limit` entries are visited in all.
    /// Non-present reservations are not visited.
    pub fn walk<F>(&self, limit: usize, pre_func: Option<&F>, post_func: Option<&F>)
    where
        F: Fn(usize, usize, M::VirtAddr, &PTE),
    {
        let mut budget = limit;
        self.walk_table(
            self.root_paddr,
            Self::GEOMETRY.root_height(),
            0,
            &mut budget,
            pre_func,
            post_func,
        );
    }

    fn walk_table<F>(
        &self,
        paddr: PhysAddr,
        height: usize,
        base: usize,
        budget: &mut usize,
        pre_func: Option<&F>,
        post_func: Option<&F>,
    ) where
        F: Fn(usize, usize, M::VirtAddr, &PTE),
    {
        let geo = Self::GEOMETRY;
        let table = table_ptr::<PTE, H>(paddr);
        let level = geo.root_height() - height;
        for index in 0..geo.entries(height) {
            if *budget == 0 {
                return;
            }
            // SAFETY: `table` is a live table at `height`; `index` is within its entries.
            let pte = unsafe { read(table, index) };
            let entry_kind = kind(&pte, height, self.invalid);
            if entry_kind == Kind::Empty || (entry_kind == Kind::Leaf && !pte.is_present()) {
                continue;
            }
            *budget -= 1;
            let va = base + (index << Geometry::shift(height));
            let vaddr = M::VirtAddr::from(M::canonicalize(va));
            if let Some(f) = pre_func {
                f(level, index, vaddr, &pte);
            }
            if let Kind::Table(next) = entry_kind {
                self.walk_table(next, height - 1, va, budget, pre_func, post_func);
            }
            if let Some(f) = post_func {
                f(level, index, vaddr, &pte);
            }
        }
    }

    /// The number of 4 KiB frames the table holds: the root (all its frames) and every
    /// intermediate table. Frames shared from another table with `copy_from` are not
    /// counted.
    pub fn table_frames(&self) -> usize {
        let geo = Self::GEOMETRY;
        let mut count = Self::BASE_FRAMES;
        let root = table_ptr::<PTE, H>(self.root_paddr);
        for index in 0..geo.root_entries {
            if self.is_borrowed(index) {
                continue;
            }
            // SAFETY: the root is live; `index` is within its entries.
            let pte = unsafe { read(root, index) };
            if let Kind::Table(next) = kind(&pte, geo.root_height(), self.invalid) {
                count += count_tables::<PTE, H>(next, geo.root_height() - 1, self.invalid);
            }
        }
        count
    }

    /// Starts a cursor: the one way to change the table. Invalidations it records run when
    /// it is flushed or dropped.
    pub fn cursor(&mut self) -> PageTable64Cursor<'_, M, PTE, H> {
        PageTable64Cursor::new(self, None)
    }

    /// Starts a cursor whose invalidations go to `invalidator` (ASID-scoped, broadcast or
    /// cross-CPU invalidation) instead of [`LocalFlush`](crate::LocalFlush).
    pub fn cursor_with<'a>(
        &'a mut self,
        invalidator: &'a mut dyn crate::TlbInvalidate<M>,
    ) -> PageTable64Cursor<'a, M, PTE, H> {
        PageTable64Cursor::new(self, Some(invalidator))
    }

    #[cfg(feature = "copy-from")]
    #[inline]
    pub(crate) fn is_borrowed(&self, index: usize) -> bool {
        self.borrowed.get(index)
    }

    #[cfg(not(feature = "copy-from"))]
    #[inline(always)]
    pub(crate) fn is_borrowed(&self, _index: usize) -> bool {
        false
    }

    #[cfg(feature = "copy-from")]
    #[inline]
    fn is_lent(&self, index: usize) -> bool {
        self.lent.get(index)
    }

    #[cfg(not(feature = "copy-from"))]
    #[inline(always)]
    fn is_lent(&self, _index: usize) -> bool {
        false
    }
}

/// Counts the table at `paddr` (height `height`) and every table below it.
fn count_tables<PTE: GenericPTE, H: PagingHandler>(
    paddr: PhysAddr,
    height: usize,
    invalid: PhysAddr,
) -> usize {
    let mut count = 1;
    if height > 0 {
        let table = table_ptr::<PTE, H>(paddr);
        for index in 0..ENTRIES {
            // SAFETY: `table` is a live non-root table (512 entries).
            let pte = unsafe { read(table, index) };
            if let Kind::Table(next) = kind(&pte, height, invalid) {
                count += count_tables::<PTE, H>(next, height - 1, invalid);
            }
        }
    }
    count
}

/// Frees the table at `paddr` (height `height`) and every table below it, immediately.
///
/// Only for tables no hardware walker can reach any more (never linked, or the whole page
/// table is being dropped).
pub(crate) fn free_tree<PTE: GenericPTE, H: PagingHandler>(
    paddr: PhysAddr,
    height: usize,
    invalid: PhysAddr,
) {
    if height > 0 {
        let table = table_ptr::<PTE, H>(paddr);
        for index in 0..ENTRIES {
            // SAFETY: `table` is a live non-root table (512 entries) owned by the caller.
            let pte = unsafe { read(table, index) };
            if let Kind::Table(next) = kind(&pte, height, invalid) {
                free_tree::<PTE, H>(next, height - 1, invalid);
            }
        }
    }
    H::dealloc_frame(paddr);
}

/// Whether `paddr..paddr + bytes` is an `align`-aligned frame range the format and metadata
/// can address.
#[inline]
pub(crate) fn check_frame<M: PagingMetaData, PTE: GenericPTE>(
    paddr: PhysAddr,
    bytes: usize,
    align: usize,
) -> bool {
    let start = paddr.as_usize();
    let Some(last) = start.checked_add(bytes - 1) else {
        return false;
    };
    start & (align - 1) == 0
        && M::paddr_is_valid(last)
        && (PTE::PA_BITS >= usize::BITS as usize || last >> PTE::PA_BITS == 0)
}

/// Whether `paddr` can hold a non-root table: an aligned, addressable frame that a table
/// entry can point to (on LoongArch a pointer to physical page 0 would read as unused).
#[inline]
pub(crate) fn check_table_frame<M: PagingMetaData, PTE: GenericPTE>(paddr: PhysAddr) -> bool {
    check_frame::<M, PTE>(paddr, 4096, 4096) && !PTE::new_table(paddr).is_unused()
}

/// Allocates one 4 KiB table frame, initialised as `init` says.
#[inline(always)]
pub(crate) fn alloc_table<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler>(
    init: Init<PTE>,
) -> PagingResult<PhysAddr> {
    let paddr = H::alloc_frame().ok_or(PagingError::NoMemory)?;
    if !check_table_frame::<M, PTE>(paddr) {
        H::dealloc_frame(paddr);
        return Err(PagingError::BadFrame);
    }
    match init {
        // SAFETY: the handler gave us this 4 KiB frame; nothing else references it.
        Init::Zero => unsafe { ptr::write_bytes(H::phys_to_virt(paddr).as_mut_ptr(), 0, 4096) },
        Init::Skip => {}
        Init::Fill(pte) => {
            let t = table_ptr::<PTE, H>(paddr);
            for i in 0..ENTRIES {
                // SAFETY: as above; the frame holds 512 entries.
                unsafe { write(t, i, pte) };
            }
        }
    }
    Ok(paddr)
}

impl<M: PagingMetaData, PTE: GenericPTE, H: PagingHandler> Drop for PageTable64<M, PTE, H> {
    /// Frees every intermediate table and the root. Leaf frames belong to the caller and are
    /// not touched; subtrees borrowed from or lent to another table with `copy_from` are not
    /// freed (see its ownership rules).
    ///
    /// The table must not be active on any CPU when it is dropped.
    fn drop(&mut self) {
        let geo = Self::GEOMETRY;
        let root = table_ptr::<PTE, H>(self.root_paddr);
        for index in 0..geo.root_entries {
            if self.is_borrowed(index) || self.is_lent(index) {
                continue;
            }
            // SAFETY: the root is live; `index` is within its entries.
            let pte = unsafe { read(root, index) };
            if let Kind::Table(next) = kind(&pte, geo.root_height(), self.invalid) {
                free_tree::<PTE, H>(next, geo.root_height() - 1, self.invalid);
            }
        }
        if PTE::DIRECTORY_HAS_NO_VALID_BIT {
            H::dealloc_frame(self.invalid);
        }
        if geo.root_frames == 1 {
            H::dealloc_frame(self.root_paddr);
        } else {
            H::dealloc_frames(self.root_paddr, geo.root_frames);
        }
    }
}
