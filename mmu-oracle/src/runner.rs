//! Boots QEMU on an image and reads the probe results back.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::layout::{self, HUGE_TAGGED, Layout, RECORD_SIZE, WINDOW, Word, mailbox, status};
use crate::{Arch, Config, Image, OracleError, Outcome, Probe, decode, tools};

/// The raw result record of one probe, as the guest wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// 0: the access completed; 1: it raised an exception; `u64::MAX`: never run.
    pub status: u64,
    /// The loaded value (loads), 0 otherwise.
    pub value: u64,
    /// Exception information:
    /// x86 `[vector, error code, CR2, RIP]`;
    /// AArch64 `[ESR_EL1, FAR_EL1, ELR_EL1, PAR_EL1 after AT]`;
    /// RISC-V `[mcause, mtval, mepc, permissive-load status | its mcause << 8]`;
    /// LoongArch `[ESTAT, BADV, ERA, PA from the TLB after a store whose pre-load faulted]`.
    pub info: [u64; 4],
    /// Stores only: status of the load of the same word made first (2: none made).
    pub pre_status: u64,
    /// Stores only: the value that load read.
    pub pre_value: u64,
}

impl Record {
    fn parse(b: &[u8]) -> Self {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Self {
            status: w(0),
            value: w(1),
            info: [w(2), w(3), w(4), w(5)],
            pre_status: w(6),
            pre_value: w(7),
        }
    }
}

/// Everything one boot produced.
#[derive(Debug)]
pub struct RunReport {
    /// One normalised outcome per probe.
    pub outcomes: Vec<Outcome>,
    /// One raw record per probe.
    pub records: Vec<Record>,
    /// Wall time of the QEMU process.
    pub elapsed: Duration,
    layout: Layout,
    window: Vec<u8>,
}

impl RunReport {
    /// The word at `pa` in the image window as the guest left it (to see, e.g., the
    /// accessed and dirty bits the hardware set), or `None` outside the window.
    pub fn read_u64(&self, pa: u64) -> Option<u64> {
        let off = pa.checked_sub(self.layout.img_base)?;
        if off + 8 > WINDOW || pa % 8 != 0 {
            return None;
        }
        let off = off as usize;
        Some(u64::from_le_bytes(
            self.window[off..off + 8].try_into().unwrap(),
        ))
    }
}

fn timeout() -> Duration {
    let secs = std::env::var("MMU_ORACLE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

static RUN_ID: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory for one boot, removed on drop unless `MMU_ORACLE_KEEP` is set.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, OracleError> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "mmu-oracle-{}-{}",
            std::process::id(),
            RUN_ID.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| OracleError::io("create a scratch dir", e))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("MMU_ORACLE_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tags(arch: Arch, pa: u64, len: u64) -> Vec<u8> {
    (0..len / 8)
        .flat_map(|i| layout::tag(arch, pa + i * 8).to_le_bytes())
        .collect()
}

fn put(win: &mut [u8], off: u64, value: u64) {
    let off = off as usize;
    win[off..off + 8].copy_from_slice(&value.to_le_bytes());
}

fn get(win: &[u8], off: u64) -> u64 {
    let off = off as usize;
    u64::from_le_bytes(win[off..off + 8].try_into().unwrap())
}

/// The VAs the harness itself uses, which probes may not target.
fn reserved_va(config: &Config, va: u64) -> bool {
    match *config {
        Config::X86_64 { la57: false, .. } => va >= 0xFFFF_FF80_0000_0000,
        Config::X86_64 { la57: true, .. } => va >= 0xFFFF_0000_0000_0000,
        Config::Aarch64 { .. } => va >> 48 == 0xFFFF,
        Config::Riscv64 { .. } => false,
        Config::LoongArch64 => matches!(va >> 60, 8 | 9),
    }
}

fn arch_words(config: &Config) -> [u64; 3] {
    match *config {
        Config::X86_64 {
            la57, smep, smap, ..
        } => [la57 as u64 | (smep as u64) << 1 | (smap as u64) << 2, 0, 0],
        Config::Aarch64 { mair } => [mair, 0, 0],
        Config::Riscv64 { mode, ad, pbmte } => {
            let ad = match ad {
                crate::RiscvAd::Default => 0,
                crate::RiscvAd::Hardware => 1,
                crate::RiscvAd::Fault => 2,
            };
            [mode as u64, ad, pbmte as u64]
        }
        Config::LoongArch64 => [0, 0, 0],
    }
}

fn qemu_args(config: &Config, ram: &Path, elf: &Path, layout: &Layout) -> Vec<String> {
    let size = format!("{}M", layout.ram_size >> 20);
    let mut args: Vec<String> = Vec::new();
    let mut push = |s: &str| args.push(s.to_string());
    match config {
        Config::X86_64 { .. } => {
            push("-machine");
            push("pc,memory-backend=ram");
            push("-cpu");
            push("max");
            push("-accel");
            push("tcg");
            push("-device");
            push("isa-debug-exit,iobase=0xf4,iosize=0x04");
        }
        Config::Aarch64 { .. } => {
            push("-machine");
            push("virt,memory-backend=ram");
            push("-cpu");
            push("cortex-a72");
        }
        Config::Riscv64 { pbmte, .. } => {
            push("-machine");
            push("virt,memory-backend=ram");
            push("-cpu");
            push(if *pbmte { "rv64,svpbmt=on" } else { "rv64" });
            push("-bios");
            push("none");
        }
        Config::LoongArch64 => {
            push("-machine");
            push("virt,memory-backend=ram");
            push("-cpu");
            push("la464");
        }
    }
    for a in [
        "-m",
        &size,
        "-object",
        &format!(
            "memory-backend-file,id=ram,size={size},mem-path={},share=on",
            ram.display()
        ),
        "-kernel",
        &elf.to_string_lossy(),
        "-display",
        "none",
        "-serial",
        "none",
        "-monitor",
        "none",
        "-nodefaults",
        "-no-reboot",
    ] {
        args.push(a.to_string());
    }
    args
}

fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

impl Image {
    /// Boots the guest of `config`'s architecture with the table rooted at `root` (a
    /// physical address inside the image) and runs `probes` in order, in one boot.
    ///
    /// The image itself is not modified: the guest runs on a copy. The guest does modify
    /// that copy (x86 installs its harness entry in root slot 511; hardware may set
    /// accessed/dirty bits); see [`RunReport::read_u64`].
    ///
    /// QEMU is killed (SIGKILL) after `$MMU_ORACLE_TIMEOUT_SECS` seconds (default 10).
    pub fn run(
        &self,
        config: &Config,
        root: u64,
        probes: &[Probe],
    ) -> Result<RunReport, OracleError> {
        self.run_with_timeout(config, root, probes, timeout())
    }

    /// [`run`](Self::run) with an explicit kill timeout.
    pub fn run_with_timeout(
        &self,
        config: &Config,
        root: u64,
        probes: &[Probe],
        limit: Duration,
    ) -> Result<RunReport, OracleError> {
        let arch = self.arch();
        let layout = self.layout();
        if let Config::X86_64 {
            accel: crate::X86Accel::Kvm(_),
            ..
        } = config
        {
            if arch != Arch::X86_64 {
                return Err(OracleError::Invalid(
                    "an x86_64 configuration for another image".into(),
                ));
            }
            if let Some(p) = probes.iter().find(|p| reserved_va(config, p.va)) {
                return Err(OracleError::Invalid(format!(
                    "probe `{p}` targets the harness's reserved address range"
                )));
            }
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            return crate::kvm::run(self, config, root, probes, limit);
            #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
            return Err(OracleError::Invalid("KVM needs a Linux x86_64 host".into()));
        }
        if config.arch() != arch {
            return Err(OracleError::Invalid(format!(
                "a {:?} configuration for a {:?} image",
                config.arch(),
                arch
            )));
        }
        if probes.len() > layout::MAX_PROBES {
            return Err(OracleError::Invalid(format!(
                "{} probes; one boot runs at most {}",
                probes.len(),
                layout::MAX_PROBES
            )));
        }
        if root % 0x1000 != 0 || root < layout.img_base || root >= layout.img_base + WINDOW {
            return Err(OracleError::Invalid(format!(
                "root {root:#x} is not a 4 KiB frame of the image"
            )));
        }
        if let Some(p) = probes.iter().find(|p| reserved_va(config, p.va)) {
            return Err(OracleError::Invalid(format!(
                "probe `{p}` targets the harness's reserved address range"
            )));
        }
        let qemu = tools::qemu(arch)?;
        let elf = tools::guest_elf(arch)?;

        // The window as the guest will see it.
        let mut win = self.window_bytes();
        let words = arch_words(config);
        put(&mut win, mailbox::MAGIC, mailbox::MAGIC_VALUE);
        put(&mut win, mailbox::ROOT, root);
        put(&mut win, mailbox::ARCH0, words[0]);
        put(&mut win, mailbox::NPROBES, probes.len() as u64);
        put(&mut win, mailbox::PROBES, layout.pa(layout::PROBES));
        put(&mut win, mailbox::RESULTS, layout.pa(layout::RESULTS));
        put(&mut win, mailbox::ARCH1, words[1]);
        put(&mut win, mailbox::ARCH2, words[2]);
        for off in [mailbox::DONE, mailbox::PROGRESS, mailbox::ERROR] {
            put(&mut win, off, 0);
        }
        put(&mut win, mailbox::PROGRESS, u64::MAX);
        for (i, p) in probes.iter().enumerate() {
            let off = layout::PROBES + i as u64 * layout::PROBE_SIZE;
            put(&mut win, off, p.va);
            put(&mut win, off + 8, p.flags());
            let rec = layout::RESULTS + i as u64 * RECORD_SIZE;
            put(&mut win, rec, status::NOT_RUN);
            for w in 1..8 {
                put(&mut win, rec + w * 8, 0);
            }
        }

        // The RAM file: sparse, with the window, the ends of the 1 GiB region and page 0.
        let scratch = Scratch::new()?;
        let ram_path = scratch.0.join("ram");
        let ram = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&ram_path)
            .map_err(|e| OracleError::io("create the RAM file", e))?;
        ram.set_len(layout.ram_size)
            .map_err(|e| OracleError::io("size the RAM file", e))?;
        let write = |pa: u64, bytes: &[u8]| {
            ram.write_all_at(bytes, pa - layout.ram_base)
                .map_err(|e| OracleError::io("write the RAM file", e))
        };
        // Physical page 0 (LoongArch only: on x86 it is the firmware's). QEMU clears low
        // RAM while it boots, so the page goes in through a loader device, applied at reset.
        let page0 = scratch.0.join("page0.bin");
        if arch == Arch::LoongArch64 {
            std::fs::write(&page0, decode::page0(config))
                .map_err(|e| OracleError::io("write page0.bin", e))?;
        }
        let huge = layout.huge_1g;
        let huge_ok = layout.huge_1g_backed();
        if huge_ok {
            write(huge, &tags(arch, huge, HUGE_TAGGED))?;
            let top = huge + (1 << 30) - HUGE_TAGGED;
            write(top, &tags(arch, top, HUGE_TAGGED))?;
        }
        write(layout.img_base, &win)?;
        drop(win);

        let out_path = scratch.0.join("qemu.out");
        let out = File::create(&out_path).map_err(|e| OracleError::io("create qemu.out", e))?;
        let err = out
            .try_clone()
            .map_err(|e| OracleError::io("clone qemu.out", e))?;
        let start = Instant::now();
        let mut child = Command::new(&qemu)
            .args(qemu_args(config, &ram_path, &elf, &layout))
            .args(if arch == Arch::LoongArch64 {
                vec![
                    "-device".to_string(),
                    format!("loader,file={},addr=0,force-raw=on", page0.display()),
                ]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| OracleError::io("start QEMU", e))?;
        let mut timed_out = false;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() > limit => {
                    // SIGKILL: a guest in an exception storm may ignore gentler signals.
                    let _ = child.kill();
                    let _ = child.wait();
                    timed_out = true;
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(3)),
                Err(e) => return Err(OracleError::io("wait for QEMU", e)),
            }
        }
        let elapsed = start.elapsed();

        let mut win = vec![0u8; WINDOW as usize];
        ram.read_exact_at(&mut win, layout.img_base - layout.ram_base)
            .map_err(|e| OracleError::io("read the RAM file", e))?;
        let code = get(&win, mailbox::ERROR);
        if code != 0 {
            return Err(OracleError::Guest { code });
        }
        if get(&win, mailbox::DONE) != mailbox::DONE_VALUE {
            let p = get(&win, mailbox::PROGRESS);
            return Err(OracleError::Incomplete {
                probe: (p != u64::MAX).then_some(p as usize),
                timed_out,
                output: tail(&out_path),
            });
        }

        let records: Vec<Record> = (0..probes.len())
            .map(|i| {
                let off = (layout::RESULTS + i as u64 * RECORD_SIZE) as usize;
                Record::parse(&win[off..off + RECORD_SIZE as usize])
            })
            .collect();
        let read_huge = |base: u64| {
            let mut buf = vec![0u8; HUGE_TAGGED as usize];
            ram.read_exact_at(&mut buf, base - layout.ram_base).ok()?;
            Some(buf)
        };
        Ok(finish(
            config, &layout, probes, records, win, &read_huge, elapsed,
        ))
    }
}

/// Turns the records of a finished run into outcomes: finds the physical word each load
/// or store touched (from the tag it read, or the marker a store left in `win` or in the
/// tagged ends of the 1 GiB region, which `read_huge` returns) and decodes each record.
pub(crate) fn finish(
    config: &Config,
    layout: &Layout,
    probes: &[Probe],
    records: Vec<Record>,
    win: Vec<u8>,
    read_huge: &dyn Fn(u64) -> Option<Vec<u8>>,
    elapsed: Duration,
) -> RunReport {
    let arch = config.arch();
    let huge = layout.huge_1g;
    let huge_ok = layout.huge_1g_backed();
    // The physical word each load or store touched, when the data says.
    let scan = |index: usize| -> Option<u64> {
        let m = layout::marker(arch, index as u64);
        let in_window = (0..WINDOW / 8)
            .map(|i| i * 8)
            .find(|&off| get(&win, off) == m)
            .map(|off| layout.img_base + off);
        in_window.or_else(|| {
            if !huge_ok {
                return None;
            }
            [huge, huge + (1 << 30) - HUGE_TAGGED]
                .into_iter()
                .find_map(|base| {
                    let buf = read_huge(base)?;
                    (0..HUGE_TAGGED / 8)
                        .find(|&i| get(&buf, i * 8) == m)
                        .map(|i| base + i * 8)
                })
        })
    };
    let mut word_pa: Vec<Option<u64>> = Vec::with_capacity(probes.len());
    let mut outcomes = Vec::with_capacity(probes.len());
    for (i, (p, r)) in probes.iter().zip(&records).enumerate() {
        let from_value = |v: u64, word_pa: &[Option<u64>]| match layout::untag(arch, v) {
            Word::Tag(pa) => Some(pa),
            Word::Marker(j) => word_pa.get(j as usize).copied().flatten(),
            // The LoongArch page-0 poison is at physical page 0.
            Word::Other if arch == Arch::LoongArch64 && v == decode::LA_PAGE0_WORD => {
                Some(p.va & 0xFF8)
            }
            Word::Other => None,
        };
        let wpa = if r.status != status::OK {
            None
        } else {
            match p.kind {
                crate::Access::Load => from_value(r.value, &word_pa),
                crate::Access::Store if r.pre_status == status::OK => {
                    from_value(r.pre_value, &word_pa)
                }
                // LoongArch reads the address back from the TLB.
                crate::Access::Store if arch == Arch::LoongArch64 && r.info[3] != u64::MAX => {
                    Some(r.info[3] & !7)
                }
                crate::Access::Store => scan(i),
                crate::Access::Exec => None,
            }
        };
        word_pa.push(wpa);
        outcomes.push(decode::outcome(config, p, r, wpa.map(|w| w | (p.va & 7))));
    }
    RunReport {
        outcomes,
        records,
        elapsed,
        layout: *layout,
        window: win,
    }
}
