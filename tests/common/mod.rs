//! The testing helper: run a program natively and under compatrun, compare, compile C
//! fixtures, and skip visibly.
//!
//! ```ignore
//! let (native, guest) = common::compare("2.6", &["sh", "-c", "echo hi | tr a-z A-Z"]);
//! ```
#![allow(dead_code)] // each test binary uses a different part of this helper

pub mod live;
pub mod oci;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long any single guest run may take before the test fails (and kills it).
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// The compatrun binary under test.
pub fn compatrun_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_compatrun"))
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code, or 128+N for a death by signal N (as a shell reports it).
    pub status: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Outcome {
    /// stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text.
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `cmd` to completion with `stdin` fed in (or /dev/null), killing it after
/// [`TIMEOUT`]. Panics on timeout: a hang is a failure, never a pass.
pub fn run_cmd(cmd: Command, stdin: Option<&[u8]>) -> Outcome {
    run_cmd_within(cmd, stdin, TIMEOUT)
}

/// [`run_cmd`] with its own bound: for tests of what must never hang, where `limit` is
/// far above what the run needs and reaching it is the failure being tested for.
pub fn run_cmd_within(mut cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Outcome {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut sin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = sin.write_all(&input);
        });
    }
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let status = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Outcome {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn command<S: AsRef<OsStr>>(argv: &[S]) -> Command {
    let mut cmd = Command::new(argv[0].as_ref());
    cmd.args(&argv[1..]);
    cmd
}

/// Runs `argv` natively.
pub fn native<S: AsRef<OsStr>>(argv: &[S]) -> Outcome {
    run_cmd(command(argv), None)
}

/// The `compatrun --kernel-persona PERSONA -- argv...` command, ready to adjust.
pub fn under_cmd<S: AsRef<OsStr>>(persona: &str, argv: &[S]) -> Command {
    let mut cmd = Command::new(compatrun_bin());
    cmd.arg("--kernel-persona").arg(persona);
    pinned_platform(&mut cmd);
    cmd.arg("--");
    cmd.args(argv);
    cmd
}

/// `compatrun --kernel-persona PERSONA FLAGS... -- argv...`.
pub fn under_with<S: AsRef<OsStr>>(persona: &str, flags: &[&str], argv: &[S]) -> Command {
    let mut cmd = Command::new(compatrun_bin());
    cmd.arg("--kernel-persona").arg(persona);
    pinned_platform(&mut cmd);
    cmd.args(flags).arg("--");
    cmd.args(argv);
    cmd
}

/// The platform the suite runs on: `COMPATRUN_PLATFORM` (which compatrun itself reads
/// as its default), else `auto`. `scripts/test.sh` runs the suite once per platform.
pub fn platform() -> String {
    std::env::var("COMPATRUN_PLATFORM").unwrap_or_else(|_| "auto".to_owned())
}

thread_local! {
    /// A platform this test (thread) pinned with [`ptrace_only`].
    static PINNED: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

fn pinned_platform(cmd: &mut Command) {
    if let Some(p) = PINNED.with(std::cell::Cell::get) {
        cmd.arg("--platform").arg(p);
    }
}

/// For a test of something only the ptrace platform does: on the seccomp suite run it
/// is skipped, visibly, with `why` (returns true: the caller returns); otherwise every
/// compatrun this test (thread) starts through this helper runs with `--platform ptrace`.
pub fn ptrace_only(test: &str, why: &str) -> bool {
    if platform() == "seccomp" {
        skip(test, &format!("the seccomp platform {why}"));
        return true;
    }
    PINNED.with(|p| p.set(Some("ptrace")));
    false
}

/// Runs `argv` under compatrun with `persona`.
pub fn under<S: AsRef<OsStr>>(persona: &str, argv: &[S]) -> Outcome {
    run_cmd(under_cmd(persona, argv), None)
}

/// Runs `argv` natively and under `persona`; asserts the same stdout and status.
pub fn compare<S: AsRef<OsStr> + std::fmt::Debug>(persona: &str, argv: &[S]) -> (Outcome, Outcome) {
    let n = native(argv);
    let g = under(persona, argv);
    assert_eq!(
        (g.status, g.out()),
        (n.status, n.out()),
        "{argv:?} under persona {persona} differs from native.\nguest stderr:\n{}\nnative stderr:\n{}",
        g.err(),
        n.err()
    );
    (n, g)
}

/// Says, where a test runner shows it even for passing tests, that `test` was skipped.
/// The reason names what is missing.
pub fn skip(test: &str, reason: &str) {
    // Written to the real stderr (not the captured one) so the skip is always visible.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// Whether a test that does not depend on the platform runs in this pass of the suite.
/// scripts/test.sh runs the whole suite once per platform and names, in every pass
/// after the first, the platform the first pass ran on (`COMPATRUN_FIRST_PASS`): such a
/// test then skips, visibly, instead of doing the same work again. Run alone (no
/// variable), it always runs.
pub fn platform_independent(test: &str) -> bool {
    match std::env::var("COMPATRUN_FIRST_PASS") {
        Ok(first) if !first.is_empty() => {
            skip(
                test,
                &format!("it does not depend on the platform and ran in this suite's {first} pass"),
            );
            false
        }
        _ => true,
    }
}

/// Whether the tests run as root (the owner of /proc/self is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether `program` can be found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The directory for compiled fixtures and other scratch output of the tests.
pub fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Compiles `tests/fixtures/NAME.c` (once per test binary run; rebuilt when the source
/// is newer) with `extra` flags and returns the executable's path.
pub fn fixture(name: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"));
    let tag = extra.join("").replace(['-', '=', '/'], "");
    let out = scratch_dir().join(format!("fixture-{name}{tag}"));
    let fresh = match (std::fs::metadata(&src), std::fs::metadata(&out)) {
        (Ok(s), Ok(o)) => o.modified().ok() >= s.modified().ok(),
        _ => false,
    };
    if !fresh {
        // Build to a temporary name and rename, so parallel tests never see half a file.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out.with_extension(format!("tmp{}-{seq}", std::process::id()));
        let status = Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
            .arg(&tmp)
            .arg(&src)
            .args(extra)
            .status()
            .expect("run cc (install gcc: see scripts/test.sh)");
        assert!(status.success(), "compiling fixture {name} failed");
        std::fs::rename(&tmp, &out).expect("rename fixture");
    }
    out
}

/// A string unique to this call (test binary pid, a counter and the clock), to put in
/// a guest's command line so its processes can be found with `pgrep -f` later.
pub fn unique_marker(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Live processes whose command line contains `marker` (`pgrep -f`), as (pid, command
/// line). Zombies are left out: a dead process waiting for init to reap it runs nothing.
pub fn pgrep(marker: &str) -> Vec<(i32, String)> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", "--", marker])
        .output()
        .expect("run pgrep (install procps)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pid, cmd) = l.split_once(' ').unwrap_or((l, ""));
            let pid: i32 = pid.parse().ok()?;
            if u32::try_from(pid).ok() == Some(std::process::id()) {
                return None; // pgrep itself is not listed; neither is this test
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            (state != 'Z' && state != 'X').then(|| (pid, cmd.to_string()))
        })
        .collect()
}

/// Asserts that no live process with `marker` in its command line remains, waiting up
/// to 30 s for stragglers to die (a guard against slow machines, not a measurement).
/// Whatever still runs after that is killed (SIGKILL by pid) before the test fails.
pub fn assert_none_left(marker: &str) {
    let start = Instant::now();
    loop {
        let left = pgrep(marker);
        if left.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(30) {
            for (pid, _) in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("processes left behind (now killed): {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether 32-bit (i386) programs can be built and run here: gcc-multilib installed and
/// the kernel's i386 emulation on.
pub fn have_m32() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        let src = scratch_dir().join(format!("m32-probe-{}.c", std::process::id()));
        let bin = src.with_extension("bin");
        if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
            return false;
        }
        let ok = Command::new("cc")
            .args(["-m32", "-o"])
            .arg(&bin)
            .arg(&src)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&bin).status().is_ok_and(|s| s.success());
        let _ = std::fs::remove_file(&src);
        let _ = std::fs::remove_file(&bin);
        ok
    })
}

/// The busybox applets a test tree links.
const APPLETS: [&str; 17] = [
    "sh", "cat", "uname", "ls", "hostname", "id", "echo", "touch", "pwd", "wc", "head", "env",
    "grep", "sleep", "mount", "stat", "true",
];

/// Makes a small root filesystem at `root` from Debian's busybox-static (installed by
/// scripts/test-deps.sh): /bin with the applets, /etc with resolv.conf, hosts and
/// `tree-marker`, and empty proc, sys, dev, tmp, mnt/rw, mnt/ro and root, readable by
/// everyone. Err with the reason if busybox is missing.
pub fn busybox_tree(root: &Path) -> Result<(), String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err(
            "/bin/busybox is missing (Debian's busybox-static; scripts/test-deps.sh installs it)"
                .into(),
        );
    }
    let _ = std::fs::remove_dir_all(root);
    let e = |e: std::io::Error| e.to_string();
    for d in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "mnt/rw", "mnt/ro", "root",
    ] {
        std::fs::create_dir_all(root.join(d)).map_err(e)?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(e)?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).map_err(e)?;
    }
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.1\n").map_err(e)?;
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 tree-hosts\n").map_err(e)?;
    std::fs::write(root.join("etc/tree-marker"), "the busybox tree\n").map_err(e)?;
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status();
    let _ = Command::new("chmod")
        .arg("1777")
        .arg(root.join("tmp"))
        .status();
    Ok(())
}

/// The command line that runs what follows it as uid and gid 65534.
pub const AS_NOBODY: [&str; 7] = [
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
    "--",
];

/// `program` run as uid and gid 65534 (the caller must be root).
pub fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new(AS_NOBODY[0]);
    c.args(&AS_NOBODY[1..]).arg(program);
    c
}
