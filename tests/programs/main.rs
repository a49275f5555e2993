//! Real programs under compatrun, compared with native runs: the same stdout and the
//! same exit status, for the personas `host` (nothing changed) and `2.6` (uname caught,
//! 95 newer calls answer ENOSYS), and `rhel7` for make.
//!
//! The tests are grouped by program: `shell` (bash, exit statuses and signal deaths),
//! `coreutils`, `python` and `tools` (gcc, make, tar); this file holds what they share.

#[path = "../common/mod.rs"]
mod common;
mod coreutils;
mod python;
mod shell;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};

use common::{compare, have, skip};

/// The personas every comparison runs under.
const PERSONAS: [&str; 2] = ["host", "2.6"];

fn compare_all(argv: &[&str]) {
    for persona in PERSONAS {
        compare(persona, argv);
    }
}

/// A fresh directory under the tests' scratch space, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = common::scratch_dir().join(common::unique_marker(tag));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn str(&self) -> &str {
        self.0.to_str().expect("utf-8 scratch path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sets the modification time of `paths` (not following symlinks) to a fixed date, so
/// listings are the same whenever they are taken.
fn fix_mtimes(paths: &[&Path]) {
    let mut cmd = std::process::Command::new("touch");
    cmd.args(["-h", "-d", "2020-01-02 03:04:05 UTC"])
        .args(paths);
    let o = common::run_cmd(cmd, None);
    assert_eq!(o.status, 0, "touch failed: {}", o.err());
}

fn requires(test: &str, programs: &[&str]) -> bool {
    for p in programs {
        if !have(p) {
            skip(test, &format!("{p} is not installed"));
            return false;
        }
    }
    true
}
