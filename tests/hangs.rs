//! Nothing a guest does leaves compatrun waiting forever. For each thing a guest can do
//! to its own processes (stop itself or others, ptrace games, never reap, ignore
//! SIGTERM, keep the terminal), compatrun ends when the rule in the README ("Limits")
//! says so and reports the status it says: it waits for every guest process; signals
//! sent to it (SIGCONT too) go to the first process while it lives; once that is gone,
//! SIGHUP, SIGINT, SIGQUIT or SIGTERM end compatrun and every guest process left.
//!
//! Every wait has a watchdog (kill and fail), never a timing assertion. The fixture is
//! tests/fixtures/hangs.c; the processes it leaves behind carry a unique marker in their
//! command lines, and each test asserts with `pgrep -f` that none survives.

mod common;

use std::process::Command;

use common::live::{proc_state, wait_for, Live, WAIT};
use common::{assert_none_left, fixture, pgrep, skip, under_cmd, unique_marker};

fn hangs() -> String {
    fixture("hangs", &[])
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// The fixture's first process, `hangs MODE MARK`, has exited (compatrun's own
/// command line, which names it too, does not count).
fn wait_first_gone(mode: &str, marker: &str) {
    let first = format!("{} {mode} {marker}", hangs());
    wait_for("the first process to exit", || {
        !pgrep(&first).iter().any(|(_, cmd)| cmd.starts_with(&first))
    });
}

/// The guest stops itself (SIGSTOP): like a native process, it stays stopped until
/// continued. SIGCONT sent to compatrun continues it; SIGTERM then SIGCONT (what `kill`
/// and shells send to a stopped job) ends it, status 143, as natively.
#[test]
fn a_guest_that_stops_itself_is_continued_or_ended_through_compatrun() {
    let bin = hangs();
    let run = |cmd: Command, term: bool| {
        let mut live = Live::spawn(cmd);
        live.expect_line("stopping");
        let pid = live.pid();
        // The stop is the guest's own; wait until some process of the run is stopped.
        wait_for("the guest to stop", || {
            common::pgrep(&format!("{bin} stopself"))
                .iter()
                .any(|(p, _)| proc_state(*p) == Some('T') || proc_state(*p) == Some('t'))
        });
        if term {
            common::live::signal(pid, libc::SIGTERM);
        }
        common::live::signal(pid, libc::SIGCONT);
        live.finish()
    };
    for term in [false, true] {
        let mut native = Command::new(&bin);
        native.arg("stopself");
        let (ns, nl, _) = run(native, term);
        let (gs, gl, err) = run(under_cmd("2.6", &[bin.as_str(), "stopself"]), term);
        assert_eq!((gs, &gl), (ns, &nl), "SIGTERM first: {term}; stderr: {err}");
        assert_eq!(ns, if term { 143 } else { 3 });
    }
}

/// The guest stops its child and exits, leaving the child stopped. compatrun waits for
/// it (every guest process is waited for); SIGTERM then ends compatrun (143) and the
/// stopped child with it.
#[test]
fn a_child_left_stopped_ends_with_compatrun_on_sigterm() {
    let marker = unique_marker("stopchild");
    let mut live = Live::spawn(under_cmd("2.6", &[hangs().as_str(), "stopchild", &marker]));
    live.expect_line("child stopped");
    wait_first_gone("stopchild", &marker);
    assert_eq!(
        pgrep(&format!("{marker} sleeper")).len(),
        1,
        "the stopped child is there"
    );
    live.signal(libc::SIGTERM);
    let (status, _, err) = live.finish();
    assert_eq!(status, 143, "{err}");
    assert_none_left(&marker);
}

/// ptrace inside the guest: a child that asks to be traced (PTRACE_TRACEME) and a
/// tracer that exits leaving its tracee in a ptrace stop. Under the seccomp platform
/// both behave as natively; under ptrace the guest cannot trace (EPERM, a documented
/// limit) and the run still ends with the guest's own status.
#[test]
fn ptrace_games_inside_the_guest_end() {
    let bin = hangs();
    for mode in ["traceme", "abandon"] {
        let n = common::native(&[bin.as_str(), mode]);
        assert_eq!(n.status, 0, "{mode} natively: {}", n.out());
        let g = common::under("2.6", &[bin.as_str(), mode]);
        if g.out()
            .starts_with("PTRACE_TRACEME: Operation not permitted")
        {
            // Only the ptrace platform refuses a guest's tracing.
            assert_ne!(common::platform(), "seccomp", "{mode}: {}", g.out());
            assert_eq!(g.status, if mode == "traceme" { 99 } else { 0 });
        } else {
            assert_eq!(
                (g.status, g.out()),
                (n.status, n.out()),
                "{mode}: {}",
                g.err()
            );
        }
    }
}

/// A guest process attaches to its sibling (PTRACE_ATTACH) and exits without
/// detaching; its parent exits too. The sibling is left running (natively too), so
/// compatrun waits for it; SIGTERM ends the run (143) with nothing left behind.
#[test]
fn a_guest_that_attaches_to_its_sibling_and_leaves_it() {
    let marker = unique_marker("attach");
    let mut live = Live::spawn(under_cmd("2.6", &[hangs().as_str(), "attach", &marker]));
    let line = live.next_line();
    assert!(
        line == "attached to the sibling" || line == "PTRACE_ATTACH: Operation not permitted",
        "{line}"
    );
    wait_first_gone("attach", &marker);
    live.signal(libc::SIGTERM);
    let (status, _, err) = live.finish();
    assert_eq!(status, 143, "{err}");
    assert_none_left(&marker);
}

/// A parent that never waits for its 200 children: they are reaped for it (by the
/// namespace's init, or compatrun as subreaper) and the run reports the parent's status.
#[test]
fn a_parent_that_never_reaps_its_children() {
    common::compare("2.6", &[hangs().as_str(), "noreap", "200"]);
}

/// The guest ignores SIGTERM: SIGTERM sent to compatrun reaches it and is ignored, as
/// natively; the guest goes on and its own status is reported.
#[test]
fn sigterm_ignored_by_the_guest_is_ignored() {
    let bin = hangs();
    let run = |cmd: Command| {
        let mut live = Live::spawn(cmd);
        live.expect_line("ready");
        live.signal(libc::SIGTERM);
        live.send("go on\n");
        live.finish()
    };
    let mut native = Command::new(&bin);
    native.arg("ignterm");
    let n = run(native);
    assert_eq!(
        (n.0, n.1.last().map(String::as_str)),
        (4, Some("still here"))
    );
    let (gs, gl, err) = run(under_cmd("2.6", &[bin.as_str(), "ignterm"]));
    assert_eq!((gs, gl), (n.0, n.1), "{err}");
}

/// A process that ignores SIGTERM is all that is left once the first process exited:
/// SIGTERM to compatrun ends compatrun (143) and that process with it.
#[test]
fn sigterm_ends_the_run_when_only_a_process_ignoring_it_is_left() {
    let marker = unique_marker("ignterm");
    let mut live = Live::spawn(under_cmd(
        "2.6",
        &[hangs().as_str(), "ignterm-orphan", &marker],
    ));
    live.expect_line("started");
    wait_first_gone("ignterm-orphan", &marker);
    assert_eq!(
        pgrep(&format!("{marker} sleeper")).len(),
        1,
        "the process ignoring SIGTERM is there"
    );
    live.signal(libc::SIGTERM);
    let (status, _, err) = live.finish();
    assert_eq!(status, 143, "{err}");
    assert_none_left(&marker);
}

/// In a terminal: a guest's child takes the terminal's foreground (its own process
/// group) and the first process exits. compatrun waits for the child; Ctrl-C, which the
/// terminal sends to the foreground group, ends it; compatrun then ends with the first
/// process's status (0) and the outer shell gets its terminal back.
#[test]
fn a_guest_holding_the_terminal_foreground() {
    let test = "a_guest_holding_the_terminal_foreground";
    if !common::have("python3") || !common::have("bash") {
        skip(
            test,
            "python3 and bash are needed to drive a pseudo-terminal",
        );
        return;
    }
    let steps = format!(
        r#"[["expect", "\\$ |# "],
 ["send", "PS1='PROMPT''> '; bind 'set enable-bracketed-paste off' 2>/dev/null\n"],
 ["expect", "PROMPT> "],
 ["send", "\"$CR\" -k 2.6 -- {bin} takefg; echo \"status=$?\"\n"],
 ["expect", "child has the terminal"],
 ["send", "\u0003"],
 ["expect", "status=0"],
 ["expect", "PROMPT> "],
 ["send", "exit 0\n"],
 ["wait_exit"]]"#,
        bin = hangs()
    );
    let file = common::scratch_dir().join(format!("{}.json", unique_marker("takefg")));
    std::fs::write(&file, steps).expect("write steps");
    let mut cmd = Command::new("python3");
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ptydrive.py"))
        .arg(&file)
        .args(["--", "bash", "--norc", "-i"])
        .env("CR", common::compatrun_bin())
        .env("TERM", "dumb")
        .env("HISTFILE", "")
        .env("PTYDRIVE_TIMEOUT", WAIT.as_secs().to_string())
        .env_remove("PS1")
        .env_remove("PROMPT_COMMAND");
    let out = common::run_cmd(cmd, None);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status, 0, "the pty driver broke: {}", out.err());
    let text = out.out();
    assert!(
        text.lines().last() == Some("PTYDRIVE EXIT 0"),
        "transcript:\n{text}"
    );
}
