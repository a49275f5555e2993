//! What the ptrace backend does for a handler beyond memory access: run one system call
//! in a thread stopped at a signal, and write code with every other thread of the
//! process stopped.
//!
//! **Running a system call.** The thread's registers, signal mask and pending siginfo
//! are saved; every blockable signal is blocked (so none is dequeued, and lost, while
//! the call runs); the instruction pointer is moved to a `syscall` instruction in the
//! process's own vDSO (any `0f 05` byte pair: single-stepping from there executes exactly
//! that one instruction) with the call's number and arguments in their registers; one
//! `PTRACE_SINGLESTEP` runs it, through the seccomp filter like any other call; then
//! everything saved is put back. Nothing is written into the guest.
//!
//! **Stopping the other threads.** Every other thread of the process gets
//! `PTRACE_INTERRUPT` and is waited for; whatever stop each reports is queued for the
//! tracer loop, which handles it (and so resumes the thread) after the handler returns,
//! exactly as if it had been reported then. Threads the kernel cannot stop in time (one
//! waiting in `vfork` for its child) make the write fail rather than wait for ever.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use crate::contract::{Arch, ThreadOpError};
use crate::sys::inject::{get_sigmask, set_sigmask, wait_thread};
use crate::sys::WaitEvent;

/// Stops the tracer loop must still handle, collected while a handler ran.
pub(crate) type Deferred = VecDeque<WaitEvent>;

/// The code segment selector of 64-bit user code on x86_64.
const USER_CS_64: u64 = 0x33;
/// The code segment selector of 32-bit user code on x86_64.
const USER_CS_32: u64 = 0x23;
/// How long the other threads of a process get to stop before a patch is given up.
const STOP_TIMEOUT: Duration = Duration::from_millis(500);
/// Single steps tried before a system call is given up (each extra one follows a stop
/// that ran no instruction: a seccomp stop, a group-stop).
const MAX_STEPS: usize = 8;

/// Turns the errno of ptrace operation `op` into a [`ThreadOpError`] (ESRCH: the thread
/// is gone).
pub(crate) fn failed(op: &'static str) -> impl Fn(Errno) -> ThreadOpError {
    move |errno| match errno {
        Errno::ESRCH => ThreadOpError::Gone,
        errno => ThreadOpError::Failed {
            op,
            errno: errno as i32,
        },
    }
}

/// The address of a `syscall` instruction (bytes `0f 05`) in `pid`'s vDSO.
pub(crate) fn syscall_insn_in_vdso(pid: Pid) -> Option<u64> {
    insn_in_vdso(pid, [0x0f, 0x05])
}

/// The address of an `int $0x80` instruction (bytes `cd 80`) in `pid`'s vDSO (a 32-bit
/// process's has one in `__kernel_vsyscall` and its signal-return code).
pub(crate) fn int80_in_vdso(pid: Pid) -> Option<u64> {
    insn_in_vdso(pid, [0xcd, 0x80])
}

/// The address of the two-byte instruction `insn` in `pid`'s vDSO.
fn insn_in_vdso(pid: Pid, insn: [u8; 2]) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let range = maps
        .lines()
        .find(|l| l.trim_end().ends_with("[vdso]"))?
        .split_whitespace()
        .next()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let len = usize::try_from(end.checked_sub(start)?).ok()?.min(1 << 16);
    let mut code = vec![0u8; len];
    crate::mem::read(pid, start, &mut code).ok()?;
    let at = code.windows(2).position(|w| w == insn)?;
    start.checked_add(u64::try_from(at).ok()?)
}

/// Runs x86_64 system call `nr` in `pid`, which is in a signal-delivery stop.
pub(crate) fn run_syscall(
    pid: Pid,
    deferred: &mut Deferred,
    nr: u32,
    args: [u64; 6],
) -> Result<i64, ThreadOpError> {
    run_syscall_as(pid, deferred, Arch::X86_64, nr, args)
}

/// Runs system call `nr` of ABI `arch` in `pid`: an x86_64 call in a thread running
/// 64-bit code (through `syscall`), an i386 one in a thread running 32-bit code (through
/// `int $0x80`, arguments in ebx, ecx, edx, esi, edi, ebp). Anything else is
/// [`ThreadOpError::Unsupported`].
pub(crate) fn run_syscall_as(
    pid: Pid,
    deferred: &mut Deferred,
    arch: Arch,
    nr: u32,
    args: [u64; 6],
) -> Result<i64, ThreadOpError> {
    let saved = ptrace::getregs(pid).map_err(failed("GETREGS"))?;
    let at = match (arch, saved.cs) {
        (Arch::X86_64, USER_CS_64) => syscall_insn_in_vdso(pid),
        (Arch::I386, USER_CS_32) => int80_in_vdso(pid),
        _ => None,
    }
    .ok_or(ThreadOpError::Unsupported)?;
    let info = ptrace::getsiginfo(pid).map_err(failed("GETSIGINFO"))?;
    let mask = get_sigmask(pid).map_err(failed("GETSIGMASK"))?;
    set_sigmask(pid, u64::MAX).map_err(failed("SETSIGMASK"))?;
    let mut regs = saved;
    regs.rip = at;
    regs.rax = u64::from(nr);
    regs.orig_rax = u64::MAX; // not in a system call: nothing to restart
    if arch == Arch::I386 {
        [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp] = args;
    } else {
        [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9] = args;
    }
    let result = ptrace::setregs(pid, regs)
        .map_err(failed("SETREGS"))
        .and_then(|()| step_through(pid, at, deferred));
    if result == Err(ThreadOpError::Gone) {
        return result;
    }
    ptrace::setregs(pid, saved).map_err(failed("SETREGS"))?;
    set_sigmask(pid, mask).map_err(failed("SETSIGMASK"))?;
    // The thread now sits in the single step's SIGTRAP stop: give it back the siginfo
    // of the signal it was stopped for, which resuming it may still deliver.
    ptrace::setsiginfo(pid, &info).map_err(failed("SETSIGINFO"))?;
    // An i386 result is 32 bits wide.
    #[allow(clippy::cast_possible_truncation)]
    result.map(|r| {
        if arch == Arch::I386 {
            i64::from(r as i32)
        } else {
            r
        }
    })
}

/// Single-steps the `syscall` instruction at `at` until it has run; its result.
fn step_through(pid: Pid, at: u64, deferred: &mut Deferred) -> Result<i64, ThreadOpError> {
    let done = at.wrapping_add(2);
    for _ in 0..MAX_STEPS {
        ptrace::step(pid, None).map_err(failed("SINGLESTEP"))?;
        let event = wait_thread(pid, false)
            .map_err(failed("waitpid"))?
            .ok_or(ThreadOpError::Gone)?;
        match event {
            WaitEvent::Stopped(_, libc::SIGTRAP) => {
                let regs = ptrace::getregs(pid).map_err(failed("GETREGS"))?;
                if regs.rip == done {
                    #[allow(clippy::cast_possible_wrap)] // rax holds a signed result
                    return Ok(regs.rax as i64);
                }
            }
            WaitEvent::Exited(..) | WaitEvent::Signaled(..) => {
                deferred.push_back(event);
                return Err(ThreadOpError::Gone);
            }
            // A synchronous signal from the step itself: the call did not run.
            WaitEvent::Stopped(_, sig) => {
                log::debug!("[pid {pid}] signal {sig} while running an injected call");
                return Err(ThreadOpError::Failed {
                    op: "single-step",
                    errno: 0,
                });
            }
            // A seccomp stop (the filter caught the call: it runs as made) or a
            // group-stop (SIGSTOP cannot be blocked): step on.
            WaitEvent::Event(..) | WaitEvent::Other(_) => {}
        }
    }
    Err(ThreadOpError::Failed {
        op: "single-step",
        errno: 0,
    })
}

/// The thread ids of process `tgid` that can still run (not zombies).
pub(crate) fn live_threads(tgid: i32) -> Result<Vec<Pid>, ThreadOpError> {
    let dir = std::fs::read_dir(format!("/proc/{tgid}/task")).map_err(|_| ThreadOpError::Gone)?;
    Ok(dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|tid| {
            // Field 3 of stat, after the parenthesised command name.
            std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/stat"))
                .ok()
                .and_then(|s| {
                    let state = s.get(s.rfind(')')? + 2..)?.chars().next()?;
                    Some(!matches!(state, 'Z' | 'X' | 'x'))
                })
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect())
}

/// Stops every thread of `pid`'s process but `pid` (stopped already), queueing what each
/// reports for the tracer loop.
fn stop_others(pid: Pid, tgid: i32, deferred: &mut Deferred) -> Result<(), ThreadOpError> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    // Threads whose stop is queued already are not running.
    let mut seen: HashSet<Pid> = deferred.iter().map(WaitEvent::pid).collect();
    seen.insert(pid);
    loop {
        // Until the set is closed: a thread may have cloned another before it stopped
        // (the new one starts stopped, but is interrupted and waited for all the same).
        let new: Vec<Pid> = live_threads(tgid)?
            .into_iter()
            .filter(|t| seen.insert(*t))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut waiting = Vec::new();
        for t in new {
            match ptrace::interrupt(t) {
                Ok(()) => waiting.push(t),
                Err(Errno::ESRCH) => {} // gone meanwhile
                Err(e) => return Err(failed("INTERRUPT")(e)),
            }
        }
        for t in waiting {
            loop {
                match wait_thread(t, true) {
                    Ok(Some(event)) => {
                        deferred.push_back(event);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    // Its stop comes later and is handled as a stray one.
                    Ok(None) => return Err(ThreadOpError::Busy),
                    Err(Errno::ECHILD) => break, // reaped meanwhile
                    Err(e) => return Err(failed("waitpid")(e)),
                }
            }
        }
    }
}

/// Writes `data` at `addr` in `pid`'s process with every other thread stopped and none
/// about to run an instruction that starts inside the bytes written (one stopped
/// between two of the instructions replaced would resume in the middle of a new one).
pub(crate) fn patch_code(
    pid: Pid,
    deferred: &mut Deferred,
    addr: u64,
    data: &[u8],
) -> Result<(), ThreadOpError> {
    let tgid = crate::mem::tgid_of(pid).ok_or(ThreadOpError::Gone)?;
    stop_others(pid, tgid, deferred)?;
    let end = addr.saturating_add(data.len() as u64);
    for t in live_threads(tgid)? {
        match ptrace::getregs(t) {
            Ok(r) if r.rip > addr && r.rip < end => {
                log::debug!(
                    "[pid {t}] stopped at {:#x}, inside the code to patch",
                    r.rip
                );
                return Err(ThreadOpError::Busy);
            }
            Ok(_) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(failed("GETREGS")(e)),
        }
    }
    crate::mem::write_force(pid, addr, data)?;
    Ok(())
}
