//! Which program a guest thread runs, for the report.
//!
//! A program is the executable `/proc/TID/exe` names (for a script, its interpreter).
//!
//! - **ptrace** reports every exec (before the new program's first instruction) and
//!   every thread's end: a thread's program is read once, when it is first seen or
//!   execs, and kept until it execs again or ends. A process counts once per program it
//!   runs: at each exec, and when a process not seen exec'ing (a fork's child, the first
//!   process) first shows up.
//! - **seccomp** reports no thread exits (and, on kernels or runs where it cannot seize
//!   an execing thread, no execs): `/proc/TID/exe` is read at every caught call (one
//!   `readlink`), so a call is attributed to what the thread runs at that moment, exec or
//!   not; an exec it does see counts the process as a call would. A process counts once per program it is seen making caught calls in; a process
//!   that makes none is not seen at all, and one that execs the same program again counts
//!   once (approximate, as docs/REPORT.md says).
//!
//! A thread that is gone before its program can be read is attributed to `(unknown)`; an
//! executable replaced or removed while it runs is counted under the path it ran from.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;

use platform::GuestThread;

/// The name used when a thread's executable cannot be read (it died meanwhile).
const UNKNOWN: &str = "(unknown)";

/// What is known of one thread.
#[derive(Debug)]
struct ThreadInfo {
    /// Its process.
    tgid: i32,
    /// Its executable, as last read (seccomp only compares it).
    exe: OsString,
    /// Index into [`Programs::paths`].
    program: usize,
}

/// Programs by path, and the threads and processes seen running them.
#[derive(Debug)]
pub struct Programs {
    /// The platform reports execs and thread exits (ptrace).
    exec_events: bool,
    paths: Vec<PathBuf>,
    index: HashMap<OsString, usize>,
    threads: HashMap<i32, ThreadInfo>,
    /// ptrace: each process's program (by thread group id).
    processes: HashMap<i32, usize>,
    /// seccomp: (process, program) pairs seen.
    seen: HashSet<(i32, usize)>,
}

/// The executable of thread `tid`. One replaced or removed since it was started (the
/// kernel then appends " (deleted)") is still counted under the path it ran from.
fn exe_of(tid: i32) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let Ok(path) = std::fs::read_link(format!("/proc/{tid}/exe")) else {
        return UNKNOWN.into();
    };
    let bytes = path.into_os_string().into_vec();
    match bytes.strip_suffix(b" (deleted)") {
        Some(live) => std::ffi::OsStr::from_bytes(live).to_os_string(),
        None => OsString::from_vec(bytes),
    }
}

impl Programs {
    /// An empty table; `exec_events` as the platform offers them.
    pub fn new(exec_events: bool) -> Self {
        Programs {
            exec_events,
            paths: Vec::new(),
            index: HashMap::new(),
            threads: HashMap::new(),
            processes: HashMap::new(),
            seen: HashSet::new(),
        }
    }

    /// Every program seen, in the order they appeared.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn intern(&mut self, exe: &OsString) -> usize {
        if let Some(&i) = self.index.get(exe) {
            return i;
        }
        let i = self.paths.len();
        self.paths.push(PathBuf::from(exe));
        self.index.insert(exe.clone(), i);
        i
    }

    /// The program `thread` runs, and whether this is the first sign of its process
    /// running it.
    pub fn of_thread<G: GuestThread>(&mut self, thread: &mut G) -> (usize, bool) {
        let tid = thread.tid();
        if self.exec_events {
            if let Some(t) = self.threads.get(&tid) {
                return (t.program, false);
            }
            let tgid = thread.tgid();
            let (program, new) = match self.processes.get(&tgid) {
                Some(&p) => (p, false),
                None => {
                    let p = self.intern(&exe_of(tgid));
                    self.processes.insert(tgid, p);
                    (p, true)
                }
            };
            self.threads.insert(
                tid,
                ThreadInfo {
                    tgid,
                    exe: OsString::new(),
                    program,
                },
            );
            return (program, new);
        }
        let exe = exe_of(tid);
        if let Some(t) = self.threads.get(&tid) {
            if t.exe == exe {
                return (t.program, false);
            }
        }
        let tgid = thread.tgid();
        let program = self.intern(&exe);
        let new = self.seen.insert((tgid, program));
        self.threads.insert(tid, ThreadInfo { tgid, exe, program });
        (program, new)
    }

    /// `thread` has just exec'd (it is its process's only thread now, with the process's
    /// id): returns its new program, and whether this counts as a new process for it
    /// (always where the platform reports exits; otherwise once per process and program,
    /// as for calls).
    pub fn execed<G: GuestThread>(&mut self, thread: &mut G) -> (usize, bool) {
        let tgid = thread.tid();
        self.threads.retain(|_, t| t.tgid != tgid);
        let exe = exe_of(tgid);
        let program = self.intern(&exe);
        let new = if self.exec_events {
            self.processes.insert(tgid, program);
            true
        } else {
            self.seen.insert((tgid, program))
        };
        self.threads.insert(tgid, ThreadInfo { tgid, exe, program });
        (program, new)
    }

    /// ptrace: thread `tid` is gone (with the process, when it led it).
    pub fn exited(&mut self, tid: i32) {
        self.threads.remove(&tid);
        self.processes.remove(&tid);
    }
}
