//! The process machinery under compatrun: threads, forks, vfork, execve chains (also
//! from non-leader threads), clone3, orphans, signals from outside and forwarded by
//! compatrun, and what happens when the supervisor itself dies. C fixtures live in
//! tests/fixtures/. No test leaves a process behind: guests that could outlive compatrun
//! carry a unique marker in their command lines, and the test asserts with `pgrep -f`
//! that none survives.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::live::{proc_state, signal, Live, WAIT};
use common::{assert_none_left, compare, fixture, native, run_cmd, skip, under, under_cmd};

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `sleep` under a name containing `marker` (a symlink in the scratch directory), so
/// the sleeping processes can be found with `pgrep -f marker`.
struct MarkedSleep {
    link: PathBuf,
}

impl MarkedSleep {
    fn new(marker: &str) -> Self {
        let sleep = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("sleep"))
                    .find(|f| f.is_file())
            })
            .expect("sleep is on PATH");
        let link = common::scratch_dir().join(format!("sleep-{marker}"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sleep, &link).expect("symlink sleep");
        MarkedSleep { link }
    }
    fn path(&self) -> &str {
        path_str(&self.link)
    }
}

impl Drop for MarkedSleep {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

fn wait_state(pid: i32, states: &str) {
    let start = Instant::now();
    while !proc_state(pid).is_some_and(|s| states.contains(s)) {
        assert!(
            start.elapsed() < WAIT,
            "process {pid} never reached state {states:?} (now {:?})",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `pid` is no longer stopped (or is gone: it may finish right away).
fn wait_not_stopped(pid: i32) {
    let start = Instant::now();
    while proc_state(pid).is_some_and(|s| s == 'T' || s == 't') {
        assert!(start.elapsed() < WAIT, "process {pid} stays stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ticks(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("tick {i}"))
        .chain(std::iter::once("done".to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Threads, forks, execs

#[test]
fn fifty_pthreads_work_and_join() {
    let bin = fixture("threads50", &["-pthread"]);
    for persona in ["host", "2.6"] {
        let (n, _) = compare(persona, &[&bin]);
        assert_eq!(
            (n.status, n.out()),
            (0, "threads joined: 50\nsum: 4999995000405\n".to_string())
        );
    }
}

#[test]
fn two_hundred_forked_children_are_reaped() {
    let bin = fixture("fork200", &[]);
    for persona in ["host", "2.6"] {
        let (n, _) = compare(persona, &[&bin]);
        assert_eq!(
            (n.status, n.out()),
            (
                0,
                "started: 200\nreaped: 200\nexit code sum: 4900\n".to_string()
            )
        );
    }
}

#[test]
fn vfork_then_execve() {
    let bin = fixture("vfork_exec", &[]);
    for persona in ["host", "2.6"] {
        let (n, _) = compare(persona, &[&bin]);
        assert_eq!(
            n.out(),
            "hello from the vfork child\nexec child: exited 0\nplain child: exited 9\n"
        );
    }
}

#[test]
fn execve_chain_three_deep() {
    let bin = fixture("execchain", &["-pthread"]);
    for persona in ["host", "2.6"] {
        let (n, _) = compare(persona, &[path_str(&bin), "chain", "3"]);
        assert_eq!(
            (n.status, n.out()),
            (
                7,
                "level 3 (pid same as start: no)\nlevel 2 (pid same as start: yes)\n\
                 level 1 (pid same as start: yes)\nlevel 0 (pid same as start: yes)\n"
                    .to_string()
            )
        );
    }
}

/// A non-leader thread of a multi-threaded process calls execve: the kernel kills the
/// other threads, the exec'ing thread takes over the process id, and the new image
/// goes on to exec twice more. Once with the other threads blocked, once spinning.
#[test]
fn execve_from_a_non_leader_thread() {
    let bin = fixture("execchain", &["-pthread"]);
    for mode in ["idle", "busy"] {
        for persona in ["host", "2.6"] {
            let (n, g) = compare(persona, &[path_str(&bin), "thread-exec", mode]);
            assert_eq!(
                (n.status, n.out()),
                (
                    7,
                    "before exec: 4 threads, then one more execs\n\
                     after exec: 1 threads, pid kept: yes\n\
                     level 1 (pid same as start: yes)\nlevel 0 (pid same as start: yes)\n"
                        .to_string()
                ),
                "{mode}"
            );
            assert_eq!(
                g.err(),
                "",
                "compatrun or the guest complained ({mode}, {persona})"
            );
        }
    }
}

#[test]
fn clone3_fork_and_pidfd() {
    let bin = fixture("clone3", &[]);
    let n = native(&[&bin]);
    if n.out() == "clone3: ENOSYS\n" {
        return skip(
            "clone3_fork_and_pidfd",
            "the host kernel has no clone3 (Linux < 5.3)",
        );
    }
    assert_eq!(
        (n.status, n.out()),
        (
            0,
            "clone3 child: exited 7\npidfd readable: yes\nclone3 pidfd child: exited 5\n"
                .to_string()
        )
    );
    compare("host", &[&bin]);
    compare("5.14", &[&bin]);
    // Linux 2.6.32 had no clone3: the persona answers ENOSYS.
    let g = under("2.6", &[&bin]);
    assert_eq!((g.status, g.out()), (0, "clone3: ENOSYS\n".to_string()));
}

/// The first process leaves a grandchild that outlives both its parent and the first
/// process. compatrun (a child subreaper) waits for it, exits with the first process's
/// status, and leaves nothing behind.
#[test]
fn an_orphaned_grandchild_is_waited_for() {
    let marker = common::unique_marker("orphan");
    let sleep = MarkedSleep::new(&marker);
    let done = common::scratch_dir().join(format!("{marker}.done"));
    let _ = std::fs::remove_file(&done);
    let script = r#"
sh -c '( "$1" 1; echo finished > "$2" ) </dev/null >/dev/null 2>&1 &' child "$1" "$2"
exit 3
"#;
    for persona in ["host", "2.6"] {
        let g = under(
            persona,
            &["sh", "-c", script, "root", sleep.path(), path_str(&done)],
        );
        assert_eq!(g.status, 3, "persona {persona}: {}", g.err());
        // The grandchild had finished when compatrun returned.
        assert_eq!(
            std::fs::read_to_string(&done).ok().as_deref(),
            Some("finished\n"),
            "compatrun returned before the orphan finished (persona {persona})"
        );
        std::fs::remove_file(&done).expect("remove marker file");
        assert_none_left(&marker);
    }
}

// ---------------------------------------------------------------------------------------
// Signals

/// SIGSTOP and SIGCONT sent to the guest from outside: it stops (really), then goes on
/// and finishes with all its output.
#[test]
fn stop_and_continue_the_guest_from_outside() {
    let bin = fixture("ticker", &[]);
    let mut live = Live::spawn(under_cmd("2.6", &[path_str(&bin), "40"]));
    live.expect_line("tick 1");
    let guest = live.child_pid();
    signal(guest, libc::SIGSTOP);
    wait_state(guest, "Tt");
    signal(guest, libc::SIGCONT);
    wait_not_stopped(guest);
    let (status, lines, err) = live.finish();
    assert_eq!((status, lines), (0, ticks(40)), "stderr: {err}");
}

/// SIGSTOP and SIGCONT sent to compatrun itself: the guest is not harmed, compatrun
/// picks up where it was and reports the guest's status.
#[test]
fn stop_and_continue_compatrun_from_outside() {
    let bin = fixture("ticker", &[]);
    let mut live = Live::spawn(under_cmd("2.6", &[path_str(&bin), "40"]));
    live.expect_line("tick 1");
    let supervisor = live.pid();
    signal(supervisor, libc::SIGSTOP);
    wait_state(supervisor, "T");
    signal(supervisor, libc::SIGCONT);
    wait_not_stopped(supervisor);
    let (status, lines, err) = live.finish();
    assert_eq!((status, lines), (0, ticks(40)), "stderr: {err}");
}

/// SIGUSR1, SIGTERM and SIGHUP sent to compatrun are forwarded to the guest, whose
/// handlers see each one.
#[test]
fn signals_sent_to_compatrun_reach_the_guests_handlers() {
    let bin = fixture("sigcatch", &[]);
    for persona in ["host", "2.6"] {
        let mut live = Live::spawn(under_cmd(persona, &[&bin]));
        live.expect_line("ready");
        for (sig, name) in [
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGHUP, "SIGHUP"),
        ] {
            signal(live.pid(), sig);
            live.expect_line(&format!("got {name}"));
        }
        let (status, lines, err) = live.finish();
        assert_eq!(status, 0, "stderr: {err}");
        assert_eq!(lines.last().map(String::as_str), Some("all three seen"));
    }
}

/// A guest that blocks SIGUSR1 and SIGTERM and ignores SIGHUP and SIGINT: the signals
/// compatrun forwards stay pending (blocked) or are discarded (ignored) exactly as when
/// they are sent to the native program; unblocked, the handler runs and SIGTERM kills.
#[test]
fn blocked_and_ignored_signals_behave_as_natively() {
    let bin = fixture("sigblock", &[]);
    let run = |cmd: Command| {
        let mut live = Live::spawn(cmd);
        live.expect_line("ready");
        let target = live.pid();
        for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGUSR1, libc::SIGTERM] {
            signal(target, sig);
        }
        live.finish()
    };
    let (ns, nl, _) = run(Command::new(&bin));
    assert_eq!(
        (ns, nl.clone()),
        (
            143,
            vec![
                "ready".to_string(),
                "pending: SIGUSR1 SIGTERM; still alive after SIGHUP and SIGINT".to_string(),
                "handled SIGUSR1".to_string()
            ]
        )
    );
    for persona in ["host", "2.6"] {
        let (gs, gl, err) = run(under_cmd(persona, &[&bin]));
        assert_eq!(
            (gs, gl),
            (ns, nl.clone()),
            "persona {persona}; stderr: {err}"
        );
    }
}

/// Exactly these, whatever the test process inherited (a background job starts with
/// SIGINT and SIGQUIT ignored): every other signal default.
fn sigdisp_with(cmd: &mut Command, ignore: &'static [i32], block: &'static [i32]) {
    platform::sys::exec_prep::signal_state(cmd, ignore, block);
}

fn sigdisp_compare(ignore: &'static [i32], block: &'static [i32], expected: &str) {
    let bin = fixture("sigdisp", &[]);
    let mut n = Command::new(&bin);
    sigdisp_with(&mut n, ignore, block);
    let n = common::run_cmd(n, None);
    assert_eq!(n.out(), expected);
    for persona in ["host", "2.6"] {
        let mut g = under_cmd(persona, &[&bin]);
        sigdisp_with(&mut g, ignore, block);
        let g = common::run_cmd(g, None);
        assert_eq!(
            (g.status, g.out()),
            (n.status, n.out()),
            "persona {persona}"
        );
    }
}

/// Started with ignored and blocked signals, the guest inherits exactly those (as a
/// native child would across fork and execve), nothing more or less.
#[test]
fn ignored_and_blocked_signals_are_inherited() {
    sigdisp_compare(
        &[libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM],
        &[libc::SIGUSR2, libc::SIGWINCH],
        "ignored: 1 2 3 15\nblocked: 12 28\n",
    );
}

/// Started with SIGPIPE ignored (as by a parent that ignores it and does not restore
/// it for its children), the guest starts with SIGPIPE ignored, as natively.
#[test]
fn an_ignored_sigpipe_is_inherited() {
    sigdisp_compare(&[libc::SIGPIPE], &[], "ignored: 13\nblocked:\n");
}

/// Started with default dispositions and nothing blocked, the guest starts so too.
/// (compatrun is a Rust program, and Rust's runtime ignores SIGPIPE in the process
/// itself; the guest must not inherit that.)
#[test]
fn default_signal_dispositions_are_inherited() {
    sigdisp_compare(&[], &[], "ignored:\nblocked:\n");
}

// ---------------------------------------------------------------------------------------
// Supervision

/// compatrun killed with SIGKILL while the guest and its child sleep: the guest
/// processes die with it (PTRACE_O_EXITKILL).
#[test]
fn killing_compatrun_kills_the_guest() {
    let marker = common::unique_marker("exitkill");
    let sleep = MarkedSleep::new(&marker);
    let script = r#""$1" 300 >/dev/null 2>&1 & "$1" 301 >/dev/null 2>&1 & echo started; wait"#;
    let mut live = Live::spawn(under_cmd("2.6", &["sh", "-c", script, "sh", sleep.path()]));
    live.expect_line("started");
    // Both sleeps exist (exec'd) before compatrun is killed.
    let start = Instant::now();
    while common::pgrep(&format!("{} 30", sleep.path())).len() < 2 {
        assert!(start.elapsed() < WAIT, "the sleeps never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(live.pid(), libc::SIGKILL);
    let (status, _, _) = live.finish();
    assert_eq!(status, 137);
    assert_none_left(&marker);
}

/// Without a pid namespace the guest can see its parent, compatrun, and kill it with
/// SIGKILL: the guest dies too, and so do its children; nothing is left behind.
#[test]
fn a_guest_that_kills_compatrun_dies_with_it() {
    let marker = common::unique_marker("killparent");
    let sleep = MarkedSleep::new(&marker);
    let script = r#""$1" 300 >/dev/null 2>&1 & kill -9 $PPID; exec "$1" 302 >/dev/null 2>&1"#;
    for persona in ["host", "2.6"] {
        let cmd = common::under_with(
            persona,
            &["--pid-ns", "off", "--platform", "auto"], // ptrace: no pid namespace
            &["sh", "-c", script, "sh", sleep.path()],
        );
        let g = run_cmd(cmd, None);
        assert_eq!(g.status, 137, "persona {persona}: {}", g.err());
        assert_none_left(&marker);
    }
}

/// In its own pid namespace the guest cannot see compatrun at all: its parent is the
/// namespace's init, /proc lists only the namespace, and SIGKILL to pid 1 does nothing.
#[test]
fn in_a_pid_namespace_the_guest_cannot_see_or_kill_compatrun() {
    if !platform::sys::has_cap_sys_admin() {
        common::skip(
            "in_a_pid_namespace_the_guest_cannot_see_or_kill_compatrun",
            "creating a pid namespace needs CAP_SYS_ADMIN, which this test run lacks",
        );
        return;
    }
    // The shell counts /proc's pid directories itself (a glob, no child process), so
    // exactly init and the shell are there to see.
    let script = "echo pid=$$ ppid=$PPID; n=0; for d in /proc/[0-9]*; do n=$((n+1)); done; \
                  echo $n; cat /proc/1/comm; kill -9 1; kill -9 $PPID; echo alive";
    for flags in [&[][..], &["--pid-ns", "on"][..]] {
        let g = run_cmd(
            common::under_with("2.6", flags, &["sh", "-c", script]),
            None,
        );
        assert_eq!(
            (g.status, g.out()),
            (0, "pid=2 ppid=1\n2\ncompatrun-init\nalive\n".to_owned()),
            "{flags:?}: {}",
            g.err()
        );
    }
}

/// The first process has exited and compatrun waits for an orphan it left: compatrun
/// is still what its caller sees running, so SIGTERM sent to it must still act (reach
/// the remaining guest processes or end compatrun, whose exit takes them along), not be
/// swallowed; otherwise only SIGKILL can end the wait.
#[test]
fn sigterm_to_compatrun_acts_after_the_first_process_exited() {
    let marker = common::unique_marker("lateterm");
    let sleep = MarkedSleep::new(&marker);
    let script = r#""$1" 300 >/dev/null 2>&1 & echo "started $$"; exit 0"#;
    // Host pids, so the test can watch the first process from outside.
    let cmd = common::under_with(
        "2.6",
        &["--pid-ns", "off", "--platform", "auto"], // ptrace: no pid namespace
        &["sh", "-c", script, "sh", sleep.path()],
    );
    let mut live = Live::spawn(cmd);
    // The first process says who it is (by the time we look, compatrun's only child may
    // already be the orphan).
    let line = live.next_line();
    let root: i32 = line
        .strip_prefix("started ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    // The first process is gone (reaped); the orphaned sleep has been handed to
    // compatrun, its subreaper.
    let start = Instant::now();
    while std::fs::metadata(format!("/proc/{root}")).is_ok() {
        assert!(start.elapsed() < WAIT, "the first process never went away");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(common::pgrep(&format!("{} 300", sleep.path())).len(), 1);
    signal(live.pid(), libc::SIGTERM);
    // Generous: acting on a signal takes milliseconds; the orphan sleeps 300 s.
    let (status, _, err) = live.finish_within(Duration::from_secs(20));
    assert_eq!(status, 128 + libc::SIGTERM, "{err}");
    assert_none_left(&marker);
}

/// Real-time signals (32 and up) are ordinary to the kernel and to glibc, which sends
/// SIGSETXID (33) to every thread of a multi-threaded process calling setuid/setgid:
/// delivering, catching and dying by them must match native.
#[test]
fn real_time_signals_are_delivered_caught_and_reported() {
    for persona in ["host", "2.6"] {
        let (n, _) = compare(persona, &["sh", "-c", "kill -s RTMIN+3 $$"]);
        assert_eq!(n.status, 128 + libc::SIGRTMIN() + 3);
        let caught = "import signal, os\n\
                      signal.signal(signal.SIGRTMIN + 1, lambda s, f: print('caught', s - signal.SIGRTMIN))\n\
                      os.kill(os.getpid(), signal.SIGRTMIN + 1)\nprint('after')";
        let (n, _) = compare(persona, &["python3", "-c", caught]);
        assert_eq!(n.out(), "caught 1\nafter\n");
    }
    let setxid = "import threading, os, time\n\
                  t = threading.Thread(target=time.sleep, args=(0.3,)); t.start()\n\
                  os.setgid(os.getgid()); os.setuid(os.getuid()); t.join(); print('ok')";
    let (n, _) = compare("host", &["python3", "-c", setxid]);
    assert_eq!(n.out(), "ok\n");
}

/// `--user` to a non-root user (as root): the guest has what `setpriv --reuid --regid`
/// gives natively, no capabilities and no no_new_privs (so set-user-ID programs keep
/// their privileges), though compatrun installed its filter on the way.
#[test]
fn a_switch_of_user_leaves_no_capabilities_and_no_no_new_privs() {
    let test = "a_switch_of_user_leaves_no_capabilities_and_no_no_new_privs";
    if !common::is_root() {
        return skip(test, "switching users needs root");
    }
    if !common::have("setpriv") {
        return skip(test, "setpriv (util-linux) is missing");
    }
    let script = "grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs):' /proc/self/status";
    let mut native = std::process::Command::new("setpriv");
    native.args([
        "--reuid",
        "1000",
        "--regid",
        "1000",
        "--clear-groups",
        "sh",
        "-c",
        script,
    ]);
    let n = run_cmd(native, None);
    assert_eq!(n.status, 0, "setpriv: {}", n.err());
    assert!(n.out().contains("NoNewPrivs:\t0\n"), "{}", n.out());
    let g = run_cmd(
        common::under_with("2.6", &["--user", "1000:1000"], &["sh", "-c", script]),
        None,
    );
    assert_eq!((g.status, g.out()), (0, n.out()), "{}", g.err());
}
