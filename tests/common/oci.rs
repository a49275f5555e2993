//! Helpers of the OCI runtime tests (tests/oci*.rs): the runtime link engines call,
//! `compatrun oci` with a state root, a busybox bundle, `state`, and podman with
//! compatrun as its runtime.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{busybox_tree, compatrun_bin, platform, run_cmd, Outcome};

/// The release the rhel6 persona reports.
pub const RHEL6: &str = "2.6.32-754.el6.x86_64";

/// A link named `compatrun-runc` to the binary: how engines call compatrun (runc's
/// command line, global flags first).
pub fn runtime_link() -> PathBuf {
    let dir = super::scratch_dir().join("oci-runtime");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let link = dir.join("compatrun-runc");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(compatrun_bin(), &link).expect("symlink");
    link
}

/// `compatrun oci --root ROOT ARGS...`.
pub fn oci(root: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(compatrun_bin());
    cmd.arg("oci").arg("--root").arg(root).args(args);
    run_cmd(cmd, None)
}

/// A bundle with the busybox tree and `compatrun oci spec`'s config, running `args`.
pub fn bundle(dir: &Path, args: &[&str], persona: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    busybox_tree(&dir.join("rootfs")).expect("busybox tree");
    let out = oci(dir, &["spec", "--bundle", dir.to_str().expect("utf8")]);
    assert_eq!(out.status, 0, "spec: {}", out.err());
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["args"] = serde_json::json!(args);
    config["process"]["terminal"] = false.into();
    config["root"]["readonly"] = false.into();
    config["annotations"] = serde_json::json!({
        "run.compatrun.persona": persona,
        "run.compatrun.platform": platform(),
    });
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
    dir.to_path_buf()
}

/// Changes the bundle's config.json with `edit`.
pub fn edit_config(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
}

/// `state ID` as JSON.
pub fn state(root: &Path, id: &str) -> serde_json::Value {
    let out = oci(root, &["state", id]);
    assert_eq!(out.status, 0, "state: {}", out.err());
    serde_json::from_str(&out.out()).expect("state is JSON")
}

/// Waits (at most 30 s, a guard against hangs) until `cond` holds.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// podman with compatrun as its runtime, set up as a fresh machine has it.
pub struct Podman {
    /// The runtime podman calls.
    pub runtime: PathBuf,
}

impl Podman {
    /// `podman --runtime RUNTIME ARGS...`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--runtime").arg(&self.runtime).args(args);
        c
    }

    /// The arguments of `podman run` with what this machine kind needs (the rlimits
    /// podman asks for are refused here) and the suite's platform, under podman's
    /// default seccomp profile, then `extra`, the image and `argv`.
    pub fn run_args(&self, extra: &[&str], image: &str, argv: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--annotation",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("run.compatrun.platform={}", platform()));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(image.to_owned());
        args.extend(argv.iter().map(|s| (*s).to_owned()));
        args
    }

    /// `podman run` (see [`Podman::run_args`]).
    pub fn run(&self, extra: &[&str], image: &str, argv: &[&str]) -> Outcome {
        let args = self.run_args(extra, image, argv);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cmd(self.cmd(&args), None)
    }
}

/// Imports the tree at `tree` as the podman image `name`.
pub fn import(tree: &Path, name: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -c . | podman import - {name}",
            tree.display()
        ))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(())
}

/// `compatrun oci --root ROOT create --bundle B [EXTRA...] ID`, asserting success; the
/// container's output goes to `log` (as an engine's log: nothing waits on a pipe the
/// container holds), create's errors to `log` with `.err` added.
pub fn create(root: &Path, b: &Path, extra: &[&std::ffi::OsStr], id: &str, log: &Path) {
    let err_log = log.with_extension("err");
    let status = Command::new(compatrun_bin())
        .arg("oci")
        .arg("--root")
        .arg(root)
        .args(["create", "--bundle"])
        .arg(b)
        .args(extra)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(log).expect("log"))
        .stderr(std::fs::File::create(&err_log).expect("log"))
        .status()
        .expect("run create");
    assert!(
        status.success(),
        "create: {}",
        std::fs::read_to_string(&err_log).unwrap_or_default()
    );
}

/// `kill ID SIGNAL`, then, once the container has stopped, `delete ID`: each must
/// succeed, and no state may be left.
pub fn kill_and_delete(root: &Path, id: &str, signal: &str) {
    let out = oci(root, &["kill", id, signal]);
    assert_eq!(out.status, 0, "kill: {}", out.err());
    wait_for("the container to stop", || {
        state(root, id)["status"] == "stopped"
    });
    let out = oci(root, &["delete", id]);
    assert_eq!(out.status, 0, "delete: {}", out.err());
    assert!(!root.join(id).exists(), "state left after delete");
}
