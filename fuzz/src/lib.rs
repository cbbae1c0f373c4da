//! The driver shared by the fuzz targets: decodes an input into a sequence of operations on
//! a page table of one format, runs them through the cursor and the immediate API, and
//! checks every step against the test kit's reference model, reference walker and frame
//! allocator ([`testkit::check`]).
//!
//! # Input format
//!
//! Integers are little-endian; an input that ends early reads as zeros.
//!
//! * byte 0: the variant of the format family (chosen by the target, e.g. 4- or 5-level);
//! * byte 1: how the first `try_new` fails ([`Setup`]);
//! * then up to [`MAX_STEPS`] steps: a mode byte ([`Mode`]: which API, which injected
//!   allocator fault), an opcode byte and the operation's fields ([`Op`]).
//!
//! [`encode`] writes a step list in this format (the seed corpora are made with it).
//!
//! # What is checked
//!
//! After every step: no panic; every result is what the model predicts, including the
//! documented error for invalid input (non-canonical, unaligned, overflowing, unsupported
//! page size, out-of-range physical address), and an error leaves `mappings()` unchanged
//! (except the documented `unmap` of a reservation); the table's leaves equal the model's,
//! the reference walker agrees on a sample, the table holds exactly the tables its leaves
//! need; after every flushed step the allocator has exactly those frames live; after the
//! table is dropped, none. The allocator itself panics on a double or mismatched free.

use std::cell::{Cell, RefCell};
use std::sync::Once;

use arbitrary::{Arbitrary, Unstructured};
use memory_addr::{PhysAddr, VirtAddr};
use page_table_multiarch::{
    GenericPTE, MappingFlags as F, PageSize, PageTable64Cursor, PagingError as E, PagingMetaData,
    PagingResult,
};
use testkit::alloc::{self, BadFrame, SimHandler};
use testkit::check::{self, Format, Table};
use testkit::model::{Leaf, Model};
use testkit::rng::Rng;

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;
/// The span of an address window.
const WINDOW: u64 = 4 * G1;
/// The most steps one input runs.
pub const MAX_STEPS: usize = 64;
/// The most leaves one `map_region` may create; larger valid regions are skipped, to keep
/// each input fast.
const MAX_PLAN: usize = 8192;
/// The simulated memory of one run.
const MEM_SIZE: u64 = 64 << 20;

// -------------------------------------------------------------------------------------
// Operands
// -------------------------------------------------------------------------------------

/// A virtual address operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    /// Page `page` (modulo the window) of window `window` ([`window_base`]).
    Page { window: u8, page: u32 },
    /// The `index`-th 2 MiB (or, with `gig`, 1 GiB) boundary of a window.
    Huge { window: u8, index: u16, gig: bool },
    /// A page of a window plus a byte offset (the low 12 bits of `off`).
    Offset { window: u8, page: u32, off: u16 },
    /// Exactly this address.
    Raw(u64),
    /// Inside the `n`-th leaf of the model (modulo their number), at byte `off * 8` (modulo
    /// its size); the start of window 1 when the model is empty.
    Leaf { n: u16, off: u32 },
}

/// A physical address operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pa {
    /// Frame number `n`.
    Page(u32),
    /// The `n`-th 2 MiB (or, with `gig`, 1 GiB) boundary.
    Huge { index: u16, gig: bool },
    /// `n` frames below the first address beyond the format's limit (0: just beyond).
    Top(u16),
    /// Exactly this address.
    Raw(u64),
}

/// A length operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// `n % 1025` pages of 4 KiB.
    Pages(u16),
    /// `n % 17` times 2 MiB.
    Huge(u8),
    /// `n % 5` times 1 GiB.
    Gig(u8),
    /// Exactly this length.
    Raw(u64),
}

/// How `map_region` computes the physical address of each page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaFn {
    /// Contiguous from this address at the start of the region.
    Contig(Pa),
    /// Every page at this address.
    Same(Pa),
    /// The virtual address itself, keeping its low `12 + bits % 53` bits.
    Masked(u8),
}

/// One operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `map` with page size `[4K, 2M, 1G, 1M][size % 4]`.
    Map {
        va: Addr,
        pa: Pa,
        size: u8,
        flags: u8,
    },
    /// `map_region`.
    MapRegion {
        va: Addr,
        len: Len,
        pa: PaFn,
        flags: u8,
        huge: bool,
    },
    /// `unmap`.
    Unmap { va: Addr },
    /// `unmap_region`.
    UnmapRegion { va: Addr, len: Len },
    /// `protect`.
    Protect { va: Addr, flags: u8 },
    /// `protect_region`.
    ProtectRegion { va: Addr, len: Len, flags: u8 },
    /// `remap`.
    Remap { va: Addr, pa: Pa, flags: u8 },
    /// `query`.
    Query { va: Addr },
    /// `walk` visiting at most `limit` entries.
    Walk { limit: u16 },
    /// `mappings()` and `dump()`.
    Dump,
    /// The cursor's `flush` (nothing outside a cursor).
    Flush,
}

/// Which API a step uses, and which allocator fault it injects.
///
/// Bits 0–1: 0 or 1 the current cursor, 2 a new cursor (the current one is dropped, which
/// flushes), 3 the immediate API (the table's methods; `flush_tlb_by_page` from bit 6, the
/// returned token flushed when bit 7 is set, ignored otherwise). Bits 2–3: 1 fails the
/// `1 + bits 4–5`-th allocation of the step, 2 makes it return a bad frame of kind
/// `bits 6–7 % 3` (unaligned, misaligned, beyond the physical limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u8);

impl Mode {
    /// The current cursor, no fault.
    pub const CURSOR: Self = Self(0);
    /// A new cursor, no fault.
    pub const NEW_CURSOR: Self = Self(2);
    /// The immediate API, no fault.
    pub const IMMEDIATE: Self = Self(3);

    fn immediate(self) -> bool {
        self.0 & 3 == 3
    }
    fn new_cursor(self) -> bool {
        self.0 & 3 == 2
    }
    fn fault(self) -> Fault {
        let n = 1 + ((self.0 >> 4) & 3) as usize;
        match (self.0 >> 2) & 3 {
            1 => Fault::FailAt(n),
            2 => Fault::Bad(n, (self.0 >> 6) % 3),
            _ => Fault::None,
        }
    }
    /// This mode, failing the `n`-th allocation (1–4).
    pub const fn fail_at(self, n: u8) -> Self {
        Self((self.0 & 0xc3) | (1 << 2) | (((n - 1) & 3) << 4))
    }
    /// This mode, with a bad `n`-th allocation (1–4) of `kind` (0 unaligned, 1
    /// misaligned, 2 beyond the limit).
    pub const fn bad_at(self, n: u8, kind: u8) -> Self {
        Self((self.0 & 0x03) | (2 << 2) | (((n - 1) & 3) << 4) | ((kind % 3) << 6))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    FailAt(usize),
    Bad(usize, u8),
}

/// One step: the API and fault, and the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Which API, which fault.
    pub mode: Mode,
    /// What to do.
    pub op: Op,
}

/// How the first `try_new` of a run fails: byte `% 4`: 0 it does not, 1 its first
/// allocation fails, 2 its second, 3 its first returns an unaligned frame. A failed
/// `try_new` must leak nothing; the run then starts with one that succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup(pub u8);

// -------------------------------------------------------------------------------------
// Decoding and encoding
// -------------------------------------------------------------------------------------

type R<T> = arbitrary::Result<T>;

fn byte(u: &mut Unstructured<'_>) -> R<u8> {
    u8::arbitrary(u)
}

impl Addr {
    fn decode(u: &mut Unstructured<'_>) -> R<Self> {
        let tag = byte(u)?;
        Ok(match tag % 5 {
            0 => Self::Page {
                window: byte(u)?,
                page: u32::arbitrary(u)?,
            },
            1 => Self::Huge {
                window: byte(u)?,
                index: u16::arbitrary(u)?,
                gig: tag & 0x80 != 0,
            },
            2 => Self::Offset {
                window: byte(u)?,
                page: u32::arbitrary(u)?,
                off: u16::arbitrary(u)?,
            },
            3 => Self::Raw(u64::arbitrary(u)?),
            _ => Self::Leaf {
                n: u16::arbitrary(u)?,
                off: u32::arbitrary(u)?,
            },
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Page { window, page } => {
                out.extend([0, window]);
                out.extend(page.to_le_bytes());
            }
            Self::Huge { window, index, gig } => {
                // 0x83 % 5 == 1, with bit 7 set.
                out.extend([if gig { 0x83 } else { 1 }, window]);
                out.extend(index.to_le_bytes());
            }
            Self::Offset { window, page, off } => {
                out.extend([2, window]);
                out.extend(page.to_le_bytes());
                out.extend(off.to_le_bytes());
            }
            Self::Raw(a) => {
                out.push(3);
                out.extend(a.to_le_bytes());
            }
            Self::Leaf { n, off } => {
                out.push(4);
                out.extend(n.to_le_bytes());
                out.extend(off.to_le_bytes());
            }
        }
    }
}

impl Pa {
    fn decode(u: &mut Unstructured<'_>) -> R<Self> {
        let tag = byte(u)?;
        Ok(match tag % 4 {
            0 => Self::Page(u32::arbitrary(u)?),
            1 => Self::Huge {
                index: u16::arbitrary(u)?,
                gig: tag & 0x80 != 0,
            },
            2 => Self::Top(u16::arbitrary(u)?),
            _ => Self::Raw(u64::arbitrary(u)?),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Page(n) => {
                out.push(0);
                out.extend(n.to_le_bytes());
            }
            Self::Huge { index, gig } => {
                out.push(if gig { 0x81 } else { 1 });
                out.extend(index.to_le_bytes());
            }
            Self::Top(n) => {
                out.push(2);
                out.extend(n.to_le_bytes());
            }
            Self::Raw(a) => {
                out.push(3);
                out.extend(a.to_le_bytes());
            }
        }
    }
}

impl Len {
    fn decode(u: &mut Unstructured<'_>) -> R<Self> {
        Ok(match byte(u)? % 4 {
            0 => Self::Pages(u16::arbitrary(u)?),
            1 => Self::Huge(byte(u)?),
            2 => Self::Gig(byte(u)?),
            _ => Self::Raw(u64::arbitrary(u)?),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Pages(n) => {
                out.push(0);
                out.extend(n.to_le_bytes());
            }
            Self::Huge(n) => out.extend([1, n]),
            Self::Gig(n) => out.extend([2, n]),
            Self::Raw(n) => {
                out.push(3);
                out.extend(n.to_le_bytes());
            }
        }
    }

    fn bytes(self) -> u64 {
        match self {
            Self::Pages(n) => u64::from(n % 1025) * K4,
            Self::Huge(n) => u64::from(n % 17) * M2,
            Self::Gig(n) => u64::from(n % 5) * G1,
            Self::Raw(n) => n,
        }
    }
}

impl PaFn {
    fn decode(u: &mut Unstructured<'_>) -> R<Self> {
        Ok(match byte(u)? % 3 {
            0 => Self::Contig(Pa::decode(u)?),
            1 => Self::Same(Pa::decode(u)?),
            _ => Self::Masked(byte(u)?),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Contig(pa) => {
                out.push(0);
                pa.encode(out);
            }
            Self::Same(pa) => {
                out.push(1);
                pa.encode(out);
            }
            Self::Masked(bits) => out.extend([2, *bits]),
        }
    }
}

impl Op {
    /// Whether the operation only reads the table (the check after it is skipped: the next
    /// change or the end of the cursor checks the table anyway).
    fn read_only(&self) -> bool {
        matches!(self, Self::Query { .. } | Self::Walk { .. } | Self::Dump)
    }

    fn decode(u: &mut Unstructured<'_>) -> R<Self> {
        Ok(match byte(u)? % 11 {
            0 => Self::Map {
                va: Addr::decode(u)?,
                pa: Pa::decode(u)?,
                size: byte(u)?,
                flags: byte(u)?,
            },
            1 => Self::MapRegion {
                va: Addr::decode(u)?,
                len: Len::decode(u)?,
                pa: PaFn::decode(u)?,
                flags: byte(u)?,
                huge: byte(u)? & 1 != 0,
            },
            2 => Self::Unmap {
                va: Addr::decode(u)?,
            },
            3 => Self::UnmapRegion {
                va: Addr::decode(u)?,
                len: Len::decode(u)?,
            },
            4 => Self::Protect {
                va: Addr::decode(u)?,
                flags: byte(u)?,
            },
            5 => Self::ProtectRegion {
                va: Addr::decode(u)?,
                len: Len::decode(u)?,
                flags: byte(u)?,
            },
            6 => Self::Remap {
                va: Addr::decode(u)?,
                pa: Pa::decode(u)?,
                flags: byte(u)?,
            },
            7 => Self::Query {
                va: Addr::decode(u)?,
            },
            8 => Self::Walk {
                limit: u16::arbitrary(u)?,
            },
            9 => Self::Dump,
            _ => Self::Flush,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Map {
                va,
                pa,
                size,
                flags,
            } => {
                out.push(0);
                va.encode(out);
                pa.encode(out);
                out.extend([*size, *flags]);
            }
            Self::MapRegion {
                va,
                len,
                pa,
                flags,
                huge,
            } => {
                out.push(1);
                va.encode(out);
                len.encode(out);
                pa.encode(out);
                out.extend([*flags, u8::from(*huge)]);
            }
            Self::Unmap { va } => {
                out.push(2);
                va.encode(out);
            }
            Self::UnmapRegion { va, len } => {
                out.push(3);
                va.encode(out);
                len.encode(out);
            }
            Self::Protect { va, flags } => {
                out.push(4);
                va.encode(out);
                out.push(*flags);
            }
            Self::ProtectRegion { va, len, flags } => {
                out.push(5);
                va.encode(out);
                len.encode(out);
                out.push(*flags);
            }
            Self::Remap { va, pa, flags } => {
                out.push(6);
                va.encode(out);
                pa.encode(out);
                out.push(*flags);
            }
            Self::Query { va } => {
                out.push(7);
                va.encode(out);
            }
            Self::Walk { limit } => {
                out.push(8);
                out.extend(limit.to_le_bytes());
            }
            Self::Dump => out.push(9),
            Self::Flush => out.push(10),
        }
    }
}

/// Decodes the setup byte and the steps that follow byte 0.
pub fn decode(data: &[u8]) -> (Setup, Vec<Step>) {
    let mut u = Unstructured::new(data.get(1..).unwrap_or(&[]));
    let setup = Setup(byte(&mut u).unwrap_or(0));
    let mut steps = Vec::new();
    while !u.is_empty() && steps.len() < MAX_STEPS {
        let (Ok(mode), Ok(op)) = (byte(&mut u), Op::decode(&mut u)) else {
            break;
        };
        steps.push(Step {
            mode: Mode(mode),
            op,
        });
    }
    (setup, steps)
}

/// The input that [`decode`] turns into `setup` and `steps`, with `variant` as byte 0.
pub fn encode(variant: u8, setup: Setup, steps: &[Step]) -> Vec<u8> {
    let mut out = vec![variant, setup.0];
    for s in steps {
        out.push(s.mode.0);
        s.op.encode(&mut out);
    }
    out
}

// -------------------------------------------------------------------------------------
// The two APIs behind one interface
// -------------------------------------------------------------------------------------

/// The mutating calls, through a cursor or through the immediate API. Addresses are raw;
/// `unmap` reports flags only through the cursor.
trait Api<T: Format> {
    fn table(&self) -> &Table<T>;
    fn map(&mut self, va: usize, pa: u64, ps: PageSize, f: F) -> PagingResult;
    fn map_region(
        &mut self,
        va: usize,
        pa: &dyn Fn(usize) -> u64,
        len: usize,
        f: F,
        huge: bool,
    ) -> PagingResult;
    fn unmap(&mut self, va: usize) -> PagingResult<(u64, Option<F>, PageSize)>;
    fn unmap_region(&mut self, va: usize, len: usize) -> PagingResult;
    fn protect(&mut self, va: usize, f: F) -> PagingResult<PageSize>;
    fn protect_region(&mut self, va: usize, len: usize, f: F) -> PagingResult;
    fn remap(&mut self, va: usize, pa: u64, f: F) -> PagingResult<PageSize>;
}

fn v(va: usize) -> VirtAddr {
    VirtAddr::from(va)
}
fn p(pa: u64) -> PhysAddr {
    PhysAddr::from(pa as usize)
}

struct CursorApi<'c, 'a, T: Format>(&'c mut PageTable64Cursor<'a, T::M, T::PTE, SimHandler>);

impl<T: Format> Api<T> for CursorApi<'_, '_, T> {
    fn table(&self) -> &Table<T> {
        self.0
    }
    fn map(&mut self, va: usize, pa: u64, ps: PageSize, f: F) -> PagingResult {
        self.0.map(v(va), p(pa), ps, f)
    }
    fn map_region(
        &mut self,
        va: usize,
        pa: &dyn Fn(usize) -> u64,
        len: usize,
        f: F,
        huge: bool,
    ) -> PagingResult {
        self.0
            .map_region(v(va), |x| p(pa(x.as_usize())), len, f, huge)
    }
    fn unmap(&mut self, va: usize) -> PagingResult<(u64, Option<F>, PageSize)> {
        self.0
            .unmap(v(va))
            .map(|(pa, f, s)| (pa.as_usize() as u64, Some(f), s))
    }
    fn unmap_region(&mut self, va: usize, len: usize) -> PagingResult {
        self.0.unmap_region(v(va), len)
    }
    fn protect(&mut self, va: usize, f: F) -> PagingResult<PageSize> {
        self.0.protect(v(va), f)
    }
    fn protect_region(&mut self, va: usize, len: usize, f: F) -> PagingResult {
        self.0.protect_region(v(va), len, f)
    }
    fn remap(&mut self, va: usize, pa: u64, f: F) -> PagingResult<PageSize> {
        self.0.remap(v(va), p(pa), f)
    }
}

struct ImmediateApi<'t, T: Format> {
    table: &'t mut Table<T>,
    by_page: bool,
    flush: bool,
}

impl<T: Format> Api<T> for ImmediateApi<'_, T> {
    fn table(&self) -> &Table<T> {
        self.table
    }
    fn map(&mut self, va: usize, pa: u64, ps: PageSize, f: F) -> PagingResult {
        let token = self.table.map(v(va), p(pa), ps, f)?;
        if self.flush {
            token.flush()
        } else {
            token.ignore()
        }
        Ok(())
    }
    fn map_region(
        &mut self,
        va: usize,
        pa: &dyn Fn(usize) -> u64,
        len: usize,
        f: F,
        huge: bool,
    ) -> PagingResult {
        let token =
            self.table
                .map_region(v(va), |x| p(pa(x.as_usize())), len, f, huge, self.by_page)?;
        if self.flush {
            token.flush_all()
        } else {
            token.ignore()
        }
        Ok(())
    }
    fn unmap(&mut self, va: usize) -> PagingResult<(u64, Option<F>, PageSize)> {
        let (pa, size, token) = self.table.unmap(v(va))?;
        if self.flush {
            token.flush()
        } else {
            token.ignore()
        }
        Ok((pa.as_usize() as u64, None, size))
    }
    fn unmap_region(&mut self, va: usize, len: usize) -> PagingResult {
        let token = self.table.unmap_region(v(va), len, self.by_page)?;
        if self.flush {
            token.flush_all()
        } else {
            token.ignore()
        }
        Ok(())
    }
    fn protect(&mut self, va: usize, f: F) -> PagingResult<PageSize> {
        let (size, token) = self.table.protect(v(va), f)?;
        if self.flush {
            token.flush()
        } else {
            token.ignore()
        }
        Ok(size)
    }
    fn protect_region(&mut self, va: usize, len: usize, f: F) -> PagingResult {
        let token = self.table.protect_region(v(va), len, f, self.by_page)?;
        if self.flush {
            token.flush_all()
        } else {
            token.ignore()
        }
        Ok(())
    }
    fn remap(&mut self, va: usize, pa: u64, f: F) -> PagingResult<PageSize> {
        let (size, token) = self.table.remap(v(va), p(pa), f)?;
        if self.flush {
            token.flush()
        } else {
            token.ignore()
        }
        Ok(size)
    }
}

// -------------------------------------------------------------------------------------
// The model side
// -------------------------------------------------------------------------------------

/// Everything but the table: the model and what the format allows.
struct State<T: Format> {
    model: Model,
    rng: Rng,
    sizes: Vec<u64>,
    va_bits: u32,
    pa_limit: u64,
    /// The fault armed for the current step.
    fault: Fault,
    _format: core::marker::PhantomData<T>,
}

fn page_size(sel: u8) -> PageSize {
    [
        PageSize::Size4K,
        PageSize::Size2M,
        PageSize::Size1G,
        PageSize::Size1M,
    ][(sel % 4) as usize]
}

fn flags(bits: u8) -> F {
    F::from_bits_truncate(bits as usize)
}

/// The errors a call may return.
#[derive(Default, Clone, Copy)]
struct Errors(u16);

/// Every error [`Errors`] tracks, in bit order.
const ALL_ERRORS: [E; 10] = [
    E::NoMemory,
    E::NotAligned,
    E::NotMapped,
    E::AlreadyMapped,
    E::MappedToHugePage,
    E::InvalidVirtAddr,
    E::InvalidPhysAddr,
    E::UnsupportedPageSize,
    E::RangeOverflow,
    E::BadFrame,
];

impl core::fmt::Debug for Errors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set()
            .entries(ALL_ERRORS.iter().filter(|&&e| self.has(e)))
            .finish()
    }
}

impl Errors {
    fn bit(e: E) -> u16 {
        // An error added to the library later gets bit 15: never expected.
        1 << ALL_ERRORS.iter().position(|&x| x == e).unwrap_or(15)
    }
    fn add(&mut self, e: E) {
        self.0 |= Self::bit(e);
    }
    fn has(self, e: E) -> bool {
        self.0 & Self::bit(e) != 0
    }
    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl<T: Format> State<T> {
    fn new(seed: u64) -> Self {
        Self {
            model: Model::new(&check::leaf_sizes::<T>()),
            rng: Rng::new(seed),
            sizes: check::leaf_sizes::<T>(),
            va_bits: T::M::VA_MAX_BITS as u32,
            pa_limit: check::pa_limit::<T>(),
            fault: Fault::None,
            _format: core::marker::PhantomData,
        }
    }

    /// The base of window `w % 8`: the bottom of the address space, a lower-half window,
    /// the top of the lower half, a window straddling the non-canonical hole, the bottom
    /// of the upper half, the top 4 GiB, the first address above the lower half, and a
    /// non-canonical one.
    fn window_base(&self, w: u8) -> u64 {
        let half = 1u64 << (self.va_bits - 1);
        match w % 8 {
            0 => 0,
            1 => 0x2_0000_0000,
            2 => half - WINDOW,
            3 => half - WINDOW / 2,
            4 => half.wrapping_neg(),
            5 => WINDOW.wrapping_neg(),
            6 => half,
            _ => 1 << 60,
        }
    }

    fn va(&self, a: Addr) -> usize {
        let pages = WINDOW / K4;
        let va = match a {
            Addr::Page { window, page } => {
                self.window_base(window) + (u64::from(page) % pages) * K4
            }
            Addr::Huge { window, index, gig } => {
                let off = if gig {
                    u64::from(index % 4) * G1
                } else {
                    u64::from(index % 2048) * M2
                };
                self.window_base(window) + off
            }
            Addr::Offset { window, page, off } => {
                self.window_base(window) + (u64::from(page) % pages) * K4 + u64::from(off & 0xfff)
            }
            Addr::Raw(a) => a,
            Addr::Leaf { n, off } => match self
                .model
                .leaves()
                .nth(n as usize % self.model.len().max(1))
            {
                Some(l) => l.va + (u64::from(off) * 8) % l.size,
                None => self.window_base(1),
            },
        };
        va as usize
    }

    fn pa(&self, pa: Pa) -> u64 {
        match pa {
            Pa::Page(n) => u64::from(n) << 12,
            Pa::Huge { index, gig } => u64::from(index) * if gig { G1 } else { M2 },
            Pa::Top(n) => self
                .pa_limit
                .wrapping_add(1)
                .wrapping_sub(u64::from(n) << 12),
            Pa::Raw(a) => a,
        }
    }

    fn pa_fn(&self, f: PaFn, start: usize) -> impl Fn(usize) -> u64 + use<T> {
        let (kind, base) = match f {
            PaFn::Contig(pa) => (0, self.pa(pa)),
            PaFn::Same(pa) => (1, self.pa(pa)),
            PaFn::Masked(bits) => (2, u64::from(bits % 53) + 12),
        };
        move |va: usize| match kind {
            0 => base.wrapping_add((va as u64).wrapping_sub(start as u64)),
            1 => base,
            _ => (va as u64) & (u64::MAX >> (64 - base)),
        }
    }

    fn va_valid(&self, va: usize) -> bool {
        T::M::vaddr_is_valid(va)
    }

    /// Whether `[pa, pa + size)` is a range a leaf may map.
    fn pa_ok(&self, pa: u64, size: u64) -> bool {
        pa.checked_add(size - 1)
            .is_some_and(|last| last <= self.pa_limit)
    }

    /// The documented validation of a range: its errors, or its model start when valid
    /// (`None` too for an empty range).
    fn region(&self, va: usize, len: u64) -> Result<Option<u64>, Errors> {
        let mut errs = Errors::default();
        if va as u64 % K4 != 0 || len % K4 != 0 {
            errs.add(E::NotAligned);
        }
        if len == 0 {
            return if errs.is_empty() { Ok(None) } else { Err(errs) };
        }
        match (va as u64).checked_add(len - 1) {
            None => errs.add(E::RangeOverflow),
            Some(last) => {
                let mask = check::va_mask::<T>();
                let (s, l) = (va as u64 & mask, last & mask);
                if !self.va_valid(va) || !self.va_valid(last as usize) || l < s || l - s != len - 1
                {
                    errs.add(E::InvalidVirtAddr);
                }
            }
        }
        if errs.is_empty() {
            Ok(Some(check::model_va::<T>(va)))
        } else {
            Err(errs)
        }
    }

    /// Adds the errors the armed fault may cause.
    fn fault_errors(&self, errs: &mut Errors) {
        match self.fault {
            Fault::None => {}
            Fault::FailAt(_) => errs.add(E::NoMemory),
            Fault::Bad(..) => errs.add(E::BadFrame),
        }
    }

    /// Whether the range operation must split a leaf at a boundary of `[start, start +
    /// len)` (`present`: only accessible leaves count), which takes frames.
    fn splits(&self, start: u64, len: u64, present: bool) -> bool {
        [Some(start), start.checked_add(len)]
            .into_iter()
            .flatten()
            .any(|b| {
                self.model
                    .leaf_at(b)
                    .is_some_and(|l| l.va != b && (!present || l.is_accessible()))
            })
    }

    /// The leaves `map_region` creates for `[start, start + len)` (model addresses) when
    /// the caller's address of `start` is `va`, and the errors its pages may cause; `None`
    /// when there are too many.
    fn plan(
        &self,
        va: usize,
        start: u64,
        len: u64,
        pa: &dyn Fn(usize) -> u64,
        f: F,
        huge: bool,
    ) -> Option<(Vec<Leaf>, Errors)> {
        let mut leaves = Vec::new();
        let mut errs = Errors::default();
        let mut off = 0;
        while off < len {
            if leaves.len() == MAX_PLAN {
                return None;
            }
            let here = start + off;
            let pa = pa((va as u64).wrapping_add(off) as usize);
            let size = self
                .sizes
                .iter()
                .rev()
                .copied()
                .find(|&s| huge && here % s == 0 && pa % s == 0 && len - off >= s)
                .unwrap_or(K4);
            if pa % size != 0 {
                errs.add(E::NotAligned);
            } else if !self.pa_ok(pa, size) {
                errs.add(E::InvalidPhysAddr);
            }
            if self.model.overlapping(here, size).next().is_some() {
                errs.add(E::AlreadyMapped);
                errs.add(E::MappedToHugePage);
            }
            leaves.push(Leaf {
                va: here,
                pa,
                size,
                flags: f,
            });
            off += size;
        }
        Some((leaves, errs))
    }
}

// -------------------------------------------------------------------------------------
// Running
// -------------------------------------------------------------------------------------

thread_local! {
    /// The step being run or checked, for the panic message.
    static CURRENT: Cell<Option<(usize, Step)>> = const { Cell::new(None) };
}

/// Makes a panic name the step it happened in (before the previous hook, which for a fuzz
/// target reports the crash and aborts).
fn install_panic_context() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some((i, step)) = CURRENT.with(Cell::get) {
                eprintln!("ptm_fuzz: at step {i}: {step:?}");
            }
            previous(info);
        }));
    });
}

/// Whether `PTM_FUZZ_TRACE` is set: each operation and its outcome are printed.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("PTM_FUZZ_TRACE").is_some())
}

/// Fails unless `r` is an error that `allowed` contains.
fn expect_err<X: core::fmt::Debug>(what: &str, r: &PagingResult<X>, allowed: Errors) {
    match r {
        Err(e) if allowed.has(*e) => {}
        _ => panic!("{what}: got {r:?}, expected one of {allowed:?}"),
    }
}

/// Runs one operation through `api` and checks its result against the model, which it
/// updates.
///
/// A failed call must leave `mappings()` as it was. The table equalled the model before the
/// call ([`check_step`] after every change) and the model is not changed on failure, so
/// [`check_step`] after the call compares `mappings()` with its state before.
fn run_op<T: Format>(st: &mut State<T>, api: &mut dyn Api<T>, op: Op) {
    let failed = match op {
        Op::Map {
            va,
            pa,
            size,
            flags: fl,
        } => {
            let (va, pa, ps, f) = (st.va(va), st.pa(pa), page_size(size), flags(fl));
            let size = ps as u64;
            let mut errs = Errors::default();
            if !st.sizes.contains(&size) {
                errs.add(E::UnsupportedPageSize);
            }
            if !st.va_valid(va) {
                errs.add(E::InvalidVirtAddr);
            }
            if va as u64 % size != 0 || pa % size != 0 {
                errs.add(E::NotAligned);
            }
            if !st.pa_ok(pa, size) {
                errs.add(E::InvalidPhysAddr);
            }
            let r = api.map(va, pa, ps, f);
            let what = format!("map {va:#x} -> {pa:#x} {ps:?} {f:?}");
            if !errs.is_empty() {
                expect_err(&what, &r, errs);
            } else {
                let key = check::model_va::<T>(va);
                if st.model.leaf_at(key).is_some_and(|l| l.size > size) {
                    errs.add(E::MappedToHugePage);
                } else if st.model.overlapping(key, size).next().is_some() {
                    errs.add(E::AlreadyMapped);
                }
                if errs.is_empty() {
                    st.fault_errors(&mut errs);
                    match r {
                        Ok(()) => st.model.map(key, pa, size, f).unwrap(),
                        _ => expect_err(&what, &r, errs),
                    }
                } else {
                    expect_err(&what, &r, errs);
                }
            }
            r.is_err()
        }
        Op::MapRegion {
            va,
            len,
            pa,
            flags: fl,
            huge,
        } => {
            let (va, len, f) = (st.va(va), len.bytes(), flags(fl));
            let pa_of = st.pa_fn(pa, va);
            let what = format!("map_region {va:#x}+{len:#x} {f:?} huge {huge}");
            match st.region(va, len) {
                Err(errs) => {
                    let r = api.map_region(va, &pa_of, len as usize, f, huge);
                    expect_err(&what, &r, errs);
                    true
                }
                Ok(None) => {
                    let r = api.map_region(va, &pa_of, 0, f, huge);
                    assert_eq!(r, Ok(()), "{what}");
                    false
                }
                Ok(Some(start)) => {
                    let Some((leaves, plan_errs)) = st.plan(va, start, len, &pa_of, f, huge) else {
                        return;
                    };
                    let mut errs = plan_errs;
                    st.fault_errors(&mut errs);
                    let r = api.map_region(va, &pa_of, len as usize, f, huge);
                    match r {
                        Ok(()) => {
                            assert!(plan_errs.is_empty(), "{what}: Ok, expected {plan_errs:?}");
                            for l in leaves {
                                st.model
                                    .map(l.va, l.pa, l.size, l.flags)
                                    .unwrap_or_else(|c| panic!("{what}: mapped over {c:?}"));
                            }
                        }
                        _ => expect_err(&what, &r, errs),
                    }
                    r.is_err()
                }
            }
        }
        Op::Unmap { va } => {
            let va = st.va(va);
            let r = api.unmap(va);
            let what = format!("unmap {va:#x}");
            if !st.va_valid(va) {
                let mut errs = Errors::default();
                errs.add(E::InvalidVirtAddr);
                expect_err(&what, &r, errs);
                true
            } else {
                let key = check::model_va::<T>(va);
                match (r, st.model.unmap_leaf(key)) {
                    (Ok((pa, f, size)), Some(l)) if l.is_accessible() => {
                        assert_eq!((pa, size as u64), (l.pa, l.size), "{what}");
                        if let Some(f) = f {
                            assert_eq!(f, T::expected_flags(l.flags), "{what}");
                        }
                        false
                    }
                    (Err(E::NotMapped), None) => true,
                    // The documented exception: a reservation is removed all the same (and
                    // removed from the model above).
                    (Err(E::NotMapped), Some(l)) if !l.is_accessible() => true,
                    (r, l) => panic!("{what}: {r:?} vs model {l:?}"),
                }
            }
        }
        Op::UnmapRegion { va, len } | Op::ProtectRegion { va, len, .. } => {
            let (va, len) = (st.va(va), len.bytes());
            let protect = match op {
                Op::ProtectRegion { flags: fl, .. } => Some(flags(fl)),
                _ => None,
            };
            let what = format!("{protect:?} region {va:#x}+{len:#x}");
            let r = match protect {
                Some(f) => api.protect_region(va, len as usize, f),
                None => api.unmap_region(va, len as usize),
            };
            match st.region(va, len) {
                Err(errs) => {
                    expect_err(&what, &r, errs);
                    true
                }
                Ok(None) => {
                    assert_eq!(r, Ok(()), "{what}");
                    false
                }
                Ok(Some(start)) => {
                    let mut errs = Errors::default();
                    if st.splits(start, len, protect.is_some()) {
                        st.fault_errors(&mut errs);
                    }
                    match (r, protect) {
                        (Ok(()), Some(f)) => {
                            st.model.protect_range(start, len, f);
                        }
                        (Ok(()), None) => {
                            st.model.unmap_range(start, len);
                        }
                        _ => expect_err(&what, &r, errs),
                    }
                    r.is_err()
                }
            }
        }
        Op::Protect { va, flags: fl } => {
            let (va, f) = (st.va(va), flags(fl));
            let r = api.protect(va, f);
            let what = format!("protect {va:#x} {f:?}");
            if !st.va_valid(va) {
                let mut errs = Errors::default();
                errs.add(E::InvalidVirtAddr);
                expect_err(&what, &r, errs);
            } else {
                let key = check::model_va::<T>(va);
                match (r, st.model.protect_leaf(key, f)) {
                    (Ok(s), Some(size)) => assert_eq!(s as u64, size, "{what}"),
                    (Err(E::NotMapped), None) => {}
                    (r, m) => panic!("{what}: {r:?} vs model {m:?}"),
                }
            }
            r.is_err()
        }
        Op::Remap { va, pa, flags: fl } => {
            let (va, pa, f) = (st.va(va), st.pa(pa), flags(fl));
            let r = api.remap(va, pa, f);
            let what = format!("remap {va:#x} -> {pa:#x} {f:?}");
            let mut errs = Errors::default();
            let key = check::model_va::<T>(va);
            if !st.va_valid(va) {
                errs.add(E::InvalidVirtAddr);
            } else {
                match st.model.leaf_at(key) {
                    None => errs.add(E::NotMapped),
                    Some(l) => {
                        if pa % l.size != 0 {
                            errs.add(E::NotAligned);
                        } else if !st.pa_ok(pa, l.size) {
                            errs.add(E::InvalidPhysAddr);
                        }
                    }
                }
            }
            if errs.is_empty() {
                let size = st.model.remap_leaf(key, pa, f);
                assert_eq!(r.map(|s| s as u64).ok(), size, "{what}: {r:?}");
            } else {
                expect_err(&what, &r, errs);
            }
            r.is_err()
        }
        Op::Query { va } => {
            let va = st.va(va);
            let r = api.table().query(v(va));
            let what = format!("query {va:#x}");
            if !st.va_valid(va) {
                let mut errs = Errors::default();
                errs.add(E::InvalidVirtAddr);
                expect_err(&what, &r, errs);
            } else {
                let want = st
                    .model
                    .query(check::model_va::<T>(va))
                    .map(|(pa, f, s)| (pa, T::expected_flags(f), s));
                let got = r.map(|(pa, f, s)| (pa.as_usize() as u64, f, s as u64));
                match (got, want) {
                    (Ok(g), Some(w)) => assert_eq!(g, w, "{what}"),
                    (Err(E::NotMapped), None) => {}
                    (g, w) => panic!("{what}: {g:?} vs model {w:?}"),
                }
            }
            false
        }
        Op::Walk { limit } => {
            walk::<T>(st, api.table(), limit as usize);
            false
        }
        Op::Dump => {
            let t = api.table();
            let n = t.mappings().count();
            let text = t.dump().to_string();
            let lines = text.lines().count();
            assert!(
                lines <= n && (n == 0) == (lines == 0),
                "dump: {lines} lines, {n} leaves"
            );
            false
        }
        Op::Flush => false,
    };
    if trace() {
        eprintln!(
            "{op:?}: {}, {} leaves",
            if failed { "failed" } else { "ok" },
            st.model.len()
        );
    }
}

/// `walk` visits every table entry and present leaf once, before and after its subtree,
/// at most `limit` of them; the leaves it reports are the model's present ones.
fn walk<T: Format>(st: &State<T>, t: &Table<T>, limit: usize) {
    let levels = T::M::LEVELS;
    let mask = check::va_mask::<T>();
    let pre = RefCell::new(Vec::new());
    let post = RefCell::new(Vec::new());
    let record = |out: &RefCell<Vec<_>>, level: usize, index: usize, va: VirtAddr, pte: &T::PTE| {
        let leaf = level == levels - 1 || pte.is_huge();
        out.borrow_mut().push((
            level,
            index,
            va.as_usize() as u64 & mask,
            leaf,
            pte.paddr(),
            pte.flags(),
        ));
    };
    let f_pre = |l, i, va, pte: &T::PTE| record(&pre, l, i, va, pte);
    let f_post = |l, i, va, pte: &T::PTE| record(&post, l, i, va, pte);
    t.walk(limit, Some(&f_pre), None);
    t.walk(limit, None, Some(&f_post));
    let (mut pre, mut post) = (pre.into_inner(), post.into_inner());
    let tables = t.table_frames() - Table::<T>::BASE_FRAMES;
    let present = st.model.leaves().filter(|l| l.is_accessible()).count();
    let total = tables + present;
    assert_eq!(pre.len(), total.min(limit), "walk visits");
    if limit >= total {
        let mut leaves: Vec<_> = pre
            .iter()
            .filter(|e| e.3)
            .map(|e| (e.2, e.4.as_usize() as u64, e.5))
            .collect();
        leaves.sort_by_key(|l| l.0);
        let mut want: Vec<_> = st
            .model
            .leaves()
            .filter(|l| l.is_accessible())
            .map(|l| (l.va & mask, l.pa, T::expected_flags(l.flags)))
            .collect();
        want.sort_by_key(|l| l.0);
        assert_eq!(leaves, want, "walk leaves");
        pre.sort_by_key(|e| (e.0, e.2));
        post.sort_by_key(|e| (e.0, e.2));
        assert_eq!(pre, post, "walk: pre and post visit the same entries");
    }
}

/// The windows whose addresses are all valid, for the walker's hole samples.
fn hole_sampler<T: Format>(st: &State<T>) -> impl FnMut(&mut Rng) -> u64 + use<T> {
    let bases: Vec<u64> = (0..8)
        .map(|w| st.window_base(w))
        .filter(|&b| {
            T::M::vaddr_is_valid(b as usize) && T::M::vaddr_is_valid((b + (WINDOW - 1)) as usize)
        })
        .collect();
    move |rng: &mut Rng| {
        check::model_va::<T>((*rng.pick(&bases) + rng.below(WINDOW) / 8 * 8) as usize)
    }
}

/// The checks after a step: the leaves, the frames, the used-entry counts (when flushed),
/// the walker on a few leaves and holes.
fn check_step<T: Format>(st: &mut State<T>, t: &Table<T>, flushed: bool) {
    check::check_leaves::<T>(t, &st.model);
    check::check_frames::<T>(t, &st.model, flushed);
    if flushed {
        // Mid-cursor, counts may still wait in its queue of decrements.
        check::check_counts::<T>(t);
    }
    let hole = hole_sampler(st);
    check::check_walker::<T>(t, &st.model, &mut st.rng, 4, 4, hole);
}

fn arm(fault: Fault, pa_limit: u64) {
    match fault {
        Fault::None => {}
        Fault::FailAt(n) => alloc::set_fail_at(Some(n)),
        Fault::Bad(n, kind) => {
            let kind = match kind {
                0 => BadFrame::Unaligned,
                1 => BadFrame::Misaligned,
                _ => BadFrame::Addr(pa_limit.wrapping_add(1) & !0xfff),
            };
            alloc::set_bad_frame_at(n, kind);
        }
    }
}

fn disarm() {
    alloc::set_fail_at(None);
    alloc::cancel_bad_frame();
}

/// Runs one input on format `T` (byte 0 is ignored: the target has used it).
pub fn run<T: Format>(data: &[u8]) {
    let (setup, steps) = decode(data);
    install_panic_context();
    CURRENT.with(|c| c.set(None));
    // The simulated memory is kept from one input to the next (frames are refilled when
    // allocated); the allocator starts afresh.
    if testkit::mem::size() == MEM_SIZE {
        alloc::reset();
        testkit::flush::reset();
    } else {
        testkit::reset_with(MEM_SIZE);
    }
    let pa_limit = check::pa_limit::<T>();
    // A failing try_new leaks nothing.
    let fault = match setup.0 % 4 {
        1 => Fault::FailAt(1),
        2 => Fault::FailAt(2),
        3 => Fault::Bad(1, 0),
        _ => Fault::None,
    };
    arm(fault, pa_limit);
    let first = Table::<T>::try_new();
    disarm();
    match first {
        Ok(t) => drop(t),
        Err(E::NoMemory) if matches!(fault, Fault::FailAt(_)) => {}
        Err(E::BadFrame) if matches!(fault, Fault::Bad(..)) => {}
        Err(e) => panic!("try_new with {fault:?}: {e:?}"),
    }
    alloc::assert_no_leaks();

    let mut table = Table::<T>::try_new().expect("try_new");
    let mut st = State::<T>::new(data.len() as u64);
    let mut i = 0;
    while i < steps.len() {
        if steps[i].mode.immediate() {
            CURRENT.with(|c| c.set(Some((i, steps[i]))));
            let Step { mode, op } = steps[i];
            st.fault = mode.fault();
            arm(st.fault, pa_limit);
            let mut api = ImmediateApi::<T> {
                table: &mut table,
                by_page: mode.0 & 0x40 != 0,
                flush: mode.0 & 0x80 != 0,
            };
            run_op(&mut st, &mut api, op);
            disarm();
            if !op.read_only() {
                check_step(&mut st, &table, true);
            }
            i += 1;
            continue;
        }
        // A cursor session: this step and the following cursor steps that do not ask for a
        // new cursor.
        {
            let mut cursor = table.cursor();
            let mut first = true;
            while i < steps.len() {
                let Step { mode, op } = steps[i];
                if mode.immediate() || (mode.new_cursor() && !first) {
                    break;
                }
                first = false;
                CURRENT.with(|c| c.set(Some((i, steps[i]))));
                st.fault = mode.fault();
                arm(st.fault, pa_limit);
                run_op(&mut st, &mut CursorApi::<T>(&mut cursor), op);
                disarm();
                let flushed = if op == Op::Flush {
                    cursor.flush();
                    true
                } else {
                    // Tables emptied by single-page unmaps are unlinked in batches.
                    cursor.reclaim();
                    false
                };
                if !op.read_only() {
                    check_step(&mut st, &cursor, flushed);
                }
                i += 1;
            }
        }
        check_step(&mut st, &table, true);
    }
    CURRENT.with(|c| c.set(None));
    drop(table);
    alloc::assert_no_leaks();
}

/// Runs `data` on the format that byte 0 selects among `formats` (modulo their number).
#[macro_export]
macro_rules! dispatch {
    ($data:expr; $($format:ty),+ $(,)?) => {{
        let data: &[u8] = $data;
        let formats: &[fn(&[u8])] = &[$($crate::run::<$format>),+];
        let sel = data.first().copied().unwrap_or(0) as usize % formats.len();
        formats[sel](data)
    }};
}
