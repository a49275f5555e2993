//! Forking the guest and running the few instructions between `fork` and `execve`.
//!
//! Everything the child needs is prepared before `fork` ([`ChildImage`]), because the
//! child may only make async-signal-safe calls: the parent may have other threads (test
//! harnesses do), and any allocation in the child could deadlock on a lock they held.
//!
//! The child waits on a pipe until the parent has seized it, so the seccomp filter and
//! the `execve` of the guest both happen under the supervisor's eye: no guest instruction
//! ever runs uncaught, and if the parent dies first the child exits instead.
//!
//! One file per process role, imported one way only (parent -> child -> init):
//! - [`parent`]: compatrun's side, forking and then talking to the child ([`Spawned`]);
//! - `child`: the forked child up to `execve` (user, cwd, limits, filter, exec);
//! - `init`: with a pid namespace, its pid 1 (mounts, forking the guest, reaping);
//! - [`image`]: what the parent prepares for the other two before `fork`;
//! - [`wire`]: the messages between the roles, encoded and decoded in one place;
//! - `caps`: capability sets, for the child and the init;
//! - `terminal`: the guest's first process making its own pty (`GuestCommand::terminal`).

mod caps;
mod child;
pub mod image;
mod init;
mod lockdown;
pub mod parent;
mod terminal;
pub mod wire;

pub use image::ChildImage;
pub use parent::{spawn, Spawned};
pub use wire::{ChildFailure, ChildStage, GuestJobEvent};
