//! Terminals of compatrun as an OCI runtime (`process.terminal`), as runc gives them.
//!
//! Without an engine: a console socket served here receives the pty master that
//! `create --console-socket` hands out (one `SCM_RIGHTS` message named `/dev/ptmx`); the
//! container's program, started through it, shows its terminal (`tty`), the config's
//! `consoleSize` (`stty size`) and consumes what is typed; `exec --detach -t
//! --console-socket` gives a second process a second pty of the same devpts instance;
//! foreground `run` and `exec -t` proxy the pty to their own stdin and stdout; runc's
//! refusals (a detached terminal without a socket, a socket without a terminal).
//!
//! With podman (installed by scripts/test-deps.sh): `podman run -t` and `podman exec -t`
//! driven in a pty by tests/fixtures/ptydrive.py, under the rhel6 persona.
//!
//! Skips visibly when not root, without busybox, podman or a pty.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::oci::{bundle, edit_config, import, oci, runtime_link, state, Podman, RHEL6};
use common::{busybox_tree, compatrun_bin, have, is_root, platform, run_cmd, skip};

/// A guard against hangs, never a measurement.
const BOUND: Duration = Duration::from_secs(30);

/// Why a pty cannot be had here, if it cannot.
fn no_pty() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/ptmx: {e}")),
    }
}

/// The console socket's side: the master the runtime sends, and its name.
fn receive_master(listener: &UnixListener) -> (std::fs::File, String) {
    listener.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < BOUND,
                    "no connection on the console socket"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(BOUND)).expect("timeout");
    let (fd, name) = platform::sys::console::recv_fd_with_name(conn.as_fd())
        .expect("recvmsg on the console socket")
        .expect("a descriptor on the console socket");
    (
        std::fs::File::from(fd),
        String::from_utf8_lossy(&name).into_owned(),
    )
}

/// Reads the terminal until `pattern` is in what was read (what was read is returned).
fn read_until(master: &mut std::fs::File, seen: &mut String, pattern: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reader = master.try_clone().expect("dup master");
    let pattern_owned = pattern.to_owned();
    let mut text = std::mem::take(seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !text.contains(&pattern_owned) {
            match reader.read(&mut buf) {
                Ok(n) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => break,
            }
        }
        let _ = tx.send(text);
    });
    *seen = rx
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("the terminal did not show {pattern:?}"));
    assert!(
        seen.contains(pattern),
        "the terminal ended before {pattern:?}: {seen:?}"
    );
}

/// A busybox bundle under `base` whose process is `sh -c SCRIPT` with a terminal (see
/// [`terminal_process`]), under `persona`.
fn tty_bundle(base: &Path, persona: &str, script: &str) -> PathBuf {
    let b = bundle(&base.join("bundle"), &["true"], persona);
    edit_config(&b, |c| {
        terminal_process(&mut c["process"], &["sh", "-c", script])
    });
    b
}

/// A config.json `process` with a terminal of 37 rows and 101 columns.
fn terminal_process(process: &mut serde_json::Value, args: &[&str]) {
    process["args"] = serde_json::json!(args);
    process["terminal"] = true.into();
    process["consoleSize"] = serde_json::json!({"height": 37, "width": 101});
}

/// For `test`, a terminal container's scratch directory, state root and id (`name` and
/// the platform), with what an interrupted earlier run left deleted; `None` once the
/// test is skipped by name where root or a pseudo-terminal is missing.
fn tty_container(test: &str, name: &str) -> Option<(PathBuf, PathBuf, String)> {
    if !is_root() {
        skip(
            test,
            "an OCI runtime needs root (namespaces, cgroups, mounts)",
        );
        return None;
    }
    if let Some(why) = no_pty() {
        skip(test, &why);
        return None;
    }
    let base = common::scratch_dir().join(format!("oci-{name}-{}", platform()));
    let root = base.join("state");
    let id = format!("{name}-{}", platform());
    let _ = oci(&root, &["delete", "--force", &id]);
    Some((base, root, id))
}

#[test]
fn console_socket_gets_the_containers_terminal() {
    let Some((base, root, id)) =
        tty_container("console_socket_gets_the_containers_terminal", "tty")
    else {
        return;
    };
    let b = tty_bundle(&base, "rhel6", "busybox tty; busybox stty size; uname -r; busybox stat -c 'console %t:%T' /dev/console; read line; echo \"got:$line\"; exec sleep 1000");
    let sock = base.join("console.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).expect("bind the console socket");
    let create = Command::new(compatrun_bin())
        .arg("oci")
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle"])
        .arg(&b)
        .arg("--console-socket")
        .arg(&sock)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(base.join("create.err")).expect("log"))
        .status()
        .expect("run create");
    assert!(
        create.success(),
        "create: {}",
        std::fs::read_to_string(base.join("create.err")).unwrap_or_default()
    );
    // runc's message: the master, named by the bytes that come with it.
    let (mut master, name) = receive_master(&listener);
    assert_eq!(name, "/dev/ptmx");
    assert_eq!(state(&root, &id)["status"], "created");
    let out = oci(&root, &["start", &id]);
    assert_eq!(out.status, 0, "start: {}", out.err());
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "/dev/pts/0");
    read_until(&mut master, &mut seen, "37 101");
    read_until(&mut master, &mut seen, RHEL6);
    // /dev/console is that terminal too (pty slaves have major 136, 0x88), as under runc.
    read_until(&mut master, &mut seen, "console 88:0");
    // Typed input is echoed by the terminal and read by the program.
    master.write_all(b"hello\r").expect("type");
    read_until(&mut master, &mut seen, "got:hello");
    assert!(seen.contains("hello\r\n"), "no echo: {seen:?}");

    // A second process with a terminal of its own, from the same devpts instance.
    let proc_json = base.join("process.json");
    let mut p = serde_json::json!({"cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    terminal_process(
        &mut p,
        &[
            "sh",
            "-c",
            "busybox tty; busybox stty size; uname -r; exit 0",
        ],
    );
    std::fs::write(&proc_json, p.to_string()).expect("process.json");
    let sock2 = base.join("console2.sock");
    let _ = std::fs::remove_file(&sock2);
    let listener2 = UnixListener::bind(&sock2).expect("bind");
    let out = oci(
        &root,
        &[
            "exec",
            "--detach",
            "--process",
            proc_json.to_str().expect("utf8"),
            "--console-socket",
            sock2.to_str().expect("utf8"),
            &id,
        ],
    );
    assert_eq!(out.status, 0, "exec --detach: {}", out.err());
    let (mut master2, name2) = receive_master(&listener2);
    assert_eq!(name2, "/dev/ptmx");
    let mut seen2 = String::new();
    read_until(&mut master2, &mut seen2, "/dev/pts/1");
    read_until(&mut master2, &mut seen2, "37 101");
    read_until(&mut master2, &mut seen2, RHEL6);

    // In the foreground without a socket, exec -t proxies the pty to its own stdio.
    let out = oci(
        &root,
        &["exec", "-t", &id, "sh", "-c", "busybox tty; exit 5"],
    );
    assert_eq!(out.status, 5, "exec -t: {}", out.err());
    assert!(out.out().contains("/dev/pts/"), "{}", out.out());

    // runc's refusals.
    let out = oci(&root, &["exec", "--detach", "-t", &id, "true"]);
    assert_ne!(out.status, 0);
    assert!(
        out.err()
            .contains("cannot allocate tty if runc will detach without setting console socket"),
        "{}",
        out.err()
    );
    let out = oci(
        &root,
        &[
            "exec",
            "--console-socket",
            sock2.to_str().expect("utf8"),
            &id,
            "true",
        ],
    );
    assert_ne!(out.status, 0);
    assert!(
        out.err()
            .contains("cannot use console socket if runc will not detach or allocate tty"),
        "{}",
        out.err()
    );

    common::oci::kill_and_delete(&root, &id, "KILL");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn run_in_the_foreground_proxies_the_terminal() {
    let Some((base, root, id)) =
        tty_container("run_in_the_foreground_proxies_the_terminal", "tty-run")
    else {
        return;
    };
    let b = tty_bundle(
        &base,
        "rhel6",
        "busybox tty; uname -r; read line; echo \"got:$line\"; exit 7",
    );
    // Keys come from our stdin (a pipe here), the screen goes to our stdout.
    let mut cmd = Command::new(compatrun_bin());
    cmd.arg("oci")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&b)
        .arg(&id);
    let out = run_cmd(cmd, Some(b"typed\r"));
    assert_eq!(out.status, 7, "run: {}", out.err());
    let text = out.out();
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains(RHEL6), "{text}");
    assert!(text.contains("got:typed"), "{text}");
    assert!(!root.join(&id).exists(), "state left after run");
    // Detached with a terminal but no socket: refused as runc refuses it, nothing left.
    let out = oci(
        &root,
        &[
            "run",
            "--detach",
            "--bundle",
            b.to_str().expect("utf8"),
            &id,
        ],
    );
    assert_ne!(out.status, 0);
    assert!(
        out.err()
            .contains("cannot allocate tty if runc will detach without setting console socket"),
        "{}",
        out.err()
    );
    assert!(!root.join(&id).exists(), "state left after a refused run");
    // Without a devpts in the container its /dev/ptmx leads nowhere: create fails,
    // naming the terminal, and leaves nothing.
    edit_config(&b, |c| {
        let mounts = c["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| m["type"] != "devpts");
    });
    let sock = base.join("console.sock");
    let _ = std::fs::remove_file(&sock);
    let _listener = UnixListener::bind(&sock).expect("bind");
    let out = oci(
        &root,
        &[
            "create",
            "--bundle",
            b.to_str().expect("utf8"),
            "--console-socket",
            sock.to_str().expect("utf8"),
            &id,
        ],
    );
    assert_ne!(out.status, 0);
    assert!(out.err().contains("make the terminal"), "{}", out.err());
    assert!(!root.join(&id).exists(), "state left after a failed create");
    // A console socket without a terminal.
    edit_config(&b, |c| c["process"]["terminal"] = false.into());
    let out = oci(
        &root,
        &[
            "create",
            "--bundle",
            b.to_str().expect("utf8"),
            "--console-socket",
            base.join("none.sock").to_str().expect("utf8"),
            &id,
        ],
    );
    assert_ne!(out.status, 0);
    assert!(
        out.err()
            .contains("cannot use console socket if runc will not detach or allocate tty"),
        "{}",
        out.err()
    );
    assert!(
        !root.join(&id).exists(),
        "state left after a refused create"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Runs `argv` in a new pty through tests/fixtures/ptydrive.py, taking `steps` (its
/// JSON list) and waiting for it to exit; returns the transcript (its last line says
/// the exit status).
fn drive(steps: serde_json::Value, argv: &[std::ffi::OsString]) -> String {
    let steps_file = common::scratch_dir().join(format!("{}.json", common::unique_marker("steps")));
    std::fs::write(&steps_file, steps.to_string()).expect("steps");
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ptydrive.py"))
        .arg(&steps_file)
        .arg("--")
        .args(argv)
        .env("PTYDRIVE_TIMEOUT", "60");
    let out = run_cmd(cmd, None);
    let _ = std::fs::remove_file(&steps_file);
    assert_eq!(out.status, 0, "ptydrive: {}", out.err());
    out.out()
}

fn podman_argv(p: &Podman, args: &[String]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["podman".into(), "--runtime".into()];
    v.push(p.runtime.clone().into_os_string());
    v.extend(args.iter().map(Into::into));
    v
}

#[test]
fn podman_run_t_and_exec_t_through_a_pty() {
    let test = "podman_run_t_and_exec_t_through_a_pty";
    if !is_root() {
        return skip(test, "podman's rootful mode needs root");
    }
    if !have("podman") {
        return skip(
            test,
            "podman is not installed (scripts/test-deps.sh installs it)",
        );
    }
    if !have("python3") {
        return skip(test, "python3 is not installed (it drives the pty)");
    }
    if let Some(why) = no_pty() {
        return skip(test, &why);
    }
    let p = Podman {
        runtime: runtime_link(),
    };
    let tree = common::scratch_dir().join("oci-tty-podman-tree");
    busybox_tree(&tree).expect("busybox tree");
    let image = format!("localhost/compatrun-busybox-tty-{}:test", platform());
    import(&tree, &image).expect("podman import");
    let persona = ["--annotation", "run.compatrun.persona=rhel6"];
    // run -t: conmon gets the master over its console socket and joins it to ours.
    let mut extra = vec!["--rm", "-t"];
    extra.extend(persona);
    let args = p.run_args(
        &extra,
        &image,
        &["sh", "-c", "uname -r; busybox tty; exit 3"],
    );
    let text = drive(serde_json::json!([["wait_exit"]]), &podman_argv(&p, &args));
    assert!(text.contains(RHEL6), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("PTYDRIVE EXIT 3"), "{text}");
    // exec -t into a detached container.
    let name = format!("compatrun-tty-{}", platform());
    let _ = run_cmd(p.cmd(&["rm", "-f", &name]), None);
    let mut extra = vec!["-d", "--name", &name];
    extra.extend(persona);
    let out = p.run(&extra, &image, &["sleep", "1000"]);
    assert_eq!(out.status, 0, "run -d: {}", out.err());
    let args: Vec<String> = [
        "exec",
        "-t",
        &name,
        "sh",
        "-c",
        "uname -r; busybox tty; exit 4",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let text = drive(serde_json::json!([["wait_exit"]]), &podman_argv(&p, &args));
    let _ = run_cmd(p.cmd(&["rm", "-f", "-t", "0", &name]), None);
    assert!(text.contains(RHEL6), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("PTYDRIVE EXIT 4"), "{text}");
}

/// In the foreground, `run` proxying a container's terminal gives it our terminal's
/// window size, at start and after every change (the container's shell, polling
/// `stty size`, sees each new size); Ctrl-C typed then reaches the container's shell.
#[test]
fn run_in_the_foreground_follows_the_window_size() {
    let Some((base, root, id)) = tty_container(
        "run_in_the_foreground_follows_the_window_size",
        "tty-resize",
    ) else {
        return;
    };
    if !have("python3") {
        return skip(
            "run_in_the_foreground_follows_the_window_size",
            "python3 is needed to drive a pseudo-terminal",
        );
    }
    let b = tty_bundle(
        &base,
        "host",
        "echo ready; while :; do busybox stty size; busybox sleep 0.1; done",
    );
    let steps = serde_json::json!([
        ["resize", 33, 99],
        ["expect", "ready"],
        ["expect", "33 99"],
        ["resize", 41, 111],
        ["expect", "41 111"],
        ["send", "\u{3}"],
        ["wait_exit"],
    ]);
    let mut argv: Vec<std::ffi::OsString> = vec![compatrun_bin().into(), "oci".into()];
    argv.extend(["--root".into(), root.clone().into_os_string()]);
    argv.extend([
        "run".into(),
        "--bundle".into(),
        b.clone().into_os_string(),
        id.clone().into(),
    ]);
    let transcript = drive(steps, &argv);
    // The shell dies of SIGINT (130); no PTYDRIVE FAILED line.
    assert!(
        transcript.trim_end().ends_with("PTYDRIVE EXIT 130"),
        "{transcript}"
    );
    assert!(!root.join(&id).exists(), "state left after run");
    let _ = std::fs::remove_dir_all(&base);
}
