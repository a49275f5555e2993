//! Strict seccomp mode, emulated for guest threads: answering a request by confining the
//! thread ([`confine`]) and ending a confined thread that makes a forbidden call
//! ([`end_thread`]). Both backends call these with the thread stopped under their own
//! ptrace (the seccomp backend seizes the requesting thread, and keeps it seized for the
//! rest of its life, for exactly this); the filters are in `filter::strict`.
//!
//! **Confining.** The thread installs [`filter::strict::confinement`] on itself, through
//! injected calls of its own ABI (x86_64 through `syscall`, i386 through `int $0x80`, the
//! `struct sock_fprog` laid out for that ABI): the program is written into the thread's stack below its red zone (or,
//! if that page is not there, into a page it maps and unmaps meanwhile) and installed
//! with `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)`. Installing a filter needs
//! `CAP_SYS_ADMIN` or no_new_privs, where strict mode needs neither; a thread with
//! neither gets no_new_privs first. That is the least visible way: a confined thread can
//! never exec again, nor read its own flags, so only another process reading its
//! `/proc/PID/task/TID/status` sees `NoNewPrivs: 1`.
//!
//! As natively, the request fails with EINVAL when the thread already has a filter of its
//! own (one more than compatrun's), and `seccomp(SECCOMP_SET_MODE_STRICT)` with flags or
//! arguments fails with EINVAL.
//!
//! **Ending.** Natively the kernel ends only the calling thread, with `do_exit(SIGKILL)`.
//! From outside, a SIGKILL ends the whole process; so when the thread is its process's
//! last, the process gets SIGKILL (its parent sees exactly what it sees natively), and
//! otherwise the thread is made to call `exit(0)` (its signals blocked first; `exit` of
//! its ABI), so the
//! other threads go on. What differs: a thread group leader ended this way while other
//! threads live has exit code 0 where natively it has SIGKILL, which the parent sees only
//! if the other threads then end one by one rather than by `exit_group`.

use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::contract::{Arch, Syscall, ThreadOpError};
use crate::filter::{self, strict};
use crate::ptrace::inject::failed;

const EINVAL: i64 = -(libc::EINVAL as i64);
const EACCES: i64 = -(libc::EACCES as i64);
const PR_SET_SECCOMP: u64 = 22;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const SECCOMP_MODE_FILTER: u64 = 2;
/// The code segment selector of 32-bit user code on x86_64.
const USER_CS_32: u64 = 0x23;

/// The calls (and `struct sock_fprog` layout) of one ABI.
#[derive(Clone, Copy, Debug)]
struct Abi {
    prctl: u32,
    seccomp: u32,
    /// `mmap` (x86_64) or `mmap2` (i386): the same arguments for an offset of 0.
    mmap: u32,
    munmap: u32,
    exit: u64,
    /// Where `sock_fprog.filter` sits (after `len` and padding), and its size.
    filter_at: usize,
    pointer: usize,
}

const ABI_64: Abi = Abi {
    prctl: strict::PRCTL,
    seccomp: strict::SECCOMP,
    mmap: 9,
    munmap: 11,
    exit: 60,
    filter_at: 8,
    pointer: 8,
};
const ABI_32: Abi = Abi {
    prctl: strict::PRCTL_32,
    seccomp: strict::SECCOMP_32,
    mmap: 192,
    munmap: 91,
    exit: 1,
    filter_at: 4,
    pointer: 4,
};

fn abi(arch: Arch) -> Abi {
    if arch == Arch::I386 {
        ABI_32
    } else {
        ABI_64
    }
}
/// The x86_64 red zone below the stack pointer, which leaf code may be using.
const RED_ZONE: u64 = 128;
const PAGE: u64 = 4096;

/// `Seccomp_filters` of `/proc/WHO/status` (0 if unreadable).
fn filters(who: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/{who}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp_filters:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Room for the `struct sock_fprog` before the program (either ABI's).
const HEADER: u64 = 16;

/// The `struct sock_fprog` of `abi` for a program at `at`, padded to [`HEADER`] bytes,
/// followed by the program: what goes into guest memory at `at - HEADER`.
fn image(abi: Abi, prog: &[filter::Insn], at: u64) -> Vec<u8> {
    let mut bytes = vec![0; 16];
    let len = u16::try_from(prog.len()).unwrap_or(u16::MAX);
    bytes[..2].copy_from_slice(&len.to_ne_bytes());
    let ptr = at.to_ne_bytes();
    bytes[abi.filter_at..abi.filter_at + abi.pointer].copy_from_slice(&ptr[..abi.pointer]);
    for insn in prog {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    bytes
}

/// Answers strict-mode request `call` of `pid` (stopped in it under the caller's ptrace),
/// running calls in it with `run`: the value the request returns (0: the thread is
/// confined from now on).
pub(crate) fn confine(
    pid: Pid,
    call: &Syscall,
    mut run: impl FnMut(u32, [u64; 6]) -> Result<i64, ThreadOpError>,
) -> Result<i64, ThreadOpError> {
    let abi = abi(call.arch);
    if call.nr == abi.seccomp && (call.args[1] & 0xffff_ffff != 0 || call.args[2] != 0) {
        return Ok(EINVAL);
    }
    // A filter of its own besides compatrun's (which is one more than compatrun has).
    if filters(&pid.to_string()) > filters("self") + 1 {
        return Ok(EINVAL);
    }
    let prog = strict::confinement();
    let size = HEADER + 8 * prog.len() as u64;
    let sp = ptrace::getregs(pid).map_err(failed("GETREGS"))?.rsp;
    let below = sp.wrapping_sub(RED_ZONE + size) & !15;
    let fits = below < sp && (call.arch != Arch::I386 || below + size <= 1 << 32);
    let on_stack =
        fits && crate::mem::write(pid, below, &image(abi, &prog, below + HEADER)).is_ok();
    let (fprog, mapped) = if on_stack {
        (below, None)
    } else {
        // The stack's page below is not there: a page of its own, for the moment.
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let no_fd = if call.arch == Arch::I386 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let page = run(abi.mmap, [0, PAGE, prot, flags, no_fd, 0])?;
        let page = u64::try_from(page).map_err(|_| ThreadOpError::Failed {
            op: "mmap",
            errno: i32::try_from(-page).unwrap_or(0),
        })?;
        if let Err(e) = crate::mem::write(pid, page, &image(abi, &prog, page + HEADER)) {
            let _ = run(abi.munmap, [page, PAGE, 0, 0, 0, 0]);
            return Err(e.into());
        }
        (page, Some(page))
    };
    let install = [PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0, 0];
    let mut result = run(abi.prctl, install);
    if result == Ok(EACCES) && run(abi.prctl, [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0]) == Ok(0) {
        result = run(abi.prctl, install);
    }
    if let Some(page) = mapped {
        let _ = run(abi.munmap, [page, PAGE, 0, 0, 0, 0]);
    }
    result
}

/// Whether `pid`, in a signal-delivery stop for SIGSYS, is stopped for a call its
/// confinement forbids.
pub(crate) fn is_forbidden_call(pid: Pid) -> bool {
    ptrace::getsiginfo(pid).is_ok_and(|info| {
        info.si_signo == libc::SIGSYS
            && info.si_code == strict::SYS_SECCOMP
            && info.si_errno == i32::from(strict::FORBIDDEN)
    })
}

/// What [`end_thread`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The process got SIGKILL: do not resume the thread.
    Killed,
    /// The thread will call `exit(0)` when resumed (without a signal).
    Exiting,
}

/// Ends confined thread `pid` (stopped for a forbidden call) as strict mode would.
pub(crate) fn end_thread(pid: Pid) -> Ending {
    let tgid = crate::mem::tgid_of(pid).unwrap_or(pid.as_raw());
    let alone = crate::ptrace::inject::live_threads(tgid)
        .is_ok_and(|threads| threads.iter().all(|&t| t == pid));
    if !alone && exit_alone(pid).is_ok() {
        return Ending::Exiting;
    }
    // The last thread, or it cannot be made to exit alone: the whole process.
    let _ = kill(Pid::from_raw(tgid), Signal::SIGKILL);
    Ending::Killed
}

/// Sets `pid` up to call `exit(0)` (through a `syscall` or, in 32-bit code, an
/// `int $0x80` of its vDSO) with every blockable signal blocked.
fn exit_alone(pid: Pid) -> Result<(), ThreadOpError> {
    use crate::ptrace::inject::{int80_in_vdso, syscall_insn_in_vdso};
    let mut regs = ptrace::getregs(pid).map_err(failed("GETREGS"))?;
    let (abi, at) = if regs.cs == USER_CS_32 {
        (ABI_32, int80_in_vdso(pid))
    } else {
        (ABI_64, syscall_insn_in_vdso(pid))
    };
    regs.rip = at.ok_or(ThreadOpError::Unsupported)?;
    regs.rax = abi.exit;
    (regs.rdi, regs.rbx) = (0, 0);
    regs.orig_rax = u64::MAX; // not in a call: nothing to restart
    ptrace::setregs(pid, regs).map_err(failed("SETREGS"))?;
    crate::sys::inject::set_sigmask(pid, u64::MAX).map_err(failed("SETSIGMASK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_image_is_a_sock_fprog_then_the_instructions() {
        let prog = strict::confinement();
        let bytes = image(ABI_64, &prog, 0x1000_0010);
        assert_eq!(bytes.len(), 16 + 8 * prog.len());
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]);
        assert_eq!(usize::from(len), prog.len());
        assert_eq!(bytes[8..16], 0x1000_0010u64.to_ne_bytes());
        let last = &bytes[bytes.len() - 8..];
        let insn = prog[prog.len() - 1];
        assert_eq!(last[..2], insn.code.to_ne_bytes());
        assert_eq!(last[4..], insn.k.to_ne_bytes());
        // i386: `struct compat_sock_fprog` { u16 len; u32 filter; }.
        let compat = image(ABI_32, &prog, 0x1000_0010);
        assert_eq!(compat[..2], bytes[..2]);
        assert_eq!(compat[4..8], 0x1000_0010u32.to_ne_bytes());
        assert_eq!(compat[8..16], [0; 8]);
        assert_eq!(compat[16..], bytes[16..]);
    }
}
