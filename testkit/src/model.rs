//! A reference model of the mappings of one address space, independent of any page table.
//!
//! A [`Model`] holds leaves (`va → pa` over `size` bytes with [`MappingFlags`]) and applies
//! the library's documented semantics to them:
//!
//! * [`map`](Model::map) fails if the new leaf overlaps any existing one;
//! * the `*_leaf` operations act on the whole leaf covering an address;
//! * the `*_range` operations act on every leaf inside the range; a leaf only partly inside is
//!   first **split**: replaced by leaves of the next smaller size of the model's size list
//!   (same flags, physical addresses following on), recursively, until the range boundary is a
//!   leaf boundary. Holes are skipped.
//! * A leaf whose flags have no access permission (`READ`, `WRITE`, `EXECUTE`) is
//!   *non-accessible* (a reservation): [`query`](Model::query) ignores it,
//!   [`protect_leaf`](Model::protect_leaf) and [`protect_range`](Model::protect_range) skip it
//!   (and `protect_range` does not split it), while unmap and remap act on it.
//!
//! Addresses are `u64` and may be sign-extended (upper half); a leaf may end at the very top
//! of the address space. Inputs that the library would reject (a size not in the list, an
//! unaligned address or length, an empty or overflowing range) are bugs in the test and
//! panic here.

use std::collections::{BTreeMap, BTreeSet};

use page_table_multiarch::MappingFlags;

/// One mapping of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leaf {
    /// First virtual address.
    pub va: u64,
    /// First physical address.
    pub pa: u64,
    /// Size in bytes (one of the model's sizes).
    pub size: u64,
    /// The flags of the mapping.
    pub flags: MappingFlags,
}

impl Leaf {
    /// The last virtual address of the leaf (inclusive).
    pub fn last(&self) -> u64 {
        self.va + (self.size - 1)
    }

    /// Whether `va` lies in the leaf.
    pub fn contains(&self, va: u64) -> bool {
        va >= self.va && va <= self.last()
    }

    /// Whether the leaf is accessible (has `READ`, `WRITE` or `EXECUTE`).
    pub fn is_accessible(&self) -> bool {
        self.flags.intersects(MappingFlags::ACCESS)
    }
}

/// [`Model::map`] failed: the new leaf overlaps `existing`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conflict {
    /// One existing leaf the new one overlaps.
    pub existing: Leaf,
}

/// The reference model. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Model {
    sizes: Vec<u64>,
    leaves: BTreeMap<u64, Leaf>,
}

impl Model {
    /// An empty model whose leaves may have the given sizes (powers of two of at least
    /// 4 KiB, in any order), e.g. `[0x1000, 0x20_0000, 0x4000_0000]`.
    pub fn new(sizes: &[u64]) -> Self {
        let mut sizes = sizes.to_vec();
        sizes.sort_unstable();
        sizes.dedup();
        assert!(!sizes.is_empty(), "a model needs at least one leaf size");
        for &s in &sizes {
            assert!(s.is_power_of_two() && s >= 0x1000, "bad leaf size {s:#x}");
        }
        Self {
            sizes,
            leaves: BTreeMap::new(),
        }
    }

    /// The leaf sizes, ascending.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// The leaves in address order.
    pub fn leaves(&self) -> impl Iterator<Item = &Leaf> {
        self.leaves.values()
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the model has no leaf.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Removes every leaf.
    pub fn clear(&mut self) {
        self.leaves.clear();
    }

    fn smaller(&self, size: u64) -> Option<u64> {
        self.sizes.iter().rev().copied().find(|&s| s < size)
    }

    /// The leaf containing `va`, if any.
    pub fn leaf_at(&self, va: u64) -> Option<&Leaf> {
        self.leaves
            .range(..=va)
            .next_back()
            .map(|(_, l)| l)
            .filter(|l| l.contains(va))
    }

    /// The leaves overlapping `[va, va + len)`, in address order.
    pub fn overlapping(&self, va: u64, len: u64) -> impl Iterator<Item = &Leaf> {
        let last = range_last(va, len);
        let first = self.leaf_at(va).map_or(va, |l| l.va);
        self.leaves.range(first..=last).map(|(_, l)| l)
    }

    /// What the MMU should do at `va`: `(pa, flags, leaf size)` for an accessible leaf, where
    /// `pa` includes the offset of `va` in the leaf; `None` for a hole or a non-accessible
    /// leaf.
    pub fn query(&self, va: u64) -> Option<(u64, MappingFlags, u64)> {
        self.leaf_at(va)
            .filter(|l| l.is_accessible())
            .map(|l| (l.pa + (va - l.va), l.flags, l.size))
    }

    /// Adds a leaf.
    ///
    /// # Errors
    ///
    /// [`Conflict`] if it overlaps an existing leaf (the model is then unchanged).
    ///
    /// # Panics
    ///
    /// If `size` is not one of the model's sizes or `va`/`pa` is not aligned to it.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        size: u64,
        flags: MappingFlags,
    ) -> Result<(), Conflict> {
        assert!(
            self.sizes.contains(&size),
            "size {size:#x} is not a leaf size of the model"
        );
        assert!(
            va % size == 0 && pa % size == 0,
            "map({va:#x}, {pa:#x}, {size:#x}): not aligned to the size"
        );
        let leaf = Leaf {
            va,
            pa,
            size,
            flags,
        };
        if let Some((_, existing)) = self.leaves.range(..=leaf.last()).next_back() {
            if existing.last() >= va {
                return Err(Conflict {
                    existing: *existing,
                });
            }
        }
        self.leaves.insert(va, leaf);
        Ok(())
    }

    /// Removes the whole leaf covering `va` (accessible or not) and returns it.
    pub fn unmap_leaf(&mut self, va: u64) -> Option<Leaf> {
        let start = self.leaf_at(va)?.va;
        self.leaves.remove(&start)
    }

    /// Changes the physical address and flags of the leaf covering `va` (accessible or not);
    /// returns its size.
    ///
    /// # Panics
    ///
    /// If `pa` is not aligned to the leaf's size.
    pub fn remap_leaf(&mut self, va: u64, pa: u64, flags: MappingFlags) -> Option<u64> {
        let start = self.leaf_at(va)?.va;
        let leaf = self.leaves.get_mut(&start).expect("leaf just found");
        assert!(
            pa % leaf.size == 0,
            "remap to {pa:#x}: not aligned to {:#x}",
            leaf.size
        );
        leaf.pa = pa;
        leaf.flags = flags;
        Some(leaf.size)
    }

    /// Replaces the flags of the accessible leaf covering `va`; returns its size. `None` (and
    /// no change) for a hole or a non-accessible leaf.
    pub fn protect_leaf(&mut self, va: u64, flags: MappingFlags) -> Option<u64> {
        let start = self.leaf_at(va).filter(|l| l.is_accessible())?.va;
        let leaf = self.leaves.get_mut(&start).expect("leaf just found");
        leaf.flags = flags;
        Some(leaf.size)
    }

    /// Splits the leaf that contains `boundary` without starting there, as the range
    /// operations do, until `boundary` is a leaf boundary. Does nothing if no leaf straddles
    /// it.
    ///
    /// # Panics
    ///
    /// If the split would need a size smaller than the smallest of the model (the boundary is
    /// not aligned to it).
    pub fn split_at(&mut self, boundary: u64) {
        while let Some(leaf) = self.leaf_at(boundary).copied() {
            if leaf.va == boundary {
                return;
            }
            let Some(child) = self.smaller(leaf.size) else {
                panic!(
                    "cannot split the {:#x} leaf at {:#x} at {boundary:#x}",
                    leaf.size, leaf.va
                );
            };
            self.leaves.remove(&leaf.va);
            for i in 0..leaf.size / child {
                let off = i * child;
                self.leaves.insert(
                    leaf.va + off,
                    Leaf {
                        va: leaf.va + off,
                        pa: leaf.pa + off,
                        size: child,
                        flags: leaf.flags,
                    },
                );
            }
        }
    }

    /// Splits the leaves straddling the boundaries of `[va, last]`, only if `want` accepts them.
    fn split_range(&mut self, va: u64, last: u64, want: impl Fn(&Leaf) -> bool) {
        for b in [Some(va), last.checked_add(1)].into_iter().flatten() {
            if self.leaf_at(b).is_some_and(&want) {
                self.split_at(b);
            }
        }
    }

    fn check_range(&self, va: u64, len: u64) -> u64 {
        let min = self.sizes[0];
        assert!(
            va % min == 0 && len % min == 0,
            "range {va:#x}+{len:#x} not aligned to {min:#x}"
        );
        range_last(va, len)
    }

    /// Removes every leaf inside `[va, va + len)`, accessible or not, splitting the leaves
    /// that straddle the boundaries first. Returns the removed leaves in address order.
    pub fn unmap_range(&mut self, va: u64, len: u64) -> Vec<Leaf> {
        let last = self.check_range(va, len);
        self.split_range(va, last, |_| true);
        let keys: Vec<u64> = self.leaves.range(va..=last).map(|(&k, _)| k).collect();
        keys.into_iter()
            .map(|k| self.leaves.remove(&k).expect("key just listed"))
            .collect()
    }

    /// Replaces the flags of every accessible leaf inside `[va, va + len)`, splitting the
    /// accessible leaves that straddle the boundaries first; non-accessible leaves are
    /// neither split nor changed. Returns the number of leaves changed.
    pub fn protect_range(&mut self, va: u64, len: u64, flags: MappingFlags) -> usize {
        let last = self.check_range(va, len);
        self.split_range(va, last, Leaf::is_accessible);
        let mut n = 0;
        for (_, leaf) in self.leaves.range_mut(va..=last) {
            if leaf.is_accessible() {
                leaf.flags = flags;
                n += 1;
            }
        }
        n
    }

    /// The least number of table frames a page table needs to hold the current leaves: the
    /// root (`root_frames` frames) plus one frame for every non-root table on the path to at
    /// least one leaf.
    ///
    /// Tables have 512 entries (9 index bits per level, 12-bit page offset); a leaf of size
    /// `0x1000 << (9 * l)` lives in a table of level `l` (level 0 holds 4 KiB pages,
    /// level `levels - 1` is the root). Leaves of other sizes panic.
    pub fn min_table_frames(&self, levels: usize, root_frames: usize) -> usize {
        let mut tables = BTreeSet::new();
        for leaf in self.leaves.values() {
            let level = (0..levels)
                .find(|&l| 0x1000u64 << (9 * l) == leaf.size)
                .unwrap_or_else(|| panic!("leaf size {:#x} fits no level", leaf.size));
            // The tables of levels `level ..= levels - 2` on its path; a table of level `j`
            // covers 2^(12 + 9 (j + 1)) bytes.
            for j in level..levels - 1 {
                tables.insert((j, leaf.va >> (12 + 9 * (j + 1))));
            }
        }
        root_frames + tables.len()
    }
}

fn range_last(va: u64, len: u64) -> u64 {
    assert!(len > 0, "empty range at {va:#x}");
    va.checked_add(len - 1)
        .unwrap_or_else(|| panic!("range {va:#x}+{len:#x} overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u64 = 0x1000;
    const M2: u64 = 0x20_0000;
    const G1: u64 = 0x4000_0000;
    const RW: MappingFlags = MappingFlags::READ.union(MappingFlags::WRITE);
    const R: MappingFlags = MappingFlags::READ;
    const NONE: MappingFlags = MappingFlags::empty();

    fn model() -> Model {
        Model::new(&[G1, K4, M2])
    }

    #[test]
    fn map_conflicts_and_query() {
        let mut m = model();
        m.map(M2, 0x4000_0000, M2, RW).unwrap();
        assert_eq!(m.map(M2 + 0x1000, 0, K4, RW).unwrap_err().existing.va, M2);
        assert!(m.map(0, 0, G1, RW).is_err());
        m.map(M2 - K4, 0x1000, K4, R).unwrap();
        m.map(2 * M2, 0x2000, K4, NONE).unwrap();
        assert_eq!(m.query(M2 + 0x1234), Some((0x4000_1234, RW, M2)));
        assert_eq!(m.query(M2 - 1), Some((0x1fff, R, K4)));
        assert_eq!(m.query(2 * M2), None, "non-accessible");
        assert_eq!(m.leaf_at(2 * M2).unwrap().pa, 0x2000);
        assert_eq!(m.query(3 * M2), None, "hole");
        assert_eq!(m.len(), 3);
        assert_eq!(m.overlapping(M2 - K4, 2 * K4).count(), 2);
    }

    #[test]
    fn top_of_address_space() {
        let mut m = model();
        let top = 0xFFFF_FFFF_FFE0_0000;
        m.map(top, 0x20_0000, M2, RW).unwrap();
        assert_eq!(m.query(u64::MAX), Some((0x3F_FFFF, RW, M2)));
        assert_eq!(m.unmap_range(u64::MAX - 0xFFF, K4).len(), 1);
        assert_eq!(m.len(), 511);
    }

    #[test]
    fn leaf_operations() {
        let mut m = model();
        m.map(0, 0x8000, K4, RW).unwrap();
        m.map(K4, 0x9000, K4, NONE).unwrap();
        assert_eq!(m.protect_leaf(0x10, R), Some(K4));
        assert_eq!(m.query(0).unwrap().1, R);
        assert_eq!(
            m.protect_leaf(K4, RW),
            None,
            "protect skips non-accessible leaves"
        );
        assert_eq!(
            m.remap_leaf(K4 + 8, 0xA000, R),
            Some(K4),
            "remap acts on any leaf"
        );
        assert_eq!(m.query(K4 + 8), Some((0xA008, R, K4)));
        assert_eq!(m.unmap_leaf(K4 + 8).unwrap().pa, 0xA000);
        assert_eq!(m.unmap_leaf(K4 + 8), None);
    }

    #[test]
    fn split_4k_hole_in_2m_leaf() {
        let mut m = model();
        m.map(M2, 0x4000_0000, M2, RW).unwrap();
        let hole = M2 + 0x10_0000;
        let removed = m.unmap_range(hole, K4);
        assert_eq!(
            removed,
            vec![Leaf {
                va: hole,
                pa: 0x4010_0000,
                size: K4,
                flags: RW
            }]
        );
        assert_eq!(m.len(), 511);
        assert!(
            m.leaves()
                .all(|l| l.size == K4 && l.pa - 0x4000_0000 == l.va - M2)
        );
        assert_eq!(m.query(hole), None);
        assert_eq!(m.query(hole + K4 + 5), Some((0x4010_1005, RW, K4)));
    }

    #[test]
    fn split_4k_hole_in_1g_leaf() {
        let mut m = model();
        m.map(G1, 0x8000_0000, G1, R).unwrap();
        let hole = G1 + 0x1234_5000;
        m.unmap_range(hole, K4);
        let n2m = m.leaves().filter(|l| l.size == M2).count();
        let n4k = m.leaves().filter(|l| l.size == K4).count();
        assert_eq!((n2m, n4k), (511, 511));
        assert_eq!(m.query(hole - 1), Some((0x8000_0000 + 0x1234_4FFF, R, K4)));
        assert_eq!(m.query(G1 + 0x1200_0000), Some((0x9200_0000, R, M2)));
        assert_eq!(m.query(hole), None);
    }

    #[test]
    fn range_ops_skip_holes_and_split_only_boundaries() {
        let mut m = model();
        m.map(0, 0, M2, RW).unwrap();
        m.map(4 * M2, 4 * M2, M2, RW).unwrap();
        // [1 MiB, 4 MiB + 1 MiB): splits both 2 MiB leaves, removes their inner halves.
        let removed = m.unmap_range(0x10_0000, 4 * M2);
        assert_eq!(removed.len(), 512);
        assert_eq!(m.len(), 512);
        assert_eq!(m.query(0xF_F000).unwrap().2, K4);
        assert_eq!(m.query(4 * M2 + 0x10_0000).unwrap().2, K4);
        assert_eq!(m.query(M2 + 5), None);
    }

    #[test]
    fn protect_range_splits_accessible_leaves_only() {
        let mut m = model();
        m.map(0, 0, M2, RW).unwrap();
        m.map(M2, M2, M2, NONE).unwrap();
        // Covers the upper half of the first leaf and the lower half of the second.
        let n = m.protect_range(0x10_0000, M2, R);
        assert_eq!(n, 256);
        assert_eq!(
            m.len(),
            512 + 1,
            "the non-accessible 2 MiB leaf is not split"
        );
        assert_eq!(m.query(0xF_F000).unwrap().1, RW);
        assert_eq!(m.query(0x10_0000).unwrap().1, R);
        assert_eq!(m.leaf_at(M2).unwrap().size, M2);
        // A full cover changes a leaf without splitting it.
        m.map(2 * M2, 0, M2, RW).unwrap();
        assert_eq!(m.protect_range(2 * M2, M2, MappingFlags::EXECUTE), 1);
        assert_eq!(m.leaf_at(2 * M2).unwrap().size, M2);
    }

    #[test]
    #[should_panic(expected = "cannot split")]
    fn unaligned_split_panics() {
        let mut m = Model::new(&[M2]);
        m.map(0, 0, M2, RW).unwrap();
        m.split_at(0x1000);
    }

    #[test]
    fn min_table_frames_examples() {
        let mut m = model();
        assert_eq!(m.min_table_frames(4, 1), 1);
        m.map(0, 0, K4, RW).unwrap();
        assert_eq!(m.min_table_frames(4, 1), 4, "root, PDPT, PD, PT");
        m.map(K4, 0, K4, RW).unwrap();
        assert_eq!(m.min_table_frames(4, 1), 4, "same PT");
        m.map(M2, 0, K4, RW).unwrap();
        assert_eq!(m.min_table_frames(4, 1), 5, "second PT under the same PD");
        m.map(0x80_0000_0000, 0, K4, RW).unwrap();
        assert_eq!(
            m.min_table_frames(4, 1),
            8,
            "another root slot: PDPT, PD, PT"
        );
        assert_eq!(
            m.min_table_frames(3, 1),
            6,
            "Sv39: the two leaves far apart share nothing below the root"
        );

        let mut m = model();
        m.map(G1, 0, G1, RW).unwrap();
        assert_eq!(
            m.min_table_frames(4, 1),
            2,
            "a 1 GiB leaf lives in the PDPT"
        );
        assert_eq!(m.min_table_frames(3, 1), 1, "Sv39: in the root");
        m.map(4 * M2, 0, M2, RW).unwrap();
        assert_eq!(m.min_table_frames(4, 1), 3, "the 2 MiB leaf needs a PD");
        assert_eq!(m.min_table_frames(3, 4), 5, "x4 root of four frames");
        m.map(0xFFFF_FFFF_FFFF_F000, 0, K4, RW).unwrap();
        assert_eq!(m.min_table_frames(4, 1), 6, "upper half: PDPT, PD, PT");
    }
}
