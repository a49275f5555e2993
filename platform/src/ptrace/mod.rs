//! The ptrace backend: seccomp `RET_TRACE` stops under `PTRACE_SEIZE`.
//!
//! The guest is seized before it installs the filter and execs, with
//! `PTRACE_O_EXITKILL` (if compatrun dies, every guest thread dies) and auto-attach on
//! fork, vfork and clone, so every process and thread is traced from its first
//! instruction. Only calls the filter marks `RET_TRACE` stop; everything else runs
//! natively. Signals are delivered as they arrive, group-stops are kept with
//! `PTRACE_LISTEN` (so job control works and the real parent sees them), and compatrun
//! reaps everything, orphans included (it is a child subreaper), before it returns.

pub(crate) mod inject;
mod tracee;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;

use log::{debug, trace, warn};
use nix::errno::Errno;
use nix::sys::ptrace::{self as nixptrace, Event, Options};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpgid, getpgrp, Pid};

pub use crate::error::TraceError;
pub use tracee::{PtraceThread, Stopped};

use crate::command::{ExitStatus, GuestCommand};
use crate::contract::{InterceptSpec, SignalVerdict, Supervisor, Syscall, ThreadOpError, Verdict};
use crate::declaration::{Capabilities, Declaration};
use crate::error::PlatformError;
use crate::filter::{self, CatchAction};
use crate::launch::{self, Plan};
use crate::sys::{self, signals, WaitEvent};

/// The options every tracee carries (inherited by auto-attached children).
fn options() -> Options {
    Options::PTRACE_O_TRACESECCOMP
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_EXITKILL
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThreadState {
    /// Announced by its parent's fork/clone event; its attach stop is still to come.
    Starting,
    /// Seen at least once.
    Running,
}

/// The ptrace backend's declaration: it sees everything, at the price of a stop in
/// compatrun for every fork, clone and exec.
pub const DECLARATION: Declaration = Declaration {
    name: "ptrace",
    merit: "ptrace sees signals, exec and every exit",
    caps: Capabilities {
        sees_signals: true,
        sees_exec: true,
        reports_exits: true,
        needs_pid_ns: false,
        forks_untraced: false,
    },
    available: || Ok(()),
};

const PLAN: Plan = Plan {
    decl: &DECLARATION,
    catch: CatchAction::Trace,
    before_fork: || {
        // Orphaned guest processes come back to us to be reaped.
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| PlatformError::Spawn {
            op: "set child subreaper",
            source: e.into(),
        })
    },
};

/// Runs `cmd` under the ptrace platform until every guest process is gone.
///
/// Returns the first process's exit status. The supervisor is told about every call
/// the spec marks [`crate::Rule::Catch`].
pub fn run<S: Supervisor>(
    cmd: &GuestCommand,
    spec: &InterceptSpec,
    sup: &mut S,
) -> Result<ExitStatus, PlatformError> {
    let (mut child, ()) = launch::launch(cmd, spec, &PLAN, |child| {
        nixptrace::seize(child.pid, options())
            .map_err(|source| PlatformError::PtraceDenied { source })
    })?;
    let root = child.pid;
    let mut tracer = Tracer {
        root,
        guest: None,
        guest_pidfd: None,
        threads: HashMap::from([(root, ThreadState::Running)]),
        root_status: None,
        signals: spec.signals.clone(),
        tty: crate::jobctl::open_tty(),
        deferred: inject::Deferred::new(),
        own_rules: (!cmd.extra_filters.is_empty()).then(|| spec.clone()),
        confined: HashSet::new(),
    };
    // In a pid namespace, being told to end once the first process is gone kills the
    // namespace's init (so everything left), and the run winds up as usual.
    let init_pidfd = if cmd.pid_ns {
        let fd = sys::pidfd_open(root).ok();
        if let Some(fd) = &fd {
            signals::set_end_target(fd.as_raw_fd());
        }
        fd
    } else {
        tracer.adopt_guest(root)?;
        None
    };
    if let Err(source) = child.release() {
        signals::clear_end_target();
        return Err(PlatformError::Spawn {
            op: "release the guest",
            source,
        });
    }
    let result = tracer.run(sup);
    signals::clear_target();
    signals::clear_end_target();
    drop(init_pidfd);
    drop(tracer);
    launch::finish(cmd, &child, result)
}

struct Tracer {
    /// Our child: the guest's first process, or the init of its pid namespace.
    root: Pid,
    /// The guest's first process (the root, or the init's first child), once known: its
    /// status is the run's, signals aimed at us go to it, its stops are mirrored.
    guest: Option<Pid>,
    guest_pidfd: Option<std::os::fd::OwnedFd>,
    threads: HashMap<Pid, ThreadState>,
    root_status: Option<ExitStatus>,
    /// Signals the supervisor wants to see (from the spec).
    signals: Vec<i32>,
    tty: Option<File>,
    /// Stops of other threads collected while a handler had a process stopped, to be
    /// handled before anything new is waited for.
    deferred: inject::Deferred,
    /// With the front end's own filters: compatrun's spec, to tell our trace stops from
    /// theirs (`SECCOMP_RET_TRACE` there), which get ENOSYS as with no tracer at all.
    own_rules: Option<InterceptSpec>,
    /// Threads in emulated strict seccomp mode (`crate::strict`).
    confined: HashSet<Pid>,
}

/// Stop signals: a PTRACE_EVENT_STOP carrying one of them is a group-stop.
pub(crate) fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

impl Tracer {
    fn run<S: Supervisor>(&mut self, sup: &mut S) -> Result<ExitStatus, PlatformError> {
        loop {
            // Stops collected while a handler stopped a whole process come first.
            let next = match self.deferred.pop_front() {
                Some(event) => Ok(event),
                None => sys::wait_any(),
            };
            let status = match next {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break,
                Err(e) => return Err(PlatformError::Wait(e)),
            };
            match self.handle(status, sup) {
                Ok(()) | Err(TraceError::Gone(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // ECHILD: nothing left to trace or reap. The root's status was recorded on exit.
        Ok(self.root_status.unwrap_or(ExitStatus::Exited(125)))
    }

    fn handle<S: Supervisor>(&mut self, status: WaitEvent, sup: &mut S) -> Result<(), TraceError> {
        match status {
            WaitEvent::Exited(pid, code) => self.gone(pid, ExitStatus::Exited(code), sup),
            WaitEvent::Signaled(pid, signal, core) => {
                self.gone(pid, ExitStatus::Signaled { signal, core }, sup)
            }
            WaitEvent::Stopped(pid, sig) => {
                // Signal-delivery-stop: deliver the signal as the kernel would have,
                // unless the supervisor asked to see it first and takes it.
                trace!("[pid {pid}] signal {sig}");
                self.threads.insert(pid, ThreadState::Running);
                let mut stopped = Stopped::new(pid);
                if sig == libc::SIGSYS
                    && self.confined.contains(&pid)
                    && crate::strict::is_forbidden_call(pid)
                {
                    debug!("[pid {pid}] forbidden call in strict mode: thread ended");
                    return match crate::strict::end_thread(pid) {
                        crate::strict::Ending::Killed => Ok(()),
                        crate::strict::Ending::Exiting => stopped.cont(0),
                    };
                }
                if self.signals.contains(&sig) && self.offer_signal(&mut stopped, sup)? {
                    return stopped.cont(0);
                }
                // The pid namespace's init: the kernel shields an init from stop signals
                // sent inside its namespace (a guest's `kill -STOP 1`), but not once a
                // tracer re-injects them, and a stopped init would reap nothing. Only
                // those are dropped; a stop sent from outside acts, as it would.
                if pid == self.root
                    && self.guest != Some(pid)
                    && is_stop_signal(sig)
                    && stopped.signal_sent_from_inside()?
                {
                    debug!("[pid {pid}] stop signal {sig} to the namespace's init ignored");
                    return stopped.cont(0);
                }
                stopped.cont(sig)
            }
            WaitEvent::Event(pid, sig, event) => self.event(pid, sig, event, sup),
            WaitEvent::Other(_) => Ok(()),
        }
    }

    fn gone<S: Supervisor>(
        &mut self,
        pid: Pid,
        status: ExitStatus,
        sup: &mut S,
    ) -> Result<(), TraceError> {
        debug!("[pid {pid}] gone: {status:?}");
        self.threads.remove(&pid);
        self.confined.remove(&pid);
        sup.exited(pid.as_raw(), status);
        if Some(pid) == self.guest {
            self.root_status = Some(status);
            signals::root_gone();
        } else if pid == self.root && self.root_status.is_none() {
            // The namespace's init ended before its first child was seen.
            self.root_status = Some(status);
        }
        Ok(())
    }

    fn event<S: Supervisor>(
        &mut self,
        pid: Pid,
        sig: i32,
        event: i32,
        sup: &mut S,
    ) -> Result<(), TraceError> {
        let stopped = Stopped::new(pid);
        match event {
            e if e == Event::PTRACE_EVENT_SECCOMP as i32 => self.seccomp(stopped, sup),
            e if e == Event::PTRACE_EVENT_FORK as i32
                || e == Event::PTRACE_EVENT_VFORK as i32
                || e == Event::PTRACE_EVENT_CLONE as i32 =>
            {
                let msg = stopped.event_msg()?;
                if let Ok(child) = i32::try_from(msg) {
                    let child = Pid::from_raw(child);
                    debug!("[pid {pid}] new thread or process {child}");
                    self.threads.entry(child).or_insert(ThreadState::Starting);
                    if pid == self.root && self.guest.is_none() {
                        // Without a pidfd (a kernel or persona without pidfd_open),
                        // signals sent to compatrun are not passed on; the guest runs on.
                        if let Err(e) = self.adopt_guest(child) {
                            warn!(
                                "[pid {child}] signals to compatrun will not reach the guest: {e}"
                            );
                        }
                    }
                }
                stopped.cont(0)
            }
            e if e == Event::PTRACE_EVENT_EXEC as i32 => {
                if let Ok(former) = stopped.event_msg().map(|m| i32::try_from(m).unwrap_or(0)) {
                    let former = Pid::from_raw(former);
                    if former != pid {
                        self.threads.remove(&former);
                    }
                }
                debug!("[pid {pid}] exec");
                let mut stopped = stopped;
                sup.execed(&mut stopped.guest());
                stopped.cont(0)
            }
            e if e == Event::PTRACE_EVENT_STOP as i32 => {
                match self.threads.insert(pid, ThreadState::Running) {
                    None | Some(ThreadState::Starting) => stopped.cont(0), // attach stop
                    Some(ThreadState::Running) if is_stop_signal(sig) => {
                        trace!("[pid {pid}] group-stop {sig:?}");
                        stopped.listen()?;
                        if Some(pid) == self.guest {
                            if let Ok(sig) = Signal::try_from(sig) {
                                self.mirror_stop(sig);
                            }
                        }
                        Ok(())
                    }
                    Some(ThreadState::Running) => stopped.cont(0),
                }
            }
            _ => {
                mutter(pid, event);
                stopped.cont(0)
            }
        }
    }

    /// Makes `pid` the guest's first process: signals sent to compatrun go to it.
    fn adopt_guest(&mut self, pid: Pid) -> Result<(), PlatformError> {
        let pidfd = sys::pidfd_open(pid).map_err(|source| PlatformError::Spawn {
            op: "pidfd_open",
            source,
        })?;
        signals::set_target(pid.as_raw(), pidfd.as_raw_fd());
        self.guest = Some(pid);
        self.guest_pidfd = Some(pidfd);
        Ok(())
    }

    /// Shows a signal to the supervisor; true if it was suppressed (registers written).
    fn offer_signal<S: Supervisor>(
        &mut self,
        stopped: &mut Stopped,
        sup: &mut S,
    ) -> Result<bool, TraceError> {
        let info = stopped.signal_info()?;
        let (mut regs, full) = stopped.regs()?;
        match sup.signal(
            &mut stopped.guest_at_signal(&mut self.deferred),
            &info,
            &mut regs,
        ) {
            SignalVerdict::Deliver => Ok(false),
            SignalVerdict::Suppress => {
                debug!(
                    "[pid {}] signal {} at {:#x} handled",
                    stopped.pid(),
                    info.signo,
                    info.addr
                );
                stopped.set_regs(&regs, full)?;
                Ok(true)
            }
        }
    }

    fn seccomp<S: Supervisor>(
        &mut self,
        mut stopped: Stopped,
        sup: &mut S,
    ) -> Result<(), TraceError> {
        let pid = stopped.pid();
        let (audit_arch, nr, args, ip) = stopped.seccomp_call()?;
        #[allow(clippy::cast_possible_truncation)] // syscall numbers are 32-bit in seccomp_data
        let nr32 = nr as u32;
        let (arch, nr) = filter::decode(audit_arch, nr32);
        let call = Syscall { arch, nr, args, ip };
        // compatrun's filter catches these by their arguments (`filter::strict`).
        if filter::strict::is_request(&call) {
            return self.strict_request(stopped, &call);
        }
        if self
            .own_rules
            .as_ref()
            .is_some_and(|own| own.rule_for(arch, nr) != crate::Rule::Catch)
        {
            // Not a call compatrun's filter catches: a front end's filter asked for a
            // tracer, and the kernel answers ENOSYS when there is none. compatrun is not
            // that tracer.
            trace!("[pid {pid}] {arch} syscall {nr}: another filter's trace -> ENOSYS");
            stopped.skip_with(-i64::from(libc::ENOSYS))?;
            return stopped.cont(0);
        }
        let mut thread = stopped.guest_in_call(&mut self.deferred);
        let verdict = sup.syscall(&mut thread, &call);
        let left_call = thread.left_call();
        trace!("[pid {pid}] {arch} syscall {nr} -> {verdict:?}");
        match verdict {
            Verdict::Return(value) => stopped.skip_with(value)?,
            Verdict::Forward if left_call => stopped.rewind_call()?,
            Verdict::Forward => {}
        }
        stopped.cont(0)
    }

    /// A request for strict seccomp mode: the thread is confined instead (see
    /// `crate::strict`); the request returns 0, or fails as the kernel would refuse it.
    fn strict_request(&mut self, mut stopped: Stopped, call: &Syscall) -> Result<(), TraceError> {
        let pid = stopped.pid();
        let deferred = &mut self.deferred;
        let result = crate::strict::confine(pid, call, |nr, args| {
            inject::run_syscall_as(pid, deferred, call.arch, nr, args)
        });
        let value = match result {
            Ok(0) => {
                debug!("[pid {pid}] strict seccomp mode emulated");
                self.confined.insert(pid);
                0
            }
            Ok(value) => value,
            Err(ThreadOpError::Gone) => return Err(TraceError::Gone(pid)),
            Err(e) => {
                debug!("[pid {pid}] strict seccomp mode refused: {e}");
                -i64::from(libc::EINVAL)
            }
        };
        stopped.skip_with(value)?;
        stopped.cont(0)
    }

    /// The first process stopped: mirror it to our parent, and on `fg`/`bg` pass the
    /// shell's SIGCONT on if the guest has left our process group.
    fn mirror_stop(&self, sig: Signal) {
        let Some(guest) = self.guest else { return };
        crate::jobctl::mirror_stop(self.tty.as_ref(), guest, sig, || {
            if getpgid(Some(guest)).ok() != Some(getpgrp()) {
                let _ = kill(guest, Signal::SIGCONT);
            }
        });
    }
}

/// Unexpected ptrace events: a guest can cause them, so each is logged at debug level
/// only, with a single warning per run.
fn mutter(pid: Pid, event: i32) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    debug!("[pid {pid}] unexpected ptrace event {event}");
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!("unexpected ptrace events seen; run with --log debug for details");
    }
}
