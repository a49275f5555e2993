//! The legacy vsyscall page on a host booted with `vsyscall=none`, proven in a VM: Debian's
//! own 6.1 kernel under QEMU (software emulation) via `tests/vm/run-in-vm.sh`.
//!
//! Natively, a static program calling 0xffffffffff600000/400/800 (as glibc < 2.14 did)
//! dies with SIGSEGV there; under compatrun the three calls must work.
//!
//! The tests share one VM boot that runs every step in order (the first test to need
//! it boots, the others wait), and each checks its part; the rig installs QEMU and
//! fetches the kernel into target/vm-cache on first use. They skip (visibly) only when
//! QEMU or the kernel cannot be had on this machine at all.
//!
//! Nothing here depends on the suite's platform: `COMPATRUN_PLATFORM` does not reach the
//! VM, whose steps name `--platform seccomp` or `ptrace` where it matters and otherwise
//! use `auto` (ptrace there, checked). So scripts/test.sh runs them in its first pass
//! only (`common::platform_independent`).
//!
//! `killed_while_a_call_site_is_patched` (in `vm_vsyscall/mid_patch.rs`) is the
//! patching stage of the fault tests in tests/faults.rs: call sites are patched only on
//! a host without the vsyscall page, which here is this VM.

mod common;
#[path = "vm_vsyscall/mid_patch.rs"]
mod mid_patch;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::{compatrun_bin, fixture, run_cmd, skip};

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

/// The call-site fixture (static, like the other), compiled once.
fn sites_fixture() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| fixture("vsyscall_sites", &["-static", "-pthread"]))
        .clone()
}

/// The files of the real wheezy tree (`COMPATRUN_OLD_ROOTFS`) that its perl needs,
/// copied (links as links) into a small tree for the VM; `None` without the tree.
fn wheezy_perl_tree() -> Option<PathBuf> {
    let root = PathBuf::from(std::env::var_os("COMPATRUN_OLD_ROOTFS")?);
    let files = [
        "usr/bin/perl",
        "usr/lib/libperl.so.5.14",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/ld-2.13.so",
    ];
    let libs = ["libc", "libdl", "libm", "libpthread", "libcrypt"];
    if !root.join(files[0]).exists() {
        return None;
    }
    let dest = common::scratch_dir().join(format!("vm-wheezy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let mut names: Vec<String> = files.iter().map(|f| (*f).to_owned()).collect();
    for dir in ["lib/x86_64-linux-gnu", "usr/lib"] {
        for e in std::fs::read_dir(root.join(dir))
            .ok()?
            .filter_map(Result::ok)
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if libs.iter().any(|l| {
                name.starts_with(&format!("{l}.so")) || name.starts_with(&format!("{l}-2.13"))
            }) || name.starts_with("libperl.so")
            {
                names.push(format!("{dir}/{name}"));
            }
        }
    }
    for name in names {
        let to = dest.join(&name);
        std::fs::create_dir_all(to.parent()?).ok()?;
        let status = Command::new("cp")
            .arg("-a")
            .arg(root.join(&name))
            .arg(&to)
            .status()
            .ok()?;
        assert!(
            status.success(),
            "copying {name} from the wheezy tree failed"
        );
    }
    Some(dest)
}

/// What one step printed (stdout and stderr merged) and its shell status.
#[derive(Debug)]
struct Step {
    out: String,
    status: i32,
}

/// Boots the VM once with `vsyscall` (the static fixture), compatrun (with its
/// libraries) and `adds` (`(host path, name)`) in /work, runs each `(name, shell
/// command)` in order and returns every step's output and status, or why the VM run
/// failed.
fn boot_with(
    test: &str,
    steps: &[(&str, &str)],
    adds: &[(PathBuf, &str)],
) -> Result<HashMap<String, Step>, String> {
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
        .arg(format!("{}:vsyscall", vsyscall.display()));
    for (path, name) in adds {
        cmd.arg("--add").arg(format!("{}:{name}", path.display()));
    }
    cmd.arg("--elf")
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
    if run.status != 0 {
        return Err(format!(
            "the VM run failed with {} (its last step's status, or 124/125 from the rig):\n{}\n{}",
            run.status,
            run.out(),
            run.err()
        ));
    }
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
        let status = status.ok_or_else(|| format!("step {name} did not finish:\n{out}"))?;
        found.insert(name.to_owned(), Step { out: body, status });
    }
    if let Some((name, _)) = steps.iter().find(|(n, _)| !found.contains_key(*n)) {
        return Err(format!("step {name} missing:\n{out}"));
    }
    Ok(found)
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
    if !common::platform_independent(TEST) {
        return;
    }
    if let Err(reason) = prepare() {
        skip(TEST, &reason);
        return;
    }
    let s = shared_boot().steps();
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

/// The steps of the boot the tests here share (or why it failed, kept so that the other
/// tests do not boot again), and whether the wheezy tree was there.
struct Shared {
    booted: Result<HashMap<String, Step>, String>,
    wheezy: bool,
}

impl Shared {
    /// Every step's output and status; panics if the boot failed.
    fn steps(&self) -> &HashMap<String, Step> {
        self.booted.as_ref().unwrap_or_else(|why| panic!("{why}"))
    }
}

/// Boots the VM once for every test that checks a part of it (the first to ask boots;
/// the others wait for it): the three legacy calls, call-site patching shape by shape,
/// a run killed in the middle of a patch, the run report, and the wheezy perl.
fn shared_boot() -> &'static Shared {
    static BOOT: OnceLock<Shared> = OnceLock::new();
    BOOT.get_or_init(|| {
        let wheezy = wheezy_perl_tree();
        let mut adds = vec![
            (sites_fixture(), "vsyscall_sites"),
            (
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/kill-mid-patch.sh"),
                "kill-mid-patch.sh",
            ),
        ];
        if let Some(tree) = &wheezy {
            adds.push((tree.clone(), "wheezy"));
        }
        let mut steps = vec![
            ("cmdline", "cat /proc/cmdline"),
            ("native", "./vsyscall all"),
            ("uname", "./compatrun --kernel-persona 2.6 -- uname -r"),
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
        ];
        steps.extend_from_slice(PATCH_STEPS);
        steps.extend_from_slice(mid_patch::STEPS);
        // The run report counts the entry calls compatrun emulated and the sites it patched.
        steps.push((
            "report",
            "./compatrun --platform ptrace -k rhel6 --report /tmp/vs.json \
             -- ./vsyscall_sites all 300 >/dev/null && cat /tmp/vs.json",
        ));
        if wheezy.is_some() {
            steps.extend_from_slice(PERL_STEPS);
        }
        let booted = boot_with("shared_boot", &steps, &adds);
        if let Some(tree) = &wheezy {
            let _ = std::fs::remove_dir_all(tree);
        }
        Shared {
            booted,
            wheezy: wheezy.is_some(),
        }
    })
}

/// The point of it all: under compatrun the three legacy calls return, with values that
/// agree with the real syscalls; call sites are patched shape by shape.
#[test]
fn compatrun_emulates_the_vsyscall_page_under_vsyscall_none() {
    const TEST: &str = "compatrun_emulates_the_vsyscall_page_under_vsyscall_none";
    if !common::platform_independent(TEST) {
        return;
    }
    if let Err(reason) = prepare() {
        skip(TEST, &reason);
        return;
    }
    let shared = shared_boot();
    let s = shared.steps();
    if shared.wheezy {
        check_perl(s);
    } else {
        skip(
            "vsyscall_patching_of_a_real_wheezy_perl",
            "COMPATRUN_OLD_ROOTFS is not set (scripts/test.sh sets it)",
        );
    }
    check_patching(s);
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
    let r = &s["report"];
    assert_eq!(r.status, 0, "with a report:\n{}", r.out);
    let report: serde_json::Value = serde_json::from_str(&r.out)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{}", r.out));
    // As patch-all: three sites, each emulated once (its first call) and then patched.
    assert_eq!(report["totals"]["vsyscall_emulated"], 3, "{report:#}");
    assert_eq!(report["totals"]["sites_patched"], 3, "{report:#}");
    let program = report["programs"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["path"] == "/work/vsyscall_sites"))
        .unwrap_or_else(|| panic!("no /work/vsyscall_sites program: {report:#}"));
    assert_eq!(program["sites_patched"], 3, "{report:#}");
    let per_entry: u64 = program["vsyscall"]
        .as_array()
        .map(|v| v.iter().filter_map(|e| e["count"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(per_entry, 3, "{report:#}");
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

/// Call-site patching, one step per shape (see tests/fixtures/vsyscall_sites.c).
const PATCH_STEPS: &[(&str, &str)] = &[
    ("sites-native", "./vsyscall_sites time 1"),
    (
        "patch-all",
        "./compatrun --log info -k rhel6 -- ./vsyscall_sites all 300",
    ),
    (
        "patch-tail",
        "./compatrun --log info -k rhel6 -- ./vsyscall_sites tail 300",
    ),
    (
        "patch-mem",
        "./compatrun --log info -k rhel6 -- ./vsyscall_sites mem 300",
    ),
    (
        "patch-fork",
        "./compatrun --log info -k rhel6 -- ./vsyscall_sites fork 300",
    ),
    (
        "patch-threads",
        "./compatrun --log info -k rhel6 -- ./vsyscall_sites threads 300",
    ),
    (
        "patch-near",
        "./compatrun --log info -k rhel6 -- ./vsyscall_sites near 50",
    ),
    (
        "patch-off",
        "./compatrun --no-patch --log info -k rhel6 -- ./vsyscall_sites all 50",
    ),
    // Every other shape with patching off, too.
    (
        "off-tail",
        "./compatrun --no-patch --log info -k rhel6 -- ./vsyscall_sites tail 20",
    ),
    (
        "off-mem",
        "./compatrun --no-patch --log info -k rhel6 -- ./vsyscall_sites mem 20",
    ),
    (
        "off-fork",
        "./compatrun --no-patch --log info -k rhel6 -- ./vsyscall_sites fork 20",
    ),
    (
        "off-threads",
        "./compatrun --no-patch --log info -k rhel6 -- ./vsyscall_sites threads 20",
    ),
];

/// The real wheezy perl: its libc's time() is the glibc 2.12-style `mov`+`call`.
const PERL_STEPS: &[(&str, &str)] = &[
    (
        "perl-native",
        "mkdir -p wheezy/dev && mknod wheezy/dev/null c 1 3 && chroot wheezy /usr/bin/perl -e 'my $t; $t = time for 1..20000; print \"perl ok $t\\n\"'",
    ),
    (
        "perl-patched",
        "./compatrun --log info -k rhel6 -- chroot wheezy /usr/bin/perl -e 'my $t; $t = time for 1..20000; print \"perl ok $t\\n\"'",
    ),
];

/// The `--log info` summary of a step: (sites patched, calls emulated, trampolines).
fn summary(step: &Step) -> (u64, u64, u64) {
    let line = step
        .out
        .lines()
        .find_map(|l| l.strip_prefix("compatrun: info: vsyscall: "))
        .unwrap_or_else(|| panic!("no vsyscall summary:\n{}", step.out));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "summary {line:?}");
    (nums[0], nums[1], nums[2])
}

fn check_patching(s: &HashMap<String, Step>) {
    assert_native_segv(&s["sites-native"]);
    let ok = |name: &str, mode: &str, calls: u64| {
        let step = &s[name];
        assert_eq!(step.status, 0, "{name}:\n{}", step.out);
        assert!(
            step.out.lines().any(|l| l == format!("{mode} ok {calls}")),
            "{name}: no `{mode} ok {calls}`:\n{}",
            step.out
        );
        summary(step)
    };
    // Each site stops once (its first call, emulated, when it is patched), then never.
    assert_eq!(
        ok("patch-all", "all", 900),
        (3, 3, 1),
        "{}",
        s["patch-all"].out
    );
    assert_eq!(
        ok("patch-tail", "tail", 300),
        (1, 1, 1),
        "{}",
        s["patch-tail"].out
    );
    assert_eq!(
        ok("patch-mem", "mem", 300),
        (1, 1, 1),
        "{}",
        s["patch-mem"].out
    );
    // The forked child runs the inherited patched site without a stop, and patches the
    // site its parent never reached in the trampoline page it inherited (no new page).
    assert_eq!(
        ok("patch-fork", "fork", 901),
        (2, 2, 1),
        "{}",
        s["patch-fork"].out
    );
    // Eight threads on one site: one patch; each thread stops at most once (its call in
    // flight while the site was rewritten), all of them get the right answers.
    let (sites, emulated, pages) = ok("patch-threads", "threads", 2400);
    assert_eq!((sites, pages), (1, 1), "{}", s["patch-threads"].out);
    assert!((1..=8).contains(&emulated), "{}", s["patch-threads"].out);
    // Near misses are left alone and emulated every time, correctly.
    assert_eq!(
        ok("patch-near", "near", 150),
        (0, 150, 0),
        "{}",
        s["patch-near"].out
    );
    // --no-patch: every call is a stop, as before patching existed.
    assert_eq!(
        ok("patch-off", "all", 150),
        (0, 150, 0),
        "{}",
        s["patch-off"].out
    );
    for (name, mode, calls) in [
        ("off-tail", "tail", 20),
        ("off-mem", "mem", 20),
        ("off-fork", "fork", 61),
        ("off-threads", "threads", 160),
    ] {
        assert_eq!(ok(name, mode, calls), (0, calls, 0), "{}", s[name].out);
    }
}

fn check_perl(s: &HashMap<String, Step>) {
    assert_native_segv(&s["perl-native"]);
    let step = &s["perl-patched"];
    assert_eq!(step.status, 0, "{}", step.out);
    assert!(step.out.contains("perl ok "), "{}", step.out);
    let (sites, emulated, pages) = summary(step);
    // time() in libc is patched on its first call; the loop then never stops.
    assert!(sites >= 1 && pages >= 1, "{}", step.out);
    assert!(emulated <= sites + 2, "{}", step.out);
}
