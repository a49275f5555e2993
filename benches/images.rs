//! Image unpack throughput: `compatrun images prepare IMAGE` into an empty cache (every
//! digest checked, every entry written by the safe extractor), beside GNU `tar -x` of
//! the same layer into an empty directory.
//!
//! The image is generated here, shaped like a distribution's /usr: about 3,000 files
//! (most a few KB, a few over a megabyte, text-like and binary-like content), 200
//! directories, 300 symbolic links and 30 hard links, about 80 MB in one layer; stored
//! plain in a docker-archive and gzip-compressed in an OCI layout. With
//! `COMPATRUN_BENCH_TREE=DIR` a real tree (for example /usr/lib/python3) is packed as a
//! layer too.
//!
//! Run: `cargo bench --bench images` (about 2 minutes). Criterion reports throughput in
//! uncompressed bytes per second; at the end every case runs again in interleaved rounds
//! and a table gives the medians, compatrun's ratio to GNU tar, and MB/s.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use sha2::{Digest, Sha256};

/// Rounds of the interleaved summary.
const ROUNDS: usize = 3;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi: u64) -> usize {
        usize::try_from(lo + self.below(hi - lo)).unwrap_or(0)
    }
}

/// Content that compresses like text (words from a small vocabulary).
fn text(rng: &mut Rng, words: &[Vec<u8>], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let w = &words[usize::try_from(rng.below(words.len() as u64)).unwrap_or(0)];
        out.extend_from_slice(w);
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// Content that compresses like machine code (runs copied from a random pool, some fresh
/// random bytes).
fn binary(rng: &mut Rng, pool: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 256);
    while out.len() < len {
        if rng.below(4) == 0 {
            out.extend((0..32).map(|_| rng.next().to_le_bytes()[0]));
        } else {
            let n = rng.range(16, 200);
            let at = rng.range(0, (pool.len() - n) as u64);
            out.extend_from_slice(&pool[at..at + n]);
        }
    }
    out.truncate(len);
    out
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h
}

/// The generated layer (an uncompressed tar).
fn generated_layer() -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words: Vec<Vec<u8>> = (0..600)
        .map(|_| {
            let n = rng.range(2, 11);
            (0..n)
                .map(|_| b'a' + rng.next().to_le_bytes()[0] % 26)
                .collect()
        })
        .collect();
    let pool: Vec<u8> = (0..65536).map(|_| rng.next().to_le_bytes()[0]).collect();
    let mut b = tar::Builder::new(Vec::new());
    let dirs: Vec<String> = (0..200)
        .map(|i| match i % 4 {
            0 => format!("usr/lib/pkg{i}"),
            1 => format!("usr/share/doc/pkg{i}"),
            2 => format!("usr/lib/pkg{}/sub{i}", i - 2),
            _ => format!("usr/share/pkg{i}/data"),
        })
        .collect();
    let mut made = std::collections::BTreeSet::new();
    for d in &dirs {
        let mut p = PathBuf::new();
        for c in Path::new(d).components() {
            p.push(c);
            if made.insert(p.clone()) {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                b.append_data(&mut h, &p, std::io::empty()).expect("dir");
            }
        }
    }
    let mut files = Vec::new();
    for i in 0..3000 {
        let roll = rng.below(1000);
        let (len, is_text) = if roll < 650 {
            (rng.range(256, 8 << 10), true)
        } else if roll < 930 {
            (rng.range(8 << 10, 48 << 10), rng.below(2) == 0)
        } else if roll < 995 {
            (rng.range(48 << 10, 256 << 10), false)
        } else {
            (rng.range(512 << 10, 2 << 20), false)
        };
        let data = if is_text {
            text(&mut rng, &words, len)
        } else {
            binary(&mut rng, &pool, len)
        };
        let dir = &dirs[usize::try_from(rng.below(dirs.len() as u64)).unwrap_or(0)];
        let path = format!("{dir}/file{i}{}", if is_text { ".txt" } else { ".so" });
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        b.append_data(&mut h, &path, data.as_slice()).expect("file");
        files.push(path);
    }
    for i in 0..300 {
        let target = &files[(i * 7) % files.len()];
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        b.append_link(&mut h, format!("usr/lib/link{i}"), format!("/{target}"))
            .expect("symlink");
    }
    for i in 0..30 {
        let target = &files[(i * 13) % files.len()];
        let mut h = header(tar::EntryType::Link, 0, 0o644);
        b.append_link(&mut h, format!("usr/share/hard{i}"), target)
            .expect("hard link");
    }
    b.into_inner().expect("tar")
}

/// A real tree packed as a layer (links kept as links).
fn tree_layer(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("pack the tree");
    b.into_inner().expect("tar")
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn config(layer: &[u8]) -> Vec<u8> {
    format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:{}\"]}}}}",
        sha(layer)
    )
    .into_bytes()
}

/// A docker-archive (a tar) with `layer` stored plain.
fn docker_archive(out: &Path, layer: &[u8]) {
    let cfg = config(layer);
    let cfg_name = format!("{}.json", sha(&cfg));
    let manifest = format!(
        "[{{\"Config\":\"{cfg_name}\",\"RepoTags\":[\"bench:1\"],\"Layers\":[\"l/layer.tar\"]}}]"
    );
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    for (name, data) in [
        ("manifest.json", manifest.as_bytes()),
        (cfg_name.as_str(), &cfg),
        ("l/layer.tar", layer),
    ] {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        b.append_data(&mut h, name, data).expect("append");
    }
    b.finish().expect("finish");
}

/// An OCI layout (a directory) with `gz` (the gzip of `layer`) as its layer.
fn oci_layout(out: &Path, layer: &[u8], gz: &[u8]) {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out.join("blobs/sha256")).expect("mkdir");
    let blob = |data: &[u8]| {
        let hex = sha(data);
        std::fs::write(out.join("blobs/sha256").join(&hex), data).expect("blob");
        format!("{{\"digest\":\"sha256:{hex}\",\"size\":{}}}", data.len())
    };
    let manifest = format!(
        "{{\"schemaVersion\":2,\"config\":{},\"layers\":[{}]}}",
        blob(&config(layer)),
        blob(gz)
    );
    let index = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{}]}}",
        blob(manifest.as_bytes())
    );
    std::fs::write(out.join("index.json"), index).expect("index");
    std::fs::write(out.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").expect("layout");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// One layer in its four forms, and where runs unpack.
struct Subject {
    group: String,
    bytes: u64,
    docker: PathBuf,
    oci: PathBuf,
    tar: PathBuf,
    tar_gz: PathBuf,
    out: PathBuf,
}

fn subject(scratch: &Path, name: &str, layer: &[u8]) -> Subject {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let gz = gzip(layer);
    let s = Subject {
        group: name.to_owned(),
        bytes: layer.len() as u64,
        docker: dir.join("docker.tar"),
        oci: dir.join("oci"),
        tar: dir.join("layer.tar"),
        tar_gz: dir.join("layer.tar.gz"),
        out: dir.join("out"),
    };
    docker_archive(&s.docker, layer);
    oci_layout(&s.oci, layer, &gz);
    std::fs::write(&s.tar, layer).expect("write");
    std::fs::write(&s.tar_gz, &gz).expect("write");
    println!(
        "{name}: layer {:.1} MB, gzip {:.1} MB",
        layer.len() as f64 / 1e6,
        gz.len() as f64 / 1e6
    );
    s
}

/// The ways a layer is unpacked: (id, command for an empty `out`).
const WAYS: [&str; 4] = [
    "gnu-tar-x",
    "compatrun-plain",
    "gnu-tar-xz",
    "compatrun-gzip",
];

/// Unpacks `s` one way into an empty directory; returns the time it took.
fn run(s: &Subject, way: &str) -> Duration {
    let _ = Command::new("rm").arg("-rf").arg(&s.out).status();
    std::fs::create_dir_all(&s.out).expect("mkdir");
    let mut cmd = match way {
        "gnu-tar-x" | "gnu-tar-xz" => {
            let mut c = Command::new("tar");
            c.arg(if way == "gnu-tar-x" { "-xf" } else { "-xzf" })
                .arg(if way == "gnu-tar-x" {
                    &s.tar
                } else {
                    &s.tar_gz
                })
                .arg("-C")
                .arg(&s.out);
            c
        }
        _ => {
            let mut c = Command::new(common::COMPATRUN);
            c.args(["images", "prepare"])
                .arg(if way == "compatrun-plain" {
                    &s.docker
                } else {
                    &s.oci
                })
                .env("COMPATRUN_CACHE_DIR", &s.out)
                .stdout(std::process::Stdio::null());
            c
        }
    };
    let start = Instant::now();
    let status = cmd.status().expect("start");
    let took = start.elapsed();
    assert!(status.success(), "{} {way} failed: {status}", s.group);
    took
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .sample_size(10)
        .configure_from_args();
    let scratch = common::scratch_dir("images");
    let mut subjects = vec![subject(&scratch, "generated-80MB", &generated_layer())];
    if let Some(tree) = std::env::var_os("COMPATRUN_BENCH_TREE") {
        let tree = PathBuf::from(tree);
        let name = format!(
            "tree-{}",
            tree.display()
                .to_string()
                .trim_matches('/')
                .replace('/', "-")
        );
        subjects.push(subject(&scratch, &name, &tree_layer(&tree)));
    }
    for s in &subjects {
        let mut group = c.benchmark_group(&s.group);
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Bytes(s.bytes));
        for way in WAYS {
            group.bench_function(way, |b| {
                b.iter_custom(|iters| {
                    let total: Duration = (0..iters).map(|_| run(s, way)).sum();
                    common::record(&s.group, way, total, iters);
                    total
                });
            });
        }
        group.finish();
    }
    c.final_summary();
    if common::measuring() {
        let seen = common::groups_seen();
        let mut cases = Vec::new();
        for s in subjects.iter().filter(|s| seen.contains(&s.group)) {
            for way in WAYS {
                cases.push(common::Case {
                    group: &s.group,
                    id: way.to_owned(),
                    run: Box::new(move |n| (0..n).map(|_| run(s, way)).sum()),
                });
            }
        }
        let table = common::interleaved_rounds(&cases, ROUNDS, Duration::from_millis(1));
        for (plain, gz) in [
            ("gnu-tar-x", "compatrun-plain"),
            ("gnu-tar-xz", "compatrun-gzip"),
        ] {
            common::print_table(
                &format!("images: unpacking one layer, {gz} vs {plain}"),
                &format!(
                    "Median wall time of one unpack into an empty directory over {ROUNDS} \
                     interleaved rounds, ratio to GNU tar."
                ),
                &[plain.to_owned(), gz.to_owned()],
                &table,
            );
        }
        println!("| layer | way | MB/s (uncompressed, median) |\n|---|---|---:|");
        for s in &subjects {
            for way in WAYS {
                if let Some(v) = table.get(&(s.group.clone(), way.to_owned())) {
                    let mut v = v.clone();
                    v.sort_by(f64::total_cmp);
                    let ns = v[v.len() / 2];
                    println!("| {} | {way} | {:.0} |", s.group, s.bytes as f64 / ns * 1e3);
                }
            }
        }
    }
    let _ = Command::new("rm").arg("-rf").arg(&scratch).status();
}
