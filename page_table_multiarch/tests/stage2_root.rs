//! Geometry as data: a RISC-V Sv39x4 G-stage table (41-bit guest-physical addresses, a
//! 16 KiB root of 2048 entries, then Sv39's 512-entry tables) needs nothing but a metadata
//! type written downstream.

use memory_addr::{MemoryAddr, PhysAddr, VirtAddr};
use page_table_entry::riscv::Rv64PTE;
use page_table_multiarch::{MappingFlags as F, PageSize, PageTable64, PagingError, PagingMetaData};
use testkit::alloc::{self, SimHandler};
use testkit::mem;

/// Sv39x4, as a hypervisor crate would define it.
struct Sv39x4;

impl PagingMetaData for Sv39x4 {
    const LEVELS: usize = 3;
    const PA_MAX_BITS: usize = 56;
    const VA_MAX_BITS: usize = 41;
    type VirtAddr = VirtAddr;

    /// Guest-physical addresses are zero-extended: bits 63:41 must be 0.
    fn vaddr_is_valid(vaddr: usize) -> bool {
        vaddr >> 41 == 0
    }

    fn canonicalize(vaddr: usize) -> usize {
        vaddr
    }

    fn flush_tlb(_vaddr: Option<VirtAddr>) {}
}

#[test]
fn sv39x4_root_spans_four_frames() {
    mem::reset();
    alloc::reset();
    type T = PageTable64<Sv39x4, Rv64PTE, SimHandler>;
    assert_eq!(T::GEOMETRY.root_entries, 2048);
    assert_eq!(T::GEOMETRY.root_frames, 4);
    let mut t = T::try_new().unwrap();
    assert!(t.root_paddr().is_aligned(16 * 1024usize));
    assert_eq!(alloc::live_frames(), 4);

    let rwxu = F::READ | F::WRITE | F::EXECUTE | F::USER;
    let top = (1usize << 41) - 0x1000;
    let mut c = t.cursor();
    // The last root entry (index 2047) and one in the first quarter.
    c.map(
        VirtAddr::from(top),
        PhysAddr::from(0x8000_0000),
        PageSize::Size4K,
        rwxu,
    )
    .unwrap();
    c.map(
        VirtAddr::from(0x4000_0000),
        PhysAddr::from(0x4000_0000),
        PageSize::Size1G,
        rwxu,
    )
    .unwrap();
    assert_eq!(
        c.map(
            VirtAddr::from(1usize << 41),
            PhysAddr::from(0),
            PageSize::Size4K,
            rwxu
        ),
        Err(PagingError::InvalidVirtAddr)
    );
    drop(c);
    assert_eq!(
        t.query(VirtAddr::from(top + 0x10)).unwrap().0,
        PhysAddr::from(0x8000_0010)
    );
    assert_eq!(t.table_frames(), 4 + 2);

    // GPA bits 40:30 index the root: the top page sits in entry 2047 (the last 8 bytes of
    // the fourth frame), the 1 GiB page in entry 1 as a leaf (V|R|W|X|U = 0x1f).
    let root = t.root_paddr().as_usize() as u64;
    assert_eq!(
        mem::read_u64(root + 2047 * 8) & 0xf,
        0x1,
        "a table pointer: V only"
    );
    assert_eq!(mem::read_u64(root + 8) & 0x1f, 0x1f);
    assert_eq!(
        (mem::read_u64(root + 8) >> 10 & ((1 << 44) - 1)) << 12,
        0x4000_0000
    );

    t.cursor().unmap(VirtAddr::from(top)).unwrap();
    assert_eq!(t.table_frames(), 4);
    drop(t);
    alloc::assert_no_leaks();
}
