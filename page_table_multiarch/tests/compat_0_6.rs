//! Code written against page_table_multiarch 0.6.2 builds and passes unchanged: the README
//! examples, and a randomized map/unmap test with a handler that tracks every frame, like
//! 0.6.2's own `alloc_tests.rs` (with canonical addresses, since non-canonical ones are now
//! rejected).

// The 0.6.2 examples are kept verbatim, literals included.
#![allow(clippy::unusual_byte_groupings)]

use std::alloc::{Layout, alloc, dealloc};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;

use memory_addr::{MemoryAddr, PhysAddr, VirtAddr};
use page_table_entry::{GenericPTE, MappingFlags};
use page_table_multiarch::{PageSize, PageTable64, PagingHandler, PagingMetaData, PagingResult};

thread_local! {
    static LIVE: RefCell<HashSet<usize>> = RefCell::new(HashSet::new());
    static MULTI: RefCell<HashMap<usize, usize>> = RefCell::new(HashMap::new());
}

struct TrackPagingHandler<M: PagingMetaData>(PhantomData<M>);

impl<M: PagingMetaData> PagingHandler for TrackPagingHandler<M> {
    fn alloc_frame() -> Option<PhysAddr> {
        let layout = Layout::from_size_align(0x1000, 0x1000).unwrap();
        // SAFETY: the layout is non-zero sized.
        let ptr = unsafe { alloc(layout) } as usize;
        assert!(ptr <= M::PA_MAX_ADDR);
        LIVE.with(|l| l.borrow_mut().insert(ptr));
        Some(PhysAddr::from(ptr))
    }

    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        let layout = Layout::from_size_align(0x1000 * num, align).unwrap();
        // SAFETY: the layout is non-zero sized.
        let ptr = unsafe { alloc(layout) } as usize;
        LIVE.with(|l| (0..num).for_each(|i| assert!(l.borrow_mut().insert(ptr + i * 0x1000))));
        MULTI.with(|m| m.borrow_mut().insert(ptr, align));
        Some(PhysAddr::from(ptr))
    }

    fn dealloc_frame(paddr: PhysAddr) {
        let ptr = paddr.as_usize();
        assert!(
            LIVE.with(|l| l.borrow_mut().remove(&ptr)),
            "dealloc of a frame that is not live"
        );
        let layout = Layout::from_size_align(0x1000, 0x1000).unwrap();
        // SAFETY: allocated by `alloc_frame` with this layout.
        unsafe { dealloc(ptr as *mut u8, layout) };
    }

    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        let ptr = paddr.as_usize();
        let align = MULTI
            .with(|m| m.borrow_mut().remove(&ptr))
            .expect("dealloc frames that were not allocated");
        LIVE.with(|l| (0..num).for_each(|i| assert!(l.borrow_mut().remove(&(ptr + i * 0x1000)))));
        let layout = Layout::from_size_align(0x1000 * num, align).unwrap();
        // SAFETY: allocated by `alloc_frames` with this layout.
        unsafe { dealloc(ptr as *mut u8, layout) };
    }

    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        assert!(paddr.as_usize() > 0);
        VirtAddr::from(paddr.as_usize())
    }
}

/// A small seeded generator (the 0.6.2 test used `rand::SmallRng`).
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn run_test_for<M, PTE>() -> PagingResult<()>
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    LIVE.with(|l| l.borrow_mut().clear());
    let mut table = PageTable64::<M, PTE, TrackPagingHandler<M>>::try_new().unwrap();
    let mut rng = Rng(1234);
    let mut mapped: Vec<usize> = Vec::new();
    let mut used = HashSet::new();
    // Canonical lower-half addresses.
    let va_mask = ((1u64 << (M::VA_MAX_BITS - 1)) - 1) & !0xfff;
    for _ in 0..2048 {
        let mut cursor = table.cursor();
        if mapped.is_empty() || rng.next_u64() % 4 != 0 {
            let va = loop {
                let va = (rng.next_u64() & va_mask) as usize;
                if used.insert(va) {
                    break va;
                }
            };
            let pa = (rng.next_u64() & va_mask) as usize & M::PA_MAX_ADDR;
            cursor.map(
                VirtAddr::from(va),
                PhysAddr::from(pa),
                PageSize::Size4K,
                MappingFlags::READ | MappingFlags::WRITE,
            )?;
            mapped.push(va);
        } else {
            let va = mapped.swap_remove((rng.next_u64() as usize) % mapped.len());
            cursor.unmap(VirtAddr::from(va))?;
        }
    }
    drop(table);
    assert_eq!(
        LIVE.with(|l| l.borrow().len()),
        0,
        "Some frames were not deallocated"
    );
    Ok(())
}

#[test]
fn test_dealloc_x86() -> PagingResult<()> {
    run_test_for::<page_table_multiarch::x86_64::X64PagingMetaData, page_table_entry::x86_64::X64PTE>(
    )
}

#[test]
fn test_dealloc_riscv() -> PagingResult<()> {
    use page_table_entry::riscv::Rv64PTE;
    use page_table_multiarch::riscv::{Sv39MetaData, Sv48MetaData};
    run_test_for::<Sv39MetaData<VirtAddr>, Rv64PTE>()?;
    run_test_for::<Sv48MetaData<VirtAddr>, Rv64PTE>()
}

#[test]
fn test_dealloc_aarch64() -> PagingResult<()> {
    run_test_for::<
        page_table_multiarch::aarch64::A64PagingMetaData,
        page_table_entry::aarch64::A64PTE,
    >()
}

#[test]
fn test_dealloc_loongarch64() -> PagingResult<()> {
    run_test_for::<
        page_table_multiarch::loongarch64::LA64MetaData,
        page_table_entry::loongarch64::LA64PTE,
    >()
}

/// The page_table_multiarch 0.6.2 README example.
#[test]
fn readme_example_0_6() {
    use page_table_multiarch::x86_64::X64PageTable;

    struct PagingHandlerImpl;
    impl PagingHandler for PagingHandlerImpl {
        fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
            let layout = Layout::from_size_align(0x1000 * num, align).unwrap();
            // SAFETY: the layout is non-zero sized.
            let ptr = unsafe { alloc(layout) };
            Some(PhysAddr::from(ptr as usize))
        }
        fn dealloc_frames(paddr: PhysAddr, num: usize) {
            let layout = Layout::from_size_align(0x1000 * num, 0x1000).unwrap();
            // SAFETY: allocated by `alloc_frames` with this layout.
            unsafe { dealloc(paddr.as_usize() as _, layout) }
        }
        fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
            VirtAddr::from(paddr.as_usize())
        }
    }

    let vaddr = VirtAddr::from(0xdead_beef_000);
    let paddr = PhysAddr::from(0x2000);
    let flags = MappingFlags::READ | MappingFlags::WRITE;
    let mut pt = X64PageTable::<PagingHandlerImpl>::try_new().unwrap();

    assert!(pt.root_paddr().is_aligned_4k());
    assert!(
        pt.cursor()
            .map(vaddr, paddr, PageSize::Size4K, flags)
            .is_ok()
    );
    assert_eq!(pt.query(vaddr), Ok((paddr, flags, PageSize::Size4K)));
}

/// The page_table_entry 0.6.2 README example.
#[test]
fn readme_entry_example_0_6() {
    use page_table_entry::x86_64::X64PTE;
    let paddr = PhysAddr::from(0x233000);
    let pte = X64PTE::new_page(paddr, MappingFlags::READ | MappingFlags::WRITE, false);
    assert!(!pte.is_unused());
    assert!(pte.is_present());
    assert_eq!(pte.paddr(), paddr);
    assert_eq!(pte.bits(), 0x8000_0000_0023_3003);
}
