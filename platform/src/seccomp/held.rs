//! The seccomp platform's `run_syscall`: running system calls in a thread that waits in
//! a notified call, done by one worker thread that owns every ptrace request for it.
//!
//! A thread waiting for a notification's answer sits in the kernel. To run a call in it,
//! the worker seizes it (`PTRACE_SEIZE`) and asks for a stop (`PTRACE_INTERRUPT`): the
//! wait ends as a signal would end it, the kernel drops the notification (its id is no
//! longer valid), and the thread stops on its way out with its call set up to restart
//! (`rax` = -ERESTARTSYS, `orig_rax` = the call's number). From that stop the ptrace
//! backend's injection runs each call (`ptrace::inject`), registers, signal mask and
//! siginfo restored after each. Once the handler has decided, the worker applies the
//! verdict in the registers and detaches: a returned value goes into `rax` with the
//! restart cancelled (`orig_rax` = -1); a forwarded call restarts as the kernel restarts
//! a call a signal interrupted, and so is notified again.
//!
//! A thread that asks for strict seccomp mode is held the same way and confined
//! (`crate::strict`); the worker then keeps it seized for the rest of its life (it can
//! never fork, clone or exec again, and its allowed calls make no stop). Every
//! [`WATCH`] it looks for their reports: a forbidden call's SIGSYS ends the thread as
//! strict mode would; any other signal is delivered untouched, and a group-stop stays a
//! stop (`PTRACE_LISTEN`).
//!
//! ptrace requests must come from the tracing thread, so the worker does all of them; the
//! supervisor thread hands it jobs and waits for each answer. The worker waits only for
//! its own tracees (`__WNOTHREAD`), so neither the exec hook's tracee nor the namespace's
//! init is disturbed.

use std::collections::HashSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use log::debug;
use nix::errno::Errno;
use nix::sys::ptrace::{self as nixptrace, Event, Options};
use nix::unistd::Pid;

use crate::contract::{Syscall, ThreadOpError};
use crate::ptrace::inject::{self, failed, Deferred};
use crate::ptrace::Stopped;
use crate::sys::{self, WaitEvent};

/// `-ERESTARTSYS`, what a notified call returns when its wait is interrupted.
const ERESTARTSYS: i64 = -512;

/// How often the worker looks for reports of confined threads (only while there are).
const WATCH: Duration = Duration::from_millis(5);

/// What the worker keeps: the threads it holds stopped for a handler, and the confined
/// threads it traces.
#[derive(Debug, Default)]
pub(super) struct Held {
    threads: HashSet<i32>,
    confined: HashSet<i32>,
}

type Job = Box<dyn FnOnce(&mut Held) + Send>;

/// The supervisor thread's handle on the worker; dropping it ends the worker.
#[derive(Debug)]
pub(super) struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker thread.
    pub(super) fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("compatrun-ptrace".into())
            .spawn(move || {
                sys::signals::block_forwarded_in_this_thread();
                let mut held = Held::default();
                loop {
                    let job = if held.confined.is_empty() {
                        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    } else {
                        rx.recv_timeout(WATCH)
                    };
                    match job {
                        Ok(job) => job(&mut held),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    held.watch();
                }
                // The run is over: nothing may stay stopped.
                for tid in held.threads.drain() {
                    release(Pid::from_raw(tid), None);
                }
            })?;
        Ok(Worker {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Runs `job` on the worker thread and returns its answer (`None` if the worker is
    /// gone, which only a panic in it can cause).
    pub(super) fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Held) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |held| {
            let _ = reply_tx.send(job(held));
        });
        self.tx.as_ref()?.send(job).ok()?;
        reply_rx.recv().ok()
    }

    /// Runs x86_64 call `nr` with `args` in `tid`, which waits in notified call `call_nr`
    /// (seized and stopped first if it is not held yet).
    pub(super) fn run_syscall(
        &self,
        tid: i32,
        call_nr: u32,
        nr: u32,
        args: [u64; 6],
    ) -> Result<i64, ThreadOpError> {
        self.call(move |held| held.run_syscall(tid, call_nr, nr, args))
            .unwrap_or(Err(ThreadOpError::Gone))
    }

    /// Answers strict-mode request `call` of `tid` (see `crate::strict`): true if it was
    /// answered (through the registers), false if the thread could not be seized (the
    /// notification is then still to be answered).
    pub(super) fn confine(&self, tid: i32, call: Syscall) -> bool {
        self.call(move |held| held.confine(tid, call))
            .unwrap_or(false)
    }

    /// Ends the hold on `tid`, if the worker holds it: the call returns `value`, or
    /// (`None`) restarts. False if the worker does not hold it (the notification is then
    /// still to be answered).
    pub(super) fn finish(&self, tid: i32, value: Option<i64>) -> bool {
        self.call(move |held| held.finish(tid, value))
            .unwrap_or(false)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Held {
    fn run_syscall(
        &mut self,
        tid: i32,
        call_nr: u32,
        nr: u32,
        args: [u64; 6],
    ) -> Result<i64, ThreadOpError> {
        let pid = Pid::from_raw(tid);
        if !self.threads.contains(&tid) {
            hold(pid, call_nr)?;
            self.threads.insert(tid);
        }
        let mut deferred = Deferred::new();
        let result = inject::run_syscall(pid, &mut deferred, nr, args);
        if result == Err(ThreadOpError::Gone) {
            // Dying (or dead: its end is then in `deferred`, already waited for).
            self.threads.remove(&tid);
            if deferred.is_empty() {
                release(pid, None);
            }
        }
        result
    }

    fn confine(&mut self, tid: i32, call: Syscall) -> bool {
        let pid = Pid::from_raw(tid);
        match hold(pid, call.nr) {
            Ok(()) => {}
            // Not seized (a debugger in the guest traces it): the listener answers.
            Err(ThreadOpError::Failed { op: "SEIZE", .. }) => return false,
            Err(_) => return true,
        }
        let mut deferred = Deferred::new();
        let result = crate::strict::confine(pid, &call, |nr, args| {
            inject::run_syscall_as(pid, &mut deferred, call.arch, nr, args)
        });
        match result {
            Ok(0) => {
                debug!("[pid {tid}] strict seccomp mode emulated");
                if answer(pid, 0)
                    .and_then(|()| sys::ptrace_cont(pid, 0))
                    .is_ok()
                {
                    self.confined.insert(tid);
                } else {
                    release(pid, None);
                }
            }
            Ok(value) => release(pid, Some(value)),
            Err(ThreadOpError::Gone) if !deferred.is_empty() => {}
            Err(e) => {
                debug!("[pid {tid}] strict seccomp mode refused: {e}");
                release(pid, Some(-i64::from(libc::EINVAL)));
            }
        }
        true
    }

    /// Handles what the confined threads report, without waiting.
    fn watch(&mut self) {
        while !self.confined.is_empty() {
            let flags = libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG;
            let event = match sys::inject::wait_flags(Pid::from_raw(-1), flags) {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => return,
            };
            let pid = event.pid();
            let tid = pid.as_raw();
            let resumed = match event {
                WaitEvent::Exited(..) | WaitEvent::Signaled(..) => {
                    self.confined.remove(&tid);
                    self.threads.remove(&tid);
                    continue;
                }
                _ if !self.confined.contains(&tid) => continue, // held: a job resumes it
                WaitEvent::Stopped(_, libc::SIGSYS) if crate::strict::is_forbidden_call(pid) => {
                    debug!("[pid {tid}] forbidden call in strict mode: thread ended");
                    match crate::strict::end_thread(pid) {
                        crate::strict::Ending::Killed => Ok(()),
                        crate::strict::Ending::Exiting => sys::ptrace_cont(pid, 0),
                    }
                }
                WaitEvent::Stopped(_, sig) => sys::ptrace_cont(pid, sig),
                WaitEvent::Event(_, sig, e)
                    if e == Event::PTRACE_EVENT_STOP as i32
                        && crate::ptrace::is_stop_signal(sig) =>
                {
                    sys::ptrace_listen(pid)
                }
                WaitEvent::Event(..) | WaitEvent::Other(_) => sys::ptrace_cont(pid, 0),
            };
            if let Err(e) = resumed {
                debug!("[pid {tid}] confined thread not resumed ({e})");
            }
        }
    }

    /// Whether the worker holds `tid` stopped for a handler.
    pub(super) fn holds(&self, tid: i32) -> bool {
        self.threads.contains(&tid)
    }

    /// Whether the worker traces `tid` as a thread confined to strict mode.
    pub(super) fn confines(&self, tid: i32) -> bool {
        self.confined.contains(&tid)
    }

    fn finish(&mut self, tid: i32, value: Option<i64>) -> bool {
        if !self.threads.remove(&tid) {
            return false;
        }
        release(Pid::from_raw(tid), value);
        true
    }
}

/// Seizes `tid`, waiting in notified call `call_nr`, and stops it on its way out of the
/// call. Fails (and lets it go) if the thread was no longer waiting in that call.
fn hold(pid: Pid, call_nr: u32) -> Result<(), ThreadOpError> {
    nixptrace::seize(pid, Options::PTRACE_O_EXITKILL).map_err(failed("SEIZE"))?;
    if let Err(e) = nixptrace::interrupt(pid) {
        release(pid, None);
        return Err(failed("INTERRUPT")(e));
    }
    loop {
        match inject_wait(pid)? {
            WaitEvent::Event(_, _, e) if e == Event::PTRACE_EVENT_STOP as i32 => break,
            WaitEvent::Exited(..) | WaitEvent::Signaled(..) => return Err(ThreadOpError::Gone),
            // A signal ended the wait first and is being delivered: the call is no
            // longer waiting; let the signal go on.
            WaitEvent::Stopped(_, sig) => {
                let _ = Stopped::new(pid).detach(sig);
                return Err(ThreadOpError::Gone);
            }
            WaitEvent::Event(..) | WaitEvent::Other(_) => {
                let _ = sys::ptrace_cont(pid, 0);
            }
        }
    }
    let regs = nixptrace::getregs(pid).map_err(failed("GETREGS"))?;
    #[allow(clippy::cast_possible_wrap)] // rax holds a signed result
    let waiting = regs.orig_rax == u64::from(call_nr) && regs.rax as i64 == ERESTARTSYS;
    if !waiting {
        debug!("[pid {pid}] not waiting in call {call_nr} any more; let go");
        release(pid, None);
        return Err(ThreadOpError::Gone);
    }
    Ok(())
}

/// The next report about `pid`, waiting for it.
fn inject_wait(pid: Pid) -> Result<WaitEvent, ThreadOpError> {
    match inject_wait_raw(pid) {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(ThreadOpError::Gone),
        Err(e) => Err(failed("waitpid")(e)),
    }
}

fn inject_wait_raw(pid: Pid) -> nix::Result<Option<WaitEvent>> {
    match crate::sys::inject::wait_thread(pid, false) {
        Err(Errno::ECHILD) => Ok(None),
        other => other,
    }
}

/// Makes the call `pid` (stopped by the worker) was held in return `value`, with no
/// restart.
fn answer(pid: Pid, value: i64) -> nix::Result<()> {
    let mut regs = nixptrace::getregs(pid)?;
    regs.orig_rax = u64::MAX; // no restart
    #[allow(clippy::cast_sign_loss)] // rax holds a signed result
    {
        regs.rax = value as u64;
    }
    nixptrace::setregs(pid, regs)
}

/// Detaches `pid` (stopped by the worker) with its call returning `value`, or, for
/// `None`, with its registers as they are (a waiting call then restarts). If the thread
/// left its stop to die, its end is waited for here: left unwaited, a traced thread's
/// death would never reach its parent.
fn release(pid: Pid, value: Option<i64>) {
    if let Some(value) = value {
        let _ = answer(pid, value);
    }
    if Stopped::new(pid).detach(0).is_ok() {
        return;
    }
    loop {
        match inject_wait_raw(pid) {
            Ok(Some(WaitEvent::Exited(..) | WaitEvent::Signaled(..)) | None) => return,
            Ok(Some(WaitEvent::Stopped(..) | WaitEvent::Event(..))) => {
                if sys::ptrace_detach(pid, 0).is_ok() {
                    return;
                }
            }
            Ok(Some(WaitEvent::Other(_))) => {}
            Err(e) => {
                debug!("[pid {pid}] wait failed ({e})");
                return;
            }
        }
    }
}
