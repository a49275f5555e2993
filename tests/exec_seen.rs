//! Exec seen by every platform: after each exec (from the first process, a vfork child,
//! a non-leader thread) the new program finds the persona's version in its vDSO note.
//! Under the seccomp platform only the execing thread is traced, and only until its exec
//! is over: a failed exec leaves its caller untraced, and forks are never traced.

mod common;

use common::{fixture, native, run_cmd, skip};

const PERSONA_NOTE: &str = "vdso note 2.6.32\nclock ok\n";

fn expected(note: &str, traced: &str) -> String {
    format!(
        "failed exec: No such file or directory\n\
         after the failed exec: {traced}\n\
         forked child: {traced}\n\
         {note}vfork child: exited 0\n{note}"
    )
}

#[test]
fn every_exec_is_seen_and_only_the_execing_thread_is_traced() {
    let test = "every_exec_is_seen_and_only_the_execing_thread_is_traced";
    if !common::is_root() {
        skip(
            test,
            "the seccomp platform needs a pid namespace, and the probe attaches to its parent (run as root)",
        );
        return;
    }
    let probe = fixture("exec_seen", &["-pthread"]);
    let note = fixture("vdso_note", &[]);
    let native_note = native(&[&note]).out();
    let n = native(&[&probe, &note]);
    assert_eq!(
        (n.status, n.out()),
        (0, expected(&native_note, "untraced")),
        "natively: {}",
        n.err()
    );
    // ptrace traces everything (a guest cannot attach to anything); seccomp nothing
    // beyond an exec call in progress.
    for (platform, traced) in [("ptrace", "traced"), ("seccomp", "untraced")] {
        let mut cmd = std::process::Command::new(common::compatrun_bin());
        cmd.args(["--platform", platform, "-k", "rhel6", "--"])
            .arg(&probe)
            .arg(&note);
        let o = run_cmd(cmd, None);
        if platform == "seccomp" && o.err().contains("seccomp user notification") {
            skip(test, &format!("seccomp platform unavailable: {}", o.err()));
            continue;
        }
        assert_eq!(
            (o.status, o.out(), o.err()),
            (0, expected(PERSONA_NOTE, traced), String::new()),
            "{platform}"
        );
    }
}
