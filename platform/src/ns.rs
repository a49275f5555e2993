//! The namespaces compatrun itself enters before it forks the guest (every platform
//! calls [`enter`] at the same point): a new pid namespace, so that the next child is its
//! pid 1. The guest's mount namespace is made later, by that child
//! (`sys::spawn::become_init`).

use crate::{GuestCommand, PlatformError};

/// Prepares compatrun's own process for forking `cmd`'s guest.
///
/// Must run while compatrun is single-threaded and before the fork; it changes only what
/// compatrun's *children* will share (pid namespace), never compatrun's own view.
pub(crate) fn enter(cmd: &GuestCommand) -> Result<(), PlatformError> {
    if cmd.pid_ns {
        // Our next child is pid 1 of a new pid namespace (we stay outside it).
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| {
            PlatformError::Spawn {
                op: "create a pid namespace",
                source: e.into(),
            }
        })?;
    }
    Ok(())
}
