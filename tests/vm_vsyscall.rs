//! The legacy vsyscall page on a host booted with `vsyscall=none`, proven in a VM: Debian's
//! own 6.1 kernel under QEMU (software emulation) via `tests/vm/run-in-vm.sh`.
//!
//! Natively, a static program calling 0xffffffffff600000/400/800 (as glibc < 2.14 did)
//! dies with SIGSEGV there; under compatrun the three calls must work.
//!
//! Each test boots the VM once and runs several steps in it; the rig installs QEMU and
//! fetches the kernel into target/vm-cache on first use. It skips (visibly) only when
//! QEMU or the kernel cannot be had on this machine at all.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::{compatrun_bin, fixture, run_cmd, skip, Outcome};

/// The rig script.
fn rig() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/run-in-vm.sh")
}

/// Writes a line where the test runner shows it even for passing tests.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Installs/fetches what the rig needs. `Err(reason)` when QEMU or the kernel cannot be
/// had here (the rig's exit status 77); any other failure of the rig panics.
fn prepare() -> Result<(), String> {
    let mut cmd = Command::new("bash");
    cmd.arg(rig()).arg("--prepare");
    let o = run_cmd(cmd, None);
    match o.status {
        0 => Ok(()),
        77 => Err(format!("the VM rig cannot run here: {}", o.err().trim())),
        s => panic!(
            "run-in-vm.sh --prepare failed with {s}:\n{}\n{}",
            o.out(),
            o.err()
        ),
    }
}

/// The static fixture, compiled once: `common::fixture` names its temporary file after the
/// process, so two tests of one binary compiling the same fixture at once would collide.
fn static_fixture() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| fixture("vsyscall", &["-static"]))
        .clone()
}

/// What one step printed (stdout and stderr merged) and its shell status.
#[derive(Debug)]
struct Step {
    out: String,
    status: i32,
}

/// Boots the VM once with `vsyscall` (the static fixture) and compatrun (with its
/// libraries) in /work, runs each `(name, shell command)` in order and returns every
/// step's output and status, plus the whole run.
fn boot(test: &str, steps: &[(&str, &str)]) -> (HashMap<String, Step>, Outcome) {
    let vsyscall = static_fixture();
    let mut script = String::new();
    for (name, cmd) in steps {
        script.push_str(&format!(
            "echo '<<<{name}'; ( {cmd} ) 2>&1; echo \">>>{name} $?\"; "
        ));
    }
    let mut cmd = Command::new("bash");
    cmd.arg(rig())
        .arg("--add")
        .arg(format!("{}:vsyscall", vsyscall.display()))
        .arg("--elf")
        .arg(format!("{}:compatrun", compatrun_bin().display()))
        .arg("--")
        .arg(&script);
    let start = Instant::now();
    let run = run_cmd(cmd, None);
    let took = start.elapsed();
    let vm = run
        .err()
        .lines()
        .find_map(|l| l.strip_prefix("run-in-vm: vm ran ").map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    note(&format!(
        "{test}: VM boot+run {vm} (whole rig call {:.1}s)",
        took.as_secs_f64()
    ));
    assert_eq!(
        run.status,
        0,
        "the VM run failed (its last step's status, or 124/125 from the rig):\n{}\n{}",
        run.out(),
        run.err()
    );
    let out = run.out();
    let mut found = HashMap::new();
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("<<<") else {
            continue;
        };
        let end = format!(">>>{name} ");
        let mut body = String::new();
        let mut status = None;
        for l in lines.by_ref() {
            if let Some(s) = l.strip_prefix(&end) {
                status = s.trim().parse().ok();
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let status = status.unwrap_or_else(|| panic!("step {name} did not finish:\n{out}"));
        found.insert(name.to_owned(), Step { out: body, status });
    }
    for (name, _) in steps {
        assert!(found.contains_key(*name), "step {name} missing:\n{out}");
    }
    (found, run)
}

/// The fixture natively: SIGSEGV at the first call, nothing returned.
fn assert_native_segv(step: &Step) {
    assert_eq!(
        step.status, 139,
        "natively under vsyscall=none the fixture must die with SIGSEGV:\n{}",
        step.out
    );
    assert!(
        !step.out.contains(" ok"),
        "a legacy call returned natively under vsyscall=none:\n{}",
        step.out
    );
}

/// The rig itself: the kernel really runs with vsyscall=none, the fixture really faults,
/// and compatrun (dynamically linked, copied with its libraries) runs in the VM.
#[test]
fn rig_boots_with_vsyscall_none_and_runs_compatrun() {
    const TEST: &str = "rig_boots_with_vsyscall_none_and_runs_compatrun";
    if let Err(reason) = prepare() {
        skip(TEST, &reason);
        return;
    }
    let (s, _) = boot(
        TEST,
        &[
            ("cmdline", "cat /proc/cmdline"),
            ("native", "./vsyscall all"),
            ("uname", "./compatrun --kernel-persona 2.6 -- uname -r"),
        ],
    );
    assert!(
        s["cmdline"]
            .out
            .split_whitespace()
            .any(|w| w == "vsyscall=none"),
        "{:?}",
        s["cmdline"]
    );
    assert_native_segv(&s["native"]);
    assert_eq!(s["uname"].status, 0, "{:?}", s["uname"]);
    assert_eq!(s["uname"].out.trim(), "2.6.32", "{:?}", s["uname"]);
}

/// The point of it all: under compatrun the three legacy calls return, with values that
/// agree with the real syscalls.
#[test]
fn compatrun_emulates_the_vsyscall_page_under_vsyscall_none() {
    const TEST: &str = "compatrun_emulates_the_vsyscall_page_under_vsyscall_none";
    if let Err(reason) = prepare() {
        skip(TEST, &reason);
        return;
    }
    let (s, _) = boot(
        TEST,
        &[
            ("native", "./vsyscall all"),
            // The seccomp platform never sees the fault: the guest dies as natively.
            (
                "seccomp",
                "./compatrun --platform seccomp --kernel-persona rhel6 -- ./vsyscall all",
            ),
            (
                "auto",
                "./compatrun --log info --kernel-persona rhel6 -- true",
            ),
            (
                "emulated",
                "./compatrun --kernel-persona rhel6 -- ./vsyscall all",
            ),
        ],
    );
    assert_native_segv(&s["native"]);
    assert_native_segv(&s["seccomp"]);
    // auto (the default, which "emulated" used) picks ptrace here, and says why.
    assert!(
        s["auto"]
            .out
            .contains("platform ptrace: this host has no vsyscall page"),
        "{:?}",
        s["auto"]
    );
    let g = &s["emulated"];
    assert_eq!(g.status, 0, "under compatrun:\n{}", g.out);
    for call in ["gettimeofday", "time", "getcpu"] {
        let has = |word: &str| {
            g.out.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some(call) && w.next() == Some(word)
            })
        };
        assert!(
            has("ok") && has("match"),
            "{call}: no `{call} ok` and `{call} match` lines:\n{}",
            g.out
        );
    }
}
