//! `compatrun bench`: what one system call costs on this host, natively and under
//! compatrun, per platform and CPU placement.
//!
//! Every row runs compatrun's own measuring guest ([`guest`]): natively, or under
//! `compatrun --platform X --kernel-persona P`. The rows are run in interleaved rounds
//! (each round runs every row once, in a rotated order), so a burst of load elsewhere
//! hits all rows alike; each row reports the median and the spread (min, max) of its
//! per-call times, and its ratio to the native row of the same operation. compatrun
//! pins itself (and so each supervisor it starts) to one CPU; the guest runs on that CPU
//! (`same CPU`) or pins itself to another (`other CPU`). [`render`] prints the table,
//! the JSON and the SVG chart.

pub mod guest;
pub mod render;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use platform::{Arch, Platform, Rule};
use sentry::{Persona, Sentry, SyscallTable};

/// What the bench was asked for.
#[derive(Debug)]
pub struct Options {
    /// The persona under which calls are caught and emulated.
    pub persona: String,
    /// The platforms to measure (empty: every one available here).
    pub platforms: Vec<Platform>,
    /// A short run for CI: few rounds, few calls; the figures mean little.
    pub quick: bool,
}

/// One measured operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `getpid`: a call every persona lets through.
    Getpid,
    /// A call the persona's filter refuses with ENOSYS: (number, name).
    Refused(i64, String),
    /// `uname`: emulated under a persona with its own identity.
    Uname,
    /// `time()` through the legacy vsyscall page.
    Vsyscall,
    /// fork, exec of compatrun's guest doing nothing, wait.
    Spawn,
}

impl Op {
    /// The guest's arguments for this operation, before the count.
    fn args(&self) -> Vec<String> {
        match self {
            Op::Getpid => vec!["getpid".into()],
            Op::Refused(nr, _) => vec!["refused".into(), nr.to_string()],
            Op::Uname => vec!["uname".into()],
            Op::Vsyscall => vec!["vsyscall".into()],
            Op::Spawn => vec!["spawn".into()],
        }
    }

    /// A short name for tables.
    pub fn label(&self) -> String {
        match self {
            Op::Getpid => "getpid".into(),
            Op::Refused(_, name) => name.clone(),
            Op::Uname => "uname".into(),
            Op::Vsyscall => "vsyscall time()".into(),
            Op::Spawn => "fork+exec+wait".into(),
        }
    }

    /// Calls per run: (normal first guess, quick).
    fn counts(&self) -> (u64, u64) {
        match self {
            Op::Getpid | Op::Refused(..) => (100_000, 1000),
            Op::Uname | Op::Vsyscall => (2000, 50),
            Op::Spawn => (10, 2),
        }
    }
}

/// Where the guest runs relative to the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the supervisor's CPU.
    Same,
    /// On another CPU.
    Other,
}

/// One row of the result.
#[derive(Clone, Debug)]
pub struct Row {
    /// Stable identifier (`uname/seccomp/other-cpu`).
    pub id: String,
    /// What it measures, for people.
    pub what: String,
    /// The operation.
    pub op: Op,
    /// The platform, or `None` for native.
    pub platform: Option<Platform>,
    /// Where the guest ran.
    pub placement: Placement,
    /// The check the guest must print (what the call returned).
    check: String,
    /// Calls per run.
    count: u64,
    /// Nanoseconds per call, one per round.
    pub samples: Vec<f64>,
}

/// The whole measurement.
#[derive(Debug)]
pub struct Results {
    /// The persona.
    pub persona: String,
    /// Its `uname -r`, if it has one.
    pub persona_release: Option<String>,
    /// The host's kernel release.
    pub host_release: String,
    /// The host's vsyscall page mode (`xonly`, `emulate`, `none`).
    pub vsyscall_mode: &'static str,
    /// The CPU compatrun (and every supervisor) ran on.
    pub supervisor_cpu: usize,
    /// The other CPU the guest ran on in `other CPU` rows, if there is one.
    pub other_cpu: Option<usize>,
    /// Rounds run.
    pub rounds: usize,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// The rows, in table order.
    pub rows: Vec<Row>,
    /// Things that could not be measured here, and why.
    pub notes: Vec<String>,
}

/// A call `persona` refuses on x86_64, preferring ones a reader knows.
fn refused_call(sentry: &Sentry, table: &SyscallTable) -> Option<(i64, String)> {
    let spec = sentry.intercept_spec();
    let known = [
        "getrandom",
        "membarrier",
        "copy_file_range",
        "statx",
        "rseq",
    ];
    let by_name = known.iter().find_map(|name| {
        let (nr, _) = table.get(name)?.on(Arch::X86_64)?;
        matches!(spec.rule_for(Arch::X86_64, nr), Rule::Errno(_))
            .then(|| (i64::from(nr), (*name).to_owned()))
    });
    by_name.or_else(|| {
        spec.rules
            .iter()
            .find(|(a, n, r)| {
                *a == Arch::X86_64 && matches!(r, Rule::Errno(_)) && spec.rule_for(*a, *n) == *r
            })
            .map(|&(_, nr, _)| {
                (
                    i64::from(nr),
                    crate::report::output::syscall_name(Arch::X86_64, nr),
                )
            })
    })
}

/// Runs the bench.
pub fn run(opts: &Options, table: &SyscallTable) -> anyhow::Result<Results> {
    let persona = Persona::resolve(&opts.persona, table)?;
    let release = persona.uname.as_ref().map(|u| u.release.clone());
    let sentry = Sentry::new(persona, table).context("the built-in sysctl table is invalid")?;
    let me = std::env::current_exe().context("cannot find compatrun's own executable")?;
    let host_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cpus = guest::allowed_cpus();
    let supervisor_cpu = *cpus
        .first()
        .context("no CPU in this process's affinity mask")?;
    let other_cpu = cpus.get(1).copied();
    guest::pin(supervisor_cpu).map_err(anyhow::Error::msg)?;
    let mut notes = Vec::new();
    if other_cpu.is_none() {
        notes.push("one CPU available: no other-CPU rows".to_owned());
    }
    let vmode = platform::sys::probe::host_vsyscall_mode();
    let mut platforms = if opts.platforms.is_empty() {
        Platform::ALL.to_vec()
    } else {
        opts.platforms.clone()
    };
    platforms.retain(|p| match (p.declaration().available)() {
        Ok(()) => true,
        Err(why) => {
            notes.push(format!("{}: not measured: {why}", p.name()));
            false
        }
    });
    platforms.sort_by_key(|p| p.name());
    // A platform this host or user cannot use (no pid namespace for seccomp as an
    // ordinary user, ptrace forbidden in a container) is left out, saying why.
    platforms.retain(|&p| match probe(&me, p, &opts.persona) {
        Ok(()) => true,
        Err(why) => {
            notes.push(format!("{}: not measured: {why}", p.name()));
            false
        }
    });
    let refused = refused_call(&sentry, table);
    if refused.is_none() {
        notes.push(format!(
            "persona {}: refuses no call, so no refused row",
            opts.persona
        ));
    }
    if release.is_none() {
        notes.push(format!(
            "persona {}: keeps the host's identity, so uname is not emulated",
            opts.persona
        ));
    }
    let host_id = host_release.clone();
    let mut rows = Vec::new();
    let mut row = |op: Op, platform: Option<Platform>, placement: Placement, check: String| {
        let mode = platform.map_or("native", |p| p.name());
        let place = match placement {
            Placement::Same => "same-cpu",
            Placement::Other => "other-cpu",
        };
        let id = format!("{}/{mode}/{place}", op.args()[0]);
        let how = match (&op, platform) {
            (_, None) => "native".to_owned(),
            (Op::Getpid, Some(p)) => format!("passed through the filter ({})", p.name()),
            (Op::Refused(..), Some(p)) => format!("ENOSYS from the filter ({})", p.name()),
            (Op::Uname, Some(p)) => format!("emulated ({})", p.name()),
            (_, Some(p)) => format!("under {}", p.name()),
        };
        let where_ = match placement {
            Placement::Same => "same CPU",
            Placement::Other => "other CPU",
        };
        let (normal, quick) = op.counts();
        rows.push(Row {
            id,
            what: format!("{}, {how}, {where_}", op.label()),
            op,
            platform,
            placement,
            check,
            count: if opts.quick { quick } else { normal },
            samples: Vec::new(),
        });
    };
    let has_page = vmode != "none";
    row(Op::Getpid, None, Placement::Same, "ok".into());
    row(Op::Uname, None, Placement::Same, host_id);
    if has_page {
        row(Op::Vsyscall, None, Placement::Same, "ok".into());
    } else {
        notes.push(
            "this host has no vsyscall page (vsyscall=none): no native vsyscall row".to_owned(),
        );
    }
    row(Op::Spawn, None, Placement::Same, "ok".into());
    for &p in &platforms {
        row(Op::Getpid, Some(p), Placement::Same, "ok".into());
        if let Some((nr, name)) = &refused {
            let op = Op::Refused(*nr, name.clone());
            row(op, Some(p), Placement::Same, "ENOSYS".into());
        }
        if let Some(rel) = &release {
            row(Op::Uname, Some(p), Placement::Same, rel.clone());
            if other_cpu.is_some() {
                row(Op::Uname, Some(p), Placement::Other, rel.clone());
            }
        }
        // Where the page is missing only a platform that sees signals can emulate it.
        if has_page || p.declaration().caps.sees_signals {
            row(Op::Vsyscall, Some(p), Placement::Same, "ok".into());
        }
        row(Op::Spawn, Some(p), Placement::Same, "ok".into());
    }
    let runner = Runner {
        me,
        persona: opts.persona.clone(),
        other_cpu,
    };
    let rounds = if opts.quick { 2 } else { 7 };
    if !opts.quick {
        for r in &mut rows {
            r.count = runner.calibrate(r)?;
        }
    }
    for round in 0..rounds {
        let n = rows.len();
        for i in 0..n {
            let r = &mut rows[(i + round) % n];
            let per_call = runner.once(r)?;
            r.samples.push(per_call);
        }
    }
    Ok(Results {
        persona: opts.persona.clone(),
        persona_release: release,
        host_release,
        vsyscall_mode: vmode,
        supervisor_cpu,
        other_cpu,
        rounds,
        quick: opts.quick,
        rows,
        notes,
    })
}

/// Whether compatrun can run a guest on `platform` here: runs the guest's `exit`.
fn probe(me: &std::path::Path, platform: Platform, persona: &str) -> Result<(), String> {
    let out = Command::new(me)
        .args([
            "--log",
            "error",
            "--platform",
            platform.name(),
            "--kernel-persona",
        ])
        .arg(persona)
        .arg("--")
        .arg(me)
        .args([guest::MODE, "exit"])
        .env_remove("COMPATRUN_PLATFORM")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start compatrun: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().trim_start_matches("compatrun: ").to_owned())
    }
}

/// Starts the guest for a row.
#[derive(Debug)]
struct Runner {
    me: PathBuf,
    persona: String,
    other_cpu: Option<usize>,
}

/// How long one run of a row should loop, in nanoseconds.
const TARGET_NS: f64 = 20e6;

impl Runner {
    fn command(&self, row: &Row, count: u64) -> Command {
        let mut guest: Vec<OsString> = vec![self.me.clone().into(), guest::MODE.into()];
        if let (Placement::Other, Some(cpu)) = (row.placement, self.other_cpu) {
            guest.extend(["--cpu".into(), cpu.to_string().into()]);
        }
        guest.extend(row.op.args().into_iter().map(OsString::from));
        guest.push(count.to_string().into());
        let mut cmd = match row.platform {
            None => Command::new(&guest[0]),
            Some(p) => {
                let mut c = Command::new(&self.me);
                c.args(["--log", "error", "--platform", p.name(), "--kernel-persona"])
                    .arg(&self.persona)
                    .arg("--")
                    .arg(&guest[0]);
                c
            }
        };
        cmd.args(&guest[1..])
            .env_remove("COMPATRUN_PLATFORM")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `row` once with `count` calls: nanoseconds per call.
    fn run(&self, row: &Row, count: u64) -> anyhow::Result<f64> {
        let out = self
            .command(row, count)
            .output()
            .with_context(|| format!("cannot start the guest for {}", row.id))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::bail!(
                "{}: the measuring guest failed ({}): {}{}",
                row.id,
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut words = stdout.split_whitespace();
        let ns: f64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .with_context(|| format!("{}: the guest printed no time: {stdout:?}", row.id))?;
        let check = words.next().unwrap_or("");
        if check != row.check {
            anyhow::bail!(
                "{}: the guest's last call returned {check:?}, not {:?}: this row would not \
                 measure what it says",
                row.id,
                row.check
            );
        }
        #[allow(clippy::cast_precision_loss)] // counts are far below 2^52
        Ok(ns / count as f64)
    }

    fn once(&self, row: &Row) -> anyhow::Result<f64> {
        self.run(row, row.count)
    }

    /// A count for which one run loops about [`TARGET_NS`].
    fn calibrate(&self, row: &Row) -> anyhow::Result<u64> {
        let per_call = self.run(row, row.count)?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (TARGET_NS / per_call.max(1.0)) as u64;
        Ok(n.clamp(3, 2_000_000))
    }
}

/// The median, min and max of `samples` (nanoseconds per call).
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let median = match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    (
        median,
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

/// The native row of the same operation, as the base of a row's ratio.
pub fn native_of<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    let base = match row.op {
        // A refused call does not run natively at all: getpid is the cheapest call.
        Op::Refused(..) => Op::Getpid,
        ref op => op.clone(),
    };
    rows.iter().find(|r| r.platform.is_none() && r.op == base)
}
