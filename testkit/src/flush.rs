//! TLB flush recording and the event log.
//!
//! [`Recording<M>`] is a [`PagingMetaData`] that behaves exactly like `M` except that
//! `flush_tlb` executes nothing: it appends the call to a thread-local flush log
//! ([`take_flushes`]). When the event log is on ([`record_events`]), flushes and the frame
//! allocations and frees of [`SimHandler`](crate::alloc::SimHandler) are also appended, in
//! order, to one thread-local [`Event`] log ([`take_events`]), so a test can check that a
//! table frame is freed only after a flush that covers it ([`unflushed_frees`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::marker::PhantomData;

use page_table_multiarch::{PageSize, PagingMetaData};

/// One entry of the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `flush_tlb` was called with this address (`None`: flush everything).
    Flush(Option<usize>),
    /// `num` frames were allocated at `pa` (successful allocations only).
    Alloc(u64, usize),
    /// `num` frames at `pa` were freed.
    Free(u64, usize),
}

thread_local! {
    static FLUSHES: RefCell<Vec<Option<usize>>> = const { RefCell::new(Vec::new()) };
    static EVENTS_ON: Cell<bool> = const { Cell::new(false) };
    static EVENTS: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
}

/// Returns and clears this thread's flush log: one entry per `flush_tlb` call made through a
/// [`Recording`] metadata, in call order. The log grows until it is taken (or [`reset`]), so
/// long random tests should take it regularly.
pub fn take_flushes() -> Vec<Option<usize>> {
    FLUSHES.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

/// The number of entries in this thread's flush log.
pub fn flush_count() -> usize {
    FLUSHES.with(|f| f.borrow().len())
}

/// Turns this thread's event log on or off (it starts off). Turning it on does not clear it.
pub fn record_events(on: bool) {
    EVENTS_ON.with(|e| e.set(on));
}

/// Returns and clears this thread's event log.
pub fn take_events() -> Vec<Event> {
    EVENTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// Appends `event` to the event log if it is on. The frame allocator calls this; tests may
/// too.
pub fn log_event(event: Event) {
    if EVENTS_ON.with(Cell::get) {
        EVENTS.with(|e| e.borrow_mut().push(event));
    }
}

/// Clears both logs and turns the event log off.
pub fn reset() {
    FLUSHES.with(|f| f.borrow_mut().clear());
    EVENTS.with(|e| e.borrow_mut().clear());
    EVENTS_ON.with(|e| e.set(false));
}

/// The frees in `events` that no covering flush precedes.
///
/// For every [`Event::Free`] of a block at `pa`, some [`Event::Flush`] `f` must appear after
/// the block's most recent [`Event::Alloc`] (or the start of the log) and before the free,
/// with `covers(f, pa)` true. The frees without one are returned, in log order.
///
/// `covers` states the policy, for example `|f, _| f.is_none()` (only a full flush covers a
/// table) or a test's own map from table frames to the addresses they translate. Frames that
/// are not tables (none, with the page table engine) can be filtered out by returning true.
pub fn unflushed_frees(
    events: &[Event],
    mut covers: impl FnMut(Option<usize>, u64) -> bool,
) -> Vec<(u64, usize)> {
    let mut since: HashMap<u64, usize> = HashMap::new();
    let mut bad = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        match *ev {
            Event::Alloc(pa, _) => {
                since.insert(pa, i + 1);
            }
            Event::Free(pa, num) => {
                let start = since.get(&pa).copied().unwrap_or(0);
                let covered = events[start..i]
                    .iter()
                    .any(|e| matches!(*e, Event::Flush(f) if covers(f, pa)));
                if !covered {
                    bad.push((pa, num));
                }
            }
            Event::Flush(_) => {}
        }
    }
    bad
}

/// A [`PagingMetaData`] identical to `M` whose `flush_tlb` records the call in this thread's
/// flush log (and event log) instead of executing anything.
///
/// Every constant and function is `M`'s, including the defaulted ones.
pub struct Recording<M>(PhantomData<fn() -> M>);

impl<M: PagingMetaData> PagingMetaData for Recording<M> {
    const LEVELS: usize = M::LEVELS;
    const PA_MAX_BITS: usize = M::PA_MAX_BITS;
    const VA_MAX_BITS: usize = M::VA_MAX_BITS;
    const PA_MAX_ADDR: usize = M::PA_MAX_ADDR;
    const MAX_PAGE_SIZE: PageSize = M::MAX_PAGE_SIZE;
    const FLUSH_THRESHOLD: usize = M::FLUSH_THRESHOLD;
    const FLUSH_BY_VA_COVERS_TABLES: bool = M::FLUSH_BY_VA_COVERS_TABLES;
    const BREAK_BEFORE_MAKE: bool = M::BREAK_BEFORE_MAKE;

    type VirtAddr = M::VirtAddr;

    #[inline]
    fn paddr_is_valid(paddr: usize) -> bool {
        M::paddr_is_valid(paddr)
    }

    #[inline]
    fn vaddr_is_valid(vaddr: usize) -> bool {
        M::vaddr_is_valid(vaddr)
    }

    fn flush_tlb(vaddr: Option<Self::VirtAddr>) {
        let v = vaddr.map(Into::into);
        FLUSHES.with(|f| f.borrow_mut().push(v));
        log_event(Event::Flush(v));
    }

    #[inline]
    fn canonicalize(vaddr: usize) -> usize {
        M::canonicalize(vaddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory_addr::VirtAddr;

    /// A metadata that overrides every defaulted item, to see that each is delegated.
    struct Odd;
    impl PagingMetaData for Odd {
        const LEVELS: usize = 3;
        const PA_MAX_BITS: usize = 40;
        const VA_MAX_BITS: usize = 39;
        const PA_MAX_ADDR: usize = 0x1234;
        const MAX_PAGE_SIZE: PageSize = PageSize::Size2M;
        const FLUSH_THRESHOLD: usize = 7;
        const FLUSH_BY_VA_COVERS_TABLES: bool = true;
        type VirtAddr = VirtAddr;
        fn paddr_is_valid(paddr: usize) -> bool {
            paddr == 1
        }
        fn vaddr_is_valid(vaddr: usize) -> bool {
            vaddr == 2
        }
        fn flush_tlb(_: Option<VirtAddr>) {
            panic!("the wrapped flush must not run");
        }
        fn canonicalize(vaddr: usize) -> usize {
            vaddr + 3
        }
    }

    type R = Recording<Odd>;

    #[test]
    fn delegates_everything() {
        assert_eq!(R::LEVELS, 3);
        assert_eq!(R::PA_MAX_BITS, 40);
        assert_eq!(R::VA_MAX_BITS, 39);
        assert_eq!(R::PA_MAX_ADDR, 0x1234);
        assert_eq!(R::MAX_PAGE_SIZE, PageSize::Size2M);
        assert_eq!(R::FLUSH_THRESHOLD, 7);
        const { assert!(R::FLUSH_BY_VA_COVERS_TABLES) };
        assert!(R::paddr_is_valid(1) && !R::paddr_is_valid(2));
        assert!(R::vaddr_is_valid(2) && !R::vaddr_is_valid(1));
        assert_eq!(R::canonicalize(10), 13);
    }

    #[test]
    fn records_flushes_and_events() {
        reset();
        R::flush_tlb(Some(VirtAddr::from(0x5000)));
        assert_eq!(take_events(), vec![], "the event log starts off");
        record_events(true);
        R::flush_tlb(None);
        log_event(Event::Free(0x8000_0000, 1));
        assert_eq!(take_flushes(), vec![Some(0x5000), None]);
        assert_eq!(take_flushes(), vec![]);
        assert_eq!(
            take_events(),
            vec![Event::Flush(None), Event::Free(0x8000_0000, 1)]
        );
    }

    #[test]
    fn unflushed_frees_policy() {
        use Event::*;
        let a = 0x8000_1000;
        let b = 0x8000_2000;
        let log = [
            Alloc(a, 1),
            Flush(None),
            Alloc(b, 1),
            Free(a, 1),
            Free(b, 1),
        ];
        // A's free follows a full flush made after its allocation; B's does not.
        assert_eq!(unflushed_frees(&log, |f, _| f.is_none()), vec![(b, 1)]);
        let log = [
            Alloc(a, 1),
            Flush(Some(0x1000)),
            Alloc(b, 1),
            Free(a, 1),
            Flush(None),
            Free(b, 1),
        ];
        assert_eq!(unflushed_frees(&log, |f, _| f.is_none()), vec![(a, 1)]);
        assert_eq!(
            unflushed_frees(&log, |f, _| f == Some(0x1000)),
            vec![(b, 1)]
        );
    }
}
