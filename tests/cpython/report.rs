//! What the comparison prints (run times, expected differences, tolerated cases,
//! compatrun's own messages) and, where compatrun differs from native, the failure
//! message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::allowed::Side;
use crate::run::{logs_dir, Run};
use crate::settle::{Dispute, Verdict};
use crate::{LEGACY, MODULES, RERUNS, SLOTS};

/// Prints each full run's time, per module and side; timings never decide anything.
pub fn timings(sides: &[Side], full: &BTreeMap<(Side, &'static str), Run>, full_wall: Duration) {
    // Timings: never decide anything, always shown.
    println!("\n[cpython] run times (s), {SLOTS} runs at a time:");
    let mut header = format!("  {:<16}", "module");
    for side in sides {
        let _ = write!(header, " {:>9}", side.name());
    }
    println!("{header}");
    let mut totals = vec![0f64; sides.len()];
    for &module in MODULES {
        let mut line = format!("  {module:<16}");
        for (i, side) in sides.iter().enumerate() {
            let t = full[&(*side, module)].elapsed.as_secs_f64();
            totals[i] += t;
            let _ = write!(line, " {t:>9.1}");
        }
        println!("{line}");
    }
    let mut line = format!("  {:<16}", "total");
    for t in &totals {
        let _ = write!(line, " {t:>9.1}");
    }
    println!("{line}\n  full runs: {:.1} s wall", full_wall.as_secs_f64());
}

/// Prints what the comparison found and returns the failure message if compatrun differs
/// from native: a real difference in a case, or a module's exit status alone.
pub fn conclude(
    personas: &[Side],
    full: &BTreeMap<(Side, &'static str), Run>,
    settled: &[Dispute],
    expected_diffs: &[String],
    used_allow: &BTreeSet<&'static str>,
    module_level: &[String],
    t0: Instant,
) -> Option<String> {
    // Report.
    let total_cases: usize = MODULES
        .iter()
        .map(|m| full[&(Side::Native, *m)].cases.len())
        .sum();
    println!(
        "\n[cpython] {total_cases} test cases natively in {} modules",
        MODULES.len()
    );
    for &persona in personas {
        let real = settled
            .iter()
            .filter(|d| d.persona == persona && d.verdict == Verdict::Real)
            .count();
        let tolerated = settled
            .iter()
            .filter(|d| d.persona == persona && d.verdict != Verdict::Real)
            .count();
        let expected = expected_diffs
            .iter()
            .filter(|l| l.starts_with(&format!("  {}:", persona.name())))
            .count();
        println!(
            "[cpython] {}: {real} real differences, {tolerated} tolerated (flaky or not reached), \
             {expected} expected from the persona",
            persona.name()
        );
    }
    if !expected_diffs.is_empty() {
        println!(
            "[cpython] expected differences (allow-list):\n{}",
            expected_diffs.join("\n")
        );
    }
    for a in Side::Persona(LEGACY.0).allowed() {
        if !used_allow.contains(a.case) {
            println!(
                "[cpython] note: allow-list entry {} not exercised under {} (native outcome was not {})",
                a.case, LEGACY.0, a.native
            );
        }
    }
    let mut tolerated_text = String::new();
    for d in settled
        .iter()
        .filter(|d| matches!(d.verdict, Verdict::Flaky | Verdict::FlakyNative))
    {
        let _ = writeln!(tolerated_text, "{} [{:?}]", d.line(), d.verdict);
    }
    let mut not_reached: BTreeMap<(Side, &str), usize> = BTreeMap::new();
    for d in settled.iter().filter(|d| d.verdict == Verdict::NotReached) {
        *not_reached.entry((d.persona, d.module)).or_default() += 1;
    }
    for ((persona, module), count) in not_reached {
        let g = &full[&(persona, module)];
        let _ = writeln!(
            tolerated_text,
            "  {} {module}: {count} cases not reached by the full run (it ended under {}, {}); \
             all agreed with native when re-run",
            persona.name(),
            g.aborted().unwrap_or("?"),
            g.status_text()
        );
    }
    if !tolerated_text.is_empty() {
        println!("[cpython] tolerated after re-runs:\n{tolerated_text}");
    }
    for &persona in personas {
        for &module in MODULES {
            let g = &full[&(persona, module)];
            if !g.compatrun.is_empty() {
                println!(
                    "[cpython] compatrun said, {} {module}: {}",
                    persona.name(),
                    g.compatrun.join(" | ")
                );
            }
        }
    }
    println!("[cpython] total {:.1} s", t0.elapsed().as_secs_f64());

    let real: Vec<&Dispute> = settled
        .iter()
        .filter(|d| d.verdict == Verdict::Real)
        .collect();
    if real.is_empty() && module_level.is_empty() {
        return None;
    }
    let mut msg = String::from("CPython's regression tests differ under compatrun from native:\n");
    for d in &real {
        let _ = writeln!(msg, "[{} {}]{}", d.persona.name(), d.module, d.line());
    }
    if !module_level.is_empty() {
        let _ = writeln!(
            msg,
            "module exit status differs:\n{}",
            module_level.join("\n")
        );
    }
    if !tolerated_text.is_empty() {
        let _ = writeln!(
            msg,
            "tolerated (flaky or not reached; agreed in re-runs):\n{tolerated_text}"
        );
    }
    let _ = write!(
        msg,
        "outcomes: full run first, then {RERUNS} re-runs of the case alone. Logs: {}",
        logs_dir().display()
    );
    Some(msg)
}
