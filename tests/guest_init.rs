//! The pid namespace's init (compatrun-init, pid 1 of the guest's namespace) cannot be
//! attached to, stopped or used by the guest, on every platform: compatrun is its tracer
//! (a process has one), it drops every capability but CAP_KILL, and it runs under an
//! allow-list filter once the guest runs. Every run here has a bound far above what it
//! needs; reaching it is the hang these tests guard against.

mod common;

use std::time::Duration;

use common::{fixture, is_root, run_cmd_within, scratch_dir, skip, under_cmd, Outcome};

/// Far above what any run here needs (well under a second on an idle machine).
const BOUND: Duration = Duration::from_secs(60);

/// These tests need the guest in a pid namespace, which compatrun makes as root.
fn needs_pid_ns(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(
        test,
        "not root: the guest gets no pid namespace, so there is no init",
    );
    false
}

fn run<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Outcome {
    run_cmd_within(under_cmd("rhel7", argv), None, BOUND)
}

/// What was found: a guest's `ptrace(PTRACE_ATTACH, 1)` from Python's ctypes succeeded,
/// the init stopped, and once the guest exited nothing reaped it. Now the attach (and a
/// seize) fail with EPERM and the run ends with the guest's status.
#[test]
fn ptrace_attach_to_init_from_python_fails_and_the_run_ends() {
    if !needs_pid_ns("ptrace_attach_to_init_from_python_fails_and_the_run_ends") {
        return;
    }
    let script = "import ctypes, os\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        for name, req in (('attach', 16), ('seize', 0x4206)):\n\
        \x20   r = libc.ptrace(req, 1, 0, 0)\n\
        \x20   print(name, r, os.strerror(ctypes.get_errno()) if r else 'ok', flush=True)\n\
        raise SystemExit(7)\n";
    let o = run(&["python3", "-c", script]);
    assert_eq!(
        (o.status, o.out()),
        (
            7,
            "attach -1 Operation not permitted\nseize -1 Operation not permitted\n".to_owned()
        ),
        "{}",
        o.err()
    );
}

/// `kill -STOP 1` from inside: the kernel shields an init from it, and so does compatrun
/// where it is the init's tracer. The init still reaps (the shell's child's status
/// arrives) and the run ends.
#[test]
fn stop_signals_to_init_leave_it_reaping() {
    if !needs_pid_ns("stop_signals_to_init_leave_it_reaping") {
        return;
    }
    let o = run(&[
        "sh",
        "-c",
        "kill -STOP 1; kill -TSTP 1; kill -TERM 1; kill -KILL 1; \
         sh -c 'exit 3' & wait $!; echo child=$?; \
         (sh -c 'sleep 0.1' &); exit 4",
    ]);
    assert_eq!(
        (o.status, o.out()),
        (4, "child=3\n".to_owned()),
        "{}",
        o.err()
    );
}

/// What the guest sees of its init: the filter (`Seccomp: 2`), no_new_privs, and only
/// CAP_KILL (bit 5) left.
#[test]
fn init_runs_filtered_with_only_cap_kill() {
    if !needs_pid_ns("init_runs_filtered_with_only_cap_kill") {
        return;
    }
    let o = run(&[
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/1/status",
    ]);
    assert_eq!(o.status, 0, "{}", o.err());
    let out = o.out();
    for want in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000020",
        "CapPrm:\t0000000000000020",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
}

/// A root guest may still write the init's memory (`/proc/1/mem`); the code it plants
/// there (a mkdir) is killed by the init's allow-list before it acts, which ends the
/// namespace, and the run ends. Without the filter the directory appears and the init
/// exits 0x55.
#[test]
fn code_planted_in_init_cannot_act() {
    if !needs_pid_ns("code_planted_in_init_cannot_act") {
        return;
    }
    let plant = fixture("init_plant", &[]);
    let dir = scratch_dir().join(format!("init-planted-{}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    let o = run(&[plant.as_os_str(), dir.as_os_str()]);
    assert!(
        o.out().starts_with("planted "),
        "the fixture could not plant its code (status {}): {}{}",
        o.status,
        o.out(),
        o.err()
    );
    assert!(
        !dir.exists(),
        "code planted in compatrun-init ran a mkdir (status {})",
        o.status
    );
    // The init is killed by its filter (seccomp: its status, SIGSYS, is the run's) or
    // the guest had already ended (ptrace: the guest's own status is the run's).
    assert!(
        [0, 128 + libc::SIGSYS].contains(&o.status),
        "status {}: {}",
        o.status,
        o.err()
    );
}
