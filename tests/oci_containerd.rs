//! compatrun as containerd's runtime: Debian's containerd 1.6 (installed by
//! scripts/test-deps.sh), started by the test with its own root, state and socket,
//! runs an image imported from the busybox tree through its runc v2 shim with
//! `ctr run --runc-binary` naming compatrun's `compatrun-runc` link. The persona comes
//! from the `run.compatrun.persona` OCI annotation (`ctr run --annotation`). A second
//! containerd with the CRI plugin and docs/KUBERNETES.md's runtime configuration runs a
//! pod through it (tests/fixtures/cri_client.py, a minimal CRI client, since crictl is
//! not packaged by Debian 12), the persona coming from the pod annotation. Skips
//! visibly when not root or when containerd is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_tree, compatrun_bin, have, is_root, platform, run_cmd_within, skip, Outcome};

const RHEL6: &str = "2.6.32-754.el6.x86_64";
/// Far above what any one ctr call needs: reaching it is a hang, and a failure.
const LIMIT: Duration = Duration::from_secs(60);

/// A containerd of the test's own, stopped (with whatever it still runs) and its
/// directory removed when dropped, also when the test fails.
struct Containerd {
    dir: PathBuf,
    child: Child,
    namespace: String,
}

impl Containerd {
    /// Starts containerd with `extra` appended to its config and waits for its socket.
    fn start(dir: &Path, extra: &str) -> Containerd {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("mkdir");
        let d = dir.display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n{extra}"
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("containerd.log")).expect("log"))
            .stderr(std::fs::File::create(dir.join("containerd.err")).expect("log"))
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir: dir.to_path_buf(),
            child,
            namespace: format!("compatrun-{}", platform()),
        };
        let start = Instant::now();
        while c.ctr(&["version"]).status != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not come up: {}",
                std::fs::read_to_string(dir.join("containerd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        c
    }

    fn ctr(&self, args: &[&str]) -> Outcome {
        run_cmd_within(self.ctr_cmd(args), None, LIMIT)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // What a failed test left running: its tasks killed and deleted, then containerd.
        let tasks = self.ctr(&["task", "ls", "-q"]).out();
        for id in tasks.lines() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "-f", id]);
        }
        for id in self.ctr(&["container", "ls", "-q"]).out().lines() {
            let _ = self.ctr(&["container", "rm", id]);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        for m in mounts_under(&self.dir).iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The mount points at or below `dir`, in mount order.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// A link named `compatrun-runc` to the binary: the runc the shim calls.
fn runtime_link(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let link = dir.join("compatrun-runc");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(compatrun_bin(), &link).expect("symlink");
    link
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn tar(dir: &Path, out: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar of {}", dir.display());
}

/// A docker-archive image (one layer: the busybox tree) named `name`, as `docker save`
/// writes one; `ctr image import` reads it.
fn busybox_archive(work: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    let tree = work.join("tree");
    busybox_tree(&tree).expect("busybox tree");
    let img = work.join("image");
    let _ = std::fs::remove_dir_all(&img);
    std::fs::create_dir_all(&img).expect("mkdir");
    let layer = img.join("layer.tar");
    tar(&tree, &layer);
    let diff = sha256(&layer);
    std::fs::create_dir_all(img.join(&diff)).expect("mkdir");
    std::fs::rename(&layer, img.join(&diff).join("layer.tar")).expect("rename");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
    });
    let cfg = img.join("config.json");
    std::fs::write(&cfg, config.to_string()).expect("config");
    let cfg_name = format!("{}.json", sha256(&cfg));
    std::fs::rename(&cfg, img.join(&cfg_name)).expect("rename");
    let manifest = serde_json::json!([{
        "Config": cfg_name,
        "RepoTags": [name],
        "Layers": [format!("{diff}/layer.tar")],
    }]);
    std::fs::write(img.join("manifest.json"), manifest.to_string()).expect("manifest");
    let archive = work.join("image.tar");
    tar(&img, &archive);
    let _ = std::fs::remove_dir_all(&img);
    let _ = std::fs::remove_dir_all(&tree);
    archive
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The line of `ctr task ls` for `id`: its pid and status.
fn task_status(c: &Containerd, id: &str) -> Option<(i32, String)> {
    let out = c.ctr(&["task", "ls"]);
    out.out().lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| (f[1].parse().unwrap_or(0), f[2].to_owned()))
    })
}

#[test]
fn ctr_runs_an_imported_image_under_a_persona() {
    let test = "ctr_runs_an_imported_image_under_a_persona";
    if !is_root() {
        return skip(test, "containerd and its runc shim need root");
    }
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        return skip(
            test,
            "containerd is not installed (scripts/test-deps.sh installs it)",
        );
    }
    let base = common::scratch_dir().join(format!("ctr-{}", platform()));
    let c = Containerd::start(
        &base.join("containerd"),
        "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    );
    let runc = runtime_link(&base.join("bin"));
    // compatrun's state (the shim's `runc --root`) under the test's own directory, to see
    // that nothing is left in it.
    let runc_root = c.dir.join("compatrun-state");
    // The shim calls `runc --root RUNC_ROOT/NAMESPACE`.
    let state_root = runc_root.join(&c.namespace);
    let image = "localhost/compatrun-busybox:test";
    let archive = busybox_archive(&base, image, &["/bin/sh"]);
    let out = c.ctr(&["image", "import", archive.to_str().expect("utf8")]);
    assert_eq!(out.status, 0, "import: {}", out.err());
    let platform_ann = format!("run.compatrun.platform={}", platform());
    let run = |extra: &[&str], id: &str, argv: &[&str]| -> Outcome {
        let mut args = vec![
            "run",
            "--runc-binary",
            runc.to_str().expect("utf8"),
            "--runc-root",
            runc_root.to_str().expect("utf8"),
            "--annotation",
            &platform_ann,
        ];
        args.extend_from_slice(extra);
        args.push(image);
        args.push(id);
        args.extend_from_slice(argv);
        c.ctr(&args)
    };

    // The host's kernel without a persona; the exit status reaches ctr.
    let out = run(&["--rm"], "plain", &["sh", "-c", "uname -r; exit 3"]);
    assert_eq!(out.status, 3, "{}", out.err());
    assert_eq!(out.out(), common::native(&["uname", "-r"]).out());

    // The persona by annotation: uname and /proc agree.
    let out = run(
        &["--rm", "--annotation", "run.compatrun.persona=rhel6"],
        "persona",
        &["sh", "-c", "uname -r; cat /proc/sys/kernel/osrelease"],
    );
    assert_eq!(out.status, 0, "{}", out.err());
    assert_eq!(out.out(), format!("{RHEL6}\n{RHEL6}\n"));

    // A container compatrun refuses: the shim reads the reason from the runtime's
    // --log (JSON) and ctr shows it.
    let out = run(
        &[
            "--rm",
            "--annotation",
            "run.compatrun.persona=no-such-persona",
        ],
        "refused",
        &["true"],
    );
    assert_ne!(out.status, 0);
    assert!(out.err().contains("no-such-persona"), "{}", out.err());

    // Detached: exec (under the same persona), pause, resume, update, kill, delete, rm.
    let id = "detached";
    let out = run(
        &["-d", "--annotation", "run.compatrun.persona=rhel6"],
        id,
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
        ],
    );
    assert_eq!(out.status, 0, "run -d: {}", out.err());
    let (shim_pid, status) = task_status(&c, id).expect("the task is listed");
    assert_eq!(status, "RUNNING");
    let mut st = Command::new(compatrun_bin());
    st.arg("oci")
        .arg("--root")
        .arg(&state_root)
        .args(["state", id]);
    let st = run_cmd_within(st, None, LIMIT);
    assert_eq!(st.status, 0, "state: {}", st.err());
    let st: serde_json::Value = serde_json::from_str(&st.out()).expect("state is JSON");
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["annotations"]["run.compatrun.persona"], "rhel6", "{st}");
    let first = i32::try_from(st["pid"].as_i64().expect("pid")).expect("pid");
    // The pid containerd reports is the one the shim waits on: the supervisor.
    assert_ne!(shim_pid, 0);
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        id,
        "sh",
        "-c",
        "uname -r; exit 4",
    ]);
    assert_eq!(out.status, 4, "exec: {}", out.err());
    assert_eq!(out.out(), format!("{RHEL6}\n"));
    // `ctr task ps` (runc ps --format json) lists the container's processes, the
    // program among them.
    let out = c.ctr(&["task", "ps", id]);
    assert_eq!(out.status, 0, "ps: {}", out.err());
    assert!(
        out.out()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&first.to_string())),
        "the program {first} is not in `ctr task ps`: {}",
        out.out()
    );
    // Paused: the container's cgroup is frozen, the counter stands still; resumed, it
    // goes on.
    let counter = c
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&c.namespace)
        .join(id)
        .join("rootfs/tmp/n");
    let count = || std::fs::read_to_string(&counter).unwrap_or_default();
    wait_for("the counter to run", || !count().is_empty());
    let out = c.ctr(&["task", "pause", id]);
    assert_eq!(out.status, 0, "pause: {}", out.err());
    assert_eq!(task_status(&c, id).expect("listed").1, "PAUSED");
    let mut st = Command::new(compatrun_bin());
    st.arg("oci")
        .arg("--root")
        .arg(&state_root)
        .args(["state", id]);
    let st = run_cmd_within(st, None, LIMIT);
    assert!(st.out().contains("\"paused\""), "{}", st.out());
    let before = count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), before, "the counter ran while paused");
    let out = c.ctr(&["task", "resume", id]);
    assert_eq!(out.status, 0, "resume: {}", out.err());
    wait_for("the counter to go on", || count() != before);
    // `update` (ctr 1.6 has no command for it: called as the shim calls runc, the
    // limits as JSON on stdin) writes the new memory limit into the container's cgroup.
    let mut up = Command::new(compatrun_bin());
    up.arg("oci")
        .arg("--root")
        .arg(&state_root)
        .args(["update", "--resources", "-", id]);
    let out = run_cmd_within(
        up,
        Some(br#"{"memory":{"limit":104857600},"cpu":{},"blockIO":null}"#),
        LIMIT,
    );
    assert_eq!(out.status, 0, "update: {}", out.err());
    let cg = format!("{}/{id}", c.namespace);
    let limit = ["memory", ""]
        .iter()
        .flat_map(|h| {
            let d = Path::new("/sys/fs/cgroup").join(h).join(&cg);
            [d.join("memory.limit_in_bytes"), d.join("memory.max")]
        })
        .find_map(|f| std::fs::read_to_string(f).ok())
        .expect("the container's memory cgroup");
    assert_eq!(limit.trim(), "104857600");
    let out = c.ctr(&["task", "kill", id]);
    assert_eq!(out.status, 0, "kill: {}", out.err());
    wait_for("the task to stop", || {
        task_status(&c, id).is_some_and(|(_, s)| s == "STOPPED")
    });
    let out = c.ctr(&["task", "delete", id]);
    assert_eq!(out.status, 0, "task delete: {}", out.err());
    // sleep ended by SIGTERM: 128 + 15, as the shim reports a signal death.
    assert!(out.err().contains("143"), "{}", out.err());
    let out = c.ctr(&["container", "rm", id]);
    assert_eq!(out.status, 0, "container rm: {}", out.err());

    // Nothing left: compatrun's state, the supervisor, the program, the bundles' mounts.
    let left: Vec<_> = std::fs::read_dir(&state_root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "compatrun state left: {left:?}");
    for pid in [shim_pid, first] {
        wait_for("the container's processes to go", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        });
    }
    let mounts = mounts_under(&c.dir.join("state"));
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    for h in ["pids", "memory", "freezer", "unified", ""] {
        let d = Path::new("/sys/fs/cgroup").join(h).join(&cg);
        assert!(!d.exists(), "cgroup left: {}", d.display());
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&base);
}

/// The CRI part of docs/KUBERNETES.md: the `compatrun` runtime handler, pod and
/// container annotations `run.compatrun.*` passed through to config.json.
fn cri_config(runc: &Path, state: &Path, image: &str) -> String {
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\"]";
    let rt = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes";
    format!(
        "{cri}\n  sandbox_image = \"{image}\"\n\
         # This machine withholds CAP_SYS_RESOURCE: a pod sandbox's oomScoreAdj of -998\n\
         # cannot be written (by runc either); kept at containerd's own score.\n\
         restrict_oom_score_adj = true\n\
         {rt}.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         {rt}.compatrun]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         pod_annotations = [\"run.compatrun.*\"]\n\
         container_annotations = [\"run.compatrun.*\"]\n\
         {rt}.compatrun.options]\n  BinaryName = \"{}\"\n  Root = \"{}\"\n",
        runc.display(),
        state.display()
    )
}

#[test]
fn cri_runs_a_pod_under_the_persona_of_its_annotation() {
    let test = "cri_runs_a_pod_under_the_persona_of_its_annotation";
    if !is_root() {
        return skip(test, "containerd and its runc shim need root");
    }
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        return skip(
            test,
            "containerd is not installed (scripts/test-deps.sh installs it)",
        );
    }
    let python = Path::new("/usr/bin/python3");
    let grpc = Command::new(python)
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if !grpc {
        return skip(
            test,
            "python3-grpcio is not installed (scripts/test-deps.sh installs it)",
        );
    }
    let base = common::scratch_dir().join(format!("cri-{}", platform()));
    let runc = runtime_link(&base.join("bin"));
    let image = "localhost/compatrun-busybox-sleep:test";
    let dir = base.join("containerd");
    let state_root = dir.join("compatrun-state");
    let mut c = Containerd::start(&dir, &cri_config(&runc, &state_root, image));
    c.namespace = "k8s.io".into();
    // containerd loaded the CRI plugin with that configuration.
    let out = c.ctr(&["plugins", "ls"]);
    let cri_ok = out.out().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&"io.containerd.grpc.v1")
            && f.get(1) == Some(&"cri")
            && f.last() == Some(&"ok")
    });
    assert!(cri_ok, "the cri plugin is not ok: {}", out.out());
    // The image (also the pod's sandbox image: it sleeps) in the CRI's namespace.
    let archive = busybox_archive(&base, image, &["/bin/sleep", "2147483647"]);
    let out = c.ctr(&["image", "import", archive.to_str().expect("utf8")]);
    assert_eq!(out.status, 0, "import: {}", out.err());
    // The suite's platform as a pod annotation too (passed through like the persona).
    let mut client = Command::new(python);
    client
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cri_client.py"))
        .arg(dir.join("containerd.sock"))
        .args(["compatrun", image, "rhel6", &platform()]);
    let out = run_cmd_within(client, None, LIMIT * 2);
    let result: serde_json::Value = serde_json::from_str(&out.out())
        .unwrap_or_else(|e| panic!("cri client: {e}: {} {}", out.out(), out.err()));
    assert_eq!(out.status, 0, "{result}");
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(result["stdout"], format!("{RHEL6}\n{RHEL6}\n"), "{result}");
    // compatrun ran the pod (the persona shows) and nothing of it is left.
    let calls = std::fs::read_dir(state_root.join("k8s.io"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(calls, 0, "compatrun state left");
    let mounts = mounts_under(&c.dir.join("state"));
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    drop(c);
    let _ = std::fs::remove_dir_all(&base);
}
