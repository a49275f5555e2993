//! Container images as root filesystems (`--image`): a `docker save`/`podman save`
//! archive (docker-archive) or an OCI image layout, as a directory or a tar.
//!
//! The image's layers are checked against their digests and applied in order
//! ([`unpack`]) into a tree in the cache, keyed by the layers' chain id (the OCI
//! ChainID over their uncompressed digests), so a second run reuses it. The image
//! config's Env, Entrypoint, Cmd, WorkingDir and User become the run's defaults.

mod source;
pub mod unpack;

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use source::Source;

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The image is not a valid docker-archive or OCI layout, or is truncated.
    #[error("image {image}: {what}")]
    Corrupt {
        /// The image.
        image: String,
        /// What is wrong.
        what: String,
    },
    /// A layer tried to write outside its tree, or something it may not create.
    #[error("image {image}: layer {layer}: refused: {what}")]
    Hostile {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// What it tried.
        what: String,
    },
    /// No cache directory could be found.
    #[error("no cache directory: set COMPATRUN_CACHE_DIR (or HOME)")]
    NoCache,
}

impl ImageError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn corrupt(path: &Path, what: String) -> Self {
        ImageError::Corrupt {
            image: path.display().to_string(),
            what,
        }
    }
}

/// The run's defaults from the image config.
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
    /// `UID[:GID]` or a user name.
    pub user: Option<String>,
}

/// An image unpacked in the cache.
#[derive(Debug)]
pub struct PreparedImage {
    /// The tree.
    pub rootfs: PathBuf,
    /// The config's defaults.
    pub config: ImageConfig,
}

/// One layer: where its blob is and the digests to check.
struct Layer {
    name: String,
    /// sha256 of the blob as stored (OCI descriptors give it).
    blob_digest: Option<String>,
    /// sha256 of the uncompressed tar (the config's diff_id).
    diff_id: String,
}

/// The cache directory: `$COMPATRUN_CACHE_DIR`, `$XDG_CACHE_HOME/compatrun` or
/// `$HOME/.cache/compatrun`.
pub fn cache_dir() -> Result<PathBuf, ImageError> {
    if let Some(d) = std::env::var_os("COMPATRUN_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("compatrun"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/compatrun"))
        .ok_or(ImageError::NoCache)
}

fn hex_sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn json(src: &Source, name: &str) -> Result<Value, ImageError> {
    let data = src.read(name)?;
    serde_json::from_slice(&data).map_err(|e| ImageError::Corrupt {
        image: src.display(),
        what: format!("{name} is not valid JSON: {e}"),
    })
}

fn corrupt(src: &Source, what: impl Into<String>) -> ImageError {
    ImageError::Corrupt {
        image: src.display(),
        what: what.into(),
    }
}

/// `sha256:HEX` → `HEX` (only sha256 is accepted).
fn sha256_hex(src: &Source, digest: &str) -> Result<String, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h.to_owned()),
        _ => Err(corrupt(
            src,
            format!("unsupported or malformed digest {digest:?}"),
        )),
    }
}

/// Reads a blob named by digest and checks it.
fn verified_blob(src: &Source, digest: &str) -> Result<Vec<u8>, ImageError> {
    let hex = sha256_hex(src, digest)?;
    let data = src.read(&format!("blobs/sha256/{hex}"))?;
    if hex_sha256(&data) != hex {
        return Err(corrupt(
            src,
            format!("blob {digest} does not match its digest"),
        ));
    }
    Ok(data)
}

/// The config and the layers of an OCI layout.
fn oci(src: &Source) -> Result<(Value, Vec<Layer>), ImageError> {
    let mut node = json(src, "index.json")?;
    // Follow indexes down to one manifest, preferring linux/amd64.
    for _ in 0..8 {
        let manifests = node["manifests"].as_array().cloned().unwrap_or_default();
        if manifests.is_empty() {
            break;
        }
        let pick = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux")
            .unwrap_or(&manifests[0]);
        let digest = pick["digest"]
            .as_str()
            .ok_or_else(|| corrupt(src, "a descriptor without digest"))?;
        let data = verified_blob(src, digest)?;
        node = serde_json::from_slice(&data)
            .map_err(|e| corrupt(src, format!("manifest {digest} is not JSON: {e}")))?;
    }
    let config_digest = node["config"]["digest"]
        .as_str()
        .ok_or_else(|| corrupt(src, "no image manifest with a config"))?;
    let config: Value = serde_json::from_slice(&verified_blob(src, config_digest)?)
        .map_err(|e| corrupt(src, format!("config is not JSON: {e}")))?;
    let diff_ids = strings(&config["rootfs"]["diff_ids"]);
    let layers = node["layers"].as_array().cloned().unwrap_or_default();
    if layers.len() != diff_ids.len() {
        return Err(corrupt(
            src,
            "the manifest's layers and the config's diff_ids differ in number",
        ));
    }
    let layers = layers
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| {
            let digest = l["digest"]
                .as_str()
                .ok_or_else(|| corrupt(src, "a layer without digest"))?;
            let hex = sha256_hex(src, digest)?;
            let media = l["mediaType"].as_str().unwrap_or("");
            if media.contains("zstd") {
                return Err(corrupt(
                    src,
                    format!(
                        "layer {digest}: zstd compression is not supported (gzip and plain are)"
                    ),
                ));
            }
            Ok(Layer {
                name: format!("blobs/sha256/{hex}"),
                blob_digest: Some(hex),
                diff_id: sha256_hex(src, &diff_id)?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((config, layers))
}

/// The config and the layers of a docker-archive.
fn docker_archive(src: &Source) -> Result<(Value, Vec<Layer>), ImageError> {
    let manifest = json(src, "manifest.json")?;
    let first = manifest
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| corrupt(src, "manifest.json names no image"))?;
    let config_name = first["Config"]
        .as_str()
        .ok_or_else(|| corrupt(src, "manifest.json has no Config"))?;
    let config_data = src.read(config_name)?;
    // A config named by its digest (HEX.json or blobs/sha256/HEX) must match it.
    let stem = Path::new(config_name)
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".json"))
        .unwrap_or("");
    if stem.len() == 64
        && stem.bytes().all(|b| b.is_ascii_hexdigit())
        && hex_sha256(&config_data) != stem
    {
        return Err(corrupt(
            src,
            format!("{config_name} does not match its digest"),
        ));
    }
    let config: Value = serde_json::from_slice(&config_data)
        .map_err(|e| corrupt(src, format!("{config_name} is not JSON: {e}")))?;
    let diff_ids = strings(&config["rootfs"]["diff_ids"]);
    let names = strings(&first["Layers"]);
    if names.len() != diff_ids.len() {
        return Err(corrupt(
            src,
            "manifest.json's Layers and the config's diff_ids differ in number",
        ));
    }
    let layers = names
        .into_iter()
        .zip(diff_ids)
        .map(|(name, diff_id)| {
            Ok(Layer {
                name,
                blob_digest: None,
                diff_id: sha256_hex(src, &diff_id)?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((config, layers))
}

/// The OCI ChainID of the layers, as hex: the cache key of their tree.
fn chain_id(layers: &[Layer]) -> String {
    let mut chain = String::new();
    for l in layers {
        chain = if chain.is_empty() {
            l.diff_id.clone()
        } else {
            hex_sha256(format!("sha256:{chain} sha256:{}", l.diff_id).as_bytes())
        };
    }
    chain
}

/// Unpacks (or finds in the cache) the image at `path`.
pub fn prepare(path: &Path, cache: &Path, progress: bool) -> Result<PreparedImage, ImageError> {
    let src = Source::open(path)?;
    let (config, layers) = if src.has("oci-layout") && src.has("index.json") {
        oci(&src)?
    } else if src.has("manifest.json") {
        docker_archive(&src)?
    } else {
        return Err(corrupt(
            &src,
            "neither an OCI layout (oci-layout, index.json) nor a docker-archive (manifest.json)",
        ));
    };
    let c = &config["config"];
    let image_config = ImageConfig {
        env: strings(&c["Env"]),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        working_dir: c["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        user: c["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    };
    // Every layer must be there, whole, even when the cache already has the tree.
    for l in &layers {
        if !src.has(&l.name) {
            return Err(corrupt(
                &src,
                format!("layer {} is missing or truncated", l.name),
            ));
        }
    }
    let key = chain_id(&layers);
    let rootfs = cache.join("rootfs").join(if key.is_empty() {
        "empty".to_owned()
    } else {
        key
    });
    if rootfs.is_dir() {
        log::info!("reusing the cached tree {}", rootfs.display());
        return Ok(PreparedImage {
            rootfs,
            config: image_config,
        });
    }
    std::fs::create_dir_all(cache.join("rootfs")).map_err(|e| ImageError::io(cache, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = cache.join(format!("tmp-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
    let result = unpack::apply_all(&src, &layers_for_unpack(&layers), &tmp, progress);
    if let Err(e) = result {
        let _ = unpack::remove_tree(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &rootfs).is_err() {
        // Another run unpacked the same layers meanwhile: keep theirs.
        let _ = unpack::remove_tree(&tmp);
    }
    Ok(PreparedImage {
        rootfs,
        config: image_config,
    })
}

fn layers_for_unpack(layers: &[Layer]) -> Vec<unpack::LayerRef<'_>> {
    layers
        .iter()
        .map(|l| unpack::LayerRef {
            name: &l.name,
            blob_digest: l.blob_digest.as_deref(),
            diff_id: &l.diff_id,
        })
        .collect()
}

/// `compatrun images list`: the cached trees and their sizes.
pub fn list(cache: &Path) -> Result<Vec<(PathBuf, u64)>, ImageError> {
    let dir = cache.join("rootfs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        out.push((e.path(), unpack::tree_size(&e.path())));
    }
    out.sort();
    Ok(out)
}

/// `compatrun images prune`: removes every cached tree (and unpacks left half-done).
pub fn prune(cache: &Path) -> Result<usize, ImageError> {
    let mut removed = 0;
    for sub in ["rootfs", ""] {
        let dir = if sub.is_empty() {
            cache.to_path_buf()
        } else {
            cache.join(sub)
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if sub.is_empty() && !name.starts_with("tmp-") && !name.starts_with("run-") {
                continue;
            }
            unpack::remove_tree(&e.path()).map_err(|err| ImageError::io(&e.path(), err))?;
            removed += 1;
        }
    }
    Ok(removed)
}
