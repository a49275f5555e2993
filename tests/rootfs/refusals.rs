//! What compatrun refuses and how it says so: bad root filesystems, an ordinary user's
//! guest writing outside as root, and a host without unprivileged user namespaces.

use std::path::Path;

use crate::common::{self, compatrun_bin, is_root, skip};
use crate::{compatrun, tree_or_skip};

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
