//! TLB discipline, observed through a recording metadata: which invalidations each change
//! requests, the per-architecture thresholds, break-before-make on AArch64, tables freed only
//! after a flush that covers them, and pluggable invalidation.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    FlushBatch, GenericPTE, MappingFlags as F, PageSize, PageTable64, PagingMetaData,
    TlbInvalidate, aarch64, riscv, x86_64,
};
use testkit::alloc::{self, SimHandler};
use testkit::flush::{self, Event, Recording};
use testkit::mem;

const RW: F = F::READ.union(F::WRITE);
const K4: usize = 0x1000;
const M2: usize = 0x20_0000;

type X64 =
    PageTable64<Recording<x86_64::X64PagingMetaData>, page_table_entry::x86_64::X64PTE, SimHandler>;
type A64 = PageTable64<
    Recording<aarch64::A64PagingMetaData>,
    page_table_entry::aarch64::A64PTE,
    SimHandler,
>;
type Sv39 = PageTable64<
    Recording<riscv::Sv39MetaData<VirtAddr>>,
    page_table_entry::riscv::Rv64PTE,
    SimHandler,
>;

fn va(x: usize) -> VirtAddr {
    VirtAddr::from(x)
}
fn pa(x: usize) -> PhysAddr {
    PhysAddr::from(x)
}

fn fresh<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() -> PageTable64<M, P, SimHandler> {
    mem::reset();
    alloc::reset();
    flush::reset();
    let t = PageTable64::try_new().unwrap();
    flush::take_flushes();
    t
}

#[test]
fn per_page_flushes_then_full_above_threshold() {
    let mut t = fresh::<Recording<x86_64::X64PagingMetaData>, _>() as X64;
    let mut c = t.cursor();
    for i in 0..3 {
        c.map(va(0x4000_0000 + i * K4), pa(i * K4), PageSize::Size4K, RW)
            .unwrap();
    }
    assert!(
        flush::take_flushes().is_empty(),
        "nothing is flushed before the cursor flushes"
    );
    drop(c);
    assert_eq!(
        flush::take_flushes(),
        [0x4000_0000, 0x4000_1000, 0x4000_2000].map(Some)
    );

    // x86's threshold is 33 pages; 34 become one full flush.
    t.cursor()
        .map_region(va(0x5000_0000), |v| pa(v.as_usize()), 34 * K4, RW, false)
        .unwrap();
    assert_eq!(flush::take_flushes(), [None]);
    t.cursor()
        .protect_region(va(0x5000_0000), 33 * K4, F::READ)
        .unwrap();
    assert_eq!(flush::take_flushes().len(), 33);

    // Upper-half addresses are flushed in their canonical form.
    t.cursor()
        .map(va(0xffff_8000_0000_0000), pa(0), PageSize::Size2M, RW)
        .unwrap();
    assert_eq!(flush::take_flushes(), [Some(0xffff_8000_0000_0000)]);
}

#[test]
fn tables_are_freed_only_after_a_flush() {
    let mut t = fresh::<Recording<x86_64::X64PagingMetaData>, _>() as X64;
    t.cursor()
        .map(va(0x7000_0000_0000), pa(0x1000), PageSize::Size4K, RW)
        .unwrap();
    flush::record_events(true);
    flush::take_events();
    let mut c = t.cursor();
    c.unmap(va(0x7000_0000_0000)).unwrap();
    // Three tables became empty; none is freed before the flush.
    assert!(
        flush::take_events()
            .iter()
            .all(|e| !matches!(e, Event::Free(..)))
    );
    drop(c);
    let events = flush::take_events();
    let frees = events
        .iter()
        .filter(|e| matches!(e, Event::Free(..)))
        .count();
    assert_eq!(frees, 3);
    let first_free = events
        .iter()
        .position(|e| matches!(e, Event::Free(..)))
        .unwrap();
    assert_eq!(
        events[..first_free],
        [Event::Flush(Some(0x7000_0000_0000))],
        "invlpg drops table caches too"
    );
    assert_eq!(alloc::live_frames(), 1);
}

#[test]
fn riscv_frees_tables_after_a_full_fence() {
    // `sfence.vma` with an address orders leaf entries only: freeing a table needs a full one.
    let mut t = fresh::<Recording<riscv::Sv39MetaData<VirtAddr>>, _>() as Sv39;
    t.cursor()
        .map(va(0x10_0000_0000), pa(0x1000), PageSize::Size4K, RW)
        .unwrap();
    flush::take_flushes();
    flush::record_events(true);
    t.cursor().unmap(va(0x10_0000_0000)).unwrap();
    let events = flush::take_events();
    assert!(
        flush::unflushed_frees(&events, |f, _| f.is_none()).is_empty(),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Free(..)))
            .count(),
        2
    );
}

#[test]
fn aarch64_split_breaks_before_make() {
    let mut t = fresh::<Recording<aarch64::A64PagingMetaData>, _>() as A64;
    t.cursor()
        .map(va(0x4000_0000), pa(0x8000_0000), PageSize::Size2M, RW)
        .unwrap();
    flush::take_flushes();
    let mut c = t.cursor();
    c.protect_region(va(0x4000_0000 + 5 * K4), K4, F::READ)
        .unwrap();
    // The block was invalidated and flushed during the call, before the table went in.
    assert_eq!(flush::take_flushes(), [Some(0x4000_0000)]);
    drop(c);
    assert_eq!(flush::take_flushes(), [Some(0x4000_5000)]);
    assert_eq!(t.query(va(0x4000_5000)).unwrap().1, F::READ);
    assert_eq!(
        t.query(va(0x4000_6000)).unwrap(),
        (pa(0x8000_6000), RW, PageSize::Size4K)
    );

    // remap to another address breaks before make too; a permission change does not.
    let mut c = t.cursor();
    c.remap(va(0x4000_6000), pa(0x9000_0000), RW).unwrap();
    assert_eq!(flush::take_flushes(), [Some(0x4000_6000)]);
    c.protect(va(0x4000_6000), F::READ).unwrap();
    assert!(flush::take_flushes().is_empty());
}

#[test]
fn x86_split_needs_no_break() {
    let mut t = fresh::<Recording<x86_64::X64PagingMetaData>, _>() as X64;
    t.cursor()
        .map(va(0x4000_0000), pa(0x8000_0000), PageSize::Size2M, RW)
        .unwrap();
    flush::take_flushes();
    let mut c = t.cursor();
    c.protect_region(va(0x4000_0000 + 5 * K4), K4, F::READ)
        .unwrap();
    assert!(flush::take_flushes().is_empty());
    drop(c);
    assert_eq!(flush::take_flushes(), [Some(0x4000_5000)]);
}

/// One batch as seen by an invalidator: `(start, end, page_size)` ranges, everything,
/// tables freed.
type Seen = (Vec<(usize, usize, usize)>, bool, bool);

/// A remote/ASID-aware invalidator sees the ranges.
#[derive(Default)]
struct Capture {
    batches: Vec<Seen>,
}

impl<M: PagingMetaData> TlbInvalidate<M> for Capture {
    fn invalidate(&mut self, batch: &FlushBatch<'_>) {
        self.batches.push((
            batch.ranges().collect(),
            batch.everything(),
            batch.tables_freed(),
        ));
    }
}

#[test]
fn custom_invalidator_gets_the_ranges() {
    let mut t = fresh::<Recording<x86_64::X64PagingMetaData>, _>() as X64;
    let mut capture = Capture::default();
    let mut c = t.cursor_with(&mut capture);
    c.map_region(va(0x4000_0000), |v| pa(v.as_usize()), 100 * K4, RW, false)
        .unwrap();
    c.map(va(0x8000_0000), pa(0), PageSize::Size2M, RW).unwrap();
    c.flush();
    c.unmap_region(va(0x4000_0000), 100 * K4).unwrap();
    drop(c);
    assert!(
        flush::take_flushes().is_empty(),
        "the custom invalidator replaces flush_tlb"
    );
    assert_eq!(
        capture.batches,
        [
            (
                vec![
                    (0x4000_0000, 0x4006_4000, K4),
                    (0x8000_0000, 0x8020_0000, M2)
                ],
                false,
                false
            ),
            (vec![(0x4000_0000, 0x4006_4000, K4)], false, true),
        ]
    );
}

#[test]
fn immediate_api_returns_tokens_and_flushes_before_freeing() {
    let mut t = fresh::<Recording<x86_64::X64PagingMetaData>, _>() as X64;
    let token = t
        .map(va(0x4000_0000), pa(0x1000), PageSize::Size4K, RW)
        .unwrap();
    assert!(
        flush::take_flushes().is_empty(),
        "the caller owns the flush"
    );
    token.flush();
    assert_eq!(flush::take_flushes(), [Some(0x4000_0000)]);
    let (paddr, size, token) = t.unmap(va(0x4000_0000)).unwrap();
    assert_eq!((paddr, size), (pa(0x1000), PageSize::Size4K));
    // Tables were freed, so the call flushed before freeing them.
    assert_eq!(flush::take_flushes(), [Some(0x4000_0000)]);
    token.ignore();
    assert_eq!(alloc::live_frames(), 1);
    t.map_region(
        va(0x4000_0000),
        |v| pa(v.as_usize()),
        4 * K4,
        RW,
        false,
        false,
    )
    .unwrap()
    .flush_all();
    assert_eq!(flush::take_flushes(), [None]);
    t.protect_region(va(0x4000_0000), 2 * K4, F::READ, true)
        .unwrap()
        .ignore();
    assert_eq!(
        flush::take_flushes(),
        [Some(0x4000_0000), Some(0x4000_1000)]
    );
}
