//! Hardware oracle for page tables: boots a tiny guest on an emulated MMU (QEMU TCG) with a
//! page table built in a guest-physical [`Image`], runs a batch of [`Probe`]s (loads,
//! stores and instruction fetches at kernel or user privilege) through that table, and
//! reports a normalised [`Outcome`] for each.
//!
//! The guests are written in assembly (`guests/<arch>.S`) and assembled at test time into
//! a cache inside cargo's target directory; nothing prebuilt is shipped.
//!
//! ```no_run
//! use mmu_oracle::{Arch, Config, Image, Outcome, Probe};
//!
//! let img = Image::new(Arch::X86_64);
//! // ... build a table in `img` (by hand, or with page_table_multiarch and
//! // `OracleHandler` as its `PagingHandler`) ...
//! # let root = img.alloc_table();
//! let report = img.run(&Config::x86_64(), root, &[Probe::load(0x1000)]).unwrap();
//! assert!(matches!(report.outcomes[0], Outcome::Fault(_)));
//! ```
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

use std::fmt;

mod decode;
pub mod expect;
mod image;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
pub mod layout;
mod runner;
pub mod tools;
pub mod walk;

pub use image::{Image, OracleHandler};
pub use runner::{Record, RunReport};
pub use tools::available;

/// An architecture the oracle can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86_64 (`qemu-system-x86_64`, machine `pc`, `-cpu max`).
    X86_64,
    /// AArch64 (`qemu-system-aarch64`, machine `virt`, `-cpu cortex-a72`), EL1&0 regime.
    Aarch64,
    /// RISC-V 64 (`qemu-system-riscv64`, machine `virt`, `-bios none`).
    Riscv64,
    /// LoongArch64 (`qemu-system-loongarch64` >= 8, machine `virt`, `-cpu la464`).
    LoongArch64,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 4] = [
        Arch::X86_64,
        Arch::Aarch64,
        Arch::Riscv64,
        Arch::LoongArch64,
    ];

    /// The QEMU target name (`qemu-system-<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
            Arch::LoongArch64 => "loongarch64",
        }
    }
}

/// RISC-V translation mode (`satp.MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiscvMode {
    /// 3 levels, 39-bit VA.
    Sv39 = 8,
    /// 4 levels, 48-bit VA.
    Sv48 = 9,
    /// 5 levels, 57-bit VA.
    Sv57 = 10,
}

impl RiscvMode {
    /// Number of translated VA bits.
    pub const fn va_bits(self) -> u32 {
        match self {
            RiscvMode::Sv39 => 39,
            RiscvMode::Sv48 => 48,
            RiscvMode::Sv57 => 57,
        }
    }
}

/// How the RISC-V guest treats PTEs with A=0 or (on a store) D=0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RiscvAd {
    /// Leave QEMU's reset state (QEMU 10: hardware updates A/D, Svadu).
    #[default]
    Default,
    /// Set `menvcfg.ADUE`: the hardware sets A and D.
    Hardware,
    /// Clear `menvcfg.ADUE`: A=0 or D=0 raises a page fault (Svade).
    Fault,
}

/// What runs the x86_64 guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum X86Accel {
    /// QEMU TCG (`-cpu max`): the multiboot guest of `guests/x86_64.S`.
    #[default]
    Tcg,
    /// KVM (`/dev/kvm`): a vCPU entered directly in long mode, with each probe driven from
    /// the host (see the `kvm` module). The capabilities are those KVM reports for this
    /// machine ([`kvm::capabilities`]); the expectations follow them.
    Kvm(KvmCaps),
}

/// What a KVM vCPU on this machine supports, where it can differ from TCG's `-cpu max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmCaps {
    /// 1 GiB pages (CPUID.80000001H:EDX.Page1GB). Without them, a PDPTE with PS set is a
    /// reserved-bit violation: every access through it raises a #PF with RSVD.
    pub pdpe1gb: bool,
    /// 5-level paging: CPUID.(EAX=7,ECX=0):ECX.LA57, and a calibration load through a
    /// hand-written 5-level table translated (under nested PVM on a 4-level host, CPUID
    /// offers LA57 but no 5-level guest runs).
    pub la57: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.SMEP.
    pub smep: bool,
    /// CPUID.(EAX=7,ECX=0):EBX.SMAP.
    pub smap: bool,
    /// Whether CPL3 accesses to the upper half of the address space follow the guest's
    /// table. Under PVM (a shadow-paging KVM whose guest kernel and user space share the
    /// host's user address range) they do not: every one raises a #PF, for a user page as
    /// for a supervisor page or a hole, and for a mapped page the error code says RSVD in
    /// some runs and not-present in others. The oracle cannot run such probes there: the
    /// KVM backend rejects them. Measured by [`kvm::capabilities`] on a hand-written
    /// table.
    pub user_upper_half: bool,
}

/// Per-architecture machine configuration of one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// x86_64 long mode.
    X86_64 {
        /// 5-level paging (CR4.LA57).
        la57: bool,
        /// CR4.SMEP.
        smep: bool,
        /// CR4.SMAP (RFLAGS.AC stays clear).
        smap: bool,
        /// What runs the guest.
        accel: X86Accel,
    },
    /// AArch64 EL1&0, the table under test in TTBR0_EL1 (48-bit VA, 4 KiB granule).
    Aarch64 {
        /// MAIR_EL1. Index 0 must be a Device type and index 1 Normal write-back: the
        /// harness maps itself with them.
        mair: u64,
    },
    /// RISC-V S/U-mode translation through `satp`.
    Riscv64 {
        /// Translation mode.
        mode: RiscvMode,
        /// A/D handling.
        ad: RiscvAd,
        /// Set `menvcfg.PBMTE`, so the Svpbmt memory types (bits 62:61) are valid.
        pbmte: bool,
    },
    /// LoongArch64 with a 4-level, 4 KiB-page walk (PWCL/PWCH as page_table_multiarch's
    /// `LA64MetaData`) and a software TLB refill that loads full PTEs.
    LoongArch64,
}

impl Config {
    /// x86_64 on QEMU TCG, 4-level paging, no SMEP/SMAP.
    pub const fn x86_64() -> Self {
        Config::X86_64 {
            la57: false,
            smep: false,
            smap: false,
            accel: X86Accel::Tcg,
        }
    }

    /// x86_64 on QEMU TCG, 5-level paging (LA57), no SMEP/SMAP.
    pub const fn x86_64_la57() -> Self {
        Config::X86_64 {
            la57: true,
            smep: false,
            smap: false,
            accel: X86Accel::Tcg,
        }
    }

    /// The same x86_64 configuration on KVM with `caps`; other architectures unchanged.
    pub const fn on_kvm(self, caps: KvmCaps) -> Self {
        match self {
            Config::X86_64 {
                la57, smep, smap, ..
            } => Config::X86_64 {
                la57,
                smep,
                smap,
                accel: X86Accel::Kvm(caps),
            },
            other => other,
        }
    }

    /// AArch64 with the MAIR of page_table_entry (`0x44_ff_04`: Device-nGnRE, Normal WB,
    /// Normal NC).
    pub const fn aarch64() -> Self {
        Config::Aarch64 { mair: 0x44_ff_04 }
    }

    /// RISC-V with `mode`, QEMU's default A/D handling and Svpbmt enabled.
    pub const fn riscv(mode: RiscvMode) -> Self {
        Config::Riscv64 {
            mode,
            ad: RiscvAd::Default,
            pbmte: true,
        }
    }

    /// The architecture.
    pub const fn arch(&self) -> Arch {
        match self {
            Config::X86_64 { .. } => Arch::X86_64,
            Config::Aarch64 { .. } => Arch::Aarch64,
            Config::Riscv64 { .. } => Arch::Riscv64,
            Config::LoongArch64 => Arch::LoongArch64,
        }
    }

    /// Number of VA bits the configured walk translates.
    pub const fn va_bits(&self) -> u32 {
        match self {
            Config::X86_64 { la57: true, .. } => 57,
            Config::X86_64 { .. } | Config::Aarch64 { .. } | Config::LoongArch64 => 48,
            Config::Riscv64 { mode, .. } => mode.va_bits(),
        }
    }

    /// Whether the hardware translates `va` rather than raising an address error: bits above
    /// `va_bits` equal to the top translated bit (x86, RISC-V); below 2^48 (AArch64 TTBR0);
    /// bits 63:48 all equal (LoongArch, where bit 47 only selects PGDL or PGDH, both of
    /// which hold the root under test).
    pub const fn is_canonical(&self, va: u64) -> bool {
        let bits = self.va_bits();
        let top = va >> (bits - 1);
        match self {
            Config::Aarch64 { .. } => va >> bits == 0,
            Config::LoongArch64 => matches!(va >> 48, 0 | 0xFFFF),
            _ => top == 0 || top == u64::MAX >> (bits - 1),
        }
    }
}

/// The kind of access a probe makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A data load.
    Load,
    /// A data store.
    Store,
    /// An instruction fetch.
    Exec,
}

/// One access to run through the table under test.
///
/// The access touches the naturally aligned 8-byte word that contains `va` (an
/// instruction fetch starts at that word), so its translation is that of `va`'s page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// The virtual address.
    pub va: u64,
    /// Load, store or fetch.
    pub kind: Access,
    /// At user privilege (CPL3, EL0, U-mode, PLV3) instead of kernel privilege.
    pub user: bool,
    /// RISC-V only: `mstatus.SUM` (supervisor may access user pages).
    pub sum: bool,
    /// RISC-V only: `mstatus.MXR` (loads from execute-only pages).
    pub mxr: bool,
}

impl Probe {
    /// A probe of `kind` at `va`, kernel privilege.
    pub const fn new(va: u64, kind: Access) -> Self {
        Self {
            va,
            kind,
            user: false,
            sum: false,
            mxr: false,
        }
    }

    /// A kernel load.
    pub const fn load(va: u64) -> Self {
        Self::new(va, Access::Load)
    }

    /// A kernel store.
    pub const fn store(va: u64) -> Self {
        Self::new(va, Access::Store)
    }

    /// A kernel instruction fetch.
    pub const fn exec(va: u64) -> Self {
        Self::new(va, Access::Exec)
    }

    /// The same probe at user privilege.
    pub const fn user(mut self) -> Self {
        self.user = true;
        self
    }

    /// The same probe with RISC-V `SUM` set.
    pub const fn with_sum(mut self) -> Self {
        self.sum = true;
        self
    }

    /// The same probe with RISC-V `MXR` set.
    pub const fn with_mxr(mut self) -> Self {
        self.mxr = true;
        self
    }

    /// The flag word the guests read.
    pub(crate) const fn flags(&self) -> u64 {
        use layout::probe_flags::*;
        let mut f = match self.kind {
            Access::Load => 0,
            Access::Store => STORE,
            Access::Exec => EXEC,
        };
        if self.user {
            f |= USER;
        }
        if self.sum {
            f |= SUM;
        }
        if self.mxr {
            f |= MXR;
        }
        f
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Access::Load => "load",
            Access::Store => "store",
            Access::Exec => "exec",
        };
        let who = if self.user { "user" } else { "kernel" };
        write!(f, "{who} {kind} {:#x}", self.va)?;
        if self.sum {
            f.write_str(" +SUM")?;
        }
        if self.mxr {
            f.write_str(" +MXR")?;
        }
        Ok(())
    }
}

/// Why an access faulted, normalised across architectures.
///
/// How each architecture's report maps to these kinds is in the crate's README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// No valid translation (x86 #PF with P=0; AArch64 translation fault; RISC-V page fault
    /// where even a permissive load faults; LoongArch PIL/PIS/PIF or a refill miss).
    NotMapped,
    /// A valid translation forbids this access at this privilege.
    Permission,
    /// AArch64 access-flag fault (AF=0 with hardware AF update off).
    AccessFlag,
    /// A reserved bit or encoding in an entry (x86 #PF with RSVD).
    Reserved,
    /// The virtual address is not canonical for the walk (x86 #GP, AArch64 level-0
    /// translation fault outside TTBR0's range, RISC-V page fault on a non-canonical VA,
    /// LoongArch ADE).
    NonCanonical,
    /// AArch64 address-size fault (an output or table address beyond the PA size).
    AddressSize,
    /// Translation succeeded but the physical access failed (AArch64 external abort,
    /// RISC-V access fault).
    External,
    /// Any other exception; the code is architecture specific (see the README).
    Other(u64),
}

/// The normalised result of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The access completed. `pa` is the physical address of the probed byte, read from
    /// the tag of the word the access touched (or from AArch64 `PAR_EL1`). It is `None`
    /// for instruction fetches (which reveal no address) and for accesses that landed on
    /// memory without a tag.
    Ok {
        /// The physical address of the probed byte.
        pa: Option<u64>,
    },
    /// The access raised an exception.
    Fault(FaultKind),
}

impl Outcome {
    /// An allowed access to `pa`.
    pub const fn ok(pa: u64) -> Self {
        Outcome::Ok { pa: Some(pa) }
    }

    /// Whether the hardware outcome `self` agrees with the expectation `expected`: equal,
    /// or both `Ok` where `self` has no address because it is an instruction fetch
    /// (`exec` true).
    pub fn agrees_with(&self, expected: &Outcome, exec: bool) -> bool {
        match (self, expected) {
            (Outcome::Ok { pa: None }, Outcome::Ok { .. }) => exec,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { pa: Some(pa) } => write!(f, "ok pa={pa:#x}"),
            Outcome::Ok { pa: None } => write!(f, "ok"),
            Outcome::Fault(k) => write!(f, "fault {k:?}"),
        }
    }
}

/// Why the oracle could not produce outcomes.
#[derive(Debug)]
pub enum OracleError {
    /// A tool (QEMU or an assembler) is not installed.
    ToolMissing {
        /// The missing program.
        tool: String,
        /// How to install it.
        install: String,
    },
    /// Assembling or linking a guest failed.
    GuestBuild {
        /// The failing command line.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// A file or process operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// The request cannot be run (too many probes, a probe in the harness's reserved
    /// address range, a root outside the image, a configuration for another architecture).
    Invalid(String),
    /// The guest reported an error code in the mailbox (see the guest source).
    Guest {
        /// The error code.
        code: u64,
    },
    /// The guest did not finish: it hung (killed after the timeout) or QEMU exited early.
    Incomplete {
        /// Index of the probe the guest was running, if it reached the probe loop.
        probe: Option<usize>,
        /// Whether QEMU was killed by the timeout.
        timed_out: bool,
        /// The end of QEMU's output.
        output: String,
    },
}

impl OracleError {
    pub(crate) fn io(what: &str, error: std::io::Error) -> Self {
        OracleError::Io {
            what: what.to_string(),
            error,
        }
    }
}

impl fmt::Display for OracleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OracleError::ToolMissing { tool, install } => {
                write!(f, "{tool} not found; install with {install}")
            }
            OracleError::GuestBuild { command, stderr } => {
                write!(f, "guest build failed: {command}\n{stderr}")
            }
            OracleError::Io { what, error } => write!(f, "{what}: {error}"),
            OracleError::Invalid(why) => write!(f, "invalid oracle request: {why}"),
            OracleError::Guest { code } => write!(f, "the guest gave up with error {code}"),
            OracleError::Incomplete {
                probe,
                timed_out,
                output,
            } => {
                let why = if *timed_out {
                    "timed out"
                } else {
                    "stopped early"
                };
                match probe {
                    Some(i) => write!(f, "the guest {why} at probe {i}")?,
                    None => write!(f, "the guest {why} before the probe loop")?,
                }
                if !output.is_empty() {
                    write!(f, "; QEMU output:\n{output}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for OracleError {}

/// Runs `probes` through the table rooted at `root` in this thread's [`Image`] and returns
/// one outcome per probe. See [`Image::run`].
pub fn run(config: &Config, root: u64, probes: &[Probe]) -> Result<Vec<Outcome>, OracleError> {
    image::with_current(|img| img.run(config, root, probes)).map(|r| r.outcomes)
}
