//! A walk of a table in the image, written from the architecture manuals and independent of
//! page_table_multiarch: where the leaf entry that translates a virtual address lives.
//!
//! Tests use it to find a raw entry to tamper with, and to look at what the library wrote.

use crate::layout::WINDOW;
use crate::{Config, Image};

/// A leaf entry found by [`leaf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafEntry {
    /// Physical address of the entry itself (inside the image window).
    pub entry_pa: u64,
    /// The raw entry.
    pub value: u64,
    /// Size of the page or block it maps (4 KiB, 2 MiB or 1 GiB).
    pub size: u64,
}

/// The number of levels of the walk `config` configures.
pub const fn levels(config: &Config) -> usize {
    match config {
        Config::X86_64 { la57: true, .. } => 5,
        Config::X86_64 { .. } | Config::Aarch64 { .. } | Config::LoongArch64 => 4,
        Config::Riscv64 { mode, .. } => match mode {
            crate::RiscvMode::Sv39 => 3,
            crate::RiscvMode::Sv48 => 4,
            crate::RiscvMode::Sv57 => 5,
        },
    }
}

/// What one entry at `height` (0 = the last level) means to the walker.
enum Step {
    /// The walk ends without a leaf.
    Invalid,
    /// A leaf (page or block), valid or not (LoongArch keeps V in leaves only).
    Leaf,
    /// The next table.
    Table(u64),
}

fn step(config: &Config, e: u64, height: usize) -> Step {
    const ADDR_52: u64 = 0x000F_FFFF_FFFF_F000;
    const ADDR_48: u64 = 0x0000_FFFF_FFFF_F000;
    match config {
        // Intel SDM vol. 3A §4.5: P is bit 0, PS (bit 7) makes a PDPTE or PDE a leaf.
        Config::X86_64 { .. } => {
            if e & 1 == 0 {
                Step::Invalid
            } else if height == 0 || (height <= 2 && e & 0x80 != 0) {
                Step::Leaf
            } else {
                Step::Table(e & ADDR_52)
            }
        }
        // Arm ARM D8.3: bits 1:0 are 0b11 for a table (or a level-3 page), 0b01 for a
        // level-1/2 block.
        Config::Aarch64 { .. } => match (e & 3, height) {
            (3, 0) => Step::Leaf,
            (3, _) => Step::Table(e & ADDR_48),
            (1, 1 | 2) => Step::Leaf,
            _ => Step::Invalid,
        },
        // RISC-V privileged spec, "Virtual address translation process": V is bit 0, any of
        // R/W/X makes a leaf, the PPN starts at bit 10.
        Config::Riscv64 { .. } => {
            if e & 1 == 0 {
                Step::Invalid
            } else if e & 0xE != 0 {
                Step::Leaf
            } else if height == 0 {
                Step::Invalid
            } else {
                Step::Table(((e >> 10) & ((1 << 44) - 1)) << 12)
            }
        }
        // LoongArch manual vol. 1 §5.4: directory entries are bare addresses; bit 6 (GH)
        // marks a huge leaf in a directory.
        Config::LoongArch64 => {
            if height == 0 || e & (1 << 6) != 0 {
                Step::Leaf
            } else {
                Step::Table(e & ADDR_48)
            }
        }
    }
}

/// The leaf entry that translates `va` in the table rooted at `root`, as `config`'s walk
/// finds it in `img`, or `None` when the walk ends without one (or leaves the image).
pub fn leaf(img: &Image, config: &Config, root: u64, va: u64) -> Option<LeafEntry> {
    let base = img.layout().img_base;
    let mut table = root;
    for height in (0..levels(config)).rev() {
        if table < base || table + 0x1000 > base + WINDOW {
            return None;
        }
        let shift = 12 + 9 * height as u32;
        let entry_pa = table + ((va >> shift) & 511) * 8;
        let value = img.read_u64(entry_pa);
        match step(config, value, height) {
            Step::Invalid => return None,
            Step::Leaf => {
                return Some(LeafEntry {
                    entry_pa,
                    value,
                    size: 1 << shift,
                });
            }
            Step::Table(next) => table = next,
        }
    }
    None
}
