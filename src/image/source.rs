//! Where an image's files are: a directory (an OCI layout, or an extracted `docker
//! save`), or a tar of either, read in place: its entries are indexed once (seeking past
//! their data), then each file is read by seeking to it. Links inside the tar (legacy
//! `docker save` and skopeo make `<id>/layer.tar` a symbolic link to the real file) are
//! followed within the archive only.
//!
//! Names come from the image's own manifests, so they are checked: relative, no `..`,
//! and a directory image's file must be a regular file (never a device or a fifo that
//! would never end).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::ImageError;

/// The largest metadata file (manifest, index, config) read into memory.
const MAX_METADATA: u64 = 16 << 20;

/// How many links in a row a name may go through inside a tar.
const MAX_LINKS: usize = 16;

/// An image's files by name (`manifest.json`, `blobs/sha256/...`).
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Dir,
    Tar(HashMap<String, TarEntry>),
}

#[derive(Debug)]
enum TarEntry {
    /// A regular file: where its data starts and its size.
    File { offset: u64, size: u64 },
    /// A symbolic link (its target relative to its directory) or a hard link (its
    /// target from the archive's root), as a clean name from the archive's root.
    Link(String),
}

/// `name` as a clean relative name (`./a//b` is `a/b`), or None if it is absolute or has
/// `..` (or is empty).
fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A symbolic link's target, resolved against the link's directory, as a clean name from
/// the archive's root (None if it leaves the archive or is absolute).
fn resolve_symlink(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            n => parts.push(n),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Source {
    /// Opens `path`: a directory, or a tar archive (indexed here).
    pub fn open(path: &Path) -> Result<Source, ImageError> {
        let invalid = |what: String| ImageError::Invalid {
            image: path.to_path_buf(),
            what,
        };
        let meta = std::fs::metadata(path).map_err(|e| invalid(e.to_string()))?;
        if meta.is_dir() {
            return Ok(Source {
                path: path.to_path_buf(),
                kind: Kind::Dir,
            });
        }
        let mut file = File::open(path).map_err(|e| invalid(e.to_string()))?;
        let mut magic = [0u8; 6];
        let got = file.read(&mut magic).map_err(|e| invalid(e.to_string()))?;
        let compressed = match &magic[..got] {
            [0x1f, 0x8b, ..] => Some("gzip"),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
            [0xfd, b'7', b'z', b'X', b'Z', 0] => Some("xz"),
            [b'B', b'Z', b'h', ..] => Some("bzip2"),
            _ => None,
        };
        if let Some(kind) = compressed {
            return Err(invalid(format!(
                "a {kind}-compressed file; decompress it first (the archive itself must be a \
                 plain tar, as `docker save` and `podman save` write it)"
            )));
        }
        file.rewind().map_err(|e| invalid(e.to_string()))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let iter = archive
            .entries_with_seek()
            .map_err(|e| invalid(format!("not a tar archive (nor a directory): {e}")))?;
        for entry in iter {
            let entry = entry.map_err(|e| {
                invalid(format!(
                    "not a tar archive (nor a directory), or a corrupt one: {e}"
                ))
            })?;
            let Some(name) = entry.path().ok().and_then(|p| p.to_str().and_then(clean)) else {
                continue; // a name no manifest can refer to
            };
            let header = entry.header();
            let link = || {
                entry
                    .link_name()
                    .ok()
                    .flatten()
                    .and_then(|l| l.to_str().map(str::to_owned))
            };
            let value = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (offset, size) = (entry.raw_file_position(), entry.size());
                    if offset.checked_add(size).is_none_or(|end| end > meta.len()) {
                        return Err(invalid(format!("truncated: {name} is cut short")));
                    }
                    TarEntry::File { offset, size }
                }
                tar::EntryType::Symlink => match link().and_then(|t| resolve_symlink(&name, &t)) {
                    Some(t) => TarEntry::Link(t),
                    None => continue,
                },
                tar::EntryType::Link => match link().and_then(|t| clean(&t)) {
                    Some(t) => TarEntry::Link(t),
                    None => continue,
                },
                _ => continue,
            };
            entries.insert(name, value);
        }
        Ok(Source {
            path: path.to_path_buf(),
            kind: Kind::Tar(entries),
        })
    }

    /// The image's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&self, what: String) -> ImageError {
        ImageError::Invalid {
            image: self.path.clone(),
            what,
        }
    }

    /// The regular file `name` of a tar image: its data's offset and size.
    fn tar_file(entries: &HashMap<String, TarEntry>, name: &str) -> Option<(u64, u64)> {
        let mut name = clean(name)?;
        for _ in 0..MAX_LINKS {
            match entries.get(&name)? {
                TarEntry::File { offset, size } => return Some((*offset, *size)),
                TarEntry::Link(target) => name = target.clone(),
            }
        }
        None
    }

    /// Whether the image has the file `name`.
    pub fn has(&self, name: &str) -> bool {
        self.size(name).is_ok()
    }

    /// The size of `name`, or an error saying it is missing.
    pub fn size(&self, name: &str) -> Result<u64, ImageError> {
        let missing = || self.invalid(format!("{name} is missing"));
        match &self.kind {
            Kind::Dir => {
                let rel = clean(name).ok_or_else(missing)?;
                match std::fs::metadata(self.path.join(rel)) {
                    Ok(m) if m.is_file() => Ok(m.len()),
                    _ => Err(missing()),
                }
            }
            Kind::Tar(entries) => Self::tar_file(entries, name)
                .map(|(_, size)| size)
                .ok_or_else(missing),
        }
    }

    /// Checks that the layer file `name` is there (and `size` bytes long, when the image
    /// records its size).
    pub fn check_present(&self, name: &str, size: Option<u64>) -> Result<(), ImageError> {
        let actual = self.size(name)?;
        match size {
            Some(expected) if expected != actual => Err(ImageError::Digest {
                image: self.path.clone(),
                blob: name.to_owned(),
                what: format!(
                    "{actual} bytes where its descriptor says {expected} (truncated or replaced)"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A reader over `name`'s contents, and its size.
    pub fn reader(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let size = self.size(name)?;
        let missing = || self.invalid(format!("{name} is missing"));
        match &self.kind {
            Kind::Dir => {
                let p = self.path.join(clean(name).ok_or_else(missing)?);
                let f = File::open(&p).map_err(|e| self.invalid(format!("{name}: {e}")))?;
                Ok((Box::new(f.take(size)), size))
            }
            Kind::Tar(entries) => {
                let (offset, size) = Self::tar_file(entries, name).ok_or_else(missing)?;
                let mut f = File::open(&self.path).map_err(|e| ImageError::io(&self.path, e))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| ImageError::io(&self.path, e))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// `name`'s contents: a metadata file (manifest, index, config), at most 16 MiB.
    pub fn read_metadata(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (r, len) = self.reader(name)?;
        if len > MAX_METADATA {
            return Err(self.invalid(format!(
                "{name} is too large for a metadata file ({len} bytes)"
            )));
        }
        let mut out = Vec::new();
        r.take(MAX_METADATA)
            .read_to_end(&mut out)
            .map_err(|e| self.invalid(format!("{name}: {e}")))?;
        if u64::try_from(out.len()).ok() != Some(len) {
            return Err(self.invalid(format!("{name} is truncated")));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{clean, resolve_symlink};

    #[test]
    fn names_are_cleaned_and_escapes_refused() {
        assert_eq!(clean("./a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(clean("/etc/shadow"), None);
        assert_eq!(clean("a/../../b"), None);
        assert_eq!(clean("."), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_symlink("abc/layer.tar", "../def.tar").as_deref(),
            Some("def.tar")
        );
        assert_eq!(resolve_symlink("abc/layer.tar", "../../x"), None);
        assert_eq!(resolve_symlink("abc/layer.tar", "/etc/passwd"), None);
    }
}
