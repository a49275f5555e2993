//! The tree as the guest's whole world: its root with the persona's identity, nothing of
//! the host above it, `/sys` read-only all the way down, programs and users looked up
//! inside it, and nothing of its pid namespace left when compatrun is killed.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::{compatrun, runner, tree_or_skip, users};

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
