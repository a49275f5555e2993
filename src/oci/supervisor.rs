//! The supervisor: one process per container, started by `create` and outliving it
//! (the engine's subreaper, conmon or a containerd shim, adopts it). It joins or makes
//! the container's namespaces and cgroup, builds the guest, runs it on the chosen
//! platform with its first process held at the start gate until `start` opens the
//! container's fifo, and exits with the container's status (128+N for a signal), which
//! is what the engine reads. Also `exec`: a further process in a running container.

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use oci_spec::runtime::LinuxNamespaceType;
use sentry::{Persona, Sentry, SyscallTable};

use super::config::{self, Container, Ns};
use crate::guest::{GuestBuilder, RootFs};

/// How the supervisor tells `create` that the container is ready, or why not.
pub fn report(stream: &Mutex<Option<UnixStream>>, line: &str) {
    if let Ok(mut s) = stream.lock() {
        if let Some(mut s) = s.take() {
            let _ = writeln!(s, "{line}");
        }
    }
}

/// `create`'s side: waits for the supervisor's line (`ok PID START` or `err MESSAGE`).
pub fn read_report(stream: UnixStream) -> anyhow::Result<(i32, u64, String)> {
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("ok ") {
        let mut it = rest.split(' ');
        let pid = it
            .next()
            .and_then(|p| p.parse().ok())
            .context("bad report")?;
        let start = it
            .next()
            .and_then(|p| p.parse().ok())
            .context("bad report")?;
        let platform = it.next().unwrap_or("").to_owned();
        return Ok((pid, start, platform));
    }
    match line.strip_prefix("err ") {
        Some(msg) => anyhow::bail!("{msg}"),
        None => anyhow::bail!("the container's supervisor ended before the container was created"),
    }
}

fn ns_flag(t: LinuxNamespaceType) -> nix::sched::CloneFlags {
    use nix::sched::CloneFlags as F;
    match t {
        LinuxNamespaceType::Network => F::CLONE_NEWNET,
        LinuxNamespaceType::Ipc => F::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => F::CLONE_NEWUTS,
        LinuxNamespaceType::Cgroup => F::CLONE_NEWCGROUP,
        LinuxNamespaceType::Pid => F::CLONE_NEWPID,
        _ => F::CLONE_NEWNS,
    }
}

fn rlimit(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Sets one of `process.rlimits` for this process and its children.
pub fn set_rlimit(name: &str, soft: u64, hard: u64) -> anyhow::Result<()> {
    let r = rlimit(name).with_context(|| format!("process.rlimits: unknown {name}"))?;
    nix::sys::resource::setrlimit(r, soft, hard)
        .with_context(|| format!("process.rlimits: {name} {soft}:{hard}"))
}

/// What this process inherits to its children: limits, umask, oom score, no_new_privs.
fn process_settings(c: &Container) -> anyhow::Result<()> {
    for (name, soft, hard) in &c.rlimits {
        set_rlimit(name, *soft, *hard)?;
    }
    if let Some(m) = c.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
    if let Some(adj) = c.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .context("process.oomScoreAdj")?;
    }
    if c.no_new_privs {
        nix::sys::prctl::set_no_new_privs().context("process.noNewPrivileges")?;
    }
    Ok(())
}

/// The persona's sentry and its soft open-file limit.
pub fn sentry_for(persona: &str) -> anyhow::Result<(Sentry, Option<u64>)> {
    let table = SyscallTable::builtin().context("the built-in syscall table is invalid")?;
    let persona = Persona::resolve(persona, &table)?;
    let nofile = persona.nofile;
    Ok((Sentry::new(persona, &table)?, nofile))
}

fn choose(
    name: &str,
    sentry: &Sentry,
    command: &platform::GuestCommand,
    target: Option<&(PathBuf, PathBuf)>,
) -> platform::Platform {
    let asked = platform::Platform::by_name(name);
    let needs = platform::RunNeeds {
        wants_signals: !sentry.intercept_spec().signals.is_empty(),
        pid_ns: command.pid_ns,
        exec_hook: asked.is_none()
            && target.is_some_and(|(root, prog)| sentry.needs_exec_hook(root, prog)),
    };
    let choice = platform::choose(asked, needs);
    log::info!("platform {}: {}", choice.platform.name(), choice.why);
    choice.platform
}

/// Sets up and runs the container; returns the exit code for the engine.
pub fn supervise(
    id: &str,
    bundle: &Path,
    fifo: &Path,
    sync: &Path,
    console_stdin: bool,
    persona: &str,
    platform_name: &str,
) -> u8 {
    let _ = nix::unistd::setsid();
    let short = sync
        .parent()
        .zip(sync.file_name())
        .and_then(|(dir, name)| Some((std::fs::File::open(dir).ok()?, name.to_str()?)));
    let connected = match &short {
        Some((dir, name)) => UnixStream::connect(super::state::via_fd(dir, name)),
        None => UnixStream::connect(sync),
    };
    drop(short);
    let stream = match connected {
        Ok(s) => Arc::new(Mutex::new(Some(s))),
        Err(e) => {
            log::error!("{}: {e}", sync.display());
            return 125;
        }
    };
    match run(
        id,
        bundle,
        fifo,
        &stream,
        console_stdin,
        persona,
        platform_name,
    ) {
        Ok(code) => {
            // Ended before its first process was seen waiting for `start` (it failed
            // before the gate): tell `create` rather than leave it without an answer.
            // A no-op once `ok` was reported.
            report(
                &stream,
                &format!("err the container's process ended before start (status {code})"),
            );
            code
        }
        Err(e) => {
            log::error!("{e:#}");
            report(
                &stream,
                &format!("err {}", format!("{e:#}").replace('\n', " ")),
            );
            super::exit_code(&e)
        }
    }
}

fn run(
    id: &str,
    bundle: &Path,
    fifo: &Path,
    stream: &Arc<Mutex<Option<UnixStream>>>,
    console_stdin: bool,
    persona: &str,
    platform_name: &str,
) -> anyhow::Result<u8> {
    let spec = config::load(bundle)?;
    let c = config::translate(&spec, bundle, id, persona, platform_name)?;
    // With a terminal: where its master goes (our stdin), and the pair it comes in on.
    let console = if console_stdin {
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        Some(UnixStream::from(fd))
    } else {
        None
    };
    super::console::check(c.terminal, true, console.is_some())?;
    let pair = if c.terminal {
        Some(UnixStream::pair().context("socketpair")?)
    } else {
        None
    };
    if let Some(cg) = &c.cgroup {
        super::cgroups::enter(cg)?;
    }
    for (typ, how) in &c.namespaces {
        if !super::userns::supervisor_enters(&c, how) {
            continue;
        }
        let flag = ns_flag(*typ);
        match how {
            Ns::New => nix::sched::unshare(flag)
                .with_context(|| format!("linux.namespaces: a new {typ:?} namespace"))?,
            Ns::Join(path) => {
                let f = std::fs::File::open(path)
                    .with_context(|| format!("linux.namespaces: {}", path.display()))?;
                nix::sched::setns(f, flag)
                    .with_context(|| format!("linux.namespaces: join {}", path.display()))?;
            }
        }
    }
    let hostname_inside = super::userns::hostname_inside(&c);
    if let Some(h) = c.hostname.as_ref().filter(|_| !hostname_inside) {
        nix::unistd::sethostname(h).context("hostname")?;
    }
    for (k, v) in c.sysctl.iter().filter(|_| c.user_ns.is_none()) {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v).with_context(|| format!("linux.sysctl {k}={v}"))?;
    }
    process_settings(&c)?;
    let (mut sentry, nofile) = sentry_for(&c.persona)?;
    let (gate_r, gate_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let built = GuestBuilder::new(c.argv.iter().map(Into::into).collect())
        .envs(c.env.iter().cloned())
        .workdir(Some(c.cwd.clone().into()))
        .user(Some(&format!("{}:{}", c.uid, c.gid)), "process.user")
        .groups(c.groups.clone())
        .capabilities(c.caps)
        .nofile_soft(nofile)
        .start_gate(Some(gate_r.as_raw_fd()))
        .extra_filters(c.seccomp.clone())
        .terminal(pair.as_ref().map(|(_, theirs)| platform::TerminalSpec {
            socket: theirs.as_raw_fd(),
            size: c.console_size,
            console: true,
        }))
        .user_ns(c.user_ns.clone().map(platform::UserNamespace::New))
        .namespaces(super::userns::made_inside(&c))
        .sysctls(super::userns::sysctls_inside(&c))
        .root(RootFs {
            dir: c.tree.clone(),
            layout: c.layout.clone(),
            hostname: c.hostname.clone().filter(|_| hostname_inside),
            overlay: None,
        })
        .build(&mut sentry)?;
    if built.exec_target.is_none() {
        anyhow::bail!(
            "exec: {:?}: executable file not found in $PATH",
            c.argv.first().map(String::as_str).unwrap_or("")
        );
    }
    let platform = choose(
        &c.platform,
        &sentry,
        &built.command,
        built.exec_target.as_ref(),
    );
    let (ours, theirs) = pair.map_or((None, None), |(o, t)| (Some(o), Some(t)));
    let relay = ours.zip(console);
    // Set once the platform has returned: a first process that has not appeared by then
    // never will, and the platform's own error is the one `create` must hear.
    let finished = Arc::new(AtomicBool::new(false));
    let starter = {
        let stream = Arc::clone(stream);
        let fifo = fifo.to_path_buf();
        let platform = platform.name().to_owned();
        let finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            release_when_started(&stream, &fifo, gate_w, &platform, relay, &finished);
        })
    };
    let spec = sentry.intercept_spec().clone();
    let status = platform.run(&built.command, &spec, &mut sentry);
    finished.store(true, Ordering::Release);
    drop(theirs);
    drop(gate_r);
    drop(starter);
    let status = status.map_err(|e| super::userns::explain(&c, e))?;
    log::debug!("container finished: {status:?}");
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(125))
}

/// Finds the container's first process (our child is the pid namespace's init, whose
/// child it is), passes its terminal on (`relay`: the pair's end it comes in on, and the
/// engine's console socket), tells `create`, then waits for `start` on the fifo and opens
/// the gate.
fn release_when_started(
    stream: &Mutex<Option<UnixStream>>,
    fifo: &Path,
    gate: OwnedFd,
    platform: &str,
    relay: Option<(UnixStream, UnixStream)>,
    finished: &AtomicBool,
) {
    let pid = match first_process(finished) {
        Ok(pid) => pid,
        Err(Unseen::Finished) => return,
        Err(Unseen::TimedOut) => {
            report(
                stream,
                &format!(
                    "err the container's first process did not appear in two minutes ({})",
                    where_init_waits()
                ),
            );
            return;
        }
    };
    let Some(start) = super::state::start_time(pid) else {
        report(stream, "err the container's first process ended at once");
        return;
    };
    if let Some((ours, console)) = relay {
        let sent = super::console::recv_master(&ours)
            .and_then(|master| super::console::send_master(&console, master.as_fd()));
        if let Err(e) = sent {
            report(
                stream,
                &format!("err {}", format!("{e:#}").replace('\n', " ")),
            );
            return;
        }
        // Our stdin was that socket: nothing of ours holds the engine's end any more.
        drop(console);
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = nix::unistd::dup2_stdin(null);
        }
    }
    report(stream, &format!("ok {pid} {start} {platform}"));
    // Blocks until `start` opens the fifo for reading.
    let opened = std::fs::OpenOptions::new().write(true).open(fifo);
    if let Ok(mut f) = opened {
        if f.write_all(b"0").is_ok() {
            let mut g = std::fs::File::from(gate);
            let _ = g.write_all(b"1");
        }
    }
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Our child (the init) and its child (the container's first process), once both exist;
/// [`Unseen::Finished`] once the platform has returned (`finished`) without one. A set-up that fails
/// ends the platform's run, which ends the wait; the deadline (two minutes, far beyond a
/// loaded machine's set-up) only keeps `create` from waiting for ever on a hung one.
fn first_process(finished: &AtomicBool) -> Result<i32, Unseen> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = finished.load(Ordering::Acquire);
        let me = std::process::id();
        for init in children(me) {
            if let Some(first) = u32::try_from(init)
                .ok()
                .and_then(|i| children(i).first().copied())
            {
                return Ok(first);
            }
        }
        if done {
            return Err(Unseen::Finished);
        }
        if std::time::Instant::now() > deadline {
            return Err(Unseen::TimedOut);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Where the namespace's init (our child) waits, for a set-up that never finished:
/// its state and kernel wait channel, and its kernel stack where readable.
fn where_init_waits() -> String {
    let Some(init) = children(std::process::id()).first().copied() else {
        return "no init either".to_owned();
    };
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{init}/{f}")).unwrap_or_default();
    let state = read("stat")
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?');
    let stack: Vec<String> = read("stack")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .take(8)
        .collect();
    format!(
        "init {init}: state {state}, waiting in {}; stack {}",
        read("wchan"),
        stack.join(" < ")
    )
}

/// Why no first process was found.
enum Unseen {
    /// The platform returned first: the caller reports its error or status.
    Finished,
    /// Nothing happened for two minutes.
    TimedOut,
}
