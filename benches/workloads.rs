//! Whole-process workloads, native and under compatrun (personas `host` and `2.6`).
//!
//! Each sample is one run of the whole command, wall time from spawn to exit (compatrun's
//! own start-up included). The workloads:
//! - `sh-300-true`: a shell loop running `/bin/true` 300 times (fork + exec heavy).
//! - `tar-doc`: `tar -cf - /usr/share/doc | cat` (tar skips reading when it writes to
//!   /dev/null, hence the pipe).
//! - `find-usr`: `find /usr` (stat/getdents heavy).
//! - `python-imports`: `python3 -c 'import json, subprocess, threading, decimal'`.
//! - `gcc-O2`: `gcc -O2 -c` of a generated C file of about 1100 lines.
//!
//! Run: `cargo bench --bench workloads` (about 2 minutes). At the end, every
//! workload is run again in interleaved rounds (native, host, 2.6, native, ...), so a
//! burst of load elsewhere on a shared machine hits all modes alike, and a markdown table
//! of the medians and their ratios to native is printed.

mod common;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{record, Mode, MODES};
use criterion::{Criterion, SamplingMode};

/// Rounds of the interleaved summary.
const ROUNDS: usize = 7;

/// A workload: its benchmark group name and its argv.
struct Workload {
    name: &'static str,
    argv: Vec<OsString>,
}

/// `/usr/bin/python3` if there is one (a pyenv or venv shim in PATH would add its own
/// start-up to every run), else `python3` from PATH.
fn python3() -> OsString {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

/// A C file of about 1100 lines that `gcc -O2` needs about half a second for.
fn generate_c(dir: &Path) -> std::path::PathBuf {
    let mut src = String::from("#include <stddef.h>\n#include <string.h>\n\n");
    for i in 0..40 {
        let _ = write!(
            src,
            r#"struct rec{i} {{ int key; double weight; char name[16]; struct rec{i} *next; }};

static int cmp{i}(const struct rec{i} *a, const struct rec{i} *b) {{
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return strcmp(a->name, b->name);
}}

struct rec{i} *sort{i}(struct rec{i} *head) {{
    struct rec{i} *sorted = NULL;
    while (head) {{
        struct rec{i} *n = head, **p = &sorted;
        head = head->next;
        while (*p && cmp{i}(*p, n) < 0) p = &(*p)->next;
        n->next = *p;
        *p = n;
    }}
    return sorted;
}}

double sum{i}(const struct rec{i} *r, size_t limit) {{
    double s = 0;
    for (size_t k = 0; r && k < limit; r = r->next, k++) {{
        s += r->weight * (double)(k % {m} + 1);
        if (s > 1e9) s /= {i} + 2.0;
    }}
    return s;
}}

"#,
            m = i % 7 + 2
        );
    }
    let path = dir.join("workload.c");
    std::fs::write(&path, src).expect("write the generated C file");
    path
}

fn workloads(scratch: &Path) -> Vec<Workload> {
    let c_file = generate_c(scratch);
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    let mut gcc = os(&["gcc", "-O2", "-c", "-o"]);
    gcc.push(scratch.join("workload.o").into());
    gcc.push(c_file.into());
    vec![
        Workload {
            name: "sh-300-true",
            argv: os(&[
                "sh",
                "-c",
                "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done",
            ]),
        },
        Workload {
            name: "tar-doc",
            argv: os(&[
                "sh",
                "-c",
                "tar -cf - /usr/share/doc 2>/dev/null | cat >/dev/null",
            ]),
        },
        Workload {
            name: "find-usr",
            argv: os(&["find", "/usr"]),
        },
        Workload {
            name: "python-imports",
            argv: vec![
                python3(),
                "-c".into(),
                "import json, subprocess, threading, decimal".into(),
            ],
        },
        Workload {
            name: "gcc-O2",
            argv: gcc,
        },
    ]
}

/// Runs `w` once in `mode`; the wall time from spawn to exit.
fn run(w: &Workload, mode: Mode) -> Duration {
    let start = Instant::now();
    let status = mode
        .command(&w.argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot start {} ({mode:?}): {e}", w.name));
    let elapsed = start.elapsed();
    assert!(status.success(), "{} ({mode:?}) failed: {status}", w.name);
    elapsed
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    let scratch = common::scratch_dir("workloads");
    let compatrun = common::compatrun_works();
    let modes: Vec<Mode> = MODES
        .into_iter()
        .filter(|m| compatrun || *m == Mode::Native)
        .collect();
    let all = workloads(&scratch);
    for w in &all {
        // Fails loudly if a workload cannot run here at all (not a timing check).
        for &mode in &modes {
            run(w, mode);
        }
    }
    for w in &all {
        let mut group = c.benchmark_group(w.name);
        group.sampling_mode(SamplingMode::Flat);
        for &mode in &modes {
            let id = mode.id();
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run(w, mode);
                    }
                    record(w.name, &id, total, iters);
                    total
                });
            });
        }
        group.finish();
    }
    c.final_summary();
    if common::measuring() {
        let seen = common::groups_seen();
        let mut cases = Vec::new();
        for w in all.iter().filter(|w| seen.iter().any(|g| g == w.name)) {
            for &mode in &modes {
                cases.push(common::Case {
                    group: w.name,
                    id: mode.id(),
                    run: Box::new(move |n| (0..n).map(|_| run(w, mode)).sum()),
                });
            }
        }
        // One run per case per round (a workload takes far longer than the target).
        let table = common::interleaved_rounds(&cases, ROUNDS, Duration::from_millis(1));
        let columns: Vec<String> = modes.into_iter().map(Mode::id).collect();
        let note = format!(
            "Median wall time of one whole run over {ROUNDS} interleaved rounds (each \
             round runs every mode once), ratio to the first column."
        );
        common::print_table(
            "workloads: whole process, native vs compatrun",
            &note,
            &columns,
            &table,
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
