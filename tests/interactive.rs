//! compatrun in a terminal: an interactive shell under compatrun with job control, a
//! program under compatrun killed by Ctrl-C, and compatrun itself as a job of an
//! interactive outer shell (Ctrl-Z, `fg`, `bg`).
//!
//! The terminal is a pseudo-terminal driven by tests/fixtures/ptydrive.py (Python's `pty`
//! module): the program under test is a session leader with the pty as its controlling
//! terminal, keys are written to the master side, and the driver waits for expected
//! output or for a process to be in the terminal's foreground process group before it
//! types the next key (so a Ctrl-Z never races the shell). Every wait has a generous
//! bound that only guards against hangs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{compatrun_bin, skip};

/// Why the pty tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        for p in ["python3", "bash", "sleep", "cat"] {
            if !common::have(p) {
                return Some(format!("{p} is not installed"));
            }
        }
        let probe = common::run_cmd(
            {
                let mut c = Command::new("python3");
                c.args([
                    "-c",
                    "import os, pty; m, s = os.openpty(); os.close(m); os.close(s)",
                ]);
                c
            },
            None,
        );
        if probe.status != 0 {
            return Some(format!(
                "cannot open a pseudo-terminal with python3's pty module: {}",
                probe.err().trim()
            ));
        }
        None
    })
    .clone()
}

fn driver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ptydrive.py")
}

/// What the driver saw.
#[derive(Debug)]
struct Transcript {
    /// Everything the terminal showed (with the driver's last line).
    text: String,
    /// The program's exit status, if it exited and all steps succeeded.
    exit: Option<i32>,
    /// The step that failed (timed out), if one did.
    failed: Option<String>,
}

impl Transcript {
    fn ok(&self) -> bool {
        self.failed.is_none()
    }
}

/// Runs `argv` in a new pty, following `steps` (a JSON list, see ptydrive.py).
fn drive(steps: &str, argv: &[&str]) -> Transcript {
    let file = common::scratch_dir().join(format!("{}.json", common::unique_marker("steps")));
    std::fs::write(&file, steps).expect("write steps");
    let mut cmd = Command::new("python3");
    cmd.arg(driver_script())
        .arg(&file)
        .arg("--")
        .args(argv)
        .env("CR", compatrun_bin())
        .env("TERM", "dumb")
        .env("HISTFILE", "")
        .env_remove("PS1")
        .env_remove("PROMPT_COMMAND")
        .env_remove("BASH_ENV")
        .env_remove("ENV");
    let out = common::run_cmd(cmd, None);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        out.status,
        0,
        "the pty driver broke: {}\n{}",
        out.err(),
        out.out()
    );
    let text = out.out();
    let exit = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("PTYDRIVE EXIT "))
        .and_then(|s| s.trim().parse().ok());
    let failed = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("PTYDRIVE FAILED "))
        .map(str::to_string);
    Transcript { text, exit, failed }
}

/// Steps that wait for bash's first prompt and set a recognisable one. (The quotes keep
/// the echo of this very line from matching the new prompt; bracketed paste is turned
/// off so no escape sequences surround the input.)
const SHELL_SETUP: &str = r#"["expect", "\\$ |# "],
 ["send", "PS1='PROMPT''> '; bind 'set enable-bracketed-paste off' 2>/dev/null\n"],
 ["expect", "PROMPT> "]"#;

/// The steps with CMD replaced by the way to start a program: natively (empty) or under
/// compatrun (`"$CR" -k 2.6 -- `, CR being set in the shell's environment).
fn steps_for(template: &str, under: bool) -> String {
    let cmd = if under { r#"\"$CR\" -k 2.6 -- "# } else { "" };
    template
        .replace("SHELL_SETUP", SHELL_SETUP)
        .replace("CMD ", cmd)
}

/// Runs `template` in an interactive outer bash natively (which must succeed: if it does
/// not, the terminal here cannot do job control and the test is skipped) and with the
/// programs under compatrun. Returns the compatrun transcript.
fn native_then_under(test: &str, template: &str) -> Option<(Transcript, Transcript)> {
    if let Some(why) = unavailable() {
        skip(test, &why);
        return None;
    }
    let n = drive(&steps_for(template, false), &["bash", "--norc", "-i"]);
    if !n.ok() || n.exit != Some(0) {
        skip(
            test,
            &format!(
                "the scenario fails natively (no job control in this pty?):\n{}",
                n.text
            ),
        );
        return None;
    }
    let g = drive(&steps_for(template, true), &["bash", "--norc", "-i"]);
    Some((n, g))
}

/// `compatrun --kernel-persona 2.6 -- bash --norc -i` in a terminal: the shell sees
/// the persona, and its own job control works on its children (Ctrl-Z stops `sleep`,
/// `jobs` lists it, `bg` and `fg` resume it, Ctrl-C kills it with status 130).
#[test]
fn interactive_shell_under_compatrun_with_job_control() {
    if let Some(why) = unavailable() {
        return skip("interactive_shell_under_compatrun_with_job_control", &why);
    }
    let steps = r#"[SHELL_SETUP,
 ["send", "uname -r\n"], ["expect", "\r\n2\\.6\\.32\r\n"], ["expect", "PROMPT> "],
 ["send", "sleep 30\n"], ["wait_fg", "sleep"], ["send", "\u001a"],
 ["expect", "\\[1\\]\\+ +Stopped +sleep 30\r\n"], ["expect", "PROMPT> "],
 ["send", "jobs\n"], ["expect", "\\[1\\]\\+ +Stopped +sleep 30\r\n"], ["expect", "PROMPT> "],
 ["send", "bg\n"], ["expect", "\\[1\\]\\+ sleep 30 &\r\n"], ["expect", "PROMPT> "],
 ["send", "jobs\n"], ["expect", "\\[1\\]\\+ +Running +sleep 30 &\r\n"], ["expect", "PROMPT> "],
 ["send", "fg\n"], ["expect", "sleep 30\r\n"], ["wait_fg", "sleep"], ["send", "\u0003"],
 ["expect", "PROMPT> "],
 ["send", "echo done-$?\n"], ["expect", "\r\ndone-130\r\n"], ["expect", "PROMPT> "],
 ["send", "exit\n"], ["wait_exit"]]"#;
    let t = drive(
        &steps_for(steps, false),
        &[
            compatrun_bin().to_str().expect("utf-8"),
            "--kernel-persona",
            "2.6",
            "--",
            "bash",
            "--norc",
            "-i",
        ],
    );
    assert!(t.ok(), "failed at {:?}; transcript:\n{}", t.failed, t.text);
    assert_eq!(t.exit, Some(0), "{}", t.text);
}

/// `compatrun -- cat` straight in a terminal: typed lines come back, Ctrl-C kills cat
/// and compatrun reports 130; in a second run Ctrl-D ends cat normally (status 0).
#[test]
fn ctrl_c_and_ctrl_d_reach_a_guest_in_a_terminal() {
    if let Some(why) = unavailable() {
        return skip("ctrl_c_and_ctrl_d_reach_a_guest_in_a_terminal", &why);
    }
    let bin = compatrun_bin();
    let argv = [bin.to_str().expect("utf-8"), "-k", "2.6", "--", "cat"];
    let t = drive(
        r#"[["wait_fg", "cat"], ["send", "hello-cat\n"], ["expect", "hello-cat\r\nhello-cat\r\n"],
            ["send", "\u0003"], ["wait_exit"]]"#,
        &argv,
    );
    assert!(t.ok(), "failed at {:?}; transcript:\n{}", t.failed, t.text);
    assert_eq!(t.exit, Some(130), "{}", t.text);

    let t = drive(
        r#"[["wait_fg", "cat"], ["send", "line\n"], ["expect", "line\r\nline\r\n"],
            ["send", "\u0004"], ["wait_exit"]]"#,
        &argv,
    );
    assert!(t.ok(), "failed at {:?}; transcript:\n{}", t.failed, t.text);
    assert_eq!(t.exit, Some(0), "{}", t.text);
}

/// An interactive outer bash runs `compatrun -- sleep 30`; Ctrl-Z stops the guest, and
/// compatrun stops too, so bash reports the job stopped. `bg` and `fg` resume it, and
/// Ctrl-C ends it: `$?` is 130.
#[test]
fn ctrl_z_on_compatrun_stops_the_job_in_the_outer_shell() {
    let test = "ctrl_z_on_compatrun_stops_the_job_in_the_outer_shell";
    let template = r#"[SHELL_SETUP,
 ["send", "CMD sleep 30\n"], ["wait_fg", "sleep"], ["send", "\u001a"],
 ["expect", "\\[1\\]\\+ +Stopped +.*sleep 30\r\n"], ["expect", "PROMPT> "],
 ["send", "jobs\n"], ["expect", "\\[1\\]\\+ +Stopped +.*sleep 30\r\n"], ["expect", "PROMPT> "],
 ["send", "bg\n"], ["expect", "\\[1\\]\\+ .*sleep 30 &\r\n"], ["expect", "PROMPT> "],
 ["send", "jobs\n"], ["expect", "\\[1\\]\\+ +Running +.*sleep 30 &\r\n"], ["expect", "PROMPT> "],
 ["send", "fg\n"], ["expect", "sleep 30\r\n"], ["wait_fg", "sleep"], ["send", "\u0003"],
 ["expect", "PROMPT> "],
 ["send", "echo rc-$?\n"], ["expect", "\r\nrc-130\r\n"], ["expect", "PROMPT> "],
 ["send", "exit\n"], ["wait_exit"]]"#;
    let Some((_, g)) = native_then_under(test, template) else {
        return;
    };
    assert!(g.ok(), "failed at {:?}; transcript:\n{}", g.failed, g.text);
    assert_eq!(g.exit, Some(0), "{}", g.text);
}

/// After Ctrl-Z, the outer shell learns which signal stopped the job (WSTOPSIG):
/// natively SIGTSTP, so `jobs -l` says "Stopped"; it would say "Stopped (signal)" for a
/// SIGSTOP. compatrun must stop with the guest's stop signal.
#[test]
fn the_outer_shell_sees_the_guests_stop_signal() {
    let test = "the_outer_shell_sees_the_guests_stop_signal";
    let template = r#"[SHELL_SETUP,
 ["send", "CMD sleep 30\n"], ["wait_fg", "sleep"], ["send", "\u001a"],
 ["expect", "Stopped.*sleep 30\r\n"], ["expect", "PROMPT> "],
 ["send", "jobs -l\n"], ["expect", "\\[1\\]\\+ +\\d+ Stopped.*\r\n"], ["expect", "PROMPT> "],
 ["send", "fg\n"], ["expect", "sleep 30\r\n"], ["wait_fg", "sleep"], ["send", "\u0003"],
 ["expect", "PROMPT> "], ["send", "exit 0\n"], ["wait_exit"]]"#;
    let Some((n, g)) = native_then_under(test, template) else {
        return;
    };
    assert!(g.ok(), "failed at {:?}; transcript:\n{}", g.failed, g.text);
    // "[1]+ PID STATUS   COMMAND": the status between the pid and the command.
    let line = |t: &Transcript| {
        t.text.lines().find_map(|l| {
            let (pid, rest) = l.strip_prefix("[1]+ ")?.trim_start().split_once(' ')?;
            pid.parse::<u32>().ok()?;
            let end = rest.find("\"$CR\"").or_else(|| rest.find("sleep 30"))?;
            Some(rest[..end].trim().to_string())
        })
    };
    assert_eq!(line(&n).as_deref(), Some("Stopped"), "{}", n.text);
    assert_eq!(line(&g), line(&n), "`jobs -l` differs:\n{}", g.text);
}

/// A foreground job is stopped from outside (SIGSTOP to the guest, as `kill -STOP`
/// from another terminal would) and continued from outside (SIGCONT to the guest): the
/// job runs on and finishes, `wait` returns its status 0, and nothing stays stopped
/// (natively the shell shows the job stopped in between; see the ignored test below).
#[test]
fn a_job_stopped_and_continued_from_outside_runs_on() {
    let test = "a_job_stopped_and_continued_from_outside_runs_on";
    let template = r#"[SHELL_SETUP,
 ["send", "CMD sleep 2\n"], ["wait_fg", "sleep"], ["kill", "sleep", "SIGSTOP"],
 ["wait_state", "sleep", "Tt"], ["kill", "sleep", "SIGCONT"],
 ["send", "wait; echo waited-$?\n"], ["expect", "\nwaited-\\d+\r\n"], ["expect", "PROMPT> "],
 ["send", "jobs; echo jobs-listed\n"], ["expect", "\njobs-listed\r\n"], ["expect", "PROMPT> "],
 ["send", "kill -CONT %1 2>/dev/null; wait; exit 0\n"], ["wait_exit"]]"#;
    // What follows the `wait`: its status, and no stopped job in `jobs`.
    let after_wait = |t: &Transcript| {
        let w = t.text.find("\nwaited-").map_or("", |w| &t.text[w + 1..]);
        let status = w.lines().next().unwrap_or("").trim().to_string();
        let stopped = w.contains("Stopped") || t.text.contains("wait: warning");
        (status, stopped)
    };
    // Natively, bash sometimes notes the stop before the SIGCONT lands (a race of the
    // native shell, not of compatrun): then the pair shows nothing and is run again.
    let mut pair = None;
    for _ in 0..3 {
        let Some((n, g)) = native_then_under(test, template) else {
            return;
        };
        let clean = after_wait(&n) == ("waited-0".to_string(), false);
        pair = Some((n, g));
        if clean {
            break;
        }
    }
    let (n, g) = pair.expect("at least one run");
    assert_eq!(
        after_wait(&n),
        ("waited-0".to_string(), false),
        "{}",
        n.text
    );
    assert!(g.ok(), "failed at {:?}; transcript:\n{}", g.failed, g.text);
    assert_eq!(
        after_wait(&g),
        after_wait(&n),
        "the job did not run on after SIGCONT:\n{}",
        g.text
    );
    assert_eq!(g.exit, Some(0), "{}", g.text);
}

/// Natively, a foreground job stopped by a SIGSTOP from outside is reported "Stopped"
/// by the shell, which takes the terminal back. compatrun does not mirror such a stop
/// (it could not notice a SIGCONT sent to the guest alone while stopped itself), so the
/// shell keeps waiting until the guest is continued. A known limitation, kept here to
/// be run by whoever lifts it: `cargo test --test interactive -- --ignored`.
#[test]
#[ignore = "known limitation: a SIGSTOP from outside is not mirrored to the outer shell"]
fn a_job_stopped_from_outside_is_reported_stopped() {
    let test = "a_job_stopped_from_outside_is_reported_stopped";
    let template = r#"[SHELL_SETUP,
 ["send", "CMD sleep 2\n"], ["wait_fg", "sleep"], ["kill", "sleep", "SIGSTOP"],
 ["expect", "Stopped.*sleep 2\r\n", 20], ["expect", "PROMPT> "],
 ["kill", "sleep", "SIGCONT"],
 ["send", "wait; echo waited-$?\n"], ["expect", "waited-\\d+\r\n"], ["expect", "PROMPT> "],
 ["send", "kill -CONT %1 2>/dev/null; wait; exit 0\n"], ["wait_exit"]]"#;
    let Some((_, g)) = native_then_under(test, template) else {
        return;
    };
    assert!(g.ok(), "failed at {:?}; transcript:\n{}", g.failed, g.text);
    assert!(
        g.text.contains("Done") && !g.text.contains("wait: warning"),
        "{}",
        g.text
    );
}

/// A background job that reads the terminal gets SIGTTIN and stops: natively `jobs`
/// shows it "Stopped" and `fg` resumes it in the foreground, where it reads what is
/// typed. The same must hold with the job run under compatrun.
#[test]
fn a_background_guest_reading_the_terminal_stops_its_job() {
    let test = "a_background_guest_reading_the_terminal_stops_its_job";
    let template = r#"[SHELL_SETUP,
 ["send", "CMD cat &\n"], ["expect", "PROMPT> "], ["wait_state", "cat", "Tt"],
 ["send", "jobs\n"], ["expect", "\\[1\\]\\+ +[A-Z][a-z]+.*cat.*\r\n"], ["expect", "PROMPT> "],
 ["send", "fg\n"], ["wait_fg", "cat"], ["send", "xyz\n"], ["expect", "xyz\r\nxyz\r\n", 20],
 ["send", "\u0004"], ["expect", "PROMPT> "],
 ["send", "echo rc-$?\n"], ["expect", "\r\nrc-0\r\n"], ["expect", "PROMPT> "],
 ["send", "exit\n"], ["wait_exit"]]"#;
    let Some((n, g)) = native_then_under(test, template) else {
        return;
    };
    let jobs = |t: &Transcript| {
        t.text
            .lines()
            .find(|l| l.starts_with("[1]+ ") && l.contains("cat"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
    };
    assert_eq!(jobs(&n).as_deref(), Some("Stopped"), "{}", n.text);
    assert_eq!(
        jobs(&g),
        jobs(&n),
        "the outer shell does not see the job stopped:\n{}",
        g.text
    );
    assert!(
        g.ok(),
        "failed at {:?} (fg did not resume the guest); transcript:\n{}",
        g.failed,
        g.text
    );
    assert_eq!(g.exit, Some(0), "{}", g.text);
}
