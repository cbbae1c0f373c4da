//! x86_64 on KVM: the table under test is walked by the machine's own MMU (or, under a
//! shadow-paging KVM such as PVM, by KVM's software walker), with every probe driven from
//! the host.
//!
//! No firmware and no guest image: the host writes a GDT, an IDT, a TSS, a page of stubs
//! and the harness tables into guest memory, and enters 64-bit mode directly with
//! `KVM_SET_SREGS` (CR0.PG/WP/PE, CR4.PAE (+LA57/SMEP/SMAP), EFER.LME/LMA/NXE, CR3 = the
//! root under test). For each probe it sets RIP to a stub (through an `iretq` stub for
//! CPL3), RSI to the word's VA, and calls `KVM_RUN` once (twice for a store, which first
//! loads the word at the same privilege, as the QEMU guests do). Every run ends at CPL0 in
//! an exception stub that reports through `out 0x0e` (or in a `hlt` exit), so the next one
//! needs no `KVM_SET_SREGS`. A watchdog thread interrupts `KVM_RUN` with a signal when the
//! run's time limit has passed.
//!
//! Guest-physical harness layout (below the image window):
//!
//! | PA | contents |
//! |---|---|
//! | `0x1000` | GDT: kernel code/data, user data/code, TSS |
//! | `0x2000` | IDT: vectors 0–31, each to a stub that reports through port `0x0e` |
//! | `0x3000` | TSS (RSP0 = top of the harness stack) |
//! | `0x4000` | stubs: `load` (`mov r8, [rsi]`), `store` (`mov [rsi], r9`), each followed by `ud2`, whose #UD reports that the access completed (PVM lets CPL3 neither `out`, even with IOPL 3, nor `int n`); `exec` (`jmp rsi`); `iretq` to CPL3; the exception stubs |
//! | `0x5000`–`0x8000` | harness stack |
//! | `0x8000`–`0xF000` | harness tables |
//!
//! The harness maps PA 0–1 GiB at `0xFFFF_FF80_0000_0000` (root slot 511, supervisor, as
//! the QEMU guest does) and the stub page, user-accessible, at the start of one empty
//! lower-half root slot with no probe in it (CPL3 code cannot run from the upper half
//! under PVM). Both entries are written into the guest's copy of the root only.
//!
//! Data words are tagged with `hlt` (`0xF4`) instead of `int3` in guest memory (`int3` at
//! CPL0 is a KVM internal error under PVM); values are translated back, so the records
//! look like the QEMU guest's. An allowed fetch ends in a `hlt` exit at VA + 1 (CPL0) or
//! a #GP(0) at the VA (CPL3, where `hlt` is privileged).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use crate::layout::{self, HUGE_TAGGED, Layout, WINDOW, Word, status};
use crate::runner::{Record, RunReport, finish};
use crate::{Access, Arch, Config, Image, KvmCaps, OracleError, Probe, X86Accel};

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
const CODE: u64 = 0x4000;
const STACK_TOP: u64 = 0x8000;
const PDPT_HIGH: u64 = 0x8000;
const PD_HIGH: u64 = 0x9000;
const PML4_HIGH: u64 = 0xA000;
/// The user chain: up to four tables from the root slot down to the stub page.
const USER_TABLES: [u64; 4] = [0xB000, 0xC000, 0xD000, 0xE000];
/// Where the harness sees PA 0 (root slot 511).
pub const HIGH: u64 = 0xFFFF_FF80_0000_0000;

const KCODE: u16 = 0x08;
const KDATA: u16 = 0x10;
const UDATA: u16 = 0x18 | 3;
const UCODE: u16 = 0x20 | 3;
const TSSSEL: u16 = 0x28;

/// Port the exception stubs write.
const PORT_FAULT: u16 = 0x0e;

/// Pseudo-vector in a record's `info[0]` for a `hlt` exit (an allowed CPL0 fetch when the
/// RIP is right after the probed word's first byte).
pub const VECTOR_HLT: u64 = 0x100;
/// Pseudo-vector base for other KVM exits (`info[0] = VECTOR_EXIT + n`): 1 shutdown
/// (triple fault), 2 internal error, 3 failed entry, 4 anything else.
pub const VECTOR_EXIT: u64 = 0x200;

/// The `hlt` tag bits that replace `int3` in guest memory.
const HLT_BITS: u64 = 0xF4F4_F4F4;

// The stubs, assembled into the host binary and copied into the guest's stub page. The
// code is position independent (relative jumps inside the blob only).
core::arch::global_asm!(
    ".pushsection .rodata.mmu_oracle_kvm_stubs,\"a\"",
    ".balign 4096",
    ".globl mmu_oracle_kvm_stubs",
    "mmu_oracle_kvm_stubs:",
    ".globl mmu_oracle_kvm_load",
    "mmu_oracle_kvm_load:",
    "mov r8, qword ptr [rsi]",
    ".globl mmu_oracle_kvm_load_done",
    "mmu_oracle_kvm_load_done:",
    "ud2",
    ".balign 16",
    ".globl mmu_oracle_kvm_store",
    "mmu_oracle_kvm_store:",
    "mov qword ptr [rsi], r9",
    ".globl mmu_oracle_kvm_store_done",
    "mmu_oracle_kvm_store_done:",
    "ud2",
    ".balign 16",
    ".globl mmu_oracle_kvm_exec",
    "mmu_oracle_kvm_exec:",
    "jmp rsi",
    // From CPL0 to the CPL3 stub at rcx.
    ".balign 16",
    ".globl mmu_oracle_kvm_to_user",
    "mmu_oracle_kvm_to_user:",
    "push {udata}",
    "push 0",
    "push 2",
    "push {ucode}",
    "push rcx",
    "iretq",
    // Exception stubs, 16 bytes apart: push a zero error code where the CPU pushes none,
    // push the vector, report.
    ".balign 16",
    ".globl mmu_oracle_kvm_vectors",
    "mmu_oracle_kvm_vectors:",
    ".balign 16; push 0; push 0; jmp 9f",
    ".balign 16; push 0; push 1; jmp 9f",
    ".balign 16; push 0; push 2; jmp 9f",
    ".balign 16; push 0; push 3; jmp 9f",
    ".balign 16; push 0; push 4; jmp 9f",
    ".balign 16; push 0; push 5; jmp 9f",
    ".balign 16; push 0; push 6; jmp 9f",
    ".balign 16; push 0; push 7; jmp 9f",
    ".balign 16; push 8; jmp 9f",
    ".balign 16; push 0; push 9; jmp 9f",
    ".balign 16; push 10; jmp 9f",
    ".balign 16; push 11; jmp 9f",
    ".balign 16; push 12; jmp 9f",
    ".balign 16; push 13; jmp 9f",
    ".balign 16; push 14; jmp 9f",
    ".balign 16; push 0; push 15; jmp 9f",
    ".balign 16; push 0; push 16; jmp 9f",
    ".balign 16; push 17; jmp 9f",
    ".balign 16; push 0; push 18; jmp 9f",
    ".balign 16; push 0; push 19; jmp 9f",
    ".balign 16; push 0; push 20; jmp 9f",
    ".balign 16; push 21; jmp 9f",
    ".balign 16; push 0; push 22; jmp 9f",
    ".balign 16; push 0; push 23; jmp 9f",
    ".balign 16; push 0; push 24; jmp 9f",
    ".balign 16; push 0; push 25; jmp 9f",
    ".balign 16; push 0; push 26; jmp 9f",
    ".balign 16; push 0; push 27; jmp 9f",
    ".balign 16; push 0; push 28; jmp 9f",
    ".balign 16; push 29; jmp 9f",
    ".balign 16; push 30; jmp 9f",
    ".balign 16; push 0; push 31; jmp 9f",
    // rax = vector, rdx = error code, rcx = RIP of the faulting instruction, rdi = CR2.
    ".balign 16",
    "9:",
    "pop rax",
    "pop rdx",
    "mov rcx, qword ptr [rsp]",
    "mov rdi, cr2",
    "out 0x0e, al",
    "hlt",
    ".globl mmu_oracle_kvm_stubs_end",
    "mmu_oracle_kvm_stubs_end:",
    ".popsection",
    udata = const UDATA,
    ucode = const UCODE,
);

unsafe extern "C" {
    static mmu_oracle_kvm_stubs: u8;
    static mmu_oracle_kvm_load: u8;
    static mmu_oracle_kvm_store: u8;
    static mmu_oracle_kvm_exec: u8;
    static mmu_oracle_kvm_to_user: u8;
    static mmu_oracle_kvm_vectors: u8;
    static mmu_oracle_kvm_load_done: u8;
    static mmu_oracle_kvm_store_done: u8;
    static mmu_oracle_kvm_stubs_end: u8;
}

/// The stub code and the offsets of its entry points.
struct Stubs {
    code: Vec<u8>,
    load: u64,
    store: u64,
    exec: u64,
    to_user: u64,
    vectors: u64,
    load_done: u64,
    store_done: u64,
}

fn stubs() -> Stubs {
    let start = &raw const mmu_oracle_kvm_stubs as usize;
    let off = |p: *const u8| (p as usize - start) as u64;
    let len = off(&raw const mmu_oracle_kvm_stubs_end) as usize;
    assert!(len <= 0x1000, "the KVM stubs must fit in a page");
    // SAFETY: the symbols delimit one blob of initialised read-only data emitted by the
    // `global_asm!` above, `len` bytes long.
    let code = unsafe { std::slice::from_raw_parts(start as *const u8, len) }.to_vec();
    Stubs {
        code,
        load: off(&raw const mmu_oracle_kvm_load),
        store: off(&raw const mmu_oracle_kvm_store),
        exec: off(&raw const mmu_oracle_kvm_exec),
        to_user: off(&raw const mmu_oracle_kvm_to_user),
        vectors: off(&raw const mmu_oracle_kvm_vectors),
        load_done: off(&raw const mmu_oracle_kvm_load_done),
        store_done: off(&raw const mmu_oracle_kvm_store_done),
    }
}

/// Guest memory: an anonymous private mapping, registered as slot 0 at GPA 0.
struct GuestMem {
    ptr: *mut u8,
    size: usize,
}

impl GuestMem {
    fn new(size: usize) -> Result<Self, OracleError> {
        // SAFETY: an anonymous mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(OracleError::io(
                "map guest memory",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            ptr: ptr.cast(),
            size,
        })
    }

    fn slice(&mut self, pa: u64, len: usize) -> &mut [u8] {
        assert!(
            pa as usize + len <= self.size,
            "{pa:#x}+{len:#x} out of guest memory"
        );
        // SAFETY: in bounds of the mapping (checked), which lives as long as `self`; the
        // vCPU only runs while the host is not holding this slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(pa as usize), len) }
    }

    fn write_u64(&mut self, pa: u64, v: u64) {
        self.slice(pa, 8).copy_from_slice(&v.to_le_bytes());
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are the mapping made in `new`, unmapped only here, after the
        // VM that used it (dropped first: see the field order of `Vm`).
        unsafe { libc::munmap(self.ptr.cast(), self.size) };
    }
}

/// The tag with its trap half switched between `int3` (the image) and `hlt` (guest
/// memory), for words that are tags or store markers; other words unchanged.
fn retrap(v: u64, from: u64, to: u64) -> u64 {
    if v & 0xFFFF_FFFF != from {
        return v;
    }
    let canonical = (v & !0xFFFF_FFFF) | layout::trap_bits(Arch::X86_64);
    match layout::untag(Arch::X86_64, canonical) {
        Word::Tag(_) | Word::Marker(_) => (v & !0xFFFF_FFFF) | to,
        Word::Other => v,
    }
}

fn retrap_bytes(bytes: &mut [u8], from: u64, to: u64) {
    for chunk in bytes.chunks_exact_mut(8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap());
        let w = retrap(v, from, to);
        if w != v {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
    }
}

fn cpuid_caps(cpuid: &CpuId) -> (bool, bool, bool, bool) {
    let entry = |f: u32, i: u32| {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .copied()
    };
    let l7 = entry(7, 0);
    let ext = entry(0x8000_0001, 0);
    let pdpe1gb = ext.is_some_and(|e| e.edx & (1 << 26) != 0);
    let la57 = l7.is_some_and(|e| e.ecx & (1 << 16) != 0);
    let smep = l7.is_some_and(|e| e.ebx & (1 << 7) != 0);
    let smap = l7.is_some_and(|e| e.ebx & (1 << 20) != 0);
    (pdpe1gb, la57, smep, smap)
}

fn seg(selector: u16, type_: u8, dpl: u8, code64: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!code64),
        s: 1,
        l: u8::from(code64),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

const SIG_KICK_OFFSET: i32 = 3;

fn kick_signal() -> i32 {
    libc::SIGRTMIN() + SIG_KICK_OFFSET
}

extern "C" fn on_kick(_: libc::c_int) {}

/// Installs the (empty) handler of the signal that interrupts `KVM_RUN` after the
/// timeout, without `SA_RESTART`, so the ioctl returns `EINTR`.
fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid starting value; the handler does
        // nothing, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// Kicks the calling thread out of `KVM_RUN` (repeatedly) once `limit` has passed, until
/// dropped.
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    fired: std::sync::Arc<AtomicBool>,
}

impl Watchdog {
    fn start(limit: Duration) -> Self {
        install_kick_handler();
        // SAFETY: `pthread_self` has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let (tx, rx) = mpsc::channel::<()>();
        let fired = std::sync::Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            loop {
                // SAFETY: `target` is the thread that owns this watchdog; it joins this
                // thread (in `Drop`) before it can exit, so the id is live.
                unsafe { libc::pthread_kill(target, kick_signal()) };
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
            fired,
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The outcome of one `KVM_RUN` of a stub.
struct Access1 {
    status: u64,
    value: u64,
    info: [u64; 4],
}

/// One VM with the harness installed.
struct Vm {
    // Field order: the vCPU and VM are closed before the memory is unmapped.
    vcpu: VcpuFd,
    _vm: kvm_ioctls::VmFd,
    mem: GuestMem,
    stubs: Stubs,
    sregs: kvm_sregs,
    /// Whether the vCPU may have left CPL0 64-bit mode (after an unusual exit).
    reset_sregs: bool,
    user_code: u64,
}

fn kvm_err(what: &str, e: kvm_ioctls::Error) -> OracleError {
    OracleError::io(what, std::io::Error::from_raw_os_error(e.errno()))
}

/// Opens `/dev/kvm` and reads what its vCPUs support, without the calibrated
/// [`KvmCaps::user_upper_half`] (set to `true`).
fn open() -> Result<(Kvm, CpuId, KvmCaps), OracleError> {
    let kvm = Kvm::new().map_err(|e| kvm_err("open /dev/kvm", e))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| kvm_err("KVM_GET_SUPPORTED_CPUID", e))?;
    let (pdpe1gb, la57, smep, smap) = cpuid_caps(&cpuid);
    Ok((
        kvm,
        cpuid,
        KvmCaps {
            pdpe1gb,
            la57,
            smep,
            smap,
            user_upper_half: true,
        },
    ))
}

impl Vm {
    fn new(
        layout: &Layout,
        config: &Config,
        root: u64,
        user_slot: u64,
    ) -> Result<(Self, KvmCaps), OracleError> {
        let Config::X86_64 {
            la57, smep, smap, ..
        } = *config
        else {
            return Err(OracleError::Invalid("KVM runs x86_64 only".into()));
        };
        let (kvm, cpuid, caps) = open()?;
        for (want, have, name) in [
            (la57, caps.la57, "LA57"),
            (smep, caps.smep, "SMEP"),
            (smap, caps.smap, "SMAP"),
        ] {
            if want && !have {
                return Err(OracleError::Invalid(format!("this KVM offers no {name}")));
            }
        }
        let vm = kvm.create_vm().map_err(|e| kvm_err("KVM_CREATE_VM", e))?;
        let mut mem = GuestMem::new(layout.ram_size as usize)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: layout.ram_size,
            userspace_addr: mem.ptr as u64,
        };
        // SAFETY: the region is the mapping `mem`, which outlives the VM (field order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| kvm_err("KVM_SET_USER_MEMORY_REGION", e))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| kvm_err("KVM_CREATE_VCPU", e))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| kvm_err("KVM_SET_CPUID2", e))?;

        // GDT, TSS, IDT, stubs.
        let stubs = stubs();
        let gdt = [
            0,
            0x00AF_9A00_0000_FFFF,
            0x00CF_9200_0000_FFFF,
            0x00CF_F200_0000_FFFF,
            0x00AF_FA00_0000_FFFF,
        ];
        for (i, d) in gdt.iter().enumerate() {
            mem.write_u64(GDT + i as u64 * 8, *d);
        }
        let tss = HIGH + TSS;
        mem.write_u64(
            GDT + 0x28,
            0x67 | (tss & 0xFF_FFFF) << 16 | 0x8B << 40 | ((tss >> 24) & 0xFF) << 56,
        );
        mem.write_u64(GDT + 0x30, tss >> 32);
        mem.slice(TSS, 0x68).fill(0);
        mem.write_u64(TSS + 4, HIGH + STACK_TOP);
        mem.slice(TSS + 0x66, 2)
            .copy_from_slice(&0x68u16.to_le_bytes());
        for v in 0..32u64 {
            let off = HIGH + CODE + stubs.vectors + 16 * v;
            let lo =
                (off & 0xFFFF) | (KCODE as u64) << 16 | 0x8E00 << 32 | ((off >> 16) & 0xFFFF) << 48;
            mem.write_u64(IDT + 16 * v, lo);
            mem.write_u64(IDT + 16 * v + 8, off >> 32);
        }
        mem.slice(CODE, 0x1000).fill(0xF4);
        mem.slice(CODE, stubs.code.len())
            .copy_from_slice(&stubs.code);

        // Harness tables: PA 0..1 GiB at HIGH (supervisor), in root slot 511.
        for i in 0..512u64 {
            mem.write_u64(PD_HIGH + i * 8, i << 21 | 0x83);
        }
        mem.write_u64(PDPT_HIGH, PD_HIGH | 3);
        if la57 {
            mem.slice(PML4_HIGH, 0x1000).fill(0);
            mem.write_u64(PML4_HIGH + 511 * 8, PDPT_HIGH | 3);
        }
        // The stub page for CPL3, at the start of `user_slot`.
        let levels = if la57 { 5 } else { 4 };
        let chain = &USER_TABLES[..levels - 1];
        for (i, &t) in chain.iter().enumerate() {
            mem.slice(t, 0x1000).fill(0);
            let next = chain.get(i + 1).map_or(CODE | 5, |&n| n | 7);
            mem.write_u64(t, next);
        }
        let user_code = user_slot << (12 + 9 * (levels as u32 - 1));

        let mut sregs = vcpu.get_sregs().map_err(|e| kvm_err("KVM_GET_SREGS", e))?;
        sregs.cr0 = 0x8005_0033;
        sregs.cr4 = 0x20 | u64::from(la57) << 12 | u64::from(smep) << 20 | u64::from(smap) << 21;
        sregs.efer = 0xD00;
        sregs.cr3 = root;
        sregs.cs = seg(KCODE, 0xB, 0, true);
        let kdata = seg(KDATA, 0x3, 0, false);
        sregs.ds = kdata;
        sregs.es = kdata;
        sregs.fs = kdata;
        sregs.gs = kdata;
        sregs.ss = kdata;
        sregs.tr = kvm_segment {
            base: tss,
            limit: 0x67,
            selector: TSSSEL,
            type_: 0xB,
            present: 1,
            s: 0,
            ..Default::default()
        };
        sregs.ldt = kvm_segment {
            unusable: 1,
            ..Default::default()
        };
        sregs.gdt.base = HIGH + GDT;
        sregs.gdt.limit = 0x37;
        sregs.idt.base = HIGH + IDT;
        sregs.idt.limit = 32 * 16 - 1;
        Ok((
            Self {
                vcpu,
                _vm: vm,
                mem,
                stubs,
                sregs,
                reset_sregs: true,
                user_code,
            },
            caps,
        ))
    }

    /// Writes the harness's root entries into the guest's copy of the root: slot 511 and
    /// the CPL3 stub slot.
    fn install(&mut self, root: u64, user_slot: u64, la57: bool) {
        let high = if la57 { PML4_HIGH } else { PDPT_HIGH } | 3;
        self.mem.write_u64(root + 511 * 8, high);
        self.mem.write_u64(root + user_slot * 8, USER_TABLES[0] | 7);
    }

    /// Runs one stub: `kind` 0 load, 1 store (of `value`), 2 fetch; at CPL3 if `user`.
    fn access(
        &mut self,
        kind: u8,
        user: bool,
        va: u64,
        value: u64,
        dog: &Watchdog,
    ) -> Result<Access1, ()> {
        let stub = match kind {
            0 => self.stubs.load,
            1 => self.stubs.store,
            _ => self.stubs.exec,
        };
        // Every run starts at CPL0 (where the previous one ended, in an exception stub);
        // a CPL3 probe goes through `iretq`.
        if self.reset_sregs {
            self.vcpu.set_sregs(&self.sregs).map_err(|_| ())?;
            self.reset_sregs = false;
        }
        let base = if user { self.user_code } else { HIGH + CODE };
        let regs = kvm_regs {
            rip: if user {
                HIGH + CODE + self.stubs.to_user
            } else {
                base + stub
            },
            rcx: base + stub,
            rsp: HIGH + STACK_TOP,
            rflags: 0x2,
            rsi: va,
            r9: value,
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(|_| ())?;
        if dog.fired() {
            return Err(());
        }
        let exit = match self.vcpu.run() {
            Ok(VcpuExit::IoOut(PORT_FAULT, _)) => 1,
            Ok(VcpuExit::Hlt) => 2,
            Ok(VcpuExit::Shutdown) => 3,
            Ok(VcpuExit::InternalError) => 4,
            Ok(VcpuExit::FailEntry(..)) => 5,
            Ok(_) => 6,
            Err(_) => return Err(()),
        };
        self.reset_sregs = exit > 2;
        let r = self.vcpu.get_regs().map_err(|_| ())?;
        // The `ud2` right after the access: it completed (the #UD is the stub's report).
        let done = match kind {
            0 => Some(base + self.stubs.load_done),
            1 => Some(base + self.stubs.store_done),
            _ => None,
        };
        Ok(match exit {
            1 if r.rax == 6 && Some(r.rcx) == done => Access1 {
                status: status::OK,
                value: if kind == 0 {
                    retrap(r.r8, HLT_BITS, layout::trap_bits(Arch::X86_64))
                } else {
                    0
                },
                info: [0; 4],
            },
            1 => Access1 {
                status: status::FAULT,
                value: 0,
                info: [r.rax, r.rdx, r.rdi, r.rcx],
            },
            2 => Access1 {
                status: status::FAULT,
                value: 0,
                info: [VECTOR_HLT, 0, 0, r.rip],
            },
            n => Access1 {
                status: status::FAULT,
                value: 0,
                info: [VECTOR_EXIT + (n as u64 - 2), 0, 0, r.rip],
            },
        })
    }
}

/// A root slot of the lower half that is empty in the guest's root and holds no probe:
/// where the CPL3 stub page goes.
fn user_slot(root_entries: &dyn Fn(u64) -> u64, la57: bool, probes: &[Probe]) -> Option<u64> {
    let shift = if la57 { 48 } else { 39 };
    (1..256u64)
        .rev()
        .find(|&s| root_entries(s) & 1 == 0 && probes.iter().all(|p| p.va >> shift != s))
}

/// Runs `probes` on KVM (see the module documentation); called by [`Image::run`] for an
/// x86_64 configuration with [`X86Accel::Kvm`].
pub(crate) fn run(
    img: &Image,
    config: &Config,
    root: u64,
    probes: &[Probe],
    limit: Duration,
) -> Result<RunReport, OracleError> {
    let Config::X86_64 {
        la57,
        accel: X86Accel::Kvm(caps),
        ..
    } = *config
    else {
        return Err(OracleError::Invalid("not a KVM configuration".into()));
    };
    let layout = img.layout();
    if !caps.user_upper_half {
        if let Some(p) = probes.iter().find(|p| p.user && p.va >> 63 == 1) {
            return Err(OracleError::Invalid(format!(
                "probe `{p}`: CPL3 accesses to the upper half do not follow the table on \
                 this KVM (KvmCaps::user_upper_half)"
            )));
        }
    }
    if img.read_u64(root + 511 * 8) & 1 != 0 {
        return Err(OracleError::Invalid(
            "slot 511 of the root is in use; the harness needs it".into(),
        ));
    }
    let slot = user_slot(&|s| img.read_u64(root + s * 8), la57, probes).ok_or_else(|| {
        OracleError::Invalid(
            "no empty lower-half root slot without probes for the CPL3 stubs".into(),
        )
    })?;
    let start = Instant::now();
    let (mut vm, _) = Vm::new(&layout, config, root, slot)?;

    // The image window and the tagged ends of the 1 GiB region, with `hlt` tags.
    let mut win = img.window_bytes();
    retrap_bytes(&mut win, layout::trap_bits(Arch::X86_64), HLT_BITS);
    vm.mem
        .slice(layout.img_base, WINDOW as usize)
        .copy_from_slice(&win);
    drop(win);
    if layout.huge_1g_backed() {
        let huge = layout.huge_1g;
        for base in [huge, huge + (1 << 30) - HUGE_TAGGED] {
            let tags: Vec<u8> = (0..HUGE_TAGGED / 8)
                .flat_map(|i| {
                    retrap(
                        layout::tag(Arch::X86_64, base + i * 8),
                        0xCCCC_CCCC,
                        HLT_BITS,
                    )
                    .to_le_bytes()
                })
                .collect();
            vm.mem
                .slice(base, HUGE_TAGGED as usize)
                .copy_from_slice(&tags);
        }
    }
    vm.install(root, slot, la57);

    let dog = Watchdog::start(limit);
    let mut records = Vec::with_capacity(probes.len());
    for (i, p) in probes.iter().enumerate() {
        let va = p.va & !7;
        let kind = match p.kind {
            Access::Load => 0,
            Access::Store => 1,
            Access::Exec => 2,
        };
        let incomplete = |timed_out| OracleError::Incomplete {
            probe: Some(i),
            timed_out,
            output: String::new(),
        };
        let (mut pre_status, mut pre_value) = (status::NO_PRELOAD, 0);
        let mut value = retrap(
            layout::marker(Arch::X86_64, i as u64),
            0xCCCC_CCCC,
            HLT_BITS,
        );
        if kind == 1 {
            let pre = vm
                .access(0, p.user, va, 0, &dog)
                .map_err(|()| incomplete(dog.fired()))?;
            pre_status = pre.status;
            pre_value = pre.value;
            if pre.status == status::OK {
                value = retrap(pre.value, 0xCCCC_CCCC, HLT_BITS);
            }
        }
        let a = vm
            .access(kind, p.user, va, value, &dog)
            .map_err(|()| incomplete(dog.fired()))?;
        records.push(Record {
            status: a.status,
            value: a.value,
            info: a.info,
            pre_status,
            pre_value,
        });
    }
    drop(dog);
    let elapsed = start.elapsed();

    let mut win = vm.mem.slice(layout.img_base, WINDOW as usize).to_vec();
    retrap_bytes(&mut win, HLT_BITS, layout::trap_bits(Arch::X86_64));
    let huge_copy: Vec<(u64, Vec<u8>)> = if layout.huge_1g_backed() {
        let huge = layout.huge_1g;
        [huge, huge + (1 << 30) - HUGE_TAGGED]
            .into_iter()
            .map(|b| {
                let mut v = vm.mem.slice(b, HUGE_TAGGED as usize).to_vec();
                retrap_bytes(&mut v, HLT_BITS, layout::trap_bits(Arch::X86_64));
                (b, v)
            })
            .collect()
    } else {
        Vec::new()
    };
    let read_huge = |base: u64| {
        huge_copy
            .iter()
            .find(|(b, _)| *b == base)
            .map(|(_, v)| v.clone())
    };
    Ok(finish(
        config, &layout, probes, records, win, &read_huge, elapsed,
    ))
}

/// The capabilities of this machine's KVM, measured once per process: CPUID as
/// `KVM_GET_SUPPORTED_CPUID` reports it, and two calibration probes through a hand-written
/// table: a CPL3 load of a user page in the upper half ([`KvmCaps::user_upper_half`]) and a
/// CPL0 load through a 1 GiB page, which must agree with CPUID's Page1GB. A CPL3 load of a
/// lower-half user page must succeed. Where CPUID offers LA57, a CPL0 load through a
/// 5-level table must translate too, or [`KvmCaps::la57`] is cleared.
///
/// # Errors
///
/// Why KVM cannot run the oracle here (no `/dev/kvm`, no permission, an ioctl failing, a
/// calibration probe giving an impossible result).
pub fn capabilities() -> Result<KvmCaps, String> {
    static CAPS: std::sync::OnceLock<Result<KvmCaps, String>> = std::sync::OnceLock::new();
    CAPS.get_or_init(calibrate).clone()
}

fn calibrate() -> Result<KvmCaps, String> {
    let layout = Layout::of(Arch::X86_64);
    let config = Config::x86_64();
    // A 4-level table in the image window's pool: user page at 0x1000_0000 and at the
    // bottom of the upper half, supervisor 1 GiB page at 0x4000_0000.
    let root = layout.pa(layout::POOL);
    let [pdpt_lo, pd_lo, pt_lo, pdpt_hi, pd_hi, pt_hi] =
        core::array::from_fn(|i| root + 0x1000 * (i as u64 + 1));
    let data = layout.pa(layout::DATA);
    let slot = 255;
    let (mut vm, mut caps) = Vm::new(&layout, &config, root, slot)
        .map_err(|e| format!("cannot set up a KVM guest: {e}"))?;
    for t in [root, pdpt_lo, pd_lo, pt_lo, pdpt_hi, pd_hi, pt_hi] {
        vm.mem.slice(t, 0x1000).fill(0);
    }
    let tag = |pa: u64| retrap(layout::tag(Arch::X86_64, pa), 0xCCCC_CCCC, HLT_BITS);
    vm.mem.write_u64(data, tag(data));
    vm.mem.write_u64(layout.huge_1g, tag(layout.huge_1g));
    vm.mem.write_u64(root, pdpt_lo | 7);
    vm.mem.write_u64(pdpt_lo, pd_lo | 7);
    vm.mem.write_u64(pdpt_lo + 8, layout.huge_1g | 0x83);
    vm.mem.write_u64(pd_lo + 128 * 8, pt_lo | 7);
    vm.mem.write_u64(pt_lo, data | 7);
    vm.mem.write_u64(root + 256 * 8, pdpt_hi | 7);
    vm.mem.write_u64(pdpt_hi, pd_hi | 7);
    vm.mem.write_u64(pd_hi, pt_hi | 7);
    vm.mem.write_u64(pt_hi, data | 7);
    vm.mem.write_u64(pt_hi + 8, data | 3);
    vm.install(root, slot, false);
    let dog = Watchdog::start(Duration::from_secs(5));
    let mut load = |user: bool, va: u64| {
        vm.access(0, user, va, 0, &dog)
            .map_err(|()| format!("a KVM calibration load of {va:#x} did not finish"))
    };
    let ok =
        |a: &Access1, pa: u64| a.status == status::OK && a.value == layout::tag(Arch::X86_64, pa);
    let lower = load(true, 0x1000_0000)?;
    if !ok(&lower, data) {
        return Err(format!(
            "a CPL3 load of a lower-half user page failed on KVM: {:x?}",
            lower.info
        ));
    }
    // CPL3 to the upper half: a user page, a supervisor page and a hole. Either the
    // table decides (translation, permission fault, not-present fault), or (PVM) all three
    // raise a #PF: with P and RSVD set, or not-present, from one run to the next.
    let upper = load(true, 0xFFFF_8000_0000_0000)?;
    let kernel_only = load(true, 0xFFFF_8000_0000_1000)?;
    let hole = load(true, 0xFFFF_8000_4000_0000)?;
    let pf = |a: &Access1, codes: &[u64]| {
        a.status == status::FAULT && a.info[0] == 14 && codes.contains(&(a.info[1] & 0xF))
    };
    caps.user_upper_half = ok(&upper, data);
    let as_table = caps.user_upper_half && pf(&kernel_only, &[0x5]) && pf(&hole, &[0x4]);
    let pvm = [&upper, &kernel_only, &hole]
        .iter()
        .all(|a| pf(a, &[0x4, 0xD]));
    if !(as_table || pvm) {
        return Err(format!(
            "CPL3 loads of the upper half on KVM gave {:x?} (user page), {:x?} (supervisor \
             page) and {:x?} (not mapped)",
            upper.info, kernel_only.info, hole.info
        ));
    }
    let gig = load(false, 0x4000_0000)?;
    let gig_ok = ok(&gig, layout.huge_1g);
    let gig_rsvd = gig.status == status::FAULT && gig.info[0] == 14 && gig.info[1] & 8 != 0;
    if !(gig_ok && caps.pdpe1gb || gig_rsvd && !caps.pdpe1gb) {
        return Err(format!(
            "a 1 GiB page on KVM gave {:x?} where CPUID says Page1GB = {}",
            gig.info, caps.pdpe1gb
        ));
    }
    drop(vm);
    if caps.la57 && !la57_runs(&layout, slot) {
        // CPUID offers LA57 but a guest cannot use it (seen under nested PVM on a host
        // that itself runs 4-level paging): the 5-level suites are skipped.
        caps.la57 = false;
    }
    Ok(caps)
}

/// Whether a CPL0 load through a hand-written 5-level table translates on this KVM.
fn la57_runs(layout: &Layout, slot: u64) -> bool {
    let config = Config::x86_64_la57();
    let root = layout.pa(layout::POOL);
    let [p4, pdpt, pd, pt] = core::array::from_fn(|i| root + 0x1000 * (i as u64 + 1));
    let data = layout.pa(layout::DATA);
    let Ok((mut vm, _)) = Vm::new(layout, &config, root, slot) else {
        return false;
    };
    for t in [root, p4, pdpt, pd, pt] {
        vm.mem.slice(t, 0x1000).fill(0);
    }
    vm.mem.write_u64(
        data,
        retrap(layout::tag(Arch::X86_64, data), 0xCCCC_CCCC, HLT_BITS),
    );
    // 0x1000_0000: PML5[0] -> PML4[0] -> PDPT[0] -> PD[128] -> PT[0].
    vm.mem.write_u64(root, p4 | 3);
    vm.mem.write_u64(p4, pdpt | 3);
    vm.mem.write_u64(pdpt, pd | 3);
    vm.mem.write_u64(pd + 128 * 8, pt | 3);
    vm.mem.write_u64(pt, data | 3);
    vm.install(root, slot, true);
    let dog = Watchdog::start(Duration::from_secs(5));
    vm.access(0, false, 0x1000_0000, 0, &dog)
        .is_ok_and(|a| a.status == status::OK && a.value == layout::tag(Arch::X86_64, data))
}

/// What a test does before using KVM: the capabilities, or `None` after printing
/// `skipped: <reason>`. KVM is a property of the machine, not something an install step
/// provides, so this never fails a test, even under `CI=true`.
pub fn available() -> Option<KvmCaps> {
    match capabilities() {
        Ok(caps) => Some(caps),
        Err(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "skipped: KVM unusable here: {why}"
            );
            None
        }
    }
}
