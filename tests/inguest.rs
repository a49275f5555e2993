//! The in-guest answer for emulated calls: a C library's `uname` wrapper that the
//! supervisor has answered once is patched to call a stub in the trampoline page, and
//! later calls (other threads, a forked child, a bad buffer, a new UTS namespace) are
//! answered in the guest, with the same answer as the supervisor's. Checked through a
//! real guest on the platform under test: the answers against the persona and native,
//! and the run report's count of caught `uname` calls (one per run where the wrapper is
//! patched, every call with `--no-patch`).

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, native, run_cmd, scratch_dir, skip, under_with};
use serde_json::Value;

/// Calls per loop of the fixture (main thread, each of 4 threads, the forked child).
const N: u64 = 300;

/// The 2.6 persona's `uname -r` and `uname -v`.
const RELEASE: &str = "2.6.32";
const VERSION: &str = "#1 SMP Thu Dec 3 12:00:00 UTC 2009";

fn report_path(test: &str) -> PathBuf {
    let p = scratch_dir().join(format!("inguest-{test}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Runs the fixture (`N`, `mode`) under the 2.6 persona with `flags`, a report and
/// `--log info`: what it did and the report.
fn run(test: &str, flags: &[&str], mode: &[&str]) -> (common::Outcome, Value) {
    let prog = fixture("uname_inguest", &["-pthread"]);
    let path = report_path(test);
    let mut all = vec!["--log", "info", "--report", path.to_str().expect("utf8")];
    all.extend_from_slice(flags);
    let n = N.to_string();
    let mut argv = vec![prog.to_str().expect("utf8"), n.as_str()];
    argv.extend_from_slice(mode);
    let o = run_cmd(under_with("2.6", &all, &argv), None);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}\n{}", path.display(), o.err()));
    let report = serde_json::from_str(&text).expect("the report is JSON");
    let _ = std::fs::remove_file(&path);
    (o, report)
}

/// The program entry for `prog` in `report`.
fn program<'a>(report: &'a Value, prog: &Path) -> &'a Value {
    let prog = std::fs::canonicalize(prog).expect("canonical path");
    report["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .find(|p| p["path"].as_str() == prog.to_str())
        .unwrap_or_else(|| panic!("no program {} in {report:#}", prog.display()))
}

/// How many `uname` calls reached compatrun for `prog`.
fn caught_unames(report: &Value, prog: &Path) -> u64 {
    program(report, prog)["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["name"] == "uname" && c["abi"] == "x86_64")
        .map_or(0, |c| c["count"].as_u64().expect("a count"))
}

/// What the fixture prints under the 2.6 persona: the persona's release and version,
/// the host's sysname and machine (as natively).
fn expected_line() -> String {
    let host = native(&["uname", "-s", "-m"]).out();
    let mut f = host.split_whitespace();
    let (sysname, machine) = (f.next().expect("sysname"), f.next().expect("machine"));
    format!("release={RELEASE} version={VERSION} sysname={sysname} machine={machine} efault=ok")
}

#[test]
fn a_patched_wrapper_answers_every_later_call_in_the_guest() {
    let prog = fixture("uname_inguest", &["-pthread"]);
    let (o, r) = run("patched", &[], &[]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(o.out().trim_end(), expected_line(), "{}", o.err());
    // The first call reached compatrun; the 5 threads' 5N calls, the forked child's N
    // and the bad pointer's were answered by the patched wrapper.
    assert_eq!(caught_unames(&r, &prog), 1, "{r:#}");
    assert_eq!(r["totals"]["sites_patched"], 1, "{r:#}");
    assert!(
        o.err()
            .contains("in-guest answers: 1 uname call sites patched"),
        "{}",
        o.err()
    );
}

#[test]
fn with_no_patch_every_call_is_answered_by_compatrun_as_before() {
    let prog = fixture("uname_inguest", &["-pthread"]);
    let (o, r) = run("nopatch", &["--no-patch"], &[]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(o.out().trim_end(), expected_line(), "{}", o.err());
    assert_eq!(caught_unames(&r, &prog), 1 + 6 * N + 1, "{r:#}");
    assert_eq!(r["totals"]["sites_patched"], 0, "{r:#}");
    assert!(!o.err().contains("in-guest answers"), "{}", o.err());
}

#[test]
fn first_calls_racing_in_five_threads_all_get_the_persona() {
    let prog = fixture("uname_inguest", &["-pthread"]);
    for _ in 0..3 {
        let (o, r) = run("race", &[], &["race"]);
        assert_eq!(o.status, 0, "{}", o.err());
        assert_eq!(o.out().trim_end(), expected_line(), "{}", o.err());
        // The reference call (a raw syscall, never patched) and the first call of each
        // of the 5 threads at most; never the thousands that follow.
        let caught = caught_unames(&r, &prog);
        assert!((2..=6).contains(&caught), "{caught} caught: {r:#}");
        assert_eq!(r["totals"]["sites_patched"], 1, "{r:#}");
    }
}

#[test]
fn a_new_uts_namespaces_host_name_shows_through_the_patched_wrapper() {
    if !platform::sys::has_cap_sys_admin() {
        skip(
            "a_new_uts_namespaces_host_name_shows_through_the_patched_wrapper",
            "unshare(CLONE_NEWUTS) in the guest needs root",
        );
        return;
    }
    let prog = fixture("uname_inguest", &["-pthread"]);
    let (o, r) = run("uts", &[], &["uts"]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(
        o.out().trim_end(),
        format!("{} nodename=inguest-uts", expected_line()),
        "{}",
        o.err()
    );
    assert_eq!(caught_unames(&r, &prog), 1, "{r:#}");
}

#[test]
fn the_old_trees_own_c_library_is_patched_too() {
    let test = "the_old_trees_own_c_library_is_patched_too";
    let Some(root) = std::env::var_os("COMPATRUN_OLD_ROOTFS") else {
        skip(
            test,
            "COMPATRUN_OLD_ROOTFS is not set (an old distribution's root filesystem)",
        );
        return;
    };
    if !platform::sys::has_cap_sys_admin() {
        skip(test, "a --rootfs run as this user needs root here");
        return;
    }
    let root = PathBuf::from(root);
    if !root.join("usr/bin/perl").exists() {
        skip(test, &format!("{} has no usr/bin/perl", root.display()));
        return;
    }
    let path = report_path("oldtree");
    let flags = [
        "--rootfs",
        root.to_str().expect("utf8"),
        "--report",
        path.to_str().expect("utf8"),
    ];
    let script = "my @u; for (1..2000) { @u = POSIX::uname() } print \"$u[2] $u[3]\\n\"";
    let o = run_cmd(
        under_with("2.6", &flags, &["/usr/bin/perl", "-MPOSIX", "-e", script]),
        None,
    );
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(o.out().trim_end(), format!("{RELEASE} {VERSION}"));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("report")).expect("JSON");
    let _ = std::fs::remove_file(&path);
    let perl = r["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .find(|p| p["path"] == "/usr/bin/perl")
        .unwrap_or_else(|| panic!("no perl in {r:#}"));
    let unames: u64 = perl["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c["name"] == "uname")
        .map(|c| c["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(unames, 1, "{r:#}");
    assert_eq!(r["totals"]["sites_patched"], 1, "{r:#}");
}
