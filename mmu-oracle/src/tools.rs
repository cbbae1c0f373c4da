//! External tools: QEMU and the assemblers that build the guests, and the skip/require
//! policy of the tests.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::layout::Layout;
use crate::{Arch, OracleError};

/// The command that installs every tool the oracle needs.
pub const INSTALL_HINT: &str = "sudo sh mmu-oracle/install-deps.sh";

const X86_SRC: &str = include_str!("../guests/x86_64.S");
const AARCH64_SRC: &str = include_str!("../guests/aarch64.S");
const RISCV64_SRC: &str = include_str!("../guests/riscv64.S");
const LOONGARCH64_SRC: &str = include_str!("../guests/loongarch64.S");

/// Whether missing tools are failures (`CI=true`, or `MMU_ORACLE=require`) rather than
/// skips.
pub fn tools_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("MMU_ORACLE").is_ok_and(|v| v == "require")
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn missing(tool: &str) -> OracleError {
    OracleError::ToolMissing {
        tool: tool.to_string(),
        install: INSTALL_HINT.to_string(),
    }
}

/// The QEMU binary for `arch`: `$MMU_ORACLE_QEMU_<ARCH>` (e.g. `MMU_ORACLE_QEMU_LOONGARCH64`)
/// or `qemu-system-<arch>` on `PATH`. LoongArch needs QEMU 8 or newer.
pub fn qemu(arch: Arch) -> Result<PathBuf, OracleError> {
    let var = format!("MMU_ORACLE_QEMU_{}", arch.name().to_uppercase());
    let name = std::env::var(&var).unwrap_or_else(|_| format!("qemu-system-{}", arch.name()));
    let path = which(&name).ok_or_else(|| missing(&name))?;
    if arch == Arch::LoongArch64 {
        let major = qemu_major(&path);
        if major.is_some_and(|m| m < 8) {
            return Err(OracleError::ToolMissing {
                tool: format!("{name} >= 8 (found {})", major.unwrap_or(0)),
                install: INSTALL_HINT.to_string(),
            });
        }
    }
    Ok(path)
}

fn qemu_major(path: &Path) -> Option<u32> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?;
    v.split('.').next()?.trim().parse().ok()
}

/// One step of a guest build: program and arguments (`{src}`, `{obj}`, `{elf}` and
/// `{text}` are substituted).
struct Step {
    program: &'static str,
    args: &'static [&'static str],
}

fn recipe(arch: Arch) -> (&'static str, [Step; 2]) {
    match arch {
        Arch::X86_64 => (
            X86_SRC,
            [
                Step {
                    program: "as",
                    args: &["--32", "-o", "{obj}", "{src}"],
                },
                Step {
                    program: "ld",
                    args: &[
                        "-m",
                        "elf_i386",
                        "-N",
                        "-Ttext={text}",
                        "-e",
                        "_start",
                        "--no-warn-rwx-segments",
                        "-o",
                        "{elf}",
                        "{obj}",
                    ],
                },
            ],
        ),
        Arch::Aarch64 => (
            AARCH64_SRC,
            [
                Step {
                    program: "aarch64-linux-gnu-as",
                    args: &["-o", "{obj}", "{src}"],
                },
                Step {
                    program: "aarch64-linux-gnu-ld",
                    args: &[
                        "-N",
                        "-Ttext={text}",
                        "-e",
                        "_start",
                        "--no-warn-rwx-segments",
                        "-o",
                        "{elf}",
                        "{obj}",
                    ],
                },
            ],
        ),
        Arch::Riscv64 => (
            RISCV64_SRC,
            [
                Step {
                    program: "riscv64-linux-gnu-as",
                    args: &[
                        "-march=rv64imac_zicsr_zifencei",
                        "-mabi=lp64",
                        "-mno-relax",
                        "-o",
                        "{obj}",
                        "{src}",
                    ],
                },
                Step {
                    program: "riscv64-linux-gnu-ld",
                    args: &[
                        "-N",
                        "-Ttext={text}",
                        "-e",
                        "_start",
                        "--no-relax",
                        "--no-warn-rwx-segments",
                        "-o",
                        "{elf}",
                        "{obj}",
                    ],
                },
            ],
        ),
        Arch::LoongArch64 => (
            LOONGARCH64_SRC,
            [
                Step {
                    program: "llvm-mc-19",
                    args: &[
                        "--triple=loongarch64",
                        "-mattr=+d",
                        "--filetype=obj",
                        "-o",
                        "{obj}",
                        "{src}",
                    ],
                },
                Step {
                    program: "ld.lld-19",
                    args: &[
                        "-N",
                        "-Ttext={text}",
                        "-e",
                        "_start",
                        "-o",
                        "{elf}",
                        "{obj}",
                    ],
                },
            ],
        ),
    }
}

/// Where built guests are cached: `$MMU_ORACLE_CACHE`, else `mmu-oracle-guests` next to
/// the `deps` directory of the running test (inside cargo's target directory).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MMU_ORACLE_CACHE") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().ok();
    let profile_dir = exe.as_deref().and_then(Path::parent).and_then(|d| {
        if d.ends_with("deps") {
            d.parent()
        } else {
            Some(d)
        }
    });
    match profile_dir {
        Some(d) => d.join("mmu-oracle-guests"),
        None => std::env::temp_dir().join("mmu-oracle-guests"),
    }
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The guest ELF of `arch`, assembled from the source in `guests/` on first use and
/// cached by a hash of the source and the build commands.
pub fn guest_elf(arch: Arch) -> Result<PathBuf, OracleError> {
    let (src, steps) = recipe(arch);
    for step in &steps {
        which(step.program).ok_or_else(|| missing(step.program))?;
    }
    let text = format!("{:#x}", Layout::of(arch).text_base);
    let mut h = DefaultHasher::new();
    src.hash(&mut h);
    text.hash(&mut h);
    for step in &steps {
        step.program.hash(&mut h);
        step.args.hash(&mut h);
    }
    let dir = cache_dir();
    let elf = dir.join(format!("{}-{:016x}.elf", arch.name(), h.finish()));
    if elf.is_file() {
        return Ok(elf);
    }
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if elf.is_file() {
        return Ok(elf);
    }
    std::fs::create_dir_all(&dir).map_err(|e| OracleError::io("create the guest cache", e))?;
    // Build under a name unique to this process, then rename: test processes may race.
    let stem = format!("{}-{}", arch.name(), std::process::id());
    let src_path = dir.join(format!("{stem}.S"));
    let obj = dir.join(format!("{stem}.o"));
    let tmp_elf = dir.join(format!("{stem}.elf.tmp"));
    std::fs::write(&src_path, src).map_err(|e| OracleError::io("write the guest source", e))?;
    for step in &steps {
        let args: Vec<String> = step
            .args
            .iter()
            .map(|a| {
                a.replace("{src}", &src_path.to_string_lossy())
                    .replace("{obj}", &obj.to_string_lossy())
                    .replace("{elf}", &tmp_elf.to_string_lossy())
                    .replace("{text}", &text)
            })
            .collect();
        let out = Command::new(step.program)
            .args(&args)
            .output()
            .map_err(|e| OracleError::io(step.program, e))?;
        if !out.status.success() {
            return Err(OracleError::GuestBuild {
                command: format!("{} {}", step.program, args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    std::fs::rename(&tmp_elf, &elf).map_err(|e| OracleError::io("store the guest", e))?;
    let _ = std::fs::remove_file(&src_path);
    let _ = std::fs::remove_file(&obj);
    Ok(elf)
}

/// Checks that QEMU and the guest toolchain for `arch` are present (building the guest).
pub fn check(arch: Arch) -> Result<(), OracleError> {
    qemu(arch)?;
    guest_elf(arch)?;
    Ok(())
}

/// What a test does when the tools for `arch` are missing: prints
/// `skipped: <tool> not found; install with <command>` and returns `false` (the test then
/// returns early and passes), or panics when [`tools_required`]. Returns `true` when the
/// oracle can run.
///
/// # Panics
///
/// If a tool is missing and [`tools_required`], or if building the guest failed.
pub fn available(arch: Arch) -> bool {
    match check(arch) {
        Ok(()) => true,
        Err(OracleError::ToolMissing { tool, install }) => {
            let msg = format!("{tool} not found; install with {install}");
            if tools_required() {
                panic!("{msg} (a missing tool is an error when CI=true)");
            }
            // Written past the test harness's capture so that the skip is visible.
            let _ = writeln!(std::io::stderr().lock(), "skipped: {msg}");
            false
        }
        Err(e) => panic!("mmu-oracle cannot build its {} guest: {e}", arch.name()),
    }
}
