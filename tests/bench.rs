//! `compatrun bench --quick`: every row is there, in the table and in the JSON, each
//! with a median and a spread; `--svg` writes an SVG with one bar per row; bad input is
//! refused. Never a timing threshold: the figures of a quick run are rough.

mod common;

use std::process::Command;

use common::{compatrun_bin, run_cmd, scratch_dir};
use serde_json::Value;

/// The row ids this host must produce, given the platforms the bench says it measured
/// and the notes it gave for the rest.
fn expected_ids(json: &Value) -> Vec<String> {
    let notes: Vec<&str> = json["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let vsyscall_page = json["vsyscall_mode"] != "none";
    let two_cpus = !json["other_cpu"].is_null();
    let mut ids = vec!["getpid/native/same-cpu", "uname/native/same-cpu"];
    if vsyscall_page {
        ids.push("vsyscall/native/same-cpu");
    }
    ids.push("spawn/native/same-cpu");
    let mut out: Vec<String> = ids.into_iter().map(str::to_owned).collect();
    for p in ["ptrace", "seccomp"] {
        if notes
            .iter()
            .any(|n| n.starts_with(&format!("{p}: not measured")))
        {
            common::skip(
                "bench rows",
                &format!("{p} is not available here: {notes:?}"),
            );
            continue;
        }
        out.push(format!("getpid/{p}/same-cpu"));
        out.push(format!("refused/{p}/same-cpu"));
        out.push(format!("uname/{p}/same-cpu"));
        if two_cpus {
            out.push(format!("uname/{p}/other-cpu"));
        }
        if vsyscall_page || p == "ptrace" {
            out.push(format!("vsyscall/{p}/same-cpu"));
        }
        out.push(format!("spawn/{p}/same-cpu"));
    }
    out
}

fn bench(args: &[&str]) -> common::Outcome {
    let mut cmd = Command::new(compatrun_bin());
    cmd.arg("bench").arg("--quick").args(args);
    cmd.env_remove("COMPATRUN_PLATFORM");
    run_cmd(cmd, None)
}

#[test]
fn quick_json_has_every_row_with_median_and_spread() {
    let o = bench(&["--json"]);
    assert_eq!(o.status, 0, "{}", o.err());
    let json: Value = serde_json::from_str(&o.out()).expect("bench --json prints JSON");
    assert_eq!(json["schema"], "compatrun-bench/1");
    assert_eq!(json["persona"], "2.6");
    assert_eq!(json["persona_release"], "2.6.32");
    assert_eq!(json["rounds"], 2);
    let rows = json["rows"].as_array().expect("rows");
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, expected_ids(&json));
    for r in rows {
        let n = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
        assert!(n("min_ns") > 0.0 && n("min_ns") <= n("median_ns"), "{r}");
        assert!(n("median_ns") <= n("max_ns"), "{r}");
        assert_eq!(r["samples_ns"].as_array().map(Vec::len), Some(2), "{r}");
        assert!(r["ratio_to_native"].as_f64().is_some(), "{r}");
        // Where each side ran is said: the guest always, the supervisor under compatrun.
        assert!(r["guest_cpu"].is_u64(), "{r}");
        assert_eq!(
            r["supervisor_cpu"].is_null(),
            r["platform"].is_null(),
            "{r}"
        );
        if r["placement"] == "other-cpu" {
            assert_ne!(r["guest_cpu"], r["supervisor_cpu"], "{r}");
        }
    }
}

#[test]
fn quick_table_has_every_row_and_says_where_it_ran() {
    let o = bench(&[]);
    assert_eq!(o.status, 0, "{}", o.err());
    let text = o.out();
    assert!(
        text.contains("compatrun and its supervisor on CPU"),
        "{text}"
    );
    assert!(text.contains("interleaved rounds"), "{text}");
    let json: Value =
        serde_json::from_str(&bench(&["--json"]).out()).expect("bench --json prints JSON");
    let table_rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("row "))
        .skip(1)
        .filter(|l| !l.starts_with("note:"))
        .collect();
    let whats: Vec<&str> = json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["what"].as_str().expect("what"))
        .collect();
    assert_eq!(table_rows.len(), whats.len(), "{text}");
    for (line, what) in table_rows.iter().zip(&whats) {
        assert!(line.starts_with(what), "{line:?} is not the row {what:?}");
        assert!(line.trim_end().ends_with('x'), "no ratio in {line:?}");
    }
}

#[test]
fn svg_is_written_with_one_bar_per_row() {
    let path = scratch_dir().join(format!("bench-{}.svg", std::process::id()));
    let o = bench(&["--svg", path.to_str().expect("utf8"), "--json"]);
    assert_eq!(o.status, 0, "{}", o.err());
    let json: Value = serde_json::from_str(&o.out()).expect("JSON");
    let rows = json["rows"].as_array().expect("rows");
    let svg = std::fs::read_to_string(&path).expect("the SVG was written");
    assert!(svg.starts_with("<svg "), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    // Every row is labelled.
    for r in rows {
        let what = r["what"].as_str().expect("what");
        assert!(svg.contains(what), "no label {what:?} in the chart");
    }
    // Well-formed enough for a browser: every opened element is closed.
    let opened = svg.matches("<text").count();
    assert_eq!(opened, svg.matches("</text>").count());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_input_is_refused_before_measuring() {
    let o = bench(&["--persona", "no-such-persona"]);
    assert_eq!(o.status, 125, "{}", o.err());
    let o = bench(&["--svg", "/nonexistent-dir/chart.svg"]);
    assert_eq!(o.status, 125, "{}", o.err());
    assert!(o.err().contains("--svg"), "{}", o.err());
    assert!(o.out().is_empty(), "measured anyway: {}", o.out());
    // The hidden guest mode says what is wrong, with its own status.
    let g = run_cmd(
        {
            let mut c = Command::new(compatrun_bin());
            c.args(["bench-guest", "no-such-op", "5"]);
            c
        },
        None,
    );
    assert_eq!(g.status, 2, "{}", g.err());
    assert!(g.err().contains("unknown operation"), "{}", g.err());
}
