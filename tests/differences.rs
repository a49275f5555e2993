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

/// How long a strict-mode run may take: far above what it needs (a hang is the failure).
const STRICT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

fn native_cmd<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> std::process::Command {
    let mut cmd = std::process::Command::new(argv[0].as_ref());
    cmd.args(&argv[1..]);
    cmd
}

fn strict_fixture() -> std::path::PathBuf {
    fixture("strict_mode", &["-pthread"])
}

/// Strict seccomp mode (`prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)`,
/// `seccomp(SECCOMP_SET_MODE_STRICT)`) is emulated: the kernel refuses the mode to a
/// thread with a filter, and every guest thread has compatrun's, so compatrun gives the
/// thread a filter that allows what strict mode allows and ends it with SIGKILL at any
/// other call. As natively: it enters, writes, and its getpid ends it, whether a child
/// (its parent sees SIGKILL), the process itself (status 137), a second thread (the main
/// one goes on) or the main thread (the other goes on); and a thread with a filter of its
/// own is refused with EINVAL. The same for an i386 build (through `int 0x80`). Under a
/// persona whose kernel
/// lacked seccomp(2) (before 3.17) that call is ENOSYS, prctl still works.
#[test]
fn strict_seccomp_mode_matches_native() {
    let bin = strict_fixture();
    let mut builds = vec![bin.clone()];
    if common::have_m32() {
        builds.push(fixture("strict_mode", &["-m32", "-pthread"]));
    } else {
        let test = "strict_seccomp_mode_matches_native";
        skip(
            test,
            "i386 part: no i386 build (gcc -m32) or i386 emulation here",
        );
    }
    for (bin, how) in builds
        .iter()
        .flat_map(|b| ["prctl", "seccomp"].map(|how| (b, how)))
    {
        for who in ["fork", "self", "thread", "leader", "filtered"] {
            let argv = [bin.as_os_str(), how.as_ref(), who.as_ref()];
            let n = common::run_cmd_within(native_cmd(&argv), None, STRICT_LIMIT);
            let want = match who {
                "fork" => (0, "entered; wrote; killed by 9\n"),
                "self" => (137, "entered; wrote; "),
                "thread" => (0, "entered; wrote; main goes on\n"),
                "filtered" => (0, "refused: Invalid argument\n"),
                _ => (0, "entered; wrote; other goes on\n"),
            };
            let want = (want.0, want.1.to_owned());
            let name = bin.display();
            assert_eq!(
                (n.status, n.out()),
                want,
                "native {name} {how} {who}: {}",
                n.err()
            );
            let g = common::run_cmd_within(common::under_cmd("host", &argv), None, STRICT_LIMIT);
            assert_eq!((g.status, g.out()), want, "{name} {how} {who}: {}", g.err());
        }
    }
    let argv = [bin.as_os_str(), "seccomp".as_ref()];
    let g = common::run_cmd_within(common::under_cmd("rhel6", &argv), None, STRICT_LIMIT);
    let want = (0, "refused: Function not implemented\n".to_owned());
    assert_eq!((g.status, g.out()), want, "{}", g.err());
    let argv = [bin.as_os_str(), "prctl".as_ref()];
    let g = common::run_cmd_within(common::under_cmd("rhel6", &argv), None, STRICT_LIMIT);
    let want = (0, "entered; wrote; killed by 9\n".to_owned());
    assert_eq!((g.status, g.out()), want, "{}", g.err());
}

/// What strict mode looks like from outside: natively `/proc/PID/status` says
/// `Seccomp: 1` (strict); under compatrun `Seccomp: 2` (a filter), the README's limit. A
/// thread without CAP_SYS_ADMIN gets no_new_privs so it may install the filter (natively
/// strict mode needs neither): another process sees `NoNewPrivs: 1` there, where the
/// thread itself, confined, can no longer look or exec.
#[test]
fn strict_seccomp_mode_shows_as_a_filter_in_proc() {
    let test = "strict_seccomp_mode_shows_as_a_filter_in_proc";
    let bin = strict_fixture();
    let argv = [bin.as_os_str(), "prctl".as_ref(), "status".as_ref()];
    let shown = |nnp: u8, mode: u8| {
        format!("entered; wrote; NoNewPrivs:\t{nnp}\nSeccomp:\t{mode}\nkilled by 9\n")
    };
    let n = common::run_cmd_within(native_cmd(&argv), None, STRICT_LIMIT);
    assert_eq!((n.status, n.out()), (0, shown(0, 1)), "native: {}", n.err());
    let g = common::run_cmd_within(common::under_cmd("host", &argv), None, STRICT_LIMIT);
    assert_eq!((g.status, g.out()), (0, shown(0, 2)), "{}", g.err());
    if !is_root() {
        skip(test, "not root: cannot run the fixture as another user");
        return;
    }
    // As nobody (no CAP_SYS_ADMIN, no no_new_privs): the fixture must be readable.
    let dir = common::scratch_dir().join(format!("strict-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let copy = dir.join("strict_mode");
    std::fs::copy(&bin, &copy).expect("copy the fixture");
    use std::os::unix::fs::PermissionsExt;
    for p in [&dir, &copy] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut nobody: Vec<std::ffi::OsString> = common::AS_NOBODY.iter().map(Into::into).collect();
    nobody.extend([copy.into_os_string(), "prctl".into(), "status".into()]);
    let n = common::run_cmd_within(native_cmd(&nobody), None, STRICT_LIMIT);
    let g = common::run_cmd_within(common::under_cmd("host", &nobody), None, STRICT_LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((n.status, n.out()), (0, shown(0, 1)), "native: {}", n.err());
    assert_eq!((g.status, g.out()), (0, shown(1, 2)), "{}", g.err());
}
