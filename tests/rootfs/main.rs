//! `--rootfs`: a busybox-static tree (Debian's `busybox-static`, installed by
//! scripts/test-deps.sh) made in the scratch directory, run as root and as an ordinary
//! user (uid 65534 through `setpriv`, in a user namespace), on the suite's platform.
//!
//! The tests are grouped by what they own: `tree` (the tree as the guest's whole world),
//! `options` (binds, host files, environment, working directory, user; with a tree,
//! without one and with an image) and `refusals` (clear errors); this file holds the
//! tree and the runners they share.

#[path = "../common/mod.rs"]
mod common;
mod options;
mod refusals;
mod tree;

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
