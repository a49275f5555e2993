//! A real old user space under compatrun: a root filesystem of an old distribution (for
//! example Debian wheezy, eglibc 2.13, or CentOS 6, glibc 2.12) named by the environment
//! variable `COMPATRUN_OLD_ROOTFS`. Skips visibly without it, or when not root (most
//! tests enter the tree with chroot; the `--rootfs` one also runs as uid 65534).
//!
//! What it proves on real old code: the old loader sees the persona (its "kernel too old"
//! check and its NT_GNU_ABI_TAG check of libraries), old programs work, and the identity
//! is the persona's everywhere they look.

mod common;

use std::path::PathBuf;

use common::{run_cmd, skip, under_cmd};

fn tree(test: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("COMPATRUN_OLD_ROOTFS") else {
        skip(test, "COMPATRUN_OLD_ROOTFS is not set (a directory holding an old distribution's root filesystem)");
        return None;
    };
    if !platform::sys::has_cap_sys_admin() {
        skip(test, "entering the tree with chroot needs root");
        return None;
    }
    let root = PathBuf::from(root);
    if !root.join("bin/sh").exists() {
        skip(test, &format!("{} has no bin/sh", root.display()));
        return None;
    }
    Some(root)
}

fn in_tree(persona: &str, root: &std::path::Path, script: &str) -> common::Outcome {
    let mut cmd = under_cmd(
        persona,
        &[
            "chroot",
            root.to_str().expect("utf8 path"),
            "/bin/sh",
            "-c",
            script,
        ],
    );
    cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    run_cmd(cmd, None)
}

#[test]
fn old_programs_run_and_see_the_persona() {
    let Some(root) = tree("old_programs_run_and_see_the_persona") else {
        return;
    };
    let o = in_tree(
        "rhel6",
        &root,
        "uname -r; uname -v; ls / | grep -q bin && echo ls-ok; \
         echo b a c | tr ' ' '\\n' | sort | tr '\\n' ' '; echo",
    );
    assert_eq!(o.status, 0, "{}", o.err());
    assert_eq!(
        o.out(),
        "2.6.32-754.el6.x86_64\n#1 SMP Tue Jun 19 21:26:04 UTC 2018\nls-ok\na b c \n",
        "{}",
        o.err()
    );
}

#[test]
fn the_old_loader_refuses_a_persona_older_than_its_c_library_and_says_so() {
    let Some(root) = tree("the_old_loader_refuses_a_persona_older_than_its_c_library_and_says_so")
    else {
        return;
    };
    let persona = ancient_persona();
    let o = in_tree(persona.to_str().expect("utf8"), &root, "/bin/true");
    assert_ne!(o.status, 0);
    let err = o.err();
    assert!(err.contains("FATAL: kernel too old"), "{err}");
    assert!(err.contains("but persona ancient is Linux 2.6.18"), "{err}");
}

/// The persona file of RHEL 5's kernel, older than the wheezy C library's minimum.
fn ancient_persona() -> PathBuf {
    let dir = common::scratch_dir().join("old-userspace");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let persona = dir.join("ancient.toml");
    std::fs::write(
        &persona,
        "description = \"RHEL 5's kernel: older than wheezy's or CentOS 6's C library wants\"\n\
         [uname]\nrelease = \"2.6.18\"\nversion = \"#1 SMP\"\n",
    )
    .expect("write persona");
    persona
}

/// The same program exec'd again in one run is answered from what compatrun remembers
/// of it (its loader's verdict, the vDSO's note): the loader refuses every time, and
/// where the platform sees each process end (ptrace) each refusal gets its line.
#[test]
fn a_refusing_program_run_again_is_refused_again() {
    let Some(root) = tree("a_refusing_program_run_again_is_refused_again") else {
        return;
    };
    let persona = ancient_persona();
    let root = root.to_str().expect("utf8 path");
    let script = format!("for i in 1 2 3; do chroot {root} /bin/true; echo \"status $?\"; done");
    let mut cmd = under_cmd(
        persona.to_str().expect("utf8"),
        &["/bin/sh", "-c", script.as_str()],
    );
    cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let o = run_cmd(cmd, None);
    assert_eq!(o.status, 0, "{}", o.err());
    let err = o.err();
    let refusals = err
        .lines()
        .filter(|l| *l == "FATAL: kernel too old")
        .count();
    assert_eq!(refusals, 3, "{err}");
    assert_eq!(o.out().matches("status 1").count(), 3, "{}", o.out());
    let hints = err.matches("but persona ancient is Linux 2.6.18").count();
    if common::platform() == "ptrace" {
        assert_eq!(hints, 3, "{err}");
    }
}

#[test]
fn the_old_loader_checks_library_abi_tags_against_the_persona() {
    let Some(root) = tree("the_old_loader_checks_library_abi_tags_against_the_persona") else {
        return;
    };
    // A library that says it needs Linux 3.0 (no libc dependency, so any loader can map it).
    let src = common::scratch_dir().join("abitag3.c");
    std::fs::write(
        &src,
        "__asm__(\".pushsection .note.ABI-tag, \\\"a\\\", @note\\n.balign 4\\n.long 4, 16, 1\\n\
         .asciz \\\"GNU\\\"\\n.long 0, 3, 0, 0\\n.popsection\\n\");\nint compatrun_answer(void) { return 42; }\n",
    )
    .expect("write");
    std::fs::create_dir_all(root.join("tmp")).expect("tmp in tree");
    let lib = root.join("tmp/compatrun-abitag3.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-nostdlib", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(status.success());
    let script = "LD_PRELOAD=/tmp/compatrun-abitag3.so /bin/echo hi";
    let old = in_tree("rhel6", &root, script);
    let new = in_tree("3.10", &root, script);
    let _ = std::fs::remove_file(&lib);
    // Under 2.6.32 the loader skips the library (its tag is newer); under 3.10 it loads.
    assert_eq!(old.out(), "hi\n");
    assert!(old.err().contains("cannot be preloaded"), "{}", old.err());
    assert_eq!((new.out(), new.err()), ("hi\n".to_owned(), String::new()));
}

/// The old tree as the guest's root filesystem (`--rootfs`), as root and as an ordinary
/// user (uid 65534, in a user namespace where the guest is root): its own shell, its own
/// files, the persona's identity.
#[test]
fn the_old_tree_runs_as_a_root_filesystem() {
    let Some(root) = tree("the_old_tree_runs_as_a_root_filesystem") else {
        return;
    };
    let root_s = root.to_str().expect("utf8 path");
    let version = std::fs::read_to_string(root.join("etc/debian_version")).unwrap_or_default();
    let script = "cat /etc/debian_version; uname -r; cat /proc/sys/kernel/osrelease; id -u";
    let mut runs = vec![false];
    if common::is_root() {
        runs.push(true);
    } else {
        common::skip(
            "the_old_tree_runs_as_a_root_filesystem (uid 65534)",
            "starting as uid 65534 needs root",
        );
    }
    for unprivileged in runs {
        let mut cmd = if unprivileged {
            common::as_nobody(&common::compatrun_bin())
        } else {
            std::process::Command::new(common::compatrun_bin())
        };
        cmd.args([
            "-k", "rhel6", "--rootfs", root_s, "--", "/bin/sh", "-c", script,
        ]);
        let o = run_cmd(cmd, None);
        assert_eq!(
            (o.status, o.out()),
            (
                0,
                format!("{version}2.6.32-754.el6.x86_64\n2.6.32-754.el6.x86_64\n0\n")
            ),
            "unprivileged={unprivileged}: {}",
            o.err()
        );
    }
}
