//! Reference MMU walkers, one per architecture, written from the architecture manuals.
//!
//! They share no code and no constant with `page_table_entry`: each reads raw 64-bit entries
//! through a memory reader (`&dyn Fn(u64) -> u64`, e.g. `&mem::read_u64`) and applies the
//! hardware's checks in the hardware's order, returning either the translation or a
//! normalised [`Fault`].
//!
//! # Levels
//!
//! Every walker numbers levels the same way, whatever the manual's naming: **level 0 holds
//! 4 KiB pages**, level `l` maps `0x1000 << (9 * l)` bytes per entry, and the root is level
//! `LEVELS - 1` (x86 PT = 0, PD = 1, PDPT = 2, PML4 = 3, PML5 = 4; Arm L3 = 0 … L0 = 3; RISC-V
//! `i`; LoongArch PT = 0, Dir1 = 1, Dir2 = 2, Dir3 = 3). A fault's level is the level of the
//! entry that caused it; a non-canonical address faults at the root level.
//!
//! # Fault kinds
//!
//! | [`FaultKind`] | x86_64 | AArch64 | RISC-V | LoongArch64 |
//! |---|---|---|---|---|
//! | `NotMapped` | P = 0 | translation fault: bit 0 = 0 | V = 0 | V = 0 (PIL/PIS/PIF) |
//! | `Permission` | #PF P=1 | permission fault | page fault on R/W/X/U | PPI, PNR, PNX, and PME (store with D = 0) |
//! | `AccessFlag` | never (hardware sets A/D) | AF = 0 (no TCR.HA) | A = 0, or store with D = 0, without hardware A/D | never |
//! | `Reserved` | RSVD #PF | block at L0, page encoding `01` at L3 (translation faults in hardware) | reserved bits/encodings, misaligned superpage, pointer at level 0 | huge entry at Dir3 |
//! | `NonCanonical` | #GP | VA\[63:48\] ≠ 0 (translation fault L0 in hardware) | page fault | ADE |
//! | `AddressSize` | — | address-size fault | — | — |

pub mod aarch64;
pub mod loongarch64;
pub mod riscv;
pub mod x86_64;

/// The kind of access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// A data load.
    Read,
    /// A data store.
    Write,
    /// An instruction fetch.
    Exec,
}

/// One memory access to translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Load, store or fetch.
    pub kind: AccessKind,
    /// Made at user privilege (CPL 3, EL0, U-mode, PLV3) rather than kernel privilege.
    pub user: bool,
}

impl Access {
    /// A kernel load.
    pub const READ: Self = Self {
        kind: AccessKind::Read,
        user: false,
    };
    /// A kernel store.
    pub const WRITE: Self = Self {
        kind: AccessKind::Write,
        user: false,
    };
    /// A kernel fetch.
    pub const EXEC: Self = Self {
        kind: AccessKind::Exec,
        user: false,
    };
    /// A user load.
    pub const USER_READ: Self = Self {
        kind: AccessKind::Read,
        user: true,
    };
    /// A user store.
    pub const USER_WRITE: Self = Self {
        kind: AccessKind::Write,
        user: true,
    };
    /// A user fetch.
    pub const USER_EXEC: Self = Self {
        kind: AccessKind::Exec,
        user: true,
    };
}

/// The memory type of a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemType {
    /// Normal write-back cacheable memory.
    WriteBack,
    /// Normal (weakly ordered) uncached memory.
    Uncached,
    /// Device (strongly ordered, uncached) memory.
    Device,
    /// Anything else, with the architecture's raw code (x86 PAT type, Arm MAIR byte, LoongArch
    /// MAT).
    Other(u8),
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address, page offset included.
    pub pa: u64,
    /// The size of the page or block the address lies in.
    pub page_size: u64,
    /// The memory type.
    pub mem: MemType,
    /// Whether the translation is global (not tagged with an ASID or PCID), as the
    /// hardware would tag the TLB entry.
    pub global: bool,
    /// The level of the leaf entry (0 = 4 KiB pages).
    pub level: usize,
    /// The raw leaf entry.
    pub entry: u64,
}

/// The normalised cause of a fault. See the [module documentation](self) for the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// No valid entry.
    NotMapped,
    /// The entry does not allow this access at this privilege.
    Permission,
    /// Accessed (or dirty) flag clear and the hardware does not set it.
    AccessFlag,
    /// A reserved bit or encoding, a misaligned superpage, a leaf at a level that cannot hold
    /// one, a pointer at the last level.
    Reserved,
    /// The virtual address is not canonical for the table.
    NonCanonical,
    /// An output or table address beyond the configured physical address size.
    AddressSize,
}

/// A failed translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Why.
    pub kind: FaultKind,
    /// The level of the entry at fault (0 = 4 KiB pages).
    pub level: usize,
}

/// The result of a translation.
pub type Outcome = Result<Translation, Fault>;

/// A walker and its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// x86_64 4- or 5-level paging.
    X86_64(x86_64::Config),
    /// AArch64 stage 1, 4 KiB granule, 48-bit VA.
    Aarch64(aarch64::Config),
    /// RISC-V Sv39, Sv48 or Sv57.
    Riscv(riscv::Config),
    /// LoongArch64 4 KiB page-walk layout.
    LoongArch64(loongarch64::Config),
}

/// Translates `va` for `access` with the tables at `root`, reading memory through `read`.
pub fn translate(
    read: &dyn Fn(u64) -> u64,
    root: u64,
    va: u64,
    access: Access,
    cfg: &Config,
) -> Outcome {
    match cfg {
        Config::X86_64(c) => x86_64::translate(read, root, va, access, c),
        Config::Aarch64(c) => aarch64::translate(read, root, va, access, c),
        Config::Riscv(c) => riscv::translate(read, root, va, access, c),
        Config::LoongArch64(c) => loongarch64::translate(read, root, va, access, c),
    }
}

/// Which accesses of one privilege succeed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    /// Loads succeed.
    pub read: bool,
    /// Stores succeed.
    pub write: bool,
    /// Fetches succeed.
    pub exec: bool,
}

/// The outcome of all six accesses to one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// A translation that succeeded (they all agree on the address and the leaf).
    pub translation: Translation,
    /// The accesses that succeed at kernel privilege.
    pub kernel: Perms,
    /// The accesses that succeed at user privilege.
    pub user: Perms,
}

/// Tries all six accesses (load, store, fetch, at kernel and user privilege) at `va`.
///
/// # Errors
///
/// If none succeeds, the fault of the kernel load.
///
/// # Panics
///
/// If two successful accesses disagree on the translation (no walker here does that).
pub fn rights(
    read: &dyn Fn(u64) -> u64,
    root: u64,
    va: u64,
    cfg: &Config,
) -> Result<Rights, Fault> {
    let mut first: Option<Translation> = None;
    let mut run = |access: Access| match translate(read, root, va, access, cfg) {
        Ok(t) => {
            if let Some(f) = first {
                assert_eq!(f, t, "translations of {va:#x} disagree between accesses");
            }
            first = Some(t);
            true
        }
        Err(_) => false,
    };
    let kernel = Perms {
        read: run(Access::READ),
        write: run(Access::WRITE),
        exec: run(Access::EXEC),
    };
    let user = Perms {
        read: run(Access::USER_READ),
        write: run(Access::USER_WRITE),
        exec: run(Access::USER_EXEC),
    };
    match first {
        Some(translation) => Ok(Rights {
            translation,
            kernel,
            user,
        }),
        None => Err(translate(read, root, va, Access::READ, cfg).expect_err("no access succeeded")),
    }
}

/// The index of `va` in a table of `level` (9 bits above `12 + 9 * level`).
#[inline]
fn index(va: u64, level: usize) -> u64 {
    (va >> (12 + 9 * level)) & 0x1FF
}

/// The size mapped by one entry of `level`.
#[inline]
const fn level_size(level: usize) -> u64 {
    0x1000 << (9 * level)
}

/// Whether `va` is sign-extended from bit `bits - 1`.
#[inline]
fn sign_extended(va: u64, bits: u32) -> bool {
    let top = (va as i64) >> (bits - 1);
    top == 0 || top == -1
}

#[cfg(test)]
pub(crate) mod test_util {
    //! A tiny table builder for hand-written walker tests.
    use crate::mem;

    /// Resets the simulated memory and writes `(pa, value)` pairs.
    pub fn setup(words: &[(u64, u64)]) {
        crate::reset_with(64 * mem::FRAME_SIZE);
        for &(pa, v) in words {
            mem::write_u64(pa, v);
        }
    }

    /// The memory reader of the simulated memory.
    pub fn rd() -> &'static dyn Fn(u64) -> u64 {
        &mem::read_u64
    }
}
