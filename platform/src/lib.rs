//! How compatrun catches a guest's system calls.
//!
//! This crate owns spawning the guest, the seccomp filter, following every process and
//! thread, guest memory and registers, and replying "return this" or "let it run". It
//! knows nothing of personas or of what a system call means: the sentry describes what to
//! catch with an [`InterceptSpec`] and answers each caught call through the
//! [`Supervisor`] trait (see [`contract`]).
//!
//! Backends: [`ptrace`] (seccomp `RET_TRACE` stops under `PTRACE_SEIZE`) and [`seccomp`]
//! (seccomp `RET_USER_NOTIF` on a listener fd, nothing traced). Each declares what it
//! can do ([`backend`]); [`choose`] picks one for a run and says why, and both start
//! the guest through one shared launch path.

#![deny(missing_docs)]

pub mod backend;
pub mod command;
pub mod contract;
pub mod declaration;
pub mod error;
pub mod filter;
mod jobctl;
mod launch;
mod layout;
pub mod mem;
mod ns;
pub mod procfs;
pub mod program;
pub mod ptrace;
pub mod rootfs;
pub mod seccomp;
mod strict;
pub mod sys;
pub mod userns;

pub use backend::{choose, Capabilities, Choice, Declaration, Platform, RunNeeds};
pub use command::{BpfInsn, CapSets, ExitStatus, ExtraFilter, GuestCommand, TerminalSpec};
pub use contract::{
    Arch, Fault, GuestThread, InterceptSpec, Regs, Rule, SignalInfo, SignalVerdict, Supervisor,
    Syscall, ThreadOpError, Verdict,
};
pub use error::PlatformError;
pub use layout::{BindSpec, MountSpec, RootSetup, Target};
pub use program::resolve_program;
pub use sys::probe::host_has_vsyscall_page;
pub use userns::{IdKind, IdMap, IdMapError, IdRange, Namespace, UserNamespace};
