//! What each format must do, stated from the manuals, and the check that a page table
//! equals a [`Model`], that the reference walker agrees, and that the table holds no frame
//! beyond what its mappings need.
//!
//! A [`Format`] names a metadata and entry type and says, independently of the entry code,
//! which flags a present leaf reports and which accesses the hardware allows. The
//! randomized tests and the fuzz targets drive a table and a model with the same operations
//! and call [`check`] (or its parts) after every step.
//!
//! Features of `page_table_entry` that change an encoding (`arm-el2`, `xuantie-c9xx`) are
//! not visible here, so the formats they affect take them as const parameters: a test
//! passes `{ cfg!(feature = "...") }` of its own crate.

use core::marker::PhantomData;

use memory_addr::VirtAddr;
use page_table_multiarch::{
    GenericPTE, MappingFlags as F, PageSize, PageTable64, PagingMetaData, aarch64, loongarch64,
};

use crate::alloc::{self, SimHandler};
use crate::mem;
use crate::model::Model;
use crate::rng::Rng;
use crate::walker::{self, Access, AccessKind, FaultKind, MemType};

/// One format under test: its types, its walker, and what the hardware should do, stated
/// from the manual independently of the entry code.
pub trait Format {
    /// The metadata.
    type M: PagingMetaData<VirtAddr = VirtAddr>;
    /// The entry type.
    type PTE: GenericPTE;
    /// The reference walker's configuration for this format.
    fn walker() -> walker::Config;
    /// The flags `query` reports for a present leaf requested with `f`.
    fn expected_flags(f: F) -> F;
    /// Whether the hardware treats a present leaf requested with `f` as global (not tagged
    /// with an address-space identifier).
    fn global(f: F) -> bool {
        f.contains(F::GLOBAL)
    }
    /// Whether the hardware allows `access` to a present leaf requested with `f`.
    fn allows(f: F, access: Access) -> bool;
    /// Whether the standard walker applies to this build's encoding (T-Head's extended
    /// attributes sit in bits the standard RISC-V walker reserves).
    fn walker_applies() -> bool {
        true
    }
}

/// The page table type of a format, over the simulated memory.
pub type Table<T> = PageTable64<<T as Format>::M, <T as Format>::PTE, SimHandler>;

fn mem_type_bits(f: F) -> F {
    if f.contains(F::DEVICE) {
        F::DEVICE
    } else {
        f & F::UNCACHED
    }
}

/// x86_64 with the 4-level (`X64PagingMetaData`) or 5-level (`X64PagingMetaDataLa57`)
/// metadata.
pub struct X64<M>(PhantomData<M>);
impl<M: PagingMetaData<VirtAddr = VirtAddr>> Format for X64<M> {
    type M = M;
    type PTE = page_table_entry::x86_64::X64PTE;
    fn walker() -> walker::Config {
        walker::Config::X86_64(walker::x86_64::Config {
            la57: M::LEVELS == 5,
            ..Default::default()
        })
    }
    // A present x86 page is always readable.
    fn expected_flags(f: F) -> F {
        F::READ | (f & (F::WRITE | F::EXECUTE | F::USER | F::GLOBAL)) | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        (!a.user || f.contains(F::USER))
            && match a.kind {
                AccessKind::Read => true,
                AccessKind::Write => f.contains(F::WRITE),
                AccessKind::Exec => f.contains(F::EXECUTE),
            }
    }
}

/// AArch64 with the EL1&0 metadata (`A64PagingMetaData`) and the entries of `A64PTE`:
/// `A64<false>` has EL1 entries (`A64PTEEl1`), `A64<true>` EL2 entries (`A64PTEEl2`), which
/// is what `A64PTE` is with the `arm-el2` feature.
pub struct A64<const ARM_EL2: bool>;

fn a64_el2_allows(f: F, a: Access) -> bool {
    !a.user
        && match a.kind {
            AccessKind::Read => true,
            AccessKind::Write => f.contains(F::WRITE),
            AccessKind::Exec => f.contains(F::EXECUTE),
        }
}

// Stage 1 cannot express write-only or execute-only: a valid descriptor is readable. No
// EL0 in the EL2 regime: USER cannot be expressed; no ASID: every translation is global,
// and GLOBAL is not reported.
fn a64_el2_expected_flags(f: F) -> F {
    F::READ | (f & (F::WRITE | F::EXECUTE)) | mem_type_bits(f)
}

fn a64_el2_walker() -> walker::Config {
    walker::Config::Aarch64(walker::aarch64::Config {
        regime: walker::aarch64::Regime::El2,
        ..Default::default()
    })
}

impl Format for A64<false> {
    type M = aarch64::A64PagingMetaData;
    type PTE = page_table_entry::aarch64::A64PTEEl1;
    fn walker() -> walker::Config {
        walker::Config::Aarch64(Default::default())
    }
    // Stage 1 cannot express write-only or execute-only: a valid descriptor is readable.
    fn expected_flags(f: F) -> F {
        F::READ | (f & (F::WRITE | F::EXECUTE | F::USER | F::GLOBAL)) | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        let user = f.contains(F::USER);
        match (a.user, a.kind) {
            (false, AccessKind::Read) => true,
            (false, AccessKind::Write) => f.contains(F::WRITE),
            // Kernel code never runs from user pages (PXN), nor from EL0-writable pages.
            (false, AccessKind::Exec) => f.contains(F::EXECUTE) && !user,
            (true, AccessKind::Read) => user,
            (true, AccessKind::Write) => user && f.contains(F::WRITE),
            (true, AccessKind::Exec) => user && f.contains(F::EXECUTE),
        }
    }
}

impl Format for A64<true> {
    type M = aarch64::A64PagingMetaData;
    type PTE = page_table_entry::aarch64::A64PTEEl2;
    fn walker() -> walker::Config {
        a64_el2_walker()
    }
    fn expected_flags(f: F) -> F {
        a64_el2_expected_flags(f)
    }
    fn global(_: F) -> bool {
        true
    }
    fn allows(f: F, a: Access) -> bool {
        a64_el2_allows(f, a)
    }
}

/// AArch64 with EL2 (single range) metadata and entries, whatever the `arm-el2` feature
/// says.
pub struct A64El2;
impl Format for A64El2 {
    type M = aarch64::A64El2PagingMetaData;
    type PTE = page_table_entry::aarch64::A64PTEEl2;
    fn walker() -> walker::Config {
        a64_el2_walker()
    }
    fn expected_flags(f: F) -> F {
        a64_el2_expected_flags(f)
    }
    fn global(_: F) -> bool {
        true
    }
    fn allows(f: F, a: Access) -> bool {
        a64_el2_allows(f, a)
    }
}

/// RISC-V Sv39, Sv48 or Sv57 (by the metadata `M`), with Svpbmt memory types, or T-Head's
/// when `XUANTIE_C9XX` (pass the `xuantie-c9xx` feature of the test's crate).
pub struct Rv<M, const XUANTIE_C9XX: bool = false>(PhantomData<M>);
impl<M: PagingMetaData<VirtAddr = VirtAddr>, const XUANTIE_C9XX: bool> Format
    for Rv<M, XUANTIE_C9XX>
{
    type M = M;
    type PTE = page_table_entry::riscv::Rv64PTE;
    fn walker() -> walker::Config {
        let mode = match M::LEVELS {
            3 => walker::riscv::Mode::Sv39,
            4 => walker::riscv::Mode::Sv48,
            _ => walker::riscv::Mode::Sv57,
        };
        walker::Config::Riscv(walker::riscv::Config {
            mode,
            svpbmt: true,
            ..Default::default()
        })
    }
    // W without R is reserved: WRITE implies READ.
    fn expected_flags(f: F) -> F {
        let r = if f.intersects(F::READ | F::WRITE) {
            F::READ
        } else {
            F::empty()
        };
        // T-Head's attributes only tell device memory apart.
        let mem = if XUANTIE_C9XX {
            f & F::DEVICE
        } else {
            mem_type_bits(f)
        };
        r | (f & (F::WRITE | F::EXECUTE | F::USER | F::GLOBAL)) | mem
    }
    fn allows(f: F, a: Access) -> bool {
        let e = Self::expected_flags(f);
        // S-mode without SUM touches no user page; U-mode only user pages.
        a.user == e.contains(F::USER)
            && match a.kind {
                AccessKind::Read => e.contains(F::READ),
                AccessKind::Write => e.contains(F::WRITE),
                AccessKind::Exec => e.contains(F::EXECUTE),
            }
    }
    fn walker_applies() -> bool {
        !XUANTIE_C9XX
    }
}

/// LoongArch64, 4 levels.
pub struct La;
impl Format for La {
    type M = loongarch64::LA64MetaData;
    type PTE = page_table_entry::loongarch64::LA64PTE;
    fn walker() -> walker::Config {
        walker::Config::LoongArch64(Default::default())
    }
    fn expected_flags(f: F) -> F {
        (f & (F::READ | F::WRITE | F::EXECUTE | F::USER | F::GLOBAL)) | mem_type_bits(f)
    }
    fn allows(f: F, a: Access) -> bool {
        (!a.user || f.contains(F::USER))
            && match a.kind {
                AccessKind::Read => f.contains(F::READ),
                AccessKind::Write => f.contains(F::WRITE),
                AccessKind::Exec => f.contains(F::EXECUTE),
            }
    }
}

/// Every access the walker check tries: kernel and user × load, store, fetch.
pub const ACCESSES: [Access; 6] = [
    Access::READ,
    Access::WRITE,
    Access::EXEC,
    Access::USER_READ,
    Access::USER_WRITE,
    Access::USER_EXEC,
];

/// The leaf sizes the format's table may hold, ascending (the sizes of its [`Model`]).
pub fn leaf_sizes<T: Format>() -> Vec<u64> {
    match T::M::MAX_PAGE_SIZE {
        PageSize::Size2M => vec![0x1000, 0x20_0000],
        PageSize::Size4K | PageSize::Size1M => vec![0x1000],
        PageSize::Size1G => vec![0x1000, 0x20_0000, 0x4000_0000],
    }
}

/// The mask of the translated bits of a virtual address.
pub fn va_mask<T: Format>() -> u64 {
    let va_bits = T::M::VA_MAX_BITS as u32;
    if va_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << va_bits) - 1
    }
}

/// The form a model keeps a valid virtual address in, so that addresses that share a
/// translation share a key and the walker can translate it: the TTBR0 form on AArch64
/// (whose walker models TTBR0, and whose tables translate bits 47:0 only), the canonical
/// form elsewhere.
pub fn model_va<T: Format>(va: usize) -> u64 {
    let va = va as u64;
    if matches!(T::walker(), walker::Config::Aarch64(_)) {
        va & va_mask::<T>()
    } else {
        va
    }
}

/// The largest physical address a leaf of this format may reach: the smaller of the
/// metadata's limit and the entry format's.
pub fn pa_limit<T: Format>() -> u64 {
    let pte = if <T::PTE as GenericPTE>::PA_BITS >= 64 {
        u64::MAX
    } else {
        (1u64 << <T::PTE as GenericPTE>::PA_BITS) - 1
    };
    (T::M::PA_MAX_ADDR as u64).min(pte)
}

/// The table's leaves equal the model's: same addresses (translated bits), physical
/// addresses, sizes, presence, and the flags [`Format::expected_flags`] says.
pub fn check_leaves<T: Format>(table: &Table<T>, model: &Model) {
    let mask = va_mask::<T>();
    let got: Vec<_> = table
        .mappings()
        .map(|m| {
            (
                m.vaddr as u64 & mask,
                m.paddr.as_usize() as u64,
                m.size as u64,
                m.present,
                m.flags,
            )
        })
        .collect();
    let mut want: Vec<_> = model
        .leaves()
        .map(|l| {
            let present = l.is_accessible();
            let flags = if present {
                T::expected_flags(l.flags)
            } else {
                F::empty()
            };
            (l.va & mask, l.pa, l.size, present, flags)
        })
        .collect();
    want.sort_by_key(|w| w.0);
    assert_eq!(got.len(), want.len(), "leaf count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "leaf");
    }
}

/// The table holds exactly the table frames the model's leaves need
/// ([`Model::min_table_frames`]); with `flushed` (no cursor holds deferred frees), the
/// allocator has exactly those frames live.
pub fn check_frames<T: Format>(table: &Table<T>, model: &Model, flushed: bool) {
    let levels = T::M::LEVELS;
    let root_frames = Table::<T>::BASE_FRAMES;
    assert_eq!(
        table.table_frames(),
        model.min_table_frames(levels, root_frames),
        "tables"
    );
    if flushed {
        assert_eq!(alloc::live_frames(), table.table_frames(), "live frames");
    } else {
        assert!(alloc::live_frames() >= table.table_frames(), "live frames");
    }
}

/// The reference walker translates a sample of `samples` leaves of the model, at their
/// first, last and one random byte, for every access in [`ACCESSES`], exactly as the model
/// says; `holes` addresses drawn by `hole` that no leaf covers fault as not mapped.
pub fn check_walker<T: Format>(
    table: &Table<T>,
    model: &Model,
    rng: &mut Rng,
    samples: usize,
    holes: usize,
    mut hole: impl FnMut(&mut Rng) -> u64,
) {
    if !T::walker_applies() {
        return;
    }
    let cfg = T::walker();
    let root = table.root_paddr().as_usize() as u64;
    let leaves: Vec<_> = model.leaves().cloned().collect();
    for _ in 0..leaves.len().min(samples) {
        let l = &leaves[rng.below(leaves.len() as u64) as usize];
        for va in [l.va, l.va + (l.size - 8), l.va + rng.below(l.size / 8) * 8] {
            for a in ACCESSES {
                let out = walker::translate(&mem::read_u64, root, va, a, &cfg);
                if !l.is_accessible() {
                    assert_eq!(
                        out.map_err(|f| f.kind),
                        Err(FaultKind::NotMapped),
                        "reservation {va:#x}"
                    );
                    continue;
                }
                if T::allows(l.flags, a) {
                    let t =
                        out.unwrap_or_else(|f| panic!("{va:#x} {a:?} flags {:?}: {f:?}", l.flags));
                    assert_eq!(t.pa, l.pa + (va - l.va), "walker pa at {va:#x}");
                    assert_eq!(t.page_size, l.size);
                    let mem = if l.flags.contains(F::DEVICE) {
                        MemType::Device
                    } else if l.flags.contains(F::UNCACHED) {
                        MemType::Uncached
                    } else {
                        MemType::WriteBack
                    };
                    assert_eq!(t.mem, mem, "memory type at {va:#x}, flags {:?}", l.flags);
                    assert_eq!(
                        t.global,
                        T::global(l.flags),
                        "global at {va:#x}, flags {:?}",
                        l.flags
                    );
                } else {
                    assert_eq!(
                        out.map_err(|f| f.kind),
                        Err(FaultKind::Permission),
                        "{va:#x} {a:?} flags {:?}",
                        l.flags
                    );
                }
            }
        }
    }
    for _ in 0..holes {
        let va = hole(rng);
        if model.leaf_at(va).is_none() {
            let out = walker::translate(&mem::read_u64, root, va, Access::READ, &cfg);
            assert_eq!(
                out.map_err(|f| f.kind),
                Err(FaultKind::NotMapped),
                "hole {va:#x}"
            );
        }
    }
}

/// Where the format keeps used-entry counts in table entries
/// ([`GenericPTE::COUNTS_TABLE_ENTRIES`]), every entry that links a table holds the number
/// of used (non-zero) entries of that table. Counted from the raw memory, so a count that
/// drifted (and would let the engine free a table still in use, or keep an empty one) fails
/// here even while every translation is right.
pub fn check_counts<T: Format>(table: &Table<T>) {
    if !T::PTE::COUNTS_TABLE_ENTRIES {
        return;
    }
    let geo = Table::<T>::GEOMETRY;
    let entry = |pa: u64| -> T::PTE {
        let raw = mem::read_u64(pa);
        // SAFETY: entries are 8-byte plain values (the engine asserts the size), and every
        // bit pattern is a value of the entry type.
        unsafe { core::mem::transmute_copy::<u64, T::PTE>(&raw) }
    };
    fn used(pa: u64, read: &impl Fn(u64) -> u64) -> usize {
        (0..512).filter(|i| read(pa + i * 8) != 0).count()
    }
    // (table, height, number of entries)
    let mut stack = vec![(
        table.root_paddr().as_usize() as u64,
        geo.root_height(),
        geo.root_entries,
    )];
    while let Some((pa, height, entries)) = stack.pop() {
        if height == 0 {
            continue;
        }
        for i in 0..entries as u64 {
            let e = entry(pa + i * 8);
            if e.is_unused() || e.is_huge() {
                continue;
            }
            let child = e.paddr().as_usize() as u64;
            let n = used(child, &mem::read_u64);
            assert_eq!(
                e.table_count(),
                n,
                "used-entry count of the table at {child:#x} (height {}), linked by entry {i} of {pa:#x}",
                height - 1
            );
            stack.push((child, height - 1, 512));
        }
    }
}

/// The whole check after a flushed step: [`check_leaves`], [`check_frames`] (flushed),
/// [`check_counts`], and [`check_walker`] on 24 leaves and 8 holes.
pub fn check<T: Format>(
    table: &Table<T>,
    model: &Model,
    rng: &mut Rng,
    hole: impl FnMut(&mut Rng) -> u64,
) {
    check_leaves::<T>(table, model);
    check_frames::<T>(table, model, true);
    check_counts::<T>(table);
    check_walker::<T>(table, model, rng, 24, 8, hole);
}
