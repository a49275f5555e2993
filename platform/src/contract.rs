//! The platform/sentry contract: the only types the two halves share.
//!
//! The sentry describes, before the guest starts, which system calls it wants to see
//! ([`InterceptSpec`]); the platform compiles that into one seccomp filter and, for every
//! caught call, hands the sentry a stopped guest thread ([`GuestThread`]) and obeys the
//! returned [`Verdict`]. Nothing here names ptrace or a notification fd: a backend is
//! anything that can honour these types. The numbered obligations a backend must keep
//! are written in `docs/ARCHITECTURE.md`.

use std::fmt;

/// The system-call ABI a call came in through. The seccomp filter tells them apart by
/// `seccomp_data.arch` and, for x32, by bit 30 of the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// The native 64-bit ABI (`syscall` instruction, AUDIT_ARCH_X86_64).
    X86_64,
    /// The x32 ABI: AUDIT_ARCH_X86_64 with `__X32_SYSCALL_BIT` set in the number.
    X32,
    /// The i386 ABI (`int 0x80`, `sysenter`, or 32-bit `syscall`; AUDIT_ARCH_I386).
    I386,
}

impl Arch {
    /// Every ABI the filter distinguishes, in a fixed order.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::X32, Arch::I386];

    /// A short name, as strace prints it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::X32 => "x32",
            Arch::I386 => "i386",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the filter does with one system call number of one ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Run natively; the supervisor never hears of it.
    Allow,
    /// Fail in the filter itself with this errno (no stop, no context switch).
    Errno(u16),
    /// Stop the thread and ask the supervisor ([`Supervisor::syscall`]).
    Catch,
}

/// The per-ABI decision table the sentry hands the platform before the guest starts.
///
/// For each ABI: an explicit rule for some numbers and a default for every number not
/// named (numbers the persona's table does not know at all). x32 numbers are given
/// without the x32 bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptSpec {
    /// Per ABI: `(number, rule)` pairs; later pairs for the same number win.
    pub rules: Vec<(Arch, u32, Rule)>,
    /// Per ABI: the rule for numbers not named in `rules`.
    pub defaults: Vec<(Arch, Rule)>,
    /// Signals the supervisor wants to see before they are delivered (e.g. SIGSEGV for
    /// the vsyscall page). Others are delivered without asking.
    pub signals: Vec<i32>,
    /// x86_64 numbers allowed, whatever their rule, when made from this instruction
    /// address: the kernel's own vsyscall-page emulation runs the filter with the real
    /// number and the page's address (a 2.6-era `getcpu` came only from there).
    pub allow_from_ip: Vec<(u32, u64)>,
    /// The supervisor wants [`Supervisor::execed`] after every exec. A backend that
    /// sees exec only at a price (seccomp: a seize per exec) pays it only then.
    pub exec_events: bool,
}

impl InterceptSpec {
    /// A spec that lets everything through on every ABI.
    pub fn allow_all() -> Self {
        InterceptSpec {
            rules: Vec::new(),
            defaults: Arch::ALL.iter().map(|&a| (a, Rule::Allow)).collect(),
            signals: Vec::new(),
            allow_from_ip: Vec::new(),
            exec_events: false,
        }
    }

    /// The default rule for `arch` (Allow when the spec names none).
    pub fn default_for(&self, arch: Arch) -> Rule {
        self.defaults
            .iter()
            .rev()
            .find(|(a, _)| *a == arch)
            .map_or(Rule::Allow, |(_, r)| *r)
    }

    /// The rule for one number of one ABI, as the compiled filter will apply it.
    pub fn rule_for(&self, arch: Arch, nr: u32) -> Rule {
        self.rules
            .iter()
            .rev()
            .find(|(a, n, _)| *a == arch && *n == nr)
            .map_or_else(|| self.default_for(arch), |(_, _, r)| *r)
    }
}

/// One caught system call, as the guest made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    /// The ABI it came through.
    pub arch: Arch,
    /// The number within that ABI's table (for x32, without the x32 bit).
    pub nr: u32,
    /// The six argument registers, zero-extended for i386.
    pub args: [u64; 6],
    /// The instruction pointer the filter saw (`seccomp_data.instruction_pointer`: the
    /// address after the system-call instruction); 0 where unknown.
    pub ip: u64,
}

/// A guest memory access that failed: the guest gets EFAULT, never a supervisor panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest memory at {addr:#x} (+{len}) is not accessible")]
pub struct Fault {
    /// First address of the failed access.
    pub addr: u64,
    /// Length of the failed access.
    pub len: usize,
}

/// Why a [`GuestThread`] could not run a system call or patch code for the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThreadOpError {
    /// The backend cannot do this (it declares so with
    /// [`GuestThread::can_run_syscalls`]), or not in the stop the thread is in.
    #[error("the platform cannot do this in a stopped guest thread")]
    Unsupported,
    /// Guest memory that had to be read or written was not accessible.
    #[error(transparent)]
    Fault(#[from] Fault),
    /// The thread (or its process) died meanwhile.
    #[error("the guest thread is gone")]
    Gone,
    /// The other threads of the process did not all stop in time (one may be blocked in
    /// the kernel where a stop request cannot reach it, as in `vfork`).
    #[error("the other threads of the process did not stop in time")]
    Busy,
    /// A request to the kernel failed.
    #[error("{op} failed: errno {errno}")]
    Failed {
        /// The request.
        op: &'static str,
        /// What the kernel said.
        errno: i32,
    },
}

/// A guest thread stopped in a caught system call. Valid only while the handler runs;
/// the platform resumes the thread with the handler's [`Verdict`] afterwards.
pub trait GuestThread {
    /// Whether this backend can run a system call in a stopped thread and patch code
    /// with the whole process stopped ([`GuestThread::run_syscall`],
    /// [`GuestThread::patch_code`]): its declaration. A backend that cannot answers
    /// [`ThreadOpError::Unsupported`]; even one that can may do so only in some stops
    /// (ptrace: a signal-delivery stop).
    fn can_run_syscalls(&self) -> bool {
        false
    }

    /// The thread id (host pid namespace).
    fn tid(&self) -> i32;
    /// The thread group id: the process the thread belongs to.
    fn tgid(&self) -> i32;
    /// Read exactly `buf.len()` bytes of guest memory at `addr`.
    fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault>;
    /// Write all of `data` into guest memory at `addr`.
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault>;
    /// Write into a mapping the guest cannot write itself (code, the vDSO), the way a
    /// debugger plants a breakpoint: the guest gets a private copy of the page.
    fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault>;

    /// Runs one x86_64 system call `nr` with `args` in this thread, as if the thread had
    /// made it itself (the seccomp filter judges it as any other), and returns the raw
    /// result (a negative errno on failure). The thread's registers, signal mask and
    /// pending signal are as before afterwards. Where the thread waited in a notified
    /// call (seccomp platform), that call can no longer simply run on: a
    /// [`Verdict::Forward`] afterwards makes the thread make it again (it is caught and
    /// handed over once more), and a call the filter hands over cannot be run
    /// ([`ThreadOpError::Unsupported`]).
    fn run_syscall(&mut self, _nr: u32, _args: [u64; 6]) -> Result<i64, ThreadOpError> {
        Err(ThreadOpError::Unsupported)
    }

    /// Writes `data` at `addr` as [`GuestThread::write_code`] does, with every other
    /// thread of the process stopped outside user code while it happens, so no thread
    /// ever executes a half-written instruction.
    fn patch_code(&mut self, _addr: u64, _data: &[u8]) -> Result<(), ThreadOpError> {
        Err(ThreadOpError::Unsupported)
    }
}

/// A borrowed thread is a thread: lets a handler that takes `&mut dyn GuestThread` (a
/// row of a handler table) call code generic over [`GuestThread`].
impl<T: GuestThread + ?Sized> GuestThread for &mut T {
    fn tid(&self) -> i32 {
        (**self).tid()
    }
    fn tgid(&self) -> i32 {
        (**self).tgid()
    }
    fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        (**self).read_mem(addr, buf)
    }
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        (**self).write_mem(addr, data)
    }
    fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        (**self).write_code(addr, data)
    }
    fn can_run_syscalls(&self) -> bool {
        (**self).can_run_syscalls()
    }
    fn run_syscall(&mut self, nr: u32, args: [u64; 6]) -> Result<i64, ThreadOpError> {
        (**self).run_syscall(nr, args)
    }
    fn patch_code(&mut self, addr: u64, data: &[u8]) -> Result<(), ThreadOpError> {
        (**self).patch_code(addr, data)
    }
}

/// What the platform does with a caught call once the handler has decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the call run in the host kernel as the guest made it.
    Forward,
    /// Do not run it; the guest sees this return value (a negative errno for errors).
    Return(i64),
}

impl Verdict {
    /// The guest sees the call fail with `errno`.
    pub fn errno(errno: i32) -> Self {
        Verdict::Return(-i64::from(errno))
    }
}

/// A synchronous signal about to be delivered to a guest thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    /// The signal number.
    pub signo: i32,
    /// `si_code`.
    pub code: i32,
    /// `si_addr` (the faulting address for SIGSEGV and SIGBUS; 0 otherwise).
    pub addr: u64,
}

/// The registers a signal handler may read and change (x86_64 names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Return-value register (rax).
    pub ret: u64,
    /// Argument registers in call order: rdi, rsi, rdx, rcx, r8, r9.
    pub args: [u64; 6],
}

/// What happens to a signal the supervisor was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalVerdict {
    /// Deliver it as the kernel meant to.
    Deliver,
    /// Do not deliver it; the thread resumes with the (possibly changed) registers.
    Suppress,
}

/// The sentry side of the contract: told about every caught call and about process
/// lifetimes, in the order the platform observes them.
pub trait Supervisor {
    /// A guest thread is stopped in a call the spec marked [`Rule::Catch`].
    fn syscall<G: GuestThread>(&mut self, thread: &mut G, call: &Syscall) -> Verdict;

    /// A signal listed in [`InterceptSpec::signals`] is about to be delivered to a
    /// stopped thread. Changes to `regs` take effect only with [`SignalVerdict::Suppress`].
    fn signal<G: GuestThread>(
        &mut self,
        _thread: &mut G,
        _info: &SignalInfo,
        _regs: &mut Regs,
    ) -> SignalVerdict {
        SignalVerdict::Deliver
    }

    /// A guest thread has just executed a new program and is stopped before its first
    /// instruction (its loader has not run yet).
    fn execed<G: GuestThread>(&mut self, _thread: &mut G) {}

    /// A platform that must stop a thread on purpose to show an exec (seccomp: a seize
    /// from the `execve` notification) asks first, with the thread waiting in `call`:
    /// false lets this exec run unstopped, and [`Supervisor::execed`] is not called for
    /// it. Where every exec stops anyway (ptrace) it is not asked.
    fn exec_needs_stop<G: GuestThread>(&mut self, _thread: &mut G, _call: &Syscall) -> bool {
        true
    }

    /// A guest thread is gone (when it led its thread group, the whole process is gone):
    /// forget anything kept about it.
    fn exited(&mut self, _tid: i32, _status: crate::command::ExitStatus) {}
}
