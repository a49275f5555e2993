//! `--image` and `compatrun images`: small images built here from a busybox-static tree
//! by tests/fixtures/make_image.py (Python's tarfile), in both formats (docker-archive in
//! its three layouts; OCI layout as a directory and as a tar, gzip and zstd layers, a
//! nested index), two layers with a whiteout and an opaque directory; corrupt, truncated,
//! tampered and hostile archives; concurrent unpacks; root and uid 65534.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{compatrun_bin, is_root, run_cmd, skip, Outcome};

const MAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/make_image.py");

/// The scratch area: the tree, the images, and a directory outside every cache that
/// hostile layers aim at.
struct Area {
    dir: PathBuf,
}

fn area() -> Result<&'static Area, String> {
    static AREA: OnceLock<Result<Area, String>> = OnceLock::new();
    AREA.get_or_init(|| {
        let dir = common::scratch_dir().join(format!("images-{}", std::process::id()));
        let tree = dir.join("tree");
        common::busybox_tree(&tree)?;
        std::fs::create_dir_all(tree.join("etc/opaque")).map_err(|e| e.to_string())?;
        std::fs::write(tree.join("etc/deleted-below"), "below\n").map_err(|e| e.to_string())?;
        std::fs::write(tree.join("etc/opaque/from-below"), "below\n").map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("outside")).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("outside/sentinel"), "keep\n").map_err(|e| e.to_string())?;
        let _ = Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&dir)
            .status();
        Ok(Area { dir })
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl Area {
    fn outside(&self) -> PathBuf {
        self.dir.join("outside")
    }

    /// Builds (once) the image `kind` and returns its path.
    fn image(&self, kind: &str) -> PathBuf {
        let out = self.dir.join(format!("image-{kind}"));
        if !out.exists() {
            let status = Command::new("python3")
                .arg(MAKE)
                .arg(self.dir.join("tree"))
                .arg(&out)
                .arg(kind)
                .env("OUTSIDE", self.outside())
                .status()
                .expect("python3");
            assert!(status.success(), "make_image.py {kind}");
            let _ = Command::new("chmod")
                .args(["-R", "a+rX"])
                .arg(&out)
                .status();
        }
        out
    }

    /// A fresh, empty cache directory (world-writable, for the uid 65534 runs).
    fn cache(&self, name: &str) -> PathBuf {
        let c = self.dir.join(format!("cache-{name}"));
        let _ = std::fs::remove_dir_all(&c);
        std::fs::create_dir_all(&c).expect("mkdir cache");
        let _ = Command::new("chmod").arg("777").arg(&c).status();
        c
    }
}

fn compatrun(cache: &Path, unprivileged: bool, args: &[&str]) -> Outcome {
    let mut cmd = if unprivileged {
        common::as_nobody(&compatrun_bin())
    } else {
        Command::new(compatrun_bin())
    };
    cmd.args(args).env("COMPATRUN_CACHE_DIR", cache);
    run_cmd(cmd, None)
}

fn area_or_skip(test: &str) -> Option<&'static Area> {
    if !common::have("python3") {
        skip(test, "python3 builds the test images");
        return None;
    }
    match area() {
        Ok(a) => Some(a),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// The cache holds exactly these trees and nothing half-made (besides the trees, only
/// `meta`: their lock files and records).
fn cache_trees(cache: &Path) -> Vec<String> {
    let leftovers: Vec<_> = std::fs::read_dir(cache)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "rootfs" && n != "meta")
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "left behind in the cache: {leftovers:?}"
    );
    std::fs::read_dir(cache.join("rootfs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn both_formats_unpack_with_whiteouts_and_run_with_the_configs_defaults() {
    let test = "both_formats_unpack_with_whiteouts_and_run_with_the_configs_defaults";
    let Some(a) = area_or_skip(test) else { return };
    let mut kinds = vec![
        "docker",
        "docker-blobs",
        "docker-symlinks",
        "oci",
        "oci-tar",
    ];
    if common::have("zstd") {
        kinds.push("oci-zstd");
    } else {
        skip(test, "zstd layers: the zstd program makes them");
    }
    for kind in kinds {
        let image = a.image(kind);
        let image = image.to_str().expect("utf8");
        let cache = a.cache(kind);
        let o = compatrun(&cache, false, &["images", "prepare", image]);
        assert_eq!(o.status, 0, "{kind}: {}", o.err());
        let tree = PathBuf::from(o.out().trim());
        assert!(tree.starts_with(&cache), "{kind}: {}", tree.display());
        // A second prepare finds the tree in the cache.
        let again = compatrun(
            &cache,
            false,
            &["images", "prepare", image, "--log", "info"],
        );
        assert_eq!(again.status, 0, "{kind}: {}", again.err());
        assert_eq!(again.out(), o.out(), "{kind}");
        assert!(
            again
                .err()
                .contains(&format!("reusing the cached tree {}", tree.display())),
            "{kind}: {}",
            again.err()
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("etc/layer2-marker"))
                .ok()
                .as_deref(),
            Some("layer 2\n"),
            "{kind}"
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("etc/tree-marker"))
                .ok()
                .as_deref(),
            Some("the busybox tree\n"),
            "{kind}"
        );
        assert!(
            !tree.join("etc/deleted-below").exists(),
            "{kind}: the whiteout"
        );
        let mut opaque: Vec<String> = std::fs::read_dir(tree.join("etc/opaque"))
            .expect("opaque dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        opaque.sort();
        assert_eq!(opaque, ["kept-above"], "{kind}: the opaque directory");
        // The config's Cmd, Env and WorkingDir; the persona inside.
        let o = compatrun(&cache, false, &["--image", image]);
        assert_eq!(
            (o.status, o.out()),
            (0, "image-cmd\n".to_owned()),
            "{kind}: {}",
            o.err()
        );
        let o = compatrun(
            &cache,
            false,
            &["--log", "info", "-k", "2.6", "--image", image, "--", "sh", "-c",
              "pwd; echo $FOO; uname -r; echo new > /etc/written-by-guest; cat /etc/written-by-guest"],
        );
        assert_eq!(
            (o.status, o.out()),
            (0, "/etc\nfrom-image\n2.6.32\nnew\n".to_owned()),
            "{kind}: {}",
            o.err()
        );
        // The second run reused the tree; the guest's write did not reach it.
        assert!(
            o.err().contains("reusing the cached tree"),
            "{kind}: {}",
            o.err()
        );
        assert!(!tree.join("etc/written-by-guest").exists(), "{kind}");
        assert_eq!(cache_trees(&cache).len(), 1, "{kind}");
        // list (the tree, last on its line, and the image it came from) and prune.
        let o = compatrun(&cache, false, &["images", "list"]);
        let line = o.out();
        assert!(
            line.trim_end().ends_with(tree.to_str().expect("utf8")) && line.contains(image),
            "{kind}: {line}"
        );
        let o = compatrun(&cache, false, &["images", "prune", "--dry-run"]);
        assert_eq!(o.status, 0, "{}", o.err());
        assert!(o.out().contains("would remove"), "{}", o.out());
        assert_eq!(
            cache_trees(&cache).len(),
            1,
            "{kind}: the dry run removed it"
        );
        let o = compatrun(&cache, false, &["images", "prune"]);
        assert_eq!(o.status, 0, "{}", o.err());
        assert!(cache_trees(&cache).is_empty());
    }
}

#[test]
fn an_ordinary_user_runs_an_image_as_root_inside() {
    let test = "an_ordinary_user_runs_an_image_as_root_inside";
    let Some(a) = area_or_skip(test) else { return };
    if !is_root() {
        skip(test, "starting as uid 65534 needs root");
        return;
    }
    let image = a.image("oci-tar");
    let cache = a.cache("nobody");
    let o = compatrun(
        &cache,
        true,
        &[
            "-k",
            "rhel6",
            "--image",
            image.to_str().expect("utf8"),
            "--",
            "sh",
            "-c",
            "id -u; uname -r; echo w > /etc/x && cat /etc/x",
        ],
    );
    assert_eq!(
        (o.status, o.out()),
        (0, "0\n2.6.32-754.el6.x86_64\nw\n".to_owned()),
        "{}",
        o.err()
    );
}

#[test]
fn corrupt_truncated_and_foreign_archives_get_clear_errors_and_leave_nothing() {
    let test = "corrupt_truncated_and_foreign_archives_get_clear_errors_and_leave_nothing";
    let Some(a) = area_or_skip(test) else { return };
    let not_an_image = a.dir.join("not-an-image.tar");
    std::fs::write(&not_an_image, vec![7u8; 4096]).expect("write");
    let gzipped = a.dir.join("docker.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c < '{}' > '{}'",
            a.image("docker").display(),
            gzipped.display()
        ))
        .status()
        .expect("gzip");
    assert!(status.success());
    let cases = [
        (a.image("corrupt"), "does not match the config's diff_id"),
        (a.image("truncated"), "truncated"),
        (
            a.image("bad-config"),
            "does not match the sha256 digest it is named by",
        ),
        (a.image("oci-tampered"), "does not match its sha256 digest"),
        (a.image("oci-missing"), "layer 2/2"),
        (gzipped, "gzip-compressed file; decompress it first"),
        (not_an_image, "not a tar archive"),
        (a.dir.join("no-such-image"), "No such file or directory"),
    ];
    for (image, message) in cases {
        let cache = a.cache("bad");
        let o = compatrun(
            &cache,
            false,
            &["--image", image.to_str().expect("utf8"), "--", "true"],
        );
        assert_eq!(o.status, 125, "{}: {}", image.display(), o.err());
        assert!(
            o.err().contains(message),
            "{}: {}",
            image.display(),
            o.err()
        );
        assert!(cache_trees(&cache).is_empty(), "{}", image.display());
    }
}

#[test]
fn hostile_layers_are_refused_without_touching_anything_outside() {
    let test = "hostile_layers_are_refused_without_touching_anything_outside";
    let Some(a) = area_or_skip(test) else { return };
    let outside = a.outside();
    for kind in [
        "hostile-dotdot",
        "hostile-absolute-link",
        "hostile-link-parent",
        "hostile-hardlink",
        "hostile-whiteout",
    ] {
        let cache = a.cache(kind);
        let image = a.image(kind);
        let o = compatrun(
            &cache,
            false,
            &["images", "prepare", image.to_str().expect("utf8")],
        );
        assert_eq!(o.status, 125, "{kind}: {}", o.err());
        assert!(o.err().contains("refused"), "{kind}: {}", o.err());
        assert!(cache_trees(&cache).is_empty(), "{kind}");
        // Nothing new outside, the sentinel untouched, nothing above the cache.
        let mut names: Vec<String> = std::fs::read_dir(&outside)
            .expect("outside")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["sentinel"], "{kind}");
        assert_eq!(
            std::fs::read_to_string(outside.join("sentinel"))
                .ok()
                .as_deref(),
            Some("keep\n")
        );
        assert!(
            !a.dir.join("escaped-dotdot").exists()
                && !common::scratch_dir().join("escaped-dotdot").exists()
        );
    }
    // Contained rather than refused: an absolute name lands inside the tree (its leading
    // `/` dropped), and a file replacing a link removes the link, never writing its target.
    for (kind, inside, content) in [
        (
            "hostile-absolute",
            outside
                .strip_prefix("/")
                .expect("absolute")
                .join("escaped-absolute"),
            "inside\n",
        ),
        (
            "hostile-overwrite-link",
            PathBuf::from("evil"),
            "replaced the link\n",
        ),
    ] {
        let cache = a.cache(kind);
        let image = a.image(kind);
        let o = compatrun(
            &cache,
            false,
            &["images", "prepare", image.to_str().expect("utf8")],
        );
        assert_eq!(o.status, 0, "{kind}: {}", o.err());
        let tree = PathBuf::from(o.out().trim());
        let file = tree.join(&inside);
        assert!(
            std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()),
            "{kind}: {}",
            file.display()
        );
        assert_eq!(
            std::fs::read_to_string(&file).ok().as_deref(),
            Some(content),
            "{kind}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("sentinel"))
                .ok()
                .as_deref(),
            Some("keep\n"),
            "{kind}"
        );
        assert!(!outside.join("escaped-absolute").exists(), "{kind}");
    }
    // A device node: created as root, skipped with a warning as an ordinary user.
    let image = a.image("hostile-device");
    let image = image.to_str().expect("utf8");
    let cache = a.cache("device-root");
    let o = compatrun(&cache, false, &["images", "prepare", image]);
    assert_eq!(o.status, 0, "{}", o.err());
    if is_root() {
        use std::os::unix::fs::FileTypeExt;
        let node = PathBuf::from(o.out().trim()).join("dev-sda");
        assert!(std::fs::symlink_metadata(&node).is_ok_and(|m| m.file_type().is_block_device()));
        let cache = a.cache("device-nobody");
        let o = compatrun(&cache, true, &["images", "prepare", image]);
        assert_eq!(o.status, 0, "{}", o.err());
        assert!(o.err().contains("device nodes"), "{}", o.err());
        assert!(!PathBuf::from(o.out().trim()).join("dev-sda").exists());
    } else {
        skip(
            test,
            "the device-node case as root and as uid 65534 needs root",
        );
    }
}

/// Several compatruns unpacking the same image into an empty cache at once: each gets
/// the same whole tree, made once, and nothing half-made is left.
#[test]
fn concurrent_prepares_share_one_tree() {
    let test = "concurrent_prepares_share_one_tree";
    let Some(a) = area_or_skip(test) else { return };
    let image = a.image("oci-tar");
    let cache = a.cache("concurrent");
    let children: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = Command::new(compatrun_bin());
            cmd.args(["images", "prepare", "--log", "info"])
                .arg(&image)
                .env("COMPATRUN_CACHE_DIR", &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn")
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, outs[0].stdout);
    }
    let unpacked = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("unpacked 2 layers"))
        .count();
    assert_eq!(unpacked, 1, "the tree was made once");
    assert_eq!(cache_trees(&cache).len(), 1);
    let tree = PathBuf::from(String::from_utf8_lossy(&outs[0].stdout).trim());
    assert!(tree.join("etc/layer2-marker").is_file());
}
