//! Load: many threads making emulated calls at once, a storm of short processes, a deep
//! process tree, a flood of signals during emulated calls, and Debian's stress-ng (a
//! named subset of its os class) for a bounded time. Each runs natively and under
//! compatrun; the output and every exit status must match, nothing may hang (a
//! watchdog kills and fails), and the supervisor's peak memory (VmHWM of compatrun's
//! /proc/PID/status, read while the guest waits before exiting) is printed with the
//! wall times, never asserted on. CI uses modest sizes; `COMPATRUN_LOAD_FULL=1` runs
//! the sizes docs/PERFORMANCE.md reports (1,000 threads, 5,000 processes, ...).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::live::Live;
use common::{fixture, skip, under_cmd};

fn full() -> bool {
    std::env::var_os("COMPATRUN_LOAD_FULL").is_some()
}

/// Peak resident memory of `pid` in kB.
fn vm_hwm(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `load -w ARGS` natively and under the 2.6 persona; asserts the same output and
/// status; prints both wall times and compatrun's peak memory.
fn compare_load(args: &[&str]) {
    let bin = fixture("load", &["-pthread"]);
    let bin = bin.to_str().expect("utf-8");
    let mut argv = vec![bin, "-w"];
    argv.extend_from_slice(args);
    let run = |cmd: Command| {
        let start = Instant::now();
        let mut live = Live::spawn(cmd);
        let mut lines = Vec::new();
        loop {
            let l = live.next_line();
            if l == "done" {
                break;
            }
            lines.push(l);
        }
        let elapsed = start.elapsed();
        let hwm = vm_hwm(live.pid());
        live.send("exit\n");
        let (status, _, err) = live.finish_within(Duration::from_secs(300));
        (status, lines, err, elapsed, hwm)
    };
    let mut native = Command::new(argv[0]);
    native.args(&argv[1..]);
    let n = run(native);
    assert_eq!(n.0, 0, "{args:?} natively: {:?} {}", n.1, n.2);
    let g = run(under_cmd("2.6", &argv));
    assert_eq!((g.0, &g.1), (n.0, &n.1), "{args:?}: {}", g.2);
    eprintln!(
        "LOAD {args:?} platform {}: native {:.3} s, compatrun {:.3} s ({:.2}x), \
         supervisor VmHWM {} kB",
        common::platform(),
        n.3.as_secs_f64(),
        g.3.as_secs_f64(),
        g.3.as_secs_f64() / n.3.as_secs_f64().max(1e-9),
        g.4
    );
}

/// Many threads, started together, each making emulated calls (uname).
#[test]
fn many_threads_making_emulated_calls_at_once() {
    let threads = if full() { "1000" } else { "200" };
    compare_load(&["threads", threads, "10"]);
}

/// A storm of short processes, each exit status checked by its parent.
#[test]
fn a_storm_of_short_processes_loses_no_status() {
    compare_load(&["storm", if full() { "5000" } else { "500" }]);
}

/// A chain of processes, each the child of the one before; the deepest one's status
/// comes back up.
#[test]
fn a_deep_process_tree() {
    compare_load(&["deep", if full() { "300" } else { "100" }]);
}

/// A child floods its parent with SIGUSR1 while the parent makes emulated calls.
#[test]
fn a_flood_of_signals_during_emulated_calls() {
    compare_load(&["sigflood", if full() { "200000" } else { "20000" }]);
}

/// A system call writing its result into a read-only buffer fails with EFAULT, as
/// natively (stress-ng's `get` stressor checks this; the seccomp platform once wrote
/// through the page protection).
#[test]
fn an_emulated_call_into_a_read_only_buffer_faults() {
    let bin = fixture("load", &["-pthread"]);
    let (n, _) = common::compare("2.6", &[bin.to_str().expect("utf-8"), "rouname", "0"]);
    assert_eq!(n.out(), "uname into a read-only page: -1 Bad address\n");
}

/// Debian's stress-ng, a named subset of its os class, for a bounded time under the
/// rhel7 persona (a modern stress-ng needs calls that 2.6 lacks): it must succeed as
/// it does natively.
#[test]
fn stress_ng_os_subset() {
    if !common::have("stress-ng") {
        skip(
            "stress_ng_os_subset",
            "stress-ng is not installed (scripts/test-deps.sh installs it)",
        );
        return;
    }
    let secs = if full() { "20" } else { "3" };
    let argv = [
        "stress-ng",
        "--fork",
        "2",
        "--clone",
        "2",
        "--pthread",
        "2",
        "--sigq",
        "2",
        "--get",
        "2",
        "--kill",
        "2",
        "--wait",
        "2",
        "--timeout",
        secs,
        "--metrics-brief",
    ];
    let n = common::native(&argv);
    assert_eq!(n.status, 0, "natively: {}", n.err());
    let start = Instant::now();
    let mut cmd = common::under_with("rhel7", &[], &argv);
    cmd.env("COMPATRUN_LOG", "warn");
    let g = common::run_cmd(cmd, None);
    assert_eq!(g.status, 0, "under compatrun: {}", g.err());
    eprintln!(
        "LOAD stress-ng platform {}: {:.1} s, {}",
        common::platform(),
        start.elapsed().as_secs_f64(),
        g.err()
            .lines()
            .filter(|l| l.contains("successful run"))
            .collect::<String>()
    );
}
