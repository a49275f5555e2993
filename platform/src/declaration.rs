//! What a backend declares about itself: the data [`crate::backend::choose`] weighs.
//! A new backend fills one [`Declaration`]; this file knows no backend.

use std::fmt;

/// What a backend can do. A run's [`RunNeeds`] are held against these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// It shows the supervisor the signals the spec lists before they are delivered
    /// (the vsyscall page's fault on a host without one).
    pub sees_signals: bool,
    /// It stops a thread that has just executed a new program, before its first
    /// instruction, and calls [`Supervisor::execed`] (the vDSO note rewrite, the
    /// "kernel too old" hint).
    pub sees_exec: bool,
    /// It calls [`Supervisor::exited`] for every guest thread that ends.
    pub reports_exits: bool,
    /// It can only run a guest in its own pid namespace (which binds the guest's life
    /// to compatrun's).
    pub needs_pid_ns: bool,
    /// fork, clone and exec run without a stop in the supervisor.
    pub forks_untraced: bool,
}

/// A backend's declaration: its name, what it can do, and whether this host offers it.
#[derive(Clone, Copy)]
pub struct Declaration {
    /// The name on the command line (`--platform NAME`).
    pub name: &'static str,
    /// One line for the log when it is chosen by preference: why it is the one to use.
    pub merit: &'static str,
    /// What it can do.
    pub caps: Capabilities,
    /// Whether this host and this process can use it; the error says why not.
    pub available: fn() -> Result<(), String>,
}

impl fmt::Debug for Declaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Declaration")
            .field("name", &self.name)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}
