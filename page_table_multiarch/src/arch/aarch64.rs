//! AArch64 VMSAv8-64 stage 1, 4 KiB granule, 48-bit addresses (EL1&0 and EL2 regimes).

use memory_addr::VirtAddr;

use crate::{PageTable64, PageTable64Cursor, PagingMetaData};
use page_table_entry::aarch64::{A64PTE, A64PTEEl2};

/// Metadata of the EL1&0 translation regime (TTBR0_EL1/TTBR1_EL1), 4 levels, 48-bit VA and
/// PA.
///
/// Addresses with bits 63:48 all zero (TTBR0) or all one (TTBR1) are valid; both index the
/// same table, and [`canonicalize`](PagingMetaData::canonicalize) reports the TTBR0 form.
#[derive(Debug, Clone, Copy)]
pub struct A64PagingMetaData;

/// Metadata of the EL2 translation regime (TTBR0_EL2, single VA range), 4 levels, 48-bit
/// VA and PA.
#[derive(Debug, Clone, Copy)]
pub struct A64El2PagingMetaData;

#[inline]
fn a64_vaddr_is_valid(vaddr: usize) -> bool {
    let top_bits = vaddr >> 48;
    top_bits == 0 || top_bits == 0xffff
}

impl PagingMetaData for A64PagingMetaData {
    const LEVELS: usize = 4;
    const PA_MAX_BITS: usize = 48;
    const VA_MAX_BITS: usize = 48;
    type VirtAddr = VirtAddr;
    /// Linux's `MAX_DVM_OPS` (`PTRS_PER_PTE`) without FEAT_TLBIRANGE.
    const FLUSH_THRESHOLD: usize = 512;
    const FLUSH_BY_VA_COVERS_TABLES: bool = true;
    const BREAK_BEFORE_MAKE: bool = true;

    #[inline]
    fn vaddr_is_valid(vaddr: usize) -> bool {
        a64_vaddr_is_valid(vaddr)
    }

    #[inline]
    fn canonicalize(vaddr: usize) -> usize {
        vaddr & ((1 << 48) - 1)
    }

    /// `dsb ishst; tlbi vaae1is, VA[55:12]; dsb ish; isb` (all ASIDs, broadcast), or
    /// `tlbi vmalle1is` for everything.
    #[inline]
    fn flush_tlb(vaddr: Option<VirtAddr>) {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        // SAFETY: TLB maintenance and barriers only drop cached translations; valid at EL1.
        unsafe {
            if let Some(vaddr) = vaddr {
                let operand = (vaddr.as_usize() >> 12) & ((1 << 44) - 1);
                core::arch::asm!("dsb ishst", "tlbi vaae1is, {0}", "dsb ish", "isb", in(reg) operand);
            } else {
                core::arch::asm!("dsb ishst", "tlbi vmalle1is", "dsb ish", "isb");
            }
        }
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        let _ = vaddr;
    }
}

impl PagingMetaData for A64El2PagingMetaData {
    const LEVELS: usize = 4;
    const PA_MAX_BITS: usize = 48;
    const VA_MAX_BITS: usize = 48;
    type VirtAddr = VirtAddr;
    const FLUSH_THRESHOLD: usize = 512;
    const FLUSH_BY_VA_COVERS_TABLES: bool = true;
    const BREAK_BEFORE_MAKE: bool = true;

    /// `dsb ishst; tlbi vae2is, VA[55:12]; dsb ish; isb`, or `tlbi alle2is`.
    #[inline]
    fn flush_tlb(vaddr: Option<VirtAddr>) {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        // SAFETY: TLB maintenance and barriers only drop cached translations; valid at EL2.
        unsafe {
            if let Some(vaddr) = vaddr {
                let operand = (vaddr.as_usize() >> 12) & ((1 << 44) - 1);
                core::arch::asm!("dsb ishst", "tlbi vae2is, {0}", "dsb ish", "isb", in(reg) operand);
            } else {
                core::arch::asm!("dsb ishst", "tlbi alle2is", "dsb ish", "isb");
            }
        }
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        let _ = vaddr;
    }
}

/// An AArch64 page table (EL1&0 regime, or EL2 entries with the `arm-el2` feature).
pub type A64PageTable<H> = PageTable64<A64PagingMetaData, A64PTE, H>;
/// A cursor over an [`A64PageTable`].
pub type A64PageTableCursor<'a, H> = PageTable64Cursor<'a, A64PagingMetaData, A64PTE, H>;
/// An AArch64 EL2 (single VA range) page table.
pub type A64El2PageTable<H> = PageTable64<A64El2PagingMetaData, A64PTEEl2, H>;
/// A cursor over an [`A64El2PageTable`].
pub type A64El2PageTableCursor<'a, H> = PageTable64Cursor<'a, A64El2PagingMetaData, A64PTEEl2, H>;
