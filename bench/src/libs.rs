//! One round of every workload for each library: this workspace's crate, page_table_multiarch
//! 0.6.2 and the x86_64 crate's `OffsetPageTable`. The three functions do the same work in
//! the same order, each through its library's natural API.

use std::hint::black_box;
use std::time::Instant;

use ::x86_64::VirtAddr as XVirtAddr;
use ::x86_64::structures::paging::mapper::{CleanUp, Mapper, Translate};
use ::x86_64::structures::paging::{
    OffsetPageTable, Page, PageTable, PageTableFlags as PTF, PhysFrame, Size1GiB, Size2MiB,
    Size4KiB,
};
use memory_addr::{PhysAddr, VirtAddr};

use crate::sim::{Sim, SimFrames, SimHandler, alloc_frame, dealloc_frame, p2v};
use crate::{Config, GIB_CALLS, LibRound, Plan, Point, W5_REPEATS, Work};

/// This workspace's x86-64 4-level table.
type Ours = page_table_multiarch::x86_64::X64PageTable<SimHandler>;
/// page_table_multiarch 0.6.2's x86-64 4-level table.
type Old = ptm06::x86_64::X64PageTable<SimHandler>;

const K4: usize = 0x1000;
const M2: usize = 0x20_0000;
const G1: usize = 0x4000_0000;

/// W1–W4 and W6: virtual base; W1–W4 and W6: physical base.
pub const VA_LINEAR: usize = 0x4000_0000;
pub const PA_LINEAR: usize = 0x20_0000_0000;
/// W5: 2 MiB- but not 1 GiB-aligned, so the region takes 2 MiB leaves.
pub const PA_HUGE_2M: usize = 0x20_0020_0000;
/// W5g: 1 GiB-aligned, so each region is one 1 GiB leaf.
pub const PA_HUGE_1G: usize = 0x40_0000_0000;
/// W7: the 256 GiB window (inside one 512 GiB root entry) and the physical base.
pub const VA_RANDOM: usize = 0x80_0000_0000;
pub const PA_RANDOM: usize = 0x30_0000_0000;

/// Nanoseconds taken by `f`.
#[inline(always)]
fn timed(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64
}

fn ours_rw() -> page_table_multiarch::MappingFlags {
    use page_table_multiarch::MappingFlags as F;
    F::READ | F::WRITE
}

fn old_rw() -> pte06::MappingFlags {
    use pte06::MappingFlags as F;
    F::READ | F::WRITE
}

/// The x86_64 crate's encoding of READ | WRITE as the other two produce it.
const X_RW: PTF = PTF::PRESENT.union(PTF::WRITABLE).union(PTF::NO_EXECUTE);
/// READ only.
const X_R: PTF = PTF::PRESENT.union(PTF::NO_EXECUTE);

fn va(a: usize) -> VirtAddr {
    VirtAddr::from(a)
}

fn pa(a: usize) -> PhysAddr {
    PhysAddr::from(a)
}

fn xpage(a: usize) -> Page<Size4KiB> {
    Page::containing_address(XVirtAddr::new(a as u64))
}

fn xframe(a: usize) -> PhysFrame<Size4KiB> {
    PhysFrame::containing_address(::x86_64::PhysAddr::new(a as u64))
}

/// One round for a crate with the page_table_multiarch cursor API (this workspace's and
/// 0.6.2 share it; only the types differ). `$after_w4` gets the table and the live frame
/// count after W4.
macro_rules! cursor_round {
    ($(#[$doc:meta])* $name:ident, $krate:ident, $table:ty, $rw:expr, $ro:expr, $label:literal, $after_w4:expr) => {
        $(#[$doc])*
        pub fn $name(sim: &Sim, cfg: &Config, plan: &Plan) -> LibRound {
    let mut r = LibRound::default();
    let rw = $rw;
    let ro = $ro;
    use $krate::PageSize;

    // W1–W4: single-page operations through one cursor each.
    sim.reset();
    let mut t = <$table>::try_new().expect("root");
    r.set(
        Work::W1Map,
        timed(|| {
            let mut c = t.cursor();
            for i in 0..cfg.pages {
                c.map(
                    va(VA_LINEAR + i * K4),
                    pa(PA_LINEAR + i * K4),
                    PageSize::Size4K,
                    rw,
                )
                .expect("map");
            }
        }),
    );
    let mut sum = 0usize;
    r.set(
        Work::W2Query,
        timed(|| {
            for i in 0..cfg.pages {
                sum =
                    sum.wrapping_add(t.query(va(VA_LINEAR + i * K4)).expect("query").0.as_usize());
            }
        }),
    );
    r.query_sum[0] = black_box(sum);
    r.set(
        Work::W3Protect,
        timed(|| {
            let mut c = t.cursor();
            for i in 0..cfg.pages {
                c.protect(va(VA_LINEAR + i * K4), ro).expect("protect");
            }
        }),
    );
    r.set(
        Work::W4Unmap,
        timed(|| {
            let mut c = t.cursor();
            for i in 0..cfg.pages {
                black_box(c.unmap(va(VA_LINEAR + i * K4)).expect("unmap"));
            }
        }),
    );
    r.frames(Point::W4, sim.live(), None, None);
    ($after_w4)(&t, sim.live());
    drop(t);

    // W5: huge pages, each repetition on a fresh table.
    let mut ns = 0.0;
    for _ in 0..W5_REPEATS {
        sim.reset();
        let mut t = <$table>::try_new().expect("root");
        ns += timed(|| {
            t.cursor()
                .map_region(
                    va(VA_LINEAR),
                    |v| pa(v.as_usize() - VA_LINEAR + PA_HUGE_2M),
                    cfg.region,
                    rw,
                    true,
                )
                .expect("map_region huge")
        });
        let (_, _, size) = t.query(va(VA_LINEAR)).expect("query huge");
        assert_eq!(size, PageSize::Size2M);
    }
    r.set(Work::W5Huge2M, ns);
    let mut ns = 0.0;
    for _ in 0..W5_REPEATS {
        sim.reset();
        let mut t = <$table>::try_new().expect("root");
        ns += timed(|| {
            for g in 0..GIB_CALLS {
                t.cursor()
                    .map_region(
                        va(VA_LINEAR + g * G1),
                        |v| pa(v.as_usize() - VA_LINEAR + PA_HUGE_1G),
                        G1,
                        rw,
                        true,
                    )
                    .expect("map_region 1G");
            }
        });
        assert_eq!(
            t.query(va(VA_LINEAR)).expect("query 1G").2,
            PageSize::Size1G
        );
    }
    r.set(Work::W5Huge1G, ns);

    // W6: region operations with 4 KiB pages.
    sim.reset();
    let mut t = <$table>::try_new().expect("root");
    r.set(
        Work::W6Map,
        timed(|| {
            t.cursor()
                .map_region(
                    va(VA_LINEAR),
                    |v| pa(v.as_usize() - VA_LINEAR + PA_LINEAR),
                    cfg.region,
                    rw,
                    false,
                )
                .expect("map_region")
        }),
    );
    r.set(
        Work::W6Protect,
        timed(|| {
            t.cursor()
                .protect_region(va(VA_LINEAR), cfg.region, ro)
                .expect("protect_region")
        }),
    );
    r.set(
        Work::W6Unmap,
        timed(|| {
            t.cursor()
                .unmap_region(va(VA_LINEAR), cfg.region)
                .expect("unmap_region")
        }),
    );
    r.frames(Point::W6, sim.live(), None, None);
    drop(t);

    // W7: random single pages.
    sim.reset();
    let mut t = <$table>::try_new().expect("root");
    r.set(
        Work::W7Map,
        timed(|| {
            let mut c = t.cursor();
            for &k in &plan.map_order {
                c.map(
                    va(VA_RANDOM + k * K4),
                    pa(PA_RANDOM + k * K4),
                    PageSize::Size4K,
                    rw,
                )
                .expect("map");
            }
        }),
    );
    let mut sum = 0usize;
    r.set(
        Work::W7Query,
        timed(|| {
            for &k in &plan.query_order {
                sum =
                    sum.wrapping_add(t.query(va(VA_RANDOM + k * K4)).expect("query").0.as_usize());
            }
        }),
    );
    r.query_sum[1] = black_box(sum);
    r.set(
        Work::W7Unmap,
        timed(|| {
            let mut c = t.cursor();
            for &k in &plan.unmap_order {
                black_box(c.unmap(va(VA_RANDOM + k * K4)).expect("unmap"));
            }
        }),
    );
    r.frames(Point::W7, sim.live(), None, None);
    drop(t);
    assert_eq!(sim.live(), 0, concat!($label, " leaked frames"));
    r
}
    };
}

cursor_round!(
    /// One round for this workspace's crate.
    round_ours,
    page_table_multiarch,
    Ours,
    ours_rw(),
    page_table_multiarch::MappingFlags::READ,
    "ours",
    |t: &Ours, live: usize| assert_eq!(t.table_frames(), live, "table_frames disagrees")
);

cursor_round!(
    /// One round for page_table_multiarch 0.6.2.
    round_old,
    ptm06,
    Old,
    old_rw(),
    ptm06::MappingFlags::READ,
    "0.6.2",
    |_: &Old, _: usize| {}
);

/// An x86_64-crate page table over simulated memory. It owns its level-4 frame; dropping it
/// frees every table below (the crate itself frees tables only through `CleanUp`).
struct XTable {
    root: usize,
    offset: u64,
}

impl XTable {
    fn new(sim: &Sim) -> Self {
        let root = alloc_frame().expect("root");
        // SAFETY: `root` is a fresh 4 KiB frame of simulated memory that nothing else uses.
        unsafe { std::ptr::write_bytes(p2v(root) as *mut u8, 0, K4) };
        Self {
            root,
            offset: sim.phys_offset(),
        }
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: `root` is this table's live level-4 frame, borrowed mutably through
        // `self`; every table below it lives in simulated memory, whose host address is the
        // physical address plus `offset`.
        unsafe {
            OffsetPageTable::new(
                &mut *(p2v(self.root) as *mut PageTable),
                XVirtAddr::new(self.offset),
            )
        }
    }
}

/// Frees the table at `pa` (level `level`, 4 = root) and every table below it.
fn free_x_tree(pa: usize, level: u8) {
    if level > 1 {
        // SAFETY: `pa` is a live table frame of an `XTable` that is being dropped.
        let table = unsafe { &*(p2v(pa) as *const PageTable) };
        for entry in table.iter() {
            let flags = entry.flags();
            if flags.contains(PTF::PRESENT) && (level == 4 || !flags.contains(PTF::HUGE_PAGE)) {
                free_x_tree(entry.addr().as_u64() as usize, level - 1);
            }
        }
    }
    dealloc_frame(pa);
}

impl Drop for XTable {
    fn drop(&mut self) {
        free_x_tree(self.root, 4);
    }
}

/// Runs `clean_up` and returns its time.
fn clean_up(t: &mut XTable) -> f64 {
    let mut m = t.mapper();
    timed(|| {
        // SAFETY: every table frame of this table is used once, only by this table.
        unsafe { m.clean_up(&mut SimFrames) }
    })
}

/// One round for the x86_64 crate.
pub fn round_x86(sim: &Sim, cfg: &Config, plan: &Plan) -> LibRound {
    let mut r = LibRound::default();

    sim.reset();
    let mut t = XTable::new(sim);
    r.set(
        Work::W1Map,
        timed(|| {
            let mut m = t.mapper();
            for i in 0..cfg.pages {
                // SAFETY: the frame is a made-up address that no one accesses.
                unsafe {
                    m.map_to(
                        xpage(VA_LINEAR + i * K4),
                        xframe(PA_LINEAR + i * K4),
                        X_RW,
                        &mut SimFrames,
                    )
                }
                .expect("map_to")
                .ignore();
            }
        }),
    );
    let mut sum = 0usize;
    r.set(
        Work::W2Query,
        timed(|| {
            let m = t.mapper();
            for i in 0..cfg.pages {
                let addr = m
                    .translate_addr(XVirtAddr::new((VA_LINEAR + i * K4) as u64))
                    .expect("translate");
                sum = sum.wrapping_add(addr.as_u64() as usize);
            }
        }),
    );
    r.query_sum[0] = black_box(sum);
    r.set(
        Work::W3Protect,
        timed(|| {
            let mut m = t.mapper();
            for i in 0..cfg.pages {
                // SAFETY: only the flags of a made-up mapping change.
                unsafe { m.update_flags(xpage(VA_LINEAR + i * K4), X_R) }
                    .expect("update_flags")
                    .ignore();
            }
        }),
    );
    r.set(
        Work::W4Unmap,
        timed(|| {
            let mut m = t.mapper();
            for i in 0..cfg.pages {
                let (frame, flush) = m.unmap(xpage(VA_LINEAR + i * K4)).expect("unmap");
                flush.ignore();
                black_box(frame);
            }
        }),
    );
    let before = sim.live();
    let ns = clean_up(&mut t);
    r.frames(Point::W4, before, Some(sim.live()), Some(ns));
    drop(t);

    let mut ns = 0.0;
    for _ in 0..W5_REPEATS {
        sim.reset();
        let mut t = XTable::new(sim);
        ns += timed(|| {
            let mut m = t.mapper();
            for off in (0..cfg.region).step_by(M2) {
                let page =
                    Page::<Size2MiB>::containing_address(XVirtAddr::new((VA_LINEAR + off) as u64));
                let frame = PhysFrame::<Size2MiB>::containing_address(::x86_64::PhysAddr::new(
                    (PA_HUGE_2M + off) as u64,
                ));
                // SAFETY: the frame is a made-up address that no one accesses.
                unsafe { m.map_to(page, frame, X_RW, &mut SimFrames) }
                    .expect("map_to 2M")
                    .ignore();
            }
        });
        drop(t);
    }
    r.set(Work::W5Huge2M, ns);
    let mut ns = 0.0;
    for _ in 0..W5_REPEATS {
        sim.reset();
        let mut t = XTable::new(sim);
        ns += timed(|| {
            let mut m = t.mapper();
            for g in 0..GIB_CALLS {
                let page = Page::<Size1GiB>::containing_address(XVirtAddr::new(
                    (VA_LINEAR + g * G1) as u64,
                ));
                let frame = PhysFrame::<Size1GiB>::containing_address(::x86_64::PhysAddr::new(
                    (PA_HUGE_1G + g * G1) as u64,
                ));
                // SAFETY: the frame is a made-up address that no one accesses.
                unsafe { m.map_to(page, frame, X_RW, &mut SimFrames) }
                    .expect("map_to 1G")
                    .ignore();
            }
        });
        drop(t);
    }
    r.set(Work::W5Huge1G, ns);

    sim.reset();
    let mut t = XTable::new(sim);
    let pages = cfg.region / K4;
    r.set(
        Work::W6Map,
        timed(|| {
            let mut m = t.mapper();
            for i in 0..pages {
                // SAFETY: the frame is a made-up address that no one accesses.
                unsafe {
                    m.map_to(
                        xpage(VA_LINEAR + i * K4),
                        xframe(PA_LINEAR + i * K4),
                        X_RW,
                        &mut SimFrames,
                    )
                }
                .expect("map_to")
                .ignore();
            }
        }),
    );
    r.set(
        Work::W6Protect,
        timed(|| {
            let mut m = t.mapper();
            for i in 0..pages {
                // SAFETY: only the flags of a made-up mapping change.
                unsafe { m.update_flags(xpage(VA_LINEAR + i * K4), X_R) }
                    .expect("update_flags")
                    .ignore();
            }
        }),
    );
    r.set(
        Work::W6Unmap,
        timed(|| {
            let mut m = t.mapper();
            for i in 0..pages {
                let (frame, flush) = m.unmap(xpage(VA_LINEAR + i * K4)).expect("unmap");
                flush.ignore();
                black_box(frame);
            }
        }),
    );
    let before = sim.live();
    let ns = clean_up(&mut t);
    r.frames(Point::W6, before, Some(sim.live()), Some(ns));
    drop(t);

    sim.reset();
    let mut t = XTable::new(sim);
    r.set(
        Work::W7Map,
        timed(|| {
            let mut m = t.mapper();
            for &k in &plan.map_order {
                // SAFETY: the frame is a made-up address that no one accesses.
                unsafe {
                    m.map_to(
                        xpage(VA_RANDOM + k * K4),
                        xframe(PA_RANDOM + k * K4),
                        X_RW,
                        &mut SimFrames,
                    )
                }
                .expect("map_to")
                .ignore();
            }
        }),
    );
    let mut sum = 0usize;
    r.set(
        Work::W7Query,
        timed(|| {
            let m = t.mapper();
            for &k in &plan.query_order {
                let addr = m
                    .translate_addr(XVirtAddr::new((VA_RANDOM + k * K4) as u64))
                    .expect("translate");
                sum = sum.wrapping_add(addr.as_u64() as usize);
            }
        }),
    );
    r.query_sum[1] = black_box(sum);
    r.set(
        Work::W7Unmap,
        timed(|| {
            let mut m = t.mapper();
            for &k in &plan.unmap_order {
                let (frame, flush) = m.unmap(xpage(VA_RANDOM + k * K4)).expect("unmap");
                flush.ignore();
                black_box(frame);
            }
        }),
    );
    let before = sim.live();
    let ns = clean_up(&mut t);
    r.frames(Point::W7, before, Some(sim.live()), Some(ns));
    drop(t);
    assert_eq!(sim.live(), 0, "x86_64 tables not all freed");
    r
}
