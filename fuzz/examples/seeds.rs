//! Writes the seed corpora: a few small scenarios per target, encoded with
//! `ptm_fuzz::encode`, and runs each through its target's formats.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus`

use std::path::Path;

use page_table_multiarch::riscv::{Sv39MetaData, Sv48MetaData, Sv57MetaData};
use page_table_multiarch::x86_64::{X64PagingMetaData, X64PagingMetaDataLa57};
use ptm_fuzz::{Addr, Len, Mode, Op, Pa, PaFn, Setup, Step, encode};
use testkit::check::{A64, A64El2, La, Rv, X64};

const RW: u8 = 0b11;
const RWX: u8 = 0b111;
const R: u8 = 0b1;
const USER_RW: u8 = 0b1011;
const DEVICE_R: u8 = 0b1_0001;

fn step(mode: Mode, op: Op) -> Step {
    Step { mode, op }
}

fn c(op: Op) -> Step {
    step(Mode::CURSOR, op)
}

fn page(window: u8, page: u32) -> Addr {
    Addr::Page { window, page }
}

/// 4 KiB, 2 MiB and 1 GiB pages, then every single-page call on them.
fn pages() -> Vec<Step> {
    vec![
        c(Op::Map {
            va: page(1, 0x10),
            pa: Pa::Page(0x1234),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: Addr::Huge {
                window: 1,
                index: 3,
                gig: false,
            },
            pa: Pa::Huge {
                index: 7,
                gig: false,
            },
            size: 1,
            flags: RWX,
        }),
        c(Op::Map {
            va: Addr::Huge {
                window: 1,
                index: 2,
                gig: true,
            },
            pa: Pa::Huge {
                index: 1,
                gig: true,
            },
            size: 2,
            flags: USER_RW,
        }),
        c(Op::Map {
            va: page(1, 0x11),
            pa: Pa::Page(0x99),
            size: 0,
            flags: 0,
        }),
        c(Op::Query {
            va: Addr::Offset {
                window: 1,
                page: 0x10,
                off: 0x123,
            },
        }),
        c(Op::Query {
            va: Addr::Leaf {
                n: 2,
                off: 0x1_0000,
            },
        }),
        c(Op::Protect {
            va: Addr::Leaf { n: 1, off: 5 },
            flags: R,
        }),
        c(Op::Remap {
            va: Addr::Leaf { n: 0, off: 0 },
            pa: Pa::Page(0x4321),
            flags: DEVICE_R,
        }),
        c(Op::Walk { limit: 1000 }),
        c(Op::Dump),
        step(
            Mode::NEW_CURSOR,
            Op::Unmap {
                va: Addr::Leaf { n: 0, off: 9 },
            },
        ),
        c(Op::Unmap { va: page(1, 0x11) }),
        c(Op::Unmap {
            va: Addr::Leaf { n: 0, off: 0 },
        }),
        c(Op::Flush),
        c(Op::Walk { limit: 3 }),
    ]
}

/// Regions with huge pages, split by partial unmaps and protects, at the bottom, the top
/// of the lower half, the upper half and the top of the address space.
fn regions() -> Vec<Step> {
    let mut s = vec![
        c(Op::MapRegion {
            va: Addr::Huge {
                window: 1,
                index: 511,
                gig: false,
            },
            len: Len::Gig(1),
            pa: PaFn::Contig(Pa::Huge {
                index: 511,
                gig: false,
            }),
            flags: RW,
            huge: true,
        }),
        c(Op::MapRegion {
            va: page(1, 0x8_0000),
            len: Len::Huge(3),
            pa: PaFn::Masked(30),
            flags: R,
            huge: true,
        }),
        c(Op::UnmapRegion {
            va: page(1, 0x4_0105),
            len: Len::Pages(7),
        }),
        c(Op::ProtectRegion {
            va: page(1, 0x7_ff00),
            len: Len::Pages(0x300),
            flags: RWX,
        }),
        c(Op::Flush),
        c(Op::Query {
            va: page(1, 0x4_0104),
        }),
        c(Op::Walk { limit: u16::MAX }),
        step(
            Mode::NEW_CURSOR,
            Op::UnmapRegion {
                va: page(1, 0),
                len: Len::Gig(4),
            },
        ),
    ];
    for window in [0, 2, 4, 5] {
        s.push(c(Op::MapRegion {
            va: page(window, 0xf_fff0),
            len: Len::Pages(16),
            pa: PaFn::Same(Pa::Page(7)),
            flags: USER_RW,
            huge: false,
        }));
        s.push(c(Op::MapRegion {
            va: Addr::Huge {
                window,
                index: 0,
                gig: true,
            },
            len: Len::Huge(2),
            pa: PaFn::Contig(Pa::Huge {
                index: 0,
                gig: false,
            }),
            flags: RW,
            huge: true,
        }));
        s.push(c(Op::UnmapRegion {
            va: page(window, 0x100),
            len: Len::Pages(1),
        }));
    }
    s.push(c(Op::Dump));
    s
}

/// Invalid input: non-canonical, unaligned, overflowing, crossing the hole, unsupported
/// page sizes, physical addresses beyond the limit.
fn invalid() -> Vec<Step> {
    vec![
        c(Op::Map {
            va: page(1, 0),
            pa: Pa::Page(1),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: page(6, 0),
            pa: Pa::Page(1),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: Addr::Raw(0x1234_5678_9abc_d000),
            pa: Pa::Page(1),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: Addr::Offset {
                window: 1,
                page: 5,
                off: 0x10,
            },
            pa: Pa::Page(1),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: page(1, 0x200),
            pa: Pa::Page(1),
            size: 1,
            flags: RW,
        }),
        c(Op::Map {
            va: page(1, 0x100),
            pa: Pa::Page(1),
            size: 3,
            flags: RW,
        }),
        c(Op::Map {
            va: page(1, 0x100),
            pa: Pa::Top(0),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: page(1, 0x100),
            pa: Pa::Top(1),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: page(1, 0x200),
            pa: Pa::Top(1),
            size: 1,
            flags: RW,
        }),
        c(Op::Map {
            va: page(1, 0),
            pa: Pa::Page(2),
            size: 0,
            flags: RW,
        }),
        c(Op::Map {
            va: Addr::Huge {
                window: 1,
                index: 0,
                gig: false,
            },
            pa: Pa::Huge {
                index: 0,
                gig: false,
            },
            size: 1,
            flags: RW,
        }),
        c(Op::MapRegion {
            va: page(3, 0x7_fffe),
            len: Len::Pages(4),
            pa: PaFn::Masked(40),
            flags: RW,
            huge: false,
        }),
        c(Op::MapRegion {
            va: Addr::Raw(u64::MAX - 0xfff),
            len: Len::Pages(2),
            pa: PaFn::Masked(40),
            flags: RW,
            huge: false,
        }),
        c(Op::MapRegion {
            va: page(1, 0x10),
            len: Len::Raw(0x1001),
            pa: PaFn::Masked(40),
            flags: RW,
            huge: false,
        }),
        c(Op::MapRegion {
            va: page(1, 0x10),
            len: Len::Pages(4),
            pa: PaFn::Contig(Pa::Raw(0x1008)),
            flags: RW,
            huge: false,
        }),
        c(Op::MapRegion {
            va: page(1, 0x10),
            len: Len::Pages(4),
            pa: PaFn::Contig(Pa::Top(2)),
            flags: RW,
            huge: false,
        }),
        c(Op::MapRegion {
            va: page(1, 0x10),
            len: Len::Pages(0),
            pa: PaFn::Masked(40),
            flags: RW,
            huge: true,
        }),
        c(Op::UnmapRegion {
            va: Addr::Raw(u64::MAX),
            len: Len::Raw(u64::MAX),
        }),
        c(Op::ProtectRegion {
            va: page(7, 0),
            len: Len::Pages(1),
            flags: R,
        }),
        c(Op::Unmap { va: page(7, 3) }),
        c(Op::Protect {
            va: page(6, 3),
            flags: R,
        }),
        c(Op::Remap {
            va: page(1, 0),
            pa: Pa::Raw(0x1_0800),
            flags: RW,
        }),
        c(Op::Remap {
            va: page(1, 0),
            pa: Pa::Top(0),
            flags: RW,
        }),
        c(Op::Remap {
            va: page(1, 9),
            pa: Pa::Page(0),
            flags: RW,
        }),
        c(Op::Query {
            va: Addr::Raw(1 << 63),
        }),
        c(Op::Unmap {
            va: page(1, 0x9999),
        }),
    ]
}

/// Allocation failures and bad frames at each allocation of map, map_region and the
/// splits of unmap_region and protect_region; a failing `try_new` first.
fn faults() -> Vec<Step> {
    let mut s = vec![c(Op::Map {
        va: Addr::Huge {
            window: 1,
            index: 0,
            gig: true,
        },
        pa: Pa::Huge {
            index: 1,
            gig: true,
        },
        size: 2,
        flags: RW,
    })];
    for n in 1..=4 {
        s.push(step(
            Mode::CURSOR.fail_at(n),
            Op::Map {
                va: page(2, 0x1234),
                pa: Pa::Page(5),
                size: 0,
                flags: RW,
            },
        ));
        s.push(step(
            Mode::CURSOR.bad_at(n, n),
            Op::MapRegion {
                va: page(0, 0x1ff),
                len: Len::Pages(0x202),
                pa: PaFn::Masked(40),
                flags: RW,
                huge: true,
            },
        ));
        s.push(step(
            Mode::NEW_CURSOR.fail_at(n),
            Op::UnmapRegion {
                va: page(1, 0x2_0001),
                len: Len::Pages(3),
            },
        ));
        s.push(step(
            Mode::CURSOR.bad_at(n, 2),
            Op::ProtectRegion {
                va: page(1, 0x3_0001),
                len: Len::Pages(3),
                flags: R,
            },
        ));
    }
    s.push(step(
        Mode::IMMEDIATE.fail_at(1),
        Op::UnmapRegion {
            va: page(1, 0x1_0001),
            len: Len::Pages(1),
        },
    ));
    s
}

/// The immediate API: every call, with and without flushing by page and the token.
fn immediate() -> Vec<Step> {
    let modes = [Mode::IMMEDIATE, Mode(0x43), Mode(0x83), Mode(0xc3)];
    let mut s = Vec::new();
    for (i, mode) in modes.into_iter().enumerate() {
        let w = [1, 2, 4, 5][i];
        s.extend([
            step(
                mode,
                Op::Map {
                    va: page(w, 0x30),
                    pa: Pa::Page(3),
                    size: 0,
                    flags: RW,
                },
            ),
            step(
                mode,
                Op::MapRegion {
                    va: page(w, 0x1fe),
                    len: Len::Pages(0x204),
                    pa: PaFn::Masked(21),
                    flags: RWX,
                    huge: true,
                },
            ),
            step(
                mode,
                Op::Protect {
                    va: page(w, 0x30),
                    flags: R,
                },
            ),
            step(
                mode,
                Op::Remap {
                    va: page(w, 0x30),
                    pa: Pa::Page(4),
                    flags: 0,
                },
            ),
            step(
                mode,
                Op::ProtectRegion {
                    va: page(w, 0x1ff),
                    len: Len::Pages(2),
                    flags: R,
                },
            ),
            step(
                mode,
                Op::UnmapRegion {
                    va: page(w, 0x200),
                    len: Len::Huge(1),
                },
            ),
            step(mode, Op::Unmap { va: page(w, 0x30) }),
            step(mode, Op::Query { va: page(w, 0x1ff) }),
        ]);
    }
    s
}

/// A scenario: its name, how `try_new` fails first, its steps.
type Scenario = (&'static str, Setup, fn() -> Vec<Step>);
/// A target: its name and its formats' runners, in the order byte 0 selects them.
type Target = (&'static str, &'static [fn(&[u8])]);

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let scenarios: [Scenario; 5] = [
        ("pages", Setup(0), pages),
        ("regions", Setup(0), regions),
        ("invalid", Setup(0), invalid),
        ("faults", Setup(1), faults),
        ("immediate", Setup(3), immediate),
    ];
    let targets: [Target; 4] = [
        (
            "x86_64",
            &[
                ptm_fuzz::run::<X64<X64PagingMetaData>>,
                ptm_fuzz::run::<X64<X64PagingMetaDataLa57>>,
            ],
        ),
        (
            "aarch64",
            &[ptm_fuzz::run::<A64<false>>, ptm_fuzz::run::<A64El2>],
        ),
        (
            "riscv",
            &[
                ptm_fuzz::run::<Rv<Sv39MetaData>>,
                ptm_fuzz::run::<Rv<Sv48MetaData>>,
                ptm_fuzz::run::<Rv<Sv57MetaData>>,
            ],
        ),
        ("loongarch64", &[ptm_fuzz::run::<La>]),
    ];
    for (target, formats) in targets {
        let out = Path::new(&dir).join(target);
        std::fs::create_dir_all(&out).unwrap();
        for (name, setup, steps) in scenarios {
            let steps = steps();
            assert!(steps.len() <= ptm_fuzz::MAX_STEPS, "{name}: too many steps");
            for (variant, run) in formats.iter().enumerate() {
                // The other variants differ in their address widths: only the scenarios
                // that use the edges of the address space.
                if variant > 0 && !matches!(name, "regions" | "invalid") {
                    continue;
                }
                let data = encode(variant as u8, setup, &steps);
                assert_eq!(
                    ptm_fuzz::decode(&data),
                    (setup, steps.clone()),
                    "{name}: round trip"
                );
                run(&data);
                let file = if formats.len() == 1 {
                    name.to_string()
                } else {
                    format!("{name}-{variant}")
                };
                std::fs::write(out.join(file), &data).unwrap();
            }
        }
    }
}
