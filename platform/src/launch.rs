//! The one launch path every backend shares, from the guest command to a forked child
//! that waits, supervised, for its go-ahead: the backend's preconditions, the filter,
//! the child's image, signal forwarding, compatrun's own namespaces, the fork, the
//! backend's attach, and hiding compatrun from the guest. And at the end, the child's
//! own failure turned into a [`PlatformError`].
//!
//! A backend says only what differs: how the filter hands calls over
//! ([`Plan::catch`]), what compatrun's process needs before the fork
//! ([`Plan::before_fork`]), and how it takes hold of the child ([`launch`]'s `attach`).

use nix::sys::wait::waitpid;

use crate::command::{ExitStatus, GuestCommand};
use crate::contract::InterceptSpec;
use crate::declaration::Declaration;
use crate::error::PlatformError;
use crate::filter::{self, CatchAction};
use crate::sys::spawn::{self, ChildImage, Spawned};
use crate::sys::{self, signals};

/// What a backend adds to the shared launch path.
pub(crate) struct Plan {
    /// The backend's declaration (its name and capabilities).
    pub decl: &'static Declaration,
    /// How the filter hands a caught call over (also: whether the child sends a
    /// seccomp listener back, and its init reports job control).
    pub catch: CatchAction,
    /// Process-wide setup of compatrun itself, before the fork.
    pub before_fork: fn() -> Result<(), PlatformError>,
}

fn unsupported(op: &'static str, msg: String) -> PlatformError {
    PlatformError::Spawn {
        op,
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, msg),
    }
}

/// Forks `cmd`'s guest for the backend `plan` describes and lets `attach` take hold of
/// it; returns the child (still waiting for [`Spawned::release`]) and what `attach`
/// returned. If `attach` fails, the child is ended and reaped before the error returns.
pub(crate) fn launch<A>(
    cmd: &GuestCommand,
    spec: &InterceptSpec,
    plan: &Plan,
    attach: impl FnOnce(&Spawned) -> Result<A, PlatformError>,
) -> Result<(Spawned, A), PlatformError> {
    let name = plan.decl.name;
    if plan.decl.caps.needs_pid_ns && !cmd.pid_ns {
        return Err(unsupported(
            "run without a pid namespace",
            format!(
                "the {name} platform needs the guest in its own pid namespace (so that it \
                 dies with compatrun), which takes CAP_SYS_ADMIN (root) and --pid-ns auto \
                 or on; otherwise use --platform ptrace"
            ),
        ));
    }
    (plan.decl.available)().map_err(|msg| unsupported("use the chosen platform", msg))?;
    // Strict-mode requests too: compatrun's filter makes the kernel refuse them
    // (see `filter::strict`).
    let prog = filter::compile_with(spec, plan.catch, &filter::strict::requests(spec));
    let mut image = ChildImage::new(cmd, prog, !sys::has_cap_sys_admin()).map_err(|source| {
        PlatformError::Spawn {
            op: "prepare",
            source,
        }
    })?;
    if plan.catch == CatchAction::UserNotif {
        image = image.with_notify();
    }
    signals::install_forwarding().map_err(|e| PlatformError::Spawn {
        op: "install signal handlers",
        source: e.into(),
    })?;
    (plan.before_fork)()?;
    crate::ns::enter(cmd)?;
    let child =
        spawn::spawn(&image).map_err(|source| PlatformError::Spawn { op: "fork", source })?;
    let handle = match attach(&child) {
        Ok(h) => h,
        Err(e) => {
            let pid = child.pid;
            drop(child); // the child sees EOF on its go-ahead pipe and exits
            let _ = waitpid(pid, None);
            return Err(e);
        }
    };
    // The guest may not read or attach to us. Only now: the child forked before this
    // and is attached already (a non-dumpable parent's fork child is non-dumpable until
    // it execs, and seizing it would need CAP_SYS_PTRACE).
    nix::sys::prctl::set_dumpable(false).map_err(|e| PlatformError::Spawn {
        op: "set non-dumpable",
        source: e.into(),
    })?;
    Ok((child, handle))
}

/// The run's outcome once the backend has seen every guest process gone: the child's
/// own failure if it never reached the guest program, else `status`.
pub(crate) fn finish(
    cmd: &GuestCommand,
    child: &Spawned,
    status: Result<ExitStatus, PlatformError>,
) -> Result<ExitStatus, PlatformError> {
    let status = status?;
    if let Some(fail) = child.failure() {
        return Err(PlatformError::from_child(cmd, fail));
    }
    Ok(status)
}
