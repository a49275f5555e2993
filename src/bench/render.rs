//! `compatrun bench`'s output: a table for people, JSON (`--json`), and an SVG chart
//! (`--svg FILE`, drawn with plotters' SVG backend).

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;

use super::{native_of, stats, Placement, Results, Row};

/// A duration in nanoseconds, in a readable unit.
fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The row's ratio of medians to its native row.
fn ratio(results: &Results, row: &Row) -> Option<f64> {
    let base = native_of(&results.rows, row)?;
    if base.platform.is_none() && std::ptr::eq(base, row) {
        return Some(1.0);
    }
    let (m, _, _) = stats(&row.samples);
    let (b, _, _) = stats(&base.samples);
    (b > 0.0).then(|| m / b)
}

fn cpus(results: &Results, row: &Row) -> (usize, usize) {
    let guest = match (row.placement, results.other_cpu) {
        (Placement::Other, Some(c)) => c,
        _ => results.supervisor_cpu,
    };
    (results.supervisor_cpu, guest)
}

/// The header lines: what, where, how.
fn header(results: &Results) -> String {
    let mut h = format!(
        "compatrun bench: one call, natively and under compatrun; persona {}{}; host Linux {} \
         (vsyscall {})\n",
        results.persona,
        results
            .persona_release
            .as_deref()
            .map(|r| format!(" (uname -r {r})"))
            .unwrap_or_default(),
        results.host_release,
        results.vsyscall_mode
    );
    let _ = writeln!(
        h,
        "compatrun and its supervisor on CPU {}; the guest on CPU {} (same CPU){}",
        results.supervisor_cpu,
        results.supervisor_cpu,
        results
            .other_cpu
            .map(|c| format!(" or CPU {c} (other CPU)"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        h,
        "{} interleaved rounds{}; per row: median time per call (min-max over rounds), ratio of medians to native",
        results.rounds,
        if results.quick {
            " (--quick: few calls, figures are rough)"
        } else {
            ""
        }
    );
    h
}

/// The table for people.
pub fn table(results: &Results) -> String {
    let mut out = header(results);
    out.push('\n');
    let width = results
        .rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(10);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>21}  {:>9}",
        "row", "median", "min-max", "x native"
    );
    for row in &results.rows {
        let (m, lo, hi) = stats(&row.samples);
        let r = ratio(results, row).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>21}  {:>9}",
            row.what,
            human(m),
            format!("{}-{}", human(lo), human(hi)),
            r
        );
    }
    for note in &results.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[derive(Serialize)]
struct JsonRow<'a> {
    id: &'a str,
    what: &'a str,
    op: String,
    platform: Option<&'static str>,
    placement: &'static str,
    supervisor_cpu: Option<usize>,
    guest_cpu: usize,
    calls_per_run: u64,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    samples_ns: &'a [f64],
    ratio_to_native: Option<f64>,
}

#[derive(Serialize)]
struct Json<'a> {
    schema: &'static str,
    persona: &'a str,
    persona_release: Option<&'a str>,
    host_release: &'a str,
    vsyscall_mode: &'static str,
    supervisor_cpu: usize,
    other_cpu: Option<usize>,
    rounds: usize,
    quick: bool,
    rows: Vec<JsonRow<'a>>,
    notes: &'a [String],
}

/// The JSON form (`compatrun-bench/1`; fields documented in docs/PERFORMANCE.md).
pub fn json(results: &Results) -> anyhow::Result<String> {
    let rows = results
        .rows
        .iter()
        .map(|row| {
            let (median_ns, min_ns, max_ns) = stats(&row.samples);
            let (sup, guest_cpu) = cpus(results, row);
            JsonRow {
                id: &row.id,
                what: &row.what,
                op: row.op.label(),
                platform: row.platform.map(|p| p.name()),
                placement: match row.placement {
                    Placement::Same => "same-cpu",
                    Placement::Other => "other-cpu",
                },
                supervisor_cpu: row.platform.map(|_| sup),
                guest_cpu,
                calls_per_run: row.count,
                median_ns,
                min_ns,
                max_ns,
                samples_ns: &row.samples,
                ratio_to_native: ratio(results, row),
            }
        })
        .collect();
    let j = Json {
        schema: "compatrun-bench/1",
        persona: &results.persona,
        persona_release: results.persona_release.as_deref(),
        host_release: &results.host_release,
        vsyscall_mode: results.vsyscall_mode,
        supervisor_cpu: results.supervisor_cpu,
        other_cpu: results.other_cpu,
        rounds: results.rounds,
        quick: results.quick,
        rows,
        notes: &results.notes,
    };
    serde_json::to_string_pretty(&j).context("cannot encode the results as JSON")
}

/// A horizontal bar chart of each row's median time per call (log scale), with its
/// min-max spread as a line, written as SVG.
pub fn svg(results: &Results) -> anyhow::Result<String> {
    use plotters::prelude::*;
    let rows = &results.rows;
    let medians: Vec<(f64, f64, f64)> = rows.iter().map(|r| stats(&r.samples)).collect();
    let lo = medians
        .iter()
        .map(|m| m.1)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let hi = medians.iter().map(|m| m.2).fold(1.0, f64::max);
    let height = u32::try_from(rows.len()).unwrap_or(40) * 28 + 110;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let title = format!(
            "compatrun bench: time per call, persona {}, Linux {}",
            results.persona, results.host_release
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(430)
            .build_cartesian_2d(
                ((lo / 2.0)..(hi * 2.0)).log_scale(),
                (0..rows.len()).into_segmented(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("nanoseconds per call (log scale; bar: median, line: min-max)")
            .x_label_formatter(&|v| human(*v))
            .y_labels(rows.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    rows.get(*i).map(|r| r.what.clone()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let base = lo / 2.0;
        chart
            .draw_series(rows.iter().zip(&medians).enumerate().map(|(i, (r, m))| {
                let color = match r.platform {
                    None => RGBColor(90, 90, 90),
                    Some(p) if p.name() == "ptrace" => RGBColor(200, 80, 40),
                    Some(_) => RGBColor(40, 100, 200),
                };
                Rectangle::new(
                    [
                        (base, SegmentValue::Exact(i)),
                        (m.0, SegmentValue::Exact(i + 1)),
                    ],
                    color.filled(),
                )
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(medians.iter().enumerate().map(|(i, m)| {
                PathElement::new(
                    vec![
                        (m.1, SegmentValue::CenterOf(i)),
                        (m.2, SegmentValue::CenterOf(i)),
                    ],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(out)
}
