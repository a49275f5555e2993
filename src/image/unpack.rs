//! Writing layer entries into a tree, safely. The tree is a fresh private directory in
//! the cache that nothing else writes to, so what is checked stays true until used.
//!
//! - Names: a leading `/` is dropped (as Docker does: `/etc/passwd` in a layer is the
//!   tree's `etc/passwd`); any `..` component is refused, whether or not it would leave
//!   the tree (no real image needs one).
//! - Parents: every directory on an entry's way is walked component by component with
//!   `symlink_metadata`; a symbolic link there is refused (so nothing is ever written,
//!   deleted or linked *through* a link, whatever the link points at), a non-directory is
//!   an error, a missing one is made (0755).
//! - The entry itself replaces whatever was at its name (a link is removed, never
//!   followed; files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`).
//! - Symbolic links may point anywhere (absolute links are normal in images; the guest
//!   resolves them inside its own root). Hard links must name a file already in the tree,
//!   reached the same checked way.
//! - Whiteouts: `.wh.NAME` deletes NAME, and `.wh..wh..opq` empties its directory, of what
//!   the layers below put there (never of what the same layer adds); other `.wh..wh.`
//!   names are aufs bookkeeping and are skipped.
//! - Modes, mtimes and (when compatrun runs as root) owners are applied; directories get
//!   theirs once every layer is in, so a read-only directory cannot stop a later layer.
//!   Device nodes need root: otherwise they are skipped with one warning (the guest's
//!   `/dev` is made at run time); fifos are made either way.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::cache::remove_tree;

/// The copy buffer for file data.
const COPY_BUFFER: usize = 256 << 10;

/// Why an entry could not be applied.
#[derive(Debug)]
pub enum EntryError {
    /// It tried to write outside the tree or through a link.
    Hostile { entry: String, what: String },
    /// It is malformed (a parent that is a file, a link without target, short data).
    Bad { entry: String, what: String },
    /// Reading its data from the layer failed (a truncated or corrupt stream).
    Data(io::Error),
    /// Writing the tree failed.
    Io { path: PathBuf, source: io::Error },
}

/// Metadata of a directory, applied at the end.
#[derive(Clone, Copy, Debug)]
struct DirMeta {
    mode: u32,
    mtime: u64,
}

/// A tree being made from layers.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    as_root: bool,
    /// What the current layer put in the tree (relative paths): its own whiteouts and
    /// opaque markers spare these.
    created: HashSet<PathBuf>,
    /// Directory metadata, applied by [`Tree::finish`].
    dirs: HashMap<PathBuf, DirMeta>,
    /// Device nodes skipped (not root): hard links to them are skipped too.
    skipped: HashSet<PathBuf>,
    /// The last parent directory walked and found sound; forgotten whenever anything is
    /// removed from the tree.
    known_parent: Option<PathBuf>,
    warned_devices: bool,
    warned_owners: bool,
    buffer: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EntryError + '_ {
    move |source| EntryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `name` as a path relative to the tree: `/` and `.` dropped; None if it has `..`.
fn relative(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn timespec(secs: u64) -> TimeSpec {
    TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
}

impl Tree {
    /// A tree at the empty directory `root`; `as_root` applies owners and makes devices.
    pub fn new(root: &Path, as_root: bool) -> Tree {
        Tree {
            root: root.to_path_buf(),
            as_root,
            created: HashSet::new(),
            dirs: HashMap::new(),
            skipped: HashSet::new(),
            known_parent: None,
            warned_devices: false,
            warned_owners: false,
            buffer: vec![0; COPY_BUFFER],
        }
    }

    /// Starts the next layer.
    pub fn begin_layer(&mut self) {
        self.created.clear();
    }

    /// Removes whatever is at `path` (a link itself, never what it points at).
    fn remove(&mut self, path: &Path) -> Result<(), EntryError> {
        self.known_parent = None;
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => remove_tree(path),
            Ok(_) => fs::remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(io_err(path))
    }

    /// The directory `rel` goes in, every component checked (and made if missing and
    /// `create`); None if a component is missing and not `create`.
    fn parent(
        &mut self,
        entry: &str,
        rel: &Path,
        create: bool,
    ) -> Result<Option<PathBuf>, EntryError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.known_parent.as_deref() == Some(parent) {
            return Ok(Some(self.root.join(parent)));
        }
        let mut dir = self.root.clone();
        let mut dir_rel = PathBuf::new();
        for c in parent.components() {
            dir.push(c);
            dir_rel.push(c);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(EntryError::Hostile {
                        entry: entry.to_owned(),
                        what: format!(
                        "it goes through the symbolic link {} (nothing is written through links)",
                        dir_rel.display()
                    ),
                    })
                }
                Ok(_) => {
                    return Err(EntryError::Bad {
                        entry: entry.to_owned(),
                        what: format!("{} on its way is not a directory", dir_rel.display()),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&dir)
                        .map_err(io_err(&dir))?;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(io_err(&dir))?;
                    self.created.insert(dir_rel.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        self.known_parent = Some(parent.to_path_buf());
        Ok(Some(dir))
    }

    /// Applies one entry of the current layer.
    pub fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), EntryError> {
        let name = match entry.path() {
            Ok(p) => p.into_owned(),
            Err(e) => {
                return Err(EntryError::Bad {
                    entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    what: format!("an unreadable name: {e}"),
                })
            }
        };
        let shown = name.display().to_string();
        let hostile = |what: &str| EntryError::Hostile {
            entry: shown.clone(),
            what: what.to_owned(),
        };
        let rel = relative(&name).ok_or_else(|| hostile("`..` in its name"))?;
        let kind = match entry.header().entry_type() {
            // Old tars mark directories only by a trailing slash.
            tar::EntryType::Regular if entry.path_bytes().ends_with(b"/") => {
                tar::EntryType::Directory
            }
            kind => kind,
        };
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let owner = (
            header.uid().ok().and_then(|u| u32::try_from(u).ok()),
            header.gid().ok().and_then(|g| u32::try_from(g).ok()),
        );
        let Some(file_name) = rel.file_name().map(OsStr::to_owned) else {
            // The layer's own root.
            if kind.is_dir() {
                self.dirs.insert(PathBuf::new(), DirMeta { mode, mtime });
                self.chown(&self.root.clone(), owner)?;
                return Ok(());
            }
            return Err(hostile("it would replace the tree's root"));
        };
        let bytes = file_name.as_bytes();
        if bytes == b".wh..wh..opq" {
            return self.opaque(&shown, &rel);
        }
        let aufs = |p: &Path| {
            p.components()
                .any(|c| c.as_os_str().as_bytes().starts_with(b".wh..wh."))
        };
        if aufs(&rel) {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk and the like)
        }
        if let Some(hidden) = bytes.strip_prefix(b".wh.") {
            return self.whiteout(&shown, &rel, OsStr::from_bytes(hidden));
        }
        let is_special = matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        );
        let handled = kind.is_dir()
            || kind.is_file()
            || kind.is_symlink()
            || kind.is_hard_link()
            || is_special
            || kind == tar::EntryType::Continuous
            || kind == tar::EntryType::GNUSparse;
        if !handled {
            log::debug!("layer entry {shown}: type {kind:?} skipped");
            return Ok(());
        }
        if is_special && kind != tar::EntryType::Fifo && !self.as_root {
            return self.skip_device(&rel);
        }
        let dir = self
            .parent(&shown, &rel, true)?
            .unwrap_or_else(|| self.root.clone());
        let path = dir.join(&file_name);
        self.created.insert(rel.clone());
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.remove(&path)?;
                        self.mkdir(&path)?;
                    }
                    Err(_) => self.mkdir(&path)?,
                }
                self.chown(&path, owner)?;
                self.dirs.insert(rel, DirMeta { mode, mtime });
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| EntryError::Bad {
                        entry: shown.clone(),
                        what: "a symbolic link without a target".into(),
                    })?;
                self.remove(&path)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_err(&path))?;
                self.chown(&path, owner)?;
                self.set_mtime(&path, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| EntryError::Bad {
                        entry: shown.clone(),
                        what: "a hard link without a target".into(),
                    })?;
                self.hard_link(&shown, &rel, &path, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.remove(&path)?;
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = stat::makedev(
                    u64::from(header.device_major().ok().flatten().unwrap_or(0)),
                    u64::from(header.device_minor().ok().flatten().unwrap_or(0)),
                );
                match stat::mknod(&path, sflag, Mode::from_bits_truncate(mode), dev) {
                    Ok(()) => {}
                    // Root in a user namespace may not make devices either.
                    Err(nix::errno::Errno::EPERM) if kind != tar::EntryType::Fifo => {
                        self.created.remove(&rel);
                        return self.skip_device(&rel);
                    }
                    Err(e) => return Err(io_err(&path)(e.into())),
                }
                self.chown(&path, owner)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io_err(&path))?;
                self.set_mtime(&path, mtime)?;
            }
            _ => {
                self.remove(&path)?;
                self.write_file(&shown, entry, &path, mode, mtime, owner)?;
            }
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> Result<(), EntryError> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .map_err(io_err(path))
    }

    /// A regular file: created new (never through a link), filled, then owner, mode and
    /// mtime (the owner first: chown clears set-user-ID bits).
    fn write_file<R: Read>(
        &mut self,
        shown: &str,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
        mtime: u64,
        owner: (Option<u32>, Option<u32>),
    ) -> Result<(), EntryError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err(path))?;
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EntryError::Data(e)),
            };
            f.write_all(&self.buffer[..n]).map_err(io_err(path))?;
            written += n as u64;
        }
        if written != entry.size() {
            return Err(EntryError::Bad {
                entry: shown.to_owned(),
                what: format!("truncated: {written} of its {} bytes", entry.size()),
            });
        }
        if self.as_root {
            match std::os::unix::fs::fchown(&f, owner.0, owner.1) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.warn_owners(),
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(path))?;
        if let Some(t) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) {
            f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
                .map_err(io_err(path))?;
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        shown: &str,
        rel: &Path,
        path: &Path,
        target: &Path,
    ) -> Result<(), EntryError> {
        let refuse = |what: String| EntryError::Hostile {
            entry: shown.to_owned(),
            what,
        };
        let target_rel = relative(target)
            .ok_or_else(|| refuse(format!("a hard link to {}: `..` in it", target.display())))?;
        if target_rel == rel {
            return Ok(());
        }
        if self.skipped.contains(&target_rel) {
            self.created.remove(rel);
            self.skipped.insert(rel.to_path_buf());
            return Ok(());
        }
        let not_in_tree = || {
            refuse(format!(
                "a hard link to {}, which is not a file already in the tree",
                target.display()
            ))
        };
        let (Some(target_name), false) = (target_rel.file_name(), target_rel.starts_with(rel))
        else {
            return Err(not_in_tree());
        };
        let source = self
            .parent(shown, &target_rel, false)?
            .ok_or_else(not_in_tree)?
            .join(target_name);
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => {}
            _ => return Err(not_in_tree()),
        }
        self.remove(path)?;
        // link(2) makes a link to a symbolic link itself, never to what it points at.
        fs::hard_link(&source, path).map_err(io_err(path))
    }

    /// `.wh.NAME`: deletes NAME of the layers below.
    fn whiteout(&mut self, shown: &str, rel: &Path, hidden: &OsStr) -> Result<(), EntryError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(EntryError::Hostile {
                entry: shown.to_owned(),
                what: format!("a whiteout of {hidden:?}"),
            });
        }
        let victim = rel.with_file_name(hidden);
        if self.created.contains(&victim) {
            return Ok(()); // a whiteout hides only what the layers below put there
        }
        match self.parent(shown, rel, false)? {
            Some(dir) => self.remove(&dir.join(hidden)),
            None => Ok(()), // nothing below to delete
        }
    }

    /// `.wh..wh..opq`: empties its directory of what the layers below put there.
    fn opaque(&mut self, shown: &str, rel: &Path) -> Result<(), EntryError> {
        let dir_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let Some(dir) = self.parent(shown, rel, true)? else {
            return Ok(());
        };
        let entries = fs::read_dir(&dir).map_err(io_err(&dir))?;
        let mut doomed = Vec::new();
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            if !self.created.contains(&dir_rel.join(e.file_name())) {
                doomed.push(e.path());
            }
        }
        for p in doomed {
            self.remove(&p)?;
        }
        Ok(())
    }

    fn skip_device(&mut self, rel: &Path) -> Result<(), EntryError> {
        if !self.warned_devices {
            log::warn!(
                "device nodes (such as /{}) skipped: only root may create them; the guest's /dev is made when it runs",
                rel.display()
            );
            self.warned_devices = true;
        }
        self.skipped.insert(rel.to_path_buf());
        Ok(())
    }

    fn warn_owners(&mut self) {
        if !self.warned_owners {
            log::warn!(
                "some files keep compatrun's user as their owner: the image's user or group ids are not mapped here"
            );
            self.warned_owners = true;
        }
    }

    /// As root: gives `path` (a link itself, not its target) the entry's owner.
    fn chown(&mut self, path: &Path, owner: (Option<u32>, Option<u32>)) -> Result<(), EntryError> {
        if !self.as_root {
            return Ok(());
        }
        match std::os::unix::fs::lchown(path, owner.0, owner.1) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.warn_owners();
                Ok(())
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Sets the mtime (and atime) of `path` itself, never of what a link points at.
    fn set_mtime(&self, path: &Path, mtime: u64) -> Result<(), EntryError> {
        let t = timespec(mtime);
        stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err(path)(e.into()))
    }

    /// Applies the directories' modes and mtimes, deepest first, each reached by the
    /// same checked walk (a directory since replaced or deleted is skipped).
    pub fn finish(mut self) -> Result<(), EntryError> {
        let mut dirs: Vec<(PathBuf, DirMeta)> =
            std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, meta) in dirs {
            let path = match rel.file_name() {
                None => self.root.clone(),
                Some(name) => match self.parent("", &rel, false) {
                    Ok(Some(dir)) => dir.join(name),
                    _ => continue,
                },
            };
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode))
                .map_err(io_err(&path))?;
            self.set_mtime(&path, meta.mtime)?;
        }
        Ok(())
    }
}
