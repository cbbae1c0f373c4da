//! LoongArch64, 4 KiB pages, the 4-level layout (48-bit virtual and physical addresses).

use memory_addr::VirtAddr;

use crate::{PageTable64, PageTable64Cursor, PagingMetaData};
use page_table_entry::loongarch64::LA64PTE;

/// Metadata of the LoongArch64 4-level, 4 KiB-page layout.
#[derive(Debug, Clone, Copy)]
pub struct LA64MetaData;

impl LA64MetaData {
    /// The PWCL CSR value for this layout: PTbase 12, PTwidth 9, Dir1 21/9, Dir2 30/9,
    /// 64-bit entries.
    pub const PWCL_VALUE: u32 = 12 | (9 << 5) | (21 << 10) | (9 << 15) | (30 << 20) | (9 << 25);
    /// The PWCH CSR value for this layout: Dir3 39/9, Dir4 unused.
    pub const PWCH_VALUE: u32 = 39 | (9 << 6);
}

impl PagingMetaData for LA64MetaData {
    const LEVELS: usize = 4;
    const PA_MAX_BITS: usize = 48;
    const VA_MAX_BITS: usize = 48;
    type VirtAddr = VirtAddr;
    const FLUSH_THRESHOLD: usize = 32;
    /// The software-refilled TLB caches leaves only.
    const FLUSH_BY_VA_COVERS_TABLES: bool = true;

    /// `dbar 0; invtlb 0x6, $r0, va` (global entries or ASID 0 at that address), or
    /// `invtlb 0x0` for everything.
    #[inline]
    fn flush_tlb(vaddr: Option<VirtAddr>) {
        #[cfg(all(target_arch = "loongarch64", target_os = "none"))]
        // SAFETY: `invtlb` only drops cached translations; valid at PLV0.
        unsafe {
            if let Some(vaddr) = vaddr {
                core::arch::asm!("dbar 0", "invtlb 0x6, $r0, {0}", in(reg) vaddr.as_usize());
            } else {
                core::arch::asm!("dbar 0", "invtlb 0x0, $r0, $r0");
            }
        }
        #[cfg(not(all(target_arch = "loongarch64", target_os = "none")))]
        let _ = vaddr;
    }
}

/// A LoongArch64 page table.
pub type LA64PageTable<H> = PageTable64<LA64MetaData, LA64PTE, H>;
/// A cursor over an [`LA64PageTable`].
pub type LA64PageTableCursor<'a, H> = PageTable64Cursor<'a, LA64MetaData, LA64PTE, H>;
