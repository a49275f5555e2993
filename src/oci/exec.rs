//! `exec`: a further process in a running container, under the container's persona.
//! compatrun joins the container's cgroup and namespaces (cgroup, ipc, uts, network,
//! pid; the process alone joins its user and mount namespaces), then runs the process
//! on the ptrace platform (which needs no pid namespace of its own). With `--detach` a helper does that, and its pid is the one
//! written to `--pid-file` for the engine to wait on. A terminal (`-t`, or
//! `process.terminal`) goes to `--console-socket` when detached (through the helper,
//! before `exec` returns), or is proxied to our stdin and stdout in the foreground.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sched::CloneFlags;

use super::cli::OciCli;
use super::state::{Dir, Status};
use crate::guest::GuestBuilder;

/// The name prefix of the process file a detached exec hands its helper.
const EXEC_COPY: &str = "exec-process-";

/// What to run.
#[derive(Debug)]
pub struct Request<'a> {
    /// The container id.
    pub id: &'a str,
    /// A process.json, as config.json's `process`.
    pub process: Option<&'a Path>,
    /// The working directory (without a process.json).
    pub cwd: Option<&'a str>,
    /// Environment variables (without a process.json).
    pub env: &'a [String],
    /// The program and arguments (without a process.json).
    pub command: &'a [String],
    /// `-t`: a terminal (without a process.json).
    pub tty: bool,
}

/// Where the terminal's master goes.
#[derive(Debug)]
pub struct Console<'a> {
    /// The engine's `--console-socket`.
    pub socket: Option<&'a Path>,
    /// (The detached exec's helper) to our stdin, a connected socket.
    pub on_stdin: bool,
}

/// The process to run: the `--process` file, or one made of the command line.
fn load_process(req: &Request<'_>, state_dir: &Path) -> anyhow::Result<oci_spec::runtime::Process> {
    Ok(match req.process {
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("--process {}", p.display()))?;
            if p.parent() == Some(state_dir)
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(EXEC_COPY))
            {
                // The copy a detached exec made for this helper.
                let _ = std::fs::remove_file(p);
            }
            serde_json::from_reader(f).with_context(|| format!("--process {}", p.display()))?
        }
        None => {
            if req.command.is_empty() {
                bail!("exec: no command and no --process");
            }
            let mut p = oci_spec::runtime::Process::default();
            p.set_args(Some(req.command.to_vec()));
            p.set_env(Some(req.env.to_vec()));
            p.set_cwd(req.cwd.unwrap_or("/").into());
            p.set_capabilities(None);
            p.set_rlimits(None);
            p.set_no_new_privileges(None);
            p.set_terminal(Some(req.tty));
            p
        }
    })
}

/// Runs the request; returns its exit status (0 when detached).
pub fn exec(
    g: &OciCli,
    req: &Request<'_>,
    detach: bool,
    pid_file: Option<&Path>,
    console: &Console<'_>,
) -> anyhow::Result<u8> {
    let (state_dir, r) = {
        // Not locked any longer than this: kill and delete must work while it runs.
        let dir = Dir::open(&g.root, req.id)?;
        (dir.path.clone(), dir.load()?)
    };
    if r.status() != Status::Running {
        bail!("container {} is not running", req.id);
    }
    if detach {
        return detached(g, req, pid_file, console.socket, &state_dir);
    }
    let process = load_process(req, &state_dir)?;
    let terminal = process.terminal().unwrap_or(false);
    if !console.on_stdin {
        super::console::check(terminal, false, console.socket.is_some())?;
    }
    let argv = process.args().clone().unwrap_or_default();
    if argv.is_empty() {
        bail!("process.args is empty");
    }
    // With a terminal the guest sends its master straight to the detached exec that
    // started us (our stdin), or to a pair whose other end we proxy.
    let (to_guest, proxied) = match (terminal, console.on_stdin) {
        (false, _) => (None, None),
        (true, true) => (
            Some(UnixStream::from(
                std::io::stdin().as_fd().try_clone_to_owned()?,
            )),
            None,
        ),
        (true, false) => {
            let (ours, theirs) = UnixStream::pair().context("socketpair")?;
            (Some(theirs), Some(ours))
        }
    };
    // Threads before the pid namespace is joined (the kernel refuses them after).
    let proxy = proxied.map(|ours| {
        std::thread::spawn(move || {
            super::console::recv_master(&ours).and_then(super::console::Proxy::start)
        })
    });
    // Into the container: its cgroup first, then its namespaces but the mount one, which
    // only the process joins (the supervisor keeps the host's /proc to follow it).
    if let Some(path) = &r.cgroup {
        super::cgroups::join(path)?;
    }
    for (name, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
    ] {
        let theirs = format!("/proc/{}/ns/{name}", r.pid);
        let ours = format!("/proc/self/ns/{name}");
        if std::fs::read_link(&theirs).ok() == std::fs::read_link(&ours).ok() {
            continue;
        }
        let f = std::fs::File::open(&theirs).with_context(|| theirs.clone())?;
        nix::sched::setns(f, flag)
            .with_context(|| format!("join the container's {name} namespace"))?;
    }
    let rlimits = serde_json::to_value(process.rlimits())?;
    for rl in rlimits.as_array().into_iter().flatten() {
        super::supervisor::set_rlimit(
            rl["type"].as_str().unwrap_or(""),
            rl["soft"].as_u64().unwrap_or(0),
            rl["hard"].as_u64().unwrap_or(0),
        )?;
    }
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().context("process.noNewPrivileges")?;
    }
    let mnt = std::fs::File::open(format!("/proc/{}/ns/mnt", r.pid))
        .context("the container's mount namespace")?;
    // A container with a user namespace of its own: the process joins it before the
    // mount namespace (the supervisor, outside, still traces it).
    let userns = {
        let theirs = format!("/proc/{}/ns/user", r.pid);
        if std::fs::read_link(&theirs).ok() == std::fs::read_link("/proc/self/ns/user").ok() {
            None
        } else {
            Some(std::fs::File::open(&theirs).context("the container's user namespace")?)
        }
    };
    // The container's seccomp profile holds for every process in it, as under runc.
    let seccomp = match &r.seccomp {
        Some(s) => vec![super::seccomp::compile(s)?.0],
        None => Vec::new(),
    };
    let (mut sentry, nofile) = super::supervisor::sentry_for(&r.persona)?;
    let user = process.user();
    let caps = super::config::capabilities(&process)?;
    let env = super::config::env_of(&process);
    let built = GuestBuilder::new(argv.iter().map(Into::into).collect())
        .envs(env)
        .workdir(Some(process.cwd().clone().into_os_string()))
        .user(
            Some(&format!("{}:{}", user.uid(), user.gid())),
            "process.user",
        )
        .groups(user.additional_gids().clone().unwrap_or_default())
        .capabilities(caps)
        .nofile_soft(nofile)
        .extra_filters(seccomp)
        .pid_ns(false)
        .user_ns(
            userns
                .as_ref()
                .map(|f| platform::UserNamespace::Join(f.as_raw_fd())),
        )
        .join_mount_ns(
            mnt.as_raw_fd(),
            PathBuf::from(format!("/proc/{}/root", r.pid)),
        );
    let size = super::console::size(&process)?;
    let built = built
        .terminal(to_guest.as_ref().map(|s| platform::TerminalSpec {
            socket: s.as_raw_fd(),
            size,
            console: false,
        }))
        .build(&mut sentry)?;
    // The ptrace platform: the seccomp one needs a pid namespace of its own.
    let platform = platform::Platform::Ptrace;
    let spec = sentry.intercept_spec().clone();
    let status = platform.run(&built.command, &spec, &mut sentry);
    // The guest's copies are closed now: a proxy still waiting for the master sees EOF.
    drop(to_guest);
    if let Some(Ok(Ok(p))) = proxy.map(std::thread::JoinHandle::join) {
        p.finish(Duration::from_secs(2));
    }
    let status = status?;
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(125))
}

/// `exec --detach`: a helper runs the process (its pid goes to `--pid-file`); with a
/// terminal the helper's stdin is a socket pair on which its master comes back here, to
/// be sent on to `console_socket` before we return (engines expect the master by then).
fn detached(
    g: &OciCli,
    req: &Request<'_>,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
    state_dir: &Path,
) -> anyhow::Result<u8> {
    let process = load_process(req, state_dir)?;
    let terminal = process.terminal().unwrap_or(false);
    super::console::check(terminal, true, console_socket.is_some())?;
    let console = console_socket.map(super::console::connect).transpose()?;
    let mut cmd = Command::new(std::env::current_exe().context("compatrun's own path")?);
    cmd.args(super::lifecycle::global_args(g)).arg("exec");
    if let Some(p) = req.process {
        // The engine removes its file once exec returns (the containerd shim does): the
        // helper gets a copy in the container's state directory.
        let text = std::fs::read(p).with_context(|| format!("--process {}", p.display()))?;
        let copy = state_dir.join(format!(
            "{EXEC_COPY}{}-{}.json",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::write(&copy, text).with_context(|| format!("{}", copy.display()))?;
        cmd.arg("--process").arg(copy);
    }
    if let Some(c) = req.cwd {
        cmd.arg("--cwd").arg(c);
    }
    for e in req.env {
        cmd.arg("--env").arg(e);
    }
    if req.tty {
        cmd.arg("--tty");
    }
    let ours = match console {
        Some(_) => {
            let (ours, theirs) = UnixStream::pair().context("socketpair")?;
            cmd.arg("--console-stdin")
                .stdin(Stdio::from(OwnedFd::from(theirs)));
            Some(ours)
        }
        None => None,
    };
    cmd.arg(req.id).args(req.command);
    let child = cmd.spawn().context("start the exec helper")?;
    drop(cmd);
    if let Some(p) = pid_file {
        std::fs::write(p, child.id().to_string())
            .with_context(|| format!("--pid-file {}", p.display()))?;
    }
    if let (Some(ours), Some(console)) = (ours, console) {
        let master = super::console::recv_master(&ours)?;
        super::console::send_master(&console, master.as_fd())?;
    }
    Ok(0)
}
