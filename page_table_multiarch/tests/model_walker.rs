//! Seeded random sequences of every operation, for every format and level count, checked
//! after every step against the test kit's reference model (which leaves exist, with which
//! address, size and flags) and against the reference MMU walker of the architecture (what
//! the hardware would do for each access), with injected allocation failures; and every
//! frame returned when the table is dropped.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    GenericPTE, MappingFlags as F, PageSize, PageTable64, PagingError as E, PagingMetaData,
    aarch64, loongarch64, riscv, x86_64,
};
use testkit::alloc::{self, SimHandler};
use testkit::mem;
use testkit::model::Model;
use testkit::rng::Rng;
use testkit::walker::{self, Access, AccessKind, FaultKind, MemType};

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

/// One format under test: its types, its walker, and what the hardware should do, stated
/// from the manual independently of the entry code.
trait Format {
    type M: PagingMetaData<VirtAddr = VirtAddr>;
    type PTE: GenericPTE;
    fn walker() -> walker::Config;
    /// The flags `query` reports for a present leaf requested with `f`.
    fn expected_flags(f: F) -> F;
    /// Whether the hardware allows `access` to a present leaf requested with `f`.
    fn allows(f: F, access: Access) -> bool;
    /// Whether the standard walker applies to this build's encoding (T-Head's extended
    /// attributes sit in bits the standard RISC-V walker reserves).
    fn walker_applies() -> bool {
        true
    }
}

fn mem_type_bits(f: F) -> F {
    if f.contains(F::DEVICE) {
        F::DEVICE
    } else {
        f & F::UNCACHED
    }
}

struct X64<M>(core::marker::PhantomData<M>);
impl<M: PagingMetaData<VirtAddr = VirtAddr>> Format for X64<M> {
    type M = M;
    type PTE = page_table_entry::x86_64::X64PTE;
    fn walker() -> walker::Config {
        walker::Config::X86_64(walker::x86_64::Config {
            la57: M::LEVELS == 5,
            ..Default::default()
        })
    }
    // A present x86 page is always readable.
    fn expected_flags(f: F) -> F {
        F::READ | (f & (F::WRITE | F::EXECUTE | F::USER)) | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        (!a.user || f.contains(F::USER))
            && match a.kind {
                AccessKind::Read => true,
                AccessKind::Write => f.contains(F::WRITE),
                AccessKind::Exec => f.contains(F::EXECUTE),
            }
    }
}

struct A64;
impl Format for A64 {
    type M = aarch64::A64PagingMetaData;
    type PTE = page_table_entry::aarch64::A64PTE;
    fn walker() -> walker::Config {
        let mut c = walker::aarch64::Config::default();
        if cfg!(feature = "arm-el2") {
            c.regime = walker::aarch64::Regime::El2;
        }
        walker::Config::Aarch64(c)
    }
    // Stage 1 cannot express write-only or execute-only: a valid descriptor is readable.
    fn expected_flags(f: F) -> F {
        let user = if cfg!(feature = "arm-el2") {
            F::empty()
        } else {
            f & F::USER
        };
        F::READ | (f & (F::WRITE | F::EXECUTE)) | user | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        if cfg!(feature = "arm-el2") {
            return !a.user
                && match a.kind {
                    AccessKind::Read => true,
                    AccessKind::Write => f.contains(F::WRITE),
                    AccessKind::Exec => f.contains(F::EXECUTE),
                };
        }
        let user = f.contains(F::USER);
        match (a.user, a.kind) {
            (false, AccessKind::Read) => true,
            (false, AccessKind::Write) => f.contains(F::WRITE),
            // Kernel code never runs from user pages (PXN), nor from EL0-writable pages.
            (false, AccessKind::Exec) => f.contains(F::EXECUTE) && !user,
            (true, AccessKind::Read) => user,
            (true, AccessKind::Write) => user && f.contains(F::WRITE),
            (true, AccessKind::Exec) => user && f.contains(F::EXECUTE),
        }
    }
}

/// AArch64 with EL2 (single range) entries, whatever the `arm-el2` feature says.
struct A64El2;
impl Format for A64El2 {
    type M = aarch64::A64El2PagingMetaData;
    type PTE = page_table_entry::aarch64::A64PTEEl2;
    fn walker() -> walker::Config {
        walker::Config::Aarch64(walker::aarch64::Config {
            regime: walker::aarch64::Regime::El2,
            ..Default::default()
        })
    }
    // No EL0 in this regime: USER cannot be expressed.
    fn expected_flags(f: F) -> F {
        F::READ | (f & (F::WRITE | F::EXECUTE)) | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        !a.user
            && match a.kind {
                AccessKind::Read => true,
                AccessKind::Write => f.contains(F::WRITE),
                AccessKind::Exec => f.contains(F::EXECUTE),
            }
    }
}

struct Rv<M>(core::marker::PhantomData<M>);
impl<M: PagingMetaData<VirtAddr = VirtAddr>> Format for Rv<M> {
    type M = M;
    type PTE = page_table_entry::riscv::Rv64PTE;
    fn walker() -> walker::Config {
        let mode = match M::LEVELS {
            3 => walker::riscv::Mode::Sv39,
            4 => walker::riscv::Mode::Sv48,
            _ => walker::riscv::Mode::Sv57,
        };
        walker::Config::Riscv(walker::riscv::Config {
            mode,
            svpbmt: true,
            ..Default::default()
        })
    }
    // W without R is reserved: WRITE implies READ.
    fn expected_flags(f: F) -> F {
        let r = if f.intersects(F::READ | F::WRITE) {
            F::READ
        } else {
            F::empty()
        };
        // T-Head's attributes only tell device memory apart.
        let mem = if cfg!(feature = "xuantie-c9xx") {
            f & F::DEVICE
        } else {
            mem_type_bits(f)
        };
        r | (f & (F::WRITE | F::EXECUTE | F::USER)) | mem
    }
    fn allows(f: F, a: Access) -> bool {
        let e = Self::expected_flags(f);
        // S-mode without SUM touches no user page; U-mode only user pages.
        a.user == e.contains(F::USER)
            && match a.kind {
                AccessKind::Read => e.contains(F::READ),
                AccessKind::Write => e.contains(F::WRITE),
                AccessKind::Exec => e.contains(F::EXECUTE),
            }
    }
    fn walker_applies() -> bool {
        !cfg!(feature = "xuantie-c9xx")
    }
}

struct La;
impl Format for La {
    type M = loongarch64::LA64MetaData;
    type PTE = page_table_entry::loongarch64::LA64PTE;
    fn walker() -> walker::Config {
        walker::Config::LoongArch64(Default::default())
    }
    fn expected_flags(f: F) -> F {
        (f & (F::READ | F::WRITE | F::EXECUTE | F::USER)) | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        (!a.user || f.contains(F::USER))
            && match a.kind {
                AccessKind::Read => f.contains(F::READ),
                AccessKind::Write => f.contains(F::WRITE),
                AccessKind::Exec => f.contains(F::EXECUTE),
            }
    }
}

const ACCESSES: [Access; 6] = [
    Access::READ,
    Access::WRITE,
    Access::EXEC,
    Access::USER_READ,
    Access::USER_WRITE,
    Access::USER_EXEC,
];

/// The test state: a table, the model it must equal, and the address windows used.
struct Harness<T: Format> {
    table: PageTable64<T::M, T::PTE, SimHandler>,
    model: Model,
    g: Gen,
    mask: u64,
}

/// Random operands.
struct Gen {
    windows: Vec<u64>,
    rng: Rng,
    sizes: Vec<u64>,
}

/// The span of each address window: 4 GiB, so 1 GiB pages, splits and holes all occur.
const WINDOW: u64 = 4 * G1;

impl<T: Format> Harness<T> {
    fn new(seed: u64) -> Self {
        mem::reset();
        alloc::reset();
        let va_bits = T::M::VA_MAX_BITS as u32;
        let mask = if va_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << va_bits) - 1
        };
        let upper = u64::MAX << (va_bits - 1);
        // A window in the lower half, one in the upper half (not for AArch64, whose walker
        // models TTBR0), and one at the top of the lower half.
        let mut windows = vec![0x2_0000_0000, (1u64 << (va_bits - 1)) - WINDOW];
        if !matches!(T::walker(), walker::Config::Aarch64(_)) {
            windows.push(upper);
            // Near the top, leaving the last 1 GiB so no range ends at 2^64 in the model.
            windows.push(u64::MAX - WINDOW - G1 + 1);
        }
        let sizes = match T::M::MAX_PAGE_SIZE {
            PageSize::Size2M => vec![K4, M2],
            PageSize::Size4K | PageSize::Size1M => vec![K4],
            PageSize::Size1G => vec![K4, M2, G1],
        };
        Self {
            table: PageTable64::try_new().unwrap(),
            model: Model::new(&sizes),
            g: Gen {
                windows,
                rng: Rng::new(seed),
                sizes,
            },
            mask,
        }
    }
}

impl Gen {
    fn flags(&mut self) -> F {
        // Mostly accessible mappings; sometimes reservations.
        let mut f = F::from_bits_truncate(self.rng.below(64) as usize);
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

    /// A virtual address aligned to `align`, inside one of the windows.
    fn va(&mut self, align: u64) -> u64 {
        let base = *self.rng.pick(&self.windows);
        base + (self.rng.below(WINDOW) & !(align - 1))
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

impl<T: Format> Harness<T> {
    fn step(&mut self) {
        self.g.maybe_fail();
        let g = &mut self.g;
        let model = &mut self.model;
        let mut c = self.table.cursor();
        match g.rng.below(10) {
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
        alloc::set_fail_at(None);
        drop(c);
        self.check();
    }

    /// The whole table equals the model, the walker agrees, and no frame is held beyond what
    /// the mappings need.
    fn check(&mut self) {
        let mask = self.mask;
        let got: Vec<_> = self
            .table
            .mappings()
            .map(|m| {
                (
                    m.vaddr as u64 & mask,
                    m.paddr.as_usize() as u64,
                    m.size as u64,
                    m.present,
                    m.flags,
                )
            })
            .collect();
        let want: Vec<_> = self
            .model
            .leaves()
            .map(|l| {
                let present = l.is_accessible();
                let flags = if present {
                    T::expected_flags(l.flags)
                } else {
                    F::empty()
                };
                (l.va & mask, l.pa, l.size, present, flags)
            })
            .collect();
        let mut want = want;
        want.sort_by_key(|w| w.0);
        assert_eq!(got.len(), want.len(), "leaf count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "leaf");
        }
        let levels = T::M::LEVELS;
        let root_frames = PageTable64::<T::M, T::PTE, SimHandler>::BASE_FRAMES;
        assert_eq!(
            self.table.table_frames(),
            self.model.min_table_frames(levels, root_frames),
            "tables"
        );
        assert_eq!(
            alloc::live_frames(),
            self.table.table_frames(),
            "live frames"
        );

        // The walker: a sample of leaves, at their first and last byte, every access.
        if !T::walker_applies() {
            return;
        }
        let cfg = T::walker();
        let root = self.table.root_paddr().as_usize() as u64;
        let leaves: Vec<_> = self.model.leaves().cloned().collect();
        for _ in 0..leaves.len().min(24) {
            let l = &leaves[self.g.rng.below(leaves.len() as u64) as usize];
            for va in [
                l.va,
                l.va + (l.size - 8),
                l.va + self.g.rng.below(l.size / 8) * 8,
            ] {
                for a in ACCESSES {
                    let out = walker::translate(&mem::read_u64, root, va, a, &cfg);
                    if !l.is_accessible() {
                        assert_eq!(
                            out.map_err(|f| f.kind),
                            Err(FaultKind::NotMapped),
                            "reservation {va:#x}"
                        );
                        continue;
                    }
                    if T::allows(l.flags, a) {
                        let t = out
                            .unwrap_or_else(|f| panic!("{va:#x} {a:?} flags {:?}: {f:?}", l.flags));
                        assert_eq!(t.pa, l.pa + (va - l.va), "walker pa at {va:#x}");
                        assert_eq!(t.page_size, l.size);
                        {
                            let mem = if l.flags.contains(F::DEVICE) {
                                MemType::Device
                            } else if l.flags.contains(F::UNCACHED) {
                                MemType::Uncached
                            } else {
                                MemType::WriteBack
                            };
                            assert_eq!(t.mem, mem, "memory type at {va:#x}, flags {:?}", l.flags);
                        }
                    } else {
                        assert_eq!(
                            out.map_err(|f| f.kind),
                            Err(FaultKind::Permission),
                            "{va:#x} {a:?} flags {:?}",
                            l.flags
                        );
                    }
                }
            }
        }
        // Random holes fault as not mapped.
        for _ in 0..8 {
            let va = self.g.va(8);
            if self.model.leaf_at(va).is_none() {
                let out = walker::translate(&mem::read_u64, root, va, Access::READ, &cfg);
                assert_eq!(
                    out.map_err(|f| f.kind),
                    Err(FaultKind::NotMapped),
                    "hole {va:#x}"
                );
            }
        }
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
