//! The handlers: one module per emulated behaviour. Each caught (ABI, number) maps to
//! one [`Handler`]; the sentry asks the platform to catch exactly those.

pub mod procfs;
pub mod removed;
pub mod sysctl;
pub mod too_old;
pub mod uname;
pub mod vdso;
pub mod vsyscall;

use platform::Arch;

/// An emulated behaviour bound to one caught system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// `uname`-family call writing the given structure.
    Uname(uname::Layout),
    /// `_sysctl`, through /proc/sys.
    Sysctl,
    /// A call the host removed, answered as the persona's kernel did.
    Removed(removed::Removed),
}

/// Calls the host removed that legacy personas answer themselves.
pub const REMOVED_CALLS: &[(Arch, &str, Handler)] = &[
    (
        Arch::X86_64,
        "lookup_dcookie",
        Handler::Removed(removed::Removed::LookupDcookie),
    ),
    (
        Arch::I386,
        "lookup_dcookie",
        Handler::Removed(removed::Removed::LookupDcookie),
    ),
    (
        Arch::X86_64,
        "nfsservctl",
        Handler::Removed(removed::Removed::Nfsservctl),
    ),
    (
        Arch::I386,
        "nfsservctl",
        Handler::Removed(removed::Removed::Nfsservctl),
    ),
    (
        Arch::X86_64,
        "uselib",
        Handler::Removed(removed::Removed::Uselib),
    ),
    (
        Arch::I386,
        "uselib",
        Handler::Removed(removed::Removed::Uselib),
    ),
];

/// `_sysctl` on the ABIs that had it (x32 never did).
pub const SYSCTL_CALLS: &[(Arch, &str, Handler)] = &[
    (Arch::X86_64, "_sysctl", Handler::Sysctl),
    (Arch::I386, "_sysctl", Handler::Sysctl),
];

/// The calls a persona with a `[uname]` identity catches: (ABI, name, handler).
pub const UNAME_CALLS: &[(Arch, &str, Handler)] = &[
    (Arch::X86_64, "uname", Handler::Uname(uname::Layout::New)),
    (Arch::X32, "uname", Handler::Uname(uname::Layout::New)),
    (Arch::I386, "uname", Handler::Uname(uname::Layout::New)),
    (Arch::I386, "olduname", Handler::Uname(uname::Layout::Old)),
    (
        Arch::I386,
        "oldolduname",
        Handler::Uname(uname::Layout::OldOld),
    ),
];
