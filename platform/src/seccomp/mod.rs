//! The seccomp user-notification backend: caught calls wait on a listener fd instead of
//! stopping under a tracer.
//!
//! No guest process is traced: children inherit the filter, so fork and clone run at
//! native speed, and the guest may ptrace its own children (strace, gdb). The guest always runs
//! in its own pid namespace, whose init is bound to compatrun's life (parent-death
//! signal): if compatrun dies, the kernel kills every guest process, so none ever runs
//! unsupervised, and none can see, signal or attach to compatrun.
//!
//! compatrun runs two threads: the supervisor thread answers notifications (blocking in
//! `SECCOMP_IOCTL_NOTIF_RECV`, woken on the calling thread's CPU where the kernel
//! supports it); the main thread waits for the namespace to end, forwards signals, and
//! mirrors the guest's job-control stops that the init reports.
//!
//! Exec is seen without tracing forks: when the spec asks for exec events, each exec
//! call is notified and only its thread is seized until its exec event (`exec`). A
//! handler that runs a call in a notified thread has that thread seized meanwhile by a
//! worker thread (`held`), and let go with the handler's verdict.
//!
//! What this backend cannot do, and the ptrace backend can: see signals before delivery
//! (so no vsyscall emulation where the host has no vsyscall page), see each thread's exit
//! (only the first process's is reported, from its init), and see the exec of a thread
//! a debugger inside the guest already traces. Its [`DECLARATION`] says so to whoever
//! chooses a platform.

mod exec;
mod guest;
mod held;
mod keeper;
mod stopall;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, trace, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::command::{ExitStatus, GuestCommand};
use crate::contract::{InterceptSpec, Rule, Supervisor, Syscall, Verdict};
use crate::declaration::{Capabilities, Declaration};
use crate::error::PlatformError;
use crate::filter::{self, CatchAction};
use crate::launch::{self, Plan};
use crate::sys::spawn::{self, GuestJobEvent};
use crate::sys::{self, notify, signals};

use guest::{MemFiles, NotifiedThread};

/// Whether this kernel offers seccomp user notification in a form compatrun can use.
/// The error says why not.
pub fn supported() -> Result<(), String> {
    notify::check_sizes()
        .map_err(|e| format!("this kernel has no usable seccomp user notification ({e})"))?;
    // Filtered already: another supervisor's listener would make ours impossible.
    let filtered = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|n| n > 0)
    });
    if filtered && !notify::listener_possible() {
        return Err(
            "another seccomp user-notification supervisor already watches compatrun (one \
             listener per process); use --platform ptrace"
                .to_owned(),
        );
    }
    Ok(())
}

/// The seccomp backend's declaration: forks run untraced and each exec costs one short
/// seize, but it needs a pid namespace, and it sees no signal and no thread's exit.
pub const DECLARATION: Declaration = Declaration {
    name: "seccomp",
    merit: "seccomp user notification: process creation and forwarded calls at native speed",
    caps: Capabilities {
        sees_signals: false,
        sees_exec: true,
        reports_exits: false,
        needs_pid_ns: true,
        forks_untraced: true,
    },
    available: supported,
};

const PLAN: Plan = Plan {
    decl: &DECLARATION,
    catch: CatchAction::UserNotif,
    before_fork: || {
        sys::install_wake_handler().map_err(|source| PlatformError::Spawn {
            op: "install the wake-up handler",
            source,
        })
    },
};

/// Runs `cmd` under the seccomp-notification platform until every guest process is
/// gone. `cmd.pid_ns` must be set: the pid namespace is what binds the guest's life to
/// compatrun's.
pub fn run<S: Supervisor + Send>(
    cmd: &GuestCommand,
    spec: &InterceptSpec,
    sup: &mut S,
) -> Result<ExitStatus, PlatformError> {
    let setup = |op: &'static str| move |e: std::io::Error| PlatformError::Spawn { op, source: e };
    // With exec events wanted, exec calls are handed over too (see `exec`).
    let caught = exec::with_exec_catch(spec);
    let (mut child, (init_pidfd, keeper)) = launch::launch(cmd, &caught, &PLAN, |child| {
        let pidfd = sys::pidfd_open(child.pid).map_err(setup("pidfd_open"))?;
        signals::set_target_init(child.pid.as_raw(), std::os::fd::AsRawFd::as_raw_fd(&pidfd));
        // Last: from here on the keeper thread reaps the init.
        let keeper = keeper::keep(child.pid)?;
        Ok((pidfd, keeper))
    })?;
    // Whatever fails from here on ends the namespace; the keeper then reaps the init.
    let end = |e: PlatformError| {
        let _ = sys::pidfd_kill(init_pidfd.as_fd(), libc::SIGKILL);
        e
    };
    let hook = ExecHook {
        wanted: spec.exec_events,
        spec,
        first: std::sync::OnceLock::new(),
    };
    let supervised = child
        .release()
        .map_err(setup("release the guest"))
        .and_then(|()| {
            child
                .listener()
                .map_err(setup("receive the seccomp listener"))
        })
        .and_then(|listener| match listener {
            Some(listener) => supervise(&child, &init_pidfd, listener, sup, &hook, &caught),
            // The guest failed before its filter was in place: nothing to supervise.
            None => Ok(()),
        })
        .map_err(end);
    let status = keeper
        .join()
        .unwrap_or(Err(PlatformError::Wait(Errno::ECHILD)));
    let status = supervised.and(status);
    signals::root_gone();
    // The one exit this backend sees: the first process's, which the init reports.
    if let (Ok(status), Some(&tid)) = (&status, hook.first.get()) {
        sup.exited(tid, *status);
    }
    launch::finish(cmd, &child, status)
}

/// What the supervisor thread needs to see exec (see `exec`).
struct ExecHook<'a> {
    /// The spec asks for exec events.
    wanted: bool,
    /// The spec as the sentry gave it (before exec calls were added to the catch list).
    spec: &'a InterceptSpec,
    /// The thread of the guest's first exec: its first process.
    first: std::sync::OnceLock<i32>,
}

/// Serves notifications on a second thread while this one waits for the namespace to
/// end and mirrors the guest's stops.
fn supervise<S: Supervisor + Send>(
    child: &spawn::Spawned,
    init_pidfd: &OwnedFd,
    listener: OwnedFd,
    sup: &mut S,
    hook: &ExecHook<'_>,
    caught: &InterceptSpec,
) -> Result<(), PlatformError> {
    if notify::set_sync_wakeup(listener.as_fd()) {
        debug!("seccomp listener: synchronous wake-ups");
    }
    let done = AtomicBool::new(false);
    let server_thread = std::sync::OnceLock::new();
    let tty = crate::jobctl::open_tty();
    std::thread::scope(|scope| {
        let server = std::thread::Builder::new()
            .name("compatrun-supervisor".into())
            .spawn_scoped(scope, || {
                sys::signals::block_forwarded_in_this_thread();
                let _ = server_thread.set(sys::current_thread());
                let mut guard = KillInitIfAbandoned {
                    init_pidfd: init_pidfd.as_fd(),
                    finished: false,
                };
                guard.finished = serve(listener.as_fd(), sup, &done, hook, caught);
            })
            .map_err(|source| PlatformError::Spawn {
                op: "start the supervisor thread",
                source,
            });
        let server = match server {
            Ok(s) => s,
            Err(e) => return Err(e), // the caller ends the namespace
        };
        let status = wait_namespace(child, init_pidfd.as_fd(), tty.as_ref());
        done.store(true, Ordering::Release);
        // The supervisor thread returns once every filtered process is gone (the kernel
        // wakes it); the interrupt covers kernels that do not.
        while !server.is_finished() {
            if let Some(&thread) = server_thread.get() {
                sys::interrupt_thread(thread);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        status
    })
}

/// Kills the namespace's init (and with it every guest process) if the supervisor
/// thread ends before the run is over (an error, or a panic unwinding through it): a
/// guest whose calls nobody answers would hang.
struct KillInitIfAbandoned<'a> {
    init_pidfd: BorrowedFd<'a>,
    /// Set when the thread ended because the run is over.
    finished: bool,
}

impl Drop for KillInitIfAbandoned<'_> {
    fn drop(&mut self) {
        if !self.finished {
            warn!("the supervisor thread stopped; ending the guest");
            let _ = sys::pidfd_kill(self.init_pidfd, libc::SIGKILL);
        }
    }
}

/// The supervisor thread: answer every notification until the run is over (true) or the
/// listener fails (false).
fn serve<S: Supervisor>(
    listener: BorrowedFd<'_>,
    sup: &mut S,
    done: &AtomicBool,
    hook: &ExecHook<'_>,
    caught: &InterceptSpec,
) -> bool {
    let mut mem = MemFiles::default();
    let worker = match held::Worker::start() {
        Ok(w) => w,
        Err(e) => {
            warn!("cannot start the ptrace worker thread: {e}");
            return false;
        }
    };
    loop {
        let n = match notify::recv(listener) {
            Ok(n) => n,
            Err(e) => match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                Errno::EINTR if done.load(Ordering::Acquire) => return true,
                Errno::EINTR => continue,
                // The caller vanished, or no process uses the filter any more.
                Errno::ENOENT if hung_up(listener) => return true,
                Errno::ENOENT => continue,
                _ => {
                    warn!("seccomp listener failed: {e}");
                    return false;
                }
            },
        };
        let (arch, nr) = filter::decode(n.arch, n.nr);
        let call = Syscall {
            arch,
            nr,
            args: n.args,
            ip: n.ip,
        };
        let mut thread = NotifiedThread {
            listener,
            id: n.id,
            tid: n.tid,
            mem: &mut mem,
            call,
            caught,
            worker: &worker,
            held: false,
        };
        // Strict seccomp mode is the platform's to emulate (see `crate::strict`).
        if filter::strict::is_request(&call) {
            if !worker.confine(n.tid, call) {
                let _ = notify::respond(listener, n.id, Some(-i64::from(libc::EINVAL)));
            }
            continue;
        }
        let exec = hook.wanted && exec::is_exec(arch, nr);
        // An exec call is the supervisor's only if its spec catches it itself.
        let verdict = if exec && hook.spec.rule_for(arch, nr) != Rule::Catch {
            Verdict::Forward
        } else {
            sup.syscall(&mut thread, &call)
        };
        trace!("[pid {}] {arch} syscall {nr} -> {verdict:?}", n.tid);
        let value = match verdict {
            Verdict::Forward => None,
            Verdict::Return(v) => Some(v),
        };
        // A held thread's forwarded exec restarts, and is notified (and seized) again.
        let seized = if exec && value.is_none() && !thread.held {
            // The guest's first exec is its first process's (nothing else runs yet).
            let first = hook.first.set(n.tid).is_ok();
            // The first is always seen (the "kernel too old" line is the first process's).
            if first || sup.exec_needs_stop(&mut thread, &call) {
                exec::seize(n.tid)
            } else {
                trace!("[pid {}] exec not stopped: nothing to do at it", n.tid);
                None
            }
        } else {
            None
        };
        // A thread a call was run in answers through its registers (its notification
        // is gone); any other through the listener.
        let answered = thread.held && worker.finish(n.tid, value);
        if !answered {
            if let Err(e) = notify::respond(listener, n.id, value) {
                // ENOENT: the caller was killed while it waited (a seized one is still
                // detached below: its call is over or will be made again).
                debug!("[pid {}] reply not delivered: {e}", n.tid);
            }
        }
        if let Some(seized) = seized {
            seized.finish(sup);
        }
    }
}

/// Whether no process uses the listener's filter any more.
fn hung_up(listener: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// Waits until the namespace's init exits (the namespace is then empty), mirroring the
/// guest's job-control stops meanwhile. (The keeper thread reaps the init.)
fn wait_namespace(
    child: &spawn::Spawned,
    init_pidfd: BorrowedFd<'_>,
    tty: Option<&std::fs::File>,
) -> Result<(), PlatformError> {
    let mut reports_open = true;
    loop {
        let report_fd = child.report_fd().filter(|_| reports_open);
        let mut fds = vec![PollFd::new(init_pidfd, PollFlags::POLLIN)];
        if let Some(fd) = report_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PlatformError::Wait(e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let init_done = ready(0);
        let report_ready = ready(1);
        drop(fds);
        if report_ready {
            match child.read_report() {
                Some(GuestJobEvent::Stopped(sig)) => {
                    trace!("[pid {}] guest stopped by signal {sig}", child.pid);
                    if let Ok(sig) = Signal::try_from(sig) {
                        crate::jobctl::mirror_stop(tty, child.pid, sig, || {
                            // The init passes it on to the guest.
                            let _ = sys::pidfd_kill(init_pidfd, libc::SIGCONT);
                        });
                    }
                }
                Some(GuestJobEvent::Continued) => {}
                None => reports_open = false,
            }
        }
        if init_done {
            return Ok(());
        }
    }
}
