//! Applying an image's layers to a tree, safely: every layer's stored and uncompressed
//! digests are checked as it streams by, and nothing is ever written outside the tree.
//!
//! Entry names with `..` are refused; every parent directory of an entry is walked
//! component by component with `symlink_metadata`, and a symbolic link or a
//! non-directory on the way is refused, so no entry can write through a link (the tree
//! is a fresh private directory: nothing else changes it meanwhile). Hard links must
//! name a file inside the tree reached the same way. Symbolic links themselves may point
//! anywhere: the guest resolves them inside its own root. Device nodes are created only
//! when compatrun runs as root (an ordinary user may not; they are skipped with a
//! warning, and the guest's /dev comes from compatrun anyway). Whiteouts (`.wh.NAME`)
//! delete from the layers below; `.wh..wh..opq` empties a directory of what the layers
//! below put there.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::source::Source;
use super::ImageError;

/// A layer to apply: its blob's name in the image and the digests it must match.
pub struct LayerRef<'a> {
    /// The blob's name in the image.
    pub name: &'a str,
    /// sha256 (hex) of the blob as stored, when the image records it.
    pub blob_digest: Option<&'a str>,
    /// sha256 (hex) of the uncompressed tar.
    pub diff_id: &'a str,
}

/// A reader that hashes what passes through it and moves a progress bar.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    progress: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        if let Some(p) = &self.progress {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R, progress: Option<indicatif::ProgressBar>) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            progress,
        }
    }
}

type Blob = BufReader<Hashing<Box<dyn Read>>>;

/// The uncompressed layer: gzip or plain, told apart by the gzip magic.
enum Decoded {
    Gzip(Box<flate2::read::GzDecoder<Blob>>),
    Plain(Blob),
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Gzip(g) => g.read(buf),
            Decoded::Plain(p) => p.read(buf),
        }
    }
}

impl Decoded {
    fn into_blob(self) -> Blob {
        match self {
            Decoded::Gzip(g) => g.into_inner(),
            Decoded::Plain(p) => p,
        }
    }
}

/// What one layer application needs to know.
struct Ctx<'a> {
    image: String,
    layer: &'a str,
    root: &'a Path,
    as_root: bool,
    /// Paths (relative) this layer created: an opaque marker spares them.
    created: HashSet<PathBuf>,
    /// Directory modes, applied once every layer is in (a read-only directory would
    /// stop later entries).
    dir_modes: &'a mut Vec<(PathBuf, u32)>,
    warned_devices: &'a mut bool,
}

impl Ctx<'_> {
    fn hostile(&self, what: String) -> ImageError {
        ImageError::Hostile {
            image: self.image.clone(),
            layer: self.layer.to_owned(),
            what,
        }
    }

    fn io(&self, path: &Path, e: io::Error) -> ImageError {
        ImageError::Io {
            path: path.display().to_string(),
            source: e,
        }
    }

    /// The entry's name as a relative path, refusing `..`.
    fn relative(&self, name: &Path) -> Result<PathBuf, ImageError> {
        let mut out = PathBuf::new();
        for c in name.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => out.push(n),
                _ => return Err(self.hostile(format!("{}: `..` in an entry name", name.display()))),
            }
        }
        Ok(out)
    }

    /// The directory `rel` lives in, made if missing, without following any link.
    fn parent(&self, rel: &Path, create: bool) -> Result<PathBuf, ImageError> {
        let mut dir = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(dir);
        };
        for c in parent.components() {
            dir.push(c);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.hostile(format!(
                        "{}: goes through the symbolic link {}",
                        rel.display(),
                        dir.strip_prefix(self.root).unwrap_or(&dir).display()
                    )))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(
                        self.hostile(format!("{}: a parent is not a directory", rel.display()))
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&dir)
                        .map_err(|e| self.io(&dir, e))?;
                }
                Err(e) => return Err(self.io(&dir, e)),
            }
        }
        Ok(dir)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let name = entry
            .path()
            .map_err(|e| self.hostile(format!("an unreadable entry name: {e}")))?
            .into_owned();
        let rel = self.relative(&name)?;
        if rel.as_os_str().is_empty() {
            return Ok(()); // the layer's own root directory
        }
        let file_name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = self.parent(&rel, true)?;
        if file_name == ".wh..wh..opq" {
            return self.opaque(&dir, rel.parent().unwrap_or(Path::new("")));
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            return remove_path(&dir.join(hidden)).map_err(|e| self.io(&dir.join(hidden), e));
        }
        let path = dir.join(rel.file_name().unwrap_or_default());
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let kind = header.entry_type();
        self.created.insert(rel.clone());
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => remove_path(&path).map_err(|e| self.io(&path, e))?,
                    Err(_) => {}
                }
                if !path.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|e| self.io(&path, e))?;
                }
                self.dir_modes.push((path.clone(), mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                replace(&path).map_err(|e| self.io(&path, e))?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| self.io(&path, e))?;
                io::copy(&mut entry, &mut f).map_err(|e| self.io(&path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| self.io(&path, e))?;
            }
            tar::EntryType::Symlink => {
                let target = header.link_name().ok().flatten().ok_or_else(|| {
                    self.hostile(format!("{}: a link without target", rel.display()))
                })?;
                replace(&path).map_err(|e| self.io(&path, e))?;
                std::os::unix::fs::symlink(&target, &path).map_err(|e| self.io(&path, e))?;
            }
            tar::EntryType::Link => {
                let target = header.link_name().ok().flatten().ok_or_else(|| {
                    self.hostile(format!("{}: a link without target", rel.display()))
                })?;
                let target_rel = self.relative(&target)?;
                let source = self
                    .parent(&target_rel, false)?
                    .join(target_rel.file_name().unwrap_or_default());
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(self.hostile(format!(
                            "{}: a hard link to {}, which is not a file inside the image",
                            rel.display(),
                            target.display()
                        )))
                    }
                }
                replace(&path).map_err(|e| self.io(&path, e))?;
                fs::hard_link(&source, &path).map_err(|e| self.io(&path, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if kind != tar::EntryType::Fifo && !self.as_root {
                    if !*self.warned_devices {
                        log::warn!(
                            "image {}: device nodes (such as /{}) skipped: only root may create them; the guest's /dev comes from compatrun",
                            self.image,
                            rel.display()
                        );
                        *self.warned_devices = true;
                    }
                    self.created.remove(&rel);
                    return Ok(());
                }
                replace(&path).map_err(|e| self.io(&path, e))?;
                let sflag = match kind {
                    tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(
                    u64::from(header.device_major().ok().flatten().unwrap_or(0)),
                    u64::from(header.device_minor().ok().flatten().unwrap_or(0)),
                );
                nix::sys::stat::mknod(
                    &path,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    dev,
                )
                .map_err(|e| self.io(&path, e.into()))?;
            }
            _ => {
                self.created.remove(&rel);
                return Ok(());
            }
        }
        if self.as_root {
            let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
            let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
            std::os::unix::fs::lchown(&path, uid, gid).map_err(|e| self.io(&path, e))?;
        }
        Ok(())
    }

    /// `.wh..wh..opq`: empty `dir` (relative `rel_dir`) of what lower layers put there.
    fn opaque(&self, dir: &Path, rel_dir: &Path) -> Result<(), ImageError> {
        let entries = fs::read_dir(dir).map_err(|e| self.io(dir, e))?;
        for e in entries.flatten() {
            if !self.created.contains(&rel_dir.join(e.file_name())) {
                remove_path(&e.path()).map_err(|err| self.io(&e.path(), err))?;
            }
        }
        Ok(())
    }
}

/// Removes whatever is at `path` (a link itself, never its target); missing is fine.
fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_tree(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes room for a new entry at `path`: an existing non-directory goes; a directory
/// goes only if the new entry is not one (callers handle directories themselves).
fn replace(path: &Path) -> io::Result<()> {
    remove_path(path)
}

/// Removes a tree, making directories writable first (an image may have read-only ones).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            for e in fs::read_dir(path)?.flatten() {
                remove_tree(&e.path())?;
            }
            return fs::remove_dir(path);
        }
        return fs::remove_file(path);
    }
    Ok(())
}

/// The bytes of regular files under `path`.
pub fn tree_size(path: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return if m.is_file() { m.len() } else { 0 };
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Applies `layers` from `src`, in order, to the empty directory `root`.
pub(super) fn apply_all(
    src: &Source,
    layers: &[LayerRef<'_>],
    root: &Path,
    progress: bool,
) -> Result<(), ImageError> {
    let mut readers = Vec::new();
    let mut total = 0;
    for l in layers {
        let (r, len) = src.reader(l.name)?;
        total += len;
        readers.push(r);
    }
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "unpacking {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let as_root = nix::unistd::geteuid().is_root();
    let mut dir_modes = Vec::new();
    let mut warned = false;
    for (i, (l, r)) in layers.iter().zip(readers).enumerate() {
        if let Some(b) = &bar {
            b.set_message(format!("layer {}/{}", i + 1, layers.len()));
        }
        apply_one(
            src,
            l,
            r,
            root,
            as_root,
            bar.clone(),
            &mut dir_modes,
            &mut warned,
        )?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    dir_modes.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
    for (p, mode) in dir_modes {
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn apply_one(
    src: &Source,
    layer: &LayerRef<'_>,
    reader: Box<dyn Read>,
    root: &Path,
    as_root: bool,
    bar: Option<indicatif::ProgressBar>,
    dir_modes: &mut Vec<(PathBuf, u32)>,
    warned: &mut bool,
) -> Result<(), ImageError> {
    let corrupt = |what: String| ImageError::Corrupt {
        image: src.display(),
        what: format!("layer {}: {what}", layer.name),
    };
    let mut blob = BufReader::new(Hashing::new(reader, bar));
    let gzip = blob
        .fill_buf()
        .map_err(|e| corrupt(e.to_string()))?
        .starts_with(&[0x1f, 0x8b]);
    let decoded = if gzip {
        Decoded::Gzip(Box::new(flate2::read::GzDecoder::new(blob)))
    } else {
        Decoded::Plain(blob)
    };
    let mut archive = tar::Archive::new(Hashing::new(decoded, None));
    let mut ctx = Ctx {
        image: src.display(),
        layer: layer.name,
        root,
        as_root,
        created: HashSet::new(),
        dir_modes,
        warned_devices: warned,
    };
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| corrupt(format!("truncated or corrupt: {e}")))?;
        ctx.entry(entry)?;
    }
    let mut diff = archive.into_inner();
    io::copy(&mut diff, &mut io::sink())
        .map_err(|e| corrupt(format!("truncated or corrupt: {e}")))?;
    if format!("{:x}", diff.hash.finalize_reset()) != layer.diff_id {
        return Err(corrupt(
            "its content does not match the config's diff_id".into(),
        ));
    }
    let mut blob = diff.inner.into_blob();
    io::copy(&mut blob, &mut io::sink()).map_err(|e| corrupt(format!("truncated: {e}")))?;
    if let Some(expected) = layer.blob_digest {
        if format!("{:x}", blob.into_inner().hash.finalize()) != expected {
            return Err(corrupt("the blob does not match its digest".into()));
        }
    }
    Ok(())
}
