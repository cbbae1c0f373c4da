//! LoongArch64 page tables, 4 levels.
#![no_main]

use testkit::check::La;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptm_fuzz::dispatch!(data; La);
});
