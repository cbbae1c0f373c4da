//! x86_64 page tables, 4-level (byte 0 even) and 5-level (odd).
#![no_main]

use page_table_multiarch::x86_64::{X64PagingMetaData, X64PagingMetaDataLa57};
use testkit::check::X64;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptm_fuzz::dispatch!(data; X64<X64PagingMetaData>, X64<X64PagingMetaDataLa57>);
});
