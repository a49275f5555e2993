//! The `compatrun` command: parses the command line, loads the persona, wires the sentry
//! to a platform, and turns the outcome into an exit status.
//!
//! Exit status: the guest's own; 128+N when the guest was killed by signal N; 125 when
//! compatrun itself failed, 126 when the program exists but cannot run, 127 when it was
//! not found (the `env`/`chroot`/`timeout` convention).

mod cli;
mod personas;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use platform::{GuestCommand, PlatformError};
use sentry::{Persona, Sentry, SyscallTable};

use cli::{Cli, Command};

/// compatrun's own failure.
const EXIT_FAILURE: u8 = 125;
/// The program exists but cannot be executed.
const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The program was not found.
const EXIT_NOT_FOUND: u8 = 127;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_FAILURE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = match e.downcast_ref::<PlatformError>() {
                Some(PlatformError::NotFound { .. }) => EXIT_NOT_FOUND,
                Some(PlatformError::CannotExecute { .. }) => EXIT_CANNOT_EXECUTE,
                _ => EXIT_FAILURE,
            };
            eprintln!("compatrun: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "compatrun: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let table = SyscallTable::builtin().context("the built-in syscall table is invalid")?;
    match cli.subcommand {
        Some(Command::Personas { persona }) => {
            personas::print(&table, persona.as_deref())?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let Some((program, args)) = cli.command.split_first() else {
        anyhow::bail!(
            "no program given; usage: compatrun [OPTIONS] -- PROGRAM [ARGS...] (see --help)"
        );
    };
    let persona = Persona::resolve(&cli.kernel_persona, &table)?;
    log::info!("persona {}: {}", persona.name, persona.description);
    let nofile_soft = match cli.nofile {
        Some(0) => None,
        Some(n) => Some(n),
        None => persona.nofile,
    };
    report_nofile(nofile_soft);
    let pid_ns = cli.pid_ns.enabled();
    let sentry = Sentry::new(persona, &table).context("the built-in sysctl table is invalid")?;

    let synthetic_files = if pid_ns {
        sentry.synthetic_files()
    } else {
        if sentry.persona().uname.is_some() {
            log::info!("no pid and mount namespace: /proc/version and /proc/sys/kernel show the host kernel");
        }
        Vec::new()
    };
    let env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    let path = std::env::var_os("PATH");
    let resolved = platform::resolve_program(program, path.as_deref())?;
    let platform = cli.platform.resolve(cli::RunNeeds {
        wants_signals: !sentry.intercept_spec().signals.is_empty(),
        pid_ns,
        exec_hook: cli.platform == cli::PlatformChoice::Auto
            && sentry.needs_exec_hook(std::path::Path::new("/"), std::path::Path::new(&resolved)),
    });
    let command = GuestCommand {
        program: resolved,
        argv: std::iter::once(program.clone())
            .chain(args.iter().cloned())
            .collect(),
        env,
        cwd: None,
        nofile_soft,
        pid_ns,
        synthetic_files,
    };
    let status = platform.run(&command, sentry)?;
    log::debug!("guest finished: {status:?}");
    Ok(ExitCode::from(
        u8::try_from(status.code() & 0xff).unwrap_or(EXIT_FAILURE),
    ))
}

/// Says (at info level) whether the guest's open-file limit will be lowered.
fn report_nofile(limit: Option<u64>) {
    let Some(limit) = limit else { return };
    if !log::log_enabled!(log::Level::Info) {
        return; // no file read at every start for a message nobody sees
    }
    // The guest inherits our limits; /proc/self/limits shows them without unsafe code.
    let current = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| x.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    match current.parse::<u64>() {
        Ok(soft) if soft <= limit => {}
        _ => log::info!("guest starts with its soft open-file limit lowered to {limit} (was {current}; hard limit unchanged; --nofile to change)"),
    }
}
