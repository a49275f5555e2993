//! `--rootfs`: a busybox-static tree (Debian's `busybox-static`, installed by
//! scripts/test-deps.sh) made in the scratch directory, run as root and as an ordinary
//! user (uid 65534 through `setpriv`, in a user namespace), on the suite's platform.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{compatrun_bin, is_root, run_cmd, skip, Outcome};

/// The tree, made once per test run (Err, with the reason, if busybox is missing).
fn tree() -> Result<&'static Path, String> {
    static TREE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = common::scratch_dir().join(format!("rootfs-busybox-{}", std::process::id()));
        common::busybox_tree(&root).map(|()| root)
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// compatrun as root (`unprivileged` false), or as an ordinary user: uid 65534 when the
/// tests run as root, else the user running them.
fn runner(unprivileged: bool) -> Command {
    if unprivileged && is_root() {
        common::as_nobody(&compatrun_bin())
    } else {
        Command::new(compatrun_bin())
    }
}

/// `compatrun ARGS...` as [`runner`] starts it.
fn compatrun(unprivileged: bool, args: &[&str]) -> Outcome {
    let mut cmd = runner(unprivileged);
    cmd.args(args).env("PATH", "/bin:/usr/bin");
    run_cmd(cmd, None)
}

/// The users to run as: root and uid 65534 when the tests run as root; else only the
/// ordinary user running them (the root run is skipped, visibly).
fn users(test: &str) -> Vec<bool> {
    if !is_root() {
        skip(
            test,
            "the run as root needs root; running only as this ordinary user",
        );
        return vec![true];
    }
    vec![false, true]
}

fn tree_or_skip(test: &str) -> Option<String> {
    match tree() {
        Ok(t) => Some(t.to_str().expect("utf8").to_owned()),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

#[test]
fn the_tree_is_the_guests_root_with_the_personas_identity() {
    let test = "the_tree_is_the_guests_root_with_the_personas_identity";
    let Some(t) = tree_or_skip(test) else { return };
    let script = "cat /etc/tree-marker; uname -r; cat /proc/sys/kernel/osrelease; \
                  cat /proc/version; uname -n; hostname; ls /; id -u; pwd";
    for unprivileged in users(test) {
        let o = compatrun(
            unprivileged,
            &[
                "-k",
                "2.6",
                "--rootfs",
                &t,
                "--hostname",
                "oldbox",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert_eq!(o.status, 0, "unprivileged={unprivileged}: {}", o.err());
        let expected = "the busybox tree\n2.6.32\n2.6.32\n\
                        Linux version 2.6.32 (compatrun@persona) (gcc) #1 SMP Thu Dec 3 12:00:00 UTC 2009\n\
                        oldbox\noldbox\nbin\ndev\netc\nmnt\nproc\nroot\nsys\ntmp\n0\n/\n";
        assert_eq!(
            o.out(),
            expected,
            "unprivileged={unprivileged}: {}",
            o.err()
        );
    }
}

#[test]
fn nothing_of_the_host_tree_is_reachable() {
    let test = "nothing_of_the_host_tree_is_reachable";
    let Some(t) = tree_or_skip(test) else { return };
    for unprivileged in users(test) {
        let o = compatrun(
            unprivileged,
            &[
                "--rootfs",
                &t,
                "--",
                "sh",
                "-c",
                "ls /../..; echo ---; cat /proc/self/mountinfo",
            ],
        );
        assert_eq!(o.status, 0, "{}", o.err());
        let out = o.out();
        let (root_listing, mountinfo) = out.split_once("---\n").expect("two parts");
        // Above the root is the root: the host's is detached.
        assert_eq!(root_listing, "bin\ndev\netc\nmnt\nproc\nroot\nsys\ntmp\n");
        // Every mount point is one compatrun made inside the tree.
        for line in mountinfo.lines() {
            let mount_point = line.split_whitespace().nth(4).unwrap_or("");
            assert!(
                ["/", "/proc", "/sys", "/dev", "/etc"]
                    .iter()
                    .any(|p| mount_point == *p || mount_point.starts_with(&format!("{p}/"))),
                "unexpected mount point {mount_point} (unprivileged={unprivileged}):\n{mountinfo}"
            );
        }
    }
}

#[test]
fn dev_host_files_binds_env_workdir_and_user() {
    let test = "dev_host_files_binds_env_workdir_and_user";
    let Some(t) = tree_or_skip(test) else { return };
    let data = common::scratch_dir().join(format!("rootfs-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("given"), "from the host\n").expect("write");
    let _ = Command::new("chmod").arg("777").arg(&data).status();
    let d = data.to_str().expect("utf8");
    let rw = format!("{d}:/mnt/rw");
    let ro = format!("{d}:/mnt/ro:ro");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let script = "echo x > /dev/null && echo null-ok; head -c 8 /dev/urandom | wc -c; \
                  (exec 3<>/dev/ptmx && test -c /dev/pts/0 && echo pty-ok); \
                  test -d /dev/shm && echo shm-ok; \
                  cat given; echo $FOO; echo w > /mnt/rw/written && echo rw-ok; \
                  (echo w > /mnt/ro/refused) 2>/dev/null || echo ro-refused; \
                  cat /etc/resolv.conf";
    for unprivileged in users(test) {
        let o = compatrun(
            unprivileged,
            &[
                "--rootfs",
                &t,
                "--bind",
                &rw,
                "--bind",
                &ro,
                "--env",
                "FOO=bar",
                "--workdir",
                "/mnt/rw",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert_eq!(o.status, 0, "{}", o.err());
        let expected = format!(
            "null-ok\n8\npty-ok\nshm-ok\nfrom the host\nbar\nrw-ok\nro-refused\n{host_resolv}"
        );
        assert_eq!(
            o.out(),
            expected,
            "unprivileged={unprivileged}: {}",
            o.err()
        );
        assert!(data.join("written").exists());
        assert!(!data.join("refused").exists());
        std::fs::remove_file(data.join("written")).expect("rm");
    }
    // Without the host files the tree's own are seen; --user picks the ids.
    for unprivileged in users(test) {
        let o = compatrun(
            unprivileged,
            &[
                "--rootfs",
                &t,
                "--no-host-files",
                "--user",
                "1234:5678",
                "--",
                "sh",
                "-c",
                "cat /etc/resolv.conf /etc/hosts; id -u; id -g",
            ],
        );
        assert_eq!(
            (o.status, o.out()),
            (
                0,
                "nameserver 192.0.2.1\n127.0.0.1 tree-hosts\n1234\n5678\n".to_owned()
            ),
            "unprivileged={unprivileged}: {}",
            o.err()
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn bad_root_filesystems_get_clear_errors() {
    let test = "bad_root_filesystems_get_clear_errors";
    let Some(t) = tree_or_skip(test) else { return };
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["--rootfs", "/nonexistent-tree", "--", "true"],
            125,
            "No such file or directory",
        ),
        (
            &["--rootfs", "/etc/passwd", "--", "true"],
            125,
            "not a directory",
        ),
        (
            &["--rootfs", &t, "--", "no-such-program"],
            127,
            "command not found",
        ),
        (
            &["--rootfs", &t, "--bind", "/tmp:/no/such/dir", "--", "true"],
            125,
            "does not exist in the root filesystem",
        ),
        (
            &["--rootfs", &t, "--pid-ns", "off", "--", "true"],
            125,
            "drop --pid-ns off",
        ),
        (&["--hostname", "x", "--", "true"], 125, "need --rootfs"),
    ];
    for (args, status, message) in cases {
        let o = compatrun(false, args);
        assert_eq!(o.status, status, "{args:?}: {}", o.err());
        assert!(o.err().contains(message), "{args:?}: {}", o.err());
    }
}

#[test]
fn an_unprivileged_guest_is_root_inside_but_only_the_invoking_user_outside() {
    let test = "an_unprivileged_guest_is_root_inside_but_only_the_invoking_user_outside";
    let Some(t) = tree_or_skip(test) else { return };
    if !is_root() {
        skip(test, "starting as uid 65534 needs root");
        return;
    }
    let o = compatrun(
        true,
        &[
            "--rootfs",
            &t,
            "--",
            "sh",
            "-c",
            "id -u; touch /root/x 2>/dev/null || echo cannot-write",
        ],
    );
    assert_eq!(o.status, 0, "{}", o.err());
    // Root inside, but the tree's /root belongs to the real root outside: no write.
    assert_eq!(o.out(), "0\ncannot-write\n", "{}", o.err());
    assert!(!Path::new(&t).join("root/x").exists());
}

/// `--env`, `--workdir` and (as root) `--user` also apply without a root filesystem; an
/// ordinary user asking for another user is told why not.
#[test]
fn env_workdir_and_user_apply_without_a_root_filesystem() {
    let test = "env_workdir_and_user_apply_without_a_root_filesystem";
    let o = compatrun(
        false,
        &[
            "--env",
            "X=1",
            "--workdir",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $X; pwd",
        ],
    );
    assert_eq!(
        (o.status, o.out()),
        (0, "1\n/tmp\n".to_owned()),
        "{}",
        o.err()
    );
    if !is_root() {
        skip(test, "switching users needs root");
        return;
    }
    let o = compatrun(
        false,
        &["--user", "1000:1001", "--", "sh", "-c", "id -u; id -g"],
    );
    assert_eq!(
        (o.status, o.out()),
        (0, "1000\n1001\n".to_owned()),
        "{}",
        o.err()
    );
    let o = compatrun(true, &["--user", "5", "--", "true"]);
    assert_eq!(o.status, 125, "{}", o.err());
    assert!(o.err().contains("needs root"), "{}", o.err());
}

/// Where an ordinary user may not create a user namespace (here a container-like outer
/// compatrun whose persona has no `unshare`), `--rootfs` says so and what to do.
#[test]
fn a_host_without_unprivileged_user_namespaces_gets_a_clear_error() {
    let test = "a_host_without_unprivileged_user_namespaces_gets_a_clear_error";
    let Some(t) = tree_or_skip(test) else { return };
    if !is_root() {
        skip(test, "starting as uid 65534 needs root");
        return;
    }
    let persona = common::scratch_dir().join("rootfs-no-unshare.toml");
    std::fs::write(
        &persona,
        "description = \"the host without unshare\"\nkernel = \"6.18\"\n[syscalls]\nremove = [\"unshare\"]\n",
    )
    .expect("write persona");
    let bin = compatrun_bin();
    let mut args = vec![
        "--platform",
        "ptrace",
        "-k",
        persona.to_str().expect("utf8"),
        "--",
    ];
    args.extend(common::AS_NOBODY);
    args.extend([
        bin.to_str().expect("utf8"),
        "--rootfs",
        t.as_str(),
        "--",
        "true",
    ]);
    let o = compatrun(false, &args);
    assert_eq!(o.status, 125, "{}", o.err());
    assert!(
        o.err().contains("cannot create a user namespace"),
        "{}",
        o.err()
    );
    assert!(o.err().contains("run compatrun as root"), "{}", o.err());
}

/// `/sys` and every mount below it (the host's cgroup trees) are read-only inside, and a
/// `:ro` bind is read-only down to its submounts too.
#[test]
fn sys_is_read_only_all_the_way_down() {
    let test = "sys_is_read_only_all_the_way_down";
    let Some(t) = tree_or_skip(test) else { return };
    for unprivileged in users(test) {
        let o = compatrun(
            unprivileged,
            &[
                "--rootfs",
                &t,
                "--bind",
                "/sys:/mnt/ro:ro",
                "--",
                "cat",
                "/proc/self/mountinfo",
            ],
        );
        assert_eq!(o.status, 0, "{}", o.err());
        let out = o.out();
        let mut seen = 0;
        for line in out.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (point, options) = (fields.get(4).copied(), fields.get(5).copied());
            let (Some(point), Some(options)) = (point, options) else {
                panic!("malformed mountinfo line {line:?}");
            };
            if ["/sys", "/mnt/ro"]
                .iter()
                .any(|p| point == *p || point.starts_with(&format!("{p}/")))
            {
                seen += 1;
                assert!(
                    options.split(',').any(|o| o == "ro"),
                    "{point} is writable (unprivileged={unprivileged}):\n{out}"
                );
            }
        }
        assert!(seen >= 2, "no /sys or /mnt/ro mounts:\n{out}");
    }
}

/// The program is looked up inside the tree as `execvp` does: a program only the host
/// has is not found (127), a file that is not executable cannot run (126), a script
/// without `#!` runs with the tree's /bin/sh, and `--user` takes names from the tree.
#[test]
fn programs_and_users_are_looked_up_inside_the_tree() {
    let test = "programs_and_users_are_looked_up_inside_the_tree";
    let Some(t) = tree_or_skip(test) else { return };
    let extra = Path::new(&t).join("tmp/extra");
    std::fs::create_dir_all(&extra).expect("mkdir");
    std::fs::write(extra.join("plain"), "echo plain-script \"$@\"\n").expect("write");
    std::fs::write(extra.join("data"), "not a program\n").expect("write");
    let _ = Command::new("chmod")
        .arg("755")
        .arg(extra.join("plain"))
        .status();
    let _ = Command::new("chmod")
        .arg("644")
        .arg(extra.join("data"))
        .status();
    let passwd = Path::new(&t).join("etc/passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0::/root:/bin/sh\ndaemon:x:2:3::/:/bin/sh\n",
    )
    .expect("write passwd");
    let _ = Command::new("chmod").arg("644").arg(&passwd).status();
    let host_only = if Path::new("/bin/bash").exists() {
        "bash"
    } else {
        "no-such-program"
    };
    let path = "PATH=/nonexistent:/tmp/extra:/bin";
    for unprivileged in users(test) {
        let cases: [(&[&str], i32, &str); 6] = [
            (&[host_only, "-c", "true"], 127, ""),
            (&["/tmp/extra/data"], 126, ""),
            (&["--env", path, "--", "data"], 126, ""),
            (
                &["--env", path, "--", "plain", "a", "b"],
                0,
                "plain-script a b\n",
            ),
            (
                &["--user", "daemon", "--", "sh", "-c", "id -u; id -g"],
                0,
                "2\n3\n",
            ),
            (
                &["--user", "daemon:7", "--", "sh", "-c", "id -u; id -g"],
                0,
                "2\n7\n",
            ),
        ];
        for (args, status, out) in cases {
            let mut all = vec!["--rootfs", t.as_str()];
            if args[0].starts_with("--") {
                all.extend(args);
            } else {
                all.push("--");
                all.extend(args);
            }
            let o = compatrun(unprivileged, &all);
            assert_eq!(
                (o.status, o.out().as_str()),
                (status, out),
                "{args:?} (unprivileged={unprivileged}): {}",
                o.err()
            );
        }
        let o = compatrun(
            unprivileged,
            &["--rootfs", &t, "--user", "nobody", "--", "true"],
        );
        assert_eq!(o.status, 125, "{}", o.err());
        assert!(
            o.err().contains("not in the tree's /etc/passwd"),
            "{}",
            o.err()
        );
    }
    let _ = std::fs::remove_file(&passwd);
}

/// Killing compatrun while a guest runs in its tree (a first process and a background
/// child) leaves nothing of the guest's pid namespace behind.
#[test]
fn nothing_survives_a_killed_compatrun() {
    let test = "nothing_survives_a_killed_compatrun";
    let Some(t) = tree_or_skip(test) else { return };
    for unprivileged in users(test) {
        let marker = common::unique_marker("rootfs-killed");
        let mut cmd = runner(unprivileged);
        cmd.args(["--rootfs", &t, "--", "sh", "-c"])
            .arg("(sleep 1000; true) & sleep 1000; true")
            .arg(&marker)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn compatrun");
        // Wait for the shell and its background subshell (both carry the marker, as
        // compatrun's own command line does, but only they are in another pid
        // namespace).
        let ours = std::fs::read_link("/proc/self/ns/pid").expect("our pid ns");
        let start = std::time::Instant::now();
        let guest = loop {
            let found: Vec<i32> = common::pgrep(&marker)
                .into_iter()
                .map(|(pid, _)| pid)
                .filter(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns != ours)
                })
                .collect();
            if found.len() >= 2 {
                break found[0];
            }
            assert!(start.elapsed() < common::TIMEOUT, "the guest never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let ns = std::fs::read_link(format!("/proc/{guest}/ns/pid")).expect("guest's pid ns");
        let in_ns = || -> Vec<String> {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|e| std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&ns))
                .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
                .filter(|c| !c.is_empty())
                .collect()
        };
        // init, the shell, the subshell and two sleeps.
        assert!(in_ns().len() >= 4, "{:?}", in_ns());
        child.kill().expect("kill compatrun");
        let _ = child.wait();
        common::assert_none_left(&marker);
        let start = std::time::Instant::now();
        while !in_ns().is_empty() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "left in the guest's pid namespace (unprivileged={unprivileged}): {:?}",
                in_ns()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The README's image command: `--bind` onto a target the image lacks (made in the
/// overlay, never in the cache), `--env` over the image's Env, `--workdir` (made in the
/// overlay too when missing), the host's resolv.conf where the image has none; with no
/// program, the image's Cmd.
#[test]
fn an_image_runs_with_binds_env_workdir_and_host_files() {
    let test = "an_image_runs_with_binds_env_workdir_and_host_files";
    if !common::have("python3") {
        return skip(test, "python3 builds the test image");
    }
    let dir = common::scratch_dir().join(format!("rootfs-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(reason) = common::busybox_tree(&dir.join("tree")) {
        return skip(test, &reason);
    }
    std::fs::remove_file(dir.join("tree/etc/resolv.conf")).expect("rm resolv.conf");
    let image = dir.join("image.tar");
    let made = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/make_image.py"
        ))
        .arg(dir.join("tree"))
        .arg(&image)
        .arg("docker")
        .status()
        .expect("python3");
    assert!(made.success(), "make_image.py");
    // One cache per user: a tree unpacked by root is not an ordinary user's to write.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("given"), "from the host\n").expect("write");
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&dir)
        .status();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let bind = format!("{}:/data", data.display());
    let img = image.to_str().expect("utf8");
    let cache = |unprivileged: bool| dir.join(format!("cache-{unprivileged}"));
    let run = |unprivileged: bool, args: &[&str]| {
        let mut cmd = runner(unprivileged);
        cmd.args(args)
            .env("COMPATRUN_CACHE_DIR", cache(unprivileged));
        run_cmd(cmd, None)
    };
    for unprivileged in users(test) {
        std::fs::create_dir_all(cache(unprivileged)).expect("mkdir");
        let _ = Command::new("chmod")
            .arg("777")
            .arg(cache(unprivileged))
            .status();
        let o = run(
            unprivileged,
            &[
                "--image",
                img,
                "--bind",
                &bind,
                "--env",
                "FOO=1",
                "--workdir",
                "/data",
                "--",
                "sh",
                "-c",
                "pwd; echo $FOO; cat given; echo w > written && cat /etc/resolv.conf",
            ],
        );
        assert_eq!(
            (o.status, o.out()),
            (0, format!("/data\n1\nfrom the host\n{host_resolv}")),
            "unprivileged={unprivileged}: {}",
            o.err()
        );
        assert!(data.join("written").exists());
        std::fs::remove_file(data.join("written")).expect("rm");
        let o = run(unprivileged, &["--image", img]);
        assert_eq!(
            (o.status, o.out()),
            (0, "image-cmd\n".to_owned()),
            "{}",
            o.err()
        );
        let o = run(
            unprivileged,
            &["--image", img, "--workdir", "/made/here", "--", "pwd"],
        );
        assert_eq!(
            (o.status, o.out()),
            (0, "/made/here\n".to_owned()),
            "{}",
            o.err()
        );
        // The cached tree is as unpacked: no bind target, no resolv.conf, no working
        // directory made, no run's scratch space left.
        let cache = cache(unprivileged);
        let trees: Vec<PathBuf> = std::fs::read_dir(cache.join("rootfs"))
            .expect("cache")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(trees.len(), 1, "{trees:?}");
        assert!(!trees[0].join("data").exists());
        assert!(!trees[0].join("etc/resolv.conf").exists());
        assert!(!trees[0].join("made").exists());
        let left: Vec<_> = std::fs::read_dir(&cache)
            .expect("cache")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("run-") || n.starts_with("tmp-"))
            .collect();
        assert!(left.is_empty(), "left in the cache: {left:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
