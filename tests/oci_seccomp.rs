//! compatrun as an OCI runtime honours config.json's `linux.seccomp`: a profile that
//! refuses, traces, traps, logs and kills calls (tests/fixtures/seccomp_probe.c prints
//! each call's result) gives, through `compatrun oci run`, the output and exit status
//! it gives under runc (installed by scripts/test-deps.sh); a call compatrun emulates
//! (uname under rhel6) is refused when the profile refuses it and emulated when the
//! profile allows it; profiles compatrun cannot honour are refused naming the field,
//! leaving no state. An i386 build of the probe meets the same rules. Runs on the
//! suite's platform (the `run.compatrun.platform`
//! annotation); skips visibly when not root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{busybox_tree, compatrun_bin, have, is_root, platform, run_cmd_within, skip, Outcome};

const RHEL6: &str = "2.6.32-754.el6.x86_64";
const LIMIT: Duration = Duration::from_secs(60);

/// The profile: each rule is one line of the probe's output.
fn profile(refuse_uname: bool) -> serde_json::Value {
    let mut calls = vec![
        serde_json::json!({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}),
        // No tracer for the profile: ENOSYS, as the kernel answers. (Its data is EPERM,
        // 1, as runc sets it: the same value compatrun's own x86_64 trace stops carry.)
        serde_json::json!({"names": ["getcwd"], "action": "SCMP_ACT_TRACE"}),
        serde_json::json!({"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
            "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}),
        serde_json::json!({"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
            "args": [{"index": 0, "value": 448, "valueTwo": 448, "op": "SCMP_CMP_MASKED_EQ"}]}),
        serde_json::json!({"names": ["getuid"], "action": "SCMP_ACT_LOG"}),
        serde_json::json!({"names": ["getsid"], "action": "SCMP_ACT_TRAP"}),
        // Skipped, as runc skips it.
        serde_json::json!({"names": ["no_such_call_anywhere"], "action": "SCMP_ACT_KILL"}),
        serde_json::json!({"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}),
    ];
    if refuse_uname {
        // EPROTO: an errno uname cannot give by itself.
        calls.push(
            serde_json::json!({"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 71}),
        );
    }
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": calls,
    })
}

/// What the probe prints under [`profile`], given uname's line; then SIGSYS kills it.
fn expected(uname: &str) -> String {
    expected_for(uname, 124)
}

/// [`expected`] for an ABI whose getsid is number `getsid` (124 x86_64, 147 i386).
fn expected_for(uname: &str, getsid: u32) -> String {
    format!(
        "mkdir -1 1\n{uname}\ngetcwd -1 38\ngetpriority-process -1 18\n\
         getpriority-pgrp 0 0\numask-0777 -1 18\numask-0022 18 0\ngetuid 0 0\n\
         sigsys 31 call {getsid}\ngetsid 0 0\n"
    )
}

/// A bundle: the busybox tree with the probe as /bin/probe, and `compatrun oci spec`'s
/// config running it under `persona` with `seccomp`.
fn bundle(dir: &Path, persona: &str, seccomp: serde_json::Value) -> PathBuf {
    bundle_with(dir, persona, seccomp, &["-static"])
}

/// [`bundle`] with the probe compiled with `cflags`.
fn bundle_with(dir: &Path, persona: &str, seccomp: serde_json::Value, cflags: &[&str]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    busybox_tree(&dir.join("rootfs")).expect("busybox tree");
    let probe = common::fixture("seccomp_probe", cflags);
    std::fs::copy(&probe, dir.join("rootfs/bin/probe")).expect("copy the probe");
    let mut spec = Command::new(compatrun_bin());
    spec.args(["oci", "spec", "--bundle"]).arg(dir);
    assert!(spec.status().expect("spec").success());
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["args"] = serde_json::json!(["/bin/probe"]);
    config["process"]["terminal"] = false.into();
    config["root"]["readonly"] = false.into();
    config["linux"]["seccomp"] = seccomp;
    config["annotations"] = serde_json::json!({
        "run.compatrun.persona": persona,
        "run.compatrun.platform": platform(),
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
    dir.to_path_buf()
}

/// `RUNTIME --root ROOT run --bundle B ID`, its output and status.
fn run(runtime: &[&str], root: &Path, b: &Path, id: &str) -> Outcome {
    let mut cmd = Command::new(runtime[0]);
    cmd.args(&runtime[1..])
        .arg("--root")
        .arg(root)
        .arg("run")
        .arg("--bundle")
        .arg(b)
        .arg(id)
        .stdin(Stdio::null());
    run_cmd_within(cmd, None, LIMIT)
}

/// Asserts that runc gives `ours`'s output and status on bundle `b` (state under
/// `base`); skips the comparison, by name, where runc is missing.
fn same_as_runc(test: &str, ours: &Outcome, base: &Path, b: &Path, id: &str) {
    if !have("runc") {
        return skip(
            test,
            "runc is missing (scripts/test-deps.sh installs it): no comparison",
        );
    }
    let theirs = run(&["runc"], &base.join("runc-state"), b, id);
    assert_eq!(ours.out(), theirs.out(), "runc: {}", theirs.err());
    assert_eq!(ours.status, theirs.status, "runc: {}", theirs.err());
}

fn compatrun(root: &Path, b: &Path, id: &str) -> Outcome {
    let bin = compatrun_bin();
    run(&[bin.to_str().expect("utf8"), "oci"], root, b, id)
}

#[test]
fn a_profile_acts_as_under_runc_and_over_the_persona() {
    let test = "a_profile_acts_as_under_runc_and_over_the_persona";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-seccomp-{}", platform()));
    let root = base.join("state");
    let id = format!("seccomp-{}", platform());
    // Host persona: what runc gives, line for line, and the same exit status (SIGSYS).
    let b = bundle(&base.join("host"), "host", profile(true));
    let ours = compatrun(&root, &b, &id);
    assert_eq!(ours.out(), expected("uname -1 71 -"), "{}", ours.err());
    assert_eq!(ours.status, 128 + libc::SIGSYS, "{}", ours.err());
    assert!(
        ours.err().contains("no_such_call_anywhere"),
        "the skipped name is warned about: {}",
        ours.err()
    );
    assert!(!root.join(&id).exists(), "run left its state");
    same_as_runc(test, &ours, &base, &b, &id);
    // The profile names x86 too: an i386 program meets the same rules, by its numbers.
    if common::have_m32() {
        let b = bundle_with(
            &base.join("i386"),
            "host",
            profile(true),
            &["-m32", "-static"],
        );
        let out = compatrun(&root, &b, &id);
        assert_eq!(
            out.out(),
            expected_for("uname -1 71 -", 147),
            "{}",
            out.err()
        );
        assert_eq!(out.status, 128 + libc::SIGSYS, "{}", out.err());
        if have("runc") {
            let theirs = run(&["runc"], &base.join("runc-state"), &b, &id);
            assert_eq!(out.out(), theirs.out(), "runc: {}", theirs.err());
        }
    } else {
        skip(
            test,
            "no i386 toolchain (gcc-multilib): the i386 part is skipped",
        );
    }
    // rhel6 emulates uname; the profile's refusal still wins.
    let b = bundle(&base.join("rhel6"), "rhel6", profile(true));
    let out = compatrun(&root, &b, &id);
    assert_eq!(out.out(), expected("uname -1 71 -"), "{}", out.err());
    assert_eq!(out.status, 128 + libc::SIGSYS, "{}", out.err());
    // A profile that allows uname: the call still reaches compatrun's emulation.
    let b = bundle(&base.join("rhel6-allowed"), "rhel6", profile(false));
    let out = compatrun(&root, &b, &id);
    assert_eq!(
        out.out(),
        expected(&format!("uname 0 0 {RHEL6}")),
        "{}",
        out.err()
    );
    assert_eq!(out.status, 128 + libc::SIGSYS, "{}", out.err());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn profiles_compatrun_cannot_honour_are_refused_by_name() {
    let test = "profiles_compatrun_cannot_honour_are_refused_by_name";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-seccomp-bad-{}", platform()));
    let root = base.join("state");
    let good = profile(true);
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY", {
            let mut p = good.clone();
            p["defaultAction"] = "SCMP_ACT_NOTIFY".into();
            p
        }),
        (
            "linux.seccomp.syscalls[1].action: unknown action \"SCMP_ACT_NOPE\"",
            {
                let mut p = good.clone();
                p["syscalls"][1]["action"] = "SCMP_ACT_NOPE".into();
                p
            },
        ),
        (
            "linux.seccomp.architectures[1]: unknown architecture \"SCMP_ARCH_Z80\"",
            {
                let mut p = good.clone();
                p["architectures"][1] = "SCMP_ARCH_Z80".into();
                p
            },
        ),
        ("linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY", {
            let mut p = good.clone();
            p["syscalls"][0]["action"] = "SCMP_ACT_NOTIFY".into();
            p
        }),
        ("linux.seccomp.listenerPath", {
            let mut p = good.clone();
            p["listenerPath"] = "/run/agent.sock".into();
            p
        }),
        ("linux.seccomp.syscalls[2].args[0].index 6", {
            let mut p = good.clone();
            p["syscalls"][2]["args"][0]["index"] = 6.into();
            p
        }),
    ];
    for (i, (want, p)) in cases.into_iter().enumerate() {
        let b = bundle(&base.join("bundle"), "host", p);
        let id = format!("bad-{i}");
        let mut cmd = Command::new(compatrun_bin());
        cmd.arg("oci")
            .arg("--root")
            .arg(&root)
            .args(["create", "--bundle"])
            .arg(&b)
            .arg(&id)
            .stdin(Stdio::null());
        let out = run_cmd_within(cmd, None, LIMIT);
        assert_eq!(out.status, 125, "{want}: {}", out.err());
        assert!(out.err().contains(want), "want {want:?} in {}", out.err());
        assert!(!root.join(&id).exists(), "{want}: create left its state");
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// A deny-by-default profile (EPERM) of the calls a static program and the runtime's
/// last steps need (runc's among them), all numbered below pidfd_send_signal; sysinfo
/// is left out.
fn deny_by_default() -> serde_json::Value {
    let names = [
        "read",
        "write",
        "close",
        "fstat",
        "newfstatat",
        "statx",
        "lseek",
        "mmap",
        "mprotect",
        "munmap",
        "brk",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "ioctl",
        "pread64",
        "access",
        "dup",
        "dup2",
        "dup3",
        "fcntl",
        "getcwd",
        "chdir",
        "fchdir",
        "openat",
        "setgroups",
        "setresuid",
        "setresgid",
        "setuid",
        "setgid",
        "capget",
        "capset",
        "prctl",
        "arch_prctl",
        "set_tid_address",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "getrandom",
        "readlinkat",
        "exit",
        "exit_group",
        "execve",
        "futex",
        "getdents64",
        "umask",
        "setsid",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "getppid",
        "wait4",
        "kill",
        "tgkill",
        "sigaltstack",
        "nanosleep",
        "poll",
        "ppoll",
        "uname",
        "sched_yield",
        "madvise",
        "fstatfs",
        "statfs",
        "getpid",
        "gettid",
        "epoll_ctl",
        "epoll_pwait",
        "epoll_create1",
        "pipe2",
        "clone",
        "sched_getaffinity",
        "mkdirat",
        "unlinkat",
        "fchown",
        "fchmod",
    ];
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names.to_vec(), "action": "SCMP_ACT_ALLOW"}],
    })
}

/// A call numbered above every call a deny-by-default profile names gets ENOSYS (so a C
/// library newer than the profile falls back to an older call), as runc arranges; one
/// the profile leaves out below that gets the default action. Same lines as runc's.
#[test]
fn calls_newer_than_the_profile_get_enosys() {
    let test = "calls_newer_than_the_profile_get_enosys";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-enosys-{}", platform()));
    let root = base.join("state");
    let id = format!("enosys-{}", platform());
    let b = bundle(&base.join("bundle"), "host", deny_by_default());
    let probe = common::fixture("enosys_probe", &["-static"]);
    std::fs::copy(&probe, b.join("rootfs/bin/probe")).expect("copy the probe");
    let ours = compatrun(&root, &b, &id);
    assert_eq!(
        (ours.status, ours.out().as_str()),
        (
            0,
            "sysinfo -1 1\npidfd_send_signal -1 38\nunassigned-1000 -1 38\n"
        ),
        "{}",
        ours.err()
    );
    same_as_runc(test, &ours, &base, &b, &id);
    let _ = std::fs::remove_dir_all(&base);
}
