//! A checking, counting and failing frame allocator over the simulated memory.
//!
//! [`SimHandler`] implements [`PagingHandler`] (all four allocation functions and
//! `phys_to_virt`) over this thread's [`mem`]. Its state is thread-local, like the memory.
//!
//! # Allocation
//!
//! Single frames come from a LIFO free list when it is not empty (so a freed table is reused
//! at once, which makes stale references visible), otherwise from a bump pointer; blocks of
//! several frames, or aligned above 4 KiB, always come from the bump pointer. Frames handed
//! out are filled with [`mem::FRESH_FILL`] (the page table must zero its tables itself);
//! freed frames are filled with their poison word ([`mem::poison`]).
//!
//! # Pairing rule
//!
//! Every block is freed exactly once, with the call that matches its allocation:
//!
//! * a frame from `alloc_frame` only via `dealloc_frame`;
//! * a block from `alloc_frames(n, align)` only via `dealloc_frames(base, n)`, with the same
//!   base and the same `n` (this includes `n == 1`).
//!
//! This is the contract of page_table_multiarch 0.6, whose handlers may implement the four
//! functions independently. [`set_strict_pairing(false)`](set_strict_pairing) relaxes it to
//! "a one-frame block may be freed by either call". Any violation panics with a message that
//! names the frame: double free, unknown frame, a frame inside a larger block, a wrong count,
//! the wrong call.
//!
//! # Fault injection
//!
//! Allocation *calls* are numbered from 1 since the last [`reset`] ([`alloc_count`] counts
//! them, failed ones included). [`set_fail_at`], [`set_fail_after`], [`set_frame_limit`] make
//! calls return `None`; [`set_bad_frame_at`] makes one call return an unaligned or
//! out-of-range address, which the page table must refuse and hand back with the matching
//! free call (the allocator tracks it like any block).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::PagingHandler;

use crate::flush::{Event, log_event};
use crate::mem::{self, FRAME_SIZE, SIM_BASE};

/// The frame allocator of the simulated memory. See the [module documentation](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimHandler;

/// Which allocation call produced a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocCall {
    /// `alloc_frame()`.
    Frame,
    /// `alloc_frames(num, align)`.
    Frames,
}

/// A wrong frame address to return on purpose ([`set_bad_frame_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// A real frame plus 0x800: not 4 KiB aligned.
    Unaligned,
    /// A real block that is 4 KiB aligned but not aligned to the `align` asked for (when the
    /// call asks for 4 KiB alignment only, this is the same as `Unaligned`).
    Misaligned,
    /// Exactly this address, which the allocator does not back with memory: use an address
    /// beyond the metadata's `PA_MAX_ADDR`. The page table must never dereference it.
    Addr(u64),
}

/// A live block.
#[derive(Debug, Clone, Copy)]
struct Block {
    num: usize,
    call: AllocCall,
    /// The real frames behind a bad address (`None` for a good block or `BadFrame::Addr`).
    backing: Option<u64>,
    bad: bool,
}

#[derive(Default)]
struct State {
    /// Next frame of the bump area (0 until first use).
    bump: u64,
    free: Vec<u64>,
    /// Frames freed and not handed out again (for the double-free diagnosis).
    freed: HashSet<u64>,
    /// Live blocks by the address handed out.
    live: BTreeMap<u64, Block>,
    live_frames: usize,
    allocs: usize,
    frees: usize,
    fail_at: Option<usize>,
    fail_after: Option<usize>,
    bad_at: Option<(usize, BadFrame)>,
    frame_limit: Option<usize>,
    lenient: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    static CHECK_LIVE: Cell<bool> = const { Cell::new(false) };
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Clears the allocator: no live frame, counters at zero, no pending fault injection, strict
/// pairing, no liveness check in `phys_to_virt`. The memory itself is not touched (see
/// [`crate::reset`]).
pub fn reset() {
    with(|s| *s = State::default());
    CHECK_LIVE.with(|c| c.set(false));
}

/// The number of allocation calls since the last reset, failed ones included.
pub fn alloc_count() -> usize {
    with(|s| s.allocs)
}

/// The number of free calls since the last reset.
pub fn free_count() -> usize {
    with(|s| s.frees)
}

/// The number of frames currently allocated (bad blocks included).
pub fn live_frames() -> usize {
    with(|s| s.live_frames)
}

/// The live blocks as `(address returned, number of frames)`, sorted by address.
pub fn live_blocks() -> Vec<(u64, usize)> {
    with(|s| s.live.iter().map(|(&pa, b)| (pa, b.num)).collect())
}

/// Whether `pa` lies inside a live block (of good frames).
pub fn is_live(pa: u64) -> bool {
    with(|s| find_containing(s, pa).is_some_and(|(_, b)| !b.bad))
}

/// The `n`-th allocation call from now (1-based) returns `None`, once. `None` cancels.
pub fn set_fail_at(n: Option<usize>) {
    assert_ne!(n, Some(0), "set_fail_at counts from 1");
    with(|s| s.fail_at = n.map(|n| s.allocs + n));
}

/// The first `n` allocation calls from now behave normally; every later one returns `None`
/// until this is cancelled with `None`.
pub fn set_fail_after(n: Option<usize>) {
    with(|s| s.fail_after = n.map(|n| s.allocs + n));
}

/// Allocations that would make more than `limit` frames live return `None`.
pub fn set_frame_limit(limit: Option<usize>) {
    with(|s| s.frame_limit = limit);
}

/// The `n`-th allocation call from now (1-based) returns a bad address of the given kind,
/// once.
pub fn set_bad_frame_at(n: usize, kind: BadFrame) {
    assert_ne!(n, 0, "set_bad_frame_at counts from 1");
    with(|s| s.bad_at = Some((s.allocs + n, kind)));
}

/// Cancels a bad frame set with [`set_bad_frame_at`] that no allocation has returned yet.
pub fn cancel_bad_frame() {
    with(|s| s.bad_at = None);
}

/// `true` (the default): the 0.6 pairing rule of the [module documentation](self).
/// `false`: a one-frame block may be freed by `dealloc_frame` or `dealloc_frames(pa, 1)`
/// whatever call allocated it.
pub fn set_strict_pairing(strict: bool) {
    with(|s| s.lenient = !strict);
}

/// When on, `phys_to_virt` also panics for an address that is not inside a live block (it
/// then costs a lookup). Off by default.
pub fn set_check_live(on: bool) {
    CHECK_LIVE.with(|c| c.set(on));
}

/// Panics, listing the live blocks, unless no frame is allocated.
pub fn assert_no_leaks() {
    let blocks = live_blocks();
    if !blocks.is_empty() {
        let mut msg = format!("{} frame(s) leaked:", live_frames());
        for (pa, n) in blocks {
            let _ = write!(msg, " {pa:#x}x{n}");
        }
        panic!("{msg}");
    }
}

/// A guard that, when dropped (and the thread is not already panicking), checks that as many
/// frames are live as when it was created.
#[derive(Debug)]
#[must_use = "the check happens when the guard is dropped"]
pub struct LeakCheck {
    baseline: usize,
}

impl LeakCheck {
    /// Records the current number of live frames.
    pub fn new() -> Self {
        Self {
            baseline: live_frames(),
        }
    }
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let now = live_frames();
        if now != self.baseline {
            panic!(
                "leak check: {now} frame(s) live, {} when the guard was created; live blocks: {:x?}",
                self.baseline,
                live_blocks()
            );
        }
    }
}

fn find_containing(s: &State, pa: u64) -> Option<(u64, Block)> {
    s.live
        .range(..=pa)
        .next_back()
        .filter(|&(&base, b)| pa - base < b.num as u64 * FRAME_SIZE)
        .map(|(&base, &b)| (base, b))
}

/// Takes `num` frames aligned to `align` from the bump area.
fn bump(s: &mut State, num: usize, align: u64) -> Option<u64> {
    if s.bump == 0 {
        s.bump = SIM_BASE;
    }
    let start = s.bump.checked_next_multiple_of(align)?;
    let end = start.checked_add(num as u64 * FRAME_SIZE)?;
    if end > mem::end() {
        return None;
    }
    // Frames skipped for alignment go to the free list.
    let mut skipped = s.bump;
    while skipped < start {
        s.free.push(skipped);
        skipped += FRAME_SIZE;
    }
    s.bump = end;
    Some(start)
}

fn take_real(s: &mut State, num: usize, align: u64) -> Option<u64> {
    if num == 1 && align == FRAME_SIZE {
        if let Some(pa) = s.free.pop() {
            return Some(pa);
        }
    }
    bump(s, num, align)
}

fn allocate(call: AllocCall, num: usize, align: usize) -> Option<PhysAddr> {
    assert!(num > 0, "alloc_frames called with num = 0");
    assert!(
        align.is_power_of_two() && align as u64 >= FRAME_SIZE,
        "alloc_frames called with align = {align:#x} (must be a power of two >= 4 KiB)"
    );
    let align = align as u64;
    let pa = with(|s| {
        s.allocs += 1;
        let n = s.allocs;
        if s.fail_at == Some(n) {
            s.fail_at = None;
            return None;
        }
        if s.fail_after.is_some_and(|last| n > last) {
            return None;
        }
        if s.frame_limit.is_some_and(|lim| s.live_frames + num > lim) {
            return None;
        }
        let bad = match s.bad_at {
            Some((at, kind)) if at == n => {
                s.bad_at = None;
                Some(kind)
            }
            _ => None,
        };
        let (addr, backing) = match bad {
            None => (take_real(s, num, align)?, None),
            Some(BadFrame::Addr(a)) => (a, None),
            Some(BadFrame::Unaligned) => {
                let real = take_real(s, num, align)?;
                (real + 0x800, Some(real))
            }
            Some(BadFrame::Misaligned) => {
                if align == FRAME_SIZE {
                    let real = take_real(s, num, align)?;
                    (real + 0x800, Some(real))
                } else {
                    // A block aligned to exactly 4 KiB, never to `align`.
                    let real = bump(s, num + 1, align)? + FRAME_SIZE;
                    (real, Some(real))
                }
            }
        };
        // The real frames behind the address, if any.
        let real = if bad.is_none() { Some(addr) } else { backing };
        if let Some(real) = real {
            for i in 0..num as u64 {
                s.freed.remove(&(real + i * FRAME_SIZE));
            }
        }
        let block = Block {
            num,
            call,
            backing,
            bad: bad.is_some(),
        };
        if let Some(old) = s.live.insert(addr, block) {
            panic!("allocator bug: {addr:#x} handed out twice ({old:?})");
        }
        s.live_frames += num;
        Some((addr, real))
    });
    let (addr, real) = pa?;
    if let Some(real) = real {
        for i in 0..num as u64 {
            mem::fill_fresh(real + i * FRAME_SIZE);
        }
    }
    log_event(Event::Alloc(addr, num));
    Some(PhysAddr::from(addr as usize))
}

fn release(call: AllocCall, pa: PhysAddr, num: usize) {
    let pa = pa.as_usize() as u64;
    let name = match call {
        AllocCall::Frame => format!("dealloc_frame({pa:#x})"),
        AllocCall::Frames => format!("dealloc_frames({pa:#x}, {num})"),
    };
    let real = with(|s| {
        let Some(block) = s.live.get(&pa).copied() else {
            if s.freed.contains(&pa) {
                panic!("{name}: double free of frame {pa:#x}");
            }
            if let Some((base, b)) = find_containing(s, pa) {
                panic!(
                    "{name}: {pa:#x} is inside the live block {base:#x} of {} frame(s), not its base",
                    b.num
                );
            }
            panic!("{name}: {pa:#x} was never allocated (unknown frame)");
        };
        if block.num != num {
            panic!(
                "{name}: the block at {pa:#x} has {} frame(s), freed as {num}",
                block.num
            );
        }
        let relaxed = s.lenient && num == 1;
        if block.call != call && !relaxed {
            let alloc = match block.call {
                AllocCall::Frame => "alloc_frame",
                AllocCall::Frames => "alloc_frames",
            };
            panic!("{name}: mismatched free of a block allocated by {alloc}");
        }
        s.live.remove(&pa);
        s.live_frames -= num;
        s.frees += 1;
        let real = if block.bad { block.backing } else { Some(pa) };
        if let Some(real) = real {
            for i in 0..num as u64 {
                let f = real + i * FRAME_SIZE;
                s.free.push(f);
                s.freed.insert(f);
            }
        }
        real
    });
    if let Some(real) = real {
        for i in 0..num as u64 {
            mem::poison(real + i * FRAME_SIZE);
        }
    }
    log_event(Event::Free(pa, num));
}

impl PagingHandler for SimHandler {
    fn alloc_frame() -> Option<PhysAddr> {
        allocate(AllocCall::Frame, 1, FRAME_SIZE as usize)
    }

    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        allocate(AllocCall::Frames, num, align)
    }

    fn dealloc_frame(paddr: PhysAddr) {
        release(AllocCall::Frame, paddr, 1);
    }

    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        release(AllocCall::Frames, paddr, num);
    }

    #[inline]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        let pa = paddr.as_usize() as u64;
        assert!(pa != 0, "phys_to_virt(0)");
        if CHECK_LIVE.with(Cell::get) && !is_live(pa) {
            panic!("phys_to_virt({pa:#x}): not inside a live block");
        }
        VirtAddr::from(mem::host_ptr(pa) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush;

    type H = SimHandler;

    fn pa(x: Option<PhysAddr>) -> u64 {
        x.expect("allocation failed").as_usize() as u64
    }

    fn fresh() {
        crate::reset_with(64 * FRAME_SIZE);
    }

    #[test]
    fn alloc_free_counts_and_reuse() {
        fresh();
        let a = pa(H::alloc_frame());
        let b = pa(H::alloc_frame());
        assert_eq!(a, SIM_BASE);
        assert_eq!(b, SIM_BASE + FRAME_SIZE);
        assert_eq!(live_frames(), 2);
        assert!(is_live(a) && is_live(b + 0x10));
        H::dealloc_frame(PhysAddr::from(a as usize));
        assert!(mem::is_poisoned(a), "freed frames are poisoned");
        assert_eq!(live_frames(), 1);
        // LIFO reuse of the freed frame, handed out dirty.
        assert_eq!(pa(H::alloc_frame()), a);
        assert_eq!(mem::read_u64(a), mem::FRESH_FILL);
        assert_eq!(alloc_count(), 3);
        assert_eq!(free_count(), 1);
    }

    #[test]
    fn contiguous_aligned_block() {
        fresh();
        let _one = pa(H::alloc_frame());
        let blk = pa(H::alloc_frames(4, 0x4000));
        assert_eq!(blk % 0x4000, 0);
        assert_eq!(live_frames(), 5);
        assert_eq!(live_blocks().len(), 2);
        H::dealloc_frames(PhysAddr::from(blk as usize), 4);
        assert_eq!(live_frames(), 1);
    }

    #[test]
    fn phys_to_virt_is_the_simulated_memory() {
        fresh();
        let a = pa(H::alloc_frame());
        let v = H::phys_to_virt(PhysAddr::from(a as usize + 8)).as_usize() as *mut u64;
        // SAFETY: the frame is live and the address is in range and aligned.
        unsafe { v.write(42) };
        assert_eq!(mem::read_u64(a + 8), 42);
    }

    #[test]
    #[should_panic(expected = "phys_to_virt(0)")]
    fn phys_to_virt_zero_panics() {
        H::phys_to_virt(PhysAddr::from(0));
    }

    #[test]
    #[should_panic(expected = "outside the simulated memory")]
    fn phys_to_virt_out_of_range_panics() {
        fresh();
        H::phys_to_virt(PhysAddr::from((SIM_BASE + 64 * FRAME_SIZE) as usize));
    }

    #[test]
    #[should_panic(expected = "not inside a live block")]
    fn phys_to_virt_checks_liveness_on_demand() {
        fresh();
        let a = pa(H::alloc_frame());
        set_check_live(true);
        H::phys_to_virt(PhysAddr::from(a as usize));
        H::dealloc_frame(PhysAddr::from(a as usize));
        H::phys_to_virt(PhysAddr::from(a as usize));
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_panics() {
        fresh();
        let a = H::alloc_frame().unwrap();
        H::dealloc_frame(a);
        H::dealloc_frame(a);
    }

    #[test]
    #[should_panic(expected = "never allocated")]
    fn unknown_frame_panics() {
        fresh();
        H::dealloc_frame(PhysAddr::from(0x1234_5000));
    }

    #[test]
    #[should_panic(expected = "has 4 frame(s), freed as 2")]
    fn wrong_count_panics() {
        fresh();
        let a = H::alloc_frames(4, 0x1000).unwrap();
        H::dealloc_frames(a, 2);
    }

    #[test]
    #[should_panic(expected = "inside the live block")]
    fn free_inside_block_panics() {
        fresh();
        let a = H::alloc_frames(4, 0x1000).unwrap();
        H::dealloc_frame(a + 0x1000);
    }

    #[test]
    #[should_panic(expected = "mismatched free of a block allocated by alloc_frame")]
    fn alloc_frame_freed_by_dealloc_frames_panics() {
        fresh();
        let a = H::alloc_frame().unwrap();
        H::dealloc_frames(a, 1);
    }

    #[test]
    #[should_panic(expected = "mismatched free of a block allocated by alloc_frames")]
    fn alloc_frames_freed_by_dealloc_frame_panics() {
        fresh();
        let a = H::alloc_frames(1, 0x1000).unwrap();
        H::dealloc_frame(a);
    }

    #[test]
    fn lenient_pairing_for_single_frames() {
        fresh();
        set_strict_pairing(false);
        let a = H::alloc_frame().unwrap();
        H::dealloc_frames(a, 1);
        let b = H::alloc_frames(1, 0x1000).unwrap();
        H::dealloc_frame(b);
        assert_eq!(live_frames(), 0);
    }

    #[test]
    fn fail_at_fails_once() {
        fresh();
        H::alloc_frame().unwrap();
        set_fail_at(Some(2));
        assert!(H::alloc_frame().is_some());
        assert!(H::alloc_frame().is_none(), "second call from now fails");
        assert!(H::alloc_frames(2, 0x1000).is_some(), "only once");
        assert_eq!(alloc_count(), 4);
        assert_eq!(live_frames(), 4);
    }

    #[test]
    fn fail_after_and_limit() {
        fresh();
        set_fail_after(Some(1));
        assert!(H::alloc_frame().is_some());
        assert!(H::alloc_frame().is_none());
        assert!(H::alloc_frame().is_none());
        set_fail_after(None);
        assert!(H::alloc_frame().is_some());
        set_frame_limit(Some(3));
        assert!(H::alloc_frames(2, 0x1000).is_none(), "would make 4 live");
        assert!(H::alloc_frame().is_some());
        assert!(H::alloc_frame().is_none());
    }

    #[test]
    fn out_of_memory_returns_none() {
        crate::reset_with(2 * FRAME_SIZE);
        assert!(H::alloc_frames(2, 0x1000).is_some());
        assert!(H::alloc_frame().is_none());
    }

    #[test]
    fn bad_frames_are_tracked_and_handed_back() {
        fresh();
        set_bad_frame_at(1, BadFrame::Unaligned);
        let u = pa(H::alloc_frame());
        assert_eq!(u % FRAME_SIZE, 0x800);
        set_bad_frame_at(1, BadFrame::Addr(1 << 60));
        let x = pa(H::alloc_frame());
        assert_eq!(x, 1 << 60);
        set_bad_frame_at(1, BadFrame::Misaligned);
        let m = pa(H::alloc_frames(4, 0x4000));
        assert_eq!(m % FRAME_SIZE, 0);
        assert_ne!(m % 0x4000, 0);
        assert!(!is_live(u) && !is_live(x));
        assert_eq!(live_frames(), 6);
        H::dealloc_frame(PhysAddr::from(u as usize));
        H::dealloc_frame(PhysAddr::from(x as usize));
        H::dealloc_frames(PhysAddr::from(m as usize), 4);
        assert_no_leaks();
        // The next call is good again.
        assert_eq!(pa(H::alloc_frame()) % FRAME_SIZE, 0);
        // A pending bad frame can be cancelled.
        set_bad_frame_at(1, BadFrame::Unaligned);
        cancel_bad_frame();
        assert_eq!(pa(H::alloc_frame()) % FRAME_SIZE, 0);
    }

    #[test]
    #[should_panic(expected = "1 frame(s) leaked: 0x80000000x1")]
    fn assert_no_leaks_lists_blocks() {
        fresh();
        H::alloc_frame().unwrap();
        assert_no_leaks();
    }

    #[test]
    #[should_panic(expected = "leak check")]
    fn leak_check_guard() {
        fresh();
        let _guard = LeakCheck::new();
        H::alloc_frame().unwrap();
    }

    #[test]
    fn events_are_logged() {
        fresh();
        flush::record_events(true);
        let a = H::alloc_frame().unwrap();
        H::dealloc_frame(a);
        let a = a.as_usize() as u64;
        assert_eq!(
            flush::take_events(),
            vec![Event::Alloc(a, 1), Event::Free(a, 1)]
        );
    }
}
