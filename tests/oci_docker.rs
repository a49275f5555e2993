//! Docker with compatrun as a runtime: Debian's docker.io 20.10 (installed by
//! scripts/test-deps.sh), a daemon of the test's own (its own data root, exec root, socket
//! and containerd, no iptables, no bridge), stopped and cleaned up by a guard. Docker 20.10
//! has no `run --annotation`, so the persona comes from a second runtime entry whose
//! runtime arguments carry `--kernel-persona rhel6`; both entries pass the suite's
//! platform. Also what Docker needed of compatrun, checked without Docker: repeated
//! global flags (the last wins, as in runc), resources left at zero, and a state root so
//! deep that a socket path in it would not fit a socket address.
//! Skips visibly when not root or when docker.io is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::oci::wait_for;
use common::{busybox_tree, compatrun_bin, is_root, platform, run_cmd, skip, Outcome};

const RHEL6: &str = "2.6.32-754.el6.x86_64";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client, which speaks the daemon's API version (another `docker` may be first
/// on PATH).
const DOCKER: &str = "/usr/bin/docker";

/// A dockerd of the test's own. Dropping it removes every container, stops the daemon
/// (and the containerd it started), unmounts what it left and removes its directory.
struct Dockerd {
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    /// Starts dockerd in a fresh directory under /tmp (short: its sockets live there)
    /// with runtimes `compatrun` and `compatrun-rhel6`, both the link `runtime`. Err
    /// with dockerd's own words if it does not come up.
    fn start(runtime: &Path) -> Result<Self, String> {
        let dir = PathBuf::from(format!(
            "/tmp/compatrun-docker-{}-{}",
            platform(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let rt = runtime.to_str().expect("utf8");
        let config = serde_json::json!({
            "runtimes": {
                "compatrun": {"path": rt, "runtimeArgs": ["--platform", platform()]},
                "compatrun-rhel6": {
                    "path": rt,
                    "runtimeArgs": ["--platform", platform(), "--kernel-persona", "rhel6"],
                },
            },
            // Otherwise dockerd writes its key into /etc/docker.
            "deprecated-key-path": dir.join("key.json"),
        });
        std::fs::write(dir.join("daemon.json"), config.to_string()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(DOCKERD)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("sock").display()))
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{DOCKERD}: {e}"))?;
        let mut d = Dockerd { dir, child };
        let start = Instant::now();
        loop {
            if d.docker(&["version"]).status == 0 {
                return Ok(d);
            }
            let exited = d.child.try_wait().ok().flatten();
            if exited.is_some() || start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
                let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return Err(format!("dockerd did not come up ({exited:?}): {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.arg("-H")
            .arg(format!("unix://{}", self.dir.join("sock").display()))
            .args(args);
        c
    }

    fn docker(&self, args: &[&str]) -> Outcome {
        run_cmd(self.cmd(args), None)
    }

    /// `docker run` through `runtime` (with Docker's default seccomp profile).
    fn run(&self, runtime: &str, extra: &[&str], image: &str, argv: &[&str]) -> Outcome {
        let mut args = vec!["run", "--runtime", runtime];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(argv);
        self.docker(&args)
    }

    /// Where the runc shim keeps the runtime's state (its `--root`).
    fn runtime_root(&self) -> PathBuf {
        self.dir.join("exec/runtime-runc/moby")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]).out();
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if self.child.try_wait().ok().flatten().is_none() {
            common::live::signal(i32::try_from(self.child.id()).expect("pid"), libc::SIGTERM);
            let start = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // dockerd unmounts its overlays and network namespaces when it stops; if it was
        // killed, they are still there: deepest first.
        let prefix = format!("{}/", self.dir.display());
        let mut left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A link named `compatrun-runc` to the binary, as an engine's runtime path names it.
fn runtime_link() -> PathBuf {
    let dir = common::scratch_dir().join(format!("oci-docker-runtime-{}", platform()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let link = dir.join("compatrun-runc");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(compatrun_bin(), &link).expect("symlink");
    link
}

#[test]
fn docker_runs_an_imported_tree_under_a_persona() {
    let test = "docker_runs_an_imported_tree_under_a_persona";
    if !is_root() {
        return skip(test, "dockerd needs root");
    }
    if !Path::new(DOCKERD).exists() || !Path::new(DOCKER).exists() {
        return skip(
            test,
            "Debian's docker.io is not installed (scripts/test-deps.sh installs it)",
        );
    }
    let d = match Dockerd::start(&runtime_link()) {
        Ok(d) => d,
        Err(why) => return skip(test, &why),
    };
    let tree = d.dir.join("tree");
    busybox_tree(&tree).expect("busybox tree");
    let image = "compatrun-busybox:test";
    let out = run_cmd(
        {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "tar -C '{}' -c . | {DOCKER} -H 'unix://{}' import - {image}",
                tree.display(),
                d.dir.join("sock").display()
            ));
            c
        },
        None,
    );
    assert_eq!(out.status, 0, "docker import: {}", out.err());

    // No persona: the host's kernel, and the exit status reaches docker.
    let out = d.run(
        "compatrun",
        &["--rm"],
        image,
        &["sh", "-c", "uname -r; exit 3"],
    );
    assert_eq!(out.status, 3, "{}", out.err());
    assert_eq!(out.out(), common::native(&["uname", "-r"]).out());

    // The runtime-wide persona: uname and /proc agree.
    let out = d.run(
        "compatrun-rhel6",
        &["--rm"],
        image,
        &["sh", "-c", "uname -r; cat /proc/sys/kernel/osrelease"],
    );
    assert_eq!(out.status, 0, "{}", out.err());
    assert_eq!(out.out(), format!("{RHEL6}\n{RHEL6}\n"));

    // Detached, then exec (under the container's persona), stop and rm.
    let out = d.run(
        "compatrun-rhel6",
        &["-d", "--name", "compatrun-detached"],
        image,
        &["sleep", "1000"],
    );
    assert_eq!(out.status, 0, "run -d: {}", out.err());
    let id = out.out().trim().to_owned();
    let mut st = Command::new(compatrun_bin());
    st.arg("oci")
        .arg("--root")
        .arg(d.runtime_root())
        .args(["state", &id]);
    let st = run_cmd(st, None);
    assert_eq!(st.status, 0, "state: {}", st.err());
    let st: serde_json::Value = serde_json::from_str(&st.out()).expect("state is JSON");
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["annotations"]["run.compatrun.persona"], "rhel6", "{st}");
    assert_eq!(
        st["annotations"]["run.compatrun.platform"],
        platform(),
        "{st}"
    );
    let out = d.docker(&[
        "exec",
        "compatrun-detached",
        "sh",
        "-c",
        "uname -r; cat /proc/sys/kernel/osrelease; exit 4",
    ]);
    assert_eq!(out.status, 4, "exec: {}", out.err());
    assert_eq!(out.out(), format!("{RHEL6}\n{RHEL6}\n"));
    let out = d.docker(&["stop", "-t", "5", "compatrun-detached"]);
    assert_eq!(out.status, 0, "stop: {}", out.err());
    let out = d.docker(&["inspect", "-f", "{{.State.ExitCode}}", "compatrun-detached"]);
    assert_eq!(
        out.out().trim(),
        "143",
        "sleep ends by SIGTERM: {}",
        out.err()
    );
    let out = d.docker(&["rm", "compatrun-detached"]);
    assert_eq!(out.status, 0, "rm: {}", out.err());
    // Nothing left: the runtime's state, the container's cgroup.
    assert!(!d.runtime_root().join(&id).exists(), "state left after rm");
    wait_for("the container's cgroup to go", || {
        !Path::new("/sys/fs/cgroup/pids/docker").join(&id).exists()
            && !Path::new("/sys/fs/cgroup/docker").join(&id).exists()
    });
}

/// `compatrun oci run` of the busybox tree with `linux` fields merged in, under a deep
/// state root; the run's outcome (its files are removed after).
fn oci_run(name: &str, linux: serde_json::Value) -> Outcome {
    let base = common::scratch_dir().join(format!("oci-docker-{name}-{}", platform()));
    let _ = std::fs::remove_dir_all(&base);
    let bundle = base.join("bundle");
    busybox_tree(&bundle.join("rootfs")).expect("busybox tree");
    let mut spec = Command::new(compatrun_bin());
    spec.args(["oci", "spec", "--bundle"]).arg(&bundle);
    let out = run_cmd(spec, None);
    assert_eq!(out.status, 0, "spec: {}", out.err());
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["args"] = serde_json::json!(["sh", "-c", "exit 7"]);
    config["process"]["terminal"] = false.into();
    config["annotations"] = serde_json::json!({"run.compatrun.platform": platform()});
    for (k, v) in linux.as_object().expect("object") {
        config["linux"][k] = v.clone();
    }
    std::fs::write(&path, config.to_string()).expect("write");
    let id = format!("docker-{name}-{}", platform());
    // A state root as deep as Docker's (/var/run/docker/runtime-runc/moby/ID/): the
    // socket create binds there must still fit in a socket address.
    let root = base.join("state").join("d".repeat(80));
    let mut run = Command::new(compatrun_bin());
    run.arg("oci")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id);
    let out = run_cmd(run, None);
    assert!(!root.join(&id).exists(), "state left after run");
    let _ = std::fs::remove_dir_all(&base);
    out
}

#[test]
fn resources_left_at_zero_are_no_limits() {
    let test = "resources_left_at_zero_are_no_limits";
    if !is_root() {
        return skip(
            test,
            "an OCI runtime needs root (namespaces, cgroups, mounts)",
        );
    }
    // What Docker sends for a container without limits: runc writes nothing for them.
    let out = oci_run(
        "zero",
        serde_json::json!({
            "resources": {
                "memory": {"disableOOMKiller": false},
                "cpu": {"shares": 0},
                "blockIO": {"weight": 0},
                "devices": [{"allow": false, "access": "rwm"}],
            },
        }),
    );
    assert_eq!(out.status, 7, "{}", out.err());
    // A limit compatrun cannot set is refused naming the field.
    let out = oci_run(
        "weight",
        serde_json::json!({"resources": {"blockIO": {"weight": 500}}}),
    );
    assert_ne!(out.status, 0);
    assert!(
        out.err().contains("linux.resources.blockIO.weight"),
        "{}",
        out.err()
    );
}

#[test]
fn repeated_global_flags_take_the_last() {
    // Docker runs a runtime that has runtimeArgs through a script that puts those
    // arguments before the shim's own `--root`, `--log` and `--log-format`; runc takes
    // the last of each.
    let base = common::scratch_dir().join(format!("oci-docker-flags-{}", platform()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("mkdir");
    let (first, last) = (base.join("first.log"), base.join("last.log"));
    let mut cmd = Command::new(runtime_link());
    cmd.arg("--log")
        .arg(&first)
        .arg("--root")
        .arg(base.join("state"))
        .arg("--log")
        .arg(&last)
        .args(["--log-format", "json", "state", "no-such-container"]);
    let out = run_cmd(cmd, None);
    assert_ne!(out.status, 0, "state of a container that does not exist");
    assert!(!first.exists(), "the first --log was used");
    let line = std::fs::read_to_string(&last).expect("the last --log is written");
    let msg: serde_json::Value =
        serde_json::from_str(line.lines().next().expect("a line")).expect("a JSON line");
    assert_eq!(msg["level"], "error", "{line}");
    assert!(
        msg["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-container")),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// `compatrun oci ARGS` under `root`, its output going to files in `base` (a detached
/// container keeps what it inherited open); the exit status and stderr.
fn oci_detached(base: &Path, root: &Path, args: &[&str]) -> (i32, String) {
    let err = base.join("oci.err");
    let status = Command::new(compatrun_bin())
        .arg("oci")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(base.join("oci.out")).expect("log"))
        .stderr(std::fs::File::create(&err).expect("log"))
        .status()
        .expect("run compatrun oci");
    (
        status.code().unwrap_or(125),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}

#[test]
fn a_detached_exec_outlives_its_process_file() {
    // containerd's runc shim removes the process.json it passed to `exec --detach --process`
    // as soon as that command returns, before the detached helper may have read it.
    let test = "a_detached_exec_outlives_its_process_file";
    if !is_root() {
        return skip(
            test,
            "an OCI runtime needs root (namespaces, cgroups, mounts)",
        );
    }
    let base = common::scratch_dir().join(format!("oci-docker-exec-{}", platform()));
    let _ = std::fs::remove_dir_all(&base);
    let bundle = base.join("bundle");
    busybox_tree(&bundle.join("rootfs")).expect("busybox tree");
    let mut spec = Command::new(compatrun_bin());
    spec.args(["oci", "spec", "--bundle"]).arg(&bundle);
    assert_eq!(run_cmd(spec, None).status, 0);
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    config["process"]["terminal"] = false.into();
    config["root"]["readonly"] = false.into();
    config["annotations"] = serde_json::json!({"run.compatrun.platform": platform()});
    std::fs::write(&path, config.to_string()).expect("write");
    let root = base.join("state");
    let id = format!("docker-exec-{}", platform());
    let b = bundle.to_str().expect("utf8");
    let (status, err) = oci_detached(&base, &root, &["run", "--detach", "--bundle", b, &id]);
    assert_eq!(status, 0, "run --detach: {err}");
    let process = base.join("process.json");
    let p = serde_json::json!({
        "args": ["sh", "-c", "echo ran > /tmp/exec-ran"],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
    });
    std::fs::write(&process, p.to_string()).expect("write");
    let pid_file = base.join("exec.pid");
    let (status, err) = oci_detached(
        &base,
        &root,
        &[
            "exec",
            "--detach",
            "--process",
            process.to_str().expect("utf8"),
            "--pid-file",
            pid_file.to_str().expect("utf8"),
            &id,
        ],
    );
    std::fs::remove_file(&process).expect("remove process.json");
    assert_eq!(status, 0, "exec --detach: {err}");
    let ran = bundle.join("rootfs/tmp/exec-ran");
    wait_for("the detached exec's output", || {
        std::fs::read_to_string(&ran).is_ok_and(|s| s == "ran\n")
    });
    let (status, err) = oci_detached(&base, &root, &["delete", "--force", &id]);
    assert_eq!(status, 0, "delete --force: {err}");
    assert!(!root.join(&id).exists(), "state left after delete");
    let _ = std::fs::remove_dir_all(&base);
}
