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
//! native's except for the differences in [`ALLOWED`], each with its reason). Each run
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

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{run_cmd, scratch_dir, skip, under_cmd};

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

/// A difference a legacy persona implies: the case's outcome is `guest` instead of
/// `native` under the personas `when` selects.
struct Allowed {
    /// A test id, or a prefix ending in `*`.
    case: &'static str,
    when: When,
    native: &'static str,
    guest: &'static str,
    reason: &'static str,
}

/// Outcome names: those of cpython_junit.py, and `absent` (no such case in the run).
const ABSENT: &str = "absent";

const ALLOWED: &[Allowed] = &[
    Allowed {
        case: "test.test_os.FileTests.test_copy_file_range",
        when: When::KernelBefore(4, 5),
        native: "pass",
        guest: "skip",
        reason: "uses copy_file_range (4.5): ENOSYS, the test skips",
    },
    Allowed {
        case: "test.test_os.FileTests.test_copy_file_range_offset",
        when: When::KernelBefore(4, 5),
        native: "pass",
        guest: "skip",
        reason: "uses copy_file_range (4.5): ENOSYS, the test skips",
    },
    Allowed {
        case: "test.test_os.GetRandomTests.setUpClass",
        when: When::KernelBefore(3, 17),
        native: ABSENT,
        guest: "skip",
        reason: "getrandom (3.17): ENOSYS, setUpClass skips the whole class",
    },
    Allowed {
        case: "test.test_os.GetRandomTests.test_*",
        when: When::KernelBefore(3, 17),
        native: "pass",
        guest: ABSENT,
        reason: "getrandom (3.17): the class is skipped in setUpClass, which the junit \
                 report does not list case by case",
    },
    Allowed {
        case: "test.test_os.MemfdCreateTests.test_memfd_create",
        when: When::KernelBefore(3, 17),
        native: "pass",
        guest: "skip",
        reason: "memfd_create (3.17): requires_linux_version(3, 17) reads uname -r and skips",
    },
    Allowed {
        case: "test.test_posix.PosixTester.test_pidfd_open",
        when: When::KernelBefore(5, 3),
        native: "pass",
        guest: "skip",
        reason: "uses pidfd_open (5.3): ENOSYS, the test skips",
    },
    Allowed {
        case: "test.test_posix.PosixTester.test_preadv_flags",
        when: When::KernelBefore(4, 6),
        native: "pass",
        guest: "skip",
        reason: "preadv2 (4.6) with RWF_HIPRI: ENOSYS, glibc reports EOPNOTSUPP, the test skips",
    },
    Allowed {
        case: "test.test_signal.PidfdSignalTest.test_pidfd_send_signal",
        when: When::KernelBefore(5, 1),
        native: "pass",
        guest: "skip",
        reason: "uses pidfd_send_signal (5.1): ENOSYS, the test skips",
    },
    // Legacy personas start the guest with the soft RLIMIT_NOFILE lowered to 1024, the
    // old kernels' default (compatrun --nofile). Where the host's soft limit is higher,
    // the test can reach EMFILE in its 1026 opens only under the persona.
    Allowed {
        case: "test.test_subprocess.ProcessTestCase.test_no_leaking",
        when: When::Legacy,
        native: "skip",
        guest: "pass",
        reason: "soft RLIMIT_NOFILE 1024 under legacy personas: natively (higher limit) the \
                 test skips, 'failed to reach the file descriptor limit (tried 1026)'",
    },
    Allowed {
        case: "test.test_subprocess.ProcessTestCaseNoPoll.test_no_leaking",
        when: When::Legacy,
        native: "skip",
        guest: "pass",
        reason: "soft RLIMIT_NOFILE 1024 under legacy personas: natively (higher limit) the \
                 test skips, 'failed to reach the file descriptor limit (tried 1026)'",
    },
];

/// Which personas an [`Allowed`] difference applies to.
#[derive(Clone, Copy, Debug)]
enum When {
    /// Personas whose kernel is older than this version (what the case needs came then).
    KernelBefore(u32, u32),
    /// Every persona with a kernel version (everything but `host`).
    Legacy,
}

impl Allowed {
    fn applies(&self, kernel: (u32, u32)) -> bool {
        match self.when {
            When::KernelBefore(major, minor) => kernel < (major, minor),
            When::Legacy => true,
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self.case.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => id == self.case,
        }
    }
}

/// Who runs the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Native,
    Persona(&'static str),
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Persona(p) => p,
        }
    }

    /// The allow-list entries that apply under this side.
    fn allowed(self) -> Vec<&'static Allowed> {
        match self {
            Side::Persona(p) if p == LEGACY.0 => {
                ALLOWED.iter().filter(|a| a.applies(LEGACY.1)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The allow-list entry that changes case `id`'s outcome `native` on this side.
    ///
    /// An entry for a call the persona's kernel lacks that makes the case skip covers
    /// whatever the case did natively (pass, fail or error): the test never reaches what
    /// it would have failed at, so a native failure turned into that skip is expected
    /// too (natively test_pidfd_send_signal fails when SIGINT is ignored, for one).
    fn allowance(self, id: &str, native: &str) -> Option<&'static Allowed> {
        self.allowed().into_iter().find(|a| {
            a.matches(id)
                && (a.native == native
                    || (matches!(a.when, When::KernelBefore(..))
                        && a.guest == "skip"
                        && a.native == "pass"
                        && ["fail", "error"].contains(&native)))
        })
    }

    /// The outcome this side should have where native had `native`.
    fn expect<'a>(self, id: &str, native: &'a str) -> &'a str {
        self.allowance(id, native).map_or(native, |a| a.guest)
    }
}

#[derive(Clone, Debug)]
struct Case {
    outcome: String,
    detail: String,
}

type Cases = BTreeMap<String, Case>;

fn outcome<'a>(cases: &'a Cases, id: &str) -> &'a str {
    cases.get(id).map_or(ABSENT, |c| c.outcome.as_str())
}

/// One `python3.11 -m test` run.
#[derive(Debug)]
struct Run {
    side: Side,
    module: &'static str,
    /// Exit code, 128+N for a signal, None if killed after [`RUN_LIMIT`].
    status: Option<i32>,
    elapsed: Duration,
    cases: Cases,
    /// compatrun's own messages ("compatrun: ...") from stderr.
    compatrun: Vec<String>,
    dir: PathBuf,
}

impl Run {
    fn status_text(&self) -> String {
        match self.status {
            Some(s) => format!("exit {s}"),
            None => format!("killed after {RUN_LIMIT:?}"),
        }
    }

    fn aborted(&self) -> Option<&str> {
        self.cases
            .iter()
            .find(|(_, c)| c.outcome == "aborted")
            .map(|(id, _)| id.as_str())
    }
}

fn summariser() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cpython_junit.py")
}

/// A regrtest `--matchfile` pattern for a case id.
fn pattern(id: &str) -> String {
    for fixture in [
        ".setUpClass",
        ".tearDownClass",
        ".setUpModule",
        ".tearDownModule",
    ] {
        if let Some(target) = id.strip_suffix(fixture) {
            return format!("{target}.*");
        }
    }
    id.to_string()
}

/// This invocation's log directory; those of invocations no longer running are removed.
fn logs_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = scratch_dir().join("cpython");
        if let Ok(entries) = fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stale = match name.strip_prefix("run-") {
                    Some(pid) => !Path::new("/proc").join(pid).exists(),
                    None => true,
                };
                if stale {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        base.join(format!("run-{}", std::process::id()))
    })
    .clone()
}

/// Runs `module` on `side` (only the cases `only` if given) in a fresh directory.
fn run_module(side: Side, module: &'static str, only: Option<&BTreeSet<String>>, tag: &str) -> Run {
    let dir = logs_dir().join(side.name()).join(format!("{module}-{tag}"));
    let _ = fs::remove_dir_all(&dir);
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).expect("create run dir");
    let xml = dir.join("report.xml");
    // Through `env --default-signal`: every signal's disposition is reset to the default
    // on both sides, so a run started from a nohup'd or background shell (SIGINT and
    // SIGQUIT ignored) or a CI runner that ignores signals compares the same. (Rust's
    // Command already empties the signal mask and resets SIGPIPE.)
    let mut argv: Vec<String> = vec![
        "env".into(),
        "--default-signal".into(),
        PYTHON.into(),
        "-m".into(),
        "test".into(),
        "-v".into(),
        "--timeout".into(),
        CASE_TIMEOUT.into(),
        "--junit-xml".into(),
        xml.to_str().expect("utf-8 path").into(),
    ];
    if let Some(ids) = only {
        let matchfile = dir.join("match.txt");
        let text: String = ids.iter().map(|id| pattern(id) + "\n").collect();
        fs::write(&matchfile, text).expect("write matchfile");
        argv.push("--matchfile".into());
        argv.push(matchfile.to_str().expect("utf-8 path").into());
    }
    argv.push(module.into());
    let mut cmd = match side {
        Side::Native => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Side::Persona(p) => under_cmd(p, &argv),
    };
    let stdout = dir.join("stdout.log");
    let stderr = dir.join("stderr.log");
    cmd.current_dir(&dir)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("create stdout.log"))
        .stderr(File::create(&stderr).expect("create stderr.log"))
        // Its own process group, so a run that overstays can be killed whole.
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {argv:?}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
        }
        if start.elapsed() > RUN_LIMIT {
            let pgid = i32::try_from(child.id()).expect("pid fits i32");
            // SAFETY: kill(2) on the process group we created for this run.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();

    let errtext = fs::read_to_string(&stderr).unwrap_or_default();
    let compatrun: Vec<String> = errtext
        .lines()
        .filter(|l| l.contains("compatrun:"))
        .map(|l| l.trim().to_string())
        .collect();
    let mut summary = Command::new(PYTHON);
    summary.arg(summariser()).arg(&xml).arg(&stdout);
    let s = run_cmd(summary, None);
    assert_eq!(
        s.status,
        0,
        "cpython_junit.py failed on {}:\n{}",
        dir.display(),
        s.err()
    );
    let mut run = Run {
        side,
        module,
        status,
        elapsed,
        cases: Cases::new(),
        compatrun,
        dir,
    };
    let ended = {
        let last = errtext
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let why = if run.compatrun.is_empty() {
            last.to_string()
        } else {
            run.compatrun.join(" | ")
        };
        format!("{}; {why}; logs: {}", run.status_text(), run.dir.display())
    };
    for line in s.out().lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(o), Some(id)) = (f.next(), f.next()) else {
            continue;
        };
        let mut detail = f.next().unwrap_or("").to_string();
        if o == "aborted" {
            detail = format!("{detail} ({ended})");
        }
        run.cases.insert(
            id.to_string(),
            Case {
                outcome: o.to_string(),
                detail,
            },
        );
    }
    println!(
        "[cpython] {:<7} {:<16} {:<12} {:>5} cases {:>7.1} s{}",
        side.name(),
        module,
        run.status_text(),
        run.cases.len(),
        elapsed.as_secs_f64(),
        if tag == "full" {
            String::new()
        } else {
            format!("  ({tag}, {} asked)", only.map_or(0, BTreeSet::len))
        }
    );
    run
}

/// Re-runs the cases `ids` of `module` on `side`; when a run dies under a case, carries
/// on with the cases it never reached. Cases that never report stay absent.
fn run_cases(
    side: Side,
    module: &'static str,
    ids: &BTreeSet<String>,
    round: usize,
) -> (Cases, Duration) {
    let mut want = ids.clone();
    let mut got = Cases::new();
    let mut spent = Duration::ZERO;
    for attempt in 0..MAX_CONTINUATIONS {
        let run = run_module(
            side,
            module,
            Some(&want),
            &format!("rerun{round}.{attempt}"),
        );
        spent += run.elapsed;
        let mut progressed = false;
        for (id, case) in &run.cases {
            if want.remove(id) {
                got.insert(id.clone(), case.clone());
                progressed = true;
            }
        }
        if want.is_empty() || run.aborted().is_none() || !progressed {
            break;
        }
    }
    (got, spent)
}

/// A unit of work for [`pool`].
type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// What a re-run job returns: which side and module, the cases it settled, its time.
type Rerun = ((Side, &'static str), Cases, Duration);

/// Runs `jobs` on [`SLOTS`] threads, in order of the list; returns results in that order.
fn pool<T: Send>(jobs: Vec<Job<'_, T>>) -> Vec<T> {
    let n = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let results = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<T>>>());
    std::thread::scope(|s| {
        for _ in 0..SLOTS {
            s.spawn(|| loop {
                let next = queue.lock().expect("queue").next();
                let Some((i, job)) = next else { break };
                let r = job();
                results.lock().expect("results")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// Why the suite cannot run here (the interpreter or its test package is missing).
fn missing_prerequisite() -> Option<String> {
    if !Path::new(PYTHON).is_file() {
        return Some(format!(
            "{PYTHON} is not installed (Debian package python3.11)"
        ));
    }
    let mods: Vec<String> = MODULES.iter().map(|m| format!("'test.{m}'")).collect();
    let probe = format!(
        "import importlib.util, sys\n\
         def absent(m):\n\
         \x20   try:\n\
         \x20       return importlib.util.find_spec(m) is None\n\
         \x20   except ImportError:\n\
         \x20       return True\n\
         missing = [m for m in ['test.libregrtest', {}] if absent(m)]\n\
         print(' '.join(missing)); sys.exit(1 if missing else 0)",
        mods.join(", ")
    );
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", &probe]);
    let o = run_cmd(cmd, None);
    (o.status != 0).then(|| {
        format!(
            "CPython's test package is missing ({} not found{}): install libpython3.11-testsuite \
             (scripts/test-deps.sh)",
            o.out().trim(),
            if o.err().trim().is_empty() {
                String::new()
            } else {
                format!("; {}", o.err().trim())
            }
        )
    })
}

/// How a disputed case was settled.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Verdict {
    /// Differs consistently: a real difference.
    Real,
    /// Differed in the full run, agreed in every re-run.
    Flaky,
    /// Native itself produced the guest's outcomes.
    FlakyNative,
    /// Not reached because the full guest run died under another case; agreed in re-runs.
    NotReached,
}

/// Settles a disputed case from its outcomes: `native` and `guest` hold the full run's
/// first, then the re-runs' (the same number on both sides). `full_run_aborted`: the
/// guest's full run of the module died under some case.
fn settle(
    persona: Side,
    id: &str,
    native: &[String],
    guest: &[String],
    full_run_aborted: bool,
) -> Verdict {
    let agreed = (1..guest.len()).all(|i| guest[i] == persona.expect(id, &native[i]));
    let native_set: BTreeSet<&str> = native.iter().map(|o| persona.expect(id, o)).collect();
    if agreed && guest[0] == ABSENT && full_run_aborted {
        Verdict::NotReached
    } else if agreed {
        Verdict::Flaky
    } else if guest.iter().all(|o| native_set.contains(o.as_str())) {
        Verdict::FlakyNative
    } else {
        Verdict::Real
    }
}

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

struct Dispute {
    persona: Side,
    module: &'static str,
    id: String,
    native: Vec<String>,
    guest: Vec<String>,
    expected: String,
    detail: String,
    verdict: Verdict,
}

impl Dispute {
    fn line(&self) -> String {
        let mut s = format!(
            "  {}: native {} / {} {} (expected {})",
            self.id,
            self.native.join(","),
            self.persona.name(),
            self.guest.join(","),
            self.expected
        );
        if !self.detail.is_empty() {
            let _ = write!(s, "\n      {}", self.detail);
        }
        s
    }
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

    // Settle each disputed case.
    let mut settled: Vec<Dispute> = Vec::new();
    for (&(persona, module), ids) in &disputed {
        let n = &full[&(Side::Native, module)];
        let g = &full[&(persona, module)];
        let nr = &reruns[&(Side::Native, module)];
        let gr = &reruns[&(persona, module)];
        for id in ids {
            let native: Vec<String> = std::iter::once(outcome(&n.cases, id))
                .chain(nr.iter().map(|c| outcome(c, id)))
                .map(String::from)
                .collect();
            let guest: Vec<String> = std::iter::once(outcome(&g.cases, id))
                .chain(gr.iter().map(|c| outcome(c, id)))
                .map(String::from)
                .collect();
            let expected = persona.expect(id, &native[0]).to_string();
            let verdict = settle(persona, id, &native, &guest, g.aborted().is_some());
            if verdict != Verdict::Real {
                // An allowed difference the full run did not show (it never got there).
                let seen = (1..guest.len()).find_map(|i| {
                    persona
                        .allowance(id, &native[i])
                        .filter(|a| guest[i] == a.guest)
                        .map(|a| (a, &native[i]))
                });
                if let Some((a, no)) = seen {
                    used_allow.insert(a.case);
                    expected_diffs.push(format!(
                        "  {}: {id}: native {no} -> {}: {} (seen in the re-runs)",
                        persona.name(),
                        a.guest,
                        a.reason
                    ));
                }
            }
            // The most telling detail: the guest's first one.
            let detail = std::iter::once(g.cases.get(id))
                .chain(gr.iter().map(|c| c.get(id)))
                .flatten()
                .map(|c| c.detail.clone())
                .find(|d| !d.is_empty())
                .unwrap_or_default();
            settled.push(Dispute {
                persona,
                module,
                id: id.clone(),
                native,
                guest,
                expected,
                detail,
                verdict,
            });
        }
    }
    settled.sort_by(|a, b| {
        (a.verdict, a.persona, a.module, &a.id).cmp(&(b.verdict, b.persona, b.module, &b.id))
    });

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
        return;
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
    panic!("{msg}");
}
