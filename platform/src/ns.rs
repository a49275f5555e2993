//! The namespaces compatrun itself enters before it forks the guest (every platform
//! calls [`enter`] at the same point, while compatrun is still single-threaded): a user
//! namespace, for an ordinary user who needs a pid and mount namespace (a root
//! filesystem, the seccomp platform). The guest's pid namespace is made by the fork
//! itself (`sys::spawn`), and with it a user namespace of the guest's own
//! ([`UserNamespace::New`], whose maps `sys::spawn::parent` writes); its mount namespace
//! and the other new ones by the namespace's init (`sys::spawn` init role).

use crate::command::GuestCommand;
use crate::error::PlatformError;
use crate::userns::{IdMap, UserNamespace};

/// Prepares compatrun's own process for forking `cmd`'s guest. Must run while compatrun
/// is single-threaded and before the fork.
pub(crate) fn enter(cmd: &GuestCommand) -> Result<(), PlatformError> {
    let Some(UserNamespace::Enter(map)) = &cmd.user_ns else {
        return Ok(());
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| PlatformError::UserNamespace { source: e.into() })?;
    // compatrun's own ids, as `map` says. setgroups must be refused before an
    // unprivileged process may write its gid map.
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|source| PlatformError::UserNamespace { source })
    };
    write("setgroups", "deny".to_owned())?;
    write("uid_map", IdMap::text(&map.uid))?;
    write("gid_map", IdMap::text(&map.gid))?;
    Ok(())
}
