//! AArch64 page tables: the EL1&0 regime with EL1 entries (byte 0 even) and the EL2 regime
//! (odd).
#![no_main]

use testkit::check::{A64, A64El2};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptm_fuzz::dispatch!(data; A64<false>, A64El2);
});
