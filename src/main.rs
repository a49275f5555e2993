//! The `compatrun` command: parses the command line, loads the persona, wires the sentry
//! to a platform, and turns the outcome into an exit status.
//!
//! Exit status: the guest's own; 128+N when the guest was killed by signal N; 125 when
//! compatrun itself failed, 126 when the program exists but cannot run, 127 when it was
//! not found (the `env`/`chroot`/`timeout` convention).

mod bench;
mod cli;
mod guest;
use compatrun::image;
mod oci;
mod personas;
mod report;
mod scan;
mod test_hooks;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use guest::GuestBuilder;
use platform::PlatformError;
use sentry::{Persona, Sentry, SyscallTable};

use cli::{Cli, Command, ImagesAction};

/// compatrun's own failure.
const EXIT_FAILURE: u8 = 125;
/// The program exists but cannot be executed.
const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The program was not found.
const EXIT_NOT_FOUND: u8 = 127;

fn main() -> ExitCode {
    // compatrun bench's measuring guest: before anything else, so its start-up is small.
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == bench::guest::MODE) {
        return ExitCode::from(bench::guest::main(&args[2..]));
    }
    if let Some(args) = oci::runtime_args(&args) {
        return oci::main(args);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_FAILURE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log);
    let result = run(cli);
    // Told to end after the first process was gone: everything is wound up (the report
    // written, the image's overlay removed); now end as the signal would have.
    if let Some(sig) = platform::sys::signals::ended_by() {
        platform::sys::signals::die_by(sig);
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("compatrun: {e:#}");
            ExitCode::from(failure_code(&e))
        }
    }
}

/// The exit status for compatrun's own failure `e`.
fn failure_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<PlatformError>() {
        Some(PlatformError::NotFound { .. }) => EXIT_NOT_FOUND,
        Some(PlatformError::CannotExecute { .. }) => EXIT_CANNOT_EXECUTE,
        _ => EXIT_FAILURE,
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
            quiet_on_closed_pipe(personas::print(&table, persona.as_deref()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Scan {
            paths,
            rootfs,
            image,
            personas,
            json,
        }) => {
            let opts = scan::Options {
                paths,
                rootfs,
                image,
                personas,
                json,
            };
            quiet_on_closed_pipe(scan::run(opts, &table))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Bench {
            persona,
            platforms,
            json,
            svg,
            quick,
        }) => {
            bench_command(&table, persona, platforms, json, svg.as_deref(), quick)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Images { action }) => {
            quiet_on_closed_pipe(images_command(action))?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    // A report that cannot be written is refused before anything else happens.
    let Some(path) = cli.report.clone() else {
        return run_program(&cli, &table, None).map(ExitCode::from);
    };
    let file = report::output::ReportFile::prepare(&path)?;
    let mut record = report::record::Record::start(&cli);
    let result = run_program(&cli, &table, Some(&mut record));
    let code = match &result {
        Ok(code) => *code,
        Err(e) => failure_code(e),
    };
    let written = file.write(&record.finish(code, result.as_ref().err()));
    let code = result?;
    written?;
    Ok(ExitCode::from(code))
}

/// Runs the guest program: the whole run but for the report around it, which `record`
/// (when a report is asked for) collects. Returns compatrun's exit status.
fn run_program(
    cli: &Cli,
    table: &SyscallTable,
    mut record: Option<&mut report::record::Record>,
) -> anyhow::Result<u8> {
    let prepared = match &cli.image {
        Some(path) => {
            use std::io::IsTerminal;
            let cache = image::Cache::locate()?;
            Some(image::prepare(
                path,
                &cache,
                std::io::stderr().is_terminal(),
            )?)
        }
        None => None,
    };
    let command_line = match &prepared {
        // `docker run IMAGE [CMD...]`: the entrypoint, then the command given or the
        // image's Cmd.
        Some(p) => {
            let cmd: Vec<OsString> = if cli.command.is_empty() {
                p.config.cmd.iter().map(OsString::from).collect()
            } else {
                cli.command.clone()
            };
            p.config
                .entrypoint
                .iter()
                .map(OsString::from)
                .chain(cmd)
                .collect()
        }
        None => cli.command.clone(),
    };
    if command_line.is_empty() {
        anyhow::bail!(
            "no program given (and no image command); usage: compatrun [OPTIONS] -- PROGRAM [ARGS...] (see --help)"
        );
    }
    let persona = Persona::resolve(&cli.kernel_persona, table)?;
    log::info!("persona {}: {}", persona.name, persona.description);
    if let Some(r) = record.as_deref_mut() {
        r.persona(&persona);
    }
    let nofile_soft = match cli.nofile {
        Some(0) => None,
        Some(n) => Some(n),
        None => persona.nofile,
    };
    report_nofile(nofile_soft);
    let mut sentry = Sentry::new(persona, table).context("the built-in sysctl table is invalid")?;
    let scratch = prepared
        .as_ref()
        .map(|_| -> anyhow::Result<PathBuf> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let cache = image::Cache::locate()?;
            cache.remove_leftovers();
            let dir = cache
                .root()
                .join(format!("run-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            Ok(dir)
        })
        .transpose()?;
    let built = guest_command(
        cli,
        command_line,
        nofile_soft,
        &mut sentry,
        prepared.as_ref().zip(scratch.as_deref()),
    );
    let guest::Built {
        command,
        exec_target,
    } = match built {
        Ok(b) => b,
        Err(e) => {
            if let Some(dir) = &scratch {
                let _ = image::remove_tree(dir);
            }
            return Err(e);
        }
    };
    let platform::Choice { platform, why } = cli.platform.decide(cli::RunNeeds {
        wants_signals: !sentry.intercept_spec().signals.is_empty(),
        pid_ns: command.pid_ns,
        exec_hook: cli.platform == cli::PlatformChoice::Auto
            && exec_target
                .as_ref()
                .is_some_and(|(root, prog)| sentry.needs_exec_hook(root, prog)),
    });
    sentry.set_patching(!cli.no_patch);
    sentry.set_mid_patch_hook(test_hooks::mid_patch());
    let status = match record {
        None => {
            let spec = sentry.intercept_spec().clone();
            let status = platform.run(&command, &spec, &mut sentry);
            log_vsyscall_summary(&sentry);
            status
        }
        Some(r) => {
            let status = r.run(platform, why, &command, sentry);
            if let Some(sentry) = r.sentry() {
                log_vsyscall_summary(sentry);
            }
            status
        }
    };
    if let Some(dir) = &scratch {
        // The guest's writes to the image's tree were an overlay: they go now.
        let _ = image::remove_tree(dir);
    }
    let status = status?;
    log::debug!("guest finished: {status:?}");
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(EXIT_FAILURE))
}

/// `--log info`: what became of the guest's calls into the missing vsyscall page.
fn log_vsyscall_summary(sentry: &Sentry) {
    if let Some(line) = sentry.vsyscall_summary() {
        log::info!("{line}");
    }
}

/// The command line's guest: the image's environment (with our terminal type), else
/// ours, as chroot; then `--env`; the default layout with `--bind`s for a tree.
fn guest_command(
    cli: &Cli,
    command_line: Vec<OsString>,
    nofile_soft: Option<u64>,
    sentry: &mut Sentry,
    image: Option<(&image::PreparedImage, &Path)>,
) -> anyhow::Result<guest::Built> {
    let env: Vec<(OsString, OsString)> = match image {
        Some((img, _)) => {
            let mut env: Vec<(OsString, OsString)> = img
                .config
                .env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            if let Some(term) = std::env::var_os("TERM") {
                if !env.iter().any(|(k, _)| k == "TERM") {
                    env.push(("TERM".into(), term));
                }
            }
            env
        }
        None => std::env::vars_os().collect(),
    };
    let builder = GuestBuilder::new(command_line)
        .envs(env)
        .envs(cli.envs.iter().cloned())
        .nofile_soft(nofile_soft);
    let tree = match image {
        Some((img, _)) => Some(img.rootfs.clone()),
        None => cli.rootfs.clone(),
    };
    let Some(tree) = tree else {
        if !cli.binds.is_empty() || cli.hostname.is_some() || cli.no_host_files {
            anyhow::bail!("--bind, --hostname and --no-host-files need --rootfs");
        }
        return builder
            .workdir(cli.workdir.clone())
            .user(cli.user.as_deref(), "--user")
            .pid_ns(cli.pid_ns.enabled())
            .build(sentry);
    };
    if cli.pid_ns == cli::PidNs::Off {
        anyhow::bail!("--rootfs needs the guest's own pid and mount namespace; drop --pid-ns off");
    }
    let dir = guest::canonical_tree(&tree, "--rootfs")?;
    let layout = guest::layout::default(
        &dir,
        &cli.binds,
        guest::layout::Options {
            overlay: image.is_some(),
            host_files: !cli.no_host_files,
        },
    )?;
    let (user, what) = match (
        cli.user.as_deref(),
        image.and_then(|(img, _)| img.config.user.as_deref()),
    ) {
        (Some(spec), _) => (Some(spec), "--user"),
        (None, Some(spec)) => (Some(spec), "the image's user"),
        (None, None) => (None, ""),
    };
    let workdir = cli
        .workdir
        .clone()
        .or_else(|| image.and_then(|(i, _)| i.config.working_dir.clone().map(OsString::from)));
    builder
        .workdir(workdir)
        .user(user, what)
        .root(guest::RootFs {
            dir,
            layout,
            hostname: cli.hostname.clone(),
            overlay: image.map(|(_, scratch)| scratch.to_path_buf()),
        })
        .build(sentry)
}

/// A listing whose reader went away (`compatrun personas | head -1`) is not a failure:
/// like other command-line tools, compatrun then stops printing, quietly. Only for the
/// commands that print listings: a closed pipe while starting a guest is a real error.
fn quiet_on_closed_pipe(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// `compatrun bench ...`.
fn bench_command(
    table: &SyscallTable,
    persona: String,
    platforms: Vec<cli::BenchPlatform>,
    json: bool,
    svg: Option<&std::path::Path>,
    quick: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    // Refuse an unwritable chart before measuring for minutes.
    if let Some(path) = svg {
        std::fs::write(path, b"")
            .with_context(|| format!("--svg {}: cannot write", path.display()))?;
    }
    let opts = bench::Options {
        persona,
        platforms: platforms
            .into_iter()
            .map(platform::Platform::from)
            .collect(),
        quick,
    };
    let results = bench::run(&opts, table)?;
    let text = if json {
        bench::render::json(&results)?
    } else {
        bench::render::table(&results)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", text.trim_end())?;
    if let Some(path) = svg {
        let chart = bench::render::svg(&results)?;
        std::fs::write(path, chart).with_context(|| format!("--svg {}", path.display()))?;
    }
    Ok(())
}

/// `compatrun images ...`.
fn images_command(action: ImagesAction) -> anyhow::Result<()> {
    use std::io::Write;
    let cache = image::Cache::locate()?;
    let mut out = std::io::stdout().lock();
    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    match action {
        ImagesAction::List => {
            let trees = cache.list()?;
            if trees.is_empty() {
                eprintln!("compatrun: no cached trees in {}", cache.root().display());
            }
            // One line per tree, its path last.
            for t in trees {
                let images = if t.images.is_empty() {
                    "(image not recorded)".to_owned()
                } else {
                    t.images.join(", ")
                };
                let in_use = if t.in_use { "  [in use]" } else { "" };
                writeln!(
                    out,
                    "{:>10}  {images}{in_use}  {}",
                    mb(t.bytes),
                    t.rootfs.display()
                )?;
            }
        }
        ImagesAction::Prune { dry_run } => {
            let pruned = cache.prune(dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for (path, bytes) in pruned.trees.iter().chain(&pruned.leftovers) {
                writeln!(out, "{verb} {} ({})", path.display(), mb(*bytes))?;
            }
            for path in &pruned.in_use {
                writeln!(
                    out,
                    "kept {} (in use by a running compatrun)",
                    path.display()
                )?;
            }
            let total: u64 = pruned
                .trees
                .iter()
                .chain(&pruned.leftovers)
                .map(|(_, b)| b)
                .sum();
            writeln!(
                out,
                "{verb} {} cached trees ({}) from {}",
                pruned.trees.len(),
                mb(total),
                cache.root().display()
            )?;
        }
        ImagesAction::Prepare { path } => {
            use std::io::IsTerminal;
            let prepared = image::prepare(&path, &cache, std::io::stderr().is_terminal())?;
            log::info!("image sha256:{} is ready", prepared.id);
            writeln!(out, "{}", prepared.rootfs.display())?;
        }
    }
    Ok(())
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
