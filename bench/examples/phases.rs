//! A diagnostic companion to the `anchors` bench: runs single workloads for this crate and
//! page_table_multiarch 0.6.2 alternately, many times, and prints the median time of each
//! and the median of the per-pair ratios, which resists the drift of a shared machine
//! better than two separate medians.
//!
//! ```sh
//! cargo run --release -p ptm-bench --example phases            # W1-W4, W5g, W7
//! cargo run --release -p ptm-bench --example phases -- w7       # one group: lin, gib or w7
//! ```

use std::hint::black_box;
use std::time::Instant;

use memory_addr::{PhysAddr, VirtAddr};
use ptm_bench::sim::{Sim, SimHandler};
use ptm_bench::{Config, Plan};

type Ours = page_table_multiarch::x86_64::X64PageTable<SimHandler>;
type Old = ptm06::x86_64::X64PageTable<SimHandler>;

const LIN_VA: usize = 0x4000_0000;
const LIN_PA: usize = 0x20_0000_0000;
const LIN_PAGES: usize = 262_144;
const RAND_VA: usize = 0x80_0000_0000;
const RAND_PA: usize = 0x30_0000_0000;
const GIB_PA: usize = 0x40_0000_0000;
const PAIRS: usize = 8;

fn ns_per(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

/// One group for one library: `(name, ns per operation)` for each phase.
macro_rules! group {
    (lin, $t:ty, $k:ident, $sim:expr, $plan:expr) => {{
        use $k::{MappingFlags as F, PageSize};
        $sim.reset();
        let mut t = <$t>::try_new().unwrap();
        let va = |i: usize| VirtAddr::from(LIN_VA + i * 4096);
        let s = Instant::now();
        {
            let mut c = t.cursor();
            for i in 0..LIN_PAGES {
                let pa = PhysAddr::from(LIN_PA + i * 4096);
                c.map(va(i), pa, PageSize::Size4K, F::READ | F::WRITE)
                    .unwrap();
            }
        }
        let w1 = ns_per(s, LIN_PAGES);
        let s = Instant::now();
        let mut sum = 0usize;
        for i in 0..LIN_PAGES {
            sum = sum.wrapping_add(t.query(va(i)).unwrap().0.as_usize());
        }
        black_box(sum);
        let w2 = ns_per(s, LIN_PAGES);
        let s = Instant::now();
        {
            let mut c = t.cursor();
            for i in 0..LIN_PAGES {
                c.protect(va(i), F::READ).unwrap();
            }
        }
        let w3 = ns_per(s, LIN_PAGES);
        let s = Instant::now();
        {
            let mut c = t.cursor();
            for i in 0..LIN_PAGES {
                black_box(c.unmap(va(i)).unwrap());
            }
        }
        let w4 = ns_per(s, LIN_PAGES);
        vec![("W1", w1), ("W2", w2), ("W3", w3), ("W4", w4)]
    }};
    (gib, $t:ty, $k:ident, $sim:expr, $plan:expr) => {{
        use $k::MappingFlags as F;
        let mut total = 0.0;
        for _ in 0..300 {
            $sim.reset();
            let mut t = <$t>::try_new().unwrap();
            let s = Instant::now();
            for i in 0..64usize {
                let base = RAND_VA + (i << 30);
                let pa = GIB_PA + (i << 30);
                t.cursor()
                    .map_region(
                        VirtAddr::from(base),
                        |v| PhysAddr::from(v.as_usize() - base + pa),
                        1 << 30,
                        F::READ | F::WRITE,
                        true,
                    )
                    .unwrap();
            }
            total += ns_per(s, 64);
        }
        vec![("W5g", total / 300.0)]
    }};
    (w7, $t:ty, $k:ident, $sim:expr, $plan:expr) => {{
        use $k::{MappingFlags as F, PageSize};
        $sim.reset();
        let plan: &Plan = $plan;
        let mut t = <$t>::try_new().unwrap();
        let va = |k: usize| VirtAddr::from(RAND_VA + k * 4096);
        let n = plan.map_order.len();
        let s = Instant::now();
        {
            let mut c = t.cursor();
            for &k in &plan.map_order {
                let pa = PhysAddr::from(RAND_PA + k * 4096);
                c.map(va(k), pa, PageSize::Size4K, F::READ | F::WRITE)
                    .unwrap();
            }
        }
        let m = ns_per(s, n);
        let s = Instant::now();
        let mut sum = 0usize;
        for &k in &plan.query_order {
            sum = sum.wrapping_add(t.query(va(k)).unwrap().0.as_usize());
        }
        black_box(sum);
        let q = ns_per(s, n);
        let s = Instant::now();
        {
            let mut c = t.cursor();
            for &k in &plan.unmap_order {
                black_box(c.unmap(va(k)).unwrap());
            }
        }
        let u = ns_per(s, n);
        vec![("W7m", m), ("W7q", q), ("W7u", u)]
    }};
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

macro_rules! compare {
    ($g:ident, $sim:expr, $plan:expr) => {{
        let mut ours = Vec::new();
        let mut old = Vec::new();
        for _ in 0..PAIRS {
            ours.push(group!($g, Ours, page_table_multiarch, $sim, $plan));
            old.push(group!($g, Old, ptm06, $sim, $plan));
        }
        for (i, (name, _)) in ours[0].iter().enumerate() {
            let o = median(ours.iter().map(|r| r[i].1).collect());
            let v = median(old.iter().map(|r| r[i].1).collect());
            let ratio = median(ours.iter().zip(&old).map(|(a, b)| a[i].1 / b[i].1).collect());
            println!("{name:4} ours {o:8.1} ns  0.6.2 {v:8.1} ns  ratio (median of {PAIRS} pairs) {ratio:.2}x");
        }
    }};
}

fn main() {
    let sim = Sim::lock();
    let plan = Plan::new(&Config::full());
    let only = std::env::args().nth(1);
    let run = |g: &str| only.as_deref().is_none_or(|o| o == g);
    if run("lin") {
        compare!(lin, sim, &plan);
    }
    if run("gib") {
        compare!(gib, sim, &plan);
    }
    if run("w7") {
        compare!(w7, sim, &plan);
    }
}
