//! The command line, and the platform it asks for (`auto` is resolved by
//! [`platform::choose`]).

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

/// Run a program under an older Linux kernel's persona.
///
/// Only the system calls the persona defines differently from the host are caught;
/// everything else runs natively. The exit status is the program's (128+N if killed by
/// signal N); compatrun's own failures exit 125, 126 (cannot execute) or 127 (not found).
#[derive(Debug, Parser)]
#[command(
    name = "compatrun",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  compatrun --kernel-persona 2.6 -- uname -r\n  compatrun --kernel-persona rhel6 -- ./legacy-app --flag\n  compatrun personas            list the built-in personas\n  compatrun personas rhel6      what one persona changes"
)]
pub struct Cli {
    /// Kernel persona: a built-in name (see `compatrun personas`) or a persona file path.
    #[arg(short = 'k', long, value_name = "NAME|FILE", default_value = "host")]
    pub kernel_persona: String,

    /// How system calls are caught: `auto` picks per run (see --log info for why),
    /// `ptrace` or `seccomp` (user notification) insist.
    #[arg(
        long,
        value_enum,
        env = "COMPATRUN_PLATFORM",
        default_value_t = PlatformChoice::Auto
    )]
    pub platform: PlatformChoice,

    /// Start the guest with its soft open-file limit at most N (legacy personas default
    /// to 1024; 0 leaves the limit as it is). The hard limit is never changed.
    #[arg(long, value_name = "N")]
    pub nofile: Option<u64>,

    /// Run the guest in its own pid namespace with its own /proc, where compatrun is
    /// invisible: `auto` (default) does when compatrun may (root), `on` insists, `off`
    /// keeps the host's pids (the guest then sees compatrun as its parent).
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = PidNs::Auto)]
    pub pid_ns: PidNs,

    /// Run the guest with DIR as its root filesystem (its own mount, pid and, with
    /// --hostname, UTS namespace; an ordinary user gets a user namespace in which the
    /// guest is root unless --user says otherwise).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<std::path::PathBuf>,

    /// Run the guest in a container image: a `docker save`/`podman save` archive or an
    /// OCI image layout (directory or tar). Its layers are unpacked into a cache (reused
    /// next time); the guest writes to a throw-away overlay. The image's Env, Entrypoint,
    /// Cmd, WorkingDir and User are the defaults.
    #[arg(long, value_name = "PATH", conflicts_with = "rootfs")]
    pub image: Option<std::path::PathBuf>,

    /// Bind a host path into the root filesystem: SRC:DST or SRC:DST:ro (repeatable;
    /// DST must exist in a --rootfs tree; with --image it is made in the overlay).
    #[arg(long = "bind", value_name = "SRC:DST[:ro]", value_parser = parse_bind)]
    pub binds: Vec<crate::guest::layout::Bind>,

    /// Set an environment variable for the guest (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub envs: Vec<(String, String)>,

    /// The guest's working directory (inside the root filesystem with --rootfs;
    /// default there: /).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<OsString>,

    /// Run the guest as UID[:GID]: numbers, or with --rootfs or --image names from the
    /// tree's /etc/passwd and /etc/group (GID defaults to the user's group, or to UID).
    #[arg(long, value_name = "UID[:GID]", value_parser = parse_user)]
    pub user: Option<String>,

    /// The guest's host name, in its own UTS namespace (with --rootfs).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Do not bind the host's /etc/resolv.conf and /etc/hosts into the root filesystem.
    #[arg(long)]
    pub no_host_files: bool,

    /// Write what compatrun did for the run to FILE as JSON (docs/REPORT.md): the
    /// platform, the caught calls per program and what became of them, wall time.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,

    /// Do not patch the call sites of programs that call the legacy vsyscall page, nor
    /// the C library's uname wrapper: every such call stays a stop that compatrun
    /// emulates.
    #[arg(long)]
    pub no_patch: bool,

    /// compatrun's own log level (messages go to stderr, prefixed "compatrun:").
    #[arg(long, value_name = "LEVEL", default_value = "warn", global = true)]
    pub log: log::LevelFilter,

    /// The program to run and its arguments (put them after `--`).
    #[arg(value_name = "PROGRAM", trailing_var_arg = true)]
    pub command: Vec<OsString>,

    #[command(subcommand)]
    pub subcommand: Option<Command>,
}

fn parse_bind(s: &str) -> Result<crate::guest::layout::Bind, String> {
    let (src, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected SRC:DST or SRC:DST:ro"))?;
    let (dst, read_only) = match rest.rsplit_once(':') {
        Some((dst, "ro")) => (dst, true),
        Some((dst, "rw")) => (dst, false),
        _ => (rest, false),
    };
    if src.is_empty() || !dst.starts_with('/') {
        return Err(format!("{s:?}: SRC must be given and DST must be absolute"));
    }
    Ok(crate::guest::layout::Bind {
        src: src.into(),
        dst: dst.into(),
        read_only,
    })
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// `UID[:GID]`, each a number or a name (names are looked up in the tree later).
fn parse_user(s: &str) -> Result<String, String> {
    let (u, g) = s.split_once(':').unwrap_or((s, "0"));
    if u.is_empty() || g.is_empty() || g.contains(':') {
        return Err(format!("{s:?}: expected UID[:GID]"));
    }
    Ok(s.to_owned())
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The image cache: `list`, `prune`, or `prepare PATH` (unpack and print the tree).
    Images {
        /// What to do.
        #[command(subcommand)]
        action: ImagesAction,
    },
    /// Scan programs and libraries for what will meet a changed kernel: system-call
    /// sites, vsyscall users, the C library and its ABI note, judged per persona and
    /// for this host.
    Scan {
        /// Files or directories to scan (directories are walked; links inside are not
        /// followed).
        #[arg(value_name = "PATH", required_unless_present_any = ["rootfs", "image"])]
        paths: Vec<std::path::PathBuf>,
        /// A root filesystem to scan (paths are shown as inside it).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["paths", "image"])]
        rootfs: Option<std::path::PathBuf>,
        /// A container image to scan (unpacked into the image cache first).
        #[arg(long, value_name = "IMAGE", conflicts_with = "paths")]
        image: Option<std::path::PathBuf>,
        /// Judge against this persona (repeatable; default: every built-in legacy one).
        #[arg(long = "persona", short = 'k', value_name = "NAME|FILE")]
        personas: Vec<String>,
        /// Print JSON (schema: docs/SCAN.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure what one system call costs on this host: natively, passed through the
    /// filter, refused by it, emulated (per platform and CPU placement), through the
    /// vsyscall page, and fork+exec+wait.
    Bench {
        /// The persona whose calls are caught and emulated.
        #[arg(
            long = "persona",
            short = 'k',
            value_name = "NAME|FILE",
            default_value = "2.6"
        )]
        persona: String,
        /// Measure only these platforms (repeatable; default: every one available).
        #[arg(long = "platform", value_enum, value_name = "PLATFORM")]
        platforms: Vec<BenchPlatform>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Also draw the results as an SVG chart into FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
        /// A short run (two rounds, few calls) that checks every row works; its figures
        /// are rough.
        #[arg(long)]
        quick: bool,
    },
    /// List the built-in personas, or show what one persona changes.
    Personas {
        /// A persona name or file to describe in full.
        #[arg(value_name = "NAME|FILE")]
        persona: Option<String>,
    },
}

/// A platform `compatrun bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchPlatform {
    /// See [`PlatformChoice::Ptrace`].
    Ptrace,
    /// See [`PlatformChoice::Seccomp`].
    Seccomp,
}

impl From<BenchPlatform> for Platform {
    fn from(p: BenchPlatform) -> Self {
        match p {
            BenchPlatform::Ptrace => Platform::Ptrace,
            BenchPlatform::Seccomp => Platform::Seccomp,
        }
    }
}

/// `compatrun images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesAction {
    /// The cached trees: size, the images they were made for, path.
    List,
    /// Remove every cached tree no run is using (and what interrupted runs left).
    Prune {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Unpack an image into the cache (verifying it) and print its tree's path.
    Prepare {
        /// The image: a docker-archive or an OCI layout (directory or tar).
        path: std::path::PathBuf,
    },
}

/// The platforms compatrun can run a guest on, as the command line names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlatformChoice {
    /// seccomp when it can do all the persona needs on this host, else ptrace.
    Auto,
    /// ptrace with a seccomp filter: only caught calls stop the guest.
    Ptrace,
    /// seccomp user notification: caught calls wait on compatrun; nothing is traced.
    Seccomp,
}

pub use platform::{Platform, RunNeeds};

impl PlatformChoice {
    /// The backend this choice names, if it names one.
    fn asked(self) -> Option<Platform> {
        match self {
            PlatformChoice::Auto => None,
            PlatformChoice::Ptrace => Some(Platform::Ptrace),
            PlatformChoice::Seccomp => Some(Platform::Seccomp),
        }
    }

    /// Resolves `auto` for this run with the platform's rule ([`platform::choose`]);
    /// logs the choice and its reason at info level.
    pub fn decide(self, needs: RunNeeds) -> platform::Choice {
        let choice = platform::choose(self.asked(), needs);
        log::info!("platform {}: {}", choice.platform.name(), choice.why);
        choice
    }
}

/// When to give the guest its own pid namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PidNs {
    /// When compatrun holds CAP_SYS_ADMIN (creating one needs it).
    Auto,
    /// Always (fails without CAP_SYS_ADMIN).
    On,
    /// Never.
    Off,
}

impl PidNs {
    /// Whether this run uses a pid namespace; logs the reason at info level.
    pub fn enabled(self) -> bool {
        match self {
            PidNs::On => true,
            PidNs::Off => false,
            PidNs::Auto => {
                let able = platform::sys::has_cap_sys_admin();
                if !able {
                    log::info!("no pid namespace: creating one needs CAP_SYS_ADMIN (--pid-ns on to insist)");
                }
                able
            }
        }
    }
}
