//! `GuestThread::run_syscall` on the seccomp platform, in a real guest: a handler runs
//! `getpid` in a thread that waits in a notified `uname`, then answers the `uname`
//! itself through guest memory; or forwards it, which makes the call again.
//!
//! Runs as root only (the seccomp platform needs a pid namespace); otherwise it says so.

use std::ffi::OsString;
use std::io::Write;

use platform::{
    Arch, ExitStatus, GuestCommand, GuestThread, InterceptSpec, Rule, Supervisor, Syscall,
    ThreadOpError, Verdict,
};

const UNAME: u32 = 63;
const GETPID: u32 = 39;
/// `offsetof(struct utsname, nodename)`: each field is 65 bytes.
const NODENAME: u64 = 65;

#[derive(Default)]
struct Injecting {
    /// Forward the first `uname` after running `getpid` in it (instead of answering it).
    forward_first: bool,
    /// Each notified `uname`: the thread and what `getpid` gave when run in it (if run).
    seen: Vec<(i32, Option<i64>)>,
    /// What running a call the filter catches answered.
    caught_call: Option<Result<i64, ThreadOpError>>,
}

impl Supervisor for Injecting {
    fn syscall<G: GuestThread>(&mut self, g: &mut G, call: &Syscall) -> Verdict {
        assert_eq!((call.arch, call.nr), (Arch::X86_64, UNAME));
        assert!(g.can_run_syscalls());
        if self.forward_first && !self.seen.is_empty() {
            self.seen.push((g.tid(), None));
            return Verdict::Forward;
        }
        let pid = g
            .run_syscall(GETPID, [0; 6])
            .expect("getpid runs in the thread");
        self.caught_call = Some(g.run_syscall(UNAME, [call.args[0], 0, 0, 0, 0, 0]));
        self.seen.push((g.tid(), Some(pid)));
        if self.forward_first {
            return Verdict::Forward;
        }
        // Memory is still reachable once the notification is gone.
        let name = format!("pid{pid}\0");
        match g.write_mem(call.args[0] + NODENAME, name.as_bytes()) {
            Ok(()) => Verdict::Return(0),
            Err(_) => Verdict::errno(libc::EFAULT),
        }
    }
}

fn command(script: &str) -> GuestCommand {
    let argv: Vec<OsString> = ["sh", "-c", script].map(OsString::from).to_vec();
    GuestCommand {
        program: "/bin/sh".into(),
        argv,
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cwd: None,
        nofile_soft: None,
        pid_ns: true,
        synthetic_files: Vec::new(),
        root: None,
        user: None,
        user_ns: None,
        namespaces: Vec::new(),
        sysctls: Vec::new(),
        groups: None,
        capabilities: None,
        start_gate: None,
        join_mount_ns: None,
        extra_filters: Vec::new(),
        terminal: None,
    }
}

fn spec() -> InterceptSpec {
    let mut spec = InterceptSpec::allow_all();
    spec.rules.push((Arch::X86_64, UNAME, Rule::Catch));
    spec
}

/// Runs `script` with its output going to a file; its status and output.
fn run(script: &str, sup: &mut Injecting) -> (ExitStatus, String) {
    let dir = std::env::temp_dir().join(format!(
        "run-syscall-{}-{}",
        std::process::id(),
        sup.forward_first
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let out = dir.join("out");
    let script = format!("exec >{} 2>&1; {script}", out.display());
    let status = platform::seccomp::run(&command(&script), &spec(), sup).expect("guest runs");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (status, text)
}

fn runnable(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let why = if !root {
        Some("not root: the seccomp platform needs a pid namespace".to_owned())
    } else {
        platform::seccomp::supported().err()
    };
    if let Some(why) = why {
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        return false;
    }
    true
}

#[test]
fn a_call_runs_in_a_notified_thread_which_then_returns_the_answer() {
    if !runnable("a_call_runs_in_a_notified_thread_which_then_returns_the_answer") {
        return;
    }
    let mut sup = Injecting::default();
    let (status, out) = run("echo $$; exec uname -n", &mut sup);
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    let [(_, Some(pid))] = sup.seen[..] else {
        panic!("one uname, getpid run in it: {:?}", sup.seen);
    };
    // The shell's pid (in its namespace) is what getpid gave in the exec'd uname.
    assert_eq!(out, format!("{pid}\npid{pid}\n"));
    assert_eq!(sup.caught_call, Some(Err(ThreadOpError::Unsupported)));
}

#[test]
fn a_forwarded_call_is_made_again_after_a_call_ran_in_its_thread() {
    if !runnable("a_forwarded_call_is_made_again_after_a_call_ran_in_its_thread") {
        return;
    }
    let mut sup = Injecting {
        forward_first: true,
        ..Injecting::default()
    };
    let (status, out) = run("uname -n", &mut sup);
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    let [(first, Some(_)), (again, None)] = sup.seen[..] else {
        panic!("uname notified twice: {:?}", sup.seen);
    };
    assert_eq!(first, again, "the same thread makes the call again");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(out, host);
}
