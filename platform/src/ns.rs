//! The namespaces compatrun itself enters before it forks the guest (every platform
//! calls [`enter`] at the same point, while compatrun is still single-threaded). The
//! guest's pid namespace is made by the fork itself (`sys::spawn`), its mount namespace
//! by the namespace's init (`sys::spawn::become_init`).

use crate::{GuestCommand, PlatformError};

/// Prepares compatrun's own process for forking `cmd`'s guest. Must run while compatrun
/// is single-threaded and before the fork.
pub(crate) fn enter(cmd: &GuestCommand) -> Result<(), PlatformError> {
    let _ = cmd;
    Ok(())
}
