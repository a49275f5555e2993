//! The raw requests behind running a system call in a stopped tracee and stopping a
//! process's other threads: the tracee's signal mask (`PTRACE_GETSIGMASK`,
//! `PTRACE_SETSIGMASK`, which `nix` does not wrap) and a wait for one given thread.

use nix::errno::Errno;
use nix::unistd::Pid;

use super::{decode_status, WaitEvent};

/// The kernel's `sigset_t` for x86_64: one 64-bit word.
const SIGSET_SIZE: usize = std::mem::size_of::<u64>();

/// The blocked-signal mask of a stopped tracee.
pub fn get_sigmask(pid: Pid) -> nix::Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: PTRACE_GETSIGMASK writes exactly `addr` (SIGSET_SIZE) bytes to `data`,
    // which points at a local u64 of that size; the kernel checks that `pid` is our
    // stopped tracee.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGMASK,
            pid.as_raw(),
            SIGSET_SIZE as *mut libc::c_void,
            std::ptr::from_mut(&mut mask).cast::<libc::c_void>(),
        )
    };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(mask)
    }
}

/// Sets the blocked-signal mask of a stopped tracee (the kernel never blocks SIGKILL
/// and SIGSTOP, whatever the mask says).
pub fn set_sigmask(pid: Pid, mask: u64) -> nix::Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads exactly `addr` (SIGSET_SIZE) bytes from `data`,
    // which points at a local u64 of that size that outlives the call.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGMASK,
            pid.as_raw(),
            SIGSET_SIZE as *mut libc::c_void,
            std::ptr::from_ref(&mask).cast_mut().cast::<libc::c_void>(),
        )
    };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `waitpid(tid, &status, __WALL [| WNOHANG])`, decoded; `None` when `nohang` and the
/// thread has nothing to report yet.
pub fn wait_thread(tid: Pid, nohang: bool) -> nix::Result<Option<WaitEvent>> {
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    wait_flags(tid, flags)
}

/// `waitpid(tid, &status, flags)`, decoded, retried on EINTR; `None` when `WNOHANG` is in
/// `flags` and nothing is to be reported yet.
pub fn wait_flags(tid: Pid, flags: libc::c_int) -> nix::Result<Option<WaitEvent>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes one int through the pointer, which points at a local.
        let pid = unsafe { libc::waitpid(tid.as_raw(), &mut status, flags) };
        match pid {
            0 => return Ok(None),
            p if p > 0 => return Ok(Some(decode_status(Pid::from_raw(p), status))),
            _ => match Errno::last() {
                Errno::EINTR => {}
                e => return Err(e),
            },
        }
    }
}
