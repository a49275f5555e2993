//! The runtime commands: `create`, `start`, `state`, `kill`, `delete`, `run`, `list`,
//! `ps`, `spec`, `features`, and the hooks they run (prestart, createRuntime and
//! createContainer in `create`, startContainer and poststart in `start`, poststop in
//! `delete`; each with the state on stdin).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cli::OciCli;
use super::config;
use super::state::{self, Dir, Record, Status};

/// The global flags a supervisor or exec helper is started with.
pub(super) fn global_args(g: &OciCli) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "oci".into(),
        "--root".into(),
        g.root.clone().into(),
        "--kernel-persona".into(),
        g.kernel_persona.clone().into(),
        "--platform".into(),
        g.platform.clone().into(),
    ];
    if let Some(log) = &g.log {
        a.extend(["--log".into(), log.clone().into_os_string()]);
        a.extend([
            "--log-format".into(),
            format!("{:?}", g.log_format).to_lowercase().into(),
        ]);
    }
    if g.debug {
        a.push("--debug".into());
    }
    a
}

/// The hooks a config has.
fn hooks(spec: &oci_spec::runtime::Spec) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(spec.hooks())?)
}

/// Runs the hooks of `kind` in order, each with the state on its stdin; the first that
/// fails (or outlives its timeout) is an error.
fn run_hooks(
    hooks: &serde_json::Value,
    kind: &str,
    state: &serde_json::Value,
) -> anyhow::Result<()> {
    for h in hooks
        .get(kind)
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let path = h["path"].as_str().context("a hook without a path")?;
        let mut cmd = if super::hooks::INSIDE.contains(&kind) {
            // In the container's namespaces (its first process's).
            let pid = state["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
            super::hooks::command(h, kind, pid.unwrap_or(0))?
        } else {
            let args: Vec<String> = serde_json::from_value(h["args"].clone()).unwrap_or_default();
            let env: Vec<String> = serde_json::from_value(h["env"].clone()).unwrap_or_default();
            let mut cmd = Command::new(path);
            if let Some((first, rest)) = args.split_first() {
                std::os::unix::process::CommandExt::arg0(&mut cmd, first);
                cmd.args(rest);
            }
            cmd.env_clear()
                .envs(env.iter().filter_map(|kv| kv.split_once('=')));
            cmd
        };
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("hooks.{kind}: {path}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(state.to_string().as_bytes());
        }
        let timeout = h["timeout"].as_u64().map(Duration::from_secs);
        let status =
            wait_timeout(&mut child, timeout).with_context(|| format!("hooks.{kind}: {path}"))?;
        if !status.success() {
            bail!("hooks.{kind}: {path} failed: {status}");
        }
    }
    Ok(())
}

fn wait_timeout(
    child: &mut Child,
    timeout: Option<Duration>,
) -> anyhow::Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `create`: the container set up, its process waiting at the gate. Returns the
/// supervisor (our child until we exit; the engine's subreaper adopts it then).
/// `console` is where the terminal's master goes (with `process.terminal`): the engine's
/// console socket, connected.
pub fn create(
    g: &OciCli,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    console: Option<UnixStream>,
) -> anyhow::Result<Child> {
    let dir = Dir::create(&g.root, id)?;
    let result = create_in(g, &dir, id, bundle, pid_file, console);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir.path);
    }
    result
}

fn create_in(
    g: &OciCli,
    dir: &Dir,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    console: Option<UnixStream>,
) -> anyhow::Result<Child> {
    let bundle =
        std::fs::canonicalize(bundle).with_context(|| format!("--bundle {}", bundle.display()))?;
    let spec = config::load(&bundle)?;
    let c = config::translate(&spec, &bundle, id, &g.kernel_persona, &g.platform)?;
    let hooks = hooks(&spec)?;
    if !c.seccomp_skipped.is_empty() {
        log::warn!(
            "linux.seccomp: system calls unknown to libseccomp skipped: {}",
            c.seccomp_skipped.join(", ")
        );
    }
    super::console::check(c.terminal, true, console.is_some())?;
    nix::unistd::mkfifo(&dir.fifo(), nix::sys::stat::Mode::from_bits_truncate(0o600))
        .context("exec.fifo")?;
    let sync = dir.path.join("sync.sock");
    let listener = UnixListener::bind(dir.socket_path("sync.sock")).context("sync.sock")?;
    listener.set_nonblocking(true)?;
    let mut cmd = Command::new(std::env::current_exe().context("compatrun's own path")?);
    cmd.args(global_args(g))
        .arg("_supervise")
        .arg(id)
        .arg("--bundle")
        .arg(&bundle)
        .arg("--fifo")
        .arg(dir.fifo())
        .arg("--sync")
        .arg(&sync);
    if let Some(sock) = console {
        // The supervisor needs no stdin of its own when the container has a terminal.
        cmd.arg("--console-stdin")
            .stdin(Stdio::from(OwnedFd::from(sock)));
    }
    let mut child = cmd.spawn().context("start the container's supervisor")?;
    drop(cmd);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait()? {
                    bail!("the container's supervisor ended at once ({status})");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("sync.sock"),
        }
    };
    stream.set_nonblocking(false)?;
    let _ = std::fs::remove_file(&sync);
    let reported = super::supervisor::read_report(stream);
    let (pid, pid_start, platform) = match reported {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(cg) = &c.cgroup {
                super::cgroups::remove(cg);
            }
            return Err(e);
        }
    };
    let supervisor = i32::try_from(child.id()).unwrap_or(0);
    let record = Record {
        id: id.to_owned(),
        bundle: bundle.clone(),
        supervisor,
        supervisor_start: state::start_time(supervisor).unwrap_or(0),
        pid,
        pid_start,
        started: false,
        created: state::now_rfc3339(),
        persona: c.persona.clone(),
        platform,
        annotations: c.annotations.clone(),
        cgroup: c.cgroup.as_ref().map(|cg| cg.path.clone()),
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
    };
    dir.save(&record)?;
    let st = record.hook_json();
    let hooked = run_hooks(&hooks, "prestart", &st)
        .and_then(|()| run_hooks(&hooks, "createRuntime", &st))
        .and_then(|()| run_hooks(&hooks, "createContainer", &st));
    if let Err(e) = hooked {
        let _ = child.kill();
        let _ = child.wait();
        if let Some(cg) = &c.cgroup {
            super::cgroups::remove(cg);
        }
        return Err(e);
    }
    if let Some(p) = pid_file {
        // The engine waits on the supervisor: it exits with the container's status.
        std::fs::write(p, supervisor.to_string())
            .with_context(|| format!("--pid-file {}", p.display()))?;
    }
    Ok(child)
}

/// Checks a console socket against the bundle's `process.terminal` as runc does (before
/// anything is made); returns `process.terminal`.
pub fn check_console(
    bundle: &Path,
    detach: bool,
    console_socket: Option<&Path>,
) -> anyhow::Result<bool> {
    let spec = config::load(bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    super::console::check(terminal, detach, console_socket.is_some())?;
    Ok(terminal)
}

/// `run`: `create` and `start`; in the foreground it then waits for the container,
/// deletes it and returns its status. A terminal goes to `--console-socket` (detached,
/// as runc wants it) or, in the foreground, is proxied to our stdin and stdout.
pub fn run(
    g: &OciCli,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
    detach: bool,
) -> anyhow::Result<u8> {
    let terminal = check_console(bundle, detach, console_socket)?;
    let (console, proxied) = match console_socket {
        Some(p) => (Some(super::console::connect(p)?), None),
        None if terminal => {
            let (ours, theirs) = UnixStream::pair().context("socketpair")?;
            (Some(theirs), Some(ours))
        }
        None => (None, None),
    };
    let mut child = create(g, id, bundle, pid_file, console)?;
    // In the foreground, as runc's run: signals sent to us go to the container's
    // process (SIGTERM to `run` ends the container's program, not just this command),
    // from before its program starts.
    let forwarding = if detach {
        None
    } else {
        forward_signals_to(g, id)
    };
    let started = proxied
        .map(|s| super::console::recv_master(&s).and_then(super::console::Proxy::start))
        .transpose()
        .and_then(|proxy| start(g, id).map(|()| proxy));
    let proxy = match started {
        Ok(p) => p,
        Err(e) => {
            platform::sys::signals::clear_target();
            let _ = delete(g, id, true);
            let _ = child.wait();
            return Err(e);
        }
    };
    if detach {
        return Ok(0);
    }
    let status = child.wait()?;
    platform::sys::signals::clear_target();
    drop(forwarding);
    if let Some(p) = proxy {
        p.finish(Duration::from_secs(2));
    }
    let _ = delete(g, id, true);
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(125);
    Ok(u8::try_from(code & 0xff).unwrap_or(125))
}

/// Points the forwarding of signals sent to this process at container `id`'s process;
/// the pidfd it keeps must live until forwarding is cleared. A container already gone
/// gets nothing forwarded.
fn forward_signals_to(g: &OciCli, id: &str) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let pid = Dir::open(&g.root, id).ok()?.load().ok()?.pid;
    let pidfd = platform::sys::pidfd_open(nix::unistd::Pid::from_raw(pid)).ok()?;
    platform::sys::signals::set_target(pid, pidfd.as_raw_fd());
    if let Err(e) = platform::sys::signals::install_forwarding() {
        log::warn!("signals will not reach the container: {e}");
    }
    Some(pidfd)
}

/// `start`.
pub fn start(g: &OciCli, id: &str) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = Dir::open(&g.root, id)?;
    let mut r = dir.load()?;
    match r.status() {
        Status::Created => {}
        s => bail!("cannot start a container that is {}", s.name()),
    }
    let spec = config::load(&r.bundle).ok();
    if let Some(spec) = &spec {
        // Before the program runs: it is exec'd once the fifo is opened.
        run_hooks(&hooks(spec)?, "startContainer", &r.hook_json())?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.fifo())
        .context("exec.fifo")?;
    let mut fds = [nix::poll::PollFd::new(
        f.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).context("exec.fifo")?;
    let mut b = [0u8; 1];
    if f.read(&mut b).ok() != Some(1) {
        bail!("the container's supervisor did not answer; the container cannot start");
    }
    let _ = std::fs::remove_file(dir.fifo());
    r.started = true;
    dir.save(&r)?;
    if let Some(spec) = &spec {
        run_hooks(&hooks(spec)?, "poststart", &r.hook_json())?;
    }
    Ok(())
}

/// A signal by name (TERM, SIGTERM) or number.
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow::anyhow!("unknown signal {s}"));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse()
        .map_err(|_| anyhow::anyhow!("unknown signal {s}"))
}

/// The processes in the pid namespace of `pid` (host pids).
pub fn namespace_pids(pid: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|p: &i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns))
        .collect();
    pids.sort_unstable();
    pids
}

/// `kill`.
pub fn kill_cmd(g: &OciCli, id: &str, signal: &str, all: bool) -> anyhow::Result<()> {
    let sig = parse_signal(signal)?;
    let dir = Dir::open(&g.root, id)?;
    let r = dir.load()?;
    if r.status() == Status::Stopped {
        // runc's words, which the containerd shim takes for "already finished".
        bail!("cannot kill container {id}: container not running");
    }
    if all {
        for p in namespace_pids(r.pid) {
            let _ = kill(Pid::from_raw(p), sig);
        }
    } else {
        kill(Pid::from_raw(r.pid), sig).with_context(|| format!("kill {id}"))?;
    }
    if sig == Signal::SIGKILL {
        if let Some(cg) = &r.cgroup {
            // As runc: SIGKILL ends a paused container too (its processes, and the
            // supervisor that reports the exit, are thawed to die).
            super::pause::thaw(cg)?;
        }
    }
    Ok(())
}

/// Ends a container: its first process, then (once the namespace is empty) the
/// supervisor.
fn stop(r: &Record) {
    if let Some(cg) = &r.cgroup {
        // A paused container's processes die only once thawed.
        let _ = super::pause::thaw(cg);
    }
    let _ = kill(Pid::from_raw(r.pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state::alive(r.supervisor, r.supervisor_start) && Instant::now() < deadline {
        for p in namespace_pids(r.pid) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if state::alive(r.supervisor, r.supervisor_start) {
        let _ = kill(Pid::from_raw(r.supervisor), Signal::SIGKILL);
    }
}

/// `delete`.
pub fn delete(g: &OciCli, id: &str, force: bool) -> anyhow::Result<()> {
    state::check_id(id)?;
    if force && !g.root.join(id).is_dir() {
        // As runc: `delete --force` of a container that is gone already succeeds (the
        // containerd shim deletes, then deletes with --force when it cleans up).
        return Ok(());
    }
    let dir = Dir::open(&g.root, id)?;
    let Ok(r) = dir.load() else {
        // What an interrupted create left.
        std::fs::remove_dir_all(&dir.path)?;
        return Ok(());
    };
    match r.status() {
        Status::Running if !force => {
            bail!("cannot delete container {id} that is not stopped: running")
        }
        Status::Stopped => {
            // Wait for the supervisor (it is about to exit), so nothing outlives delete.
            let deadline = Instant::now() + Duration::from_secs(5);
            while state::alive(r.supervisor, r.supervisor_start) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if state::alive(r.supervisor, r.supervisor_start) {
                stop(&r);
            }
        }
        _ => stop(&r),
    }
    if let Some(path) = &r.cgroup {
        super::cgroups::remove(&super::cgroups::CgroupPlan {
            path: path.clone(),
            ..Default::default()
        });
    }
    let mut st = r.hook_json();
    st["status"] = "stopped".into();
    std::fs::remove_dir_all(&dir.path).with_context(|| format!("{}", dir.path.display()))?;
    if let Ok(spec) = config::load(&r.bundle) {
        // Errors of poststop hooks are logged, not fatal (the spec says so).
        if let Err(e) = hooks(&spec).and_then(|h| run_hooks(&h, "poststop", &st)) {
            log::warn!("{e:#}");
        }
    }
    Ok(())
}

/// `state`.
pub fn state_cmd(g: &OciCli, id: &str) -> anyhow::Result<()> {
    let dir = Dir::open(&g.root, id)?;
    let r = dir.load()?;
    let mut st = r.to_json();
    if r.status() == Status::Running && r.cgroup.as_deref().is_some_and(super::pause::frozen) {
        st["status"] = "paused".into();
    }
    println!("{}", serde_json::to_string_pretty(&st)?);
    Ok(())
}

/// `list`.
pub fn list(g: &OciCli, format: &str, quiet: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for id in state::ids(&g.root) {
        if let Ok(r) = Dir::open(&g.root, &id).and_then(|d| d.load()) {
            all.push(r.to_json());
        }
    }
    if quiet {
        for s in &all {
            println!("{}", s["id"].as_str().unwrap_or(""));
        }
    } else if format == "json" {
        println!("{}", serde_json::Value::Array(all));
    } else {
        println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tPERSONA");
        for s in &all {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                s["id"].as_str().unwrap_or(""),
                s["pid"],
                s["status"].as_str().unwrap_or(""),
                s["bundle"].as_str().unwrap_or(""),
                s["created"].as_str().unwrap_or(""),
                s["annotations"][config::PERSONA_ANNOTATION]
                    .as_str()
                    .unwrap_or(""),
            );
        }
    }
    Ok(())
}

/// `ps`: the container's processes (host pids).
pub fn ps(g: &OciCli, id: &str, format: &str) -> anyhow::Result<()> {
    let r = Dir::open(&g.root, id)?.load()?;
    let pids = if r.status() == Status::Stopped {
        Vec::new()
    } else {
        namespace_pids(r.pid)
    };
    if format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
    } else {
        println!("PID\tCMD");
        for p in pids {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            println!("{p}\t{}", cmd.trim_end());
        }
    }
    Ok(())
}

/// `spec`: a default config.json (runc's defaults, as oci-spec has them).
pub fn spec_cmd(bundle: &Path) -> anyhow::Result<()> {
    let path: PathBuf = bundle.join("config.json");
    if path.exists() {
        bail!("{} exists already", path.display());
    }
    let spec = oci_spec::runtime::Spec::default();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("{}", path.display()))
}

/// `features`: what this runtime supports.
pub fn features() -> anyhow::Result<()> {
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
            "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
            "sync", "async", "dirsync", "mand", "nomand", "atime", "noatime", "diratime",
            "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
            "bind", "rbind", "private", "rprivate"],
        "linux": {
            "namespaces": ["pid", "mount", "network", "ipc", "uts", "cgroup", "user"],
            "capabilities": super::config::capability_names(),
            "cgroup": {"v1": true, "v2": true, "systemd": false},
            "seccomp": super::seccomp::features(),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            config::PERSONA_ANNOTATION: "the kernel persona (see compatrun personas)",
            config::PLATFORM_ANNOTATION: "auto, ptrace or seccomp"
        }
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
