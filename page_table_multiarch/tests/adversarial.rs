//! No input makes a public function panic: random (mostly invalid) addresses, sizes, flags
//! and page sizes thrown at every call of every format, with random allocation failures.
//! After every call the table still holds exactly the frames its structure needs.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    GenericPTE, MappingFlags as F, PageSize, PageTable64, PagingMetaData, aarch64, loongarch64,
    riscv, x86_64,
};
use testkit::alloc::{self, SimHandler};
use testkit::mem;
use testkit::rng::Rng;

/// An address that is often interesting: near zero, near the canonical boundaries, near the
/// top, or anything at all; sometimes unaligned.
fn addr(rng: &mut Rng, va_bits: u32) -> usize {
    let half = 1u64 << (va_bits - 1);
    let base = match rng.below(6) {
        0 => 0,
        1 => half,
        2 => half.wrapping_neg(),
        3 => u64::MAX - 0xffff_ffff,
        4 => 1 << 47,
        _ => rng.next_u64(),
    };
    let off = rng.below(1 << 32);
    let mut a = base.wrapping_add(off);
    if rng.chance(3, 4) {
        a &= !0xfff;
    }
    a as usize
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(5) {
        0 => 0,
        1 => rng.next_u64() as usize,
        2 => (rng.below(1 << 20) as usize) << 12,
        3 => usize::MAX - rng.below(0x10000) as usize,
        _ => (rng.below(64) as usize) << 12,
    }
}

fn page_size(rng: &mut Rng) -> PageSize {
    *rng.pick(&[
        PageSize::Size4K,
        PageSize::Size2M,
        PageSize::Size1G,
        PageSize::Size1M,
    ])
}

fn run<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>(seed: u64) {
    mem::reset();
    alloc::reset();
    let mut rng = Rng::new(seed);
    let vb = M::VA_MAX_BITS as u32;
    let mut t = PageTable64::<M, P, SimHandler>::try_new().unwrap();
    for _ in 0..3000 {
        if rng.chance(1, 5) {
            alloc::set_fail_at(Some(1 + rng.below(3) as usize));
        }
        let flags = F::from_bits_truncate(rng.next_u64() as usize);
        let (v, p) = (
            VirtAddr::from(addr(&mut rng, vb)),
            PhysAddr::from(addr(&mut rng, 60)),
        );
        let s = size(&mut rng);
        let huge = rng.coin();
        let mut c = t.cursor();
        let _ = match rng.below(9) {
            0 => c.map(v, p, page_size(&mut rng), flags).is_ok(),
            1 => c
                .map_region(
                    v,
                    |x| PhysAddr::from(x.as_usize() ^ p.as_usize()),
                    s,
                    flags,
                    huge,
                )
                .is_ok(),
            2 => c.unmap(v).is_ok(),
            3 => c.unmap_region(v, s).is_ok(),
            4 => c.protect(v, flags).is_ok(),
            5 => c.protect_region(v, s, flags).is_ok(),
            6 => c.remap(v, p, flags).is_ok(),
            7 => c.query(v).is_ok(),
            _ => {
                drop(c);
                let r = match rng.below(4) {
                    0 => t
                        .map(v, p, page_size(&mut rng), flags)
                        .map(|f| f.ignore())
                        .is_ok(),
                    1 => t.unmap_region(v, s, huge).map(|f| f.ignore()).is_ok(),
                    2 => t
                        .protect_region(v, s, flags, huge)
                        .map(|f| f.ignore())
                        .is_ok(),
                    _ => t
                        .map_region(v, |x| x.as_usize().into(), s, flags, huge, huge)
                        .map(|f| f.ignore())
                        .is_ok(),
                };
                alloc::set_fail_at(None);
                assert_eq!(alloc::live_frames(), t.table_frames());
                let _ = r;
                continue;
            }
        };
        drop(c);
        alloc::set_fail_at(None);
        assert_eq!(alloc::live_frames(), t.table_frames());
    }
    let _ = format!("{}", t.dump());
    t.walk(usize::MAX, Some(&|_, _, _, _: &P| {}), None);
    drop(t);
    alloc::assert_no_leaks();
}

macro_rules! formats {
    ($($name:ident: $m:ty, $p:ty;)*) => {$(
        #[test]
        fn $name() {
            for seed in 0..3 {
                run::<$m, $p>(testkit::rng::seed_from_env(0xbad) + seed);
            }
        }
    )*};
}

formats! {
    x86_64_4: x86_64::X64PagingMetaData, page_table_entry::x86_64::X64PTE;
    x86_64_5: x86_64::X64PagingMetaDataLa57, page_table_entry::x86_64::X64PTE;
    aarch64_4: aarch64::A64PagingMetaData, page_table_entry::aarch64::A64PTE;
    aarch64_el2: aarch64::A64El2PagingMetaData, page_table_entry::aarch64::A64PTEEl2;
    sv39: riscv::Sv39MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE;
    sv48: riscv::Sv48MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE;
    sv57: riscv::Sv57MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE;
    la64: loongarch64::LA64MetaData, page_table_entry::loongarch64::LA64PTE;
}

/// `copy_from` shares root entries; the shared range is read-only through the destination,
/// and dropping both tables frees every frame but the lent subtree exactly once (see
/// `tests/copy_from.rs` for the ownership rules).
#[cfg(feature = "copy-from")]
#[test]
fn copy_from_shares_and_protects() {
    use page_table_multiarch::PagingError;
    mem::reset();
    alloc::reset();
    type T = x86_64::X64PageTable<SimHandler>;
    let kernel = 0xffff_8000_0000_0000usize;
    let mut src = T::try_new().unwrap();
    src.cursor()
        .map_region(
            VirtAddr::from(kernel),
            |v| PhysAddr::from(v.as_usize() - kernel),
            8 << 20,
            F::READ,
            false,
        )
        .unwrap();
    let mut dst = T::try_new().unwrap();
    dst.cursor()
        .map(
            VirtAddr::from(kernel + (1 << 30)),
            PhysAddr::from(0),
            PageSize::Size4K,
            F::READ,
        )
        .unwrap();
    let live = alloc::live_frames();
    dst.cursor()
        .copy_from(&src, VirtAddr::from(kernel), 1 << 39);
    // dst's own tables at that root entry were freed after the flush.
    assert_eq!(alloc::live_frames(), live - 3);
    assert_eq!(
        dst.query(VirtAddr::from(kernel + 0x5000)),
        src.query(VirtAddr::from(kernel + 0x5000))
    );
    assert_eq!(
        dst.cursor()
            .unmap(VirtAddr::from(kernel + 0x5000))
            .unwrap_err(),
        PagingError::AlreadyMapped,
        "the shared range cannot be changed through the destination"
    );
    assert_eq!(dst.table_frames(), 1);
    let lent = src.table_frames() - 1;
    drop(dst);
    drop(src);
    assert_eq!(alloc::live_frames(), lent);
}
