//! Simulated physical memory and the one frame allocator every library under test uses.
//!
//! Physical memory is one lazily committed, zeroed host allocation of [`MEM_SIZE`] bytes that
//! stands for the physical range `PA_BASE..PA_BASE + MEM_SIZE`; physical address `pa` is read
//! and written at host address `host_base + (pa - PA_BASE)`. Page-table frames come from a
//! bump pointer and a LIFO stack of free frames kept beside the memory, and the allocator
//! counts the frames that are live.
//!
//! The free stack never touches the frames themselves, as allocators that keep their
//! metadata apart (a bitmap, or Linux's `struct page`) do not. An intrusive free list, which
//! writes a link into every freed frame, would add a cache and TLB miss per freed table
//! that says more about the allocator than about the page-table library: on the random
//! unmaps of W7 it cost this crate about 0.2x of 0.6.2's time (0.6.2 frees nothing there).
//!
//! The allocator state is global, as the `PagingHandler` traits require (their functions are
//! associated functions). Every use happens while the [`Sim`] guard is held, so only one
//! thread touches it at a time.

use std::alloc::{Layout, alloc_zeroed};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ::x86_64::PhysAddr as XPhysAddr;
use ::x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
use memory_addr::{PhysAddr, VirtAddr};

/// The physical address of the first byte of simulated memory.
pub const PA_BASE: usize = 0x1_0000_0000;
/// The size of simulated memory: room for about 262,000 page-table frames.
pub const MEM_SIZE: usize = 1 << 30;
const FRAME: usize = 4096;

/// Host address of simulated physical address `PA_BASE`; 0 until [`Sim::lock`] runs once.
static HOST_BASE: AtomicUsize = AtomicUsize::new(0);
/// Offset of the first frame never handed out.
static BUMP: AtomicUsize = AtomicUsize::new(0);
/// The stack of free frames (physical addresses): `FREE_LEN` entries of a leaked array of
/// one slot per frame, so it never overflows.
static FREE_STACK: AtomicPtr<usize> = AtomicPtr::new(std::ptr::null_mut());
static FREE_LEN: AtomicUsize = AtomicUsize::new(0);
/// Frames handed out and not yet returned.
static LIVE: AtomicUsize = AtomicUsize::new(0);

static LOCK: Mutex<()> = Mutex::new(());
static MEMORY: OnceLock<usize> = OnceLock::new();

/// Exclusive use of simulated memory and its allocator.
pub struct Sim {
    _guard: MutexGuard<'static, ()>,
}

impl Sim {
    /// Allocates simulated memory on first use and takes the lock over it.
    pub fn lock() -> Self {
        let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let base = *MEMORY.get_or_init(|| {
            // A small alignment lets the system allocator use calloc, which maps fresh zero
            // pages on demand; a 4 KiB-aligned request would be zeroed by a memset that
            // commits all of it. The frame alignment is obtained by rounding up instead.
            let layout = Layout::from_size_align(MEM_SIZE + FRAME, 16).expect("layout");
            // SAFETY: the layout has a non-zero size. The allocation is never freed: it
            // lives as long as the process, as physical memory would.
            let ptr = unsafe { alloc_zeroed(layout) };
            assert!(!ptr.is_null(), "cannot reserve simulated physical memory");
            (ptr as usize).next_multiple_of(FRAME)
        });
        HOST_BASE.store(base, Relaxed);
        if FREE_STACK.load(Relaxed).is_null() {
            let stack = vec![0usize; MEM_SIZE / FRAME].leak();
            FREE_STACK.store(stack.as_mut_ptr(), Relaxed);
        }
        let sim = Self { _guard: guard };
        // A previous holder may have panicked half-way: start from a clean allocator.
        BUMP.store(0, Relaxed);
        FREE_LEN.store(0, Relaxed);
        LIVE.store(0, Relaxed);
        sim
    }

    /// Frames handed out and not returned.
    pub fn live(&self) -> usize {
        LIVE.load(Relaxed)
    }

    /// Starts again from untouched memory order: the next frames come from the bump pointer
    /// in ascending order, so every library sees the same allocation pattern.
    ///
    /// # Panics
    /// If a frame is still live.
    pub fn reset(&self) {
        assert_eq!(self.live(), 0, "frames leaked before reset");
        BUMP.store(0, Relaxed);
        FREE_LEN.store(0, Relaxed);
    }

    /// The host address standing for physical address `PA_BASE - offset`: what the x86_64
    /// crate's `OffsetPageTable` adds to a physical address.
    ///
    /// # Panics
    /// If the host allocation lies below `PA_BASE` (as under Valgrind, whose allocations are
    /// low): the offset would be negative. Only the x86_64 crate's rounds need it.
    pub fn phys_offset(&self) -> u64 {
        let base = HOST_BASE.load(Relaxed);
        assert!(base > PA_BASE, "host allocation below the physical base");
        (base - PA_BASE) as u64
    }
}

/// The host address of simulated physical address `pa`.
#[inline(always)]
pub fn p2v(pa: usize) -> usize {
    HOST_BASE.load(Relaxed) + (pa - PA_BASE)
}

/// Takes one 4 KiB frame.
#[inline]
pub fn alloc_frame() -> Option<usize> {
    let len = FREE_LEN.load(Relaxed);
    let pa = if len != 0 {
        FREE_LEN.store(len - 1, Relaxed);
        // SAFETY: the stack has one slot per frame, and `len - 1` is below the number
        // pushed by `dealloc_frame` since the last reset.
        unsafe { FREE_STACK.load(Relaxed).add(len - 1).read() }
    } else {
        let offset = BUMP.load(Relaxed);
        if offset == MEM_SIZE {
            return None;
        }
        BUMP.store(offset + FRAME, Relaxed);
        PA_BASE + offset
    };
    LIVE.store(LIVE.load(Relaxed) + 1, Relaxed);
    Some(pa)
}

/// Returns one 4 KiB frame.
#[inline]
pub fn dealloc_frame(pa: usize) {
    debug_assert!((PA_BASE..PA_BASE + MEM_SIZE).contains(&pa) && pa % FRAME == 0);
    let len = FREE_LEN.load(Relaxed);
    debug_assert!(len < MEM_SIZE / FRAME, "more frames freed than exist");
    // SAFETY: the stack has one slot per frame, and at most every frame is free at once,
    // so `len` is below its length.
    unsafe { FREE_STACK.load(Relaxed).add(len).write(pa) };
    FREE_LEN.store(len + 1, Relaxed);
    LIVE.store(LIVE.load(Relaxed) - 1, Relaxed);
}

/// Takes `num` contiguous frames aligned to `align` bytes (from the bump pointer).
fn alloc_frames(num: usize, align: usize) -> Option<usize> {
    if num == 1 && align <= FRAME {
        return alloc_frame();
    }
    let offset = BUMP.load(Relaxed).next_multiple_of(align.max(FRAME));
    let end = offset.checked_add(num * FRAME)?;
    if end > MEM_SIZE || (PA_BASE + offset) % align != 0 {
        return None;
    }
    // Frames skipped for alignment go to the free list.
    let mut skipped = BUMP.load(Relaxed);
    BUMP.store(end, Relaxed);
    while skipped < offset {
        LIVE.store(LIVE.load(Relaxed) + 1, Relaxed);
        dealloc_frame(PA_BASE + skipped);
        skipped += FRAME;
    }
    LIVE.store(LIVE.load(Relaxed) + num, Relaxed);
    Some(PA_BASE + offset)
}

/// Returns `num` frames taken together.
fn dealloc_frames(pa: usize, num: usize) {
    for i in 0..num {
        dealloc_frame(pa + i * FRAME);
    }
}

/// The `PagingHandler` of both this workspace's crate and page_table_multiarch 0.6.2.
pub struct SimHandler;

impl page_table_multiarch::PagingHandler for SimHandler {
    #[inline]
    fn alloc_frame() -> Option<PhysAddr> {
        alloc_frame().map(PhysAddr::from)
    }
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        alloc_frames(num, align).map(PhysAddr::from)
    }
    #[inline]
    fn dealloc_frame(paddr: PhysAddr) {
        dealloc_frame(paddr.as_usize())
    }
    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        dealloc_frames(paddr.as_usize(), num)
    }
    #[inline(always)]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from(p2v(paddr.as_usize()))
    }
}

impl ptm06::PagingHandler for SimHandler {
    #[inline]
    fn alloc_frame() -> Option<PhysAddr> {
        alloc_frame().map(PhysAddr::from)
    }
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        alloc_frames(num, align).map(PhysAddr::from)
    }
    #[inline]
    fn dealloc_frame(paddr: PhysAddr) {
        dealloc_frame(paddr.as_usize())
    }
    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        dealloc_frames(paddr.as_usize(), num)
    }
    #[inline(always)]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from(p2v(paddr.as_usize()))
    }
}

/// The x86_64 crate's frame allocator and deallocator over the same frames.
pub struct SimFrames;

// SAFETY: every frame returned is a distinct, unused 4 KiB frame of simulated memory,
// which the `OffsetPageTable` reaches through the physical offset of `Sim::phys_offset`.
unsafe impl FrameAllocator<Size4KiB> for SimFrames {
    #[inline]
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        alloc_frame().map(|pa| PhysFrame::containing_address(XPhysAddr::new(pa as u64)))
    }
}

impl FrameDeallocator<Size4KiB> for SimFrames {
    #[inline]
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        dealloc_frame(frame.start_address().as_u64() as usize)
    }
}
