//! RISC-V Sv39, Sv48 and Sv57 (and the same formats for G-stage tables through
//! [`SvVirtAddr`]).

use core::marker::PhantomData;

use memory_addr::{MemoryAddr, VirtAddr};

use crate::{PageTable64, PageTable64Cursor, PagingMetaData};
use page_table_entry::riscv::Rv64PTE;

/// An address type a RISC-V table translates, with the fence that invalidates its cached
/// translations (`sfence.vma` for virtual addresses; a hypervisor implements it with
/// `hfence.gvma` for guest-physical addresses).
pub trait SvVirtAddr: MemoryAddr + Send + Sync {
    /// Invalidates cached translations of `vaddr`, or of every address when `None`.
    fn flush_tlb(vaddr: Option<Self>);
}

impl SvVirtAddr for VirtAddr {
    /// `sfence.vma vaddr, x0` (every address space), or `sfence.vma x0, x0`.
    #[inline]
    fn flush_tlb(vaddr: Option<Self>) {
        #[cfg(all(
            any(target_arch = "riscv32", target_arch = "riscv64"),
            target_os = "none"
        ))]
        // SAFETY: `sfence.vma` only orders page-table updates and drops cached translations;
        // valid in S-mode.
        unsafe {
            if let Some(vaddr) = vaddr {
                core::arch::asm!("sfence.vma {0}, zero", in(reg) vaddr.as_usize(), options(nostack));
            } else {
                core::arch::asm!("sfence.vma zero, zero", options(nostack));
            }
        }
        #[cfg(not(all(
            any(target_arch = "riscv32", target_arch = "riscv64"),
            target_os = "none"
        )))]
        let _ = vaddr;
    }
}

macro_rules! sv_metadata {
    ($(#[$doc:meta])* $name:ident, $levels:expr, $va_bits:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<VA: SvVirtAddr = VirtAddr> {
            _phantom: PhantomData<VA>,
        }

        impl<VA: SvVirtAddr> PagingMetaData for $name<VA> {
            const LEVELS: usize = $levels;
            const PA_MAX_BITS: usize = 56;
            const VA_MAX_BITS: usize = $va_bits;
            type VirtAddr = VA;
            /// Linux's `tlb_flush_all_threshold`.
            const FLUSH_THRESHOLD: usize = 64;
            /// `sfence.vma` with an address orders only leaf entries, so freeing a table
            /// needs a full fence.
            const FLUSH_BY_VA_COVERS_TABLES: bool = false;

            #[inline]
            fn flush_tlb(vaddr: Option<VA>) {
                VA::flush_tlb(vaddr)
            }
        }
    };
}

sv_metadata!(
    /// Metadata of Sv39: 3 levels, 39-bit virtual and 56-bit physical addresses.
    Sv39MetaData, 3, 39
);
sv_metadata!(
    /// Metadata of Sv48: 4 levels, 48-bit virtual and 56-bit physical addresses.
    Sv48MetaData, 4, 48
);
sv_metadata!(
    /// Metadata of Sv57: 5 levels, 57-bit virtual and 56-bit physical addresses.
    Sv57MetaData, 5, 57
);

/// An Sv39 page table.
pub type Sv39PageTable<H> = PageTable64<Sv39MetaData<VirtAddr>, Rv64PTE, H>;
/// A cursor over an [`Sv39PageTable`].
pub type Sv39PageTableCursor<'a, H> = PageTable64Cursor<'a, Sv39MetaData<VirtAddr>, Rv64PTE, H>;
/// An Sv48 page table.
pub type Sv48PageTable<H> = PageTable64<Sv48MetaData<VirtAddr>, Rv64PTE, H>;
/// A cursor over an [`Sv48PageTable`].
pub type Sv48PageTableCursor<'a, H> = PageTable64Cursor<'a, Sv48MetaData<VirtAddr>, Rv64PTE, H>;
/// An Sv57 page table.
pub type Sv57PageTable<H> = PageTable64<Sv57MetaData<VirtAddr>, Rv64PTE, H>;
/// A cursor over an [`Sv57PageTable`].
pub type Sv57PageTableCursor<'a, H> = PageTable64Cursor<'a, Sv57MetaData<VirtAddr>, Rv64PTE, H>;
