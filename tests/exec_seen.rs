//! Exec seen by every platform: after each exec (from the first process, a vfork child,
//! a non-leader thread) a new program whose C library reads the vDSO note finds the
//! persona's version there.
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
    // Static, it stands for a program of a C library that reads the note.
    let note = fixture("vdso_note", &["-static"]);
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

/// Children killed (SIGKILL) around their exec are reaped by their parent, as natively:
/// under the seccomp platform a child killed while traced for its exec must be waited
/// for by compatrun, its tracer, or it stays a zombie its parent waits on for ever.
#[test]
fn a_child_killed_during_its_exec_is_reaped_by_its_parent() {
    let probe = fixture("exec_killed", &[]);
    let probe = probe.to_str().expect("utf-8 path");
    let n = native(&[probe, "500"]);
    assert_eq!(
        (n.status, n.out()),
        (0, "done 500\n".to_owned()),
        "natively"
    );
    let mut cmd = std::process::Command::new(common::compatrun_bin());
    cmd.args(["-k", "rhel6", "--"]).arg(probe).arg("500");
    // Far above what the run needs (about a second): reaching it is the failure.
    let g = common::run_cmd_within(cmd, None, std::time::Duration::from_secs(120));
    assert_eq!(
        (g.status, g.out()),
        (0, "done 500\n".to_owned()),
        "{}",
        g.err()
    );
}

/// The seccomp platform stops an exec only for a program whose C library reads the vDSO
/// note (and the guest's first, whose exit compatrun explains): the host's own current
/// programs exec unstopped under a legacy persona, and keep the host's note, which they
/// never read.
#[test]
fn seccomp_stops_only_the_execs_that_need_it() {
    let test = "seccomp_stops_only_the_execs_that_need_it";
    if !common::is_root() {
        skip(
            test,
            "the seccomp platform needs a pid namespace (run as root)",
        );
        return;
    }
    let loader = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap_or_default();
    if sentry::handlers::too_old::carries_check(&loader) {
        skip(
            test,
            "this host's own C library (before glibc 2.35) reads the note",
        );
        return;
    }
    let checking = fixture("vdso_note", &["-static"]);
    let plain = fixture("vdso_note", &[]);
    let native_plain = native(&[&plain]).out();
    let script = format!(
        "{} && {} && /bin/true",
        plain.to_str().expect("utf8"),
        checking.to_str().expect("utf8")
    );
    let mut cmd = std::process::Command::new(common::compatrun_bin());
    cmd.args([
        "--platform",
        "seccomp",
        "-k",
        "rhel6",
        "--log",
        "trace",
        "--",
    ])
    .args(["/bin/sh", "-c", &script]);
    let o = run_cmd(cmd, None);
    if o.err().contains("seccomp user notification") {
        skip(test, &format!("seccomp platform unavailable: {}", o.err()));
        return;
    }
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(o.out(), format!("{native_plain}{PERSONA_NOTE}"));
    let err = o.err();
    // Seized: the shell (the first process) and the checking program.
    assert_eq!(err.matches("exec (seized from").count(), 2, "{err}");
    // Not stopped: the plain program and /bin/true.
    assert_eq!(err.matches("exec not stopped").count(), 2, "{err}");
}

/// A guest that names a FIFO as the program to exec, or as a program's loader, cannot
/// stall compatrun, which looks at both files before the exec: the exec fails as it
/// does natively and the run goes on.
#[test]
fn an_exec_of_a_fifo_or_through_a_fifo_loader_fails_as_natively() {
    let dir = common::scratch_dir().join(format!("exec-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let fifo = dir.join("fifo");
    let loader = dir.join("loader");
    let prog = dir.join("prog");
    for f in [&fifo, &loader] {
        let status = std::process::Command::new("mkfifo")
            .arg(f)
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fifo)
        .status()
        .expect("chmod");
    assert!(status.success());
    // A program whose loader (PT_INTERP) is the second FIFO.
    let src = dir.join("prog.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write");
    let status = std::process::Command::new("cc")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .arg(format!("-Wl,--dynamic-linker={}", loader.display()))
        .status()
        .expect("cc");
    assert!(status.success());
    let script = format!(
        "{} 2>/dev/null; echo \"fifo $?\"; {} 2>/dev/null; echo \"loader $?\"",
        fifo.display(),
        prog.display()
    );
    let n = native(&["/bin/sh", "-c", &script]);
    for platform in ["seccomp", "ptrace"] {
        let mut cmd = std::process::Command::new(common::compatrun_bin());
        cmd.args(["--platform", platform, "-k", "rhel6", "--"])
            .args(["/bin/sh", "-c", &script]);
        // Far above what the run needs: reaching it is the failure.
        let o = common::run_cmd_within(cmd, None, std::time::Duration::from_secs(60));
        if platform == "seccomp" && o.err().contains("seccomp user notification") {
            continue;
        }
        assert_eq!((o.status, o.out()), (0, n.out()), "{platform}: {}", o.err());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
