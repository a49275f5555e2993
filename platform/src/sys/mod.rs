//! The only home of `unsafe` in compatrun: raw system calls that neither `nix` nor the
//! standard library wrap safely. Every block names the invariant that makes it sound;
//! callers outside this module see safe functions with validated inputs.

pub mod bench;
pub mod bindfile;
pub mod console;
pub mod exec_prep;
pub mod guest_mount;
pub mod inject;
pub mod map;
pub mod notify;
pub mod probe;
pub(crate) mod rootfs;
pub mod scm;
pub mod signals;
pub mod spawn;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;

/// `PTRACE_LISTEN`: keep a group-stopped tracee stopped, but let it be woken by SIGCONT
/// and let its real parent see the stop (`nix` has no wrapper for it).
pub fn ptrace_listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no pointers (addr and data are 0); the kernel checks
    // that `pid` is our tracee in group-stop and reports ESRCH/EIO otherwise.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_LISTEN,
            pid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r == -1 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// The audit architecture, `nr` and arguments of a tracee stopped in a seccomp stop.
pub fn seccomp_stop_call(pid: Pid) -> nix::Result<(u32, u64, [u64; 6], u64)> {
    let info = nix::sys::ptrace::syscall_info(pid)?;
    if info.op != libc::PTRACE_SYSCALL_INFO_SECCOMP {
        return Err(nix::errno::Errno::EINVAL);
    }
    // SAFETY: the kernel filled the `seccomp` member of the union: `op` says so
    // (PTRACE_SYSCALL_INFO_SECCOMP), checked just above.
    let sc = unsafe { info.u.seccomp };
    Ok((info.arch, sc.nr, sc.args, info.instruction_pointer))
}

/// `pidfd_open(pid, 0)`: a handle that keeps naming this process even after its pid is
/// reused, so late signals can never hit a stranger.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` read-only with `dir` as its root (`openat2` with `RESOLVE_IN_ROOT`, no
/// magic links): `..` and absolute symbolic links resolve inside `dir`, as they do for
/// a process whose root `dir` is. Non-blocking and never a controlling terminal, so a
/// FIFO or device a guest names cannot stall or adopt the caller. Errors are the
/// kernel's (ENOSYS before Linux 5.6).
pub fn open_in_root(dir: BorrowedFd<'_>, path: &std::ffi::CStr) -> io::Result<std::fs::File> {
    /// `struct open_how` of linux/openat2.h.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: u64::try_from(libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
            .unwrap_or(0),
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is NUL-terminated and `how` is an initialised open_how whose size
    // is passed with it; the kernel only reads both and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            std::ptr::from_ref(&how),
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that nothing
    // else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `CAP_SYS_ADMIN` from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process holds CAP_SYS_ADMIN in its user namespace, which lets it install
/// a seccomp filter without setting no_new_privs (so set-user-ID programs keep working).
pub fn has_cap_sys_admin() -> bool {
    // CapEff in /proc/self/status is the effective set as a hex mask.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_SYS_ADMIN) != 0)
}

/// `si_code` and `si_addr` of a signal's siginfo (`si_addr` is meaningful for the fault
/// signals SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGTRAP; 0 is returned for the others).
pub fn siginfo_code_addr(info: &libc::siginfo_t) -> (i32, u64) {
    let faults = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
    ];
    let addr = if faults.contains(&info.si_signo) {
        // SAFETY: for these signals the kernel fills the `sigfault` member of the union,
        // whose first field is `si_addr`; the signal number was checked just above.
        unsafe { info.si_addr() as u64 }
    } else {
        0
    };
    (info.si_code, addr)
}

/// Whether a process sent this signal from inside the receiver's pid namespace: a
/// user-sent signal (`si_code` <= 0) whose sender pid is visible there (a sender in an
/// ancestor namespace shows as pid 0; the kernel's own signals have `si_code` > 0).
pub fn siginfo_sent_from_inside(info: &libc::siginfo_t) -> bool {
    // SAFETY: for user-sent signals (si_code <= 0, checked first) the kernel fills the
    // `kill`/`rt` member of the union, whose first field is `si_pid`.
    info.si_code <= 0 && unsafe { info.si_pid() } != 0
}

/// One `waitpid` report, with signal numbers kept raw (nix's decoding rejects real-time
/// signals, 32 and up, which glibc itself sends: SIGSETXID, SIGCANCEL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    /// Exited with a status.
    Exited(Pid, i32),
    /// Killed by a signal (number, core dumped).
    Signaled(Pid, i32, bool),
    /// A signal-delivery-stop.
    Stopped(Pid, i32),
    /// A ptrace event stop (signal, `PTRACE_EVENT_*`).
    Event(Pid, i32, i32),
    /// Continued (only with WCONTINUED, which we do not ask for), or anything else.
    Other(Pid),
}

impl WaitEvent {
    /// The thread the report is about.
    pub fn pid(&self) -> Pid {
        match *self {
            WaitEvent::Exited(p, _)
            | WaitEvent::Signaled(p, ..)
            | WaitEvent::Stopped(p, _)
            | WaitEvent::Event(p, ..)
            | WaitEvent::Other(p) => p,
        }
    }
}

/// `waitpid(-1, &status, __WALL)`, decoded.
pub fn wait_any() -> nix::Result<WaitEvent> {
    wait_raw(-1)
}

/// `waitpid(pid, &status, __WALL)`, decoded: one child's (or tracee's) next report.
pub fn wait_pid(pid: Pid) -> nix::Result<WaitEvent> {
    wait_raw(pid.as_raw())
}

fn wait_raw(which: libc::pid_t) -> nix::Result<WaitEvent> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int through the pointer, which points at a local.
    let pid = unsafe { libc::waitpid(which, &mut status, libc::__WALL) };
    if pid < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(decode_status(Pid::from_raw(pid), status))
}

/// A `waitpid` status for `p`, decoded.
pub(crate) fn decode_status(p: Pid, status: libc::c_int) -> WaitEvent {
    if libc::WIFEXITED(status) {
        WaitEvent::Exited(p, libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        WaitEvent::Signaled(p, libc::WTERMSIG(status), libc::WCOREDUMP(status))
    } else if libc::WIFSTOPPED(status) {
        let event = status >> 16;
        if event == 0 {
            WaitEvent::Stopped(p, libc::WSTOPSIG(status))
        } else {
            WaitEvent::Event(p, libc::WSTOPSIG(status), event)
        }
    } else {
        WaitEvent::Other(p)
    }
}

/// `PTRACE_CONT`, delivering signal number `sig` (0 for none), real-time ones included.
pub fn ptrace_cont(pid: Pid, sig: i32) -> nix::Result<()> {
    ptrace_resume(libc::PTRACE_CONT, pid, sig)
}

/// `PTRACE_DETACH`, delivering signal number `sig` (0 for none), real-time ones included.
pub fn ptrace_detach(pid: Pid, sig: i32) -> nix::Result<()> {
    ptrace_resume(libc::PTRACE_DETACH, pid, sig)
}

/// A ptrace request that resumes the tracee with a signal (`PTRACE_CONT`, `_DETACH`).
fn ptrace_resume(request: libc::c_uint, pid: Pid, sig: i32) -> nix::Result<()> {
    let data = usize::try_from(sig).map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: PTRACE_CONT and PTRACE_DETACH take no pointer: addr is ignored and data
    // is the signal number; the kernel validates both the tracee and the number.
    let r = unsafe {
        libc::ptrace(
            request,
            pid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signals exactly the process the pidfd
/// names, never a later process that reused its pid.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: the call takes a descriptor, a signal number and a null siginfo pointer
    // (meaning "as kill(2) would"); no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal [`interrupt_thread`] uses: its handler does nothing, and it is installed
/// without `SA_RESTART`, so a blocking call in the target thread returns EINTR.
const WAKE_SIGNAL: i32 = libc::SIGURG;

extern "C" fn ignore_wake(_: libc::c_int) {}

/// Installs the do-nothing handler [`interrupt_thread`] relies on.
pub fn install_wake_handler() -> io::Result<()> {
    // SAFETY: `ignore_wake` is async-signal-safe (it does nothing); the sigaction struct
    // is fully initialised before the call.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = ignore_wake as *const () as usize;
        act.sa_flags = 0;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(WAKE_SIGNAL, &act, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Interrupts a blocking system call in `thread` (of this process), which must still be
/// running (not yet joined).
pub fn interrupt_thread(thread: libc::pthread_t) {
    // SAFETY: the caller guarantees `thread` is a live thread of this process (its
    // JoinHandle has not been joined), so the pthread_t is valid.
    unsafe {
        libc::pthread_kill(thread, WAKE_SIGNAL);
    }
}

/// The calling thread's `pthread_t`, for [`interrupt_thread`].
pub fn current_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() }
}
