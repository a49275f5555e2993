//! The OCI runtime's commands that engines call besides the lifecycle: `ps` and `list`
//! (table and JSON), `features` (the fields engines read), the five hook kinds (each
//! writes the state it got on stdin; order, content, and the namespaces of the two that
//! run in the container), `--log FILE --log-format json` (an error lands there as a
//! JSON line, as runc writes it), `--systemd-cgroup` (accepted) and `run`'s exit status.
//! Runs on the suite's platform (the `run.compatrun.platform` annotation); skips visibly
//! when not root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{compatrun_bin, is_root, platform, run_cmd_within, skip, Outcome};

const LIMIT: Duration = Duration::from_secs(60);

fn oci(root: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(compatrun_bin());
    cmd.arg("oci")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null());
    run_cmd_within(cmd, None, LIMIT)
}

/// A bundle with the busybox tree and `compatrun oci spec`'s config (host name
/// `hooked`, no persona annotation), running `args`, with `extra` merged into the config.
fn bundle(dir: &Path, args: &[&str], extra: serde_json::Value) -> PathBuf {
    let b = common::oci::bundle(dir, args, "host");
    common::oci::edit_config(&b, |config| {
        config["hostname"] = "hooked".into();
        config["annotations"] = serde_json::json!({"run.compatrun.platform": platform()});
        for (k, v) in extra.as_object().into_iter().flatten() {
            config[k] = v.clone();
        }
    });
    b
}

/// `RUNTIME --root STATE ARGS...`: compatrun's `oci` command, or another runtime (runc)
/// to compare with.
fn runtime_cmd(runtime: &Path, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(runtime);
    if runtime == compatrun_bin() {
        cmd.arg("oci");
    }
    cmd.arg("--root").arg(state).args(args);
    cmd
}

/// `RUNTIME --root STATE run --bundle B ID` with stdin closed, bounded in time.
fn run_on(runtime: &Path, state: &Path, b: &Path, id: &str) -> Outcome {
    let mut cmd = runtime_cmd(runtime, state, &["run", "--bundle"]);
    cmd.arg(b).arg(id).stdin(Stdio::null());
    run_cmd_within(cmd, None, LIMIT)
}

fn json(out: &Outcome, what: &str) -> serde_json::Value {
    assert_eq!(out.status, 0, "{what}: {}", out.err());
    serde_json::from_str(&out.out()).unwrap_or_else(|e| panic!("{what}: {e}: {}", out.out()))
}

/// A hook running `script` under `sh` (`path` is where `sh` is found: the host's, or
/// the host's static busybox for a hook that runs in the container).
fn hook(path: &str, argv0: &[&str], script: &str) -> serde_json::Value {
    let mut args: Vec<&str> = argv0.to_vec();
    args.extend(["-c", script]);
    serde_json::json!({"path": path, "args": args, "env": ["PATH=/bin:/usr/bin"]})
}

#[test]
fn hooks_ps_and_list_over_a_containers_life() {
    let test = "hooks_ps_and_list_over_a_containers_life";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-cli-hooks-{}", platform()));
    let root = base.join("state");
    let id = format!("hooks-{}", platform());
    let b = base.join("bundle");
    // Hooks of the runtime's namespaces write into the tree from outside; the two that
    // run in the container write its /tmp (the same directory) and its host name.
    let tmp = b.join("rootfs/tmp");
    let outside = |kind: &str| {
        hook(
            "/bin/sh",
            &["sh"],
            &format!(
                "cat > {t}/{kind}.json; echo {kind} >> {t}/order",
                t = tmp.display()
            ),
        )
    };
    let inside = |kind: &str| {
        format!("cat > /tmp/{kind}.json; hostname > /tmp/{kind}.host; echo {kind} >> /tmp/order")
    };
    bundle(
        &b,
        &["sleep", "1000"],
        serde_json::json!({"hooks": {
            "createRuntime": [outside("createRuntime")],
            // Its path is the runtime's (the host's static busybox), run in the container.
            "createContainer": [hook("/bin/busybox", &["busybox", "sh"], &inside("createContainer"))],
            // Its path is the container's own sh.
            "startContainer": [hook("/bin/sh", &["sh"], &inside("startContainer"))],
            "poststart": [outside("poststart")],
            "poststop": [outside("poststop")],
        }}),
    );
    let order = || std::fs::read_to_string(tmp.join("order")).unwrap_or_default();
    let mut create = Command::new(compatrun_bin());
    create
        .arg("oci")
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle"])
        .arg(&b)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(base.join("container.log")).expect("log"))
        .stderr(std::fs::File::create(base.join("create.err")).expect("log"));
    assert!(
        create.status().expect("create").success(),
        "create: {}",
        std::fs::read_to_string(base.join("create.err")).unwrap_or_default()
    );
    assert_eq!(order(), "createRuntime\ncreateContainer\n");
    let pid = json(&oci(&root, &["state", &id]), "state")["pid"]
        .as_i64()
        .expect("pid");
    let out = oci(&root, &["start", &id]);
    assert_eq!(out.status, 0, "start: {}", out.err());
    assert_eq!(
        order(),
        "createRuntime\ncreateContainer\nstartContainer\npoststart\n"
    );
    for kind in ["createContainer", "startContainer"] {
        let host = std::fs::read_to_string(tmp.join(format!("{kind}.host"))).expect(kind);
        assert_eq!(
            host, "hooked\n",
            "{kind} runs in the container's uts namespace"
        );
    }
    // ps: the container's processes, as pids (JSON) and as a table.
    let pids = json(&oci(&root, &["ps", "--format", "json", &id]), "ps json");
    assert!(
        pids.as_array()
            .is_some_and(|a| a.iter().any(|p| p.as_i64() == Some(pid))),
        "ps json lacks {pid}: {pids}"
    );
    let table = oci(&root, &["ps", &id]);
    assert_eq!(table.status, 0, "ps: {}", table.err());
    assert!(
        table
            .out()
            .lines()
            .any(|l| l.starts_with(&format!("{pid}\t")) && l.contains("sleep 1000")),
        "ps table: {}",
        table.out()
    );
    // list: the container among those under --root.
    let all = json(&oci(&root, &["list", "--format", "json"]), "list json");
    let mine = all
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("list json lacks {id}: {all}"));
    assert_eq!(mine["status"], "running");
    assert_eq!(mine["pid"].as_i64(), Some(pid));
    assert_eq!(mine["bundle"], b.to_str().expect("utf8"));
    let quiet = oci(&root, &["list", "-q"]);
    assert_eq!(quiet.out(), format!("{id}\n"));
    let table = oci(&root, &["list"]);
    assert!(
        table.out().starts_with("ID\tPID\tSTATUS"),
        "{}",
        table.out()
    );
    assert!(
        table
            .out()
            .lines()
            .any(|l| l.starts_with(&format!("{id}\t{pid}\trunning\t"))),
        "{}",
        table.out()
    );
    let out = oci(&root, &["delete", "--force", &id]);
    assert_eq!(out.status, 0, "delete: {}", out.err());
    assert_eq!(
        order(),
        "createRuntime\ncreateContainer\nstartContainer\npoststart\npoststop\n"
    );
    // Each hook got the state: this container, its bundle, its pid while it lived.
    for kind in [
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        let text = std::fs::read_to_string(tmp.join(format!("{kind}.json"))).expect(kind);
        let st: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}: {text}"));
        assert_eq!(st["id"], id.as_str(), "{kind}: {st}");
        assert_eq!(st["bundle"], b.to_str().expect("utf8"), "{kind}: {st}");
        assert_eq!(st["ociVersion"], "1.0.2", "{kind}: {st}");
        let (status, want_pid) = match kind {
            "createRuntime" | "createContainer" | "startContainer" => ("created", pid),
            "poststart" => ("running", pid),
            _ => ("stopped", 0),
        };
        assert_eq!(st["status"], status, "{kind}: {st}");
        assert_eq!(st["pid"].as_i64(), Some(want_pid), "{kind}: {st}");
        // The config's annotations as they were (`state` adds the persona).
        assert_eq!(
            st["annotations"],
            serde_json::json!({"run.compatrun.platform": platform()}),
            "{kind}: {st}"
        );
    }
    assert!(!root.join(&id).exists(), "delete left the state");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn run_gives_the_exit_status_and_errors_reach_the_json_log() {
    let test = "run_gives_the_exit_status_and_errors_reach_the_json_log";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-cli-run-{}", platform()));
    let root = base.join("state");
    let id = format!("run-{}", platform());
    for (script, status) in [
        ("echo ran; exit 7", 7),
        ("kill -TERM $$", 128 + libc::SIGTERM),
    ] {
        let b = bundle(
            &base.join("bundle"),
            &["sh", "-c", script],
            serde_json::json!({}),
        );
        // --systemd-cgroup is accepted (cgroups are managed through cgroupfs).
        let out = oci(
            &root,
            &[
                "--systemd-cgroup",
                "run",
                "--bundle",
                b.to_str().expect("utf8"),
                &id,
            ],
        );
        assert_eq!(out.status, status, "{script}: {}", out.err());
        if status == 7 {
            assert_eq!(out.out(), "ran\n");
        }
        assert!(!root.join(&id).exists(), "run left its state");
    }
    // An error, as runc writes it: one JSON object per line with level, msg and time.
    let log = base.join("runtime.log");
    let _ = std::fs::remove_file(&log);
    let out = oci(
        &root,
        &[
            "--log",
            log.to_str().expect("utf8"),
            "--log-format",
            "json",
            "state",
            "no-such-container",
        ],
    );
    assert_ne!(out.status, 0);
    let text = std::fs::read_to_string(&log).expect("the log file");
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(line["level"], "error", "{line}");
    assert!(
        line["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-container") && m.contains("does not exist")),
        "{line}"
    );
    let time = line["time"].as_str().unwrap_or("");
    assert!(
        humantime_like(time),
        "time is not RFC 3339 in UTC: {time:?}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn humantime_like(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && t.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

#[test]
fn features_says_what_engines_read() {
    let root = common::scratch_dir().join("oci-cli-features");
    let f = json(&oci(&root, &["features"]), "features");
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["ociVersionMax"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "features.hooks lacks {h}: {hooks:?}");
    }
    let has = |v: &serde_json::Value, x: &str| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|e| e.as_str() == Some(x)))
    };
    assert!(has(&f["mountOptions"], "rbind"), "{}", f["mountOptions"]);
    let linux = &f["linux"];
    for ns in ["pid", "mount", "network", "ipc", "uts", "cgroup"] {
        assert!(has(&linux["namespaces"], ns), "{}", linux["namespaces"]);
    }
    assert!(has(&linux["capabilities"], "CAP_SYS_ADMIN"));
    assert_eq!(linux["cgroup"]["v2"], true);
    let sc = &linux["seccomp"];
    assert_eq!(sc["enabled"], true, "{sc}");
    for a in [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRACE",
    ] {
        assert!(has(&sc["actions"], a), "{sc}");
    }
    assert!(!has(&sc["actions"], "SCMP_ACT_NOTIFY"), "{sc}");
    assert!(has(&sc["operators"], "SCMP_CMP_MASKED_EQ"), "{sc}");
    for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
        assert!(has(&sc["archs"], a), "{sc}");
    }
    assert!(
        has(&sc["supportedFlags"], "SECCOMP_FILTER_FLAG_LOG"),
        "{sc}"
    );
    assert_eq!(
        f["annotations"]["run.compatrun.persona"]
            .as_str()
            .map(str::is_empty),
        Some(false)
    );
}

/// A non-root `process.user` gets no_new_privs only when the config asks for it, as
/// under runc (with it, setuid programs such as su or ping would stop working): the
/// status lines the process sees match runc's on the same bundle.
#[test]
fn a_non_root_user_gets_no_new_privs_only_when_asked() {
    let test = "a_non_root_user_gets_no_new_privs_only_when_asked";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-cli-nnp-{}", platform()));
    let root = base.join("state");
    let id = format!("nnp-{}", platform());
    // (Seccomp: differs by design: compatrun's filter is always there.)
    let script = "grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|NoNewPrivs):' /proc/self/status";
    for nnp in [false, true] {
        let b = bundle(
            &base.join("bundle"),
            &["sh", "-c", script],
            serde_json::json!({}),
        );
        common::oci::edit_config(&b, |c| {
            c["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
            c["process"]["noNewPrivileges"] = nnp.into();
        });
        let run = |runtime: &Path, state: &Path| run_on(runtime, state, &b, &id);
        let ours = run(&compatrun_bin(), &root);
        assert_eq!(ours.status, 0, "nnp {nnp}: {}", ours.err());
        let out = ours.out();
        assert!(
            out.contains(&format!("NoNewPrivs:\t{}\n", u8::from(nnp))),
            "nnp {nnp}: {out}"
        );
        assert!(out.contains("Uid:\t1000\t1000\t1000\t1000\n"), "{out}");
        if common::have("runc") {
            let theirs = run(Path::new("runc"), &base.join("runc-state"));
            assert_eq!(theirs.status, 0, "runc: {}", theirs.err());
            assert_eq!(out, theirs.out(), "nnp {nnp}: compatrun against runc");
        } else {
            skip(
                test,
                "runc is missing (scripts/test-deps.sh installs it): no comparison",
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// `run` in the foreground passes the signals it gets on to the container's process, as
/// runc's does: SIGTERM to `run` reaches the program (which traps it and exits 9), and
/// `run` returns that status with the container deleted. Without this the command died
/// and left the container running. Same status and output as runc.
#[test]
fn run_in_the_foreground_passes_signals_on() {
    let test = "run_in_the_foreground_passes_signals_on";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-cli-fwd-{}", platform()));
    let id = format!("fwd-{}", platform());
    let b = bundle(
        &base.join("bundle"),
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        serde_json::json!({}),
    );
    let mut runtimes = vec![(compatrun_bin(), base.join("state"))];
    if common::have("runc") {
        runtimes.push((PathBuf::from("runc"), base.join("runc-state")));
    } else {
        skip(
            test,
            "runc is missing (scripts/test-deps.sh installs it): no comparison",
        );
    }
    for (runtime, root) in runtimes {
        let command = |args: &[&str]| runtime_cmd(&runtime, &root, args);
        // What an interrupted earlier run may have left.
        let _ = command(&["delete", "--force", &id])
            .stdin(Stdio::null())
            .output();
        let mut run = command(&["run", "--bundle"]);
        run.arg(&b).arg(&id);
        let mut live = common::live::Live::spawn(run);
        live.expect_line("ready");
        live.signal(libc::SIGTERM);
        let (status, lines, err) = live.finish_within(LIMIT);
        let who = runtime.display();
        assert_eq!(
            (status, lines.last().map(String::as_str)),
            (9, Some("got TERM")),
            "{who}: {err}"
        );
        let mut list = command(&["list", "--quiet"]);
        list.stdin(Stdio::null());
        let list = run_cmd_within(list, None, LIMIT);
        assert!(
            !list.out().contains(&id),
            "{who} left the container: {}",
            list.out()
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// `linux.maskedPaths` naming paths of the container's own tree (a directory with
/// files, a file, paths below the masked directory): hidden as under runc (an empty
/// directory, an empty file), judged in the tree rather than on the host.
#[test]
fn masked_paths_in_the_tree_are_hidden_as_under_runc() {
    let test = "masked_paths_in_the_tree_are_hidden_as_under_runc";
    if !is_root() {
        return skip(test, "an OCI runtime needs root (namespaces, mounts)");
    }
    let base = common::scratch_dir().join(format!("oci-cli-masked-{}", platform()));
    let id = format!("masked-{}", platform());
    let script = "echo dir $(ls -A /masked-dir | wc -l); echo file $(cat /masked-file | wc -c); \
                  echo below $(cat /masked-dir/sub/file 2>/dev/null | wc -c); echo end";
    let b = bundle(
        &base.join("bundle"),
        &["sh", "-c", script],
        serde_json::json!({}),
    );
    let rootfs = b.join("rootfs");
    std::fs::create_dir_all(rootfs.join("masked-dir/sub")).expect("mkdir");
    std::fs::write(rootfs.join("masked-dir/sub/file"), "secret").expect("write");
    std::fs::write(rootfs.join("masked-file"), "secret").expect("write");
    common::oci::edit_config(&b, |c| {
        c["linux"]["maskedPaths"] = serde_json::json!([
            "/masked-dir",
            "/masked-file",
            "/masked-dir/sub/file",
            "/absent"
        ]);
    });
    let run = |runtime: &Path, state: &Path| run_on(runtime, state, &b, &id);
    let ours = run(&compatrun_bin(), &base.join("state"));
    assert_eq!(
        (ours.status, ours.out().as_str()),
        (0, "dir 0\nfile 0\nbelow 0\nend\n"),
        "{}",
        ours.err()
    );
    if common::have("runc") {
        let theirs = run(Path::new("runc"), &base.join("runc-state"));
        assert_eq!(
            (ours.status, ours.out()),
            (theirs.status, theirs.out()),
            "runc: {}",
            theirs.err()
        );
    } else {
        skip(
            test,
            "runc is missing (scripts/test-deps.sh installs it): no comparison",
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
