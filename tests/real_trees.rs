//! Real trees and images made by real tools: a Debian bullseye minbase tree from
//! `debootstrap`, turned into an OCI layout by `umoci` (with a second layer that deletes
//! and replaces files) and into a docker-archive by `skopeo` (scripts/test-trees.sh,
//! cached in target/test-trees). Run as root and as uid 65534, on the suite's platform.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{compatrun_bin, is_root, run_cmd, skip, Outcome};

/// target/test-trees, made once per test run (Err with the reason when it cannot be).
fn trees() -> Result<&'static Path, String> {
    static TREES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TREES
        .get_or_init(|| {
            if !is_root() {
                return Err("debootstrap and umoci need root".into());
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-trees.sh");
            let out = Command::new("bash")
                .arg(script)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/test-trees.sh failed (network or tools missing?): {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Ok(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn trees_or_skip(test: &str) -> Option<&'static Path> {
    match trees() {
        Ok(t) => Some(t),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

fn compatrun(unprivileged: bool, cache: &Path, args: &[&str]) -> Outcome {
    let mut cmd = if unprivileged {
        common::as_nobody(&compatrun_bin())
    } else {
        Command::new(compatrun_bin())
    };
    cmd.args(args)
        .env("COMPATRUN_CACHE_DIR", cache)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    run_cmd(cmd, None)
}

/// The packages the tree's dpkg database lists as installed.
fn installed_packages(tree: &Path) -> usize {
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap_or_default();
    status
        .split("\n\n")
        .filter(|p| p.lines().any(|l| l == "Status: install ok installed"))
        .count()
}

fn cache(name: &str) -> PathBuf {
    let c = common::scratch_dir().join(format!("real-trees-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&c);
    std::fs::create_dir_all(&c).expect("mkdir");
    let _ = Command::new("chmod").arg("777").arg(&c).status();
    c
}

const SCRIPT: &str = "cat /etc/debian_version; echo $BASH_VERSION | cut -d. -f1; \
                      dpkg -l | grep -c '^ii'; uname -r; cat /proc/sys/kernel/osrelease; id -u";

#[test]
fn a_debootstrap_tree_runs_its_shell_and_package_manager_under_a_legacy_persona() {
    let test = "a_debootstrap_tree_runs_its_shell_and_package_manager_under_a_legacy_persona";
    let Some(t) = trees_or_skip(test) else { return };
    let tree = t.join("bullseye");
    let version = std::fs::read_to_string(tree.join("etc/debian_version")).expect("debian_version");
    let expected = format!(
        "{version}5\n{}\n3.10.0-1160.el7.x86_64\n3.10.0-1160.el7.x86_64\n0\n",
        installed_packages(&tree)
    );
    let c = cache("tree");
    for unprivileged in [false, true] {
        let o = compatrun(
            unprivileged,
            &c,
            &[
                "-k",
                "rhel7",
                "--rootfs",
                tree.to_str().expect("utf8"),
                "--",
                "/bin/bash",
                "-c",
                SCRIPT,
            ],
        );
        assert_eq!(
            (o.status, o.out()),
            (0, expected.clone()),
            "unprivileged={unprivileged}: {}",
            o.err()
        );
    }
    // bullseye's glibc 2.31 wants Linux 3.2: under 2.6.32 its loader refuses, as on
    // that kernel (ptrace, which rewrites the vDSO note; auto picks it here).
    let o = compatrun(
        false,
        &c,
        &[
            "-k",
            "2.6",
            "--platform",
            "auto",
            "--rootfs",
            tree.to_str().expect("utf8"),
            "--",
            "/bin/true",
        ],
    );
    assert_ne!(o.status, 0, "{}", o.err());
    assert!(o.err().contains("FATAL: kernel too old"), "{}", o.err());
}

#[test]
fn images_made_by_umoci_and_skopeo_run_with_their_layers_applied() {
    let test = "images_made_by_umoci_and_skopeo_run_with_their_layers_applied";
    let Some(t) = trees_or_skip(test) else { return };
    let tree = t.join("bullseye");
    let version = std::fs::read_to_string(tree.join("etc/debian_version")).expect("debian_version");
    let packages = installed_packages(&tree);
    let script = "cat /etc/debian_version; dpkg -l | grep -c '^ii'; uname -r; pwd; \
                  test -e /etc/issue.net && echo whiteout-missed; ls /etc/update-motd.d; id -u";
    for (image, unprivileged) in [
        ("oci", false),
        ("oci.tar", false),
        ("docker.tar", false),
        ("docker.tar", true),
    ] {
        let c = cache(&format!("{}-{unprivileged}", image.replace('.', "-")));
        let path = t.join(image);
        let o = compatrun(
            unprivileged,
            &c,
            &[
                "-k",
                "rhel7",
                "--image",
                path.to_str().expect("utf8"),
                "--",
                "/bin/bash",
                "-c",
                script,
            ],
        );
        assert_eq!(
            (o.status, o.out()),
            (
                0,
                format!("{version}{packages}\n3.10.0-1160.el7.x86_64\n/root\nonly-above\n0\n")
            ),
            "{image} unprivileged={unprivileged}: {}",
            o.err()
        );
    }
}
