//! What compatrun asks a platform to run: the guest's first program, its environment,
//! namespaces and root filesystem ([`GuestCommand`]), and how it ended ([`ExitStatus`]).

use std::ffi::OsString;

use crate::layout::RootSetup;
use crate::userns::{Namespace, UserNamespace};

/// What to run as the guest's first process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCommand {
    /// The program to execute (a path: resolve PATH before, see [`resolve_program`]).
    pub program: OsString,
    /// The argument vector, argv\[0\] included.
    pub argv: Vec<OsString>,
    /// The environment, as `KEY=VALUE` strings.
    pub env: Vec<OsString>,
    /// The working directory, if it is to change.
    pub cwd: Option<OsString>,
    /// Lower the soft RLIMIT_NOFILE to this if it is higher (the hard limit stays).
    pub nofile_soft: Option<u64>,
    /// Run the guest in its own pid namespace (with its own /proc), where the supervisor
    /// is invisible; needs CAP_SYS_ADMIN.
    pub pid_ns: bool,
    /// Files the guest sees with these contents instead of the host's (read-only bind
    /// mounts in the guest's mount namespace; only with `pid_ns`). Targets must exist.
    pub synthetic_files: Vec<(OsString, Vec<u8>)>,
    /// A root filesystem for the guest (only with `pid_ns`): `program` is then looked up
    /// inside it, on `RootSetup::path`.
    pub root: Option<RootSetup>,
    /// The user and group the guest's first process switches to before its filter and
    /// exec (`--user` when compatrun is root; inside a user namespace the mapping does it).
    pub user: Option<(u32, u32)>,
    /// The guest's user namespace (see [`UserNamespace`]): compatrun's own, entered
    /// first (an ordinary user gets the rights a pid and mount namespace need only this
    /// way), a new one for the guest alone with maps compatrun writes, or one to join.
    pub user_ns: Option<UserNamespace>,
    /// Namespaces the guest gets new besides its pid and mount ones, made by the pid
    /// namespace's init (only with `pid_ns`), after the user namespace, which owns them.
    pub namespaces: Vec<Namespace>,
    /// Sysctls (`net.ipv4.ip_forward`, value) the pid namespace's init writes once it
    /// has made those namespaces, as their root (in a user namespace of the guest's own,
    /// only its root may write some of them: `kernel.shm*`); only with `pid_ns`.
    pub sysctls: Vec<(String, String)>,
    /// Supplementary groups of the guest's first process when it switches `user`:
    /// exactly these (an OCI `additionalGids`, possibly none), or with `None` the
    /// group itself alone.
    pub groups: Option<Vec<u32>>,
    /// The capabilities the guest keeps (as root); `None` leaves them as they are.
    pub capabilities: Option<CapSets>,
    /// A descriptor the guest's first process reads one byte from, after its filter is
    /// in place and just before its exec: the program starts only once the front end
    /// writes it (an OCI runtime's `start`). End of file instead ends the guest.
    pub start_gate: Option<std::os::fd::RawFd>,
    /// A mount namespace (an open `/proc/PID/ns/mnt`) the guest's first process joins
    /// before anything else, which also makes that namespace's root its own (a further
    /// process in a running container); `program` must then be a path valid there.
    pub join_mount_ns: Option<std::os::fd::RawFd>,
    /// Seccomp filters of the front end's own (an OCI runtime's `linux.seccomp`), which
    /// the guest's first process installs after compatrun's filter, in order. The
    /// kernel runs every filter and takes the strongest action, so a call one of them
    /// refuses is refused even if compatrun would emulate it, and a call they allow that
    /// compatrun catches still reaches compatrun.
    pub extra_filters: Vec<ExtraFilter>,
    /// A terminal for the guest's first process (see [`TerminalSpec`]).
    pub terminal: Option<TerminalSpec>,
}

/// One classic BPF instruction, as the kernel's `struct sock_filter` has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfInsn {
    /// The opcode.
    pub code: u16,
    /// Where a conditional jump goes when true (instructions to skip).
    pub jt: u8,
    /// Where it goes when false.
    pub jf: u8,
    /// The operand.
    pub k: u32,
}

/// A further seccomp filter for the guest (see [`GuestCommand::extra_filters`]).
///
/// Installed as late as it can be: just before the exec when the guest's first process
/// has `no_new_privs` (as runc does), else before it gives up capabilities (installing
/// a filter without `no_new_privs` takes `CAP_SYS_ADMIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraFilter {
    /// The program.
    pub program: Vec<BpfInsn>,
    /// `SECCOMP_FILTER_FLAG_*` for `seccomp(2)`: only `TSYNC`, `LOG` and `SPEC_ALLOW`
    /// (a listener is never made for a front end's filter). Where the persona answers
    /// `seccomp(2)` with ENOSYS, the filter goes in through `prctl(PR_SET_SECCOMP)`,
    /// which takes no flags, so only the logging and speculation flags are lost.
    pub flags: u32,
}

impl ExtraFilter {
    /// `SECCOMP_FILTER_FLAG_TSYNC`.
    pub const FLAG_TSYNC: u32 = 1 << 0;
    /// `SECCOMP_FILTER_FLAG_LOG`.
    pub const FLAG_LOG: u32 = 1 << 1;
    /// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
    pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;
    /// The flags an extra filter may carry.
    pub const ALLOWED_FLAGS: u32 = Self::FLAG_TSYNC | Self::FLAG_LOG | Self::FLAG_SPEC_ALLOW;
}

/// A new pseudo-terminal for the guest's first process, made by that process itself once
/// its root filesystem (or joined mount namespace) is in place and before the start
/// gate: it opens `/dev/ptmx` as it sees it (the container's own devpts instance when
/// /dev/ptmx leads there), becomes a session leader with the slave as its controlling
/// terminal and as descriptors 0, 1 and 2, sets the window size, and sends the master
/// over `socket` (`SCM_RIGHTS`, with `/dev/ptmx` as the message's bytes) before closing
/// its own copies of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalSpec {
    /// A connected Unix stream socket the master goes out on.
    pub socket: std::os::fd::RawFd,
    /// The window size (rows, columns); `None` leaves the kernel's default (0x0).
    pub size: Option<(u16, u16)>,
    /// Also bind the slave over `/dev/console` (made as an empty file if missing), as
    /// runc does for a container's first process.
    pub console: bool,
}

/// Capability sets as bit masks (bit N = capability N), as `capset(2)` and the
/// bounding and ambient sets take them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    /// The bounding set: every capability not in it is dropped for good.
    pub bounding: u64,
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
    /// Inheritable.
    pub inheritable: u64,
    /// Ambient (each must also be permitted and inheritable).
    pub ambient: u64,
}

/// How the guest's first process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this status.
    Exited(i32),
    /// It was killed by this signal.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core: bool,
    },
}

impl ExitStatus {
    /// The status a shell would report: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(
            ExitStatus::Signaled {
                signal: 9,
                core: false
            }
            .code(),
            137
        );
    }
}
