//! Side-by-side micro-benchmarks of this workspace's `page_table_multiarch`,
//! page_table_multiarch 0.6.2 and the x86_64 crate's `OffsetPageTable`, all in the x86-64
//! 4-level format, on the same simulated physical memory and the same frame allocator.
//!
//! `cargo bench -p ptm-bench` runs the full set; `PTM_BENCH_QUICK=1` (or `-- --quick`)
//! runs a reduced one. See `docs/BENCHMARKS.md`.
//!
//! Every round builds fresh tables for each library in turn (ours, 0.6.2, x86_64), starting
//! from the same allocator state; the figure reported is the median over the rounds after
//! the warm-up ones. Table creation and destruction are outside the timed parts; a cursor's
//! drop (its flush and deferred frees) is inside.

#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "x86_64")]
mod libs;
#[cfg(target_arch = "x86_64")]
pub mod sim;

use std::collections::HashSet;
use std::fmt::Write as _;

/// W5 and W5g: the number of times the workload runs in a round, each time on a fresh
/// table (one run takes a couple of microseconds: alone, it would measure a cold start).
pub const W5_REPEATS: usize = 16;

/// W5g: the number of 1 GiB regions mapped (consecutive, under one root entry), one call
/// (and, for ours and 0.6.2, one cursor) each.
pub const GIB_CALLS: usize = 64;

/// Sizes and repetitions.
#[derive(Debug, Clone)]
pub struct Config {
    /// W1–W4: number of contiguous 4 KiB pages.
    pub pages: usize,
    /// W5 and W6: bytes of the region (a multiple of 2 MiB).
    pub region: usize,
    /// W7: number of distinct random 4 KiB pages.
    pub random_pages: usize,
    /// W7: bytes of the window the random pages are drawn from.
    pub window: usize,
    /// Rounds run and discarded first.
    pub warmup: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// Seed of the W7 generator.
    pub seed: u64,
}

impl Config {
    /// The full benchmark: 1 GiB of 4 KiB pages, 100,000 random pages in 256 GiB.
    pub fn full() -> Self {
        Self {
            pages: 262_144,
            region: 1 << 30,
            random_pages: 100_000,
            window: 256 << 30,
            warmup: 2,
            rounds: 11,
            seed: 0x5eed_1234_abcd_0001,
        }
    }

    /// A smoke run: a few thousand pages, one round.
    pub fn quick() -> Self {
        Self {
            pages: 4096,
            region: 16 << 20,
            random_pages: 2000,
            warmup: 0,
            rounds: 1,
            ..Self::full()
        }
    }

    /// Quick when `PTM_BENCH_QUICK` is set to anything but `0` or when an argument is
    /// `--quick`; full otherwise.
    pub fn from_env_and_args(args: impl IntoIterator<Item = String>) -> Self {
        let env = std::env::var("PTM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if env || args.into_iter().any(|a| a == "--quick") {
            Self::quick()
        } else {
            Self::full()
        }
    }
}

/// The libraries compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// This workspace's crate.
    Ours,
    /// page_table_multiarch 0.6.2.
    V062,
    /// The x86_64 crate 0.15, `OffsetPageTable`.
    X86,
}

impl Lib {
    /// All of them, in the order they run in a round.
    pub const ALL: [Lib; 3] = [Lib::Ours, Lib::V062, Lib::X86];
}

/// The timed phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Map contiguous 4 KiB pages one call each.
    W1Map,
    /// Query each.
    W2Query,
    /// Protect each to read-only.
    W3Protect,
    /// Unmap each.
    W4Unmap,
    /// Map a region with huge pages allowed, 2 MiB-aligned physical address.
    W5Huge2M,
    /// Map 1 GiB regions with huge pages allowed, 1 GiB-aligned physical address: one
    /// 1 GiB leaf per call.
    W5Huge1G,
    /// Map a region with 4 KiB pages.
    W6Map,
    /// Protect that region.
    W6Protect,
    /// Unmap that region.
    W6Unmap,
    /// Map random pages.
    W7Map,
    /// Query them.
    W7Query,
    /// Unmap them.
    W7Unmap,
}

impl Work {
    /// Every phase, in report order.
    pub const ALL: [Work; 12] = [
        Work::W1Map,
        Work::W2Query,
        Work::W3Protect,
        Work::W4Unmap,
        Work::W5Huge2M,
        Work::W5Huge1G,
        Work::W6Map,
        Work::W6Protect,
        Work::W6Unmap,
        Work::W7Map,
        Work::W7Query,
        Work::W7Unmap,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|&w| w == self).unwrap_or(0)
    }

    /// The report label.
    pub fn label(self, cfg: &Config) -> String {
        let region = human(cfg.region);
        let window = human(cfg.window);
        let (n, r) = (cfg.pages, cfg.random_pages);
        match self {
            Work::W1Map => format!("W1  map 4K x{n} (one cursor)"),
            Work::W2Query => format!("W2  query 4K x{n}"),
            Work::W3Protect => format!("W3  protect 4K x{n} (one cursor)"),
            Work::W4Unmap => format!("W4  unmap 4K x{n} (one cursor)"),
            Work::W5Huge2M => format!("W5  map_region {region} huge, per 2M leaf"),
            Work::W5Huge1G => format!("W5g map_region 1G huge x{}, per call", GIB_CALLS),
            Work::W6Map => format!("W6  map_region {region} 4K"),
            Work::W6Protect => format!("W6p protect_region {region}"),
            Work::W6Unmap => format!("W6u unmap_region {region}"),
            Work::W7Map => format!("W7m map 4K x{r} random in {window}"),
            Work::W7Query => format!("W7q query 4K x{r} random"),
            Work::W7Unmap => format!("W7u unmap 4K x{r} random"),
        }
    }

    /// The number of pages (or leaves) a phase's time is divided by.
    pub fn units(self, cfg: &Config) -> usize {
        match self {
            Work::W1Map | Work::W2Query | Work::W3Protect | Work::W4Unmap => cfg.pages,
            Work::W5Huge2M => W5_REPEATS * (cfg.region >> 21),
            Work::W5Huge1G => W5_REPEATS * GIB_CALLS,
            Work::W6Map | Work::W6Protect | Work::W6Unmap => cfg.region >> 12,
            Work::W7Map | Work::W7Query | Work::W7Unmap => cfg.random_pages,
        }
    }
}

/// The points where the table frames in use are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After W4.
    W4,
    /// After W6u.
    W6,
    /// After W7u.
    W7,
}

impl Point {
    const ALL: [Point; 3] = [Point::W4, Point::W6, Point::W7];

    fn label(self) -> &'static str {
        match self {
            Point::W4 => "after W4 unmap",
            Point::W6 => "after W6u unmap_region",
            Point::W7 => "after W7u random unmap",
        }
    }
}

/// Table frames in use at a [`Point`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Frames {
    /// Right after the unmap phase (root included).
    pub after_unmap: usize,
    /// After the x86_64 crate's `clean_up`.
    pub after_clean_up: Option<usize>,
    /// The time `clean_up` took, in nanoseconds.
    pub clean_up_ns: Option<f64>,
}

/// What one round of one library measured.
#[derive(Debug, Clone, Default)]
pub struct LibRound {
    /// Nanoseconds per phase, in [`Work::ALL`] order.
    pub ns: [f64; 12],
    /// Frames at each [`Point`].
    pub frames: [Frames; 3],
    /// Sums of the queried physical addresses (W2, W7q): the same for every library.
    pub query_sum: [usize; 2],
}

impl LibRound {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn set(&mut self, work: Work, ns: f64) {
        self.ns[work.index()] = ns;
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn frames(
        &mut self,
        point: Point,
        after_unmap: usize,
        after_clean_up: Option<usize>,
        clean_up_ns: Option<f64>,
    ) {
        let i = Point::ALL.iter().position(|&p| p == point).unwrap_or(0);
        self.frames[i] = Frames {
            after_unmap,
            after_clean_up,
            clean_up_ns,
        };
    }
}

/// The W7 page indices (in units of 4 KiB from the window base), in three orders.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The order pages are mapped in.
    pub map_order: Vec<usize>,
    /// The order they are queried in.
    pub query_order: Vec<usize>,
    /// The order they are unmapped in.
    pub unmap_order: Vec<usize>,
}

/// SplitMix64: small, fast and good enough to scatter pages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

impl Plan {
    /// Draws `cfg.random_pages` distinct pages of the window.
    ///
    /// # Panics
    /// If the window holds fewer pages than asked for.
    pub fn new(cfg: &Config) -> Self {
        let slots = cfg.window >> 12;
        assert!(cfg.random_pages <= slots / 2, "window too small");
        let mut rng = Rng(cfg.seed);
        let mut seen = HashSet::with_capacity(cfg.random_pages);
        let mut map_order = Vec::with_capacity(cfg.random_pages);
        while map_order.len() < cfg.random_pages {
            let k = rng.below(slots);
            if seen.insert(k) {
                map_order.push(k);
            }
        }
        let mut query_order = map_order.clone();
        rng.shuffle(&mut query_order);
        let mut unmap_order = map_order.clone();
        rng.shuffle(&mut unmap_order);
        Self {
            map_order,
            query_order,
            unmap_order,
        }
    }
}

/// The medians of a run, per library.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The configuration run.
    pub config: Config,
    /// Median nanoseconds per unit, `[lib][work]`.
    pub ns_per_unit: [[f64; 12]; 3],
    /// Frames at each point, from the last round, `[lib][point]`.
    pub frames: [[Frames; 3]; 3],
}

/// Runs every round and returns the medians.
///
/// # Panics
/// If a library fails an operation, the libraries disagree on a query, or ours or 0.6.2
/// leaks a table frame.
#[cfg(target_arch = "x86_64")]
pub fn run(cfg: &Config) -> Summary {
    let plan = Plan::new(cfg);
    let sim = sim::Sim::lock();
    let expect_w2 = (0..cfg.pages).fold(0usize, |s, i| s.wrapping_add(libs::PA_LINEAR + (i << 12)));
    let expect_w7 = plan
        .map_order
        .iter()
        .fold(0usize, |s, &k| s.wrapping_add(libs::PA_RANDOM + (k << 12)));
    let mut samples: [Vec<LibRound>; 3] = Default::default();
    for round in 0..cfg.warmup + cfg.rounds {
        // The order rotates every round, so no library always runs first (or right after
        // the same one) with the caches and the host's memory in the same state.
        for (l, lib) in Lib::ALL
            .into_iter()
            .enumerate()
            .cycle()
            .skip(round % 3)
            .take(3)
        {
            let r = match lib {
                Lib::Ours => libs::round_ours(&sim, cfg, &plan),
                Lib::V062 => libs::round_old(&sim, cfg, &plan),
                Lib::X86 => libs::round_x86(&sim, cfg, &plan),
            };
            assert_eq!(
                r.query_sum,
                [expect_w2, expect_w7],
                "{lib:?}: wrong query results"
            );
            if round >= cfg.warmup {
                samples[l].push(r);
            }
        }
    }
    let mut ns_per_unit = [[0.0; 12]; 3];
    let mut frames = [[Frames::default(); 3]; 3];
    for l in 0..3 {
        for (w, work) in Work::ALL.into_iter().enumerate() {
            let mut v: Vec<f64> = samples[l].iter().map(|r| r.ns[w]).collect();
            ns_per_unit[l][w] = median(&mut v) / work.units(cfg) as f64;
        }
        if let Some(last) = samples[l].last() {
            frames[l] = last.frames;
        }
    }
    Summary {
        config: cfg.clone(),
        ns_per_unit,
        frames,
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `1G`, `256G`, `16M`, …
fn human(bytes: usize) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{}G", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{}M", bytes >> 20)
    } else {
        format!("{}K", bytes >> 10)
    }
}

/// A time in the unit that keeps it readable.
fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

impl Summary {
    /// The plain-text report: one line per phase, then the frame lines.
    pub fn report(&self) -> String {
        let cfg = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "x86-64 4-level, median of {} rounds after {} warm-up; time per page (W5: per 2M leaf, W5g: per call)",
            cfg.rounds, cfg.warmup
        );
        let width = Work::ALL
            .iter()
            .map(|w| w.label(cfg).len())
            .max()
            .unwrap_or(0);
        for (w, work) in Work::ALL.into_iter().enumerate() {
            let [ours, old, x86] = [0, 1, 2].map(|l| self.ns_per_unit[l][w]);
            let _ = writeln!(
                out,
                "{:<width$}  ours {:>9}  0.6.2 {:>9}  x86_64 {:>9}   ours/0.6.2 {:>5.2}x  x86_64/0.6.2 {:>5.2}x",
                work.label(cfg),
                time(ours),
                time(old),
                time(x86),
                ours / old,
                x86 / old,
            );
        }
        let _ = writeln!(out, "table frames in use (root included):");
        for (p, point) in Point::ALL.into_iter().enumerate() {
            let [ours, old, x86] = [0, 1, 2].map(|l| self.frames[l][p]);
            let mut line = format!(
                "  {:<24} ours {:>6}  0.6.2 {:>6}  x86_64 {:>6}",
                point.label(),
                ours.after_unmap,
                old.after_unmap,
                x86.after_unmap
            );
            if let (Some(after), Some(ns)) = (x86.after_clean_up, x86.clean_up_ns) {
                let _ = write!(line, " -> {after} after clean_up ({})", time(ns));
            }
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// Runs the benchmark configured by the environment and `args`, and prints the report.
pub fn main_with_args(args: impl IntoIterator<Item = String>) {
    let cfg = Config::from_env_and_args(args);
    #[cfg(target_arch = "x86_64")]
    {
        let summary = run(&cfg);
        print!("{}", summary.report());
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = cfg;
        println!("ptm-bench compares x86-64 tables and runs only on an x86_64 host");
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The quick mode runs and every library does what the others do.
    #[test]
    fn quick_mode_runs() {
        let cfg = Config::quick();
        let s = run(&cfg);
        let report = s.report();
        assert!(report.contains("W7u"), "{report}");
        // Ours frees emptied tables; 0.6.2 keeps them; clean_up frees the x86_64 crate's.
        for p in 0..3 {
            assert_eq!(s.frames[0][p].after_unmap, 1);
            assert!(s.frames[1][p].after_unmap > 1);
            assert_eq!(s.frames[2][p].after_clean_up, Some(1));
        }
        for l in 0..3 {
            assert!(s.ns_per_unit[l].iter().all(|t| t.is_finite() && *t >= 0.0));
        }
    }

    #[test]
    fn plan_pages_are_distinct() {
        let cfg = Config::quick();
        let plan = Plan::new(&cfg);
        let set: HashSet<_> = plan.map_order.iter().copied().collect();
        assert_eq!(set.len(), cfg.random_pages);
        let mut q = plan.query_order.clone();
        q.sort_unstable();
        let mut m = plan.map_order.clone();
        m.sort_unstable();
        assert_eq!(q, m);
    }
}
