//! Seeing exec under seccomp user notification without tracing every fork.
//!
//! When the spec asks for exec events, the filter also hands `execve` and `execveat`
//! over. For such a notification the supervisor thread seizes only the calling thread
//! (`PTRACE_SEIZE` with `PTRACE_O_TRACEEXEC`), lets the call run, and asks for a stop
//! (`PTRACE_INTERRUPT`). Then exactly one of these comes first:
//!
//! - the exec event stop, before the new program's first instruction: the supervisor's
//!   [`Supervisor::execed`] runs on the stopped thread, which is then detached (the
//!   pending interrupt goes with the tracer);
//! - the interrupt's stop or a signal's: the exec failed (or will be restarted, and then
//!   notified again); the thread is detached and the signal passed on;
//! - the thread's death.
//!
//! Nothing else of the guest is ever traced: its forks and clones run at native speed,
//! and a thread is traced only from its `execve` to the end of that call. The seizing
//! thread is the only one that waits for or commands that tracee (`__WNOTHREAD`), so the
//! main thread's wait for the namespace's init is never disturbed.
//!
//! If the thread cannot be seized (a guest debugger traces it already, Yama forbids it)
//! the exec runs unhooked, which is logged (a warning the first time).

use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::ptrace::{self as nixptrace, Event, Options};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::contract::{Arch, InterceptSpec, Rule, Supervisor};
use crate::ptrace::Stopped;

/// The exec calls per ABI (x32 numbers without the x32 bit).
pub(super) const EXEC_CALLS: [(Arch, u32); 6] = [
    (Arch::X86_64, 59),  // execve
    (Arch::X86_64, 322), // execveat
    (Arch::I386, 11),    // execve
    (Arch::I386, 358),   // execveat
    (Arch::X32, 520),    // execve (x32's own entry)
    (Arch::X32, 545),    // execveat (x32's own entry)
];

/// Whether `(arch, nr)` is an exec call.
pub(super) fn is_exec(arch: Arch, nr: u32) -> bool {
    EXEC_CALLS.contains(&(arch, nr))
}

/// `spec` with every exec call the persona lets run also handed to the supervisor (only
/// when the spec asks for exec events; a refused exec stays refused by the filter).
pub(super) fn with_exec_catch(spec: &InterceptSpec) -> InterceptSpec {
    let mut spec = spec.clone();
    if spec.exec_events {
        for (arch, nr) in EXEC_CALLS {
            if spec.rule_for(arch, nr) == Rule::Allow {
                spec.rules.push((arch, nr, Rule::Catch));
            }
        }
    }
    spec
}

/// Whether an exec went unhooked already in this run (warned once).
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A thread seized in its exec call.
pub(super) struct Seized {
    tid: Pid,
}

/// Seizes `tid`, stopped in a notified exec call, before the call is let go.
pub(super) fn seize(tid: i32) -> Option<Seized> {
    let tid = Pid::from_raw(tid);
    let options = Options::PTRACE_O_TRACEEXEC | Options::PTRACE_O_EXITKILL;
    match nixptrace::seize(tid, options) {
        Ok(()) => Some(Seized { tid }),
        Err(e) => {
            // Once at warning level (a guest can exec often), then at debug level.
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn!(
                    "[pid {tid}] cannot seize the thread to see its exec ({e}): it keeps the \
                     host's kernel version in its vDSO (a debugger in the guest traces it, or \
                     the host forbids ptrace)"
                );
            } else {
                debug!("[pid {tid}] exec not hooked: cannot seize it ({e})");
            }
            None
        }
    }
}

impl Seized {
    /// After the exec call was let go: waits for the exec (calling `sup.execed` on the
    /// new program's first thread) or for its failure, then detaches.
    pub(super) fn finish<S: Supervisor>(self, sup: &mut S) {
        let tid = self.tid;
        if let Err(e) = nixptrace::interrupt(tid) {
            // Gone already (killed while in the call): nothing left to detach.
            debug!("[pid {tid}] exec: interrupt failed ({e})");
        }
        // Only this thread's own tracee: the one thread it seized.
        let flags = WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD;
        loop {
            let status = match waitpid(None, Some(flags)) {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    debug!("[pid {tid}] exec: wait failed ({e})");
                    return;
                }
            };
            match status {
                WaitStatus::PtraceEvent(pid, _, e) if e == Event::PTRACE_EVENT_EXEC as i32 => {
                    // `pid` is the thread group's: a non-leader that execs takes it.
                    debug!("[pid {pid}] exec (seized from {tid})");
                    let mut stopped = Stopped::new(pid);
                    sup.execed(&mut stopped.guest());
                    release(stopped, 0);
                    return;
                }
                WaitStatus::PtraceEvent(pid, _, _) => {
                    // The interrupt's stop (or a group-stop, which detaching keeps) before
                    // any exec: the exec failed, or will be restarted and notified again.
                    release(Stopped::new(pid), 0);
                    return;
                }
                WaitStatus::Stopped(pid, sig) => {
                    // A signal on the way out of a failed exec: pass it on.
                    release(Stopped::new(pid), sig as i32);
                    return;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => return,
                _ => continue,
            }
        }
    }
}

/// Detaches a stopped tracee, passing `sig` on. A detach can only fail because the
/// tracee left its stop to die (SIGKILL, from the guest or with the run's end): then its
/// death is reported to us, its tracer, before its parent can see it, so it is waited
/// for here; left unwaited, it would stay a zombie its parent waits on for ever.
fn release(stopped: Stopped, sig: i32) {
    let pid = stopped.pid();
    if let Err(e) = stopped.detach(sig) {
        debug!("[pid {pid}] exec: detach failed ({e}); waiting for its end");
        loop {
            match waitpid(pid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    return
                }
                // Stopped after all (the detach failed for another reason): try again.
                Ok(WaitStatus::Stopped(..) | WaitStatus::PtraceEvent(..)) => {
                    if nixptrace::detach(pid, None).is_ok() {
                        return;
                    }
                }
                Err(Errno::EINTR) | Ok(_) => {}
                Err(e) => {
                    debug!("[pid {pid}] exec: wait failed ({e})");
                    return;
                }
            }
        }
    }
}
