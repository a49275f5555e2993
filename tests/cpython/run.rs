//! Running CPython's suite: one module on one side (natively or under compatrun, all
//! its cases or only some), its JUnit report summarised into one outcome per case,
//! continuing past runs that die mid-module, and the check that the suite is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::allowed::{Side, ABSENT};
use crate::common::{run_cmd, scratch_dir, under_cmd};
use crate::{CASE_TIMEOUT, MAX_CONTINUATIONS, MODULES, PYTHON, RUN_LIMIT};

#[derive(Clone, Debug)]
pub struct Case {
    pub outcome: String,
    pub detail: String,
}

pub type Cases = BTreeMap<String, Case>;

pub fn outcome<'a>(cases: &'a Cases, id: &str) -> &'a str {
    cases.get(id).map_or(ABSENT, |c| c.outcome.as_str())
}

/// One `python3.11 -m test` run.
#[derive(Debug)]
pub struct Run {
    pub side: Side,
    pub module: &'static str,
    /// Exit code, 128+N for a signal, None if killed after [`RUN_LIMIT`].
    pub status: Option<i32>,
    pub elapsed: Duration,
    pub cases: Cases,
    /// compatrun's own messages ("compatrun: ...") from stderr.
    pub compatrun: Vec<String>,
    pub dir: PathBuf,
}

impl Run {
    pub fn status_text(&self) -> String {
        match self.status {
            Some(s) => format!("exit {s}"),
            None => format!("killed after {RUN_LIMIT:?}"),
        }
    }

    pub fn aborted(&self) -> Option<&str> {
        self.cases
            .iter()
            .find(|(_, c)| c.outcome == "aborted")
            .map(|(id, _)| id.as_str())
    }
}

pub fn summariser() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cpython_junit.py")
}

/// A regrtest `--matchfile` pattern for a case id.
pub fn pattern(id: &str) -> String {
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
pub fn logs_dir() -> PathBuf {
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
pub fn run_module(
    side: Side,
    module: &'static str,
    only: Option<&BTreeSet<String>>,
    tag: &str,
) -> Run {
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
            // The process group made for this run.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
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
pub fn run_cases(
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

/// Why the suite cannot run here (the interpreter or its test package is missing).
pub fn missing_prerequisite() -> Option<String> {
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
