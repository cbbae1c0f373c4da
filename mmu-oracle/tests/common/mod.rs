//! Helpers shared by the oracle tests.
#![allow(dead_code)]

pub mod kernel;
pub mod random;

use std::time::Instant;

use mmu_oracle::{Access, Config, Image, Outcome, Probe};

/// Runs `cases` in one boot and fails with a list of every probe whose hardware outcome
/// differs from its expectation.
pub fn check(img: &Image, config: &Config, root: u64, cases: &[(Probe, Outcome)]) {
    let probes: Vec<Probe> = cases.iter().map(|c| c.0).collect();
    let t = Instant::now();
    let report = img
        .run(config, root, &probes)
        .unwrap_or_else(|e| panic!("oracle run failed: {e}"));
    let mut bad = Vec::new();
    for (i, ((p, want), got)) in cases.iter().zip(&report.outcomes).enumerate() {
        if !got.agrees_with(want, p.kind == Access::Exec) {
            bad.push(format!(
                "  #{i} {p}: hardware {got}, expected {want}; record {:x?}",
                report.records[i]
            ));
        }
    }
    eprintln!(
        "{config:?}: {} probes, run {:.2?}, total {:.2?}",
        cases.len(),
        report.elapsed,
        t.elapsed()
    );
    assert!(
        bad.is_empty(),
        "{} of {} probes disagree:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// Every access kind at both privileges.
pub fn all_kinds(va: u64) -> [Probe; 6] {
    [
        Probe::load(va),
        Probe::store(va),
        Probe::exec(va),
        Probe::load(va).user(),
        Probe::store(va).user(),
        Probe::exec(va).user(),
    ]
}

use memory_addr::{PhysAddr, VirtAddr};
use mmu_oracle::FaultKind;
use mmu_oracle::OracleHandler;
use mmu_oracle::expect::{Mismatch, Translation, check_table, expected, query};
use page_table_multiarch::{GenericPTE, MappingFlags, PageSize, PageTable64, PagingMetaData};

/// Every combination of the seven `MappingFlags` bits.
pub fn every_flags() -> impl Iterator<Item = MappingFlags> {
    (0..128).map(MappingFlags::from_bits_truncate)
}

/// The flags tried on 1 GiB pages: the 64 combinations without `GLOBAL`, then the 16
/// [`access_flags`] with it (each page is followed by a 1 GiB hole, and all of them must fit
/// in Sv39's 256 GiB lower half above 64 GiB).
pub fn flags_1g() -> Vec<MappingFlags> {
    every_flags()
        .filter(|f| !f.contains(MappingFlags::GLOBAL))
        .chain(access_flags().map(|f| f | MappingFlags::GLOBAL))
        .collect()
}

/// The 16 combinations of `READ`, `WRITE`, `EXECUTE` and `USER`.
pub fn access_flags() -> impl Iterator<Item = MappingFlags> {
    (0..16).map(MappingFlags::from_bits_truncate)
}

/// Probes of every kind at both privileges (plus the RISC-V SUM/MXR variants) at each
/// offset of `[va, va + size)`, and at the words just before and after it.
pub fn probes_for(config: &Config, va: u64, size: u64, offsets: &[u64], out: &mut Vec<Probe>) {
    let riscv = config.arch() == mmu_oracle::Arch::Riscv64;
    for &off in offsets {
        let a = va + off;
        out.extend(all_kinds(a));
        if riscv {
            out.push(Probe::load(a).with_sum());
            out.push(Probe::store(a).with_sum());
            out.push(Probe::load(a).with_mxr());
            out.push(Probe::load(a).user().with_mxr());
        }
    }
    for a in [va.wrapping_sub(8), va + size] {
        out.push(Probe::load(a));
        out.push(Probe::store(a).user());
    }
}

/// First, second, middle and last words and the last byte of a page of `size` (not
/// 1 GiB: see [`offsets_1g`]).
pub fn page_offsets(size: u64) -> Vec<u64> {
    vec![0, 8, size / 2 + 0x128, size - 8, size - 1]
}

/// Where a 1 GiB page at [`Image::huge_1g_frame`] can be probed (tagged memory), and the
/// 4 KiB-aligned offset to split it at.
pub fn offsets_1g(img: &Image) -> (Vec<u64>, u64) {
    let l = img.layout();
    if l.huge_1g + (1 << 30) <= l.ram_base + l.ram_size {
        // The first and last MiB of the GiB are tagged.
        let size = 1u64 << 30;
        (
            vec![0, 8, 0x8_0128, size - 0x8_0000, size - 8, size - 1],
            0x8_0000,
        )
    } else {
        // LoongArch: the GiB at PA 0 reaches the image's data frames.
        let t = l.img_base + mmu_oracle::layout::DATA - l.huge_1g;
        (
            vec![t, t + 8, t + 0x8_0128, t + 0x2F_FFF8, t + 0x2F_FFFF],
            t + 0x8_0000,
        )
    }
}

/// Compares `probes` through `table` on the MMU with the table's `query`, printing the
/// run time, and fails with every mismatch not accepted by `tolerated`.
pub fn compare<M, PTE>(
    img: &Image,
    config: &Config,
    table: &PageTable64<M, PTE, OracleHandler>,
    mut probes: Vec<Probe>,
    what: &str,
    tolerated: &dyn Fn(&Mismatch) -> bool,
) -> Vec<Mismatch>
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    backend_filter(config, table, &mut probes);
    let t = Instant::now();
    let cmp = check_table(img, config, table, &probes)
        .unwrap_or_else(|e| panic!("{what}: oracle run failed: {e}"));
    let (accepted, bad): (Vec<Mismatch>, Vec<Mismatch>) =
        cmp.mismatches.into_iter().partition(|m| tolerated(m));
    eprintln!(
        "{what} {config:?}: {} probes, run {:.2?}, total {:.2?}{}",
        probes.len(),
        cmp.report.elapsed,
        t.elapsed(),
        if accepted.is_empty() {
            String::new()
        } else {
            format!(", {} known mismatches", accepted.len())
        }
    );
    let lines: Vec<String> = bad.iter().take(40).map(|m| format!("  {m}")).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} probes disagree with query (first {} shown):\n{}",
        bad.len(),
        probes.len(),
        lines.len(),
        lines.join("\n")
    );
    accepted
}

/// Drops the probes the machine cannot run: on LoongArch, fetches the table says fault
/// (QEMU livelocks on a fetch from a non-executable page), and VAs whose bit 47 differs
/// from bits 63:48, which the hardware translates (PGDH = PGDL = the root) and the library
/// calls invalid; on an x86 KVM whose CPL3 accesses to the upper half do not follow the
/// table (PVM), CPL3 probes there.
pub fn backend_filter<M, PTE>(
    config: &Config,
    table: &PageTable64<M, PTE, OracleHandler>,
    probes: &mut Vec<Probe>,
) where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    if let Config::X86_64 {
        accel: mmu_oracle::X86Accel::Kvm(caps),
        ..
    } = config
    {
        if !caps.user_upper_half {
            probes.retain(|p| !(p.user && p.va >> 63 == 1));
        }
    }
    if config.arch() != mmu_oracle::Arch::LoongArch64 {
        return;
    }
    probes.retain(|p| {
        let q = query(table, p.va);
        let exec_ok =
            p.kind != Access::Exec || matches!(expected(config, p, q), Outcome::Ok { .. });
        let aliased = q == Translation::InvalidVa && config.is_canonical(p.va);
        exec_ok && !aliased
    });
}

/// Drops the probes the table maps to memory without tags where the access is expected
/// to succeed (a load there could not show where it landed) and every fetch the table
/// maps to such memory (the guest would run whatever it finds there).
pub fn keep_tagged<M, PTE>(
    img: &Image,
    config: &Config,
    table: &PageTable64<M, PTE, OracleHandler>,
    probes: &mut Vec<Probe>,
) where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let layout = img.layout();
    probes.retain(|p| match query(table, p.va) {
        Translation::Mapped(m) if !layout.is_tagged(m.pa & !7) => {
            p.kind != Access::Exec
                && !matches!(
                    expected(config, p, Translation::Mapped(m)),
                    Outcome::Ok { .. }
                )
        }
        _ => true,
    });
}

/// No mismatch is tolerated.
pub fn strict(_: &Mismatch) -> bool {
    false
}

/// LoongArch: an access the library calls not mapped that the MMU translated to physical
/// page 0, i.e. through a zero directory entry (the walk has no valid bit at directory
/// levels) into the page-0 poison.
pub fn zero_directory_walk(m: &Mismatch) -> bool {
    m.expected == Outcome::Fault(FaultKind::NotMapped)
        && matches!(m.hardware, Outcome::Ok { pa: Some(pa) } if pa < 0x1000)
}

fn va(v: u64) -> VirtAddr {
    VirtAddr::from(v as usize)
}

fn pa(p: u64) -> PhysAddr {
    PhysAddr::from(p as usize)
}

/// Builds a table with the library (every flag combination on 4 KiB, 2 MiB and 1 GiB pages, a `map_region` with huge pages across 2 MiB
/// boundaries, canonical-edge pages) and compares the MMU with `query` on it; then
/// unmaps, protects and splits, and compares again. Returns the tolerated mismatches.
pub fn library_suite<M, PTE>(
    config: Config,
    with_1g: bool,
    tolerated: &dyn Fn(&Mismatch) -> bool,
) -> Vec<Mismatch>
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let img = Image::new(config.arch());
    let mut pt = PageTable64::<M, PTE, OracleHandler>::try_new().expect("root table");
    let mut probes = Vec::new();
    let bits = config.va_bits();

    // 4 KiB pages: every flag combination, each followed by a hole.
    let base4k = 0x1000_0000u64;
    let mut pages4k = Vec::new();
    {
        let mut c = pt.cursor();
        for (i, flags) in every_flags().enumerate() {
            let v = base4k + i as u64 * 0x2000;
            let p = img.alloc_data(0x1000, 0x1000);
            c.map(va(v), pa(p), PageSize::Size4K, flags)
                .unwrap_or_else(|e| panic!("map 4K {flags:?}: {e:?}"));
            pages4k.push((v, flags));
        }
    }
    for &(v, _) in &pages4k {
        probes_for(&config, v, 0x1000, &page_offsets(0x1000), &mut probes);
    }

    // 2 MiB pages: every flag combination, all on one frame, each followed by a hole.
    let base2m = 0x4000_0000u64;
    let frame2m = img.alloc_data(0x20_0000, 0x20_0000);
    {
        let mut c = pt.cursor();
        for (i, flags) in every_flags().enumerate() {
            let v = base2m + i as u64 * 0x40_0000;
            c.map(va(v), pa(frame2m), PageSize::Size2M, flags)
                .unwrap_or_else(|e| panic!("map 2M {flags:?}: {e:?}"));
        }
    }
    for i in 0..every_flags().count() as u64 {
        let v = base2m + i * 0x40_0000;
        probes_for(&config, v, 0x20_0000, &page_offsets(0x20_0000), &mut probes);
    }

    // 1 GiB pages: every flag combination, all on the tagged 1 GiB region.
    let base1g = 0x10_0000_0000u64;
    if with_1g {
        let frame = img.huge_1g_frame();
        let mut c = pt.cursor();
        for (i, &flags) in flags_1g().iter().enumerate() {
            let v = base1g + i as u64 * 0x8000_0000;
            c.map(va(v), pa(frame), PageSize::Size1G, flags)
                .unwrap_or_else(|e| panic!("map 1G {flags:?}: {e:?}"));
        }
        drop(c);
        let (offsets, _) = offsets_1g(&img);
        for i in 0..flags_1g().len() as u64 {
            let v = base1g + i * 0x8000_0000;
            probes_for(&config, v, 1 << 30, &offsets, &mut probes);
        }
    }

    // map_region with huge pages over [2 MiB - 12 KiB, 4 MiB + 12 KiB) of a 2 MiB-aligned
    // window: 4 KiB pages, one 2 MiB page, 4 KiB pages.
    let region_va = 0x2000_0000u64;
    let region_pa = img.alloc_data(0x60_0000, 0x20_0000);
    let start = region_va + 0x20_0000 - 0x3000;
    let size = 0x20_0000 + 0x6000;
    let rw = MappingFlags::READ | MappingFlags::WRITE;
    pt.cursor()
        .map_region(
            va(start),
            |v: VirtAddr| pa(region_pa + (v.as_usize() as u64 - region_va)),
            size as usize,
            rw,
            true,
        )
        .expect("map_region");
    let mut region_probes = Vec::new();
    for page in (start - 0x2000..start + size + 0x2000).step_by(0x1000) {
        let near_edge = page < start + 0x4000 || page + 0x4000 >= start + size;
        let offsets: &[u64] = if near_edge { &[0, 0xFF8] } else { &[0x800] };
        if near_edge || page % 0x4_0000 == 0 {
            probes_for(&config, page, 0x1000, offsets, &mut region_probes);
        }
    }
    probes.extend_from_slice(&region_probes);

    // Pages at the canonical edges: the last page of the lower half and, where the harness
    // leaves it free, the first page of the upper half.
    let low_top = (1u64 << (bits - 1)) - 0x1000;
    let high_bottom = !0u64 << (bits - 1);
    let upper_ok = config.arch() != mmu_oracle::Arch::Aarch64;
    {
        let mut c = pt.cursor();
        let p = img.alloc_data(0x1000, 0x1000);
        c.map(
            va(low_top),
            pa(p),
            PageSize::Size4K,
            rw | MappingFlags::USER,
        )
        .expect("map the top lower-half page");
        if upper_ok {
            let p = img.alloc_data(0x1000, 0x1000);
            c.map(va(high_bottom), pa(p), PageSize::Size4K, rw)
                .expect("map the first upper-half page");
        }
    }
    probes_for(&config, low_top, 0x1000, &[0, 0xFF8, 0xFFF], &mut probes);
    probes.push(Probe::load(1u64 << (bits - 1)));
    probes.push(Probe::load(1u64 << bits));
    probes.push(Probe::load(0x0123_4567_89AB_C000));
    if upper_ok {
        probes_for(&config, high_bottom, 0x1000, &[0, 0xFF8], &mut probes);
    }
    // Holes: never mapped.
    for a in [0u64, 0x1000, 0x3000_0000, 0x1_0000_0000, 0x7_0000_0000] {
        probes.push(Probe::load(a));
        probes.push(Probe::store(a).user());
    }

    let mut accepted = compare(&img, &config, &pt, probes, "library map", tolerated);

    // Unmap, protect, split, and look again.
    {
        let mut c = pt.cursor();
        let rwxu = MappingFlags::READ | MappingFlags::WRITE | MappingFlags::EXECUTE;
        for &(v, flags) in pages4k.iter().step_by(3) {
            if flags.is_accessible() {
                c.unmap(va(v)).expect("unmap");
            }
        }
        for &(v, flags) in pages4k.iter().skip(1).step_by(3) {
            if flags.is_accessible() {
                c.protect(va(v), flags ^ MappingFlags::WRITE ^ MappingFlags::USER)
                    .expect("protect");
            }
        }
        // Split the 2 MiB page of the region twice: unmap a page, protect two others.
        c.unmap_region(va(region_va + 0x20_0000 + 0x10_0000), 0x1000)
            .expect("unmap_region inside a huge page");
        c.protect_region(va(region_va + 0x20_0000 + 0x18_0000), 0x2000, rwxu)
            .expect("protect_region inside a huge page");
        // Unmap across the end of the region.
        c.unmap_region(va(start + size - 0x2000), 0x4000)
            .expect("unmap_region over the end");
        // Split one 2 MiB and one 1 GiB page of the combinations.
        c.protect_region(
            va(base2m + 0x40_0000 * 7 + 0x1000),
            0x1000,
            MappingFlags::READ,
        )
        .expect("protect_region in a 2M page");
        if with_1g {
            c.unmap_region(va(base1g + 0x8000_0000 * 3 + offsets_1g(&img).1), 0x1000)
                .expect("unmap_region in a 1G page");
        }
    }
    let mut probes = Vec::new();
    for &(v, _) in &pages4k {
        probes_for(&config, v, 0x1000, &[0, 0xFF8], &mut probes);
    }
    let split = region_va + 0x20_0000;
    for off in (0..0x20_0000u64).step_by(0x8000) {
        probes_for(&config, split + off, 0x1000, &[0x10], &mut probes);
    }
    for off in [0x10_0000u64, 0x18_0000, 0x18_1000, 0x18_2000] {
        probes_for(&config, split + off, 0x1000, &[0, 0xFF8], &mut probes);
    }
    probes.extend_from_slice(&region_probes);
    let v7 = base2m + 0x40_0000 * 7;
    for off in [0u64, 0x1000, 0x2000, 0x1F_F000] {
        probes_for(&config, v7 + off, 0x1000, &[0, 0xFF8], &mut probes);
    }
    if with_1g {
        let v3 = base1g + 0x8000_0000 * 3;
        let (offsets, split) = offsets_1g(&img);
        let last = offsets[offsets.len() - 1] & !0xFFF;
        for off in [
            offsets[0],
            split - 0x1000,
            split,
            split + 0x1000,
            split + 0x7_E000,
            last,
        ] {
            probes_for(&config, v3 + off, 0x1000, &[0, 0xFF8], &mut probes);
        }
    }
    accepted.extend(compare(
        &img,
        &config,
        &pt,
        probes,
        "library after unmap/protect",
        tolerated,
    ));
    assert_eq!(Translation::NotMapped, query(&pt, 0x1000));
    accepted
}

/// One permission bit (or a few) changed in the raw entry of one leaf the library wrote.
pub struct Tamper {
    /// The size of the page the library maps.
    pub size: PageSize,
    /// The flags it maps it with.
    pub flags: MappingFlags,
    /// Bits set in the leaf's raw entry.
    pub set: u64,
    /// Bits cleared in it.
    pub clear: u64,
    /// What the tampered entry grants, by the architecture manual.
    pub becomes: MappingFlags,
}

/// Shows that the comparison is not vacuous: maps, for each tamper, three neighbouring
/// pages of its size and flags with the library, computes what `query` says for probes of
/// all of them, then changes the raw entry of each middle page in the image (found with
/// the independent walker) and runs the probes. The MMU must disagree with the library's
/// (untampered) answer exactly at the probes of the tampered pages whose outcome the
/// change affects, as the tampered flags predict, and nowhere else; and it must agree with
/// `query` re-run on the tampered table. Returns the number of mismatches.
pub fn tamper_suite<M, PTE>(config: Config, tampers: &[Tamper]) -> usize
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    PTE: GenericPTE,
{
    let img = Image::new(config.arch());
    let mut pt = PageTable64::<M, PTE, OracleHandler>::try_new().expect("root table");
    let root = pt.root_paddr().as_usize() as u64;
    let mut probes = Vec::new();
    let mut targets = Vec::new();
    for (i, t) in tampers.iter().enumerate() {
        let size = t.size as u64;
        let base = 0x4000_0000 * (i as u64 + 1);
        let mut c = pt.cursor();
        for k in 0..3u64 {
            let frame = img.alloc_data(size.min(0x20_0000), size);
            c.map(va(base + k * size), pa(frame), t.size, t.flags)
                .unwrap_or_else(|e| panic!("map {:?} {:?}: {e:?}", t.size, t.flags));
        }
        drop(c);
        for k in 0..3u64 {
            probes_for(
                &config,
                base + k * size,
                size,
                &page_offsets(size),
                &mut probes,
            );
        }
        let middle = base + size;
        match query(&pt, middle) {
            Translation::Mapped(m) => assert_eq!(m.flags, t.flags, "flags of {middle:#x}"),
            other => panic!("{middle:#x} not mapped: {other:?}"),
        }
        targets.push((middle, size));
    }
    for a in [0u64, 0x1000, 0x3000_0000] {
        probes.push(Probe::load(a));
        probes.push(Probe::store(a).user());
    }
    backend_filter(&config, &pt, &mut probes);
    let want = mmu_oracle::expect::expectations(&config, &pt, &probes);

    // Tamper with the middle leaves, in the image only (the library's handle is unchanged).
    for (t, &(middle, size)) in tampers.iter().zip(&targets) {
        let leaf = mmu_oracle::walk::leaf(&img, &config, root, middle)
            .unwrap_or_else(|| panic!("no leaf for {middle:#x}"));
        assert_eq!(leaf.size, size, "leaf size at {middle:#x}");
        let tampered = (leaf.value | t.set) & !t.clear;
        assert_ne!(
            tampered, leaf.value,
            "the tamper at {middle:#x} changes nothing"
        );
        img.write_u64(leaf.entry_pa, tampered);
        match query(&pt, middle) {
            Translation::Mapped(m) => assert_eq!(
                m.flags, t.becomes,
                "the library decodes the tampered entry {tampered:#x} differently"
            ),
            other => panic!("{middle:#x} not mapped after tampering: {other:?}"),
        }
    }
    let in_target = |v: u64| {
        targets
            .iter()
            .zip(tampers)
            .find(|((m, size), _)| v >= *m && v < m + size)
            .map(|(_, t)| t.becomes)
    };
    let want_tampered: Vec<Outcome> = probes
        .iter()
        .zip(&want)
        .map(|(p, w)| match (in_target(p.va), query(&pt, p.va)) {
            (Some(flags), Translation::Mapped(m)) => expected(
                &config,
                p,
                Translation::Mapped(mmu_oracle::expect::Mapping { flags, ..m }),
            ),
            _ => *w,
        })
        .collect();
    let predicted: Vec<usize> = (0..probes.len())
        .filter(|&i| want[i] != want_tampered[i])
        .collect();
    assert!(
        !predicted.is_empty(),
        "the tampers change no probe's outcome"
    );

    let t0 = Instant::now();
    let report = img
        .run(&config, root, &probes)
        .unwrap_or_else(|e| panic!("oracle run failed: {e}"));
    let stale = mmu_oracle::expect::mismatches(&probes, &want, &report);
    let found: Vec<usize> = stale.iter().map(|m| m.index).collect();
    eprintln!(
        "tampered {config:?}: {} probes, run {:.2?}, total {:.2?}, {} mismatches",
        probes.len(),
        report.elapsed,
        t0.elapsed(),
        stale.len()
    );
    let show = |idx: &[usize]| -> String {
        idx.iter()
            .take(20)
            .map(|&i| {
                format!(
                    "\n  #{i} {}: hardware {}, library {}, tampered {}",
                    probes[i], report.outcomes[i], want[i], want_tampered[i]
                )
            })
            .collect()
    };
    let missed: Vec<usize> = predicted
        .iter()
        .copied()
        .filter(|i| !found.contains(i))
        .collect();
    let extra: Vec<usize> = found
        .iter()
        .copied()
        .filter(|i| !predicted.contains(i))
        .collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "{config:?}: predicted mismatches not reported:{}\nreported mismatches not predicted:{}",
        show(&missed),
        show(&extra)
    );
    let fresh = mmu_oracle::expect::mismatches(&probes, &want_tampered, &report);
    assert!(
        fresh.is_empty(),
        "{config:?}: the MMU disagrees with the tampered expectation:{}",
        show(&fresh.iter().map(|m| m.index).collect::<Vec<_>>())
    );
    stale.len()
}
