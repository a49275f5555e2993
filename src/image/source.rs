//! Where an image's files are: a directory (an OCI layout, or an extracted
//! `docker save`), or a tar of either, read in place (entries are indexed once, then read
//! by seeking to them).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ImageError;

/// The largest metadata file (manifest, index, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

/// An image's files by name (`manifest.json`, `blobs/sha256/...`).
pub enum Source {
    /// A directory.
    Dir(PathBuf),
    /// A tar archive: each regular entry's data offset and size.
    Tar {
        path: PathBuf,
        entries: HashMap<String, (u64, u64)>,
    },
}

fn normal(name: &str) -> String {
    name.trim_start_matches("./").to_owned()
}

impl Source {
    /// Opens `path`: a directory, or a tar archive indexed here.
    pub fn open(path: &Path) -> Result<Source, ImageError> {
        let meta = std::fs::metadata(path).map_err(|e| ImageError::io(path, e))?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let iter = archive
            .entries()
            .map_err(|e| ImageError::corrupt(path, format!("not a tar archive: {e}")))?;
        for entry in iter {
            let entry = entry
                .map_err(|e| ImageError::corrupt(path, format!("truncated or corrupt tar: {e}")))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry
                .path()
                .map_err(|e| ImageError::corrupt(path, format!("bad entry name: {e}")))?
                .to_string_lossy()
                .into_owned();
            let size = entry.size();
            let offset = entry.raw_file_position();
            if offset + size > meta.len() {
                return Err(ImageError::corrupt(path, format!("{name} is truncated")));
            }
            entries.insert(normal(&name), (offset, size));
        }
        Ok(Source::Tar {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// What to call the image in messages.
    pub fn display(&self) -> String {
        match self {
            Source::Dir(p) | Source::Tar { path: p, .. } => p.display().to_string(),
        }
    }

    /// Whether `name` exists.
    pub fn has(&self, name: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(name).is_file(),
            Source::Tar { entries, .. } => entries.contains_key(&normal(name)),
        }
    }

    /// A reader over `name`'s contents and its size.
    pub fn reader(&self, name: &str) -> Result<(Box<dyn Read>, u64), ImageError> {
        let missing = || ImageError::Corrupt {
            image: self.display(),
            what: format!("{name} is missing"),
        };
        match self {
            Source::Dir(d) => {
                let p = d.join(name);
                let f = File::open(&p).map_err(|_| missing())?;
                let len = f.metadata().map_err(|e| ImageError::io(&p, e))?.len();
                Ok((Box::new(f), len))
            }
            Source::Tar { path, entries } => {
                let &(offset, size) = entries.get(&normal(name)).ok_or_else(missing)?;
                let mut f = File::open(path).map_err(|e| ImageError::io(path, e))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| ImageError::io(path, e))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// `name`'s contents (a metadata file: at most 16 MiB).
    pub fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (r, len) = self.reader(name)?;
        if len > MAX_JSON {
            return Err(ImageError::Corrupt {
                image: self.display(),
                what: format!("{name} is too large for a metadata file ({len} bytes)"),
            });
        }
        let mut out = Vec::new();
        r.take(MAX_JSON)
            .read_to_end(&mut out)
            .map_err(|e| ImageError::Corrupt {
                image: self.display(),
                what: format!("{name}: {e}"),
            })?;
        Ok(out)
    }
}
