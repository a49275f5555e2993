//! Reading an image's manifest and config: a docker-archive (`manifest.json` naming the
//! config and the layer files) or an OCI image layout (`oci-layout`, `index.json`, then
//! descriptors down to one manifest). Every metadata blob an OCI descriptor names is
//! checked against the descriptor's size and sha256 before it is parsed; a docker-archive
//! config named by its digest is checked against that name. The layers are only listed
//! here, with the digests [`super::layers`] checks them against as they stream.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::source::Source;
use super::{ImageConfig, ImageError};

/// How deep OCI indexes may nest.
const MAX_INDEX_DEPTH: usize = 8;

/// One layer of an image, as its manifest lists it.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Its position (1-based) and the count, for messages: `2/3`.
    pub position: String,
    /// Its file in the image (`blobs/sha256/HEX`, `ID/layer.tar`...).
    pub file: String,
    /// The stored blob's sha256 (hex) and size, when the image records them.
    pub blob: Option<BlobRef>,
    /// sha256 (hex) of the uncompressed tar: the config's diff_id.
    pub diff_id: String,
}

impl Layer {
    /// `2/3 (blobs/sha256/...)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.position, self.file)
    }
}

/// A blob's recorded digest (sha256, hex) and size (when recorded).
#[derive(Clone, Debug)]
pub struct BlobRef {
    pub digest: String,
    pub size: Option<u64>,
}

/// What [`read`] found.
#[derive(Debug)]
pub struct Image {
    /// sha256 (hex) of the config blob.
    pub id: String,
    /// The config's run defaults.
    pub config: ImageConfig,
    /// The layers, lowest first.
    pub layers: Vec<Layer>,
}

/// The image config (the parts compatrun uses).
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
struct RunConfig {
    #[serde(rename = "Env", default, deserialize_with = "strings")]
    env: Vec<String>,
    #[serde(rename = "Entrypoint", default, deserialize_with = "strings")]
    entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, deserialize_with = "strings")]
    cmd: Vec<String>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Docker's configs allow a string where a list is usual (`"Cmd": "run.sh"`), and null.
fn strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// One entry of a docker-archive's manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An OCI descriptor.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    image_layout_version: String,
}

/// sha256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn invalid(src: &Source, what: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        image: src.path().to_path_buf(),
        what: what.into(),
    }
}

fn parse<'a, T: Deserialize<'a>>(
    src: &Source,
    name: &str,
    data: &'a [u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(data).map_err(|e| invalid(src, format!("{name}: {e}")))
}

/// `sha256:HEX` → `HEX`; other algorithms and malformed digests are refused.
fn digest_hex(src: &Source, digest: &str) -> Result<String, ImageError> {
    match digest.split_once(':') {
        Some(("sha256", h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        Some((alg, _)) if alg != "sha256" => Err(invalid(
            src,
            format!("digest {digest:?}: only sha256 digests are supported"),
        )),
        _ => Err(invalid(src, format!("malformed digest {digest:?}"))),
    }
}

/// The metadata blob `desc` names, checked against its size and digest.
fn verified_blob(src: &Source, desc: &Descriptor) -> Result<(String, Vec<u8>), ImageError> {
    let hex = digest_hex(src, &desc.digest)?;
    let name = format!("blobs/sha256/{hex}");
    src.check_present(&name, Some(desc.size))?;
    let data = src.read_metadata(&name)?;
    if sha256_hex(&data) != hex {
        return Err(ImageError::Digest {
            image: src.path().to_path_buf(),
            blob: name,
            what: "its content does not match its sha256 digest".into(),
        });
    }
    Ok((hex, data))
}

/// Reads the image in `src`: an OCI layout if it has `oci-layout` and `index.json`
/// (`docker save` of Docker 25 and later writes both kinds: the OCI side is read), else
/// a docker-archive.
pub fn read(src: &Source) -> Result<Image, ImageError> {
    let (config_data, id, files) = if src.has("oci-layout") && src.has("index.json") {
        oci(src)?
    } else if src.has("manifest.json") {
        docker_archive(src)?
    } else {
        return Err(invalid(
            src,
            "neither an OCI image layout (oci-layout, index.json) nor a docker-archive \
             (manifest.json)",
        ));
    };
    let config: ConfigFile = parse(src, "the image config", &config_data)?;
    if config.rootfs.kind != "layers" {
        return Err(invalid(
            src,
            format!(
                "the config's rootfs type is {:?}, not \"layers\"",
                config.rootfs.kind
            ),
        ));
    }
    if files.len() != config.rootfs.diff_ids.len() {
        return Err(invalid(
            src,
            format!(
                "the manifest lists {} layers but the config's rootfs.diff_ids has {}",
                files.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let arch = config.architecture.as_deref().unwrap_or("");
    let os = config.os.as_deref().unwrap_or("");
    if (!arch.is_empty() && !host_archs().contains(&arch)) || (!os.is_empty() && os != "linux") {
        log::warn!(
            "image {}: built for {os}/{arch}; this host runs {}: its programs may not run",
            src.path().display(),
            host_archs()[0]
        );
    }
    let count = files.len();
    let layers = files
        .into_iter()
        .zip(&config.rootfs.diff_ids)
        .enumerate()
        .map(|(i, ((file, blob), diff_id))| {
            Ok(Layer {
                position: format!("{}/{count}", i + 1),
                file,
                blob,
                diff_id: digest_hex(src, diff_id)?,
            })
        })
        .collect::<Result<_, ImageError>>()?;
    let run = config.config.unwrap_or_default();
    Ok(Image {
        id,
        config: ImageConfig {
            env: run.env,
            entrypoint: run.entrypoint,
            cmd: run.cmd,
            working_dir: run.working_dir.filter(|s| !s.is_empty()),
            user: run.user.filter(|s| !s.is_empty()),
        },
        layers,
    })
}

/// The image architectures this host runs (OCI names), best first.
fn host_archs() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86" => &["386"],
        "aarch64" => &["arm64"],
        _ => &["amd64", "386"],
    }
}

type Found = (Vec<u8>, String, Vec<(String, Option<BlobRef>)>);

/// The config (its bytes and sha256) and the layer files of a docker-archive.
fn docker_archive(src: &Source) -> Result<Found, ImageError> {
    let data = src.read_metadata("manifest.json")?;
    let manifests: Vec<DockerManifest> = parse(src, "manifest.json", &data)?;
    let Some(first) = manifests.first() else {
        return Err(invalid(src, "manifest.json names no image"));
    };
    if manifests.len() > 1 {
        log::info!(
            "image {}: the archive holds {} images; using the first ({})",
            src.path().display(),
            manifests.len(),
            first
                .repo_tags
                .as_ref()
                .and_then(|t| t.first())
                .map_or("untagged", String::as_str)
        );
    }
    let config = src.read_metadata(&first.config)?;
    let id = sha256_hex(&config);
    // A config named by its digest (HEX.json, blobs/sha256/HEX) must match the name.
    let base = first.config.rsplit('/').next().unwrap_or("");
    let stem = base.strip_suffix(".json").unwrap_or(base);
    if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && stem != id {
        return Err(ImageError::Digest {
            image: src.path().to_path_buf(),
            blob: first.config.clone(),
            what: "its content does not match the sha256 digest it is named by".into(),
        });
    }
    let layers = first
        .layers
        .iter()
        .map(|file| {
            // Content-addressed names (Docker 25+) are checked as the layer streams.
            let blob = file
                .strip_prefix("blobs/sha256/")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|h| BlobRef {
                    digest: h.to_ascii_lowercase(),
                    size: None,
                });
            (file.clone(), blob)
        })
        .collect();
    Ok((config, id, layers))
}

/// The config (its bytes and sha256) and the layer files of an OCI layout.
fn oci(src: &Source) -> Result<Found, ImageError> {
    let layout: OciLayout = parse(src, "oci-layout", &src.read_metadata("oci-layout")?)?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(invalid(
            src,
            format!(
                "oci-layout: unsupported imageLayoutVersion {:?}",
                layout.image_layout_version
            ),
        ));
    }
    let mut value: serde_json::Value = parse(src, "index.json", &src.read_metadata("index.json")?)?;
    let mut name = "index.json".to_owned();
    for _ in 0..MAX_INDEX_DEPTH {
        if value.get("manifests").is_none() {
            let manifest: OciManifest = serde_json::from_value(value)
                .map_err(|e| invalid(src, format!("{name}: not an image manifest: {e}")))?;
            return oci_manifest(src, &manifest);
        }
        let index: OciIndex = serde_json::from_value(value)
            .map_err(|e| invalid(src, format!("{name}: not an image index: {e}")))?;
        let pick = pick_manifest(src, &name, &index.manifests)?;
        let (hex, data) = verified_blob(src, pick)?;
        name = format!("blobs/sha256/{hex}");
        value = parse(src, &name, &data)?;
    }
    Err(invalid(
        src,
        format!("image indexes nest more than {MAX_INDEX_DEPTH} deep"),
    ))
}

/// The manifest to follow in an index: this host's platform (linux/amd64, then
/// linux/386 on x86_64), else the first without a platform. Attestations (buildx's
/// `unknown/unknown` entries) are never picked.
fn pick_manifest<'a>(
    src: &Source,
    name: &str,
    manifests: &'a [Descriptor],
) -> Result<&'a Descriptor, ImageError> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|m| {
            m.annotations
                .get("vnd.docker.reference.type")
                .map(String::as_str)
                != Some("attestation-manifest")
        })
        .collect();
    for arch in host_archs() {
        if let Some(m) = candidates.iter().find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == *arch)
        }) {
            return Ok(m);
        }
    }
    let unplatformed: Vec<&&Descriptor> =
        candidates.iter().filter(|m| m.platform.is_none()).collect();
    if let Some(first) = unplatformed.first() {
        if unplatformed.len() > 1 {
            log::info!(
                "image {}: {name} lists {} images; using the first ({})",
                src.path().display(),
                unplatformed.len(),
                first
                    .annotations
                    .get("org.opencontainers.image.ref.name")
                    .map_or("unnamed", String::as_str)
            );
        }
        return Ok(first);
    }
    if candidates.is_empty() {
        return Err(invalid(src, format!("{name} lists no image")));
    }
    let offered: Vec<String> = candidates
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    Err(invalid(
        src,
        format!(
            "{name} has no image for linux/{} (it has {})",
            host_archs()[0],
            offered.join(", ")
        ),
    ))
}

fn oci_manifest(src: &Source, manifest: &OciManifest) -> Result<Found, ImageError> {
    if let Some(t) = manifest.config.media_type.as_deref() {
        if t != "application/vnd.oci.image.config.v1+json"
            && t != "application/vnd.docker.container.image.v1+json"
        {
            return Err(invalid(
                src,
                format!("not a container image: its config's media type is {t}"),
            ));
        }
    }
    let (id, config) = verified_blob(src, &manifest.config)?;
    let count = manifest.layers.len();
    let layers = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let hex = digest_hex(src, &l.digest)?;
            let file = format!("blobs/sha256/{hex}");
            if !src.has(&file) {
                let from = l
                    .urls
                    .first()
                    .map(|u| format!(" (a foreign layer, to be fetched from {u})"))
                    .unwrap_or_default();
                return Err(invalid(
                    src,
                    format!(
                        "layer {}/{count} ({file}) is missing from the image{from}",
                        i + 1
                    ),
                ));
            }
            Ok((
                file,
                Some(BlobRef {
                    digest: hex,
                    size: Some(l.size),
                }),
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok((config, id, layers))
}

/// The OCI ChainID of `layers` (hex), the cache key of their tree: ChainID(L1) =
/// DiffID(L1), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)). `empty` for none.
pub fn chain_id(layers: &[Layer]) -> String {
    let mut chain = String::new();
    for l in layers {
        chain = if chain.is_empty() {
            l.diff_id.clone()
        } else {
            sha256_hex(format!("sha256:{chain} sha256:{}", l.diff_id).as_bytes())
        };
    }
    if chain.is_empty() {
        "empty".to_owned()
    } else {
        chain
    }
}
