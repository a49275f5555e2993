//! Job control seen from compatrun's parent: when the guest's first process stops
//! (Ctrl-Z, SIGTTIN...), compatrun stops itself the same way, so the shell that started
//! compatrun sees its job stopped; on `fg`/`bg` the guest is continued. Every platform
//! learns of the guest's stops its own way and calls [`mirror_stop`].

use std::fs::File;

use log::debug;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::sys::signals;

/// compatrun's controlling terminal, if it has one (opened once per run).
pub(crate) fn open_tty() -> Option<File> {
    File::options().read(true).write(true).open("/dev/tty").ok()
}

/// The guest's first process (`guest`, for the log) stopped with `sig`: if compatrun runs
/// in a terminal session (a job of a job-control shell), stop compatrun with the same
/// signal, and once continued call `continued` (which passes the SIGCONT on where the
/// shell's did not reach).
pub(crate) fn mirror_stop(tty: Option<&File>, guest: Pid, sig: Signal, continued: impl FnOnce()) {
    // Only job-control stops: their SIGCONT always goes to the whole job (fg/bg), so it
    // reaches us too. A SIGSTOP from outside may be undone by a SIGCONT sent to the guest
    // alone, which a stopped compatrun would never see: the guest would hang.
    if sig == Signal::SIGSTOP {
        return;
    }
    let Some(tty) = tty else { return };
    let Ok(session) = nix::unistd::getsid(None) else {
        return;
    };
    if nix::sys::termios::tcgetsid(tty).ok() != Some(session) {
        return;
    }
    debug!("[pid {guest}] stopped by {sig:?}; stopping compatrun as its job");
    signals::stop_self(sig);
    continued();
}
