//! The two platforms side by side: what only the seccomp platform allows (a debugger or
//! strace inside the guest), how `--platform auto` chooses and says why, and the clear
//! refusals (a second user-notification supervisor).
//!
//! The rest of the suite runs on whichever platform `COMPATRUN_PLATFORM` names
//! (`scripts/test.sh` runs it once per platform); these tests name their platforms.

mod common;

use common::{compatrun_bin, fixture, have, is_root, run_cmd, skip, Outcome};

fn compatrun(args: &[&str]) -> Outcome {
    let mut cmd = std::process::Command::new(compatrun_bin());
    cmd.args(args).env_remove("COMPATRUN_PLATFORM");
    run_cmd(cmd, None)
}

/// The line in which `--log info` names the platform and the reason.
fn platform_line(o: &Outcome) -> String {
    o.err()
        .lines()
        .find(|l| l.starts_with("compatrun: info: platform "))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn strace_and_gdb_work_inside_a_seccomp_guest() {
    let test = "strace_and_gdb_work_inside_a_seccomp_guest";
    if !is_root() {
        skip(
            test,
            "the seccomp platform needs a pid namespace (run as root)",
        );
        return;
    }
    if !have("strace") || !have("gdb") {
        skip(
            test,
            "strace or gdb is not installed (scripts/test-deps.sh installs them)",
        );
        return;
    }
    let trace = common::scratch_dir().join("platforms-strace.txt");
    let trace_s = trace.to_str().expect("utf8");
    // strace -f follows the shell's child; the emulated uname shows through strace.
    let o = compatrun(&[
        "--platform",
        "seccomp",
        "-k",
        "2.6",
        "--",
        "strace",
        "-f",
        "-o",
        trace_s,
        "sh",
        "-c",
        "uname -r; /bin/true",
    ]);
    assert_eq!(
        (o.status, o.out()),
        (0, "2.6.32\n".to_owned()),
        "{}",
        o.err()
    );
    let log = std::fs::read_to_string(&trace).expect("strace wrote its log");
    assert!(log.contains("execve(\"/bin/true\""), "{log}");
    assert!(log.contains("uname("), "{log}");
    assert!(log.contains("+++ exited with 0 +++"), "{log}");

    // gdb runs a program to its crash and prints the backtrace.
    let crash = fixture("crash", &["-g", "-O0"]);
    let o = compatrun(&[
        "--platform",
        "seccomp",
        "-k",
        "rhel7",
        "--",
        "gdb",
        "-q",
        "-nx",
        "-batch",
        "-ex",
        "run",
        "-ex",
        "bt",
        "--args",
        crash.to_str().expect("utf8"),
        "abort",
    ]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert!(o.out().contains("SIGABRT"), "{}", o.out());
    assert!(o.out().contains("in main ("), "{}", o.out());

    // Under ptrace the guest is traced already, so its own tracer is refused: the reason
    // the seccomp platform exists.
    let o = compatrun(&[
        "--platform",
        "ptrace",
        "--",
        "strace",
        "-o",
        "/dev/null",
        "/bin/true",
    ]);
    assert_ne!(o.status, 0, "strace under the ptrace platform: {}", o.err());
    assert!(o.err().contains("Operation not permitted"), "{}", o.err());
}

#[test]
fn auto_chooses_a_platform_and_says_why() {
    let test = "auto_chooses_a_platform_and_says_why";
    if !is_root() {
        skip(
            test,
            "the rules that lead to seccomp need a pid namespace (run as root)",
        );
        return;
    }
    let seccomp = compatrun(&["--log", "info", "-k", "2.6", "--", "true"]);
    assert_eq!(seccomp.status, 0, "{}", seccomp.err());
    assert!(
        platform_line(&seccomp).starts_with("compatrun: info: platform seccomp: "),
        "{}",
        seccomp.err()
    );
    let no_ns = compatrun(&["--log", "info", "--pid-ns", "off", "--", "true"]);
    assert!(
        platform_line(&no_ns).contains("platform ptrace: no pid namespace"),
        "{}",
        no_ns.err()
    );
    // A C library that checks the kernel version reads it from the vDSO, which both
    // platforms rewrite at exec: seccomp still, under a persona with a version too.
    let checks = fixture("checks_kernel", &[]);
    let checks = checks.to_str().expect("utf8");
    let old = compatrun(&["--log", "info", "-k", "rhel6", "--", checks]);
    assert_eq!((old.status, old.out()), (0, "ran\n".to_owned()));
    assert!(
        platform_line(&old).starts_with("compatrun: info: platform seccomp"),
        "{}",
        old.err()
    );
    let host = compatrun(&["--log", "info", "-k", "host", "--", checks]);
    assert!(
        platform_line(&host).starts_with("compatrun: info: platform seccomp"),
        "{}",
        host.err()
    );
    // COMPATRUN_PLATFORM sets the default; the option wins over it.
    let mut cmd = std::process::Command::new(compatrun_bin());
    cmd.args(["--log", "info", "--", "true"])
        .env("COMPATRUN_PLATFORM", "ptrace");
    let o = run_cmd(cmd, None);
    assert!(
        platform_line(&o).contains("platform ptrace: asked for"),
        "{}",
        o.err()
    );
    let mut cmd = std::process::Command::new(compatrun_bin());
    cmd.args(["--log", "info", "--platform", "seccomp", "--", "true"])
        .env("COMPATRUN_PLATFORM", "ptrace");
    let o = run_cmd(cmd, None);
    assert!(
        platform_line(&o).contains("platform seccomp: asked for"),
        "{}",
        o.err()
    );
}

#[test]
fn bad_platform_requests_get_clear_errors() {
    let o = compatrun(&["--platform", "bogus", "--", "true"]);
    assert_eq!(o.status, 125);
    assert!(
        o.err().contains("possible values: auto, ptrace, seccomp"),
        "{}",
        o.err()
    );
    // seccomp without a pid namespace could not end the guest with compatrun.
    let o = compatrun(&["--platform", "seccomp", "--pid-ns", "off", "--", "true"]);
    assert_eq!(o.status, 125);
    assert!(
        o.err().contains("needs the guest in its own pid namespace"),
        "{}",
        o.err()
    );
}

/// compatrun inside a guest whose persona predates seccomp filters (2.6.32 had none)
/// cannot catch anything: it says so and exits, it does not hang.
#[test]
fn compatrun_under_a_persona_without_seccomp_fails_cleanly() {
    if !is_root() {
        skip(
            "compatrun_under_a_persona_without_seccomp_fails_cleanly",
            "the outer seccomp platform needs a pid namespace (run as root)",
        );
        return;
    }
    let bin = compatrun_bin();
    let bin = bin.to_str().expect("utf8");
    for outer in ["seccomp", "ptrace"] {
        let o = compatrun(&[
            "--platform",
            outer,
            "-k",
            "2.6",
            "--",
            bin,
            "-k",
            "2.6",
            "--",
            "true",
        ]);
        assert_eq!(o.status, 125, "outer {outer}: {}", o.err());
    }
}

#[test]
fn a_second_notification_supervisor_is_refused_clearly_and_auto_avoids_it() {
    let test = "a_second_notification_supervisor_is_refused_clearly_and_auto_avoids_it";
    if !is_root() {
        skip(
            test,
            "the outer seccomp platform needs a pid namespace (run as root)",
        );
        return;
    }
    let bin = compatrun_bin();
    let bin = bin.to_str().expect("utf8");
    let inner = compatrun(&[
        "--platform",
        "seccomp",
        "--",
        bin,
        "--platform",
        "seccomp",
        "--",
        "true",
    ]);
    assert_eq!(inner.status, 125, "{}", inner.err());
    assert!(
        inner
            .err()
            .contains("another seccomp user-notification supervisor"),
        "{}",
        inner.err()
    );
    assert!(inner.err().contains("--platform ptrace"), "{}", inner.err());
    // (The outer persona is the host's: a 2.6 kernel had no seccomp filters at all.)
    let auto = compatrun(&[
        "--platform",
        "seccomp",
        "-k",
        "host",
        "--",
        bin,
        "--log",
        "info",
        "-k",
        "2.6",
        "--",
        "uname",
        "-r",
    ]);
    assert_eq!(
        (auto.status, auto.out()),
        (0, "2.6.32\n".to_owned()),
        "{}",
        auto.err()
    );
    assert!(
        platform_line(&auto).contains("platform ptrace: another seccomp"),
        "{}",
        auto.err()
    );
}

/// The supervisor is out of the guest's reach: in its pid namespace the guest sees only
/// the init (pid 1), which ignores what the guest sends it, and no compatrun process at
/// all. On both platforms.
#[test]
fn the_guest_cannot_see_or_signal_its_supervisor() {
    if !is_root() {
        skip(
            "the_guest_cannot_see_or_signal_its_supervisor",
            "the pid namespace needs CAP_SYS_ADMIN (run as root)",
        );
        return;
    }
    let script = "for s in KILL STOP TERM INT HUP; do kill -s $s 1 2>/dev/null; done; \
                  cat /proc/[0-9]*/comm | grep -cx compatrun; \
                  cat /proc/1/comm; echo still-here";
    for platform in ["ptrace", "seccomp"] {
        let o = compatrun(&[
            "--platform",
            platform,
            "-k",
            "2.6",
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(
            (o.status, o.out()),
            (0, "0\ncompatrun-init\nstill-here\n".to_owned()),
            "{platform}: {}",
            o.err()
        );
    }
}
