//! The shape of a page table, computed from [`PagingMetaData`] as data.
//!
//! Heights count from the leaves: height 0 holds 4 KiB pages, height 1 holds 2 MiB entries,
//! height 2 holds 1 GiB entries, and the root sits at height `levels - 1`. Every table below
//! the root has 512 entries; the root has as many entries as the remaining address bits
//! index (512 for the usual formats, 2048 for a RISC-V x4 stage-2 root), and may span
//! several frames.

use crate::{PageSize, PagingMetaData};

/// log2 of the smallest page.
pub(crate) const PAGE_SHIFT: usize = 12;
/// Index bits of every non-root table.
pub(crate) const INDEX_BITS: usize = 9;
/// Entries of every non-root table.
pub(crate) const ENTRIES: usize = 1 << INDEX_BITS;
/// The deepest supported level count.
pub(crate) const MAX_LEVELS: usize = 5;

/// The shape of a page table format: level count, root size and leaf sizes.
///
/// Obtained with [`Geometry::of`]; every field follows from the [`PagingMetaData`]
/// constants, so no engine code depends on a level count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Number of levels (3, 4 or 5).
    pub levels: usize,
    /// Number of translated address bits.
    pub va_bits: usize,
    /// Index bits of the root table.
    pub root_index_bits: usize,
    /// Entries of the root table.
    pub root_entries: usize,
    /// 4 KiB frames the root table occupies.
    pub root_frames: usize,
    /// The greatest height that may hold a leaf (0 = 4 KiB only, 1 = up to 2 MiB,
    /// 2 = up to 1 GiB).
    pub max_leaf_height: usize,
}

impl Geometry {
    /// The geometry described by the metadata `M`.
    ///
    /// Evaluated at compile time; an inconsistent metadata type (fewer than 2 or more than
    /// 5 levels, or a root with fewer than 1 or more than 16 index bits) fails to compile
    /// when a table of it is used.
    pub const fn of<M: PagingMetaData>() -> Self {
        let levels = M::LEVELS;
        assert!(
            levels >= 2 && levels <= MAX_LEVELS,
            "unsupported level count"
        );
        let below_root = PAGE_SHIFT + INDEX_BITS * (levels - 1);
        assert!(
            M::VA_MAX_BITS > below_root,
            "VA_MAX_BITS too small for LEVELS"
        );
        let root_index_bits = M::VA_MAX_BITS - below_root;
        assert!(root_index_bits <= 16, "root table too large");
        let root_entries = 1 << root_index_bits;
        let root_bytes = root_entries * 8;
        let root_frames = if root_bytes <= 4096 {
            1
        } else {
            root_bytes / 4096
        };
        let mut max_leaf_height = match M::MAX_PAGE_SIZE {
            PageSize::Size4K | PageSize::Size1M => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        };
        if max_leaf_height > levels - 1 {
            max_leaf_height = levels - 1;
        }
        Self {
            levels,
            va_bits: M::VA_MAX_BITS,
            root_index_bits,
            root_entries,
            root_frames,
            max_leaf_height,
        }
    }

    /// The root's height.
    #[inline(always)]
    pub const fn root_height(&self) -> usize {
        self.levels - 1
    }

    /// log2 of the span of one entry at `height`.
    #[inline(always)]
    pub const fn shift(height: usize) -> usize {
        PAGE_SHIFT + INDEX_BITS * height
    }

    /// The span in bytes of one entry at `height`.
    #[inline(always)]
    pub const fn span(height: usize) -> usize {
        1 << Self::shift(height)
    }

    /// The number of entries of the table at `height`.
    #[inline(always)]
    pub const fn entries(&self, height: usize) -> usize {
        if height == self.levels - 1 {
            self.root_entries
        } else {
            ENTRIES
        }
    }

    /// The index of `va` in the table at `height`.
    #[inline(always)]
    pub const fn index(&self, va: usize, height: usize) -> usize {
        (va >> Self::shift(height)) & (self.entries(height) - 1)
    }

    /// The mask of the translated address bits.
    #[inline(always)]
    pub const fn va_mask(&self) -> usize {
        if self.va_bits >= usize::BITS as usize {
            usize::MAX
        } else {
            (1 << self.va_bits) - 1
        }
    }

    /// The height at which a leaf of `size` lives, if this geometry can hold it.
    #[inline]
    pub const fn leaf_height(&self, size: PageSize) -> Option<usize> {
        let h = match size {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
            PageSize::Size1M => return None,
        };
        if h <= self.max_leaf_height {
            Some(h)
        } else {
            None
        }
    }

    /// The page size of a leaf at `height`.
    #[inline]
    pub const fn page_size(height: usize) -> Option<PageSize> {
        match height {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size2M),
            2 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// The part of a range that one entry of a table covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    /// The entry's index in its table.
    pub index: usize,
    /// The first address of the range inside the entry.
    pub va: usize,
    /// The first address the entry covers.
    pub base: usize,
    /// The end of the range inside the entry.
    pub end: usize,
    /// Whether the range covers the whole entry.
    pub whole: bool,
}

/// The entries of the table at one height that a range `[va, end)` touches, in order.
pub(crate) struct Chunks {
    geo: Geometry,
    height: usize,
    va: usize,
    end: usize,
}

impl Iterator for Chunks {
    type Item = Chunk;

    #[inline(always)]
    fn next(&mut self) -> Option<Chunk> {
        if self.va >= self.end {
            return None;
        }
        let span = Geometry::span(self.height);
        let base = self.va & !(span - 1);
        let end = core::cmp::min(base + span, self.end);
        let chunk = Chunk {
            index: self.geo.index(self.va, self.height),
            va: self.va,
            base,
            end,
            whole: self.va == base && end == base + span,
        };
        self.va = end;
        Some(chunk)
    }
}

impl Geometry {
    /// The entries at `height` that `[start, end)` (translated addresses) touches.
    #[inline(always)]
    pub(crate) const fn chunks(&self, height: usize, start: usize, end: usize) -> Chunks {
        Chunks {
            geo: *self,
            height,
            va: start,
            end,
        }
    }
}
