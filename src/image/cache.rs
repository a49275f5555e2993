//! The image cache: where prepared trees live, how concurrent runs share them, and
//! `compatrun images list|prune`.
//!
//! ```text
//! CACHE/rootfs/CHAINID       a tree: the layers with that OCI ChainID, applied in order
//! CACHE/meta/CHAINID.json    which images (path, config digest) the tree was made for
//! CACHE/meta/CHAINID.lock    flock(2): shared while a run uses the tree, exclusive
//!                            while it is made or pruned
//! CACHE/tmp-PID-N            a tree being made (renamed into rootfs/ when whole)
//! CACHE/run-PID-N            a run's scratch space (the guest's overlay)
//! ```
//!
//! A tree appears under `rootfs/` only by `rename(2)` of a finished one, so a reader
//! never sees half a tree; two runs wanting the same missing tree take turns on its lock
//! and the second reuses what the first made. `tmp-` and `run-` directories whose
//! process is gone (killed mid-way) are removed by the next run with an image, unpack or
//! prune (tests/faults.rs).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::ImageError;

/// The image cache.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// A shared lock on a tree: `prune` leaves it alone while this lives.
#[derive(Debug)]
pub struct InUse(#[allow(dead_code)] Flock<File>);

/// What the cache records about a tree.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// The images it was made or reused for.
    images: Vec<RecordedImage>,
    /// How many layers it has.
    layers: usize,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedImage {
    path: String,
    id: String,
}

impl Record {
    /// A record for `image` (as given, made absolute) with config digest `id`.
    pub fn new(image: &Path, id: &str, layers: usize) -> Record {
        let path = fs::canonicalize(image)
            .or_else(|_| std::path::absolute(image))
            .unwrap_or_else(|_| image.to_path_buf());
        Record {
            images: vec![RecordedImage {
                path: path.display().to_string(),
                id: id.to_owned(),
            }],
            layers,
        }
    }
}

/// A tree in the cache, as `compatrun images list` shows it.
#[derive(Debug)]
pub struct CachedTree {
    /// The tree.
    pub rootfs: PathBuf,
    /// Its size on disk (hard links counted once).
    pub bytes: u64,
    /// The images it was made for: `PATH (sha256:ID)`.
    pub images: Vec<String>,
    /// Whether a run is using it now.
    pub in_use: bool,
}

/// What `compatrun images prune` removed (or, with `--dry-run`, would remove).
#[derive(Debug, Default)]
pub struct Pruned {
    /// Trees, with their sizes.
    pub trees: Vec<(PathBuf, u64)>,
    /// Trees kept because a run is using them.
    pub in_use: Vec<PathBuf>,
    /// Left-overs of interrupted unpacks and runs, with their sizes.
    pub leftovers: Vec<(PathBuf, u64)>,
}

fn lock_error(path: &Path, e: Errno) -> ImageError {
    ImageError::io(path, io::Error::from(e))
}

/// Whether the process in a `tmp-PID-N` or `run-PID-N` name is gone.
fn abandoned(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("tmp-")
        .or_else(|| name.strip_prefix("run-"))
    else {
        return false;
    };
    match rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        }
        None => false,
    }
}

impl Cache {
    /// The cache the environment names: `$COMPATRUN_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/compatrun`, else `$HOME/.cache/compatrun`.
    pub fn locate() -> Result<Cache, ImageError> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = if let Some(dir) = var("COMPATRUN_CACHE_DIR") {
            dir
        } else if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
            xdg.join("compatrun")
        } else if let Some(home) = var("HOME").filter(|p| p.is_absolute()) {
            home.join(".cache/compatrun")
        } else {
            return Err(ImageError::NoCache);
        };
        let root = std::path::absolute(&root).map_err(|e| ImageError::io(&root, e))?;
        Ok(Cache { root })
    }

    /// The cache at `root`.
    #[allow(dead_code)] // the command line always locates it; tests choose their own
    pub fn at(root: PathBuf) -> Cache {
        Cache { root }
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock_file(&self, key: &str) -> Result<(PathBuf, File), ImageError> {
        let dir = self.root.join("meta");
        fs::create_dir_all(&dir).map_err(|e| ImageError::io(&dir, e))?;
        let path = dir.join(format!("{key}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        Ok((path, file))
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.root.join("meta").join(format!("{key}.json"))
    }

    fn read_record(&self, key: &str) -> Option<Record> {
        let data = fs::read(self.record_path(key)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Writes `key`'s record (a temporary file renamed over it). A record is only
    /// informational: failing to write one is logged, never fatal.
    fn write_record(&self, key: &str, record: &Record) {
        let path = self.record_path(key);
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&tmp, serde_json::to_vec_pretty(record).unwrap_or_default()))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            log::debug!("{}: {e}", path.display());
        }
    }

    /// The tree for the layers `key`: found in the cache, or made by `unpack` into a
    /// temporary directory and renamed into place. Holds a shared lock on it meanwhile.
    pub(super) fn tree(
        &self,
        key: &str,
        record: &Record,
        unpack: impl FnOnce(&Path) -> Result<(), ImageError>,
    ) -> Result<(PathBuf, InUse), ImageError> {
        let trees = self.root.join("rootfs");
        fs::create_dir_all(&trees).map_err(|e| ImageError::io(&trees, e))?;
        let tree = trees.join(key);
        let (lock_path, file) = self.lock_file(key)?;
        let lock = match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(l) => l,
            Err((file, Errno::EWOULDBLOCK)) => {
                log::info!(
                    "waiting for another compatrun unpacking (or pruning) {}",
                    tree.display()
                );
                Flock::lock(file, FlockArg::LockShared)
                    .map_err(|(_, e)| lock_error(&lock_path, e))?
            }
            Err((_, e)) => return Err(lock_error(&lock_path, e)),
        };
        if !tree.is_dir() {
            lock.relock(FlockArg::LockExclusive)
                .map_err(|e| lock_error(&lock_path, e))?;
            if !tree.is_dir() {
                self.make(&tree, unpack)?;
                self.write_record(key, record);
                lock.relock(FlockArg::LockShared)
                    .map_err(|e| lock_error(&lock_path, e))?;
                return Ok((tree, InUse(lock)));
            }
            lock.relock(FlockArg::LockShared)
                .map_err(|e| lock_error(&lock_path, e))?;
        }
        log::info!("reusing the cached tree {}", tree.display());
        let mut known = self.read_record(key).unwrap_or_default();
        let new: Vec<RecordedImage> = record
            .images
            .iter()
            .filter(|i| !known.images.contains(i))
            .map(|i| RecordedImage {
                path: i.path.clone(),
                id: i.id.clone(),
            })
            .collect();
        if !new.is_empty() {
            known.images.extend(new);
            known.layers = record.layers;
            self.write_record(key, &known);
        }
        Ok((tree, InUse(lock)))
    }

    /// Makes `tree` with `unpack` (holding its exclusive lock).
    fn make(
        &self,
        tree: &Path,
        unpack: impl FnOnce(&Path) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        self.remove_abandoned(false);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self
            .root
            .join(format!("tmp-{}-{nanos}", std::process::id()));
        fs::create_dir(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        let made =
            unpack(&tmp).and_then(|()| fs::rename(&tmp, tree).map_err(|e| ImageError::io(tree, e)));
        if made.is_err() {
            if let Err(e) = remove_tree(&tmp) {
                log::warn!("cannot remove the unfinished tree {}: {e}", tmp.display());
            }
        }
        made
    }

    /// Removes the `tmp-` and `run-` directories of runs that were killed mid-way (their
    /// process is gone), so a killed run leaves nothing behind once the next one starts.
    pub fn remove_leftovers(&self) {
        for (path, _) in self.remove_abandoned(false) {
            log::info!("removed {}, left by a run that was killed", path.display());
        }
    }

    /// Removes (or with `dry_run` lists) the `tmp-` and `run-` directories of processes
    /// that are gone.
    fn remove_abandoned(&self, dry_run: bool) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.root) else {
            return out;
        };
        for e in entries.flatten() {
            if !abandoned(&e.file_name().to_string_lossy()) {
                continue;
            }
            let path = e.path();
            let size = disk_usage(&path);
            if dry_run || remove_tree(&path).is_ok() {
                out.push((path, size));
            }
        }
        out
    }

    fn tree_paths(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = fs::read_dir(self.root.join("rootfs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The cached trees.
    pub fn list(&self) -> Result<Vec<CachedTree>, ImageError> {
        let mut out = Vec::new();
        for (key, rootfs) in self.tree_paths() {
            let (lock_path, file) = self.lock_file(&key)?;
            let in_use = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(_) => false,
                Err((_, Errno::EWOULDBLOCK)) => true,
                Err((_, e)) => return Err(lock_error(&lock_path, e)),
            };
            let images = self
                .read_record(&key)
                .map(|r| {
                    r.images
                        .iter()
                        .map(|i| format!("{} (sha256:{})", i.path, i.id.get(..12).unwrap_or(&i.id)))
                        .collect()
                })
                .unwrap_or_default();
            out.push(CachedTree {
                bytes: disk_usage(&rootfs),
                rootfs,
                images,
                in_use,
            });
        }
        Ok(out)
    }

    /// Removes every tree no run is using, and what interrupted unpacks and runs left.
    pub fn prune(&self, dry_run: bool) -> Result<Pruned, ImageError> {
        let mut pruned = Pruned::default();
        for (key, rootfs) in self.tree_paths() {
            let (lock_path, file) = self.lock_file(&key)?;
            let _lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => {
                    pruned.in_use.push(rootfs);
                    continue;
                }
                Err((_, e)) => return Err(lock_error(&lock_path, e)),
            };
            let size = disk_usage(&rootfs);
            if !dry_run {
                // Out of rootfs/ in one step, so no run ever sees half a tree.
                let doomed = self
                    .root
                    .join(format!("tmp-{}-prune-{key}", std::process::id()));
                fs::rename(&rootfs, &doomed).map_err(|e| ImageError::io(&rootfs, e))?;
                remove_tree(&doomed).map_err(|e| ImageError::io(&doomed, e))?;
                let _ = fs::remove_file(self.record_path(&key));
            }
            pruned.trees.push((rootfs, size));
        }
        pruned.leftovers = self.remove_abandoned(dry_run);
        Ok(pruned)
    }
}

/// Removes a tree, making its directories writable first (images have read-only ones).
/// Symbolic links are removed, never followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    for e in fs::read_dir(path)? {
        remove_tree(&e?.path())?;
    }
    fs::remove_dir(path)
}

/// Bytes on disk under `path` (hard links counted once; links never followed).
fn disk_usage(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(m) = fs::symlink_metadata(path) else {
            return 0;
        };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            return 0;
        }
        let own = m.blocks() * 512;
        if !m.is_dir() {
            return own;
        }
        own + fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| walk(&e.path(), seen)).sum::<u64>())
            .unwrap_or(0)
    }
    walk(path, &mut std::collections::HashSet::new())
}
