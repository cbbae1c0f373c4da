//! `copy_from` ownership: shared subtrees stay owned by the lender and cannot dangle,
//! whichever table is changed or dropped first. Each test walks the borrower with the
//! reference walker after the lender changed or went away; freed frames are poisoned by the
//! test kit, so a dangling link would show as a bad walk, and a double free panics.
#![cfg(feature = "copy-from")]

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{MappingFlags as F, PageSize, PagingError, x86_64::X64PageTable};
use testkit::alloc::{self, SimHandler};
use testkit::mem;
use testkit::walker::{self, Access, FaultKind};

type T = X64PageTable<SimHandler>;

const KERNEL: usize = 0xffff_8000_0000_0000;

fn walk(t: &T, va: usize) -> Result<u64, FaultKind> {
    let cfg = walker::Config::X86_64(Default::default());
    walker::translate(
        &mem::read_u64,
        t.root_paddr().as_usize() as u64,
        va as u64,
        Access::READ,
        &cfg,
    )
    .map(|t| t.pa)
    .map_err(|f| f.kind)
}

/// A lender with 8 MiB of 4 KiB kernel pages under one root entry (1 PDPT, 1 PD, 4 PTs),
/// and a borrower sharing that root entry.
fn lender_and_borrower() -> (T, T) {
    mem::reset();
    alloc::reset();
    let mut src = T::try_new().unwrap();
    src.cursor()
        .map_region(
            VirtAddr::from(KERNEL),
            |v| PhysAddr::from(v.as_usize() - KERNEL),
            8 << 20,
            F::READ | F::GLOBAL,
            false,
        )
        .unwrap();
    assert_eq!(src.table_frames(), 1 + 1 + 1 + 4);
    let mut dst = T::try_new().unwrap();
    dst.cursor()
        .copy_from(&src, VirtAddr::from(KERNEL), 1 << 39);
    assert_eq!(walk(&dst, KERNEL + 0x5008), Ok(0x5008));
    (src, dst)
}

#[test]
fn lender_dropped_first_leaves_the_borrower_intact() {
    let (src, dst) = lender_and_borrower();
    drop(src);
    // The lent subtree (6 tables) was not freed: the borrower still translates.
    assert_eq!(alloc::live_frames(), 1 + 6);
    assert_eq!(walk(&dst, KERNEL + 0x5008), Ok(0x5008));
    assert_eq!(walk(&dst, KERNEL + (8 << 20) - 8), Ok((8 << 20) - 8));
    assert_eq!(
        dst.query(VirtAddr::from(KERNEL + 0x7_f000)),
        Ok((
            PhysAddr::from(0x7_f000),
            F::READ | F::GLOBAL,
            PageSize::Size4K
        ))
    );
    drop(dst);
    // The borrower does not free what it borrowed either: the lent tables stay allocated
    // (documented), and nothing was freed twice.
    assert_eq!(alloc::live_frames(), 6);
}

#[test]
fn borrower_dropped_first_frees_nothing_shared() {
    let (src, dst) = lender_and_borrower();
    drop(dst);
    assert_eq!(alloc::live_frames(), 7);
    assert_eq!(
        src.query(VirtAddr::from(KERNEL)).unwrap().0,
        PhysAddr::from(0)
    );
    drop(src);
    // A lender dropped after lending keeps its lent subtree allocated.
    assert_eq!(alloc::live_frames(), 6);
}

#[test]
fn lender_unmapping_keeps_the_lent_table_linked() {
    let (mut src, dst) = lender_and_borrower();
    // Unmap everything through the lender: the tables below the lent PDPT are freed (both
    // tables see them unlinked), the PDPT stays linked in both roots.
    src.cursor()
        .unmap_region(VirtAddr::from(KERNEL), 8 << 20)
        .unwrap();
    assert_eq!(src.table_frames(), 2);
    assert_eq!(alloc::live_frames(), 2 + 1);
    assert_eq!(walk(&dst, KERNEL + 0x5008), Err(FaultKind::NotMapped));
    // Mapping again through the lender shows in the borrower: the link is still shared.
    src.cursor()
        .map(
            VirtAddr::from(KERNEL + (1 << 30)),
            PhysAddr::from(0x4000_0000),
            PageSize::Size1G,
            F::READ | F::WRITE | F::GLOBAL,
        )
        .unwrap();
    assert_eq!(walk(&dst, KERNEL + (1 << 30) + 16), Ok(0x4000_0010));
    // A single-page unmap that empties the PDPT does not unlink it either.
    src.cursor()
        .unmap(VirtAddr::from(KERNEL + (1 << 30)))
        .unwrap();
    assert_eq!(src.table_frames(), 2);
    assert_eq!(
        walk(&dst, KERNEL + (1 << 30) + 16),
        Err(FaultKind::NotMapped)
    );
    // Unmapping the whole 512 GiB of the root entry keeps it too.
    src.cursor()
        .unmap_region(VirtAddr::from(KERNEL), 1 << 39)
        .unwrap();
    assert_eq!(src.table_frames(), 2);
    drop(dst);
    drop(src);
    assert_eq!(alloc::live_frames(), 1);
}

#[test]
fn lender_copying_over_a_lent_entry_keeps_it_for_the_borrower() {
    let (mut src, dst) = lender_and_borrower();
    let other = T::try_new().unwrap();
    // The lender replaces its own lent root entry with another table's (empty) one: its
    // subtree becomes unreachable from it, but the borrower still walks it.
    src.cursor()
        .copy_from(&other, VirtAddr::from(KERNEL), 1 << 39);
    assert_eq!(
        src.query(VirtAddr::from(KERNEL)),
        Err(PagingError::NotMapped)
    );
    assert_eq!(walk(&dst, KERNEL + 0x5008), Ok(0x5008));
    drop(src);
    drop(other);
    drop(dst);
    assert_eq!(alloc::live_frames(), 6);
}

#[test]
fn a_chain_of_borrowers_marks_the_owner() {
    let (src, mid) = lender_and_borrower();
    let mut last = T::try_new().unwrap();
    last.cursor()
        .copy_from(&mid, VirtAddr::from(KERNEL), 1 << 39);
    drop(mid);
    drop(src);
    assert_eq!(walk(&last, KERNEL + 0x5008), Ok(0x5008));
    drop(last);
    assert_eq!(alloc::live_frames(), 6);
}

#[test]
fn tables_that_never_lent_free_everything() {
    mem::reset();
    alloc::reset();
    let mut src = T::try_new().unwrap();
    src.cursor()
        .map_region(
            VirtAddr::from(KERNEL),
            |v| PhysAddr::from(v.as_usize() - KERNEL),
            8 << 20,
            F::READ,
            false,
        )
        .unwrap();
    // An empty root entry of the source is copied as empty and lends nothing.
    let mut dst = T::try_new().unwrap();
    dst.cursor()
        .copy_from(&src, VirtAddr::from(KERNEL + (1 << 39)), 1 << 39);
    drop(dst);
    drop(src);
    alloc::assert_no_leaks();
}
