//! Unit tests of image preparation: layers built here with the `tar` crate (raw headers
//! where a name must be one the builder would refuse), written as OCI layouts or
//! docker-archive directories, prepared into a private cache.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::formats::{chain_id, sha256_hex, Layer};
use super::{prepare, Cache, ImageError};

/// A private directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "compatrun-image-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = super::remove_tree(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = super::remove_tree(&self.0);
    }
}

/// An entry: name, type, data, link target, mode.
type E<'a> = (&'a str, EntryType, &'a [u8], &'a str, u32);

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    (name, EntryType::Regular, data, "", 0o644)
}
fn dir(name: &str) -> E<'_> {
    (name, EntryType::Directory, b"", "", 0o755)
}
fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    (name, EntryType::Symlink, b"", target, 0o777)
}
fn hard<'a>(name: &'a str, target: &'a str) -> E<'a> {
    (name, EntryType::Link, b"", target, 0o644)
}

/// The mtime every entry gets.
const MTIME: u64 = 1_234_567_890;

/// A tar of `entries`, names written raw (so `..` and absolute names survive).
fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for &(name, kind, data, link, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["A=1"], "Cmd": "run.sh", "Entrypoint": null, "WorkingDir": "/w", "User": "1:2"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()},
    })
    .to_string()
    .into_bytes()
}

fn put(dir: &Path, name: &str, data: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, data).expect("write");
}

/// Writes an OCI layout of `tars` (each stored as `compress` makes it) into `dir`,
/// with `diff_ids` in the config (default: the tars' own); returns the blobs' names.
fn oci(
    dir: &Path,
    tars: &[Vec<u8>],
    compress: fn(&[u8]) -> Vec<u8>,
    diff_ids: Option<Vec<String>>,
) -> Vec<String> {
    let diff_ids = diff_ids.unwrap_or_else(|| tars.iter().map(|t| sha256_hex(t)).collect());
    let blob = |data: &[u8]| {
        let hex = sha256_hex(data);
        put(dir, &format!("blobs/sha256/{hex}"), data);
        serde_json::json!({"digest": format!("sha256:{hex}"), "size": data.len()})
    };
    let layers: Vec<serde_json::Value> = tars.iter().map(|t| blob(&compress(t))).collect();
    let names = layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", &l["digest"].as_str().unwrap_or("")[7..]))
        .collect();
    let manifest = serde_json::json!({"schemaVersion": 2, "config": blob(&config(&diff_ids)), "layers": layers});
    let m = blob(manifest.to_string().as_bytes());
    // The manifest behind a nested index, beside another platform's.
    let other = blob(b"{\"schemaVersion\": 2, \"config\": {}, \"layers\": []}");
    let nested = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"digest": other["digest"], "size": other["size"], "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": m["digest"], "size": m["size"], "platform": {"os": "linux", "architecture": "amd64"}},
    ]});
    let n = blob(nested.to_string().as_bytes());
    put(dir, "oci-layout", b"{\"imageLayoutVersion\": \"1.0.0\"}");
    put(
        dir,
        "index.json",
        serde_json::json!({"schemaVersion": 2, "manifests": [n]})
            .to_string()
            .as_bytes(),
    );
    names
}

fn plain(t: &[u8]) -> Vec<u8> {
    t.to_vec()
}

/// An OCI layout of plain `tars` in a fresh scratch directory.
fn image_of(tars: &[Vec<u8>]) -> Scratch {
    let s = Scratch::new("img");
    oci(&s.0, tars, plain, None);
    s
}

/// A fresh cache, and a directory beside it that hostile layers aim at.
struct Area {
    _scratch: Scratch,
    cache: Cache,
    outside: PathBuf,
}

fn area() -> Area {
    let s = Scratch::new("area");
    let outside = s.0.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("sentinel"), "keep\n").expect("sentinel");
    Area {
        cache: Cache::at(s.0.join("cache")),
        _scratch: s,
        outside,
    }
}

impl Area {
    /// Nothing but the sentinel outside, untouched; no unfinished tree in the cache.
    fn assert_clean(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .expect("outside")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["sentinel"]);
        assert_eq!(
            std::fs::read_to_string(self.outside.join("sentinel"))
                .ok()
                .as_deref(),
            Some("keep\n")
        );
        for e in std::fs::read_dir(self.cache.root())
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(["rootfs", "meta"].contains(&n.as_str()), "left behind: {n}");
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

#[test]
fn whiteouts_delete_only_what_lower_layers_made() {
    let a = area();
    let img = image_of(&[
        layer(&[
            dir("etc/"),
            file("etc/gone", b"1"),
            file("etc/kept", b"1"),
            dir("d/"),
            file("d/x", b"1"),
        ]),
        layer(&[
            file("etc/.wh.gone", b""),
            file("etc/new", b"2"),
            file("etc/.wh.new", b""), // the same layer's file survives its whiteout
            file(".wh.d", b""),       // a whole directory
            file("nowhere/.wh.x", b""), // nothing below: no directory made for it
        ]),
    ]);
    let p = prepare(&img.0, &a.cache, false).expect("prepare");
    let t = &p.rootfs;
    assert!(!t.join("etc/gone").exists());
    assert_eq!(read(&t.join("etc/kept")), "1");
    assert_eq!(read(&t.join("etc/new")), "2");
    assert!(!t.join("d").exists());
    assert!(!t.join("nowhere").exists());
    assert_eq!(p.config.cmd, ["run.sh"]);
    assert_eq!(p.config.entrypoint, Vec::<String>::new());
    assert_eq!(p.config.env, ["A=1"]);
    assert_eq!(p.config.working_dir.as_deref(), Some("/w"));
    assert_eq!(p.config.user.as_deref(), Some("1:2"));
    a.assert_clean();
}

#[test]
fn opaque_directories_keep_only_the_layers_own_entries() {
    let a = area();
    let img = image_of(&[
        layer(&[
            dir("o/"),
            file("o/lower", b"1"),
            dir("o/sub/"),
            file("o/sub/deep", b"1"),
            dir("p/"),
            file("p/lower", b"1"),
        ]),
        layer(&[
            // marker first (as Docker writes it) ...
            file("o/.wh..wh..opq", b""),
            file("o/upper", b"2"),
            // ... and after the layer's own entries (as umoci can)
            file("p/upper", b"2"),
            file("p/.wh..wh..opq", b""),
            file(".wh..wh.plnk/123", b"aufs bookkeeping"),
        ]),
    ]);
    let t = prepare(&img.0, &a.cache, false).expect("prepare").rootfs;
    let names = |d: &str| {
        let mut v: Vec<String> = std::fs::read_dir(t.join(d))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("o"), ["upper"]);
    assert_eq!(names("p"), ["upper"]);
    assert!(!t.join(".wh..wh.plnk").exists());
}

#[test]
fn modes_mtimes_links_and_read_only_directories() {
    let a = area();
    let img = image_of(&[
        layer(&[
            ("ro/", EntryType::Directory, b"", "", 0o555),
            ("bin/", EntryType::Directory, b"", "", 0o755),
            ("bin/su", EntryType::Regular, b"suid", "", 0o4755),
            symlink("bin/sh", "/bin/busybox"),
            hard("bin/su2", "bin/su"),
            ("fifo", EntryType::Fifo, b"", "", 0o600),
        ]),
        layer(&[file("ro/later", b"written into a read-only directory")]),
    ]);
    let t = prepare(&img.0, &a.cache, false).expect("prepare").rootfs;
    let meta = |p: &str| std::fs::symlink_metadata(t.join(p)).expect(p);
    assert_eq!(meta("ro").permissions().mode() & 0o7777, 0o555);
    assert_eq!(
        read(&t.join("ro/later")),
        "written into a read-only directory"
    );
    // chown before chmod: the set-user-ID bit survives as root.
    assert_eq!(meta("bin/su").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(meta("bin/su").ino(), meta("bin/su2").ino());
    assert_eq!(
        std::fs::read_link(t.join("bin/sh")).expect("link"),
        Path::new("/bin/busybox")
    );
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(meta("fifo").file_type().is_fifo());
    }
    for p in ["ro", "bin", "bin/su", "bin/sh", "fifo"] {
        assert_eq!(u64::try_from(meta(p).mtime()).ok(), Some(MTIME), "{p}");
    }
}

/// Each of these layers tries to reach outside the tree; all are refused.
#[test]
fn hostile_entries_are_refused_and_nothing_leaves_the_tree() {
    let a = area();
    let out = a.outside.to_str().expect("utf8").to_owned();
    let sentinel = format!("{out}/sentinel");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", layer(&[file("../../escaped", b"x")])),
        ("inner dotdot", layer(&[dir("a/"), file("a/../b", b"x")])),
        (
            "write through link",
            layer(&[symlink("evil", &out), file("evil/escaped", b"x")]),
        ),
        (
            "link chain",
            layer(&[
                symlink("up", "../../../../../../../.."),
                file(&format!("up{out}/escaped"), b"x"),
            ]),
        ),
        (
            "link to link",
            layer(&[
                symlink("a", &out),
                symlink("b", "a"),
                file("b/escaped", b"x"),
            ]),
        ),
        (
            "hard link out",
            layer(&[hard("stolen", &format!("../../../../../../..{sentinel}"))]),
        ),
        ("hard link absolute", layer(&[hard("stolen", &sentinel)])),
        (
            "hard link via link",
            layer(&[symlink("evil", &out), hard("stolen", "evil/sentinel")]),
        ),
        ("hard link to dir", layer(&[dir("d/"), hard("h", "d")])),
        (
            "whiteout dotdot",
            layer(&[dir("a/"), file("a/.wh...", b"")]),
        ),
        (
            "whiteout via link",
            layer(&[symlink("evil", &out), file("evil/.wh.sentinel", b"")]),
        ),
        (
            "opaque via link",
            layer(&[symlink("evil", &out), file("evil/.wh..wh..opq", b"")]),
        ),
        (
            "root replaced",
            layer(&[(".", EntryType::Symlink, b"", "/", 0o777)]),
        ),
    ];
    for (what, tar) in cases {
        let img = image_of(&[tar]);
        match prepare(&img.0, &a.cache, false) {
            Err(ImageError::Hostile { .. }) => {}
            Err(e) => panic!("{what}: refused, but not as hostile: {e}"),
            Ok(p) => panic!("{what}: accepted: {}", p.rootfs.display()),
        }
        a.assert_clean();
    }
    // Replacing a link with a file removes the link; the target stays as it was.
    let img = image_of(&[layer(&[symlink("evil", &sentinel), file("evil", b"mine")])]);
    let t = prepare(&img.0, &a.cache, false).expect("prepare").rootfs;
    assert_eq!(read(&t.join("evil")), "mine");
    a.assert_clean();
}

#[test]
fn absolute_names_land_inside_the_tree() {
    let a = area();
    let out = a.outside.to_str().expect("utf8").to_owned();
    let img = image_of(&[layer(&[file(&format!("{out}/sentinel"), b"inside")])]);
    let t = prepare(&img.0, &a.cache, false).expect("prepare").rootfs;
    assert_eq!(
        read(&t.join(out.trim_start_matches('/')).join("sentinel")),
        "inside"
    );
    a.assert_clean();
}

#[test]
fn digest_and_size_mismatches_are_refused_and_leave_nothing() {
    let a = area();
    let tar = layer(&[file("f", b"content")]);
    // The config's diff_id is not the layer's.
    let s = Scratch::new("diffid");
    oci(
        &s.0,
        std::slice::from_ref(&tar),
        gzip,
        Some(vec![sha256_hex(b"other")]),
    );
    let e = prepare(&s.0, &a.cache, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("does not match the config's diff_id"), "{e}");
    a.assert_clean();
    // A layer blob changed after the fact (same size).
    let s = Scratch::new("blob");
    let names = oci(&s.0, std::slice::from_ref(&tar), gzip, None);
    let p = s.0.join(&names[0]);
    let mut data = std::fs::read(&p).expect("blob");
    let last = data.len() - 5;
    data[last] ^= 0xff;
    std::fs::write(&p, &data).expect("write");
    let e = prepare(&s.0, &a.cache, false).expect_err("refused");
    assert!(matches!(e, ImageError::Digest { .. }), "{e}");
    // ... or cut short.
    std::fs::write(&p, &data[..data.len() / 2]).expect("write");
    let e = prepare(&s.0, &a.cache, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("descriptor says"), "{e}");
    a.assert_clean();
    // A metadata blob changed: the index names the nested index by digest.
    let s = Scratch::new("meta");
    oci(&s.0, &[tar], plain, None);
    let index = read(&s.0.join("index.json"));
    let nested: serde_json::Value = serde_json::from_str(&index).expect("json");
    let hex = nested["manifests"][0]["digest"].as_str().expect("digest")[7..].to_owned();
    let p = s.0.join("blobs/sha256").join(&hex);
    let tampered = read(&p).replace("amd64", "AMD64");
    std::fs::write(&p, tampered).expect("write");
    let e = prepare(&s.0, &a.cache, false).expect_err("refused");
    assert!(matches!(e, ImageError::Digest { .. }), "{e}");
    a.assert_clean();
}

#[test]
fn docker_archive_checks_its_config_name_and_diff_ids() {
    let a = area();
    let tar = layer(&[file("etc/os-release", b"old\n")]);
    let s = Scratch::new("docker");
    let cfg = config(&[sha256_hex(&tar)]);
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    put(&s.0, &cfg_name, &cfg);
    put(&s.0, "abc/layer.tar", &tar);
    let manifest =
        serde_json::json!([{"Config": cfg_name, "RepoTags": ["t:1"], "Layers": ["abc/layer.tar"]}]);
    put(&s.0, "manifest.json", manifest.to_string().as_bytes());
    let p = prepare(&s.0, &a.cache, false).expect("prepare");
    assert_eq!(read(&p.rootfs.join("etc/os-release")), "old\n");
    assert_eq!(p.id, sha256_hex(&cfg));
    drop(p);
    // The config no longer matches the digest it is named by.
    put(&s.0, &cfg_name, &config(&[sha256_hex(b"x")]));
    let e = prepare(&s.0, &a.cache, false)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("does not match the sha256 digest it is named by"),
        "{e}"
    );
}

#[test]
fn gzip_members_and_zstd_frames_unpack_and_other_compressions_are_named() {
    let a = area();
    let t1 = layer(&[file("one", b"1")]);
    let t2 = layer(&[file("two", b"2")]);
    // Two gzip members (as eStargz writes them).
    let s = Scratch::new("gz");
    oci(
        &s.0,
        std::slice::from_ref(&t1),
        |t| {
            let (x, y) = t.split_at(700);
            [gzip(x), gzip(y)].concat()
        },
        None,
    );
    let t = prepare(&s.0, &a.cache, false).expect("gzip").rootfs;
    assert_eq!(read(&t.join("one")), "1");
    drop(t1);
    // Two zstd frames and a skippable frame (as zstd:chunked writes them).
    let s = Scratch::new("zst");
    oci(
        &s.0,
        &[t2],
        |t| {
            use ruzstd::encoding::{compress_to_vec, CompressionLevel};
            let (x, y) = t.split_at(1000);
            let skippable = [&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0][..], b"abc"].concat();
            [
                compress_to_vec(x, CompressionLevel::Fastest),
                skippable,
                compress_to_vec(y, CompressionLevel::Fastest),
            ]
            .concat()
        },
        None,
    );
    let t = prepare(&s.0, &a.cache, false).expect("zstd").rootfs;
    assert_eq!(read(&t.join("two")), "2");
    // xz is named in the error.
    let s = Scratch::new("xz");
    let t3 = layer(&[file("three", b"3")]);
    oci(
        &s.0,
        &[t3],
        |t| [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], t].concat(),
        None,
    );
    let e = prepare(&s.0, &a.cache, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("unsupported layer compression xz"), "{e}");
    a.assert_clean();
}

#[test]
fn a_layer_ending_without_tar_padding_is_accepted_when_its_digest_matches() {
    let a = area();
    let full = layer(&[file("a", b"aaa"), file("b", b"bbb")]);
    // The last file's data ends at 512 (header a) + 512 (data a) + 512 (header b) + 3.
    let cut = full[..512 * 3 + 3].to_vec();
    let t = prepare(&image_of(&[cut]).0, &a.cache, false)
        .expect("prepare")
        .rootfs;
    assert_eq!(read(&t.join("b")), "bbb");
    // Cut inside the data: the file is short, which is an error even though the
    // digest (of the cut stream) matches.
    let short = full[..512 * 3 + 2].to_vec();
    let e = prepare(&image_of(&[short]).0, &a.cache, false)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    a.assert_clean();
}

#[test]
fn chain_id_follows_the_oci_definition() {
    let l = |d: &str| Layer {
        position: String::new(),
        file: String::new(),
        blob: None,
        diff_id: d.repeat(64),
    };
    assert_eq!(chain_id(&[]), "empty");
    assert_eq!(chain_id(&[l("a")]), "a".repeat(64));
    let two = sha256_hex(format!("sha256:{} sha256:{}", "a".repeat(64), "b".repeat(64)).as_bytes());
    assert_eq!(chain_id(&[l("a"), l("b")]), two);
    let three = sha256_hex(format!("sha256:{two} sha256:{}", "c".repeat(64)).as_bytes());
    assert_eq!(chain_id(&[l("a"), l("b"), l("c")]), three);
}

#[test]
fn the_cache_is_reused_shared_by_concurrent_runs_and_pruned_around_users() {
    let a = area();
    let img = image_of(&[layer(&[file("f", b"1")])]);
    let first = prepare(&img.0, &a.cache, false).expect("first");
    // Reused, not remade: a mark left in the tree is still there.
    std::fs::write(first.rootfs.join("mark"), "").expect("mark");
    let second = prepare(&img.0, &a.cache, false).expect("second");
    assert_eq!(second.rootfs, first.rootfs);
    assert!(second.rootfs.join("mark").exists());
    // A tree in use is kept by prune; listed as in use.
    let listed = a.cache.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].in_use);
    assert!(listed[0].images[0].contains(&first.id[..12]));
    let pruned = a.cache.prune(false).expect("prune");
    assert_eq!(pruned.in_use, std::slice::from_ref(&first.rootfs));
    drop((first, second));
    let pruned = a.cache.prune(true).expect("dry run");
    assert_eq!(pruned.trees.len(), 1);
    assert!(a.cache.list().expect("list").len() == 1);
    a.cache.prune(false).expect("prune");
    assert!(a.cache.list().expect("list").is_empty());
    // Concurrent prepares of a missing tree: one tree, nothing else left.
    let img2 = image_of(&[layer(&[file("g", b"2")])]);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (path, cache) = (img2.0.clone(), a.cache.clone());
            std::thread::spawn(move || prepare(&path, &cache, false).map(|p| p.rootfs))
        })
        .collect();
    let trees: Vec<PathBuf> = threads
        .into_iter()
        .map(|t| t.join().expect("thread").expect("prepare"))
        .collect();
    assert!(trees.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(read(&trees[0].join("g")), "2");
    assert_eq!(a.cache.list().expect("list").len(), 1);
    a.assert_clean();
}
