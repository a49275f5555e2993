//! The seccomp platform's `patch_code`: code written into a process while every other
//! thread of it is stopped, none inside the bytes written.
//!
//! The calling thread waits in its notified call (or is held by the worker), so it runs
//! no user code. The worker seizes every other thread of the process (`PTRACE_SEIZE`,
//! `PTRACE_INTERRUPT`, listed from `/proc/PID/task` again until no new one appears, so
//! a thread cloned meanwhile is caught too), checks that none is stopped at an address
//! inside the bytes to write, writes them through `/proc/PID/mem` (a private copy of the
//! page, as for a debugger), and detaches every one, passing on a signal a thread was
//! stopped for. A thread that cannot be seized (another tracer has it) or stopped within
//! [`STOP_TIMEOUT`] (one waiting in `vfork`) makes the write fail (`Busy`), untouched.
//! A thread whose notified call the interrupt ended restarts it, and is notified again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::debug;
use nix::errno::Errno;
use nix::sys::ptrace::{self as nixptrace, Event, Options};
use nix::unistd::Pid;

use super::held::{Held, Worker};
use crate::contract::ThreadOpError;
use crate::sys::{self, WaitEvent};

/// How long the other threads get to stop.
const STOP_TIMEOUT: Duration = Duration::from_millis(500);

impl Worker {
    /// Writes `data` at `addr` in the process of `tid` (waiting in a notified call, or
    /// held) with every other thread stopped.
    pub(super) fn patch_code(
        &self,
        tid: i32,
        addr: u64,
        data: Vec<u8>,
    ) -> Result<(), ThreadOpError> {
        self.call(move |held| patch(held, tid, addr, &data))
            .unwrap_or(Err(ThreadOpError::Gone))
    }
}

fn patch(held: &Held, tid: i32, addr: u64, data: &[u8]) -> Result<(), ThreadOpError> {
    let tgid = crate::mem::tgid_of(Pid::from_raw(tid)).ok_or(ThreadOpError::Gone)?;
    // Thread id → the signal to pass on when it is let go.
    let mut stopped: HashMap<i32, i32> = HashMap::new();
    let result = stop_others(held, tgid, tid, &mut stopped).and_then(|()| {
        let end = addr.saturating_add(data.len() as u64);
        // The calling thread's own call is answered by the handler's verdict.
        for &t in stopped.keys() {
            check_resume(Pid::from_raw(t), addr, end)?;
        }
        crate::mem::write_force(Pid::from_raw(tgid), addr, data)?;
        Ok(())
    });
    for (t, sig) in stopped {
        let _ = let_go(Pid::from_raw(t), sig);
    }
    result
}

/// `-ERESTARTSYS`, `-ERESTARTNOINTR`, `-ERESTARTNOHAND`, `-ERESTART_RESTARTBLOCK`: a
/// call the stop interrupted, which restarts (two bytes back) when the thread resumes.
const RESTARTS: [i64; 4] = [-512, -513, -514, -516];

/// Fails (`Busy`) if `pid` would resume inside `(addr, end)`. A thread whose call made
/// from the instruction ending at `end` would restart (a notified call the interrupt
/// ended) is instead set to start over at `addr`, its call cancelled: the bytes written
/// there replace that instruction and the ones before it from `addr` on, and the
/// patcher only rewrites from a function's entry, whose state the thread still has.
fn check_resume(pid: Pid, addr: u64, end: u64) -> Result<(), ThreadOpError> {
    let mut r = match nixptrace::getregs(pid) {
        Ok(r) => r,
        Err(Errno::ESRCH) => return Ok(()),
        Err(e) => {
            return Err(ThreadOpError::Failed {
                op: "GETREGS",
                errno: e as i32,
            })
        }
    };
    #[allow(clippy::cast_possible_wrap)] // signed register values
    let restarting = (r.orig_rax as i64) >= 0 && RESTARTS.contains(&(r.rax as i64));
    let resume = if restarting {
        r.rip.wrapping_sub(2)
    } else {
        r.rip
    };
    if resume <= addr || resume >= end {
        return Ok(());
    }
    if restarting && r.rip == end {
        debug!("[pid {pid}] its call from the patched code starts over at {addr:#x}");
        r.rip = addr;
        r.orig_rax = u64::MAX;
        return nixptrace::setregs(pid, r).map_err(|e| ThreadOpError::Failed {
            op: "SETREGS",
            errno: e as i32,
        });
    }
    debug!("[pid {pid}] would resume at {resume:#x}, inside the code to patch");
    Err(ThreadOpError::Busy)
}

/// Seizes and stops every thread of `tgid` but `tid` and those the worker holds.
fn stop_others(
    held: &Held,
    tgid: i32,
    tid: i32,
    stopped: &mut HashMap<i32, i32>,
) -> Result<(), ThreadOpError> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let new: Vec<i32> = threads(tgid)?
            .into_iter()
            .filter(|&t| t != tid && !held.holds(t) && !stopped.contains_key(&t))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        for t in new {
            if held.confines(t) {
                return Err(ThreadOpError::Busy);
            }
            let pid = Pid::from_raw(t);
            match nixptrace::seize(pid, Options::PTRACE_O_EXITKILL) {
                Ok(()) => {}
                Err(Errno::ESRCH) => continue, // gone meanwhile
                Err(_) => return Err(ThreadOpError::Busy), // another tracer has it
            }
            stopped.insert(t, 0);
            if let Err(e) = nixptrace::interrupt(pid) {
                if e == Errno::ESRCH {
                    continue;
                }
                return Err(ThreadOpError::Busy);
            }
            match wait_stop(pid, deadline)? {
                Some(sig) => {
                    stopped.insert(t, sig);
                }
                None => {
                    stopped.remove(&t); // it ended
                }
            }
        }
    }
}

/// Waits for `pid`'s stop: `Some(signal to pass on)`, or `None` if it ended.
fn wait_stop(pid: Pid, deadline: Instant) -> Result<Option<i32>, ThreadOpError> {
    let mut pending = 0;
    loop {
        match sys::inject::wait_thread(pid, true) {
            Ok(Some(WaitEvent::Event(_, _, e))) if e == Event::PTRACE_EVENT_STOP as i32 => {
                return Ok(Some(pending));
            }
            // A signal on its way: keep it for the detach; the thread is stopped now.
            Ok(Some(WaitEvent::Stopped(_, sig))) => {
                pending = sig;
                return Ok(Some(pending));
            }
            Ok(Some(WaitEvent::Exited(..) | WaitEvent::Signaled(..))) | Err(Errno::ECHILD) => {
                return Ok(None)
            }
            Ok(Some(_)) => {
                let _ = sys::ptrace_cont(pid, 0);
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Ok(None) => return Err(ThreadOpError::Busy),
            Err(e) => {
                return Err(ThreadOpError::Failed {
                    op: "waitpid",
                    errno: e as i32,
                })
            }
        }
    }
}

/// Detaches `pid`, stopped by [`stop_others`], passing on `sig`; if the kernel does
/// not see it stopped yet, waits for its next report first.
fn let_go(pid: Pid, sig: i32) -> nix::Result<()> {
    let mut sig = sig;
    loop {
        match sys::ptrace_detach(pid, sig) {
            Ok(()) => return Ok(()),
            Err(Errno::ESRCH) => {}
            Err(e) => return Err(e),
        }
        match sys::inject::wait_thread(pid, false) {
            Ok(Some(WaitEvent::Exited(..) | WaitEvent::Signaled(..))) | Err(Errno::ECHILD) => {
                return Ok(())
            }
            Ok(Some(e)) => {
                debug!("[pid {pid}] stopped again before its detach: {e:?}");
                if let WaitEvent::Stopped(_, s) = e {
                    sig = s;
                }
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The thread ids of process `tgid`.
fn threads(tgid: i32) -> Result<Vec<i32>, ThreadOpError> {
    let dir = std::fs::read_dir(format!("/proc/{tgid}/task")).map_err(|_| ThreadOpError::Gone)?;
    Ok(dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect())
}
