//! Per-call costs, native and under compatrun on both platforms (ptrace, seccomp) with
//! personas `host` and `2.6`.
//!
//! A small C guest (`benches/guest/bench_guest.c`, built here with `cc -O2` into the
//! target directory) runs one operation N times and prints the nanoseconds the loop took,
//! measured inside the guest with `CLOCK_MONOTONIC`. Each criterion sample spawns
//! `bench_guest OP N` natively or `compatrun --platform X --kernel-persona P --
//! bench_guest OP N` and reports the guest's own figure, so process and compatrun
//! start-up are not counted.
//!
//! Groups (criterion ids `OP/MODE`, modes `native`, `ptrace-host`, `seccomp-2.6`...):
//! - `getpid`: never caught by any persona (a call the filter lets through).
//! - `uname`: emulated by the supervisor under `2.6` (a ptrace seccomp stop, or a
//!   notification); native under `host`.
//! - `open-close`: `openat` + `close` of an ordinary file.
//! - `fork-wait`, `fork-exec-wait` (of `/bin/true`): under ptrace every new process is
//!   auto-attached by the tracer, so these pay tracer round trips even when nothing is
//!   caught; under seccomp nothing is traced.
//! - `getrandom`: refused with ENOSYS by the `2.6` filter itself (no stop).
//! - `uname-placement`: the emulated `uname` under `2.6`, per platform, with compatrun and
//!   guest pinned to one CPU (`same-cpu`), to two different CPUs (`cross-cpu`), and left
//!   to the scheduler (`unpinned`).
//!
//! Run: `cargo bench --bench syscalls` (about 3 minutes). At the end, every benchmark is
//! run again in interleaved rounds (native, then each compatrun mode, native, ...), so a
//! burst of load elsewhere on a shared machine hits all modes alike, and a markdown table
//! of the medians and their ratios to native is printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{record, Mode, MODES, PLATFORMS};
use criterion::Criterion;

/// The operations of the guest, in the order they are benchmarked.
const OPS: [&str; 6] = [
    "getpid",
    "uname",
    "open-close",
    "fork-wait",
    "fork-exec-wait",
    "getrandom",
];

/// Rounds of the interleaved summary, and the length of one run in it.
const ROUNDS: usize = 7;
const ROUND_TARGET: Duration = Duration::from_millis(100);

const PLACEMENT: &str = "uname-placement";

const GUEST_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/guest/bench_guest.c");

/// Everything a benchmark needs to run the guest.
struct Setup {
    guest: PathBuf,
    /// The ordinary file `open-close` opens.
    file: PathBuf,
    /// Whether compatrun runs guests on this machine.
    compatrun: bool,
    /// Two CPUs this process may use, for the placement benchmarks.
    cpus: Option<(usize, usize)>,
}

/// Compiles the guest with `cc -O2` into the target directory (atomically: several
/// benchmark runs may share one target directory).
fn build_guest() -> PathBuf {
    let dir = common::target_dir().join("bench-guest");
    std::fs::create_dir_all(&dir).expect("create target/bench-guest");
    let out = dir.join("bench_guest");
    let tmp = dir.join(format!("bench_guest.{}.tmp", std::process::id()));
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status = Command::new(&cc)
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(GUEST_SOURCE)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc:?} to build the benchmark guest: {e}"));
    assert!(status.success(), "building {GUEST_SOURCE} failed: {status}");
    std::fs::rename(&tmp, &out).expect("move the benchmark guest into place");
    out
}

/// The first two CPUs in this process's affinity mask.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET only reads `set`; every index is below CPU_SETSIZE.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Runs the guest once and returns its loop time and its check word.
fn run_guest(
    mode: Mode,
    prefix: &[String],
    setup: &Setup,
    op: &str,
    iters: u64,
) -> (Duration, String) {
    let iters_s = iters.to_string();
    let guest = setup.guest.as_os_str();
    let argv = [guest, op.as_ref(), iters_s.as_ref(), setup.file.as_os_str()];
    let out = mode
        .command_with_prefix(prefix, &argv)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start the guest ({mode:?}): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "guest {op} {iters} ({mode:?}, prefix {prefix:?}) failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut words = stdout.split_whitespace();
    let ns: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("the guest printed no time: {stdout:?}"));
    let check = words.next().unwrap_or("").to_string();
    (Duration::from_nanos(ns), check)
}

/// Confirms each mode measures what it claims: `uname` is emulated only under `2.6`,
/// `getrandom` is refused only under `2.6`, and every operation runs. Not a timing check.
fn check_guest(setup: &Setup) {
    let host_release = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for mode in modes(setup) {
        let emulated = mode.persona() == Some("2.6");
        for op in OPS {
            let (_, check) = run_guest(mode, &[], setup, op, 1);
            let expected = match op {
                "uname" if emulated => "2.6.32",
                "uname" => host_release.as_str(),
                "getrandom" if emulated => "ENOSYS",
                _ => "ok",
            };
            assert_eq!(
                check, expected,
                "guest {op} under {mode:?} did not do what this benchmark measures"
            );
        }
    }
}

fn modes(setup: &Setup) -> Vec<Mode> {
    MODES
        .into_iter()
        .filter(|m| setup.compatrun || *m == Mode::Native)
        .collect()
}

fn bench_ops(c: &mut Criterion, setup: &Setup) {
    for op in OPS {
        let mut group = c.benchmark_group(op);
        for mode in modes(setup) {
            let id = mode.id();
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let (d, _) = run_guest(mode, &[], setup, op, iters);
                    record(op, &id, d, iters);
                    d
                });
            });
        }
        group.finish();
    }
}

/// The placements: (id, what runs compatrun, what runs the guest under compatrun).
fn placements(a: usize, b: usize) -> [(&'static str, Vec<String>, Vec<String>); 3] {
    let taskset = |cpu: usize| vec!["taskset".to_string(), "-c".to_string(), cpu.to_string()];
    [
        ("same-cpu", taskset(a), vec![]),
        ("cross-cpu", taskset(a), taskset(b)),
        ("unpinned", vec![], vec![]),
    ]
}

/// The emulated `uname` with the tracer and the guest on the same CPU, on different
/// CPUs, and wherever the scheduler puts them.
fn bench_placement(c: &mut Criterion, setup: &Setup) {
    if !setup.compatrun {
        return;
    }
    let Some((a, b)) = setup.cpus else {
        eprintln!("fewer than two CPUs available: {PLACEMENT} is SKIPPED");
        return;
    };
    let mut group = c.benchmark_group(PLACEMENT);
    for platform in PLATFORMS {
        for (place, outer, inner) in placements(a, b) {
            let id = format!("{platform}-{place}");
            group.bench_function(&id, |bencher| {
                bencher.iter_custom(|iters| {
                    let d = placed_uname(platform, &outer, &inner, setup, iters);
                    record(PLACEMENT, &id, d, iters);
                    d
                });
            });
        }
    }
    group.finish();
}

/// `uname` N times under `2.6` on `platform`, compatrun started by `outer`, the guest
/// by `inner`.
fn placed_uname(
    platform: &'static str,
    outer: &[String],
    inner: &[String],
    setup: &Setup,
    iters: u64,
) -> Duration {
    let mode = Mode::Compatrun(platform, "2.6");
    if inner.is_empty() {
        run_guest(mode, outer, setup, "uname", iters).0
    } else {
        run_pinned_guest(mode, outer, inner, setup, iters)
    }
}

/// `OUTER compatrun -k 2.6 -- INNER guest uname N`: INNER (taskset) moves the guest to
/// another CPU after compatrun has started it.
fn run_pinned_guest(
    mode: Mode,
    outer: &[String],
    inner: &[String],
    setup: &Setup,
    iters: u64,
) -> Duration {
    let mut guest: Vec<String> = inner.to_vec();
    guest.push(setup.guest.to_string_lossy().into_owned());
    guest.extend(["uname".to_string(), iters.to_string()]);
    let out = mode
        .command_with_prefix(outer, &guest)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start the pinned guest: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pinned guest failed: {}", out.status);
    let ns = stdout
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("the guest printed no time: {stdout:?}"));
    Duration::from_nanos(ns)
}

/// Runs everything criterion just ran again in interleaved rounds and prints the ratios.
fn summary(setup: &Setup) {
    let seen = common::groups_seen();
    let mut cases = Vec::new();
    for op in OPS.into_iter().filter(|op| seen.iter().any(|g| g == op)) {
        for mode in modes(setup) {
            cases.push(common::Case {
                group: op,
                id: mode.id(),
                run: Box::new(move |n| run_guest(mode, &[], setup, op, n).0),
            });
        }
    }
    let columns: Vec<String> = modes(setup).into_iter().map(Mode::id).collect();
    let note = format!(
        "Median time per call over {ROUNDS} interleaved rounds (each round runs every \
         mode once, each run about {} ms of calls), ratio to the first column.",
        ROUND_TARGET.as_millis()
    );
    let table = common::interleaved_rounds(&cases, ROUNDS, ROUND_TARGET);
    common::print_table(
        "syscalls: per call, native vs compatrun",
        &note,
        &columns,
        &table,
    );

    if let (true, Some((a, b))) = (seen.iter().any(|g| g == PLACEMENT), setup.cpus) {
        let mut cases: Vec<common::Case<'_>> = Vec::new();
        let mut columns = Vec::new();
        for platform in PLATFORMS {
            for (place, outer, inner) in placements(a, b) {
                let id = format!("{platform}-{place}");
                columns.push(id.clone());
                cases.push(common::Case {
                    group: PLACEMENT,
                    id,
                    run: Box::new(move |n| placed_uname(platform, &outer, &inner, setup, n)),
                });
            }
        }
        let table = common::interleaved_rounds(&cases, ROUNDS, ROUND_TARGET);
        common::print_table(
            "emulated uname (2.6) by CPU placement",
            &note,
            &columns,
            &table,
        );
    }
}

fn ordinary_file(dir: &Path) -> PathBuf {
    let file = dir.join("ordinary-file.txt");
    std::fs::write(&file, b"an ordinary file for open-close\n").expect("write the file to open");
    file
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .configure_from_args();
    let scratch = common::scratch_dir("syscalls");
    let setup = Setup {
        guest: build_guest(),
        file: ordinary_file(&scratch),
        compatrun: common::compatrun_works(),
        cpus: two_cpus(),
    };
    check_guest(&setup);
    bench_ops(&mut c, &setup);
    bench_placement(&mut c, &setup);
    c.final_summary();
    if common::measuring() {
        summary(&setup);
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
