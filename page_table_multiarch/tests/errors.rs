//! Every error path: each returns its typed error and leaves the table exactly as it was,
//! with no frame leaked. Allocation failures are injected at every allocation point of every
//! call that allocates.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    GenericPTE, Mapping, MappingFlags as F, PageSize, PageTable64, PagingError as E,
    PagingMetaData, aarch64, loongarch64, riscv, x86_64,
};
use testkit::alloc::{self, BadFrame, SimHandler};
use testkit::mem;

const RW: F = F::READ.union(F::WRITE);
const K4: usize = 0x1000;
const M2: usize = 0x20_0000;
const G1: usize = 0x4000_0000;

type Table<M, P> = PageTable64<M, P, SimHandler>;

fn va(x: usize) -> VirtAddr {
    VirtAddr::from(x)
}
fn pa(x: usize) -> PhysAddr {
    PhysAddr::from(x)
}

/// Everything observable about a table: its leaves and its frames.
fn snapshot<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>(
    t: &Table<M, P>,
) -> (Vec<Mapping>, usize, usize) {
    (
        t.mappings().collect(),
        t.table_frames(),
        alloc::live_frames(),
    )
}

fn fresh<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() -> Table<M, P> {
    mem::reset();
    alloc::reset();
    Table::<M, P>::try_new().unwrap()
}

/// A table with a 1 GiB page, a 2 MiB page and some 4 KiB pages around 4 GiB.
fn populated<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() -> Table<M, P> {
    let mut t = fresh::<M, P>();
    let mut c = t.cursor();
    c.map(va(4 * G1), pa(G1), PageSize::Size1G, RW).unwrap();
    c.map(va(5 * G1), pa(2 * G1), PageSize::Size2M, RW).unwrap();
    c.map_region(
        va(5 * G1 + 4 * M2),
        |v| pa(v.as_usize() - 5 * G1),
        40 * K4,
        RW,
        false,
    )
    .unwrap();
    drop(c);
    t
}

/// Runs `op` on a populated table and checks it fails with `want` and changes nothing.
fn unchanged<M, P>(what: &str, want: E, op: impl FnOnce(&mut Table<M, P>) -> Result<(), E>)
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    P: GenericPTE,
{
    let mut t = populated::<M, P>();
    let before = snapshot(&t);
    assert_eq!(op(&mut t), Err(want), "{what}");
    assert_eq!(snapshot(&t), before, "{what}: the table changed");
    drop(t);
    alloc::assert_no_leaks();
}

fn error_paths<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() {
    let vbits = M::VA_MAX_BITS;
    // The first address above the lower half: not canonical (AArch64's lower range is
    // 48 bits wide, the others' VA_MAX_BITS - 1).
    let hole = if M::vaddr_is_valid(1 << (vbits - 1)) {
        1usize << vbits
    } else {
        1usize << (vbits - 1)
    };
    let bad_va = hole;
    assert!(!M::vaddr_is_valid(bad_va) && M::vaddr_is_valid(hole - 1));
    let bad_pa = M::PA_MAX_ADDR.min((1usize << P::PA_BITS) - 1) + 1;

    unchanged::<M, P>("map non-canonical", E::InvalidVirtAddr, |t| {
        t.cursor().map(va(bad_va), pa(0), PageSize::Size4K, RW)
    });
    unchanged::<M, P>("query non-canonical", E::InvalidVirtAddr, |t| {
        t.query(va(bad_va)).map(|_| ())
    });
    unchanged::<M, P>("unmap non-canonical", E::InvalidVirtAddr, |t| {
        t.cursor().unmap(va(bad_va)).map(|_| ())
    });
    unchanged::<M, P>("remap non-canonical", E::InvalidVirtAddr, |t| {
        t.cursor().remap(va(bad_va), pa(0), RW).map(|_| ())
    });
    unchanged::<M, P>("protect non-canonical", E::InvalidVirtAddr, |t| {
        t.cursor().protect(va(bad_va), RW).map(|_| ())
    });
    unchanged::<M, P>("map_region across the hole", E::InvalidVirtAddr, |t| {
        t.cursor().map_region(
            va(hole - K4),
            |v| pa(v.as_usize() & 0xfff_ffff),
            2 * K4,
            RW,
            false,
        )
    });
    unchanged::<M, P>("unmap_region non-canonical", E::InvalidVirtAddr, |t| {
        t.cursor().unmap_region(va(bad_va & !0xfff), K4)
    });
    unchanged::<M, P>("protect_region non-canonical", E::InvalidVirtAddr, |t| {
        t.cursor().protect_region(va(bad_va & !0xfff), K4, RW)
    });
    unchanged::<M, P>("map_region overflowing", E::RangeOverflow, |t| {
        t.cursor()
            .map_region(va(usize::MAX - 0xfff), |_| pa(0), 2 * K4, RW, false)
    });
    unchanged::<M, P>("unmap_region overflowing", E::RangeOverflow, |t| {
        t.cursor().unmap_region(va(usize::MAX - 0xfff), 2 * K4)
    });

    unchanged::<M, P>("map pa out of range", E::InvalidPhysAddr, |t| {
        t.cursor()
            .map(va(0x1000_0000), pa(bad_pa), PageSize::Size4K, RW)
    });
    unchanged::<M, P>("map_region pa out of range", E::InvalidPhysAddr, |t| {
        t.cursor()
            .map_region(va(0x1000_0000), |_| pa(bad_pa), 4 * K4, RW, false)
    });
    unchanged::<M, P>("remap pa out of range", E::InvalidPhysAddr, |t| {
        t.cursor()
            .remap(va(5 * G1 + 4 * M2), pa(bad_pa), RW)
            .map(|_| ())
    });

    unchanged::<M, P>("map unaligned va", E::NotAligned, |t| {
        t.cursor().map(va(0x1000_0800), pa(0), PageSize::Size4K, RW)
    });
    unchanged::<M, P>("map unaligned pa", E::NotAligned, |t| {
        t.cursor()
            .map(va(0x1000_0000), pa(0x1000), PageSize::Size2M, RW)
    });
    unchanged::<M, P>("map_region unaligned va", E::NotAligned, |t| {
        t.cursor()
            .map_region(va(0x1000_0010), |_| pa(0), K4, RW, false)
    });
    unchanged::<M, P>("map_region unaligned size", E::NotAligned, |t| {
        t.cursor()
            .map_region(va(0x1000_0000), |_| pa(0), K4 + 1, RW, false)
    });
    unchanged::<M, P>("map_region unaligned pa", E::NotAligned, |t| {
        t.cursor()
            .map_region(va(0x1000_0000), |v| pa(v.as_usize() + 8), 4 * K4, RW, false)
    });
    unchanged::<M, P>("unmap_region unaligned", E::NotAligned, |t| {
        t.cursor().unmap_region(va(4 * G1 + 1), K4)
    });
    unchanged::<M, P>("protect_region unaligned", E::NotAligned, |t| {
        t.cursor().protect_region(va(4 * G1), K4 - 1, F::READ)
    });
    unchanged::<M, P>("remap 2M page to an unaligned pa", E::NotAligned, |t| {
        t.cursor()
            .remap(va(5 * G1), pa(3 * G1 + K4), RW)
            .map(|_| ())
    });

    unchanged::<M, P>("map 1M", E::UnsupportedPageSize, |t| {
        t.cursor().map(va(0x1000_0000), pa(0), PageSize::Size1M, RW)
    });

    unchanged::<M, P>("map over a 4K page", E::AlreadyMapped, |t| {
        t.cursor()
            .map(va(5 * G1 + 4 * M2), pa(0), PageSize::Size4K, RW)
    });
    unchanged::<M, P>("map 2M over a table", E::AlreadyMapped, |t| {
        t.cursor()
            .map(va(5 * G1 + 4 * M2), pa(0), PageSize::Size2M, RW)
    });
    unchanged::<M, P>("map 4K inside a 1G page", E::MappedToHugePage, |t| {
        t.cursor()
            .map(va(4 * G1 + 5 * K4), pa(0), PageSize::Size4K, RW)
    });
    unchanged::<M, P>(
        "map_region overlapping the end of the 4K pages",
        E::AlreadyMapped,
        |t| {
            t.cursor().map_region(
                va(5 * G1 + 4 * M2 - 8 * K4),
                |v| pa(v.as_usize()),
                16 * K4,
                RW,
                false,
            )
        },
    );
    unchanged::<M, P>(
        "map_region with huge pages over a 2M page",
        E::AlreadyMapped,
        |t| {
            t.cursor()
                .map_region(va(5 * G1), |v| pa(v.as_usize()), 2 * M2, RW, true)
        },
    );

    unchanged::<M, P>("unmap a hole", E::NotMapped, |t| {
        t.cursor().unmap(va(7 * G1)).map(|_| ())
    });
    unchanged::<M, P>("protect a hole", E::NotMapped, |t| {
        t.cursor().protect(va(7 * G1), RW).map(|_| ())
    });
    unchanged::<M, P>("remap a hole", E::NotMapped, |t| {
        t.cursor().remap(va(7 * G1), pa(0), RW).map(|_| ())
    });
    unchanged::<M, P>("query a hole", E::NotMapped, |t| {
        t.query(va(7 * G1)).map(|_| ())
    });

    // Empty ranges do nothing.
    let mut t = populated::<M, P>();
    let before = snapshot(&t);
    let mut c = t.cursor();
    assert_eq!(c.map_region(va(7 * G1), |_| pa(0), 0, RW, true), Ok(()));
    assert_eq!(c.unmap_region(va(4 * G1), 0), Ok(()));
    assert_eq!(c.protect_region(va(4 * G1), 0, F::empty()), Ok(()));
    drop(c);
    assert_eq!(snapshot(&t), before);
}

/// Fails the `n`-th allocation of `op` for every `n` until `op` succeeds; each failure must
/// leave the table unchanged. Returns the number of allocation points.
fn every_allocation_point<M, P>(
    what: &str,
    setup: impl Fn() -> Table<M, P>,
    op: impl Fn(&mut Table<M, P>) -> Result<(), E>,
) -> usize
where
    M: PagingMetaData<VirtAddr = VirtAddr>,
    P: GenericPTE,
{
    for n in 1.. {
        let mut t = setup();
        let before = snapshot(&t);
        alloc::set_fail_at(Some(n));
        let r = op(&mut t);
        alloc::set_fail_at(None);
        match r {
            Ok(()) => {
                drop(t);
                alloc::assert_no_leaks();
                return n - 1;
            }
            Err(E::NoMemory) => assert_eq!(
                snapshot(&t),
                before,
                "{what}: failure at allocation {n} changed the table"
            ),
            Err(e) => panic!("{what}: {e:?}"),
        }
        drop(t);
        alloc::assert_no_leaks();
    }
    unreachable!()
}

fn allocation_failures<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() {
    // try_new: one allocation.
    mem::reset();
    alloc::reset();
    alloc::set_fail_at(Some(1));
    assert!(matches!(Table::<M, P>::try_new(), Err(E::NoMemory)));
    alloc::assert_no_leaks();

    let points = every_allocation_point::<M, P>("map 4K in an empty table", fresh, |t| {
        t.cursor()
            .map(va(0x7654_3000), pa(0x1000), PageSize::Size4K, RW)
    });
    assert_eq!(points, M::LEVELS - 1);
    every_allocation_point::<M, P>("map 4K next to existing pages", populated, |t| {
        t.cursor().map(
            va(5 * G1 + 4 * M2 + 100 * K4),
            pa(0x1000),
            PageSize::Size4K,
            RW,
        )
    });
    let points =
        every_allocation_point::<M, P>("map_region 8 MiB + 12 KiB of 4K pages", populated, |t| {
            t.cursor().map_region(
                va(6 * G1 - 4 * M2 - 3 * K4),
                |v| pa(v.as_usize()),
                4 * M2 + 3 * K4,
                RW,
                false,
            )
        });
    assert!(points >= 5, "{points}");
    every_allocation_point::<M, P>("map_region with huge pages", populated, |t| {
        t.cursor().map_region(
            va(8 * G1 - M2 - K4),
            |v| pa(v.as_usize()),
            G1 + 2 * M2 + 2 * K4,
            RW,
            true,
        )
    });
    // Splits at both ends of a range inside the 1 GiB page: 1G -> 2M -> 4K, twice.
    let points = every_allocation_point::<M, P>("unmap_region inside a 1G page", populated, |t| {
        t.cursor()
            .unmap_region(va(4 * G1 + 3 * M2 + 5 * K4), 2 * M2)
    });
    assert_eq!(points, 3);
    let points =
        every_allocation_point::<M, P>("protect_region inside a 2M page", populated, |t| {
            t.cursor().protect_region(va(5 * G1 + 5 * K4), K4, F::READ)
        });
    assert_eq!(points, 1);
}

fn bad_frames<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() {
    for kind in [
        BadFrame::Unaligned,
        BadFrame::Addr(M::PA_MAX_ADDR.wrapping_add(1) as u64 & !0xfff),
    ] {
        if matches!(kind, BadFrame::Addr(0)) {
            continue;
        }
        let mut t = populated::<M, P>();
        let before = snapshot(&t);
        alloc::set_bad_frame_at(1, kind);
        let r = t
            .cursor()
            .map(va(0x7654_3000), pa(0x1000), PageSize::Size4K, RW);
        assert_eq!(r, Err(E::BadFrame), "{kind:?}");
        assert_eq!(snapshot(&t), before);
        drop(t);
        alloc::assert_no_leaks();
    }
}

/// After unmapping everything only the root is left, and a range once mapped with 4 KiB
/// pages can be mapped with huge pages.
fn reclaim<M: PagingMetaData<VirtAddr = VirtAddr>, P: GenericPTE>() {
    let mut t = populated::<M, P>();
    let root = t.table_frames();
    let mut c = t.cursor();
    c.map_region(va(G1), |v| pa(v.as_usize()), G1, RW, false)
        .unwrap();
    c.unmap_region(va(G1), G1).unwrap();
    c.map_region(va(G1), |v| pa(v.as_usize()), G1, RW, true)
        .unwrap();
    assert_eq!(
        c.query(va(G1 + 0x1234)),
        Ok((pa(G1 + 0x1234), P::effective_flags(RW), PageSize::Size1G))
    );
    c.unmap_region(va(0), 8 * G1).unwrap();
    drop(c);
    assert!(t.mappings().next().is_none());
    assert_eq!(
        t.table_frames(),
        PageTable64::<M, P, SimHandler>::BASE_FRAMES
    );
    assert!(root > t.table_frames());
    assert_eq!(alloc::live_frames(), t.table_frames());
}

macro_rules! formats {
    ($($name:ident: $m:ty, $p:ty;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn errors() { error_paths::<$m, $p>() }
            #[test]
            fn allocation() { allocation_failures::<$m, $p>() }
            #[test]
            fn bad_frame() { bad_frames::<$m, $p>() }
            #[test]
            fn reclaim_all() { reclaim::<$m, $p>() }
        }
    )*};
}

formats! {
    x86_64_4: x86_64::X64PagingMetaData, page_table_entry::x86_64::X64PTE;
    x86_64_5: x86_64::X64PagingMetaDataLa57, page_table_entry::x86_64::X64PTE;
    aarch64_4: aarch64::A64PagingMetaData, page_table_entry::aarch64::A64PTE;
    sv39: riscv::Sv39MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE;
    sv48: riscv::Sv48MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE;
    sv57: riscv::Sv57MetaData<VirtAddr>, page_table_entry::riscv::Rv64PTE;
    la64: loongarch64::LA64MetaData, page_table_entry::loongarch64::LA64PTE;
}
