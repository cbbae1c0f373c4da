//! LoongArch's `LDDIR` has no valid bit: a zero directory entry makes the walker read
//! physical page 0 as a table (found by the MMU oracle on QEMU). Empty directory slots must
//! link to an invalid table instead, at every level, at all times.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_entry::loongarch64::LA64PTE;
use page_table_multiarch::{MappingFlags as F, PageSize, loongarch64::LA64PageTable};
use testkit::alloc::{self, SimHandler};
use testkit::mem;
use testkit::walker::{self, Access, FaultKind};

const RW: F = F::READ.union(F::WRITE);

/// Every directory entry (levels above the last) reachable from `table` at `height`;
/// returns how many there are, and fails on a zero one.
fn check_directories(table: u64, height: usize, invalid: u64) -> usize {
    let mut seen = 0;
    for i in 0..512 {
        let e = mem::read_u64(table + i * 8);
        assert_ne!(
            e, 0,
            "zero directory entry {i} in the table at {table:#x} (height {height})"
        );
        seen += 1;
        let next = e & 0x0000_ffff_ffff_f000;
        let huge = e & (1 << 6) != 0;
        if height > 1 && !huge && next != invalid {
            seen += check_directories(next, height - 1, invalid);
        }
    }
    seen
}

#[test]
fn empty_directory_slots_link_to_an_invalid_table() {
    mem::reset();
    alloc::reset();
    let mut t = LA64PageTable::<SimHandler>::try_new().unwrap();
    // The root and the invalid table.
    assert_eq!(t.table_frames(), 2);
    assert_eq!(LA64PageTable::<SimHandler>::BASE_FRAMES, 2);
    let root = t.root_paddr().as_usize() as u64;
    let invalid = mem::read_u64(root) & 0x0000_ffff_ffff_f000;
    assert_ne!(invalid, 0);
    // The invalid table links to itself everywhere, so every walk through it ends in an
    // invalid leaf.
    for i in 0..512 {
        assert_eq!(mem::read_u64(invalid + i * 8), invalid);
    }
    check_directories(root, 3, invalid);

    let mut c = t.cursor();
    c.map(
        VirtAddr::from(0x1000_0000),
        PhysAddr::from(0x8000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    // A 2 MiB page in the directory the 4 KiB page created (its slot links to the invalid
    // table, which is empty, not mapped).
    c.map(
        VirtAddr::from(0x1040_0000),
        PhysAddr::from(0x20_0000),
        PageSize::Size2M,
        RW,
    )
    .unwrap();
    c.map_region(
        VirtAddr::from(0x4000_0000),
        |v| PhysAddr::from(v.as_usize()),
        0x40_0000,
        RW,
        true,
    )
    .unwrap();
    drop(c);
    check_directories(root, 3, invalid);

    // Unmapped neighbours fault as not mapped on the reference walker (page 0 holds junk).
    mem::write_u64(0, 0x19f);
    for va in [
        0x0fff_f000u64,
        0x1000_1000,
        0x1020_0000,
        0x3fe0_0000,
        0x8000_0000_0000 - 0x1000,
    ] {
        let out = walker::translate(
            &mem::read_u64,
            root,
            va,
            Access::READ,
            &walker::Config::LoongArch64(Default::default()),
        );
        assert_eq!(
            out.map_err(|f| f.kind),
            Err(FaultKind::NotMapped),
            "{va:#x}"
        );
    }

    // Unmapping everything puts invalid links back, and frees every table.
    let mut c = t.cursor();
    c.unmap(VirtAddr::from(0x1000_0000)).unwrap();
    c.unmap_region(VirtAddr::from(0), 0x8000_0000).unwrap();
    drop(c);
    assert_eq!(t.table_frames(), 2);
    assert_eq!(alloc::live_frames(), 2);
    check_directories(root, 3, invalid);
    let _ = LA64PTE::empty();
    drop(t);
    alloc::assert_no_leaks();
}
