//! Seeded random tables: a random sequence of the library's cursor operations, then a
//! comparison of the resulting table with the MMU.

use memory_addr::{PhysAddr, VirtAddr};
use mmu_oracle::expect::{expected, query};
use mmu_oracle::layout::DATA;
use mmu_oracle::{Arch, Config, Image, OracleHandler, Outcome, Probe};
use page_table_multiarch::{
    GenericPTE, Mapping, MappingFlags, PageSize, PageTable64, PagingError, PagingMetaData,
};
use testkit::Rng;

use super::{compare, probes_for, strict};

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;
/// Where each window's activity concentrates: the first 1 GiB slots of a window.
const GIGS: u64 = 4;

/// Operations per random table.
pub const STEPS: usize = 120;

/// The seeds of one test: two, from `salt` or from `TESTKIT_SEED`.
pub fn seeds(salt: u64) -> impl Iterator<Item = u64> {
    let base = testkit::rng::seed_from_env(salt);
    base..base + 2
}

/// Operation counters: attempts and errors per kind.
#[derive(Default, Debug)]
struct Stats {
    map: (u32, u32),
    map_region: (u32, u32),
    unmap: (u32, u32),
    unmap_region: (u32, u32),
    protect: (u32, u32),
    protect_region: (u32, u32),
    remap: (u32, u32),
    rollbacks: u32,
    failed_splits: u32,
}

fn count<T>(c: &mut (u32, u32), r: &Result<T, PagingError>) {
    c.0 += 1;
    if r.is_err() {
        c.1 += 1;
    }
}

fn va(v: u64) -> VirtAddr {
    VirtAddr::from(v as usize)
}

fn pa(p: u64) -> PhysAddr {
    PhysAddr::from(p as usize)
}

fn linear(base: u64, mask: u64) -> impl Fn(VirtAddr) -> PhysAddr {
    move |v: VirtAddr| pa(base + (v.as_usize() as u64 & mask))
}

fn size_of(s: PageSize) -> u64 {
    s as u64
}

struct Run<'a, M: PagingMetaData<VirtAddr = VirtAddr>, PTE: GenericPTE> {
    img: &'a Image,
    pt: PageTable64<M, PTE, OracleHandler>,
    rng: Rng,
    /// 1 GiB-aligned starts of `GIGS` GiB of address space each.
    windows: Vec<u64>,
    /// First 2 MiB-aligned physical address of the tagged data frames.
    data: u64,
    /// Ranges a failed `map_region` must have left empty.
    holes: Vec<(u64, u64)>,
    stats: Stats,
}

impl<M: PagingMetaData<VirtAddr = VirtAddr>, PTE: GenericPTE> Run<'_, M, PTE> {
    fn flags(&mut self) -> MappingFlags {
        if self.rng.chance(1, 10) {
            MappingFlags::empty()
        } else {
            MappingFlags::from_bits_truncate(self.rng.below(128) as usize)
        }
    }

    fn page_size(&mut self) -> PageSize {
        match self.rng.below(20) {
            0..=10 => PageSize::Size4K,
            11..=17 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }

    fn gig(&mut self) -> u64 {
        let w = *self.rng.pick(&self.windows);
        w + G1 * self.rng.below(GIGS)
    }

    /// A 2 MiB slot in a GiB: mostly the first few, sometimes the last (next to the
    /// following GiB).
    fn slot_2m(&mut self) -> u64 {
        if self.rng.chance(1, 8) {
            511
        } else {
            self.rng.below(6)
        }
    }

    fn slot_4k(&mut self) -> u64 {
        match self.rng.below(3) {
            0 => self.rng.below(8),
            1 => 504 + self.rng.below(8),
            _ => self.rng.below(512),
        }
    }

    fn pick_va(&mut self, size: PageSize) -> u64 {
        let gig = self.gig();
        match size {
            PageSize::Size1G => gig,
            PageSize::Size2M => gig + M2 * self.slot_2m(),
            _ => gig + M2 * self.slot_2m() + K4 * self.slot_4k(),
        }
    }

    /// A physical address for a page of `size` whose probed words are tagged.
    fn pick_pa(&mut self, size: PageSize) -> u64 {
        match size {
            PageSize::Size1G => self.img.huge_1g_frame(),
            PageSize::Size2M => self.data + M2 * self.rng.below(6),
            _ => self.data + K4 * self.rng.below(6 * 512),
        }
    }

    fn leaves(&self) -> Vec<Mapping> {
        self.pt.mappings().collect()
    }

    fn random_leaf(&mut self, present_only: bool) -> Option<Mapping> {
        let leaves: Vec<Mapping> = self
            .leaves()
            .into_iter()
            .filter(|m| m.present || !present_only)
            .collect();
        (!leaves.is_empty()).then(|| *self.rng.pick(&leaves))
    }

    /// A VA inside `leaf`: mostly near its ends, where the tagged memory is.
    fn inside(&mut self, leaf: &Mapping) -> u64 {
        let size = size_of(leaf.size);
        let pages = size / K4;
        let page = match self.rng.below(3) {
            0 => self.rng.below(pages.min(256)),
            1 => pages - 1 - self.rng.below(pages.min(256)),
            _ => self.rng.below(pages),
        };
        leaf.vaddr as u64 + page * K4
    }

    /// A range that starts inside a random leaf (a huge one, two times in three, where
    /// there is one, so that the range splits it) and may run past its end.
    fn range_over_leaf(&mut self) -> Option<(u64, u64)> {
        let huge: Vec<Mapping> = self
            .leaves()
            .into_iter()
            .filter(|m| m.size != PageSize::Size4K)
            .collect();
        let leaf = if !huge.is_empty() && self.rng.chance(2, 3) {
            *self.rng.pick(&huge)
        } else {
            self.random_leaf(false)?
        };
        let start = self.inside(&leaf);
        let pages = self.rng.range(1, 1024);
        Some((start, pages * K4))
    }

    /// The physical address function of a `map_region`: linear modulo 8 MiB over the data
    /// frames, or modulo 1 GiB over the 1 GiB frame (`gig_pages`); both keep a VA's 2 MiB
    /// (or 1 GiB) alignment in the physical address, so huge pages are possible.
    fn map_region_pa(&self, gig_pages: bool) -> (u64, u64) {
        if gig_pages {
            (self.img.huge_1g_frame(), G1 - 1)
        } else {
            (self.data, 4 * M2 - 1)
        }
    }

    fn is_empty(&self, start: u64, len: u64) -> bool {
        self.leaves().iter().all(|m| {
            let (a, b) = (m.vaddr as u64, m.vaddr as u64 + size_of(m.size));
            b <= start || a >= start + len
        })
    }

    /// A `map_region` of 4 KiB pages over an empty range that needs more table frames than
    /// the allocator will give: it must fail with `NoMemory` and leave the table as it was.
    fn failing_map_region(&mut self) {
        let mut found = None;
        for _ in 0..8 {
            let start = self.gig() + M2 * self.rng.range(8, 500);
            let len = 4 * M2 + K4 * self.rng.below(512);
            if self.is_empty(start, len) {
                found = Some((start, len));
                break;
            }
        }
        let Some((start, len)) = found else {
            return;
        };
        let before = self.leaves();
        let frames = self.img.tables_live();
        let k = self.rng.range(1, 4) as usize;
        let flags = self.flags();
        let (base, mask) = self.map_region_pa(false);
        self.img.fail_allocations_after(Some(k));
        let r =
            self.pt
                .cursor()
                .map_region(va(start), linear(base, mask), len as usize, flags, false);
        self.img.fail_allocations_after(None);
        count(&mut self.stats.map_region, &r);
        assert_eq!(
            r,
            Err(PagingError::NoMemory),
            "map_region({start:#x}, {len:#x}) with {k} frames"
        );
        assert_eq!(
            self.leaves(),
            before,
            "a failed map_region({start:#x}, {len:#x}) changed the leaves"
        );
        assert_eq!(
            self.img.tables_live(),
            frames,
            "a failed map_region({start:#x}, {len:#x}) leaked table frames"
        );
        self.stats.rollbacks += 1;
        self.holes.push((start, len));
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=27 => {
                let size = self.page_size();
                let v = self.pick_va(size);
                let p = self.pick_pa(size);
                let flags = self.flags();
                let r = self.pt.cursor().map(va(v), pa(p), size, flags);
                count(&mut self.stats.map, &r);
            }
            28..=44 => {
                let gig_pages = self.rng.chance(1, 4);
                let (start, len, huge) = if gig_pages {
                    // Around a GiB boundary: 4 KiB and 2 MiB pages below it, then (mostly)
                    // a 1 GiB page and 4 KiB pages above it.
                    let start = self.gig() + G1 - M2 * self.rng.below(2) - K4 * self.rng.below(3);
                    let len = if self.rng.chance(3, 4) {
                        (self.gig_end(start) - start) + G1 + K4 * self.rng.below(600)
                    } else {
                        K4 * self.rng.range(1, 600)
                    };
                    (start, len, true)
                } else {
                    let start = self.pick_va(PageSize::Size4K);
                    (start, K4 * self.rng.range(1, 2048), self.rng.coin())
                };
                let flags = if self.rng.chance(1, 20) {
                    MappingFlags::empty()
                } else {
                    self.flags()
                };
                let (base, mask) = self.map_region_pa(gig_pages);
                let r = self.pt.cursor().map_region(
                    va(start),
                    linear(base, mask),
                    len as usize,
                    flags,
                    huge,
                );
                count(&mut self.stats.map_region, &r);
            }
            45..=52 => {
                if let Some(leaf) = self.random_leaf(false) {
                    let v = self.inside(&leaf);
                    let r = self.pt.cursor().unmap(va(v));
                    count(&mut self.stats.unmap, &r);
                }
            }
            53..=64 => {
                if let Some((start, len)) = self.range_over_leaf() {
                    let fail = self.rng.chance(1, 3);
                    let r = self.splitting(fail, |c| c.unmap_region(va(start), len as usize));
                    count(&mut self.stats.unmap_region, &r);
                }
            }
            65..=72 => {
                if let Some(leaf) = self.random_leaf(true) {
                    let v = self.inside(&leaf);
                    let flags = self.flags();
                    let r = self.pt.cursor().protect(va(v), flags);
                    count(&mut self.stats.protect, &r);
                }
            }
            73..=86 => {
                if let Some((start, len)) = self.range_over_leaf() {
                    let fail = self.rng.chance(1, 3);
                    let flags = self.flags();
                    let r =
                        self.splitting(fail, |c| c.protect_region(va(start), len as usize, flags));
                    count(&mut self.stats.protect_region, &r);
                }
            }
            87..=94 => {
                if let Some(leaf) = self.random_leaf(false) {
                    let v = self.inside(&leaf);
                    let p = self.pick_pa(leaf.size);
                    let flags = self.flags();
                    let r = self.pt.cursor().remap(va(v), pa(p), flags);
                    count(&mut self.stats.remap, &r);
                }
            }
            _ => self.failing_map_region(),
        }
    }

    fn gig_end(&self, v: u64) -> u64 {
        (v | (G1 - 1)) + 1
    }

    /// Runs a range operation that may split huge pages, optionally with an allocator
    /// that gives no frame: on failure the table must be unchanged.
    fn splitting(
        &mut self,
        fail: bool,
        op: impl FnOnce(
            &mut page_table_multiarch::PageTable64Cursor<'_, M, PTE, OracleHandler>,
        ) -> Result<(), PagingError>,
    ) -> Result<(), PagingError> {
        let before = fail.then(|| (self.leaves(), self.img.tables_live()));
        if fail {
            self.img.fail_allocations_after(Some(0));
        }
        let r = op(&mut self.pt.cursor());
        self.img.fail_allocations_after(None);
        if let (Some((leaves, frames)), Err(e)) = (before, r) {
            assert_eq!(e, PagingError::NoMemory);
            assert_eq!(self.leaves(), leaves, "a failed split changed the leaves");
            assert_eq!(self.img.tables_live(), frames, "a failed split leaked");
            self.stats.failed_splits += 1;
        }
        r
    }
}

/// Offsets to probe in `leaf`: its first, an interior and its last word, kept where the
/// physical memory is tagged; for a huge leaf with few of those, the ends of its tagged
/// parts instead.
fn leaf_offsets(img: &Image, leaf: &Mapping) -> Vec<u64> {
    let size = size_of(leaf.size);
    let cands = [0, (size / 2 + 0x128) & !7, size - 8];
    if !leaf.present {
        return vec![0, size - 8];
    }
    let base = leaf.paddr.as_usize() as u64;
    let layout = img.layout();
    let mut out: Vec<u64> = cands
        .into_iter()
        .filter(|&o| layout.is_tagged(base + o))
        .collect();
    if out.len() < 2 {
        for r in layout.tagged() {
            let lo = r.start.max(base);
            let hi = r.end.min(base + size);
            if lo < hi {
                out.push(lo - base);
                out.push(hi - 8 - base);
            }
        }
        out.sort_unstable();
        out.dedup();
        out.truncate(4);
    }
    out
}

/// Runs `steps` random cursor operations (seeded by `seed`) on a fresh table and compares
/// the MMU with `query` on the result: every leaf's first, interior and last word (where
/// memory is tagged, or all of a sample of leaves when there are too many for one boot)
/// at each privilege and access kind, the words around each leaf, the ranges failed
/// `map_region`s left empty and random addresses of the windows.
pub fn random_suite<M, PTE>(config: Config, seed: u64, steps: usize)
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let img = Image::new(config.arch());
    let bits = config.va_bits();
    let lower_top = if config.arch() == Arch::Aarch64 {
        1u64 << 48
    } else {
        1u64 << (bits - 1)
    };
    let mut windows = vec![0x1_0000_0000, lower_top - GIGS * G1];
    if config.arch() != Arch::Aarch64 {
        windows.push(!0u64 << (bits - 1));
    }
    let data = img.layout().pa(DATA).next_multiple_of(M2);
    let mut run = Run::<M, PTE> {
        img: &img,
        pt: PageTable64::try_new().expect("root table"),
        rng: Rng::new(seed),
        windows,
        data,
        holes: Vec::new(),
        stats: Stats::default(),
    };
    for i in 0..steps {
        if i == steps / 2 {
            run.failing_map_region();
        }
        run.step();
    }

    // Probes.
    let budget = 3000usize;
    let riscv = config.arch() == Arch::Riscv64;
    let per_leaf = if riscv { 34 } else { 22 };
    let leaves = run.leaves();
    let max = budget / per_leaf;
    let mut chosen: Vec<usize> = (0..leaves.len()).collect();
    if leaves.len() > max {
        // First the present leaves on tagged memory (whose allowed accesses can be seen),
        // then the rest; in each group, huge leaves and the leaves at the edges of runs
        // (where the neighbour is a hole, or differs in size, flags or physical contiguity)
        // first; at random within each class.
        let continues = |a: &Mapping, b: &Mapping| {
            let size = size_of(a.size);
            a.vaddr as u64 + size == b.vaddr as u64
                && a.size == b.size
                && a.flags == b.flags
                && a.present == b.present
                && a.paddr.as_usize() as u64 + size == b.paddr.as_usize() as u64
        };
        let tagged = img.layout().tagged();
        let score = |i: usize| {
            let m = &leaves[i];
            let (pa, size) = (m.paddr.as_usize() as u64, size_of(m.size));
            let seen = m.present && tagged.iter().any(|r| r.start < pa + size && pa < r.end);
            let edge = m.size != PageSize::Size4K
                || i == 0
                || i + 1 == leaves.len()
                || !continues(&leaves[i - 1], m)
                || !continues(m, &leaves[i + 1]);
            2 * u8::from(seen) + u8::from(edge)
        };
        run.rng.shuffle(&mut chosen);
        chosen.sort_by_key(|&i| std::cmp::Reverse(score(i)));
        chosen.truncate(max);
        chosen.sort_unstable();
    }
    let mut probes = Vec::new();
    for &i in &chosen {
        let leaf = &leaves[i];
        let offsets = leaf_offsets(&img, leaf);
        probes_for(
            &config,
            leaf.vaddr as u64,
            size_of(leaf.size),
            &offsets,
            &mut probes,
        );
    }
    for &(start, len) in &run.holes {
        for a in [start, start + len / 2, start + len - 8] {
            probes.push(Probe::load(a));
            probes.push(Probe::store(a).user());
            probes.push(Probe::exec(a));
        }
    }
    for _ in 0..64 {
        let w = *run.rng.pick(&run.windows);
        let a = w + (run.rng.below(GIGS * G1) & !7);
        probes.extend([Probe::load(a), Probe::store(a), Probe::load(a).user()]);
    }
    super::keep_tagged(&img, &config, &run.pt, &mut probes);
    let allowed = probes
        .iter()
        .filter(|p| {
            matches!(
                expected(&config, p, query(&run.pt, p.va)),
                Outcome::Ok { .. }
            )
        })
        .count();
    let huge = |size| leaves.iter().filter(|m| m.size == size).count();
    let what = format!(
        "random seed {seed:#x} ({} leaves: {} of 2M, {} of 1G; {} probed; {allowed} probes allowed)",
        leaves.len(),
        huge(PageSize::Size2M),
        huge(PageSize::Size1G),
        chosen.len()
    );
    eprintln!("{what}: {:?}", run.stats);
    assert!(
        run.stats.rollbacks > 0,
        "no map_region ran out of frames half way"
    );
    compare(&img, &config, &run.pt, probes, &what, &strict);
}
