//! Host-side test kit for `page_table_multiarch`.
//!
//! * [`mem`]: simulated physical memory, one instance per thread;
//! * [`flush`]: [`Recording`], a metadata wrapper that logs TLB flushes, and the
//!   flush/alloc/free event log;
//!
//! All state is thread-local: a test runs the page table on its own thread and starts with
//! [`reset`] (or [`reset_with`]).

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod flush;
pub mod mem;

pub use flush::Recording;

/// Resets this thread's kit: fresh zeroed simulated memory of [`mem::DEFAULT_SIZE`], and the
/// other modules' state.
pub fn reset() {
    reset_with(mem::DEFAULT_SIZE);
}

/// Like [`reset`], with `size` bytes of simulated memory (a non-zero multiple of 4 KiB).
pub fn reset_with(size: u64) {
    mem::reset_with(size);
    flush::reset();
}
