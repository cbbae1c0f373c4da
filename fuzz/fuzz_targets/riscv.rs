//! RISC-V page tables: Sv39, Sv48, Sv57 (byte 0 modulo 3).
#![no_main]

use page_table_multiarch::riscv::{Sv39MetaData, Sv48MetaData, Sv57MetaData};
use testkit::check::Rv;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ptm_fuzz::dispatch!(data; Rv<Sv39MetaData>, Rv<Sv48MetaData>, Rv<Sv57MetaData>);
});
