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

/// Strict seccomp mode (`prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)`,
/// `seccomp(SECCOMP_SET_MODE_STRICT)`): natively the thread enters it, may write, and
/// is killed at its next other call. The kernel refuses strict mode to a thread that
/// already has a filter, and every guest thread has compatrun's: both platforms answer
/// EINVAL (a README limit; the program sees a refused sandbox, never a missing one).
/// Under a persona whose kernel lacked seccomp(2) (before 3.17) that call is ENOSYS.
#[test]
fn strict_seccomp_mode_is_refused_with_einval() {
    let bin = fixture("strict_mode", &[]);
    let entered = "entered; wrote; killed by 9\n";
    for how in ["prctl", "seccomp"] {
        let n = native(&[bin.as_os_str(), how.as_ref()]);
        assert_eq!(
            (n.status, n.out()),
            (0, entered.to_owned()),
            "native {how}: {}",
            n.err()
        );
        let g = run_cmd(
            common::under_cmd("host", &[bin.as_os_str(), how.as_ref()]),
            None,
        );
        assert_eq!(
            (g.status, g.out()),
            (0, "refused: Invalid argument\n".to_owned()),
            "{how}: {}",
            g.err()
        );
    }
    let g = run_cmd(
        common::under_cmd("rhel6", &[bin.as_os_str(), "seccomp".as_ref()]),
        None,
    );
    assert_eq!(
        (g.status, g.out()),
        (0, "refused: Function not implemented\n".to_owned()),
        "{}",
        g.err()
    );
}
