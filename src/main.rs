//! The `compatrun` command: parses the command line, loads the persona, wires the sentry
//! to a platform, and turns the outcome into an exit status.
//!
//! Exit status: the guest's own; 128+N when the guest was killed by signal N; 125 when
//! compatrun itself failed, 126 when the program exists but cannot run, 127 when it was
//! not found (the `env`/`chroot`/`timeout` convention).

mod cli;
mod image;
mod personas;
mod report;
mod scan;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use platform::{GuestCommand, PlatformError};
use sentry::{Persona, Sentry, SyscallTable};

use cli::{Cli, Command, ImagesAction};

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
    let Some((program, args)) = command_line.split_first() else {
        anyhow::bail!(
            "no program given (and no image command); usage: compatrun [OPTIONS] -- PROGRAM [ARGS...] (see --help)"
        );
    };
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
            let dir = image::Cache::locate()?
                .root()
                .join(format!("run-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            Ok(dir)
        })
        .transpose()?;
    let built = guest_command(
        cli,
        program,
        args,
        nofile_soft,
        &mut sentry,
        prepared.as_ref().zip(scratch.as_deref()),
    );
    let (command, exec_target) = match built {
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
    let status = match record {
        None => {
            let spec = sentry.intercept_spec().clone();
            platform.run(&command, &spec, &mut sentry)
        }
        Some(r) => r.run(platform, why, &command, sentry),
    };
    if let Some(dir) = &scratch {
        // The guest's writes to the image's tree were an overlay: they go now.
        let _ = image::remove_tree(dir);
    }
    let status = status?;
    log::debug!("guest finished: {status:?}");
    Ok(u8::try_from(status.code() & 0xff).unwrap_or(EXIT_FAILURE))
}

/// What to run, and where its program is for the platform choice (the root it runs in,
/// the program's path as seen from here), from the command line.
fn guest_command(
    cli: &Cli,
    program: &OsString,
    args: &[OsString],
    nofile_soft: Option<u64>,
    sentry: &mut Sentry,
    image: Option<(&image::PreparedImage, &std::path::Path)>,
) -> anyhow::Result<(GuestCommand, Option<(PathBuf, PathBuf)>)> {
    let as_root = platform::sys::has_cap_sys_admin();
    let argv: Vec<OsString> = std::iter::once(program.clone())
        .chain(args.iter().cloned())
        .collect();
    // The image's environment (with the terminal type of ours), else ours, as chroot.
    let mut env: Vec<(OsString, OsString)> = match image {
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
    for (k, v) in &cli.envs {
        env.retain(|(key, _)| key != k.as_str());
        env.push((k.into(), v.into()));
    }
    let guest_path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let env: Vec<OsString> = env
        .into_iter()
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            k
        })
        .collect();
    let dir = match image {
        Some((img, _)) => Some(img.rootfs.clone()),
        None => cli.rootfs.clone(),
    };
    let Some(dir) = &dir else {
        if !cli.binds.is_empty() || cli.hostname.is_some() || cli.no_host_files {
            anyhow::bail!("--bind, --hostname and --no-host-files need --rootfs");
        }
        if cli.user.is_some() && !as_root {
            anyhow::bail!(
                "--user without --rootfs needs root (an ordinary user cannot switch users)"
            );
        }
        let pid_ns = cli.pid_ns.enabled();
        let synthetic_files = if pid_ns {
            sentry.synthetic_files()
        } else {
            if sentry.persona().uname.is_some() {
                log::info!("no pid and mount namespace: /proc/version and /proc/sys/kernel show the host kernel");
            }
            Vec::new()
        };
        let user = cli.user.as_deref().map(numeric_user).transpose()?;
        let resolved = platform::resolve_program(program, guest_path.as_deref())?;
        let target = (PathBuf::from("/"), PathBuf::from(&resolved));
        return Ok((
            GuestCommand {
                program: resolved,
                argv,
                env,
                cwd: cli.workdir.clone(),
                nofile_soft,
                pid_ns,
                synthetic_files,
                root: None,
                user,
                user_ns: None,
            },
            Some(target),
        ));
    };
    if cli.pid_ns == cli::PidNs::Off {
        anyhow::bail!("--rootfs needs the guest's own pid and mount namespace; drop --pid-ns off");
    }
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("--rootfs {}: not a directory", dir.display()),
        Err(e) => anyhow::bail!("--rootfs {}: {e}", dir.display()),
    }
    let dir = std::fs::canonicalize(dir).with_context(|| format!("--rootfs {}", dir.display()))?;
    sentry.set_nodename(cli.hostname.as_deref());
    let path = guest_path
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    // The program as the platform choice sees it: its first candidate in the tree.
    let target = platform::rootfs::find_in_tree(&dir, program, &path).map(|p| (dir.clone(), p));
    let wanted_user = match (
        cli.user.as_deref(),
        image.and_then(|(img, _)| img.config.user.as_deref()),
    ) {
        (Some(spec), _) => Some(tree_user(&dir, spec, "--user")?),
        (None, Some(spec)) => Some(tree_user(&dir, spec, "the image's user")?),
        (None, None) => None,
    };
    let cwd: OsString = cli
        .workdir
        .clone()
        .or_else(|| image.and_then(|(i, _)| i.config.working_dir.clone().map(OsString::from)))
        .unwrap_or_else(|| "/".into());
    let (user, user_ns) = if as_root {
        (wanted_user, None)
    } else {
        let (uid, gid) = wanted_user.unwrap_or((0, 0));
        log::info!("an ordinary user: the guest runs in a user namespace as uid {uid}, gid {gid}");
        (
            None,
            Some(platform::IdMap {
                inside_uid: uid,
                inside_gid: gid,
            }),
        )
    };
    Ok((
        GuestCommand {
            program: program.clone(),
            argv,
            env,
            cwd: Some(cwd.clone()),
            nofile_soft,
            pid_ns: true,
            synthetic_files: sentry.synthetic_files(),
            root: Some(platform::RootSetup {
                dir: dir.into_os_string(),
                binds: cli.binds.clone(),
                host_files: !cli.no_host_files,
                hostname: cli.hostname.clone().map(OsString::from),
                path,
                overlay: image.map(|(_, scratch)| scratch.as_os_str().to_owned()),
                workdir: Some(cwd),
            }),
            user,
            user_ns,
        },
        target,
    ))
}

/// `--user UID[:GID]` without a tree: numbers only (GID defaults to UID).
fn numeric_user(spec: &str) -> anyhow::Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, spec));
    let num = |x: &str| {
        x.parse::<u32>().map_err(|_| {
            anyhow::anyhow!(
                "--user {spec}: without --rootfs or --image give numbers (names are looked up in the tree's /etc/passwd)"
            )
        })
    };
    Ok((num(user)?, num(group)?))
}

/// `--user` or an image config's `User`: `UID[:GID]`, numbers or names from the tree's
/// /etc/passwd and /etc/group (`what` names the source in errors).
fn tree_user(tree: &std::path::Path, spec: &str, what: &str) -> anyhow::Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    // The tree's file itself: a symbolic link there would be followed on the host. A
    // line without a numeric id does not count (never a default of 0).
    let lookup = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        let path = tree.join(file);
        if ["etc", file]
            .iter()
            .any(|p| std::fs::symlink_metadata(tree.join(p)).is_ok_and(|m| m.is_symlink()))
        {
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) {
                return None;
            }
            Some((
                f.get(2)?.parse().ok()?,
                f.get(3).and_then(|x| x.parse().ok()),
            ))
        })
    };
    let (uid, default_gid) = match user.parse::<u32>() {
        Ok(u) => (u, None),
        Err(_) => lookup("etc/passwd", user)
            .ok_or_else(|| anyhow::anyhow!("{what} {user:?} is not in the tree's /etc/passwd"))?,
    };
    let gid = if group.is_empty() {
        default_gid.unwrap_or(uid)
    } else {
        match group.parse::<u32>() {
            Ok(g) => g,
            Err(_) => lookup("etc/group", group).map(|(g, _)| g).ok_or_else(|| {
                anyhow::anyhow!("{what}: group {group:?} is not in the tree's /etc/group")
            })?,
        }
    };
    Ok((uid, gid))
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
