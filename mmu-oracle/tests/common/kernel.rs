//! A kernel address space like the one `page_table_multiarch/examples/tour.rs` builds,
//! moved clear of each guest's reserved ranges and onto memory the probes can see.

use memory_addr::{PhysAddr, VirtAddr};
use mmu_oracle::expect::{Translation, query};
use mmu_oracle::layout::{DATA, RESULTS};
use mmu_oracle::{Arch, Config, Image, OracleHandler, Probe};
use page_table_multiarch::{GenericPTE, MappingFlags as F, PageSize, PageTable64, PagingMetaData};

use super::{compare, keep_tagged, page_offsets, probes_for, strict};

const K4: u64 = 0x1000;
const K64: u64 = 0x1_0000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

fn va(v: u64) -> VirtAddr {
    VirtAddr::from(v as usize)
}

fn pa(p: u64) -> PhysAddr {
    PhysAddr::from(p as usize)
}

/// Where the harness's reserved upper range starts (2^64 when there is none), and where
/// the half that is free for the table under test starts.
fn reserved_top(config: &Config) -> u64 {
    match config {
        Config::X86_64 { la57: true, .. } => 0xFFFF_0000_0000_0000,
        Config::X86_64 { .. } => 0xFFFF_FF80_0000_0000,
        Config::Aarch64 { .. } => 1 << 48,
        Config::Riscv64 { .. } | Config::LoongArch64 => 0,
    }
}

/// Builds the address space, compares it with the MMU, protects one 4 KiB page inside a
/// 1 GiB and one inside a 2 MiB page of the linear map, compares again, then unmaps the
/// linear map and the user stack (their tables must be reclaimed) and compares a third
/// time.
///
/// | range | VA | PA | flags |
/// |---|---|---|---|
/// | kernel text, rodata, data | top 2 GiB below the harness's range | 4 MiB of data frames | RX, R, RW (2 MiB, 4 KiB pages) |
/// | linear map | start of the upper half (AArch64: of TTBR0's upper half) + RAM offset | RAM from the image window up to 4 GiB | RW, 2 MiB then 1 GiB pages |
/// | MMIO | linear + 8 MiB | 64 KiB of data frames (the MMU does not care what is there; RAM lets the probes see where they land) | RW, DEVICE |
/// | user stack | 64 KiB below 256 GiB, guard reservation under it | data frames | RW, USER |
pub fn kernel_space<M, PTE>(config: Config)
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let img = Image::new(config.arch());
    let layout = img.layout();
    let bits = config.va_bits();
    let kernel = reserved_top(&config).wrapping_sub(2 * G1);
    let linear = if config.arch() == Arch::Aarch64 {
        1 << 47
    } else {
        !0u64 << (bits - 1)
    };
    let ram = layout.ram_base;
    // Linear map: VA linear + (PA - RAM base), from the image window (2 MiB pages) to
    // 4 GiB into RAM (1 GiB pages from the first GiB boundary on).
    let lin_start = layout.img_base - ram;
    let lin_end = 4 * G1;
    let lin = |p: u64| linear + p - ram;
    let mmio = linear + 4 * M2;
    let stack_top = 0x40_0000_0000u64;
    let stack = stack_top - 16 * K4;
    let guard = stack - K4;

    let kernel_pa = img.alloc_data(2 * M2, M2);
    let mmio_pa = img.alloc_data(K64, K64);
    let stack_pa = img.alloc_data(16 * K4, K4);

    let mut pt = PageTable64::<M, PTE, OracleHandler>::try_new().expect("root table");
    let kimg = move |v: VirtAddr| pa(v.as_usize() as u64 - kernel + kernel_pa);
    {
        let mut c = pt.cursor();
        c.map_region(va(kernel), kimg, M2 as usize, F::READ | F::EXECUTE, true)
            .expect("kernel text");
        c.map_region(va(kernel + M2), kimg, 512 * 1024, F::READ, true)
            .expect("kernel rodata");
        c.map_region(
            va(kernel + M2 + 512 * 1024),
            kimg,
            1536 * 1024,
            F::READ | F::WRITE,
            true,
        )
        .expect("kernel data");
        c.map_region(
            va(mmio),
            |v: VirtAddr| pa(v.as_usize() as u64 - mmio + mmio_pa),
            K64 as usize,
            F::READ | F::WRITE | F::DEVICE,
            true,
        )
        .expect("MMIO");
    }
    let frames_kernel = pt.table_frames();
    {
        let mut c = pt.cursor();
        c.map_region(
            va(lin(ram + lin_start)),
            |v: VirtAddr| pa(v.as_usize() as u64 - linear + ram),
            (lin_end - lin_start) as usize,
            F::READ | F::WRITE,
            true,
        )
        .expect("linear map");
        c.map(va(guard), pa(0), PageSize::Size4K, F::empty())
            .expect("stack guard");
        c.map_region(
            va(stack),
            |v: VirtAddr| pa(v.as_usize() as u64 - stack + stack_pa),
            (16 * K4) as usize,
            F::READ | F::WRITE | F::USER,
            false,
        )
        .expect("user stack");
    }
    let size_at = |pt: &PageTable64<M, PTE, OracleHandler>, v: u64| match pt.query(va(v)) {
        Ok((_, _, size)) => Some(size),
        Err(_) => None,
    };
    assert_eq!(size_at(&pt, kernel), Some(PageSize::Size2M));
    assert_eq!(size_at(&pt, kernel + M2), Some(PageSize::Size4K));
    assert_eq!(size_at(&pt, lin(ram + G1)), Some(PageSize::Size1G));
    assert_eq!(size_at(&pt, lin(layout.pa(DATA))), Some(PageSize::Size2M));

    // One probe list for every stage.
    let mut probes = Vec::new();
    for (start, len) in [
        (kernel, M2),
        (kernel + M2, 512 * 1024),
        (kernel + M2 + 512 * 1024, 1536 * 1024),
    ] {
        for page in [start, start + len / 2, start + len - K4] {
            probes_for(&config, page, K4, &[0, 0xFF8], &mut probes);
        }
    }
    probes_for(&config, kernel, M2, &page_offsets(M2), &mut probes);
    for off in (DATA..RESULTS).step_by(M2 as usize) {
        probes_for(
            &config,
            lin(layout.pa(off)),
            M2,
            &page_offsets(M2),
            &mut probes,
        );
    }
    probes_for(&config, lin(ram + lin_start), K4, &[0], &mut probes);
    for g in 1..4 {
        let v = lin(ram + g * G1);
        let offsets = [0, 8, 0x8_0128, G1 - 0x8_0000, G1 - 8];
        probes_for(&config, v, G1, &offsets, &mut probes);
    }
    probes_for(&config, lin(ram + lin_end) - K4, K4, &[0xFF8], &mut probes);
    for page in (mmio..mmio + K64).step_by(K4 as usize) {
        probes_for(&config, page, K4, &[0, 0xFF8], &mut probes);
    }
    for page in (guard..stack_top).step_by(K4 as usize) {
        probes_for(&config, page, K4, &[0, 0xFF8], &mut probes);
    }
    // The pages protected below and their neighbours.
    let split_1g = lin(ram + G1) + 0x8_0000 + 3 * K4;
    let split_2m = lin(layout.pa(DATA)) + M2 + 5 * K4;
    for s in [split_1g, split_2m] {
        for page in [s - K4, s, s + K4] {
            probes_for(&config, page, K4, &[0, 0x800, 0xFF8], &mut probes);
        }
    }
    for a in [0u64, 0x1000, 0x1_0000_0000, kernel - 8, linear + M2] {
        probes.push(Probe::load(a));
        probes.push(Probe::store(a).user());
    }

    let stage = |pt: &PageTable64<M, PTE, OracleHandler>, what: &str| {
        let mut p = probes.clone();
        keep_tagged(&img, &config, pt, &mut p);
        compare(&img, &config, pt, p, what, &strict);
    };
    stage(&pt, "kernel space");

    // mprotect one 4 KiB page inside a 1 GiB and one inside a 2 MiB page of the linear map.
    {
        let mut c = pt.cursor();
        c.protect_region(va(split_1g), K4 as usize, F::READ)
            .expect("protect inside 1G");
        c.protect_region(va(split_2m), K4 as usize, F::READ | F::USER)
            .expect("protect inside 2M");
    }
    assert_eq!(size_at(&pt, split_1g), Some(PageSize::Size4K));
    assert_eq!(size_at(&pt, split_1g + M2), Some(PageSize::Size2M));
    assert_eq!(size_at(&pt, split_2m), Some(PageSize::Size4K));
    match query(&pt, split_2m) {
        Translation::Mapped(m) => assert_eq!(m.flags, F::READ | F::USER),
        other => panic!("{split_2m:#x}: {other:?}"),
    }
    stage(&pt, "kernel space, split");

    // munmap the linear map and the user stack: their tables are reclaimed.
    {
        let mut c = pt.cursor();
        c.unmap_region(va(lin(ram + lin_start)), (lin_end - lin_start) as usize)
            .expect("unmap linear");
        c.unmap_region(va(guard), (17 * K4) as usize)
            .expect("unmap stack");
    }
    assert_eq!(
        pt.table_frames(),
        frames_kernel,
        "tables of the linear map and the stack not reclaimed"
    );
    assert_eq!(query(&pt, stack), Translation::NotMapped);
    stage(&pt, "kernel space, unmapped");
    drop(pt);
    assert_eq!(img.tables_live(), 0, "frames leaked at drop");
}
