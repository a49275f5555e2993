//! Signals sent to the supervisor that belong to the guest.
//!
//! compatrun stands where the guest would stand in its parent's eyes, so signals aimed at
//! it are passed on to the guest's first process (through a pidfd, so a reused pid can
//! never be hit). Signals a terminal sends to its foreground process group (Ctrl-C,
//! Ctrl-\, Ctrl-Z, window changes) reach the guest directly when it shares our process
//! group; then they are not sent twice. The supervisor itself never stops or dies from
//! them: a stopped tracer would leave the guest stuck in its next stop.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

static TARGET_PIDFD: AtomicI32 = AtomicI32::new(-1);
static TARGET_PID: AtomicI32 = AtomicI32::new(-1);
/// Set when the target is a pid namespace's init (seen from outside): its end is the
/// end of every guest process.
static TARGET_IS_INIT: AtomicBool = AtomicBool::new(false);
/// Set once the first guest process is gone: compatrun then only waits for what it left.
static ROOT_GONE: AtomicBool = AtomicBool::new(false);
/// Set in a pid namespace's init, which the kernel shields from its own signals' default
/// actions: there, "end as the signal would" means `_exit(128 + N)`.
static IS_INIT: AtomicBool = AtomicBool::new(false);
/// A pidfd whose process, killed, ends everything the guest left (the pid namespace's
/// init), or -1: then a terminating signal after the first process is gone ends
/// compatrun itself at once.
static END_PIDFD: AtomicI32 = AtomicI32::new(-1);
/// The terminating signal that ended the run through [`END_PIDFD`] (0: none).
static ENDED_BY: AtomicI32 = AtomicI32::new(0);

/// Signals passed on to the guest. SIGCONT is among them: a caller that sends
/// `SIGTERM` and then `SIGCONT` to a stopped job (as `kill` and shells do) must reach
/// a guest that stopped itself, which no one else can continue.
pub const FORWARDED: [Signal; 12] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// [`FORWARDED`] as a signal set: the mask each forwarding handler runs with. Several
/// signals pending at once would otherwise each get a handler frame nested on the one
/// before, so the last set up runs first and the guest sees them reversed (`kill -TERM;
/// kill -CONT` to a stopped job arriving as CONT, TERM lets the job run on before it
/// dies). Masked, they are passed on one at a time, lowest number first, which is the
/// order the kernel itself delivers pending standard signals in.
fn forwarded_set() -> libc::sigset_t {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    *set.as_ref()
}

/// Blocks [`FORWARDED`] in the calling thread, for compatrun's helper threads: a
/// signal sent to compatrun is then always handled by its main thread, so two of them
/// are never passed on by two threads at once, out of order.
pub fn block_forwarded_in_this_thread() {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    // Only fails for an invalid `how`, which SIG_BLOCK is not.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

/// Signals whose default action ends a process and that a caller sends to stop a job.
fn ends_compatrun(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGHUP | libc::SIGINT | libc::SIGQUIT | libc::SIGTERM
    )
}

/// Signals a terminal driver sends to its whole foreground process group.
fn terminal_generated(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGINT
            | libc::SIGQUIT
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | libc::SIGWINCH
    )
}

/// Whether `info` is a signal some process sent from inside our pid namespace (its pid is
/// visible here; a sender in an ancestor namespace shows as pid 0, the kernel as
/// `SI_KERNEL`).
///
/// # Safety
/// `info` is null or the siginfo the kernel passed to an `SA_SIGINFO` handler.
unsafe fn sent_from_inside(info: *const libc::siginfo_t) -> bool {
    // SAFETY: per the contract, a non-null `info` is a valid siginfo; for user-sent
    // signals (si_code <= 0) the kernel fills the `kill` member, which holds si_pid.
    unsafe { !info.is_null() && (*info).si_code <= 0 && (*info).si_pid() != 0 }
}

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // An init passes on only what comes from outside (compatrun, the terminal): what a
    // guest process sends to pid 1 is ignored, as any pid namespace's init would.
    // SAFETY: `info` is the siginfo the kernel passed to this SA_SIGINFO handler.
    if IS_INIT.load(Ordering::Relaxed) && unsafe { sent_from_inside(info) } {
        return;
    }
    let fd = TARGET_PIDFD.load(Ordering::Relaxed);
    if fd < 0 {
        if ROOT_GONE.load(Ordering::Relaxed) && ends_compatrun(sig) {
            end_what_is_left(sig);
        }
        return;
    }
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; errno is
    // thread-local and saved/restored around the async-signal-safe calls below.
    unsafe {
        let saved = *libc::__errno_location();
        let from_kernel = !info.is_null() && (*info).si_code == libc::SI_KERNEL;
        let skip = from_kernel
            && terminal_generated(sig)
            && libc::getpgid(TARGET_PID.load(Ordering::Relaxed)) == libc::getpgrp();
        let gone = !skip
            && libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) == -1
            && *libc::__errno_location() == libc::ESRCH;
        *libc::__errno_location() = saved;
        // The first process was reaped, but compatrun has not yet noted it (see
        // `root_gone`): the signal is for what is left, as it would be a moment later.
        // A target that was the namespace's init took everything with it: nothing is
        // left, and the run ends with its status.
        if gone && ends_compatrun(sig) && !TARGET_IS_INIT.load(Ordering::Relaxed) {
            end_what_is_left(sig);
        }
    }
}

/// The first guest process is gone and a terminating signal came: end the guest
/// processes left and compatrun (from the forwarding handler: async-signal-safe only).
fn end_what_is_left(sig: i32) {
    let end_fd = END_PIDFD.load(Ordering::Acquire);
    if end_fd >= 0 {
        // End what the guest left by killing its namespace's init; compatrun's caller
        // sees it end by this signal once the run is wound up (see `ended_by`).
        // SAFETY: pidfd_send_signal takes a descriptor, a signal number and a null
        // siginfo; errno is thread-local and restored after the call.
        unsafe {
            let saved = *libc::__errno_location();
            ENDED_BY.store(sig, Ordering::Release);
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                end_fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
            *libc::__errno_location() = saved;
        }
        return;
    }
    // Nobody to pass it to, but our caller still sees us running: end now, as the
    // signal's default action would; PTRACE_O_EXITKILL takes the guest processes that
    // are left along.
    // SAFETY: kill(2), signal(2), raise(3) and _exit(2) are async-signal-safe (errno is
    // thread-local and restored); after resetting to the default action, raising `sig`
    // terminates this process (an init ignores it, hence its _exit).
    unsafe {
        if IS_INIT.load(Ordering::Relaxed) {
            // An init whose namespace holds nothing else: the signal was passed on while
            // the first process still ran (compatrun's handler and ours are two hops
            // behind the guest) and would have reached it. There is nothing left for it
            // to end, so the init goes on to exit with the first process's status.
            let saved = *libc::__errno_location();
            let none_left = libc::kill(-1, 0) == -1 && *libc::__errno_location() == libc::ESRCH;
            *libc::__errno_location() = saved;
            if none_left {
                return;
            }
            libc::_exit(128 + sig);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the forwarding handler for every signal in [`FORWARDED`] that is not
/// ignored (an ignored one stays ignored, and the guest inherits that, as it would
/// natively). Handlers reset to the default across `execve`, so the guest starts with
/// the dispositions compatrun was given.
pub fn install_forwarding() -> nix::Result<()> {
    for sig in FORWARDED {
        // SAFETY: sigaction with a null new action only reads the current disposition
        // into a stack variable we own.
        let current = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig as i32, std::ptr::null(), &mut old) != 0 {
                return Err(nix::errno::Errno::last());
            }
            old.sa_sigaction
        };
        if current == libc::SIG_IGN {
            continue;
        }
        // SAFETY: `forward` is async-signal-safe (atomics and raw system calls only);
        // the sigaction struct is fully initialised before the call.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = forward as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            act.sa_mask = forwarded_set();
            if libc::sigaction(sig as i32, &act, std::ptr::null_mut()) != 0 {
                return Err(nix::errno::Errno::last());
            }
        }
    }
    Ok(())
}

/// In a pid namespace's init (between fork and exit, so async-signal-safe only): pass
/// on what [`FORWARDED`] names to the target set with [`set_target`], and
/// end with `_exit(128 + N)` on a terminating signal once the target is gone. An init
/// only receives signals it has a handler for, so without these it would drop them.
pub fn init_forwarding() {
    IS_INIT.store(true, Ordering::Relaxed);
    for sig in FORWARDED.iter().map(|s| *s as i32) {
        // SAFETY: `forward` is async-signal-safe (atomics and raw system calls only);
        // the sigaction struct is fully initialised before the call.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = forward as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            act.sa_mask = forwarded_set();
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Points forwarding at the guest process `pid`, reached through `pidfd` (which must
/// stay open until [`clear_target`]).
pub fn set_target(pid: i32, pidfd: i32) {
    TARGET_IS_INIT.store(false, Ordering::Relaxed);
    TARGET_PID.store(pid, Ordering::Relaxed);
    TARGET_PIDFD.store(pidfd, Ordering::Release);
}

/// Like [`set_target`], for a target that is the guest's pid namespace's init (which
/// passes signals on to the first process itself): once it is gone, so is every guest
/// process, and a terminating signal that finds it gone has nothing left to end.
pub fn set_target_init(pid: i32, pidfd: i32) {
    TARGET_IS_INIT.store(true, Ordering::Relaxed);
    TARGET_PID.store(pid, Ordering::Relaxed);
    TARGET_PIDFD.store(pidfd, Ordering::Release);
}

/// The guest's first process is gone: stop forwarding; from now on a terminating signal
/// (SIGHUP, SIGINT, SIGQUIT, SIGTERM) ends compatrun and the guest processes left.
pub fn root_gone() {
    ROOT_GONE.store(true, Ordering::Release);
    clear_target();
}

/// Once the first guest process is gone, a terminating signal to compatrun kills the
/// process `pidfd` names (the guest's pid namespace's init: the whole namespace goes)
/// instead of ending compatrun at once, so the run winds up as usual: reaping, cleaning
/// up, writing its report. The pidfd must stay open until [`clear_end_target`].
pub fn set_end_target(pidfd: i32) {
    END_PIDFD.store(pidfd, Ordering::Release);
}

/// Undoes [`set_end_target`].
pub fn clear_end_target() {
    END_PIDFD.store(-1, Ordering::Release);
}

/// The terminating signal that ended the run through [`set_end_target`]'s process, if
/// one did: compatrun should end by it after winding up (see [`die_by`]).
pub fn ended_by() -> Option<i32> {
    match ENDED_BY.load(Ordering::Acquire) {
        0 => None,
        sig => Some(sig),
    }
}

/// Ends compatrun by signal `sig` as its default action would (after the run is wound
/// up), so its caller sees what it sent take effect.
pub fn die_by(sig: i32) -> ! {
    // SAFETY: signal(2) and raise(3) take only numbers; after resetting `sig` to its
    // default action (a terminating one: SIGHUP, SIGINT, SIGQUIT or SIGTERM), raising it
    // ends this process; _exit covers a signal that did not.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

/// Stops forwarding.
pub fn clear_target() {
    TARGET_PIDFD.store(-1, Ordering::Release);
    TARGET_PID.store(-1, Ordering::Relaxed);
}

/// Stops compatrun itself with the stop signal `sig` (default action, whatever handler is
/// installed), returning once continued; the forwarding handler is back in place after.
pub fn stop_self(sig: Signal) {
    let signo = sig as i32;
    // SAFETY: sigaction reads and writes only the two structs on this stack frame; raise
    // delivers `signo` to this thread; the previous action is restored unchanged.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signo, &dfl, &mut old) != 0 {
            return;
        }
        libc::raise(signo);
        libc::sigaction(signo, &old, std::ptr::null_mut());
    }
}

/// Whether SIGPIPE was ignored when compatrun was started, recorded before `main` (the
/// Rust runtime ignores SIGPIPE as it starts, which would hide the caller's choice).
static SIGPIPE_IGNORED_AT_START: AtomicBool = AtomicBool::new(false);

extern "C" fn record_sigpipe() {
    // SAFETY: sigaction with a null new action only reads the current disposition into a
    // local; this runs single-threaded, from the loader's constructors, before main.
    let ignored = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    };
    SIGPIPE_IGNORED_AT_START.store(ignored, Ordering::Relaxed);
}

/// Runs `record_sigpipe` among the program's constructors, before the Rust runtime.
#[used]
#[link_section = ".init_array"]
static RECORD_SIGPIPE: extern "C" fn() = record_sigpipe;

/// Whether the guest should start with SIGPIPE ignored (as compatrun was started).
pub fn sigpipe_ignored_at_start() -> bool {
    SIGPIPE_IGNORED_AT_START.load(Ordering::Relaxed)
}
