//! Simulated physical memory, one instance per thread.
//!
//! The physical range `[SIM_BASE, SIM_BASE + size)` is backed by one host allocation made
//! with the C allocator's `calloc`, which Linux commits page by page on first touch, so the
//! default 1 GiB costs only what a test writes. Every thread has its own memory (and its own
//! [`alloc`](crate::alloc) state), so tests running in parallel are isolated; the code under
//! test must therefore run on the thread that owns the memory.
//!
//! Besides that range, the 4 KiB physical page 0 exists as a separate small buffer that only
//! [`read_u64`] and [`write_u64`] reach. It lets a walker model hardware that follows a zero
//! table pointer (LoongArch directories have no valid bit), and lets a test put poison
//! there. [`host_ptr`] (and therefore [`SimHandler`](crate::alloc::SimHandler)'s
//! `phys_to_virt`) refuses it.
//!
//! The memory is created lazily with [`DEFAULT_SIZE`] on first use; [`reset_with`] replaces
//! it by a fresh, zeroed one of another size.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::Cell;
use std::ptr::null_mut;

/// The first simulated physical address.
pub const SIM_BASE: u64 = 0x8000_0000;
/// The size of the simulated memory when none is given: 1 GiB.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// The size of a frame.
pub const FRAME_SIZE: u64 = 0x1000;
/// The word [`fill_fresh`] writes into frames handed out by the allocator: non-zero, with
/// bit 0 set, so a table that is not zeroed by its user looks full of present entries.
pub const FRESH_FILL: u64 = 0x5A5A_5A5A_5A5A_5A5B;
/// The high half of the words [`poison`] writes into freed frames; the low half is the
/// frame number (`pa >> 12`, truncated to 32 bits).
pub const POISON_TAG: u64 = 0xDEAD_BEEF_0000_0000;

/// Over-allocation used to align the `calloc` block to 4 KiB by hand (an aligned zeroed
/// allocation would be zeroed eagerly by the standard library, committing all of it).
const ALIGN_SLACK: usize = FRAME_SIZE as usize;

struct Region {
    /// 4 KiB-aligned host address of `SIM_BASE`, or null before the first use.
    base: Cell<*mut u8>,
    /// The simulated size in bytes.
    size: Cell<u64>,
    /// The pointer returned by the allocator (for `dealloc`).
    raw: Cell<*mut u8>,
}

impl Region {
    fn release(&self) {
        let raw = self.raw.replace(null_mut());
        if !raw.is_null() {
            let layout = region_layout(self.size.get());
            // SAFETY: `raw` was returned by `alloc_zeroed` with exactly this layout (the size
            // has not changed since) and is released only once, as it was just swapped out.
            unsafe { dealloc(raw, layout) };
        }
        self.base.set(null_mut());
        self.size.set(0);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    static REGION: Region = const {
        Region { base: Cell::new(null_mut()), size: Cell::new(0), raw: Cell::new(null_mut()) }
    };
    static PAGE0: [Cell<u64>; 512] = const { [const { Cell::new(0) }; 512] };
}

fn region_layout(size: u64) -> Layout {
    let bytes = usize::try_from(size).expect("simulated memory size does not fit in usize");
    Layout::from_size_align(bytes + ALIGN_SLACK, 16).expect("simulated memory size too large")
}

fn init(region: &Region, size: u64) {
    region.release();
    let layout = region_layout(size);
    // SAFETY: the layout has a non-zero size (at least `ALIGN_SLACK` bytes).
    let raw = unsafe { alloc_zeroed(layout) };
    if raw.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    let offset = raw.align_offset(FRAME_SIZE as usize);
    assert!(offset < ALIGN_SLACK, "cannot align the simulated memory");
    region.raw.set(raw);
    // `wrapping_add` keeps the provenance of `raw`; the result lies inside the block because
    // `offset < ALIGN_SLACK` and the block is `size + ALIGN_SLACK` bytes long.
    region.base.set(raw.wrapping_add(offset));
    region.size.set(size);
}

/// Replaces this thread's simulated memory by a fresh, zeroed one of `size` bytes (a
/// non-zero multiple of 4 KiB) and clears physical page 0.
///
/// Host pointers obtained before are dangling afterwards. Use [`crate::reset_with`] to also
/// reset the allocator and the logs, which is almost always what a test wants.
pub fn reset_with(size: u64) {
    assert!(
        size > 0 && size % FRAME_SIZE == 0,
        "simulated memory size {size:#x} is not a non-zero multiple of 4 KiB"
    );
    assert!(
        SIM_BASE.checked_add(size).is_some(),
        "simulated memory size {size:#x} overflows"
    );
    REGION.with(|r| init(r, size));
    PAGE0.with(|p| p.iter().for_each(|w| w.set(0)));
}

/// Replaces this thread's simulated memory by a fresh one of [`DEFAULT_SIZE`].
pub fn reset() {
    reset_with(DEFAULT_SIZE);
}

/// The size of this thread's simulated memory in bytes (creating it if needed).
pub fn size() -> u64 {
    REGION.with(|r| {
        if r.base.get().is_null() {
            init(r, DEFAULT_SIZE);
        }
        r.size.get()
    })
}

/// One past the last simulated physical address.
pub fn end() -> u64 {
    SIM_BASE + size()
}

/// Whether `pa` lies in the simulated range `[SIM_BASE, end())` (page 0 excluded).
pub fn contains(pa: u64) -> bool {
    pa >= SIM_BASE && pa - SIM_BASE < size()
}

/// The host address of physical address `pa`, which must lie in `[SIM_BASE, end())`.
///
/// This is the hot path of [`SimHandler`](crate::alloc::SimHandler)'s `phys_to_virt`: a
/// range check and an addition.
///
/// # Panics
///
/// If `pa` is outside the simulated range (in particular for 0).
#[inline]
pub fn host_ptr(pa: u64) -> *mut u8 {
    REGION.with(|r| {
        let mut base = r.base.get();
        if base.is_null() {
            init(r, DEFAULT_SIZE);
            base = r.base.get();
        }
        let off = pa.wrapping_sub(SIM_BASE);
        assert!(
            pa >= SIM_BASE && off < r.size.get(),
            "physical address {pa:#x} is outside the simulated memory [{SIM_BASE:#x}, {:#x})",
            SIM_BASE + r.size.get()
        );
        // The offset is below the region size, so the result stays inside the allocation.
        base.wrapping_add(off as usize)
    })
}

fn check_word(pa: u64) {
    assert!(
        pa % 8 == 0,
        "physical address {pa:#x} is not 8-byte aligned"
    );
}

/// Reads the 64-bit word at physical address `pa` (8-byte aligned, in the simulated range or
/// in page 0). Its signature fits the walkers' memory reader: pass `&mem::read_u64`.
///
/// # Panics
///
/// If `pa` is unaligned or outside both ranges.
pub fn read_u64(pa: u64) -> u64 {
    check_word(pa);
    if pa < FRAME_SIZE {
        return PAGE0.with(|p| p[(pa / 8) as usize].get());
    }
    let ptr = host_ptr(pa).cast::<u64>();
    // SAFETY: `host_ptr` checked that `pa` (8-byte aligned, so the whole word) lies in the
    // live allocation; the base is 4 KiB aligned, so the pointer is aligned for u64.
    unsafe { ptr.read_volatile() }
}

/// Writes the 64-bit word `value` at physical address `pa` (8-byte aligned, in the simulated
/// range or in page 0).
///
/// # Panics
///
/// If `pa` is unaligned or outside both ranges.
pub fn write_u64(pa: u64, value: u64) {
    check_word(pa);
    if pa < FRAME_SIZE {
        PAGE0.with(|p| p[(pa / 8) as usize].set(value));
        return;
    }
    let ptr = host_ptr(pa).cast::<u64>();
    // SAFETY: as in `read_u64`: in range and aligned.
    unsafe { ptr.write_volatile(value) }
}

/// Writes `word` into every 8-byte word of the frame at `pa` (4 KiB aligned; page 0 allowed).
pub fn fill_frame(pa: u64, word: u64) {
    assert!(
        pa % FRAME_SIZE == 0,
        "frame address {pa:#x} is not 4 KiB aligned"
    );
    for off in (0..FRAME_SIZE).step_by(8) {
        write_u64(pa + off, word);
    }
}

/// Fills the frame at `pa` with [`FRESH_FILL`] (what the allocator does to frames it hands
/// out).
pub fn fill_fresh(pa: u64) {
    fill_frame(pa, FRESH_FILL);
}

/// The poison word of the frame at `pa`.
pub fn poison_word(pa: u64) -> u64 {
    POISON_TAG | ((pa >> 12) & 0xFFFF_FFFF)
}

/// Fills the frame at `pa` with its poison word (what the allocator does to freed frames).
pub fn poison(pa: u64) {
    fill_frame(pa, poison_word(pa));
}

/// Whether every word of the frame at `pa` is still its poison word.
pub fn is_poisoned(pa: u64) -> bool {
    let word = poison_word(pa);
    (0..FRAME_SIZE)
        .step_by(8)
        .all(|off| read_u64(pa + off) == word)
}

/// Whether every word of the frame at `pa` is zero.
pub fn is_zero_frame(pa: u64) -> bool {
    (0..FRAME_SIZE)
        .step_by(8)
        .all(|off| read_u64(pa + off) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_round_trip() {
        reset_with(16 * FRAME_SIZE);
        assert_eq!(read_u64(SIM_BASE), 0);
        write_u64(SIM_BASE + 8, 0x1234);
        assert_eq!(read_u64(SIM_BASE + 8), 0x1234);
        let last = SIM_BASE + 16 * FRAME_SIZE - 8;
        write_u64(last, u64::MAX);
        assert_eq!(read_u64(last), u64::MAX);
        // The host pointer sees the same bytes.
        let p = host_ptr(SIM_BASE + 8).cast::<u64>();
        // SAFETY: the address is in range and 8-byte aligned.
        assert_eq!(unsafe { p.read() }, 0x1234);
        assert_eq!(end(), SIM_BASE + 16 * FRAME_SIZE);
    }

    #[test]
    fn page_zero_is_separate() {
        reset_with(FRAME_SIZE);
        assert_eq!(read_u64(0x18), 0);
        write_u64(0x18, 7);
        assert_eq!(read_u64(0x18), 7);
        reset_with(FRAME_SIZE);
        assert_eq!(read_u64(0x18), 0, "reset clears page 0");
    }

    #[test]
    #[should_panic(expected = "outside the simulated memory")]
    fn host_ptr_zero_panics() {
        host_ptr(0);
    }

    #[test]
    #[should_panic(expected = "outside the simulated memory")]
    fn read_past_end_panics() {
        reset_with(FRAME_SIZE);
        read_u64(SIM_BASE + FRAME_SIZE);
    }

    #[test]
    #[should_panic(expected = "not 8-byte aligned")]
    fn unaligned_read_panics() {
        read_u64(SIM_BASE + 4);
    }

    #[test]
    fn poison_and_fill() {
        reset_with(4 * FRAME_SIZE);
        let f = SIM_BASE + FRAME_SIZE;
        assert!(is_zero_frame(f));
        poison(f);
        assert!(is_poisoned(f));
        assert_eq!(read_u64(f + 0x100), 0xDEAD_BEEF_0008_0001);
        fill_fresh(f);
        assert!(!is_poisoned(f));
        assert_eq!(read_u64(f), FRESH_FILL);
    }

    #[test]
    fn default_size_is_lazy() {
        // Touching one word of the default 1 GiB memory must not commit it all; this only
        // checks that it works and has the documented size.
        assert_eq!(size(), DEFAULT_SIZE);
        write_u64(SIM_BASE + DEFAULT_SIZE - 8, 1);
        assert_eq!(read_u64(SIM_BASE + DEFAULT_SIZE - 8), 1);
    }
}
