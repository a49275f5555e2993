//! Streaming layers into a tree: each layer is read once, decompressed by what its bytes
//! are (gzip, including multi-member gzip such as eStargz; zstd, including several
//! frames and skippable frames such as zstd:chunked; or a plain tar), its stored blob's
//! sha256 (when the image records one) and its uncompressed sha256 (the config's
//! diff_id) computed as it passes, and its entries handed to [`Tree`]. A layer whose
//! digests do not match fails after its last byte, and the caller throws the whole tree
//! away.
//!
//! A layer stream that ends right after an entry's data, without the tar padding or
//! end-of-archive blocks (umoci up to 0.4.7 writes such layers; Go-based engines accept
//! them), is accepted when its digests match: the padding is supplied as zeros, outside
//! the digest.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::formats::Layer;
use super::source::Source;
use super::unpack::{EntryError, Tree};
use super::ImageError;

/// The read buffer of a layer's blob.
const BLOB_BUFFER: usize = 256 << 10;

/// A tar block.
const BLOCK: u64 = 512;

/// An empty zstd frame, to give the decoder state before the first real frame: the
/// decoder checks the window size a frame asks for (at most 100 MiB) only when it has
/// state, so no frame header can make it reserve an absurd window.
const EMPTY_ZSTD_FRAME: [u8; 13] = [
    0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x00, 0x01, 0x00, 0x00, 0x99, 0xe9, 0xd8, 0x51,
];

/// A reader that counts (and maybe hashes) what passes and moves a progress bar.
struct Tally<R> {
    inner: R,
    hash: Option<Sha256>,
    count: u64,
    bar: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Tally<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

impl<R> Tally<R> {
    fn new(inner: R, hash: bool, bar: Option<indicatif::ProgressBar>) -> Self {
        Tally {
            inner,
            hash: hash.then(Sha256::new),
            count: 0,
            bar,
        }
    }

    fn hex(&mut self) -> Option<String> {
        self.hash.take().map(|h| format!("{:x}", h.finalize()))
    }
}

/// A tar stream that, if it ends exactly where the last entry's data ends, supplies the
/// zeros up to the next block boundary (and never anything else).
struct Padded<R> {
    inner: R,
    count: u64,
    /// Where the current entry's data ends in the stream (set as each entry starts).
    data_end: Rc<Cell<u64>>,
    pad: Option<u64>,
}

impl<R: Read> Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(left) = &mut self.pad {
            let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            buf[..n].fill(0);
            *left -= n as u64;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let left = if self.count == self.data_end.get() {
                (BLOCK - self.count % BLOCK) % BLOCK
            } else {
                0
            };
            self.pad = Some(left);
            return self.read(buf);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// A zstd stream of any number of frames (skippable ones skipped).
struct Zstd<R: BufRead> {
    src: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

fn zstd_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Zstd<R> {
    fn new(src: R) -> io::Result<Self> {
        let mut decoder = ruzstd::decoding::FrameDecoder::new();
        decoder.init(&EMPTY_ZSTD_FRAME[..]).map_err(zstd_error)?;
        Ok(Zstd {
            src,
            decoder,
            in_frame: false,
        })
    }
}

impl<R: BufRead> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped = io::copy(
                            &mut (&mut self.src).take(u64::from(length)),
                            &mut io::sink(),
                        )?;
                        if skipped != u64::from(length) {
                            return Err(zstd_error("a skippable frame is cut short"));
                        }
                        continue;
                    }
                    Err(e) => return Err(zstd_error(e)),
                }
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let want = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(
                        &mut self.src,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBytes(want),
                    )
                    .map_err(zstd_error)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

type Blob = BufReader<Tally<Box<dyn Read + Send>>>;

/// A layer's uncompressed stream.
enum Decoded {
    Plain(Blob),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Blob>>),
    Zstd(Box<Zstd<Blob>>),
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf),
            Decoded::Zstd(r) => r.read(buf),
        }
    }
}

impl Decoded {
    fn into_blob(self) -> Blob {
        match self {
            Decoded::Plain(r) => r,
            Decoded::Gzip(r) => r.into_inner(),
            Decoded::Zstd(r) => r.src,
        }
    }
}

/// Applies `layers` from `src`, in order, to the empty directory `root`.
pub fn apply_all(
    src: &Source,
    layers: &[Layer],
    root: &Path,
    progress: bool,
) -> Result<(), ImageError> {
    let mut total = 0;
    for l in layers {
        total += src.size(&l.file)?;
    }
    let bar = progress.then(|| {
        let style = indicatif::ProgressStyle::with_template(
            "unpacking layer {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        indicatif::ProgressBar::new(total).with_style(style)
    });
    let start = Instant::now();
    let mut tree = Tree::new(root, nix::unistd::geteuid().is_root());
    let mut unpacked = 0;
    for layer in layers {
        if let Some(b) = &bar {
            b.set_message(layer.position.clone());
        }
        log::debug!("unpacking layer {}", layer.label());
        unpacked += apply_one(src, layer, &mut tree, bar.clone())?;
    }
    tree.finish().map_err(|e| entry_error(src, "", e))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    log::info!(
        "unpacked {} layers of {} ({:.1} MB uncompressed) in {secs:.1} s",
        layers.len(),
        src.path().display(),
        unpacked as f64 / 1e6
    );
    Ok(())
}

fn entry_error(src: &Source, layer: &str, e: EntryError) -> ImageError {
    let image = src.path().to_path_buf();
    let layer = layer.to_owned();
    match e {
        EntryError::Hostile { entry, what } => ImageError::Hostile {
            image,
            layer,
            entry,
            what,
        },
        EntryError::Bad { entry, what } => ImageError::Layer {
            image,
            layer,
            what: format!("{entry}: {what}"),
        },
        EntryError::Data(e) => ImageError::Layer {
            image,
            layer,
            what: format!("truncated or corrupt: {e}"),
        },
        EntryError::Io { path, source } => ImageError::Io { path, source },
    }
}

/// What a layer's compression is, by its first bytes.
fn compression(magic: &[u8]) -> Result<&'static str, String> {
    match magic {
        [0x1f, 0x8b, ..] => Ok("gzip"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok("zstd"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Err("xz".into()),
        [b'B', b'Z', b'h', ..] => Err("bzip2".into()),
        _ => Ok("none"),
    }
}

/// Streams one layer into `tree`; returns its uncompressed size.
fn apply_one(
    src: &Source,
    layer: &Layer,
    tree: &mut Tree,
    bar: Option<indicatif::ProgressBar>,
) -> Result<u64, ImageError> {
    let label = layer.label();
    let broken = |what: String| ImageError::Layer {
        image: src.path().to_path_buf(),
        layer: label.clone(),
        what,
    };
    let (reader, _) = src.reader(&layer.file)?;
    let mut blob =
        BufReader::with_capacity(BLOB_BUFFER, Tally::new(reader, layer.blob.is_some(), bar));
    let magic = blob
        .fill_buf()
        .map_err(|e| broken(format!("unreadable: {e}")))?;
    let kind = compression(&magic[..magic.len().min(6)]).map_err(|name| {
        broken(format!(
            "unsupported layer compression {name} (gzip, zstd and plain tar are supported)"
        ))
    })?;
    let decoded = match kind {
        "gzip" => Decoded::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(blob))),
        "zstd" => Decoded::Zstd(Box::new(
            Zstd::new(blob).map_err(|e| broken(e.to_string()))?,
        )),
        _ => {
            // A plain layer's blob is its tar: one hash serves both digests.
            blob.get_mut().hash = None;
            Decoded::Plain(blob)
        }
    };
    let diff = Tally::new(decoded, true, None);
    let data_end = Rc::new(Cell::new(0));
    let mut archive = tar::Archive::new(Padded {
        inner: diff,
        count: 0,
        data_end: data_end.clone(),
        pad: None,
    });
    tree.begin_layer();
    let applied = (|| -> Result<(), ImageError> {
        let entries = archive
            .entries()
            .map_err(|e| broken(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| broken(format!("truncated or corrupt: {e}")))?;
            data_end.set(entry.raw_file_position().saturating_add(entry.size()));
            tree.apply(&mut entry)
                .map_err(|e| entry_error(src, &label, e))?;
        }
        Ok(())
    })();
    if let Err(e @ (ImageError::Hostile { .. } | ImageError::Io { .. })) = applied {
        return Err(e);
    }
    let mut diff = archive.into_inner().inner;
    let rest = io::copy(&mut diff, &mut io::sink());
    let diff_hex = diff.hex().unwrap_or_default();
    let size = diff.count;
    let mut blob = diff.inner.into_blob();
    let blob_rest = io::copy(&mut blob, &mut io::sink());
    let blob_hex = blob.get_mut().hex().unwrap_or_else(|| diff_hex.clone());
    // A blob that is not what the image says it is explains any other failure best.
    if let (Some(expected), Ok(_)) = (&layer.blob, &blob_rest) {
        if expected.digest != blob_hex {
            return Err(ImageError::Digest {
                image: src.path().to_path_buf(),
                blob: layer.file.clone(),
                what: format!(
                    "its content does not match its sha256 digest (it is sha256:{blob_hex})"
                ),
            });
        }
    }
    applied?;
    rest.map_err(|e| broken(format!("truncated or corrupt: {e}")))?;
    blob_rest.map_err(|e| broken(format!("unreadable: {e}")))?;
    if diff_hex != layer.diff_id {
        return Err(broken(format!(
            "its content does not match the config's diff_id sha256:{} (it is sha256:{diff_hex})",
            layer.diff_id
        )));
    }
    Ok(size)
}
