//! `cargo bench -p ptm-bench`: this crate vs page_table_multiarch 0.6.2 vs the x86_64 crate.
//! Quick mode: `PTM_BENCH_QUICK=1` or `cargo bench -p ptm-bench -- --quick`.

fn main() {
    ptm_bench::main_with_args(std::env::args().skip(1));
}
