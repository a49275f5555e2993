//! CPython's own regression tests for the system-call-heavy modules, run natively and
//! under compatrun, compared test case by test case.
//!
//! The suite is Debian's `libpython3.11-testsuite`, run with Debian's `/usr/bin/python3.11`
//! (a pyenv `python3` may come first on PATH and has no `test` package):
//!
//! ```text
//! python3.11 -m test -v --timeout 300 --junit-xml REPORT.xml MODULE
//! ```
//!
//! once per module and per side: natively, under `--kernel-persona host` (interception
//! on, nothing changed: the results must be identical to native), and under [`LEGACY`]
//! (the persona's kernel lacks newer calls, which answer ENOSYS: the results must be
//! native's except for the differences in [`allowed::ALLOWED`], each with its reason). Each run
//! is summarised by `tests/fixtures/cpython_junit.py` into one line per test case.
//!
//! Flakiness: a case whose outcome differs from what native implies is re-run on its own
//! ([`RERUNS`] times natively and [`RERUNS`] times under the persona). It counts as a
//! real difference unless every re-run agrees, or native itself produced the guest's
//! outcomes; tolerated cases are still listed. A run that dies mid-module (compatrun
//! aborting, a timeout) marks the running case `aborted`; the cases it never reached
//! are re-run in the same way, continuing past each further abort.
//!
//! Why `rhel7` and not `2.6`: Debian 12's glibc 2.36 supports kernels from 3.2 on; its
//! getrlimit() calls prlimit64 (2.6.36) with no fallback, so under `2.6`/`rhel6` regrtest
//! dies at start-up (`OSError: [Errno 38]` from `resource.getrlimit`), before any test
//! runs. That is the persona working as specified, but no comparison is possible; the
//! test checks it once, cheaply, and reports it. `rhel7` and `3.10` have the same
//! syscall table (only `uname -r` differs); `rhel7` is the one people deploy.
//!
//! Runtime (2 cores, release): about 90 s of test time per side (test_signal alone is
//! about 47 s, test_subprocess 25 s), 3 sides on 2 slots: about 2.5 minutes in all.
//!
//! Logs of every run stay in `target/tmp/cpython/run-PID/SIDE/MODULE-TAG/` (those of
//! finished invocations are removed when the next one starts).
//!
//! Run: `cargo test --release --test cpython -- --nocapture`
//!
//! Layout: `allowed` (the allowed differences and their reasons), `run` (one module on
//! one side, its JUnit summary), `settle` (the worker pool and the verdict on disputed
//! cases) and `report` (what is printed and the failure message); this file holds the
//! settings and the tests.

mod allowed;
#[path = "../common/mod.rs"]
mod common;
mod report;
mod run;
mod settle;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use allowed::{Side, ABSENT};
use common::{run_cmd, skip, under_cmd};
use run::{missing_prerequisite, outcome, run_cases, run_module, Cases, Run};
use settle::{pool, settle, settle_all, Job, Rerun, Verdict};

/// Debian's interpreter, which has the `test` package (`libpython3.11-testsuite`).
const PYTHON: &str = "/usr/bin/python3.11";

/// The modules, longest first (so the two slots finish together).
const MODULES: &[&str] = &[
    "test_signal",
    "test_subprocess",
    "test_threading",
    "test_time",
    "test_os",
    "test_select",
    "test_posix",
    "test_mmap",
    "test_fcntl",
];

/// The legacy persona compared, and the kernel version whose syscall table it has.
const LEGACY: (&str, (u32, u32)) = ("rhel7", (3, 10));

/// regrtest's per-test-case timeout, seconds (faulthandler dumps and exits).
const CASE_TIMEOUT: &str = "300";

/// A whole module run is killed after this long (then its running case is `aborted`).
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// Runs at a time (a 2-core CI machine).
const SLOTS: usize = 2;

/// How often a disputed case is re-run on each side.
const RERUNS: usize = 2;

/// How many times a re-run continues after the run died under a case.
const MAX_CONTINUATIONS: usize = 8;

#[test]
fn settling_disputed_cases() {
    let host = Side::Persona("host");
    let legacy = Side::Persona(LEGACY.0);
    let id = "test.test_x.T.test_y";
    let memfd = "test.test_os.MemfdCreateTests.test_memfd_create";
    let pass3 = ["pass", "pass", "pass"];
    // (why, side, case, native outcomes, guest outcomes, the run crashed, verdict)
    type Case<'a> = (
        &'a str,
        Side,
        &'a str,
        [&'a str; 3],
        [&'a str; 3],
        bool,
        Verdict,
    );
    let cases: [Case; 9] = [
        (
            "failed once, passed when re-run",
            host,
            id,
            pass3,
            ["fail", "pass", "pass"],
            false,
            Verdict::Flaky,
        ),
        (
            "fails every time under compatrun only",
            host,
            id,
            pass3,
            ["fail", "fail", "fail"],
            false,
            Verdict::Real,
        ),
        (
            "fails 2 in 3 under compatrun only: never hidden as flaky",
            host,
            id,
            pass3,
            ["fail", "pass", "fail"],
            false,
            Verdict::Real,
        ),
        (
            "native fails the same way now and then",
            host,
            id,
            ["pass", "fail", "pass"],
            ["fail", "pass", "fail"],
            false,
            Verdict::FlakyNative,
        ),
        (
            "not reached because the run died elsewhere",
            host,
            id,
            pass3,
            [ABSENT, "pass", "pass"],
            true,
            Verdict::NotReached,
        ),
        (
            "the run dies under this very case every time",
            host,
            id,
            pass3,
            ["aborted", "aborted", "aborted"],
            true,
            Verdict::Real,
        ),
        (
            "an allowed difference under the legacy persona",
            legacy,
            memfd,
            pass3,
            [ABSENT, "skip", "skip"],
            true,
            Verdict::NotReached,
        ),
        (
            "a difference the allow-list does not explain",
            legacy,
            memfd,
            pass3,
            ["fail", "fail", "fail"],
            false,
            Verdict::Real,
        ),
        (
            "under host nothing is allowed",
            host,
            memfd,
            pass3,
            ["skip", "skip", "skip"],
            false,
            Verdict::Real,
        ),
    ];
    let v = |s: &[&str]| s.iter().map(|o| o.to_string()).collect::<Vec<_>>();
    for (why, side, case, native, guest, crashed, verdict) in cases {
        assert_eq!(
            settle(side, case, &v(&native), &v(&guest), crashed),
            verdict,
            "{why}"
        );
    }
}

/// A case that skips for want of a call the persona's kernel lacks is expected to skip
/// whatever it did natively; other entries, and the host persona, allow nothing extra.
#[test]
fn a_native_failure_that_a_missing_call_turns_into_a_skip_is_expected() {
    let legacy = Side::Persona(LEGACY.0);
    let pidfd = "test.test_signal.PidfdSignalTest.test_pidfd_send_signal";
    for native in ["pass", "fail", "error", "skip"] {
        assert_eq!(legacy.expect(pidfd, native), "skip", "native {native}");
    }
    assert_eq!(Side::Persona("host").expect(pidfd, "fail"), "fail");
    let nofile = "test.test_subprocess.ProcessTestCase.test_no_leaking";
    assert_eq!(legacy.expect(nofile, "fail"), "fail");
    assert_eq!(legacy.expect(nofile, "skip"), "pass");
}

#[test]
fn cpython_regression_suite_same_as_native() {
    let test = "cpython_regression_suite_same_as_native";
    if let Some(reason) = missing_prerequisite() {
        skip(test, &reason);
        return;
    }
    // The allow-list is keyed by kernel version: make sure LEGACY still has that kernel.
    let desc = run_cmd(
        {
            let mut c = Command::new(common::compatrun_bin());
            c.args(["personas", LEGACY.0]);
            c
        },
        None,
    );
    let kernel: Option<(u32, u32)> = desc.out().lines().find_map(|l| {
        let v = l
            .strip_prefix("syscalls:")?
            .trim()
            .strip_prefix("as in Linux ")?;
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    });
    assert_eq!(
        kernel,
        Some(LEGACY.1),
        "persona {} no longer has the syscalls of Linux {}.{}: update LEGACY and ALLOWED.\n{}",
        LEGACY.0,
        LEGACY.1 .0,
        LEGACY.1 .1,
        desc.out()
    );
    let t0 = Instant::now();
    let sides = [Side::Native, Side::Persona("host"), Side::Persona(LEGACY.0)];
    let personas = &sides[1..];

    // The full runs: every module on every side, longest modules first.
    let mut jobs: Vec<Job<'static, Run>> = Vec::new();
    for &module in MODULES {
        for side in sides {
            jobs.push(Box::new(move || run_module(side, module, None, "full")));
        }
    }
    let full: BTreeMap<(Side, &str), Run> = pool(jobs)
        .into_iter()
        .map(|r| ((r.side, r.module), r))
        .collect();
    let full_wall = t0.elapsed();

    report::timings(&sides, &full, full_wall);

    // The 2.6 evidence: regrtest cannot start there (see the module docs).
    let probe = run_cmd(
        under_cmd(
            "2.6",
            &[
                PYTHON,
                "-m",
                "test",
                "--timeout",
                CASE_TIMEOUT,
                "test_fcntl",
            ],
        ),
        None,
    );
    let last = probe
        .err()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    println!(
        "[cpython] persona 2.6 not compared: regrtest under it exits {} ({}); glibc 2.36 needs \
         prlimit64 (2.6.36) for getrlimit",
        probe.status,
        last.trim()
    );

    // Case-level comparison with native.
    let mut expected_diffs: Vec<String> = Vec::new();
    let mut used_allow: BTreeSet<&str> = BTreeSet::new();
    // (persona, module) -> disputed ids
    let mut disputed: BTreeMap<(Side, &'static str), BTreeSet<String>> = BTreeMap::new();
    let mut module_level: Vec<String> = Vec::new();
    for &persona in personas {
        for &module in MODULES {
            let n = &full[&(Side::Native, module)];
            let g = &full[&(persona, module)];
            let ids: BTreeSet<&String> = n.cases.keys().chain(g.cases.keys()).collect();
            let mut any_diff = false;
            for id in ids {
                let (no, go) = (outcome(&n.cases, id), outcome(&g.cases, id));
                let exp = persona.expect(id, no);
                if go == exp {
                    if exp != no {
                        any_diff = true;
                        let a = persona.allowance(id, no).expect("an allow-list entry");
                        used_allow.insert(a.case);
                        expected_diffs.push(format!(
                            "  {}: {id}: native {no} -> {go}: {}",
                            persona.name(),
                            a.reason
                        ));
                    }
                } else {
                    any_diff = true;
                    disputed
                        .entry((persona, module))
                        .or_default()
                        .insert(id.clone());
                }
            }
            if !any_diff && n.status != g.status {
                module_level.push(format!(
                    "  {module}: native {} / {} {} with the same cases{}",
                    n.status_text(),
                    persona.name(),
                    g.status_text(),
                    if g.compatrun.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", g.compatrun.join(" | "))
                    }
                ));
            }
        }
    }

    // Re-run the disputed cases, natively and under the persona, RERUNS times each.
    let mut native_ids: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for ((_, module), ids) in &disputed {
        native_ids
            .entry(module)
            .or_default()
            .extend(ids.iter().cloned());
    }
    let mut rjobs: Vec<Job<'_, Rerun>> = Vec::new();
    for round in 0..RERUNS {
        for (&module, ids) in &native_ids {
            rjobs.push(Box::new(move || {
                let (c, t) = run_cases(Side::Native, module, ids, round);
                ((Side::Native, module), c, t)
            }));
        }
        for (&(persona, module), ids) in &disputed {
            rjobs.push(Box::new(move || {
                let (c, t) = run_cases(persona, module, ids, round);
                ((persona, module), c, t)
            }));
        }
    }
    let rerun_start = Instant::now();
    let mut reruns: BTreeMap<(Side, &str), Vec<Cases>> = BTreeMap::new();
    let mut rerun_time: BTreeMap<Side, f64> = BTreeMap::new();
    for (key, cases, t) in pool(rjobs) {
        reruns.entry(key).or_default().push(cases);
        *rerun_time.entry(key.0).or_default() += t.as_secs_f64();
    }
    if !disputed.is_empty() {
        println!(
            "[cpython] re-runs of disputed cases: {:.1} s wall; per side: {}",
            rerun_start.elapsed().as_secs_f64(),
            rerun_time
                .iter()
                .map(|(s, t)| format!("{} {t:.1} s", s.name()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let settled = settle_all(
        &disputed,
        &full,
        &reruns,
        &mut used_allow,
        &mut expected_diffs,
    );

    if let Some(msg) = report::conclude(
        personas,
        &full,
        &settled,
        &expected_diffs,
        &used_allow,
        &module_level,
        t0,
    ) {
        panic!("{msg}");
    }
}
