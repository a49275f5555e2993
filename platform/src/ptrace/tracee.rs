//! A traced thread as a type: [`Stopped`] is the only handle that can touch a tracee,
//! and resuming it consumes the handle, so "ptrace on a running thread" cannot be
//! written. "It died under us" (ESRCH) becomes [`TraceError::Gone`] here and nowhere
//! else.

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::inject::Deferred;
use crate::contract::{Fault, GuestThread, Regs, SignalInfo, ThreadOpError};
use crate::error::TraceError;
use crate::sys;

fn check<T>(op: &'static str, pid: Pid, r: nix::Result<T>) -> Result<T, TraceError> {
    r.map_err(|errno| match errno {
        Errno::ESRCH => TraceError::Gone(pid),
        errno => TraceError::Failed { op, pid, errno },
    })
}

/// A tracee in a ptrace-stop, owned by the tracer loop until resumed.
#[derive(Debug)]
pub struct Stopped {
    pid: Pid,
}

/// `offsetof(struct user_regs_struct, orig_rax)` and `rax`, for PTRACE_POKEUSER.
const ORIG_RAX_OFFSET: usize = std::mem::offset_of!(libc::user_regs_struct, orig_rax);
const RAX_OFFSET: usize = std::mem::offset_of!(libc::user_regs_struct, rax);

impl Stopped {
    /// Wraps a pid that `waitpid` just reported as stopped.
    pub(crate) fn new(pid: Pid) -> Self {
        Stopped { pid }
    }

    /// The thread id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Resumes the thread, delivering signal number `sig` (0: none).
    pub fn cont(self, sig: i32) -> Result<(), TraceError> {
        check("CONT", self.pid, sys::ptrace_cont(self.pid, sig))
    }

    /// Stops tracing the thread, delivering signal number `sig` (0: none).
    pub fn detach(self, sig: i32) -> Result<(), TraceError> {
        check("DETACH", self.pid, sys::ptrace_detach(self.pid, sig))
    }

    /// Leaves a group-stopped thread stopped but wakeable by SIGCONT.
    pub fn listen(self) -> Result<(), TraceError> {
        check("LISTEN", self.pid, sys::ptrace_listen(self.pid))
    }

    /// The event message (new child's pid, former thread id, seccomp data).
    pub fn event_msg(&self) -> Result<u64, TraceError> {
        #[allow(clippy::cast_sign_loss)] // a raw 64-bit message, not a signed quantity
        check("GETEVENTMSG", self.pid, ptrace::getevent(self.pid)).map(|m| m as u64)
    }

    /// The audit architecture, number, arguments and instruction pointer (after the
    /// call's instruction) of the call this thread is stopped in (seccomp stop).
    pub fn seccomp_call(&self) -> Result<(u32, u64, [u64; 6], u64), TraceError> {
        check(
            "GET_SYSCALL_INFO",
            self.pid,
            sys::seccomp_stop_call(self.pid),
        )
    }

    /// Skips the call the thread is stopped in; it returns `value` instead.
    pub fn skip_with(&mut self, value: i64) -> Result<(), TraceError> {
        let poke = |off: usize, v: i64| {
            check(
                "POKEUSER",
                self.pid,
                ptrace::write_user(self.pid, off as ptrace::AddressType, v),
            )
        };
        // orig_rax = -1: the kernel skips the call and leaves rax as we set it.
        poke(ORIG_RAX_OFFSET, -1)?;
        poke(RAX_OFFSET, value)
    }

    /// The signal this thread is stopped to receive (signal-delivery-stop).
    pub fn signal_info(&self) -> Result<SignalInfo, TraceError> {
        let info = check("GETSIGINFO", self.pid, ptrace::getsiginfo(self.pid))?;
        let (code, addr) = sys::siginfo_code_addr(&info);
        Ok(SignalInfo {
            signo: info.si_signo,
            code,
            addr,
        })
    }

    /// Whether the pending signal was sent by a process inside this thread's own pid
    /// namespace (not by the kernel, nor from an ancestor namespace).
    pub fn signal_sent_from_inside(&self) -> Result<bool, TraceError> {
        let info = check("GETSIGINFO", self.pid, ptrace::getsiginfo(self.pid))?;
        Ok(sys::siginfo_sent_from_inside(&info))
    }

    /// The registers a signal handler works with, plus the full set to write back.
    pub fn regs(&self) -> Result<(Regs, libc::user_regs_struct), TraceError> {
        let r = check("GETREGS", self.pid, ptrace::getregs(self.pid))?;
        let regs = Regs {
            ip: r.rip,
            sp: r.rsp,
            ret: r.rax,
            args: [r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9],
        };
        Ok((regs, r))
    }

    /// Writes `regs` back over `full` (as read by [`Stopped::regs`]).
    pub fn set_regs(
        &mut self,
        regs: &Regs,
        mut full: libc::user_regs_struct,
    ) -> Result<(), TraceError> {
        full.rip = regs.ip;
        full.rsp = regs.sp;
        full.rax = regs.ret;
        [full.rdi, full.rsi, full.rdx, full.rcx, full.r8, full.r9] = regs.args;
        check("SETREGS", self.pid, ptrace::setregs(self.pid, full))
    }

    /// Lends this stopped thread to a handler as a [`GuestThread`].
    pub fn guest(&mut self) -> PtraceThread<'_> {
        PtraceThread {
            stopped: self,
            at_signal: None,
            left_call: false,
        }
    }

    /// Lends this thread, stopped in a seccomp stop, to a handler as a [`GuestThread`]
    /// that can also run system calls and patch code. Running one moves the thread out
    /// of its seccomp stop (into a single step's stop, its registers as before): then
    /// [`PtraceThread::left_call`] says so, and a `Forward` verdict must be carried out
    /// with [`Stopped::rewind_call`].
    pub(crate) fn guest_in_call<'a>(&'a mut self, deferred: &'a mut Deferred) -> PtraceThread<'a> {
        PtraceThread {
            stopped: self,
            at_signal: Some(deferred),
            left_call: false,
        }
    }

    /// For a thread taken out of its seccomp stop (see [`Stopped::guest_in_call`]):
    /// sets it to make its call again when resumed, as it first made it.
    pub fn rewind_call(&mut self) -> Result<(), TraceError> {
        let mut r = check("GETREGS", self.pid, ptrace::getregs(self.pid))?;
        // `syscall` is two bytes; only x86_64 threads ever leave their stop.
        r.rip = r.rip.wrapping_sub(2);
        r.rax = r.orig_rax;
        r.orig_rax = u64::MAX;
        check("SETREGS", self.pid, ptrace::setregs(self.pid, r))
    }

    /// Lends this thread, stopped in a signal-delivery stop, to a handler as a
    /// [`GuestThread`] that can also run system calls and patch code; stops of other
    /// threads collected meanwhile go to `deferred`.
    pub(crate) fn guest_at_signal<'a>(
        &'a mut self,
        deferred: &'a mut Deferred,
    ) -> PtraceThread<'a> {
        PtraceThread {
            stopped: self,
            at_signal: Some(deferred),
            left_call: false,
        }
    }
}

/// A [`GuestThread`] backed by a ptrace-stopped thread.
#[derive(Debug)]
pub struct PtraceThread<'a> {
    stopped: &'a mut Stopped,
    /// Set in a signal-delivery stop and a seccomp stop: where stops of other threads
    /// go.
    at_signal: Option<&'a mut Deferred>,
    /// A system call was run in the thread: it is no longer in the stop it was lent in.
    left_call: bool,
}

impl PtraceThread<'_> {
    /// Whether a system call was run in the thread, taking it out of a seccomp stop.
    pub fn left_call(&self) -> bool {
        self.left_call
    }
}

impl GuestThread for PtraceThread<'_> {
    fn can_run_syscalls(&self) -> bool {
        true
    }

    fn tid(&self) -> i32 {
        self.stopped.pid.as_raw()
    }

    fn tgid(&self) -> i32 {
        crate::mem::tgid_of(self.stopped.pid).unwrap_or_else(|| self.tid())
    }

    fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        crate::mem::read(self.stopped.pid, addr, buf)
    }

    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        crate::mem::write(self.stopped.pid, addr, data)
    }

    fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        // A few bytes (the vDSO's version note after every exec) in two ptrace calls.
        crate::mem::poke(self.stopped.pid, addr, data)
            .or_else(|_| crate::mem::write_force(self.stopped.pid, addr, data))
    }

    fn run_syscall(&mut self, nr: u32, args: [u64; 6]) -> Result<i64, ThreadOpError> {
        let deferred = self
            .at_signal
            .as_deref_mut()
            .ok_or(ThreadOpError::Unsupported)?;
        let result = super::inject::run_syscall(self.stopped.pid, deferred, nr, args);
        // Any attempt past the first checks may have stepped the thread.
        if !matches!(result, Err(ThreadOpError::Unsupported)) {
            self.left_call = true;
        }
        result
    }

    fn patch_code(&mut self, addr: u64, data: &[u8]) -> Result<(), ThreadOpError> {
        let deferred = self
            .at_signal
            .as_deref_mut()
            .ok_or(ThreadOpError::Unsupported)?;
        super::inject::patch_code(self.stopped.pid, deferred, addr, data)
    }
}
