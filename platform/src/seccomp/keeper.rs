//! compatrun keeps the pid namespace's init to itself under the seccomp platform too: it
//! is the init's tracer (`PTRACE_SEIZE`, `PTRACE_O_EXITKILL`, no fork or exec events), and
//! a process has one tracer, so a guest's `PTRACE_ATTACH` or `PTRACE_SEIZE` of pid 1
//! fails with EPERM instead of stopping the init (which would then reap nothing and hang
//! the run). The init's children are not traced: the guest keeps ptrace for itself.
//!
//! A tracer sees every signal sent to its tracee, even those the kernel would drop for an
//! init. This thread passes them on as the kernel would without a tracer: stop signals a
//! guest sends to pid 1 are dropped (the kernel shields an init from them), everything
//! else is delivered (the kernel itself then ignores what an init has no handler for);
//! a group-stop from outside stays a stop (`PTRACE_LISTEN`), ended by SIGCONT.
//!
//! ptrace requests must come from the tracing thread, so one thread seizes the init and
//! waits on it until it ends: its status is the run's.

use std::sync::mpsc;
use std::thread::JoinHandle;

use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::ptrace::{self as nixptrace, Event, Options};
use nix::unistd::Pid;

use crate::command::ExitStatus;
use crate::error::PlatformError;
use crate::ptrace::{is_stop_signal, Stopped, TraceError};
use crate::sys::{self, WaitEvent};

/// Starts the thread that traces and reaps `init`; returns once the init is seized (or
/// seizing failed, which is logged: the run goes on, but a guest could then stop its
/// init). Join the handle for the init's exit status.
pub(super) fn keep(
    init: Pid,
) -> Result<JoinHandle<Result<ExitStatus, PlatformError>>, PlatformError> {
    let (seized_tx, seized_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("compatrun-init-keeper".into())
        .spawn(move || {
            crate::sys::signals::block_forwarded_in_this_thread();
            if let Err(e) = nixptrace::seize(init, Options::PTRACE_O_EXITKILL) {
                warn!(
                    "cannot trace the namespace's init ({e}); a guest allowed to ptrace \
                     could stop it"
                );
            }
            let _ = seized_tx.send(());
            wait_init(init)
        })
        .map_err(|source| PlatformError::Spawn {
            op: "start the init's keeper thread",
            source,
        })?;
    // Returns at once if the thread died before sending (its join then says why).
    let _ = seized_rx.recv();
    Ok(handle)
}

/// Waits for `init` to end, passing on its signals as the kernel would for an untraced
/// init. Its exit status is the guest's first process's.
fn wait_init(init: Pid) -> Result<ExitStatus, PlatformError> {
    loop {
        let event = match sys::wait_pid(init) {
            Ok(e) => e,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PlatformError::Wait(e)),
        };
        let resumed = match event {
            WaitEvent::Exited(_, code) => return Ok(ExitStatus::Exited(code)),
            WaitEvent::Signaled(_, signal, core) => {
                return Ok(ExitStatus::Signaled { signal, core })
            }
            WaitEvent::Stopped(_, sig) => pass_on(Stopped::new(init), sig),
            WaitEvent::Event(_, sig, event) if event == Event::PTRACE_EVENT_STOP as i32 => {
                if is_stop_signal(sig) {
                    // A group-stop (a stop signal from outside): stay stopped until SIGCONT.
                    Stopped::new(init).listen()
                } else {
                    Stopped::new(init).cont(0)
                }
            }
            WaitEvent::Event(..) => Stopped::new(init).cont(0),
            WaitEvent::Other(_) => Ok(()),
        };
        match resumed {
            // Gone: its exit is the next report.
            Ok(()) | Err(TraceError::Gone(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A signal-delivery stop of the init: drop stop signals sent from inside the namespace
/// (as the kernel does for an untraced init), deliver everything else.
fn pass_on(stopped: Stopped, sig: i32) -> Result<(), TraceError> {
    if is_stop_signal(sig) && stopped.signal_sent_from_inside()? {
        debug!(
            "[pid {}] stop signal {sig} to the namespace's init ignored",
            stopped.pid()
        );
        return stopped.cont(0);
    }
    stopped.cont(sig)
}
