//! Guest-physical memory map shared by the host and the guests.
//!
//! Every architecture uses the same *image window* layout, relative to its `img_base`:
//!
//! | offset | size | contents |
//! |---|---|---|
//! | `0x0` | 4 KiB | mailbox |
//! | `0x1000` | ~1 MiB | probe list (16 bytes per probe) |
//! | `0x10_0000` | 3 MiB | page-table frame pool (the [`PagingHandler`](page_table_multiarch::PagingHandler)) |
//! | `0x40_0000` | 12 MiB | tagged data frames |
//! | `0x100_0000` | 8 MiB | result records (64 bytes per probe) |
//!
//! The guest RAM is a sparse file shared with QEMU; only the window, the first and last MiB
//! of the [`huge_1g`](Layout::huge_1g) region and physical page 0 (where RAM starts at 0)
//! are written by the host.

use crate::Arch;

/// Offset of the mailbox in the window.
pub const MAILBOX: u64 = 0;
/// Offset of the probe list in the window.
pub const PROBES: u64 = 0x1000;
/// Offset of the page-table frame pool in the window.
pub const POOL: u64 = 0x10_0000;
/// Offset of the tagged data frames in the window.
pub const DATA: u64 = 0x40_0000;
/// Offset of the result records in the window.
pub const RESULTS: u64 = 0x100_0000;
/// Size of the window.
pub const WINDOW: u64 = 0x180_0000;

/// Size of one probe in the probe list.
pub const PROBE_SIZE: u64 = 16;
/// Size of one result record.
pub const RECORD_SIZE: u64 = 64;
/// The largest number of probes one boot can run.
pub const MAX_PROBES: usize = ((POOL - PROBES) / PROBE_SIZE) as usize;

/// Size of the tagged areas at each end of the [`huge_1g`](Layout::huge_1g) region.
pub const HUGE_TAGGED: u64 = 0x10_0000;

/// Mailbox fields (byte offsets).
pub mod mailbox {
    /// Magic written by the host ("MMUORACL").
    pub const MAGIC: u64 = 0x00;
    /// Root table physical address.
    pub const ROOT: u64 = 0x08;
    /// Architecture word 0 (x86 flags, AArch64 MAIR, RISC-V satp mode, LoongArch flags).
    pub const ARCH0: u64 = 0x10;
    /// Number of probes.
    pub const NPROBES: u64 = 0x18;
    /// Physical address of the probe list.
    pub const PROBES: u64 = 0x20;
    /// Physical address of the result records.
    pub const RESULTS: u64 = 0x28;
    /// Architecture word 1 (RISC-V A/D mode, LoongArch poison PTE).
    pub const ARCH1: u64 = 0x30;
    /// Architecture word 2.
    pub const ARCH2: u64 = 0x38;
    /// Written by the guest when every probe ran.
    pub const DONE: u64 = 0x40;
    /// Index of the probe the guest is running (written before each probe).
    pub const PROGRESS: u64 = 0x48;
    /// Non-zero when the guest gave up (see `OracleError::Guest`).
    pub const ERROR: u64 = 0x50;

    /// Value of [`MAGIC`].
    pub const MAGIC_VALUE: u64 = 0x4C43_4152_4F55_4D4D;
    /// Value of [`DONE`].
    pub const DONE_VALUE: u64 = 0x454E_4F44;
}

/// Probe flag bits, as the guests read them.
pub mod probe_flags {
    /// The access is a store.
    pub const STORE: u64 = 1 << 0;
    /// The access is an instruction fetch.
    pub const EXEC: u64 = 1 << 1;
    /// The access is made at user privilege (CPL3, EL0, U-mode, PLV3).
    pub const USER: u64 = 1 << 8;
    /// RISC-V: `mstatus.SUM` set for the access.
    pub const SUM: u64 = 1 << 9;
    /// RISC-V: `mstatus.MXR` set for the access.
    pub const MXR: u64 = 1 << 10;
}

/// Record status written by the guests.
pub mod status {
    /// The access completed.
    pub const OK: u64 = 0;
    /// The access raised an exception.
    pub const FAULT: u64 = 1;
    /// Pre-filled by the host: the guest never reached this probe.
    pub const NOT_RUN: u64 = u64::MAX;
    /// Pre-load status when the probe is not a store.
    pub const NO_PRELOAD: u64 = 2;
}

/// The physical memory map of one architecture's guest.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// First physical address of RAM (the offset-0 byte of the RAM file).
    pub ram_base: u64,
    /// Size of RAM.
    pub ram_size: u64,
    /// Physical address of the image window (2 MiB aligned).
    pub img_base: u64,
    /// Where the guest ELF is linked.
    pub text_base: u64,
    /// A 1 GiB-aligned region of RAM, unused by the harness, whose first and last
    /// [`HUGE_TAGGED`] bytes are tagged: the target for 1 GiB page tests.
    pub huge_1g: u64,
}

impl Layout {
    /// The layout of `arch`.
    pub const fn of(arch: Arch) -> Self {
        // 2 GiB + 64 MiB: a whole free GiB for 1 GiB pages, with the top of RAM (where some
        // firmware paths put the device tree) outside it. The file is sparse.
        const RAM: u64 = 0x8400_0000;
        match arch {
            Arch::X86_64 => Self {
                ram_base: 0,
                ram_size: RAM,
                img_base: 0x0100_0000,
                text_base: 0x0010_0000,
                huge_1g: 0x4000_0000,
            },
            Arch::Aarch64 => Self {
                ram_base: 0x4000_0000,
                ram_size: RAM,
                img_base: 0x4100_0000,
                text_base: 0x4020_0000,
                huge_1g: 0x8000_0000,
            },
            Arch::Riscv64 => Self {
                ram_base: 0x8000_0000,
                ram_size: RAM,
                img_base: 0x8100_0000,
                text_base: 0x8000_0000,
                huge_1g: 0xC000_0000,
            },
            // QEMU's LoongArch `virt` puts the first 256 MiB of RAM at PA 0 (and any more at
            // 0x9000_0000); the RAM file is only that low part, so no whole GiB is backed by
            // the file: `huge_1g` is PA 0, and 1 GiB pages can be probed only where they
            // reach the image window. The guest runs in the DMW0 window (segment 0x9).
            Arch::LoongArch64 => Self {
                ram_base: 0,
                ram_size: 0x1000_0000,
                img_base: 0x0100_0000,
                text_base: 0x9000_0000_0020_0000,
                huge_1g: 0,
            },
        }
    }

    /// Whether RAM backs the whole [`huge_1g`](Self::huge_1g) region, so that its first and
    /// last [`HUGE_TAGGED`] bytes are tagged in every boot (false on LoongArch).
    pub const fn huge_1g_backed(&self) -> bool {
        self.huge_1g != 0 && self.huge_1g + (1 << 30) <= self.ram_base + self.ram_size
    }

    /// The physical ranges whose words hold their tags in every boot: the data frames of
    /// the window and, where RAM backs it, both tagged ends of the
    /// [`huge_1g`](Self::huge_1g) region. A load there reveals the address it reached,
    /// and a fetch traps at once.
    pub fn tagged(&self) -> Vec<core::ops::Range<u64>> {
        let mut r = Vec::with_capacity(3);
        r.push(self.pa(DATA)..self.pa(RESULTS));
        if self.huge_1g_backed() {
            r.push(self.huge_1g..self.huge_1g + HUGE_TAGGED);
            let top = self.huge_1g + (1 << 30);
            r.push(top - HUGE_TAGGED..top);
        }
        r
    }

    /// Whether the word at `pa` is in one of the [`tagged`](Self::tagged) ranges.
    pub fn is_tagged(&self, pa: u64) -> bool {
        self.tagged().iter().any(|r| r.contains(&pa))
    }

    /// Physical address of the first byte of the window region at `offset`.
    pub const fn pa(&self, offset: u64) -> u64 {
        self.img_base + offset
    }
}

/// The exec-trap half of a data word: the bytes an instruction fetch of a tagged word
/// executes (`int3` on x86; zero, an undefined instruction, elsewhere).
pub const fn trap_bits(arch: Arch) -> u64 {
    match arch {
        Arch::X86_64 => 0xCCCC_CCCC,
        _ => 0,
    }
}

/// The tag of the 8-byte word at physical address `pa` (`pa < 2^33`).
///
/// Bits 63:62 are `01`, bits 61:32 hold `pa >> 3`, bits 31:0 are [`trap_bits`].
pub const fn tag(arch: Arch, pa: u64) -> u64 {
    ((0x4000_0000 | (pa >> 3)) << 32) | trap_bits(arch)
}

/// The marker a store probe writes when it could not read the word first: bits 63:62 are
/// `10`, bits 61:32 hold the probe index.
pub const fn marker(arch: Arch, index: u64) -> u64 {
    ((0x8000_0000 | index) << 32) | trap_bits(arch)
}

/// What a loaded word says about where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    /// A tag: the physical address of the word.
    Tag(u64),
    /// A store probe's marker: the probe index.
    Marker(u64),
    /// Anything else.
    Other,
}

/// Decodes a loaded word.
pub const fn untag(arch: Arch, value: u64) -> Word {
    if value & 0xFFFF_FFFF != trap_bits(arch) {
        return Word::Other;
    }
    let hi = value >> 32;
    match hi >> 30 {
        0b01 => Word::Tag((hi & 0x3FFF_FFFF) << 3),
        0b10 => Word::Marker(hi & 0x3FFF_FFFF),
        _ => Word::Other,
    }
}
