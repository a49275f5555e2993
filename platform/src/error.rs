//! Host-side failures of a platform (never shown to the guest as an errno): the one
//! error enum every backend returns, and the ptrace requests that failed under it.

use nix::errno::Errno;
use nix::unistd::Pid;

use crate::command::GuestCommand;
use crate::sys;

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
    /// A sysctl of the guest's own namespaces could not be written.
    #[error("cannot write the sysctl {name}")]
    Sysctl {
        /// Its name (`net.ipv4.ip_forward`).
        name: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The tracer lost track of its guest (a broken invariant, not a guest error).
    #[error(transparent)]
    Trace(#[from] TraceError),
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
        let op = match fail.stage {
            ChildStage::Exec if fail.errno == libc::ENOENT => {
                return PlatformError::NotFound { program }
            }
            ChildStage::Exec => return PlatformError::CannotExecute { program, source },
            ChildStage::Filter if fail.errno == libc::EBUSY => return PlatformError::ListenerBusy,
            ChildStage::Filter => return PlatformError::Filter { source },
            ChildStage::Rootfs(i) => {
                let step = cmd
                    .root
                    .as_ref()
                    .and_then(|r| crate::rootfs::plan(r).ok())
                    .and_then(|p| p.steps.get(usize::from(i)).map(|(_, what)| what.clone()))
                    .unwrap_or_else(|| format!("step {i}"));
                return PlatformError::Rootfs { step, source };
            }
            ChildStage::Sysctl(i) => {
                let name = cmd
                    .sysctls
                    .get(usize::from(i))
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| format!("number {i}"));
                return PlatformError::Sysctl { name, source };
            }
            ChildStage::Chdir => "chdir",
            ChildStage::Handshake => "handshake",
            ChildStage::Isolate => "set up the pid namespace (mount namespace, /proc)",
            ChildStage::User => "switch to the requested user and group",
            ChildStage::Capabilities => "set the requested capabilities",
            ChildStage::Gate => "wait for the start signal",
            ChildStage::ExtraFilter => "install the container's seccomp filter",
            ChildStage::Terminal => {
                "make the terminal (open /dev/ptmx in the guest's root, make the slave \
                 its controlling terminal, send the master)"
            }
        };
        PlatformError::Spawn { op, source }
    }
}

/// A ptrace request that failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The thread no longer exists (killed, or exited with another thread's exec):
    /// its exit is reported by `waitpid`, so callers just move on.
    #[error("thread {0} is gone")]
    Gone(Pid),
    /// Anything else: a broken invariant of the tracer.
    #[error("ptrace {op} on thread {pid} failed: {errno}")]
    Failed {
        /// The request.
        op: &'static str,
        /// The thread.
        pid: Pid,
        /// What the kernel said.
        errno: Errno,
    },
}
