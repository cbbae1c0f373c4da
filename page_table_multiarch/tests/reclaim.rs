//! Tables emptied by single-page `unmap` are unlinked when a run of unmaps leaves them (at
//! once when the unmap missed the cursor's path cache): never a table that was refilled or
//! replaced in the meantime, never later than a call that an empty linked table would
//! change, and by the next flush at the latest. The path cache itself never holds the root.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{MappingFlags as F, PageSize, x86_64::X64PageTable};
use testkit::alloc::{self, SimHandler};
use testkit::mem;
use testkit::walker::{self, Access};

type T = X64PageTable<SimHandler>;

const RW: F = F::READ.union(F::WRITE);
const M2: usize = 0x20_0000;

fn setup() -> T {
    mem::reset();
    alloc::reset();
    T::try_new().unwrap()
}

fn map4k(t: &mut T, va: usize) {
    t.cursor()
        .map(VirtAddr::from(va), PhysAddr::from(va), PageSize::Size4K, RW)
        .unwrap();
}

fn walks_to(t: &T, va: usize) -> bool {
    let cfg = walker::Config::X86_64(Default::default());
    let root = t.root_paddr().as_usize() as u64;
    walker::translate(&mem::read_u64, root, va as u64, Access::READ, &cfg)
        .is_ok_and(|tr| tr.pa == va as u64)
}

#[test]
fn many_emptied_tables_in_one_cursor() {
    let mut t = setup();
    // One page in each of 40 2 MiB regions: 40 last-level tables under one PD.
    for i in 0..40 {
        map4k(&mut t, 0x4000_0000 + i * M2);
    }
    assert_eq!(t.table_frames(), 1 + 1 + 1 + 40);
    let mut c = t.cursor();
    for i in 0..40 {
        c.unmap(VirtAddr::from(0x4000_0000 + i * M2)).unwrap();
    }
    // The last may still be held by the path cache; `reclaim` unlinks it, and the emptied
    // PD and PDPT with it.
    c.reclaim();
    assert_eq!(c.table_frames(), 1);
    // Nothing is freed before the flush.
    assert_eq!(alloc::live_frames(), 43);
    drop(c);
    assert_eq!(alloc::live_frames(), 1);
}

#[test]
fn a_refilled_table_is_kept() {
    let mut t = setup();
    map4k(&mut t, 0x4000_0000);
    let mut c = t.cursor();
    c.unmap(VirtAddr::from(0x4000_0000)).unwrap();
    c.map(
        VirtAddr::from(0x4000_1000),
        PhysAddr::from(0x4000_1000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    drop(c);
    assert_eq!(t.table_frames(), 4);
    assert_eq!(alloc::live_frames(), 4);
    assert!(walks_to(&t, 0x4000_1000));
}

#[test]
fn a_huge_page_can_replace_an_emptied_table_at_once() {
    let mut t = setup();
    map4k(&mut t, 0x4000_0000);
    let mut c = t.cursor();
    c.unmap(VirtAddr::from(0x4000_0000)).unwrap();
    // The emptied table is unlinked before the 2 MiB page is placed.
    c.map(
        VirtAddr::from(0x4000_0000),
        PhysAddr::from(0x8000_0000),
        PageSize::Size2M,
        RW,
    )
    .unwrap();
    c.map_region(
        VirtAddr::from(0x4000_0000 + M2),
        |va| PhysAddr::from(va.as_usize()),
        M2,
        RW,
        true,
    )
    .unwrap();
    drop(c);
    assert_eq!(t.table_frames(), 3);
    assert_eq!(
        t.query(VirtAddr::from(0x4000_0000 + 8)).unwrap().2,
        PageSize::Size2M
    );
    assert_eq!(alloc::live_frames(), 3);
}

#[test]
fn a_replaced_table_is_not_reclaimed() {
    let mut t = setup();
    map4k(&mut t, 0x4000_0000);
    map4k(&mut t, 0x8000_0000);
    let mut c = t.cursor();
    // Queue the table of 0x4000_0000, then free its whole subtree with a region unmap and
    // map the page again: the path now leads to new tables, which must stay.
    c.unmap(VirtAddr::from(0x4000_0000)).unwrap();
    c.unmap_region(VirtAddr::from(0x4000_0000), 1 << 30)
        .unwrap();
    c.map(
        VirtAddr::from(0x4000_0000),
        PhysAddr::from(0x4000_0000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    drop(c);
    assert!(walks_to(&t, 0x4000_0000));
    assert!(walks_to(&t, 0x8000_0000));
    // Root, PDPT, a PD and a PT for each page.
    assert_eq!(t.table_frames(), 1 + 1 + 2 + 2);
    assert_eq!(alloc::live_frames(), 6);
    drop(t);
    alloc::assert_no_leaks();
}

#[test]
fn cascading_reclaims_of_a_full_queue() {
    let mut t = setup();
    const G1: usize = 0x4000_0000;
    // One page in each of 100 1 GiB regions: 100 PDs, each with one PT, under one PDPT, so
    // every unmap empties a PT and its PD.
    let base = 0x80_0000_0000;
    for i in 0..100 {
        map4k(&mut t, base + i * G1);
    }
    assert_eq!(t.table_frames(), 1 + 1 + 2 * 100);
    let mut c = t.cursor();
    // The first 40 alone (each emptying two tables, more than the 32 frees that wait for
    // a flush at a time); the others interleaved with refills of every third page, whose
    // tables stay.
    let refilled = |i: usize| i >= 40 && i % 3 == 0;
    for i in 0..100 {
        c.unmap(VirtAddr::from(base + i * G1)).unwrap();
        if refilled(i) {
            let va = base + i * G1 + 0x1000;
            c.map(VirtAddr::from(va), PhysAddr::from(va), PageSize::Size4K, RW)
                .unwrap();
        }
    }
    drop(c);
    let kept = (0..100).filter(|&i| refilled(i)).count();
    assert_eq!(t.table_frames(), 1 + 1 + 2 * kept);
    assert_eq!(alloc::live_frames(), t.table_frames());
    for i in 0..100 {
        assert!(!walks_to(&t, base + i * G1));
        assert_eq!(walks_to(&t, base + i * G1 + 0x1000), refilled(i));
    }
    testkit::check::check_counts::<
        testkit::check::X64<page_table_multiarch::x86_64::X64PagingMetaData>,
    >(&t);
}

/// A leaf in the root (a 1 GiB page of Sv39) is never kept as the cursor's path cache, which
/// needs the entry linking its table: later calls through the same cursor, cached or not,
/// work on the right tables.
#[test]
fn a_leaf_in_the_root_is_not_cached() {
    use page_table_multiarch::riscv::Sv39PageTable;
    mem::reset();
    alloc::reset();
    let mut t = Sv39PageTable::<SimHandler>::try_new().unwrap();
    const G1: usize = 0x4000_0000;
    let mut c = t.cursor();
    c.map(
        VirtAddr::from(2 * G1),
        PhysAddr::from(G1),
        PageSize::Size1G,
        RW,
    )
    .unwrap();
    // Through the cache if the map above had kept the root there.
    assert_eq!(
        c.protect(VirtAddr::from(2 * G1 + 0x1000), F::READ),
        Ok(PageSize::Size1G)
    );
    c.map(
        VirtAddr::from(0x1000),
        PhysAddr::from(0x1000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    assert_eq!(
        c.unmap(VirtAddr::from(2 * G1)),
        Ok((PhysAddr::from(G1), F::READ, PageSize::Size1G))
    );
    assert_eq!(
        c.unmap(VirtAddr::from(0x1000)),
        Ok((PhysAddr::from(0x1000), RW, PageSize::Size4K))
    );
    drop(c);
    assert_eq!(alloc::live_frames(), 1);
    drop(t);
    alloc::assert_no_leaks();
}
