//! compatrun as an OCI runtime: the command set container engines call (`create`,
//! `start`, `state`, `kill`, `delete`, `run`, `exec`, `ps`, `list`, `spec`, `features`)
//! with runc's global flags, as `compatrun oci ...` or through a link named
//! `compatrun-runc` (engines call it like runc, global flags first). A bundle's
//! config.json becomes the same guest description the command line makes
//! ([`crate::guest::GuestBuilder`]); each container gets its own supervisor process
//! ([`supervisor`]) under the persona its `run.compatrun.persona` annotation names.

mod cgroups;
mod cli;
mod config;
mod console;
mod enosys;
mod exec;
mod hooks;
mod idmap;
mod lifecycle;
mod mounts;
mod pause;
mod seccomp;
mod state;
mod supervisor;
mod userns;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cli::{LogFormat, OciCli, OciCommand};

/// Whether compatrun was started as a runtime (`compatrun oci ...`, or through a link
/// whose name ends in `-runc`); then the arguments as the runtime parser wants them.
pub fn runtime_args(args: &[OsString]) -> Option<Vec<OsString>> {
    let name = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with("-runc") || name.ends_with("-oci") {
        return Some(args.to_vec());
    }
    if args.get(1).is_some_and(|a| a == "oci") {
        let mut v = vec![args[0].clone()];
        v.extend(args[2..].iter().cloned());
        return Some(v);
    }
    None
}

/// The exit status for an error: the platform's 126/127 where they apply, else 125.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<platform::PlatformError>() {
        Some(platform::PlatformError::NotFound { .. }) => 127,
        Some(platform::PlatformError::CannotExecute { .. }) => 126,
        _ => 125,
    }
}

fn init_logging(g: &OciCli) {
    let level = if g.debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    let json = g.log_format == LogFormat::Json;
    b.format(move |buf, record| {
        let level = record.level().as_str().to_lowercase();
        if json {
            let line = serde_json::json!({
                "level": level,
                "msg": record.args().to_string(),
                "time": state::now_rfc3339(),
            });
            writeln!(buf, "{line}")
        } else {
            writeln!(buf, "compatrun: {level}: {}", record.args())
        }
    });
    if let Some(path) = &g.log {
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            b.target(env_logger::Target::Pipe(Box::new(f)));
        }
    }
    let _ = b.try_init();
}

/// Runs one runtime command; the exit status is 0, the container's (run, exec), or
/// non-zero with the error in the log (and on stderr).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args_copy = args.clone();
    let g = match OciCli::try_parse_from(args) {
        Ok(g) => g,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            if e.use_stderr() {
                log_usage_error(&args_copy, &e.to_string());
            }
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&g);
    match dispatch(&g) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e:#}");
            if g.log.is_some() {
                eprintln!("compatrun: {e:#}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A command line compatrun cannot parse (an unknown command or flag) is reported in
/// `--log` too when that flag can be found, in its format: engines (the containerd shim)
/// read the error from there.
fn log_usage_error(args: &[OsString], msg: &str) {
    let value = |flag: &str| {
        let eq = format!("{flag}=");
        args.iter().enumerate().find_map(|(i, a)| {
            let a = a.to_str()?;
            if a == flag {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&eq).map(OsString::from)
            }
        })
    };
    let Some(log) = value("--log") else {
        return;
    };
    let msg = msg.lines().next().unwrap_or(msg).trim();
    let line = if value("--log-format").is_some_and(|f| f == "json") {
        serde_json::json!({"level": "error", "msg": msg, "time": state::now_rfc3339()}).to_string()
    } else {
        format!("compatrun: error: {msg}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn dispatch(g: &OciCli) -> anyhow::Result<u8> {
    match &g.command {
        OciCommand::Create(c) => {
            lifecycle::check_console(&c.bundle, true, c.console_socket.as_deref())?;
            let console = c
                .console_socket
                .as_deref()
                .map(console::connect)
                .transpose()?;
            lifecycle::create(g, &c.id, &c.bundle, c.pid_file.as_deref(), console)?;
        }
        OciCommand::Start { id } => lifecycle::start(g, id)?,
        OciCommand::Run { create: c, detach } => {
            return lifecycle::run(
                g,
                &c.id,
                &c.bundle,
                c.pid_file.as_deref(),
                c.console_socket.as_deref(),
                *detach,
            )
        }
        OciCommand::State { id } => lifecycle::state_cmd(g, id)?,
        OciCommand::Kill { id, signal, all } => lifecycle::kill_cmd(g, id, signal, *all)?,
        OciCommand::Delete { id, force } => lifecycle::delete(g, id, *force)?,
        OciCommand::Exec {
            id,
            process,
            detach,
            pid_file,
            console_socket,
            tty,
            console_stdin,
            cwd,
            env,
            command,
        } => {
            let req = exec::Request {
                id,
                process: process.as_deref(),
                cwd: cwd.as_deref(),
                env,
                command,
                tty: *tty,
            };
            let console = exec::Console {
                socket: console_socket.as_deref(),
                on_stdin: *console_stdin,
            };
            return exec::exec(g, &req, *detach, pid_file.as_deref(), &console);
        }
        OciCommand::Pause { id } => pause::pause(g, id)?,
        OciCommand::Resume { id } => pause::resume(g, id)?,
        OciCommand::Update { id, resources } => pause::update(g, id, resources.as_deref())?,
        OciCommand::Ps { id, format } => lifecycle::ps(g, id, format)?,
        OciCommand::List { format, quiet } => lifecycle::list(g, format, *quiet)?,
        OciCommand::Spec { bundle } => lifecycle::spec_cmd(bundle)?,
        OciCommand::Features => lifecycle::features()?,
        OciCommand::Hook { pid, kind, hook } => hooks::exec_inside(*pid, kind, hook)?,
        OciCommand::Supervise {
            id,
            bundle,
            fifo,
            sync,
            console_stdin,
        } => {
            return Ok(supervisor::supervise(
                id,
                bundle,
                fifo,
                sync,
                *console_stdin,
                &g.kernel_persona,
                &g.platform,
            ))
        }
    }
    Ok(0)
}
