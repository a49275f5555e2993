//! Container images as root filesystems (`--image`, `compatrun images`): a `docker
//! save`/`podman save` archive (docker-archive) or an OCI image layout, as a directory or
//! a tar.
//!
//! [`prepare`] turns an image into a tree in the [`Cache`]:
//!
//! 1. [`source`] finds the image's files (a directory, or a tar read in place);
//! 2. [`formats`] reads its manifest and config, checking every metadata blob's digest;
//! 3. [`cache`] looks the tree up by the layers' chain id and, when it is missing, has
//! 4. [`layers`] stream each layer once (decompressing gzip or zstd, checking the stored
//!    and the uncompressed digest as it passes) into [`unpack`], which writes the entries
//!    into a private temporary directory without ever following a link, and
//! 5. [`cache`] renames the finished tree into place, so a tree in the cache is always
//!    whole; a second run with the same layers reuses it.
//!
//! Errors name the image, the layer and what is wrong; nothing half-made stays behind.

mod cache;
mod formats;
mod layers;
mod source;
mod unpack;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use cache::{remove_tree, Cache};

/// Defaults from the image config (OCI/Docker config "config" object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// The entrypoint (prefixes the command).
    pub entrypoint: Vec<String>,
    /// The default command.
    pub cmd: Vec<String>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// `UID[:GID]` or a user name (and group).
    pub user: Option<String>,
}

/// An image unpacked in the cache. While it lives, `compatrun images prune` leaves its
/// tree alone (it holds a shared lock on it).
#[derive(Debug)]
pub struct PreparedImage {
    /// The tree: the image's layers applied in order.
    pub rootfs: PathBuf,
    /// The config's defaults.
    pub config: ImageConfig,
    /// sha256 of the config blob (hex), which is the image's id.
    pub id: String,
    /// The shared lock on the tree.
    _in_use: cache::InUse,
}

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing a file of compatrun's own (the cache) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The image is not a valid docker-archive or OCI layout (a missing or malformed
    /// file, a compressed archive, an unsupported digest or compression).
    #[error("image {}: {what}", image.display())]
    Invalid {
        /// The image.
        image: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A blob's content does not match the digest or size the image records for it.
    #[error("image {}: {blob}: {what}", image.display())]
    Digest {
        /// The image.
        image: PathBuf,
        /// The blob (file name in the image).
        blob: String,
        /// What does not match.
        what: String,
    },
    /// A layer is truncated, not a tar, or its compression is unreadable.
    #[error("image {}: layer {layer}: {what}", image.display())]
    Layer {
        /// The image.
        image: PathBuf,
        /// The layer (its position and file name in the image).
        layer: String,
        /// What is wrong.
        what: String,
    },
    /// A layer entry tried to write outside the tree, or through a link.
    #[error("image {}: layer {layer}: refused {entry:?}: {what}", image.display())]
    Hostile {
        /// The image.
        image: PathBuf,
        /// The layer.
        layer: String,
        /// The entry's name in the layer.
        entry: String,
        /// What it tried.
        what: String,
    },
    /// No cache directory could be found.
    #[error(
        "no cache directory: set COMPATRUN_CACHE_DIR (or XDG_CACHE_HOME or HOME) to an absolute path"
    )]
    NoCache,
}

impl ImageError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Unpacks the image at `path` into `cache` (or finds it there) and returns its tree and
/// defaults. `progress` shows a progress bar on stderr while unpacking.
pub fn prepare(path: &Path, cache: &Cache, progress: bool) -> Result<PreparedImage, ImageError> {
    let src = source::Source::open(path)?;
    let image = formats::read(&src)?;
    for layer in &image.layers {
        src.check_present(&layer.file, layer.blob.as_ref().and_then(|b| b.size))?;
    }
    let key = formats::chain_id(&image.layers);
    let record = cache::Record::new(path, &image.id, image.layers.len());
    let (rootfs, in_use) = cache.tree(&key, &record, |tmp| {
        layers::apply_all(&src, &image.layers, tmp, progress)
    })?;
    Ok(PreparedImage {
        rootfs,
        config: image.config,
        id: image.id,
        _in_use: in_use,
    })
}
