//! What a `std::process::Command` does in its child between fork and exec, for callers
//! outside platform (the test suite's drivers): a session of its own, and exact signal
//! dispositions and mask whatever the caller inherited. Each is one `pre_exec` hook that
//! makes only async-signal-safe calls on its own stack.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The child starts a new session (`setsid`), leaving the caller's terminal and job.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: the hook calls only setsid(2), async-signal-safe, and touches no memory
    // shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child execs with every catchable signal at its default action except `ignore`
/// (ignored), and exactly `block` blocked.
pub fn signal_state(cmd: &mut Command, ignore: &'static [i32], block: &'static [i32]) {
    // SAFETY: the hook calls only signal(2), sigemptyset/sigaddset on a sigset_t on its
    // own stack, and sigprocmask(2), all async-signal-safe; the zeroed sigset_t is
    // initialised by sigemptyset before use.
    unsafe {
        cmd.pre_exec(move || {
            for s in 1..libc::SIGRTMIN() {
                if s != libc::SIGKILL && s != libc::SIGSTOP {
                    libc::signal(s, libc::SIG_DFL);
                }
            }
            for &s in ignore {
                libc::signal(s, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in block {
                libc::sigaddset(&mut set, s);
            }
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}
