//! What the options add to a guest's world: `/dev`, host files, `--bind`, `--env`,
//! `--workdir` and `--user` with a tree, without one, and with an image.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{self, is_root, run_cmd, skip};
use crate::{compatrun, runner, tree_or_skip, users};

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
