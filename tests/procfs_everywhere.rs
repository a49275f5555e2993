//! The persona in every procfs the guest sees: not only the `/proc` compatrun mounts for
//! it, but any `proc` mounted before the run (a build root's `tree/proc`, then `chroot
//! tree`, as mock and pbuilder do) and any the guest mounts itself. Each reads
//! `/proc/sys/kernel/osrelease`, `/proc/sys/kernel/version` and `/proc/version` and
//! compares them with `uname -r` and `uname -v`.

mod common;

use std::process::Command;

use common::{busybox_tree, compatrun_bin, have, is_root, run_cmd, scratch_dir, skip};

const RELEASE: &str = "2.6.32-754.el6.x86_64";

/// Prints, inside `proc_dir`: osrelease, `uname -r`, version, `uname -v`, /proc/version.
fn script(proc_dir: &str) -> String {
    format!(
        "cat {proc_dir}/sys/kernel/osrelease; uname -r; cat {proc_dir}/sys/kernel/version; \
         uname -v; cat {proc_dir}/version"
    )
}

/// The five lines of [`script`] tell one story: the persona's.
fn assert_persona(out: &str, what: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{what}: {out}");
    assert_eq!((lines[0], lines[1]), (RELEASE, RELEASE), "{what}: {out}");
    assert_eq!(
        lines[2], lines[3],
        "{what}: kernel/version vs uname -v: {out}"
    );
    assert!(lines[4].contains(RELEASE), "{what}: /proc/version: {out}");
}

fn tree_or_skip(test: &str) -> Option<std::path::PathBuf> {
    if !is_root() {
        skip(test, "not root: mounting proc needs CAP_SYS_ADMIN");
        return None;
    }
    if !have("unshare") {
        skip(test, "unshare (util-linux) is missing");
        return None;
    }
    let tree = scratch_dir().join(format!("procfs-tree-{test}"));
    if let Err(e) = busybox_tree(&tree) {
        skip(test, &e);
        return None;
    }
    Some(tree)
}

/// Runs `sh -c SCRIPT sh TREE COMPATRUN` in a private mount namespace of its own, so the
/// proc mounts it makes vanish with it.
fn in_private_mounts(script: &str, tree: &std::path::Path) -> common::Outcome {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(tree)
        .arg(compatrun_bin());
    run_cmd(cmd, None)
}

/// The build-root habit: `mount -t proc proc tree/proc` before compatrun starts, then
/// `chroot tree`: the guest reads the tree's proc, which is the host's, and must see the
/// persona there too. A second proc inside the tree (`mnt/rw`) with `--rootfs`.
#[test]
fn a_proc_mounted_before_the_run_shows_the_persona() {
    let test = "a_proc_mounted_before_the_run_shows_the_persona";
    let Some(tree) = tree_or_skip(test) else {
        return;
    };
    let chrooted = format!(
        r#"mount -t proc proc "$1/proc" && exec "$2" --kernel-persona rhel6 -- chroot "$1" /bin/sh -c '{}'"#,
        script("/proc")
    );
    let o = in_private_mounts(&chrooted, &tree);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_persona(&o.out(), "chroot into a tree with its proc mounted before");

    let rootfs = format!(
        r#"mount -t proc proc "$1/mnt/rw" && exec "$2" --kernel-persona rhel6 --rootfs "$1" -- /bin/sh -c '{}'"#,
        script("/mnt/rw")
    );
    let o = in_private_mounts(&rootfs, &tree);
    assert_eq!(o.status, 0, "{}", o.err());
    assert_persona(&o.out(), "--rootfs with a proc mounted inside the tree");
}

/// A proc the guest mounts itself (`mount -t proc proc DIR`), and the one `unshare -pf
/// --mount-proc` mounts for a pid namespace of the guest's own: each shows the persona,
/// and each shows the pid namespace of the process that mounted it (in the second, the
/// shell is pid 1).
#[test]
fn a_proc_the_guest_mounts_shows_the_persona() {
    let test = "a_proc_the_guest_mounts_shows_the_persona";
    if !is_root() {
        skip(test, "not root: the guest may not mount proc");
        return;
    }
    let dir = scratch_dir().join(format!("procfs-guest-mount-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let d = dir.display();
    let o = run_cmd(
        common::under_cmd(
            "rhel6",
            &[
                "sh",
                "-c",
                &format!("mount -t proc proc {d} && {}", script(&d.to_string())),
            ],
        ),
        None,
    );
    assert_eq!(o.status, 0, "{}", o.err());
    assert_persona(&o.out(), "a proc the guest mounted");

    if !have("unshare") {
        skip(
            test,
            "unshare (util-linux) is missing: the --mount-proc half is not run",
        );
        return;
    }
    let inner = format!("{}; echo pid=$$", script("/proc"));
    let o = run_cmd(
        common::under_cmd(
            "rhel6",
            &["unshare", "-pf", "--mount-proc", "sh", "-c", &inner],
        ),
        None,
    );
    assert_eq!(o.status, 0, "{}", o.err());
    let out = o.out();
    let (persona, pid) = out.rsplit_once("pid=").expect("pid line");
    assert_persona(persona, "unshare -pf --mount-proc");
    assert_eq!(pid.trim(), "1", "{out}");
}
