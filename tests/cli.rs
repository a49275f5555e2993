//! The command line: help, listings, persona files, and the exit-status convention for
//! bad input (125 compatrun failed, 126 cannot execute, 127 not found).

mod common;

use std::process::Command;

use common::{compatrun_bin, run_cmd, scratch_dir, under, Outcome};

fn compatrun(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(compatrun_bin());
    cmd.args(args);
    run_cmd(cmd, None)
}

#[test]
fn help_and_version() {
    let h = compatrun(&["--help"]);
    assert_eq!(h.status, 0);
    for needle in ["--kernel-persona", "--platform", "personas", "Examples"] {
        assert!(
            h.out().contains(needle),
            "--help lacks {needle}:\n{}",
            h.out()
        );
    }
    let v = compatrun(&["--version"]);
    assert_eq!(v.status, 0);
    assert!(v.out().starts_with("compatrun "), "{}", v.out());
}

#[test]
fn personas_lists_every_builtin_with_its_release() {
    let o = compatrun(&["personas"]);
    assert_eq!(o.status, 0, "{}", o.err());
    for (name, release) in [
        ("host", "(host)"),
        ("2.6", "2.6.32"),
        ("rhel6", "2.6.32-754.el6.x86_64"),
        ("3.10", "3.10.0"),
        ("rhel7", "3.10.0-1160.el7.x86_64"),
        ("4.18", "4.18.0"),
        ("rhel8", "4.18.0-553.el8_10.x86_64"),
        ("5.14", "5.14.0"),
        ("rhel9", "5.14.0-427.13.1.el9_4.x86_64"),
    ] {
        let out = o.out();
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", o.out()));
        assert!(line.contains(release), "{line}");
    }
}

#[test]
fn persona_details_name_what_changes() {
    let o = compatrun(&["personas", "rhel6"]);
    assert_eq!(o.status, 0, "{}", o.err());
    let out = o.out();
    assert!(out.contains("uname -r:    2.6.32-754.el6.x86_64"), "{out}");
    assert!(out.contains("syscalls:    as in Linux 2.6.32"), "{out}");
    let enosys = out
        .lines()
        .find(|l| l.trim_start().starts_with("ENOSYS:"))
        .expect("an ENOSYS line");
    for name in ["getrandom", "statx", "openat2", "recvmmsg", "clone3"] {
        assert!(
            enosys.split_whitespace().any(|w| w == name),
            "{name} not refused: {enosys}"
        );
    }
    assert!(!enosys.split_whitespace().any(|w| w == "read"));
    assert!(out.contains("caught: uname"), "{out}");
}

#[test]
fn unknown_persona_is_a_clear_failure() {
    let o = compatrun(&["--kernel-persona", "2.4", "--", "true"]);
    assert_eq!(o.status, 125);
    assert!(
        o.err().contains("unknown kernel persona \"2.4\""),
        "{}",
        o.err()
    );
    assert!(o.err().contains("rhel6"), "lists the choices: {}", o.err());
}

#[test]
fn persona_files_are_validated_with_line_numbers() {
    let dir = scratch_dir().join("cli-personas");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "description = \"x\"\nkernel = \"3.10\"\n\n[uname]\nrelease = 42\n",
    )
    .expect("write");
    let o = compatrun(&["-k", bad.to_str().expect("utf8"), "--", "true"]);
    assert_eq!(o.status, 125);
    assert!(o.err().contains("line 5"), "names the line: {}", o.err());

    let unknown_call = dir.join("unknown-call.toml");
    std::fs::write(
        &unknown_call,
        "description = \"x\"\nkernel = \"3.10\"\n[syscalls]\nadd = [\"getrandom\", \"frobnicate\"]\n",
    )
    .expect("write");
    let o = compatrun(&["-k", unknown_call.to_str().expect("utf8"), "--", "true"]);
    assert_eq!(o.status, 125);
    assert!(
        o.err().contains("line 4") && o.err().contains("frobnicate"),
        "{}",
        o.err()
    );

    let missing = dir.join("missing.toml");
    let o = compatrun(&["-k", missing.to_str().expect("utf8"), "--", "true"]);
    assert_eq!(o.status, 125);
    assert!(o.err().contains("cannot read persona file"), "{}", o.err());
}

#[test]
fn a_user_persona_file_takes_effect() {
    let dir = scratch_dir().join("cli-personas");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("sles11.toml");
    std::fs::write(
        &file,
        "# SUSE Linux Enterprise 11 SP4\ndescription = \"SLES 11 SP4\"\nkernel = \"3.0.101\"\n\
         [uname]\nrelease = \"3.0.101-63-default\"\nversion = \"#1 SMP Tue Jun 23 16:02:31 UTC 2015 (4b89d0c)\"\n\
         [syscalls]\nadd = [\"getrandom\"]\n",
    )
    .expect("write");
    let persona = file.to_str().expect("utf8");
    let o = under(persona, &["uname", "-rv"]);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(
        o.out(),
        "3.0.101-63-default #1 SMP Tue Jun 23 16:02:31 UTC 2015 (4b89d0c)\n"
    );
    // The backport listed under [syscalls] add exists; 3.0 otherwise lacks getrandom.
    let py = "import os\ntry:\n os.getrandom(1); print('ok')\nexcept OSError as e: print(e.errno)";
    let o = under(persona, &["python3", "-c", py]);
    assert_eq!(o.out(), "ok\n", "{}", o.err());
    let o = under("3.10", &["python3", "-c", py]);
    assert_eq!(o.out(), "38\n", "{}", o.err());
}

#[test]
fn missing_and_unrunnable_programs_follow_the_env_convention() {
    let o = under("2.6", &["no-such-program-compatrun-test"]);
    assert_eq!(o.status, 127);
    assert!(
        o.err()
            .contains("no-such-program-compatrun-test: command not found"),
        "{}",
        o.err()
    );

    let o = under("2.6", &["./no/such/path"]);
    assert_eq!(o.status, 127);

    let dir = scratch_dir().join("cli-exec");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let o = under("2.6", &[dir.to_str().expect("utf8")]);
    assert_eq!(o.status, 126, "a directory cannot be executed: {}", o.err());

    let plain = dir.join("not-executable");
    std::fs::write(&plain, "echo hi\n").expect("write");
    let o = under("2.6", &[plain.to_str().expect("utf8")]);
    assert_eq!(o.status, 126);
    assert!(o.err().contains("cannot execute"), "{}", o.err());

    let o = compatrun(&["--kernel-persona", "2.6"]);
    assert_eq!(o.status, 125);
    assert!(o.err().contains("no program given"), "{}", o.err());

    let o = compatrun(&["--no-such-option"]);
    assert_eq!(o.status, 125);
}

#[test]
fn a_script_without_interpreter_line_runs_with_sh_as_execvp_does() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir().join("cli-exec");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = dir.join("no-shebang");
    std::fs::write(&script, "echo \"args: $*\"\nexit 3\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = script.to_str().expect("utf8");
    let (native, _) = common::compare("2.6", &["env", s, "a", "b"]);
    assert_eq!(native.out(), "args: a b\n");
    let o = under("2.6", &[s, "a", "b"]);
    assert_eq!((o.status, o.out()), (3, "args: a b\n".to_owned()));
}

#[test]
fn compatrun_logs_to_stderr_only_when_asked() {
    let quiet = under("2.6", &["true"]);
    assert_eq!((quiet.status, quiet.err()), (0, String::new()));
    let mut cmd = Command::new(compatrun_bin());
    cmd.args(["--log", "info", "-k", "rhel6", "--", "true"]);
    let o = run_cmd(cmd, None);
    assert_eq!(o.status, 0);
    assert!(
        o.err().contains("compatrun: info: persona rhel6"),
        "{}",
        o.err()
    );
}

#[test]
fn where_ptrace_is_forbidden_compatrun_says_so_and_what_to_do() {
    // The outer compatrun plays a container that forbids ptrace: its persona has no
    // ptrace call at all, so the inner compatrun cannot trace its guest.
    let dir = scratch_dir().join("cli-personas");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let persona = dir.join("noptrace.toml");
    std::fs::write(
        &persona,
        "description = \"the host without ptrace\"\nkernel = \"6.18\"\n[syscalls]\nremove = [\"ptrace\"]\n",
    )
    .expect("write");
    let bin = compatrun_bin();
    let o = under(
        persona.to_str().expect("utf8"),
        &[
            bin.to_str().expect("utf8"),
            "--platform",
            "ptrace",
            "-k",
            "2.6",
            "--",
            "true",
        ],
    );
    assert_eq!(o.status, 125, "{}", o.err());
    assert!(
        o.err().contains("ptrace is not permitted here"),
        "{}",
        o.err()
    );
    assert!(o.err().contains("CAP_SYS_PTRACE"), "{}", o.err());
}

/// `compatrun personas | head -1`: a reader that went away before the listing was
/// written. The pipe's read end is closed before compatrun starts, so its first write
/// fails with EPIPE every time; compatrun stays quiet and exits 0, as listings do.
#[test]
fn listings_stay_quiet_on_a_closed_pipe() {
    for args in [
        &["personas"][..],
        &["personas", "rhel6"],
        &["--help"],
        &["images", "list"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let cache = scratch_dir().join("cli-closed-pipe-cache");
        let out = Command::new(compatrun_bin())
            .args(args)
            .env("COMPATRUN_CACHE_DIR", &cache)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run compatrun");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}
