//! Seeded random sequences of every operation, for every format and level count, checked
//! after every step against the test kit's reference model (which leaves exist, with which
//! address, size and flags) and against the reference MMU walker of the architecture (what
//! the hardware would do for each access), with injected allocation failures; and every
//! frame returned when the table is dropped.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    MappingFlags as F, PageSize, PageTable64, PagingError as E, PagingMetaData, riscv, x86_64,
};
use testkit::alloc::{self, SimHandler};
use testkit::check::{self, Format, X64};
use testkit::mem;
use testkit::model::Model;
use testkit::rng::Rng;
use testkit::walker;

/// AArch64 with the EL1&0 metadata and `A64PTE` (EL2 entries with the `arm-el2` feature).
type A64 = check::A64<{ cfg!(feature = "arm-el2") }>;
use check::{A64El2, La};
/// RISC-V with the memory types of this build (T-Head's with `xuantie-c9xx`).
type Rv<M> = check::Rv<M, { cfg!(feature = "xuantie-c9xx") }>;

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

/// The test state: a table, the model it must equal, and the address windows used.
struct Harness<T: Format> {
    table: PageTable64<T::M, T::PTE, SimHandler>,
    model: Model,
    g: Gen,
}

/// Random operands.
struct Gen {
    windows: Vec<u64>,
    rng: Rng,
    sizes: Vec<u64>,
    /// The last address [`va`](Self::va) returned.
    last: Option<u64>,
}

/// The span of each address window: 4 GiB, so 1 GiB pages, splits and holes all occur.
const WINDOW: u64 = 4 * G1;

impl<T: Format> Harness<T> {
    fn new(seed: u64) -> Self {
        mem::reset();
        alloc::reset();
        let va_bits = T::M::VA_MAX_BITS as u32;
        let upper = u64::MAX << (va_bits - 1);
        // A window in the lower half, one in the upper half (not for AArch64, whose walker
        // models TTBR0), and one at the top of the lower half.
        let mut windows = vec![0x2_0000_0000, (1u64 << (va_bits - 1)) - WINDOW];
        if !matches!(T::walker(), walker::Config::Aarch64(_)) {
            windows.push(upper);
            // Near the top, leaving the last 1 GiB so no range ends at 2^64 in the model.
            windows.push(u64::MAX - WINDOW - G1 + 1);
        }
        let sizes = check::leaf_sizes::<T>();
        Self {
            table: PageTable64::try_new().unwrap(),
            model: Model::new(&sizes),
            g: Gen {
                windows,
                rng: Rng::new(seed),
                sizes,
                last: None,
            },
        }
    }
}

impl Gen {
    fn flags(&mut self) -> F {
        // Mostly accessible mappings; sometimes reservations.
        let mut f = F::from_bits_truncate(self.rng.below(128) as usize);
        if self.rng.chance(1, 8) {
            f.remove(F::ACCESS);
        } else if !f.is_accessible() {
            f |= F::READ;
        }
        f
    }

    fn size(&mut self) -> u64 {
        // Small pages more often than big ones.
        match self.rng.below(8) {
            0 => *self.sizes.last().unwrap(),
            1 | 2 => self.sizes[self.sizes.len().min(2) - 1],
            _ => K4,
        }
    }

    /// A virtual address aligned to `align`, inside one of the windows: half of the time
    /// within 64 KiB of the last one, so that consecutive calls share tables (a table
    /// emptied and refilled, neighbours in the path cache).
    fn va(&mut self, align: u64) -> u64 {
        let va = match self.last {
            Some(last) if align == K4 && self.rng.chance(1, 2) => {
                let near = (last & !(16 * K4 - 1)) + self.rng.below(16) * K4;
                if self
                    .windows
                    .iter()
                    .any(|&w| (w..w + WINDOW).contains(&near))
                {
                    near
                } else {
                    last
                }
            }
            _ => Self::window_va(&self.windows, &mut self.rng, align),
        };
        self.last = Some(va);
        va
    }

    fn window_va(windows: &[u64], rng: &mut Rng, align: u64) -> u64 {
        let base = *rng.pick(windows);
        base + (rng.below(WINDOW) & !(align - 1))
    }

    /// A range of up to `max_pages` 4 KiB pages inside one window.
    fn range(&mut self, max_pages: u64) -> (u64, u64) {
        let base = *self.rng.pick(&self.windows);
        let start = self.rng.below(WINDOW / K4);
        let pages = self.rng.range(1, max_pages).min(WINDOW / K4 - start);
        (base + start * K4, pages * K4)
    }

    /// A physical address aligned to `align`, below 2^40.
    fn pa(&mut self, align: u64) -> u64 {
        self.rng.below(1 << 40) & !(align - 1)
    }

    /// Fails the `n`-th next allocation with probability 1/4, and returns whether it did.
    fn maybe_fail(&mut self) {
        if self.rng.chance(1, 4) {
            let n = 1 + self.rng.below(4) as usize;
            alloc::set_fail_at(Some(n));
        } else {
            alloc::set_fail_at(None);
        }
    }
}

/// The cursor of a format's table.
type Cursor<'a, T> =
    page_table_multiarch::PageTable64Cursor<'a, <T as Format>::M, <T as Format>::PTE, SimHandler>;

impl<T: Format> Harness<T> {
    /// One cursor, and in it one operation most of the time, otherwise a burst of up to 16
    /// or, rarely, of a few hundred (what the cursor keeps between calls: its path cache, its queue of count updates and
    /// reclaims, its pending invalidations and frees); then the whole check.
    fn step(&mut self) {
        let g = &mut self.g;
        let model = &mut self.model;
        let burst = if g.rng.chance(1, 40) {
            // Long enough to fill the cursor's queues (count updates, flush ranges, frees).
            g.rng.range(100, 300)
        } else if g.rng.chance(1, 3) {
            g.rng.range(2, 16)
        } else {
            1
        };
        let mut c = self.table.cursor();
        for _ in 0..burst {
            g.maybe_fail();
            // Bursts are mostly single-page maps and unmaps near each other.
            let op = if burst > 1 && g.rng.chance(2, 3) {
                if g.rng.chance(1, 2) { 0 } else { 3 }
            } else {
                g.rng.below(10)
            };
            Self::op(op, g, model, &mut c);
        }
        alloc::set_fail_at(None);
        drop(c);
        self.check();
    }

    /// Operation `op` (0 to 9) with random operands through `c`, checked against the
    /// model.
    fn op(op: u64, g: &mut Gen, model: &mut Model, c: &mut Cursor<'_, T>) {
        match op {
            0 | 1 => {
                let size = g.size();
                let (va, pa, flags) = (g.va(size), g.pa(size), g.flags());
                let ps = match size {
                    K4 => PageSize::Size4K,
                    M2 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                let r = c.map(
                    VirtAddr::from(va as usize),
                    PhysAddr::from(pa as usize),
                    ps,
                    flags,
                );
                let conflict = model.overlapping(va, size).next().is_some();
                match r {
                    Ok(()) => model.map(va, pa, size, flags).unwrap(),
                    Err(E::AlreadyMapped | E::MappedToHugePage) => {
                        assert!(conflict, "map {va:#x}: false conflict")
                    }
                    Err(E::NoMemory) => {}
                    Err(e) => panic!("map {va:#x} {size:#x}: {e:?}"),
                }
            }
            2 => {
                let (va, len) = g.range(1200);
                let flags = g.flags();
                let huge = g.rng.coin();
                // Physical addresses follow virtual ones at a 1 GiB-aligned offset, so huge
                // pages fit.
                let delta = (g.pa(G1) as i64).wrapping_sub((va & !(G1 - 1)) as i64);
                let r = c.map_region(
                    VirtAddr::from(va as usize),
                    |v| {
                        PhysAddr::from(
                            (v.as_usize() as u64).wrapping_add(delta as u64) as usize
                                & ((1 << 40) - 1),
                        )
                    },
                    len as usize,
                    flags,
                    huge,
                );
                let conflict = model.overlapping(va, len).next().is_some();
                match r {
                    Ok(()) => {
                        assert!(!conflict, "map_region over existing leaves succeeded");
                        let mut v = va;
                        while v < va + len {
                            let pa = v.wrapping_add(delta as u64) & ((1 << 40) - 1);
                            let size = g
                                .sizes
                                .iter()
                                .rev()
                                .copied()
                                .find(|&s| huge && v % s == 0 && pa % s == 0 && va + len - v >= s)
                                .unwrap_or(K4);
                            model.map(v, pa, size, flags).unwrap();
                            v += size;
                        }
                    }
                    Err(E::AlreadyMapped | E::MappedToHugePage) => assert!(conflict),
                    Err(E::NoMemory) => {}
                    Err(e) => panic!("map_region: {e:?}"),
                }
            }
            3 => {
                let va = g.va(K4) + g.rng.below(K4);
                let r = c.unmap(VirtAddr::from(va as usize));
                let leaf = model.unmap_leaf(va);
                match (r, leaf) {
                    (Ok((pa, flags, size)), Some(l)) if l.is_accessible() => {
                        assert_eq!((pa.as_usize() as u64, size as u64), (l.pa, l.size));
                        assert_eq!(flags, T::expected_flags(l.flags));
                    }
                    (Err(E::NotMapped), None) => {}
                    (Err(E::NotMapped), Some(l)) if !l.is_accessible() => {}
                    (r, l) => panic!("unmap {va:#x}: {r:?} vs model {l:?}"),
                }
            }
            4 => {
                let (va, len) = g.range(1500);
                match c.unmap_region(VirtAddr::from(va as usize), len as usize) {
                    Ok(()) => {
                        model.unmap_range(va, len);
                    }
                    Err(E::NoMemory) => {}
                    Err(e) => panic!("unmap_region: {e:?}"),
                }
            }
            5 => {
                let (va, len) = g.range(1500);
                let flags = g.flags();
                match c.protect_region(VirtAddr::from(va as usize), len as usize, flags) {
                    Ok(()) => {
                        model.protect_range(va, len, flags);
                    }
                    Err(E::NoMemory) => {}
                    Err(e) => panic!("protect_region: {e:?}"),
                }
            }
            6 => {
                // Remap an existing leaf most of the time.
                let va = match model
                    .leaves()
                    .nth(g.rng.below(model.len() as u64 + 1) as usize)
                {
                    Some(l) if g.rng.chance(3, 4) => l.va + g.rng.below(l.size) / K4 * K4,
                    _ => g.va(K4),
                };
                let size = model.leaf_at(va).map_or(K4, |l| l.size);
                let (pa, flags) = (g.pa(size), g.flags());
                let r = c.remap(
                    VirtAddr::from(va as usize),
                    PhysAddr::from(pa as usize),
                    flags,
                );
                match (r, model.remap_leaf(va, pa, flags)) {
                    (Ok(s), Some(size)) => assert_eq!(s as u64, size),
                    (Err(E::NotMapped), None) => {}
                    (r, m) => panic!("remap {va:#x}: {r:?} vs model {m:?}"),
                }
            }
            7 => {
                let va = match model
                    .leaves()
                    .nth(g.rng.below(model.len() as u64 + 1) as usize)
                {
                    Some(l) => l.va + g.rng.below(l.size) / K4 * K4,
                    None => g.va(K4),
                };
                let flags = g.flags();
                let r = c.protect(VirtAddr::from(va as usize), flags);
                match (r, model.protect_leaf(va, flags)) {
                    (Ok(s), Some(size)) => assert_eq!(s as u64, size),
                    (Err(E::NotMapped), None) => {}
                    (r, m) => panic!("protect {va:#x}: {r:?} vs model {m:?}"),
                }
            }
            _ => {
                let va = g.va(K4) + g.rng.below(K4);
                let expected = model
                    .query(va)
                    .map(|(pa, f, s)| (pa, T::expected_flags(f), s));
                let got = c.query(VirtAddr::from(va as usize)).ok();
                let got = got.map(|(pa, f, s)| (pa.as_usize() as u64, f, s as u64));
                assert_eq!(got, expected, "query {va:#x}");
            }
        }
    }

    /// The whole table equals the model, the walker agrees, and no frame is held beyond what
    /// the mappings need.
    fn check(&mut self) {
        let g = &mut self.g;
        let windows = &g.windows;
        check::check::<T>(&self.table, &self.model, &mut g.rng, |rng| {
            Gen::window_va(windows, rng, 8)
        });
    }
}

fn run<T: Format>(seed: u64, steps: usize) {
    let mut h = Harness::<T>::new(seed);
    for _ in 0..steps {
        h.step();
    }
    drop(h.table);
    assert_eq!(alloc::live_frames(), 0, "frames leaked after drop");
}

const STEPS: usize = 400;

fn seeds() -> impl Iterator<Item = u64> {
    let base = testkit::rng::seed_from_env(0x5eed);
    (0..3).map(move |i| base + i)
}

#[test]
fn x86_64_4_level() {
    seeds().for_each(|s| run::<X64<x86_64::X64PagingMetaData>>(s, STEPS));
}

#[test]
fn x86_64_5_level() {
    seeds().for_each(|s| run::<X64<x86_64::X64PagingMetaDataLa57>>(s, STEPS));
}

#[test]
fn aarch64_4_level() {
    seeds().for_each(|s| run::<A64>(s, STEPS));
}

#[test]
fn aarch64_el2_4_level() {
    seeds().for_each(|s| run::<A64El2>(s, STEPS));
}

#[test]
fn riscv_sv39() {
    seeds().for_each(|s| run::<Rv<riscv::Sv39MetaData>>(s, STEPS));
}

#[test]
fn riscv_sv48() {
    seeds().for_each(|s| run::<Rv<riscv::Sv48MetaData>>(s, STEPS));
}

#[test]
fn riscv_sv57() {
    seeds().for_each(|s| run::<Rv<riscv::Sv57MetaData>>(s, STEPS));
}

#[test]
fn loongarch64_4_level() {
    seeds().for_each(|s| run::<La>(s, STEPS));
}
