//! A tour of the library: builds a realistic kernel address space for every supported
//! format in simulated physical memory, prints each table, then changes it the way a kernel
//! does (mprotect inside a huge page, munmap) and shows the frames coming back.
//!
//! Run with `cargo run --example tour`.

use std::alloc::{Layout, alloc_zeroed};
use std::cell::{Cell, RefCell};

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    GenericPTE, MappingFlags as F, PageSize, PageTable64, PagingHandler, PagingMetaData, aarch64,
    loongarch64, riscv, x86_64,
};

/// Simulated physical memory: 64 MiB of host memory standing for physical addresses
/// `[RAM_BASE, RAM_BASE + RAM_SIZE)`, handed out as 4 KiB frames (what a kernel's frame
/// allocator does).
const RAM_BASE: usize = 0x8000_0000;
const RAM_SIZE: usize = 64 << 20;

thread_local! {
    static HOST: Cell<usize> = const { Cell::new(0) };
    static NEXT: Cell<usize> = const { Cell::new(RAM_BASE) };
    static FREE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

struct Frames;

impl PagingHandler for Frames {
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        if HOST.get() == 0 {
            // SAFETY: a non-zero, page-aligned layout.
            HOST.set(
                unsafe { alloc_zeroed(Layout::from_size_align(RAM_SIZE, 4096).unwrap()) } as usize,
            );
        }
        if num == 1 {
            if let Some(pa) = FREE.with(|f| f.borrow_mut().pop()) {
                LIVE.set(LIVE.get() + 1);
                return Some(PhysAddr::from(pa));
            }
        }
        let pa = NEXT.get().next_multiple_of(align);
        if pa + num * 4096 > RAM_BASE + RAM_SIZE {
            return None;
        }
        NEXT.set(pa + num * 4096);
        LIVE.set(LIVE.get() + num);
        Some(PhysAddr::from(pa))
    }

    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        LIVE.set(LIVE.get() - num);
        FREE.with(|f| (0..num).for_each(|i| f.borrow_mut().push(paddr.as_usize() + i * 4096)));
    }

    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from(HOST.get() + paddr.as_usize() - RAM_BASE)
    }
}

const KB: usize = 1 << 10;
const MB: usize = 1 << 20;
const GB: usize = 1 << 30;

fn tour<M, PTE>(name: &str)
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let upper = usize::MAX << (M::VA_MAX_BITS - 1);
    let linear = upper; // physical memory mapped at the start of the upper half
    let kernel = 0xffff_ffff_8000_0000_usize; // the kernel image in the top 2 GiB
    let kernel_pa = 0x4020_0000_usize;
    let mmio = linear + 0x1000_0000; // a device window inside the linear map's range
    let user_stack_top = 0x40_0000_0000_usize - 4 * KB; // inside every lower half (>= 39 bits)

    let mut pt = PageTable64::<M, PTE, Frames>::try_new().expect("root");
    let root_frames = LIVE.get();
    {
        let mut c = pt.cursor();
        let at = |base: usize, off: usize| VirtAddr::from(base + off);
        // Kernel mappings are global: every address space shares them, so their TLB entries
        // survive address-space switches. User mappings are not (tagged with the ASID).
        let k = F::GLOBAL;
        // Kernel image: text RX, rodata R, data and bss RW + NX.
        c.map_region(
            at(kernel, 0),
            |va| PhysAddr::from(va.as_usize() - kernel + kernel_pa),
            2 * MB,
            F::READ | F::EXECUTE | k,
            true,
        )
        .unwrap();
        c.map_region(
            at(kernel, 2 * MB),
            |va| PhysAddr::from(va.as_usize() - kernel + kernel_pa),
            512 * KB,
            F::READ | k,
            true,
        )
        .unwrap();
        c.map_region(
            at(kernel, 2 * MB + 512 * KB),
            |va| PhysAddr::from(va.as_usize() - kernel + kernel_pa),
            1536 * KB,
            F::READ | F::WRITE | k,
            true,
        )
        .unwrap();
        // Linear map of 4 GiB of RAM with the largest pages that fit, starting at 1 GiB.
        c.map_region(
            at(linear, GB),
            |va| PhysAddr::from(va.as_usize() - linear),
            4 * GB,
            F::READ | F::WRITE | k,
            true,
        )
        .unwrap();
        // An MMIO window: a UART and an interrupt controller, device memory.
        c.map_region(
            at(mmio, 0),
            |va| PhysAddr::from(va.as_usize() - mmio + 0x1000_0000),
            64 * KB,
            F::READ | F::WRITE | F::DEVICE | k,
            true,
        )
        .unwrap();
        // A user stack of 64 KiB with a guard page below (a reservation: mapped, not present).
        let stack_base = user_stack_top + 4 * KB - 64 * KB;
        c.map(
            at(stack_base - 4 * KB, 0),
            PhysAddr::from(0),
            PageSize::Size4K,
            F::empty(),
        )
        .unwrap();
        c.map_region(
            at(stack_base, 0),
            |va| PhysAddr::from(0x9000_0000 + (va.as_usize() - stack_base)),
            64 * KB,
            F::READ | F::WRITE | F::USER,
            false,
        )
        .unwrap();
    }
    println!(
        "== {name}: {} levels, {}-bit VA, root at {:#x}",
        M::LEVELS,
        M::VA_MAX_BITS,
        pt.root_paddr().as_usize()
    );
    print!("{}", pt.dump());
    println!(
        "   table frames: {} (allocator: {} live)",
        pt.table_frames(),
        LIVE.get()
    );

    // mprotect one 4 KiB page in the middle of the linear map: the 1 GiB page around it is
    // split down to 4 KiB pages, every other byte keeps its translation.
    let probe = VirtAddr::from(linear + 2 * GB + 5 * MB + 12 * KB);
    pt.cursor()
        .protect_region(probe, 4 * KB, F::READ | F::GLOBAL)
        .unwrap();
    println!(
        "   after protecting one 4K page of the linear map: {} table frames",
        pt.table_frames()
    );
    println!(
        "   query {:#x} -> {:x?}",
        probe.as_usize(),
        pt.query(probe).unwrap()
    );

    // munmap everything: every intermediate table is reclaimed, only the root stays.
    {
        let mut c = pt.cursor();
        c.unmap_region(VirtAddr::from(linear), 8 * GB).unwrap();
        c.unmap_region(VirtAddr::from(kernel), 4 * MB).unwrap();
        c.unmap_region(VirtAddr::from(user_stack_top + 4 * KB - 68 * KB), 68 * KB)
            .unwrap();
    }
    println!(
        "   after unmapping everything: {} table frames (root: {root_frames})\n",
        pt.table_frames()
    );
    drop(pt);
    assert_eq!(
        LIVE.get(),
        0,
        "every frame is returned when the table is dropped"
    );
}

fn main() {
    tour::<x86_64::X64PagingMetaData, page_table_entry::x86_64::X64PTE>("x86_64 4-level");
    tour::<x86_64::X64PagingMetaDataLa57, page_table_entry::x86_64::X64PTE>(
        "x86_64 5-level (LA57)",
    );
    tour::<aarch64::A64PagingMetaData, page_table_entry::aarch64::A64PTE>(
        "AArch64 4 KiB granule, EL1&0",
    );
    tour::<riscv::Sv39MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE>("RISC-V Sv39");
    tour::<riscv::Sv48MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE>("RISC-V Sv48");
    tour::<riscv::Sv57MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE>("RISC-V Sv57");
    tour::<loongarch64::LA64MetaData, page_table_entry::loongarch64::LA64PTE>(
        "LoongArch64 4-level",
    );
}
