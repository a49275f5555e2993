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
pub mod contract;
pub mod declaration;
pub mod filter;
mod jobctl;
mod launch;
pub mod mem;
mod ns;
pub mod ptrace;
pub mod rootfs;
pub mod seccomp;
pub mod sys;

use std::ffi::OsString;

pub use backend::{choose, Capabilities, Choice, Declaration, Platform, RunNeeds};
pub use contract::{
    Arch, Fault, GuestThread, InterceptSpec, Regs, Rule, SignalInfo, SignalVerdict, Supervisor,
    Syscall, Verdict,
};

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
    /// Enter a user namespace first, mapping compatrun's own ids to these (an ordinary
    /// user gets the rights a pid and mount namespace need only this way).
    pub user_ns: Option<IdMap>,
}

/// The one-to-one id mapping of a user namespace compatrun enters: compatrun's effective
/// uid and gid outside appear as these inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    /// The uid inside.
    pub inside_uid: u32,
    /// The gid inside.
    pub inside_gid: u32,
}

/// The guest's root filesystem (`--rootfs`), set up by the pid namespace's init: see
/// [`rootfs`] for what is mounted where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSetup {
    /// The directory that becomes `/`.
    pub dir: OsString,
    /// Host paths bound into the tree (`--bind SRC:DST[:ro]`).
    pub binds: Vec<Bind>,
    /// Bind the host's /etc/resolv.conf and /etc/hosts over the tree's (read-only).
    pub host_files: bool,
    /// The guest's host name, in its own UTS namespace.
    pub hostname: Option<OsString>,
    /// The PATH the program is looked up on inside the tree (when it has no slash).
    pub path: OsString,
    /// Keep `dir` unchanged: the guest's writes go to an overlay whose upper and work
    /// directories are made in this (empty, existing) directory.
    pub overlay: Option<OsString>,
    /// The guest's working directory (absolute, inside the tree): under an overlay it is
    /// made there when the tree lacks it, as container engines do.
    pub workdir: Option<OsString>,
}

/// One `--bind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The host path.
    pub src: OsString,
    /// Where it appears inside the tree (absolute, as the guest sees it).
    pub dst: OsString,
    /// Mounted read-only.
    pub read_only: bool,
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

/// Host-side failures of a platform (never shown to the guest as an errno).
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The program does not exist.
    #[error("{program}: command not found")]
    NotFound {
        /// What was asked for.
        program: String,
    },
    /// The program exists but cannot be executed.
    #[error("{program}: cannot execute")]
    CannotExecute {
        /// What was asked for.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Tracing is not permitted here.
    #[error(
        "ptrace is not permitted here; compatrun's ptrace platform needs to trace its own \
         child: inside a container, grant CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE) \
         or allow ptrace in its seccomp profile; with Yama, set kernel.yama.ptrace_scope \
         to 2 or lower"
    )]
    PtraceDenied {
        /// What the kernel said.
        source: nix::errno::Errno,
    },
    /// Another seccomp user-notification supervisor already watches this process.
    #[error(
        "another seccomp user-notification supervisor already watches this process (the \
         kernel allows one per process: compatrun --platform seccomp inside another, or a \
         container runtime that uses one); use --platform ptrace"
    )]
    ListenerBusy,
    /// The seccomp filter could not be installed in the guest.
    #[error(
        "cannot install the seccomp filter; compatrun needs seccomp filters \
         (CONFIG_SECCOMP_FILTER) and, inside a container, a profile that allows seccomp(2)"
    )]
    Filter {
        /// What the kernel said.
        source: std::io::Error,
    },
    /// Setting up the guest failed.
    #[error("cannot start the guest: {op}")]
    Spawn {
        /// The step.
        op: &'static str,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An ordinary user's user namespace could not be made.
    #[error(
        "cannot create a user namespace, which an ordinary user needs for a root filesystem \
         or the seccomp platform: the host forbids unprivileged user namespaces (see sysctl \
         user.max_user_namespaces, kernel.unprivileged_userns_clone, or an AppArmor \
         restriction on them); run compatrun as root"
    )]
    UserNamespace {
        /// What the kernel said.
        source: std::io::Error,
    },
    /// Setting up the root filesystem failed at one step.
    #[error("cannot set up the root filesystem: {step}")]
    Rootfs {
        /// What the step did.
        step: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The tracer lost track of its guest (a broken invariant, not a guest error).
    #[error(transparent)]
    Trace(#[from] ptrace::TraceError),
    /// waitpid failed unexpectedly.
    #[error("waitpid failed: {0}")]
    Wait(nix::errno::Errno),
}

impl PlatformError {
    /// The error for a guest's first process that failed before the guest program ran.
    pub(crate) fn from_child(cmd: &GuestCommand, fail: sys::spawn::ChildFailure) -> Self {
        use sys::spawn::ChildStage;
        let program = cmd.program.to_string_lossy().into_owned();
        let source = std::io::Error::from_raw_os_error(fail.errno);
        match fail.stage {
            ChildStage::Exec if fail.errno == libc::ENOENT => PlatformError::NotFound { program },
            ChildStage::Exec => PlatformError::CannotExecute { program, source },
            ChildStage::Filter if fail.errno == libc::EBUSY => PlatformError::ListenerBusy,
            ChildStage::Filter => PlatformError::Filter { source },
            ChildStage::Chdir => PlatformError::Spawn {
                op: "chdir",
                source,
            },
            ChildStage::Handshake => PlatformError::Spawn {
                op: "handshake",
                source,
            },
            ChildStage::Isolate => PlatformError::Spawn {
                op: "set up the pid namespace (mount namespace, /proc)",
                source,
            },
            ChildStage::Rootfs(i) => PlatformError::Rootfs {
                step: cmd
                    .root
                    .as_ref()
                    .and_then(|r| crate::rootfs::plan(r).ok())
                    .and_then(|p| p.steps.get(usize::from(i)).map(|(_, what)| what.clone()))
                    .unwrap_or_else(|| format!("step {i}")),
                source,
            },
            ChildStage::User => PlatformError::Spawn {
                op: "switch to the requested user and group",
                source,
            },
        }
    }
}

/// Whether this host maps the legacy vsyscall page (`[vsyscall]` in our own maps: the
/// kernel emulates calls into it, unless booted with `vsyscall=none`).
pub fn host_has_vsyscall_page() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("[vsyscall]"))
}

/// Finds `program` the way `execvp` would: a name with a slash is used as given,
/// otherwise each directory of `path` (the guest's PATH) is tried in order.
///
/// Returns the first candidate that exists and is executable, else the first that exists
/// (so exec reports why it cannot run), else [`PlatformError::NotFound`].
pub fn resolve_program(
    program: &std::ffi::OsStr,
    path: Option<&std::ffi::OsStr>,
) -> Result<OsString, PlatformError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let not_found = || PlatformError::NotFound {
        program: program.to_string_lossy().into_owned(),
    };
    if program.is_empty() {
        return Err(not_found());
    }
    if program.as_bytes().contains(&b'/') {
        return if std::path::Path::new(program).exists() {
            Ok(program.to_owned())
        } else {
            Err(not_found())
        };
    }
    let path = path.unwrap_or(std::ffi::OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut first_existing = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = std::path::Path::new(std::ffi::OsStr::from_bytes(dir)).join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate.into_os_string());
        }
        first_existing.get_or_insert(candidate);
    }
    first_existing
        .map(|c| c.into_os_string())
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn resolves_like_execvp() {
        let sh = resolve_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin")));
        assert_eq!(sh.expect("sh in /bin"), OsString::from("/bin/sh"));
        assert!(matches!(
            resolve_program(OsStr::new("no-such-program-xyz"), None),
            Err(PlatformError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program(OsStr::new("./no/such/file"), None),
            Err(PlatformError::NotFound { .. })
        ));
        assert!(resolve_program(OsStr::new(""), None).is_err());
    }

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
