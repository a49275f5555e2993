//! The measuring guest of `compatrun bench`: compatrun re-executes itself as
//! `compatrun bench-guest [--cpu C] OP N`, natively or under compatrun, so the bench
//! needs no compiler on the host. It times its own loop (so process and compatrun
//! start-up are not counted) and prints one line: `<nanoseconds for N calls> <check>`,
//! the check saying what the last call returned, so the bench can confirm it measured
//! what it meant to.
//!
//! Operations: `getpid`; `refused NR` (a raw call by number, answered ENOSYS by the
//! persona's filter); `uname`; `vsyscall` (`time()` through the legacy page); `spawn`
//! (fork, exec of `compatrun bench-guest exit`, wait); `exit`.

use std::ffi::OsString;
use std::time::Instant;

/// The first argument that selects this mode.
pub const MODE: &str = "bench-guest";

/// Runs the guest with the arguments after [`MODE`]; returns the process's exit status.
pub fn main(args: &[OsString]) -> u8 {
    match run(args) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("compatrun bench-guest: {e}");
            2
        }
    }
}

fn run(args: &[OsString]) -> Result<String, String> {
    let mut args: Vec<String> = args
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or("arguments must be UTF-8")
        })
        .collect::<Result<_, _>>()?;
    if args.first().map(String::as_str) == Some("--cpu") {
        let cpu: usize = args
            .get(1)
            .and_then(|c| c.parse().ok())
            .ok_or("--cpu takes a CPU number")?;
        pin(cpu)?;
        args.drain(..2);
    }
    let op = args
        .first()
        .ok_or("usage: bench-guest [--cpu C] OP [ARG] N")?;
    if op == "exit" {
        return Ok(String::new());
    }
    let count = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{op}: a positive count is needed"))
    };
    match op.as_str() {
        "getpid" => {
            let n = count(1)?;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(nix::unistd::getpid());
            }
            Ok(format!("{} ok", start.elapsed().as_nanos()))
        }
        "refused" => {
            let nr: i64 = args
                .get(1)
                .and_then(|n| n.parse().ok())
                .ok_or("refused: a call number is needed")?;
            let n = count(2)?;
            let mut last = 0;
            let start = Instant::now();
            for _ in 0..n {
                last = platform::sys::bench::raw_syscall0(std::hint::black_box(nr));
            }
            let elapsed = start.elapsed().as_nanos();
            let check = if last == -i64::from(libc::ENOSYS) {
                "ENOSYS".to_owned()
            } else {
                format!("returned-{last}")
            };
            Ok(format!("{elapsed} {check}"))
        }
        "uname" => {
            let n = count(1)?;
            let mut release = OsString::new();
            let start = Instant::now();
            for _ in 0..n {
                let u = nix::sys::utsname::uname().map_err(|e| format!("uname: {e}"))?;
                release = u.release().to_owned();
            }
            let elapsed = start.elapsed().as_nanos();
            Ok(format!("{elapsed} {}", release.to_string_lossy()))
        }
        "vsyscall" => {
            let n = count(1)?;
            let mut last = 0;
            let start = Instant::now();
            for _ in 0..n {
                last = platform::sys::bench::vsyscall_time();
            }
            let elapsed = start.elapsed().as_nanos();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let ok = u64::try_from(last).is_ok_and(|t| t.abs_diff(now) <= 2);
            Ok(format!(
                "{elapsed} {}",
                if ok { "ok" } else { "wrong-time" }
            ))
        }
        "spawn" => {
            let n = count(1)?;
            let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let start = Instant::now();
            for _ in 0..n {
                let status = std::process::Command::new(&me)
                    .args([MODE, "exit"])
                    .status()
                    .map_err(|e| format!("spawn: {e}"))?;
                if !status.success() {
                    return Err(format!("spawn: the child ended with {status}"));
                }
            }
            Ok(format!("{} ok", start.elapsed().as_nanos()))
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

/// Pins this process to `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default()
}
