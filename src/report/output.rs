//! The report file: its JSON shape (docs/REPORT.md is the schema's documentation), the
//! check made before the guest starts, and the atomic write at the end.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::Arch;
use serde::Serialize;

use super::{CallCounts, Counting, ProgramCounts};

/// The schema's name and version, written as `"schema"`.
pub const SCHEMA: &str = "compatrun-report/1";

/// Where the report goes, checked before the guest starts.
#[derive(Debug)]
pub struct ReportFile {
    path: PathBuf,
}

impl ReportFile {
    /// Checks that a report can be written at `path`: its directory exists and takes a
    /// new file there (one is made and removed), and `path` is not a directory.
    pub fn prepare(path: &Path) -> anyhow::Result<Self> {
        let name = path
            .file_name()
            .with_context(|| format!("--report {}: not a file name", path.display()))?;
        if path.is_dir() {
            anyhow::bail!("--report {}: is a directory", path.display());
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let probe = temp_path(&dir, name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .with_context(|| {
                format!(
                    "--report {}: cannot create a file in {}",
                    path.display(),
                    dir.display()
                )
            })?;
        let _ = std::fs::remove_file(&probe);
        Ok(ReportFile {
            path: path.to_path_buf(),
        })
    }

    /// Writes `report` atomically: a temporary file beside the target, synced, then
    /// renamed over it.
    pub fn write(&self, report: &Report) -> anyhow::Result<()> {
        let name = self.path.file_name().unwrap_or(OsStr::new("report"));
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = temp_path(&dir, name);
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            serde_json::to_writer_pretty(&mut f, report)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.with_context(|| format!("cannot write the report {}", self.path.display()))
    }
}

fn temp_path(dir: &Path, name: &OsStr) -> PathBuf {
    let mut tmp = OsStr::new(".").to_os_string();
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    dir.join(tmp)
}

/// The whole report (see docs/REPORT.md).
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// compatrun's version.
    pub compatrun_version: &'static str,
    /// The guest's command line.
    pub command: Vec<String>,
    /// The persona.
    pub persona: PersonaInfo,
    /// The platform and why it was chosen (absent if the run failed before the choice).
    pub platform: Option<PlatformInfo>,
    /// Whether refused calls were counted (always true: they are caught for the report).
    pub refused_calls_counted: bool,
    /// When the run started (seconds since the epoch).
    pub started_unix: f64,
    /// Wall time from the start of compatrun's work to the guest's end, in seconds.
    pub wall_time_s: f64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Sums over every program.
    pub totals: Totals,
    /// Per program, in the order first seen.
    pub programs: Vec<ProgramReport>,
}

/// The persona part.
#[derive(Debug, Serialize)]
pub struct PersonaInfo {
    /// Its name (or file).
    pub name: String,
    /// Its description.
    pub description: String,
    /// The kernel version whose system-call table applies (none for `host`).
    pub kernel: Option<String>,
}

/// The platform part.
#[derive(Debug, Serialize)]
pub struct PlatformInfo {
    /// `ptrace` or `seccomp`.
    pub name: &'static str,
    /// Why it was chosen.
    pub reason: String,
}

/// How the run ended.
#[derive(Debug, Default, Serialize)]
pub struct RunOutcome {
    /// compatrun's exit status: the guest's first process's, 128+N if a signal N
    /// killed it, 125/126/127 for compatrun's own failures.
    pub exit_code: i32,
    /// Whether compatrun was told to end (SIGTERM, SIGINT, SIGHUP, SIGQUIT) after the
    /// first process was gone, and ended what was left: the signal's number.
    pub ended_by_signal: Option<i32>,
    /// compatrun's own error, if it failed (exit 125, 126, 127).
    pub error: Option<String>,
}

/// Sums over every program.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Calls caught.
    pub caught: u64,
    /// Answered by a handler.
    pub emulated: u64,
    /// Answered ENOSYS (or another errno) because the persona's kernel lacked them.
    pub refused: u64,
    /// Caught, then run natively.
    pub passed_on: u64,
    /// Handler answers that were errors.
    pub handler_errors: u64,
    /// vsyscall-page calls emulated.
    pub vsyscall_emulated: u64,
    /// Call sites patched.
    pub sites_patched: u64,
    /// Processes seen.
    pub processes: u64,
}

/// One program.
#[derive(Debug, Serialize)]
pub struct ProgramReport {
    /// Its executable (`/proc/PID/exe`).
    pub path: String,
    /// Processes seen running it.
    pub processes: u64,
    /// Caught calls, most frequent first.
    pub calls: Vec<CallReport>,
    /// vsyscall-page calls emulated, per entry.
    pub vsyscall: Vec<VsyscallReport>,
    /// SIGSEGVs on the vsyscall page delivered to the guest (not an entry call).
    pub vsyscall_faults_delivered: u64,
    /// Call sites patched in its processes.
    pub sites_patched: u64,
    /// Handler answers that were errors (sum over `calls[].errors`).
    pub handler_errors: u64,
}

/// One system call in one program.
#[derive(Debug, Serialize)]
pub struct CallReport {
    /// The name strace gives it (from the `syscalls` crate), or `syscall_N`.
    pub name: String,
    /// `x86_64`, `x32` or `i386`.
    pub abi: &'static str,
    /// Its number in that ABI (x32 without the x32 bit).
    pub nr: u32,
    /// Times caught.
    pub count: u64,
    /// Answered by a handler.
    pub emulated: u64,
    /// Refused as the persona's kernel did.
    pub refused: u64,
    /// Run natively.
    pub passed_on: u64,
    /// Handler answers that were errors, by errno name.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// One vsyscall entry in one program.
#[derive(Debug, Serialize)]
pub struct VsyscallReport {
    /// The call the entry stands for (`gettimeofday`, `time`, `getcpu`).
    pub entry: String,
    /// Its address, as hex.
    pub address: String,
    /// Calls emulated.
    pub count: u64,
}

/// The strace name of `nr` on `arch`.
pub fn syscall_name(arch: Arch, nr: u32) -> String {
    let name = match arch {
        Arch::X86_64 => syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name()),
        // x32 shares x86_64's names below 512; 512 and up are its own variants.
        Arch::X32 if nr < 512 => syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name()),
        Arch::X32 => None,
        Arch::I386 => syscalls::x86::Sysno::new(nr as usize).map(|s| s.name()),
    };
    name.map_or_else(|| format!("syscall_{nr}"), str::to_owned)
}

fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        format!("errno_{errno}")
    } else {
        format!("{e:?}")
    }
}

fn call_report(arch: Arch, nr: u32, c: &CallCounts) -> CallReport {
    CallReport {
        name: syscall_name(arch, nr),
        abi: arch.name(),
        nr,
        count: c.count,
        emulated: c.emulated,
        refused: c.refused,
        passed_on: c.passed_on,
        errors: c.errors.iter().map(|(&e, &n)| (errno_name(e), n)).collect(),
    }
}

fn program_report(path: &OsStr, p: &ProgramCounts) -> ProgramReport {
    let mut calls: Vec<CallReport> = p
        .calls
        .iter()
        .map(|(&(arch, nr), c)| call_report(arch, nr, c))
        .collect();
    calls.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    let vsyscall = p
        .vsyscall
        .iter()
        .map(|(&addr, &count)| VsyscallReport {
            entry: sentry::handlers::vsyscall::ENTRIES
                .iter()
                .find(|(_, a)| *a == addr)
                .map_or("(not an entry)", |(n, _)| n)
                .to_owned(),
            address: format!("{addr:#x}"),
            count,
        })
        .collect();
    ProgramReport {
        path: path.to_string_lossy().into_owned(),
        processes: p.processes,
        handler_errors: calls.iter().flat_map(|c| c.errors.values()).sum(),
        calls,
        vsyscall,
        vsyscall_faults_delivered: p.vsyscall_delivered,
        sites_patched: p.sites_patched,
    }
}

/// The per-program part and its totals, from what `counting` saw.
pub fn programs(counting: &Counting) -> (Vec<ProgramReport>, Totals) {
    let programs: Vec<ProgramReport> = counting
        .programs()
        .into_iter()
        .map(|(path, p)| program_report(path, p))
        .collect();
    let mut t = Totals::default();
    for p in &programs {
        t.processes += p.processes;
        t.handler_errors += p.handler_errors;
        t.sites_patched += p.sites_patched;
        t.vsyscall_emulated += p.vsyscall.iter().map(|v| v.count).sum::<u64>();
        for c in &p.calls {
            t.caught += c.count;
            t.emulated += c.emulated;
            t.refused += c.refused;
            t.passed_on += c.passed_on;
        }
    }
    (programs, t)
}
