//! Host-side test kit for `page_table_multiarch`.
//!
//! * [`mem`]: simulated physical memory, one instance per thread;
//! * [`alloc`]: [`SimHandler`], a [`PagingHandler`](page_table_multiarch::PagingHandler)
//!   over that memory that checks pairing, counts frames, fails and misbehaves on demand;
//! * [`model`]: a reference model of the mappings, independent of any page table;
//! * [`check`]: per-format expectations stated from the manuals, and the check that a table
//!   equals a model, agrees with the walker and holds only the frames it needs;
//! * [`walker`]: reference MMU walkers for x86_64, AArch64, RISC-V and LoongArch64, written
//!   from the manuals and sharing no code with `page_table_entry`;
//! * [`flush`]: [`Recording`], a metadata wrapper that logs TLB flushes, and the
//!   flush/alloc/free event log;
//! * [`rng`]: a small seeded PRNG.
//!
//! All state is thread-local: a test runs the page table on its own thread and starts with
//! [`reset`] (or [`reset_with`]).
//!
//! ```
//! use page_table_multiarch::PagingHandler;
//! use testkit::{SimHandler, alloc, mem};
//!
//! testkit::reset_with(16 * mem::FRAME_SIZE);
//! let frame = SimHandler::alloc_frame().unwrap();
//! assert_eq!(alloc::live_frames(), 1);
//! SimHandler::dealloc_frame(frame);
//! alloc::assert_no_leaks();
//! ```

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod alloc;
pub mod check;
pub mod flush;
pub mod mem;
pub mod model;
pub mod rng;
pub mod walker;

pub use alloc::{LeakCheck, SimHandler};
pub use flush::Recording;
pub use model::Model;
pub use rng::Rng;

/// Resets this thread's kit: fresh zeroed simulated memory of [`mem::DEFAULT_SIZE`], an empty
/// allocator with default settings, empty flush and event logs.
pub fn reset() {
    reset_with(mem::DEFAULT_SIZE);
}

/// Like [`reset`], with `size` bytes of simulated memory (a non-zero multiple of 4 KiB).
pub fn reset_with(size: u64) {
    mem::reset_with(size);
    alloc::reset();
    flush::reset();
}

/// The examples of the repository's README, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
