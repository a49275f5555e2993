//! What the two benchmark programs share: where compatrun and the target directory are,
//! the modes a workload is run in (native, or under compatrun with a persona), and a
//! side-by-side summary of the times each benchmark saw.
//!
//! Only ratios measured in one run mean anything on a shared machine; the summary table
//! printed at the end of a run gives them.

#![allow(dead_code)] // each benchmark program uses a different part of this

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The compatrun binary cargo built for this benchmark run.
pub const COMPATRUN: &str = env!("CARGO_BIN_EXE_compatrun");

/// How a guest command is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Directly, without compatrun.
    Native,
    /// `compatrun --platform PLATFORM --kernel-persona PERSONA -- ...`.
    Compatrun(&'static str, &'static str),
}

/// The platforms, in the order of the summary's columns.
pub const PLATFORMS: [&str; 2] = ["ptrace", "seccomp"];

/// The modes every benchmark is run in, in the order of the summary's columns.
pub const MODES: [Mode; 5] = [
    Mode::Native,
    Mode::Compatrun("ptrace", "host"),
    Mode::Compatrun("seccomp", "host"),
    Mode::Compatrun("ptrace", "2.6"),
    Mode::Compatrun("seccomp", "2.6"),
];

impl Mode {
    /// The benchmark id: `native`, `ptrace-host`, `seccomp-2.6`...
    pub fn id(self) -> String {
        match self {
            Mode::Native => "native".to_string(),
            Mode::Compatrun(platform, persona) => format!("{platform}-{persona}"),
        }
    }

    /// The persona, if compatrun runs the guest.
    pub fn persona(self) -> Option<&'static str> {
        match self {
            Mode::Native => None,
            Mode::Compatrun(_, persona) => Some(persona),
        }
    }

    /// `argv` as a command in this mode.
    pub fn command<S: AsRef<std::ffi::OsStr>>(self, argv: &[S]) -> Command {
        self.command_with_prefix(&[] as &[&str], argv)
    }

    /// `prefix` (e.g. `taskset -c 0`) runs compatrun (or, natively, the guest); `argv`
    /// is the guest.
    pub fn command_with_prefix<P, S>(self, prefix: &[P], argv: &[S]) -> Command
    where
        P: AsRef<std::ffi::OsStr>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut full: Vec<OsString> = prefix.iter().map(|p| p.as_ref().to_owned()).collect();
        if let Mode::Compatrun(platform, persona) = self {
            full.push(COMPATRUN.into());
            full.push("--platform".into());
            full.push(platform.into());
            full.push("--kernel-persona".into());
            full.push(persona.into());
            full.push("--".into());
        }
        full.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        let mut cmd = Command::new(&full[0]);
        cmd.args(&full[1..]);
        cmd
    }
}

/// `target/` (or `$CARGO_TARGET_DIR`): this program runs as `target/release/deps/NAME-HASH`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

/// A private scratch directory under the target directory, made empty.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = target_dir()
        .join("bench-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the benchmark scratch directory");
    dir
}

/// Whether compatrun can run a guest here at all (ptrace may be denied in some
/// containers). Prints why not.
pub fn compatrun_works() -> bool {
    match Command::new(COMPATRUN)
        .args(["--kernel-persona", "2.6", "--", "/bin/true"])
        .status()
    {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("compatrun does not run guests here ({s}): its benchmarks are SKIPPED");
            false
        }
        Err(e) => {
            eprintln!("cannot start {COMPATRUN} ({e}): its benchmarks are SKIPPED");
            false
        }
    }
}

/// Times per iteration (ns), by benchmark group and id.
type Table = BTreeMap<(String, String), Vec<f64>>;

/// Per-iteration times criterion's samples saw (warm-up included), for calibration.
static SEEN: Mutex<Table> = Mutex::new(BTreeMap::new());
/// The groups in the order they were first seen (the order of the summary's rows).
static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records that one sample of `group/id` took `total` for `iters` iterations.
pub fn record(group: &str, id: &str, total: Duration, iters: u64) {
    if iters == 0 {
        return;
    }
    if let Ok(mut order) = ORDER.lock() {
        if !order.iter().any(|g| g == group) {
            order.push(group.to_string());
        }
    }
    if let Ok(mut seen) = SEEN.lock() {
        seen.entry((group.to_string(), id.to_string()))
            .or_default()
            .push(per_iter_ns(total, iters));
    }
}

fn per_iter_ns(total: Duration, iters: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // iteration counts are far below 2^52
    let iters = iters as f64;
    total.as_secs_f64() * 1e9 / iters
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether this is a real measuring run (`cargo bench`), not `--test`, `--list` or a
/// run under `cargo test`.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}

/// One thing to time in the interleaved rounds: `run(iters)` returns the time `iters`
/// iterations took.
pub struct Case<'a> {
    pub group: &'a str,
    pub id: String,
    pub run: Box<dyn Fn(u64) -> Duration + 'a>,
}

/// Runs every case `rounds` times, round-robin (each round runs every case once, so a
/// burst of load elsewhere on a shared machine hits all of them alike), each run sized to
/// take about `target` from what criterion saw of it. Returns the times per iteration.
pub fn interleaved_rounds(cases: &[Case<'_>], rounds: usize, target: Duration) -> Table {
    let seen = SEEN.lock().map(|s| s.clone()).unwrap_or_default();
    let iters_for = |case: &Case<'_>| -> u64 {
        let per = seen
            .get(&(case.group.to_string(), case.id.clone()))
            .map_or(f64::NAN, |v| median(v));
        if per.is_finite() && per > 0.0 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped
            let n = (target.as_secs_f64() * 1e9 / per).clamp(1.0, 1e9) as u64;
            n
        } else {
            1
        }
    };
    let iters: Vec<u64> = cases.iter().map(iters_for).collect();
    let mut table = Table::new();
    for _ in 0..rounds {
        for (case, &n) in cases.iter().zip(&iters) {
            let d = (case.run)(n);
            table
                .entry((case.group.to_string(), case.id.clone()))
                .or_default()
                .push(per_iter_ns(d, n));
        }
    }
    table
}

/// Formats nanoseconds for a table cell.
pub fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Prints a markdown table: one row per group of `table` that has any of `columns`, one
/// column per id in `columns` (the first is the baseline), each cell the median time per
/// iteration and its ratio to the baseline's median.
pub fn print_table(title: &str, note: &str, columns: &[String], table: &Table) {
    if table.is_empty() {
        return;
    }
    let mut groups: Vec<String> = ORDER.lock().map(|o| o.clone()).unwrap_or_default();
    for (g, _) in table.keys() {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    println!("\n## {title}\n\n{note}\n");
    let mut header = String::from("| benchmark |");
    let mut rule = String::from("|---|");
    for c in columns {
        header.push_str(&format!(" {c} |"));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for g in &groups {
        let cell = |c: &String| table.get(&(g.clone(), c.clone())).map(|v| median(v));
        if !columns.iter().any(|c| cell(c).is_some()) {
            continue;
        }
        let base = cell(&columns[0]);
        let mut row = format!("| {g} |");
        for (i, c) in columns.iter().enumerate() {
            match (cell(c), base) {
                (Some(m), Some(b)) if i > 0 && b > 0.0 => {
                    row.push_str(&format!(" {} ({:.2}x) |", human_ns(m), m / b));
                }
                (Some(m), _) => row.push_str(&format!(" {} |", human_ns(m))),
                (None, _) => row.push_str(" – |"),
            }
        }
        println!("{row}");
    }
    println!();
}

/// Groups criterion ran (in order), for choosing what to run in rounds.
pub fn groups_seen() -> Vec<String> {
    ORDER.lock().map(|o| o.clone()).unwrap_or_default()
}
