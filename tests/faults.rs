//! compatrun killed (SIGKILL, which it cannot catch) at each stage of a run: while an
//! image unpacks, while the root filesystem is set up, before the guest's first exec,
//! after it, and while a guest thread waits in an emulated call. Each time no guest
//! process goes on, nothing is left behind once the next run has started (no mount in
//! /proc/self/mountinfo, no `tmp-`/`run-` directory or half-written file in the image
//! cache, no half tree under `rootfs/`), and the next run works.
//!
//! Each stage is reached by watching, never by a timing: the cache's temporary tree
//! filling up, the namespace's init's own mountinfo growing, compatrun frozen (SIGSTOP)
//! while its child still waits for the go-ahead, a guest's line, the guest's
//! /proc/PID/syscall naming the caught call.
//!
//! The last stage, killed while a call site is patched, is
//! `killed_while_a_call_site_is_patched` in tests/vm_vsyscall.rs: sites are patched only
//! on a host without the vsyscall page, which here is that test's VM.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::live::{signal, wait_for, Live};
use common::{assert_none_left, compatrun_bin, fixture, scratch_dir, skip, unique_marker};

/// Mount lines of this (the host's) mount namespace that mention `path`.
fn mounts_mentioning(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_owned)
        .collect()
}

/// What a cache holds that a finished run must not leave: `tmp-`/`run-` directories and
/// temporary record files.
fn cache_leftovers(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [cache.to_path_buf(), cache.join("meta")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp-") || name.starts_with("run-") || name.contains(".json.") {
                out.push(e.path());
            }
        }
    }
    out
}

/// The pids of `pid`'s children.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A test image made once per test binary run: the busybox tree, with `bulk` files (so
/// that unpacking takes a while) if `big`.
fn test_image(test: &str, big: bool) -> Option<PathBuf> {
    static BIG: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    static SMALL: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let made = (if big { &BIG } else { &SMALL }).get_or_init(|| {
        if !common::have("python3") {
            return Err("python3 makes the test image (tests/fixtures/make_image.py)".into());
        }
        let tree = scratch_dir().join(format!("faults-image-tree-{big}"));
        common::busybox_tree(&tree)?;
        for d in 0..(if big { 20 } else { 0 }) {
            let dir = tree.join(format!("bulk/{d}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for f in 0..250 {
                std::fs::write(dir.join(f.to_string()), [b'x'; 300]).map_err(|e| e.to_string())?;
            }
        }
        let out = scratch_dir().join(format!("faults-image-{big}.tar"));
        let ok = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/make_image.py"
            ))
            .arg(&tree)
            .arg(&out)
            .arg("docker")
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(out)
        } else {
            Err("make_image.py failed".into())
        }
    });
    match made {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

/// A fresh, empty image cache for one test.
fn fresh_cache(tag: &str) -> PathBuf {
    let dir = scratch_dir().join(unique_marker(tag));
    std::fs::create_dir_all(&dir).expect("create the cache");
    dir
}

/// Runs the image's `/bin/cat /etc/tree-marker` under the 2.6 persona with `cache`, and
/// checks it works and leaves nothing in the cache or the mount table.
fn next_image_run_works(image: &Path, cache: &Path) {
    let mut cmd = common::under_with(
        "2.6",
        &["--image", image.to_str().expect("utf-8")],
        &["/bin/cat", "/etc/tree-marker"],
    );
    cmd.env("COMPATRUN_CACHE_DIR", cache);
    let g = common::run_cmd(cmd, None);
    assert_eq!(
        (g.status, g.out()),
        (0, "the busybox tree\n".to_owned()),
        "{}",
        g.err()
    );
    assert_eq!(
        cache_leftovers(cache),
        Vec::<PathBuf>::new(),
        "left in the cache"
    );
    assert_eq!(
        mounts_mentioning(cache),
        Vec::<String>::new(),
        "mounts left"
    );
}

/// Killed while an image's layers are unpacked into the cache: no half tree appears in
/// `rootfs/`, and the next run removes the unfinished one and unpacks the image whole.
#[test]
fn killed_while_an_image_unpacks() {
    let test = "killed_while_an_image_unpacks";
    let Some(image) = test_image(test, true) else {
        return;
    };
    let cache = fresh_cache("faults-unpack");
    let mut cmd = Command::new(compatrun_bin());
    cmd.args(["images", "prepare"]).arg(&image);
    cmd.env("COMPATRUN_CACHE_DIR", &cache);
    let live = Live::spawn(cmd);
    // The unfinished tree is there and filling up.
    wait_for("the unpack to be under way", || {
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with("tmp-")
                    && std::fs::read_dir(e.path().join("bulk"))
                        .is_ok_and(|mut d| d.next().is_some())
            })
    });
    live.signal(libc::SIGKILL);
    let (status, _, _) = live.finish();
    assert_eq!(status, 137);
    let trees = std::fs::read_dir(cache.join("rootfs")).map_or(0, Iterator::count);
    assert_eq!(trees, 0, "a half tree was put in place");
    next_image_run_works(&image, &cache);
    let _ = std::fs::remove_dir_all(&cache);
}

/// Killed while the namespace's init sets up the root filesystem (many `--bind`s, so
/// the set-up is seen under way in the init's own mount table): the init and the guest
/// never go on, no mount reaches the host's mount table, and the next run works.
#[test]
fn killed_while_the_root_filesystem_is_set_up() {
    let test = "killed_while_the_root_filesystem_is_set_up";
    if !common::is_root() {
        skip(
            test,
            "--rootfs runs as root here (the ordinary-user case needs user namespaces)",
        );
        return;
    }
    let marker = unique_marker("faults-rootfs");
    let tree = scratch_dir().join(&marker);
    if let Err(why) = common::busybox_tree(&tree) {
        skip(test, &why);
        return;
    }
    // Enough binds that the set-up takes a while (a bind source outside the tree, with
    // nothing mounted below it, so the binds do not multiply).
    const BINDS: usize = 4000;
    let mut flags: Vec<String> = vec!["--rootfs".into(), tree.to_string_lossy().into_owned()];
    for i in 0..BINDS {
        std::fs::create_dir_all(tree.join(format!("mnt/b/{i}"))).expect("bind target");
        flags.push("--bind".into());
        flags.push(format!("/usr:/mnt/b/{i}"));
    }
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let run = |flags: &[&str]| common::under_with("2.6", flags, &["/bin/echo", &marker]);
    let binds_of = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_default()
            .matches("/mnt/b/")
            .count()
    };
    for attempt in 0.. {
        assert!(attempt < 20, "never saw the set-up under way");
        let live = Live::spawn(run(&flag_refs));
        let supervisor = live.pid();
        // Watch the init's mount table until some but not all binds are there, or the
        // guest has run (then try again).
        let mut caught = false;
        let start = std::time::Instant::now();
        while start.elapsed() < common::live::WAIT {
            let kids = children(supervisor);
            if kids.iter().any(|&k| !children(k).is_empty()) {
                break; // the init forked the guest: the set-up is over
            }
            if kids
                .iter()
                .any(|&init| (1..BINDS).contains(&binds_of(init)))
            {
                caught = true;
                break;
            }
        }
        live.signal(libc::SIGKILL);
        let (status, lines, _) = live.finish();
        assert_eq!(status, 137);
        assert_none_left(&marker);
        assert_eq!(
            mounts_mentioning(&tree),
            Vec::<String>::new(),
            "mounts left"
        );
        if caught {
            assert!(lines.is_empty(), "the guest ran: {lines:?}");
            break;
        }
    }
    let tree_s = tree.to_string_lossy().into_owned();
    let g = common::run_cmd(run(&["--rootfs", &tree_s]), None);
    assert_eq!(
        (g.status, g.out()),
        (0, format!("{marker}\n")),
        "{}",
        g.err()
    );
    let _ = std::fs::remove_dir_all(&tree);
}

/// Killed after compatrun forked but before the guest's program was exec'd: compatrun
/// is frozen (SIGSTOP) once it has a child, which cannot exec before compatrun lets it
/// go; then killed. The program never runs and nothing is left.
#[test]
fn killed_before_the_guests_first_exec() {
    let bin = fixture("faults", &[]);
    for attempt in 0.. {
        assert!(attempt < 50, "never caught compatrun between fork and exec");
        let marker = unique_marker("faults-preexec");
        let ran = scratch_dir().join(&marker);
        let live = Live::spawn(common::under_cmd(
            "2.6",
            &[bin.to_str().expect("utf-8"), ran.to_str().expect("utf-8")],
        ));
        let supervisor = live.pid();
        let me = std::fs::read_link(compatrun_bin()).unwrap_or_else(|_| compatrun_bin());
        // Step compatrun until it has a child, then look at that child frozen.
        let caught = loop {
            signal(supervisor, libc::SIGSTOP);
            wait_for("compatrun to stop", || {
                std::fs::read_to_string(format!("/proc/{supervisor}/stat"))
                    .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
            });
            let kids = children(supervisor);
            if kids.is_empty() {
                signal(supervisor, libc::SIGCONT);
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            // Still compatrun's own code (not exec'd), in the child and its children.
            let all: Vec<i32> = kids
                .iter()
                .flat_map(|&k| [vec![k], children(k)].concat())
                .collect();
            break all
                .iter()
                .all(|&p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == me))
                && !ran.exists();
        };
        live.signal(libc::SIGKILL);
        let (status, lines, _) = live.finish();
        assert_eq!(status, 137);
        assert_none_left(&marker);
        if !caught {
            let _ = std::fs::remove_file(&ran);
            continue; // the guest had exec'd already: try again
        }
        assert!(
            lines.is_empty() && !ran.exists(),
            "the guest ran: {lines:?}"
        );
        break;
    }
    // The next run works.
    let g = common::under("2.6", &["sh", "-c", "uname -r"]);
    assert_eq!(
        (g.status, g.out()),
        (0, "2.6.32\n".to_owned()),
        "{}",
        g.err()
    );
}

/// Killed after the guest's first exec (it said "ready"), as an image's guest: the
/// guest dies with compatrun, its overlay's scratch directory is removed by the next
/// run, no mount is left, and the next run works.
#[test]
fn killed_after_the_guests_first_exec() {
    killed_with_an_image_guest("killed_after_the_guests_first_exec", false);
}

/// Killed while a guest thread waits in an emulated call (uname under the 2.6 persona):
/// compatrun is frozen first, so the call is seen waiting in /proc/PID/syscall; the
/// guest dies with compatrun and nothing is left.
#[test]
fn killed_in_the_middle_of_an_emulated_call() {
    killed_with_an_image_guest("killed_in_the_middle_of_an_emulated_call", true);
}

fn killed_with_an_image_guest(test: &str, mid_call: bool) {
    let Some(image) = test_image(test, false) else {
        return;
    };
    if !common::is_root() {
        skip(test, "an image's overlay needs root here");
        return;
    }
    let cache = fresh_cache("faults-guest");
    // The fixture, static (the image has no C library), reaches the guest through a bind.
    let bin = fixture("faults", &["-static"]);
    let marker = unique_marker("faults-guest");
    let dir = scratch_dir().join(&marker);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(&bin, dir.join("faults")).expect("copy the fixture");
    let bind = format!("{}:/mnt/rw", dir.display());
    let mut cmd = common::under_with(
        "2.6",
        &["--image", image.to_str().expect("utf-8"), "--bind", &bind],
        &["/mnt/rw/faults", &format!("/mnt/rw/{marker}")],
    );
    cmd.env("COMPATRUN_CACHE_DIR", &cache);
    let mut live = Live::spawn(cmd);
    live.expect_line("ready");
    let guest = common::pgrep(&format!("/mnt/rw/faults /mnt/rw/{marker}"))
        .into_iter()
        .find(|(_, c)| c.starts_with("/mnt/rw/faults"))
        .map(|(p, _)| p)
        .expect("the guest process");
    if mid_call {
        let supervisor = live.pid();
        signal(supervisor, libc::SIGSTOP);
        live.send("go\n");
        // uname is system call 63 on x86_64.
        wait_for("the guest to wait in uname", || {
            std::fs::read_to_string(format!("/proc/{guest}/syscall"))
                .is_ok_and(|s| s.starts_with("63 "))
        });
    }
    live.signal(libc::SIGKILL);
    let (status, lines, _) = live.finish();
    assert_eq!(status, 137);
    assert_eq!(lines, ["ready"], "the guest went on");
    assert_none_left(&marker);
    assert!(
        std::fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("run-")),
        "a killed run leaves its scratch directory until the next run"
    );
    next_image_run_works(&image, &cache);
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&dir);
}
