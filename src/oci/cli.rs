//! The OCI runtime's command line: runc's global flags and command set, as container
//! engines (podman through conmon, containerd's runc shim, Docker) call a runtime.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// compatrun as an OCI runtime: run containers under a kernel persona.
#[derive(Debug, Parser)]
#[command(
    name = "compatrun oci",
    version,
    disable_help_subcommand = true,
    args_override_self = true
)]
pub struct OciCli {
    /// Where container state lives.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/run/compatrun-oci",
        global = true
    )]
    pub root: PathBuf,

    /// Write compatrun's messages to this file instead of stderr.
    #[arg(long, value_name = "FILE", global = true)]
    pub log: Option<PathBuf>,

    /// The format of the log file: `text` or `json` (one object per line, as runc writes).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Debug-level messages.
    #[arg(long, global = true)]
    pub debug: bool,

    /// Accepted for compatibility with runc (cgroups are managed through cgroupfs).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,

    /// The persona of containers whose config has no `run.compatrun.persona` annotation.
    #[arg(
        short = 'k',
        long,
        value_name = "NAME|FILE",
        default_value = "host",
        global = true
    )]
    pub kernel_persona: String,

    /// The platform of containers whose config has no `run.compatrun.platform`
    /// annotation: `auto`, `ptrace` or `seccomp`.
    #[arg(long, value_name = "NAME", default_value = "auto", global = true)]
    pub platform: String,

    /// What to do.
    #[command(subcommand)]
    pub command: OciCommand,
}

/// The log file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `compatrun: level: message` lines.
    Text,
    /// `{"level":"error","msg":"...","time":"..."}` lines.
    Json,
}

/// What `create` and `run` both take.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container id.
    pub id: String,
    /// The bundle directory (config.json and the root filesystem).
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the pid that the engine waits on here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A Unix socket to send the terminal's master end to (with process.terminal).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for compatibility with runc.
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for compatibility with runc.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Accepted for compatibility with runc (descriptors 3.. are not passed on).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

/// The runtime commands.
#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Create a container: everything is set up and its process waits before the program.
    Create(CreateArgs),
    /// Start a created container's program.
    Start {
        /// The container id.
        id: String,
    },
    /// Create and start a container, and wait for it (unless --detach).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container runs.
        #[arg(short, long)]
        detach: bool,
    },
    /// The container's state as JSON.
    State {
        /// The container id.
        id: String,
    },
    /// Send a signal to the container's process.
    Kill {
        /// The container id.
        id: String,
        /// The signal: a name (TERM, SIGKILL) or a number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container (a running one only with --force, which kills it).
    Delete {
        /// The container id.
        id: String,
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a further process in a running container.
    Exec {
        /// The container id.
        id: String,
        /// The process, as config.json's `process` object.
        #[arg(short, long, value_name = "FILE")]
        process: Option<PathBuf>,
        /// Return once the process runs.
        #[arg(short, long)]
        detach: bool,
        /// Write the pid that the engine waits on here.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// A Unix socket to send the terminal's master end to.
        #[arg(long, value_name = "SOCKET")]
        console_socket: Option<PathBuf>,
        /// Allocate a terminal.
        #[arg(short, long)]
        tty: bool,
        /// (internal) The terminal's master goes out on stdin, a connected socket.
        #[arg(long, hide = true)]
        console_stdin: bool,
        /// The working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variables.
        #[arg(short, long)]
        env: Vec<String>,
        /// The program and its arguments (without --process).
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Freeze a running container (its cgroup).
    Pause {
        /// The container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// The container id.
        id: String,
    },
    /// New resource limits for a running container.
    Update {
        /// The container id.
        id: String,
        /// A `linux.resources` JSON object, from this file or `-` (stdin).
        #[arg(short, long, value_name = "FILE")]
        resources: Option<PathBuf>,
    },
    /// The processes of a container.
    Ps {
        /// The container id.
        id: String,
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    /// The containers under --root.
    List {
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Ids only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json into the bundle directory.
    Spec {
        /// The bundle directory.
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
    },
    /// What this runtime supports, as JSON.
    Features,
    /// (internal) A createContainer or startContainer hook, run in a container's
    /// namespaces.
    #[command(name = "_hook", hide = true)]
    Hook {
        /// The container's first process.
        #[arg(long)]
        pid: i32,
        /// createContainer or startContainer.
        #[arg(long)]
        kind: String,
        /// The hook, as config.json has it (JSON).
        hook: String,
    },
    /// (internal) A container's supervisor, started by `create`.
    #[command(name = "_supervise", hide = true)]
    Supervise {
        /// The container id.
        id: String,
        /// The bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// The fifo `start` opens.
        #[arg(long)]
        fifo: PathBuf,
        /// The socket to report readiness on.
        #[arg(long)]
        sync: PathBuf,
        /// The terminal's master goes out on stdin, a connected socket.
        #[arg(long)]
        console_stdin: bool,
    },
}
