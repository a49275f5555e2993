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
    /// `compatrun --kernel-persona PERSONA -- ...`.
    Compatrun(&'static str),
}

/// The modes every benchmark is run in, in the order of the summary's columns.
pub const MODES: [Mode; 3] = [
    Mode::Native,
    Mode::Compatrun("host"),
    Mode::Compatrun("2.6"),
];

impl Mode {
    /// The benchmark id: `native`, `compatrun-host`, `compatrun-2.6`.
    pub fn id(self) -> String {
        match self {
            Mode::Native => "native".to_string(),
            Mode::Compatrun(p) => format!("compatrun-{p}"),
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
        if let Mode::Compatrun(persona) = self {
            full.push(COMPATRUN.into());
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

/// Per-iteration times seen, by benchmark group and id, for the closing summary.
static SEEN: Mutex<BTreeMap<(String, String), Vec<f64>>> = Mutex::new(BTreeMap::new());
/// The groups in the order they were first seen (the order of the summary's rows).
static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records that one sample of `group/id` took `total` for `iters` iterations.
pub fn record(group: &str, id: &str, total: Duration, iters: u64) {
    if iters == 0 {
        return;
    }
    #[allow(clippy::cast_precision_loss)] // iteration counts are far below 2^52
    let per = total.as_secs_f64() * 1e9 / iters as f64;
    if let Ok(mut order) = ORDER.lock() {
        if !order.iter().any(|g| g == group) {
            order.push(group.to_string());
        }
    }
    if let Ok(mut seen) = SEEN.lock() {
        seen.entry((group.to_string(), id.to_string()))
            .or_default()
            .push(per);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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

/// Prints a markdown table: one row per group that has any of `columns`, one column per id in `columns` (the first
/// is the baseline), each cell the median of the per-iteration times recorded for it
/// (criterion's warm-up samples included), and the ratio to the baseline.
pub fn print_summary(title: &str, columns: &[String]) {
    let Ok(seen) = SEEN.lock() else { return };
    if seen.is_empty() {
        return;
    }
    let groups: Vec<String> = ORDER.lock().map(|o| o.clone()).unwrap_or_default();
    println!("\n## {title}\n");
    println!(
        "Median time per iteration over all samples of this run (ratio to the first column).\n"
    );
    let mut header = String::from("| benchmark |");
    let mut rule = String::from("|---|");
    for c in columns {
        header.push_str(&format!(" {c} |"));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for g in &groups {
        if !columns
            .iter()
            .any(|c| seen.contains_key(&(g.clone(), c.clone())))
        {
            continue;
        }
        let base = seen
            .get(&(g.clone(), columns[0].clone()))
            .map(|v| median(v));
        let mut row = format!("| {g} |");
        for c in columns {
            match seen.get(&(g.clone(), c.clone())) {
                Some(v) => {
                    let m = median(v);
                    match base {
                        Some(b) if c != &columns[0] && b > 0.0 => {
                            row.push_str(&format!(" {} ({:.2}x) |", human_ns(m), m / b));
                        }
                        _ => row.push_str(&format!(" {} |", human_ns(m))),
                    }
                }
                None => row.push_str(" – |"),
            }
        }
        println!("{row}");
    }
    println!();
}
