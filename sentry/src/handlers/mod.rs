//! The handlers: one module per emulated behaviour. Each caught (ABI, number) maps to
//! one [`Handler`]; the sentry asks the platform to catch exactly those.

pub mod procfs;
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
}

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
