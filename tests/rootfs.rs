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

/// `compatrun ARGS...` as root (`unprivileged` false) or as uid 65534.
fn compatrun(unprivileged: bool, args: &[&str]) -> Outcome {
    let mut cmd = if unprivileged {
        common::as_nobody(&common::compatrun_bin())
    } else {
        Command::new(compatrun_bin())
    };
    cmd.args(args).env("PATH", "/bin:/usr/bin");
    run_cmd(cmd, None)
}

/// The users to run as: root, and uid 65534 (both need root to start with).
fn users(test: &str) -> Vec<bool> {
    if !is_root() {
        skip(
            test,
            "running both as root and as uid 65534 needs root to start with",
        );
        return Vec::new();
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
                  test -c /dev/pts/ptmx && echo ptmx-ok; test -d /dev/shm && echo shm-ok; \
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
            "null-ok\n8\nptmx-ok\nshm-ok\nfrom the host\nbar\nrw-ok\nro-refused\n{host_resolv}"
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
