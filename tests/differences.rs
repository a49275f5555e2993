//! Where a guest under compatrun sees something a native run does not, by design or by a
//! limit of a platform: each difference the README documents is shown here, next to the
//! native behaviour it departs from, so the documentation cannot drift.

mod common;

use common::{fixture, is_root, native, platform, run_cmd, skip, under_with};

/// In the guest's pid namespace, `reboot(LINUX_REBOOT_CMD_CAD_ON/CAD_OFF)` fails with
/// EINVAL (the kernel allows only restart, halt and power-off there, which end the
/// namespace), where a native root run succeeds; container runtimes show the same. With
/// `--pid-ns off` (ptrace platform) it succeeds as natively. The fixture asks for the
/// setting already in force, so nothing changes on the host.
#[test]
fn reboot_cad_is_einval_in_the_pid_namespace() {
    let test = "reboot_cad_is_einval_in_the_pid_namespace";
    if !is_root() {
        skip(
            test,
            "not root: reboot(2) needs CAP_SYS_BOOT and the pid namespace root",
        );
        return;
    }
    let bin = fixture("reboot_cad", &[]);
    let n = native(&[&bin]);
    assert_eq!(
        (n.status, n.out()),
        (0, "ok\n".to_owned()),
        "native: {}",
        n.err()
    );
    let g = run_cmd(under_with("rhel7", &["--pid-ns", "on"], &[&bin]), None);
    assert_eq!(
        (g.status, g.out()),
        (0, "EINVAL\n".to_owned()),
        "{}",
        g.err()
    );
    if platform() != "seccomp" {
        let flags = ["--pid-ns", "off", "--platform", "ptrace"];
        let g = run_cmd(under_with("rhel7", &flags, &[&bin]), None);
        assert_eq!((g.status, g.out()), (0, "ok\n".to_owned()), "{}", g.err());
    }
}

/// A timed `rt_sigtimedwait` while the process receives a signal it ignores: natively the
/// signal is discarded and the wait ends at its timeout (EAGAIN). Under the ptrace
/// platform the kernel must show the tracer every signal, so the wait is interrupted and
/// returns EINTR (as under strace or gdb); the seccomp platform traces nothing and
/// matches the native run.
#[test]
fn a_timed_sigtimedwait_is_interrupted_by_ignored_signals_only_under_ptrace() {
    let bin = fixture("sigtimedwait_ignored", &[]);
    let n = native(&[&bin]);
    assert_eq!(
        (n.status, n.out()),
        (0, "EAGAIN\n".to_owned()),
        "native: {}",
        n.err()
    );
    let suite = platform();
    for (which, want) in [("ptrace", "EINTR\n"), ("seccomp", "EAGAIN\n")] {
        if suite != "auto" && suite != which {
            continue; // the other suite run covers it
        }
        if which == "seccomp" && !is_root() {
            skip(
                "a_timed_sigtimedwait_is_interrupted_by_ignored_signals_only_under_ptrace",
                "not root: the seccomp platform needs a pid namespace",
            );
            continue;
        }
        let g = run_cmd(under_with("host", &["--platform", which], &[&bin]), None);
        assert_eq!(
            (g.status, g.out()),
            (0, want.to_owned()),
            "{which}: {}",
            g.err()
        );
    }
}
