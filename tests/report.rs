//! `--report FILE.json`: counts checked exactly against a fixture that makes known calls a
//! known number of times, on the platform under test; the report is written when the
//! guest is killed and when compatrun is told to end; a bad path is refused before the
//! guest starts.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, run_cmd, scratch_dir, under_with};
use serde_json::Value;

/// A fresh report path for `test`.
fn report_path(test: &str) -> PathBuf {
    let p = scratch_dir().join(format!("report-{test}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Runs the report_calls fixture with `args` under `persona` with a report for `test`:
/// what it did, the fixture, the report's path.
fn run_fixture(test: &str, persona: &str, args: &[&str]) -> (common::Outcome, PathBuf, PathBuf) {
    let rc = fixture("report_calls", &[]);
    let path = report_path(test);
    let mut argv = vec![rc.to_str().expect("utf8")];
    argv.extend_from_slice(args);
    let flags = ["--report", path.to_str().expect("utf8")];
    let o = run_cmd(under_with(persona, &flags, &argv), None);
    (o, rc, path)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON: {e}\n{text}"))
}

/// The program entry whose path is `path`.
fn program<'a>(report: &'a Value, path: &Path) -> &'a Value {
    let path = std::fs::canonicalize(path).expect("canonical fixture path");
    report["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .find(|p| p["path"].as_str() == path.to_str())
        .unwrap_or_else(|| panic!("no program {} in {report:#}", path.display()))
}

/// The counts of call `name` in a program entry: (count, emulated, refused, passed_on).
fn call(program: &Value, name: &str) -> (u64, u64, u64, u64) {
    let c = program["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no call {name} in {program:#}"));
    let n = |k: &str| c[k].as_u64().expect("a count");
    (n("count"), n("emulated"), n("refused"), n("passed_on"))
}

fn errors(program: &Value, name: &str) -> Value {
    program["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["errors"].clone())
        .unwrap_or(Value::Null)
}

/// The fixture's own calls, as the 2.6 persona answers them: uname N times plus 3 in a
/// forked child plus one with a bad pointer; membarrier M times; _sysctl once.
fn assert_fixture_counts(report: &Value, rc: &Path, n: u64, m: u64) {
    let p = program(report, rc);
    assert_eq!(p["processes"], 2, "the fixture and its forked child: {p:#}");
    assert_eq!(call(p, "uname"), (n + 4, n + 4, 0, 0), "{p:#}");
    assert_eq!(errors(p, "uname"), serde_json::json!({"EFAULT": 1}));
    assert_eq!(call(p, "membarrier"), (m, 0, m, 0), "{p:#}");
    assert_eq!(call(p, "_sysctl"), (1, 1, 0, 0), "{p:#}");
    assert!(p["handler_errors"].as_u64() >= Some(1), "{p:#}");
}

#[test]
fn counts_known_calls_exactly() {
    let (o, rc, path) = run_fixture("counts", "2.6", &["7", "5"]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(o.out(), "uname=2.6.32 membarrier=ENOSYS sysctl=2.6.32\n");
    let r = read_report(&path);
    assert_eq!(r["schema"], "compatrun-report/1");
    assert_eq!(r["persona"]["name"], "2.6");
    assert_eq!(r["persona"]["kernel"], "2.6.32");
    let platform = r["platform"]["name"].as_str().expect("platform name");
    if common::platform() != "auto" {
        assert_eq!(platform, common::platform());
    }
    assert!(!r["platform"]["reason"].as_str().unwrap_or("").is_empty());
    assert_eq!(r["outcome"]["exit_code"], 0);
    assert!(r["wall_time_s"].as_f64().is_some_and(|t| t > 0.0));
    assert_fixture_counts(&r, &rc, 7, 5);
    // The totals are the sums over the programs.
    let sum = |k: &str| -> u64 {
        r["programs"]
            .as_array()
            .expect("programs")
            .iter()
            .flat_map(|p| p["calls"].as_array().cloned().unwrap_or_default())
            .map(|c| c[k].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(r["totals"]["caught"].as_u64(), Some(sum("count")));
    assert_eq!(r["totals"]["refused"].as_u64(), Some(sum("refused")));
    // No temporary file is left beside the report.
    let dir = path.parent().expect("dir");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("read scratch dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .filter(|e| e.file_name().to_string_lossy().contains("report-counts"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn host_persona_catches_nothing() {
    let (o, _, path) = run_fixture("host", "host", &["3", "2"]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert!(o.out().contains("membarrier=ok"), "{}", o.out());
    let r = read_report(&path);
    assert_eq!(r["totals"]["caught"], 0, "{r:#}");
    // ptrace sees the exec (the program is listed, with no calls); seccomp sees nothing.
    for p in r["programs"].as_array().expect("programs") {
        assert_eq!(p["calls"], serde_json::json!([]), "{r:#}");
    }
}

#[test]
fn a_killed_guest_still_gets_its_report() {
    let (o, rc, path) = run_fixture("killed", "2.6", &["2", "3", "kill"]);
    assert_eq!(o.status, 137, "{}", o.err());
    let r = read_report(&path);
    assert_eq!(r["outcome"]["exit_code"], 137);
    assert_fixture_counts(&r, &rc, 2, 3);
}

/// Starts `cmd` (with SIGTERM at its default action, whatever the harness inherited),
/// waits for "ready" on its stdout, sends it SIGTERM, returns its status (128+N for a
/// signal).
/// Every process below `pid` (its children, theirs, ...), zombies included.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            let kids = std::fs::read_to_string(path).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// Runs `inner` (whose guest says "ready" on stdout) and sends compatrun SIGTERM once
/// the guest is ready and, when `first_gone`, no process named `sh` (the guest's first
/// process) is left below compatrun; returns compatrun's status.
fn terminate_when_ready(inner: Command, first_gone: bool) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = Command::new("env");
    cmd.arg("--default-signal=TERM")
        .arg(inner.get_program())
        .args(inner.get_args());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn compatrun");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line == "ready" {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(common::TIMEOUT).is_err() {
        let _ = child.kill();
        panic!("the guest never said ready");
    }
    let pid = i32::try_from(child.id()).expect("pid");
    let start = Instant::now();
    while first_gone
        && descendants(pid).into_iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sh")
        })
    {
        if start.elapsed() > common::TIMEOUT {
            let _ = child.kill();
            panic!("the guest's first process did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM compatrun");
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
        }
        if start.elapsed() > common::TIMEOUT {
            let _ = child.kill();
            panic!("compatrun did not end after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigterm_to_compatrun_still_writes_the_report() {
    let rc = fixture("report_calls", &[]);
    let path = report_path("sigterm");
    let cmd = under_with(
        "2.6",
        &["--report", path.to_str().expect("utf8")],
        &[rc.to_str().expect("utf8"), "4", "1", "wait"],
    );
    let status = terminate_when_ready(cmd, false);
    assert_eq!(status, 143, "the guest ends by the SIGTERM passed on");
    let r = read_report(&path);
    assert_eq!(r["outcome"]["exit_code"], 143);
    assert_fixture_counts(&r, &rc, 4, 1);
}

#[test]
fn sigterm_after_the_first_process_ended_still_writes_the_report() {
    if !common::is_root() {
        common::skip(
            "sigterm_after_the_first_process_ended_still_writes_the_report",
            "ending what the guest left needs its own pid namespace (root)",
        );
        return;
    }
    let rc = fixture("report_calls", &[]);
    let path = report_path("leftover");
    // The first process exits at once; the fixture it left in the background waits.
    let script = format!("{} 2 1 wait & exit 0", rc.display());
    let cmd = under_with(
        "2.6",
        &["--report", path.to_str().expect("utf8")],
        &["/bin/sh", "-c", &script],
    );
    let status = terminate_when_ready(cmd, true);
    assert_eq!(status, 143, "compatrun ends by the SIGTERM it was sent");
    let r = read_report(&path);
    assert_eq!(r["outcome"]["exit_code"], 143, "{r:#}");
    assert_fixture_counts(&r, &rc, 2, 1);
}

#[test]
fn a_bad_report_path_is_refused_before_the_guest_starts() {
    let marker = scratch_dir().join(format!("report-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    for bad in ["/nonexistent-dir/r.json", "/proc/version", "/"] {
        let o = run_cmd(
            under_with(
                "2.6",
                &["--report", bad],
                &["/usr/bin/touch", marker.to_str().expect("utf8")],
            ),
            None,
        );
        assert_eq!(o.status, 125, "{bad}: {}", o.err());
        assert!(o.err().contains("--report"), "{bad}: {}", o.err());
        assert!(!marker.exists(), "{bad}: the guest ran");
    }
}
