//! Which files a scan reads: each PATH given (a file, or a directory walked), or a whole
//! tree. Symbolic links inside a walked directory are never followed (their targets are
//! in the tree anyway, or outside it); a file reached twice (a hard link, or a PATH
//! named twice) is read once; directories that cannot be read are reported.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A regular file to read: where it is, and how it is shown.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its path here.
    pub path: PathBuf,
    /// Its path as reported: inside a tree, as the tree's programs see it (`/bin/ls`).
    pub shown: PathBuf,
    /// Its size.
    pub size: u64,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files, in walk order.
    pub files: Vec<Candidate>,
    /// Directories or files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Walks `roots`. With `tree` set, each root is a root filesystem and paths are shown
/// as absolute paths inside it; otherwise paths are shown as given. A root that does not
/// exist is an error naming it.
pub fn walk(roots: &[PathBuf], tree: bool) -> Result<Walk, String> {
    let mut out = Walk::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    for root in roots {
        // A path named on the command line is followed even if it is a link.
        let meta = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
        if meta.is_file() {
            if seen.insert((meta.dev(), meta.ino())) {
                out.files.push(Candidate {
                    path: root.clone(),
                    shown: if tree { "/".into() } else { root.clone() },
                    size: meta.len(),
                });
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(format!(
                "{}: neither a regular file nor a directory",
                root.display()
            ));
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    out.unreadable
                        .push((shown(root, &dir, tree), e.to_string()));
                    continue;
                }
            };
            let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
            names.sort_by_key(|e| e.file_name());
            for entry in names.into_iter().rev() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                    out.files.push(Candidate {
                        shown: shown(root, &path, tree),
                        path,
                        size: meta.len(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// `path` as shown: `/rel` inside a tree, else as found.
fn shown(root: &Path, path: &Path, tree: bool) -> PathBuf {
    if tree {
        Path::new("/").join(path.strip_prefix(root).unwrap_or(path))
    } else {
        path.to_path_buf()
    }
}
