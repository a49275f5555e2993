//! `compatrun scan` on real files: a C fixture with every call-site shape (x86_64 and
//! i386), the real trees the suite builds (busybox, bullseye) and the wheezy tree
//! (COMPATRUN_OLD_ROOTFS), compared file by file with what `objdump -d` shows; bad input.
//!
//! The scan does not depend on the platform, so the tree tests run in the suite's first
//! pass only (skipping visibly in the other, `common::platform_independent`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{compatrun_bin, fixture, have, have_m32, run_cmd, scratch_dir, skip};
use serde_json::Value;

/// `compatrun scan ARGS...`: (exit status, stdout, stderr).
fn scan(args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = Command::new(compatrun_bin());
    c.arg("scan").args(args).env_remove("COMPATRUN_PLATFORM");
    let o = run_cmd(c, None);
    (Some(o.status), o.out(), o.err())
}

/// The JSON report of `compatrun scan --json ARGS...`.
fn scan_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = scan(&all);
    assert_eq!(code, Some(0), "scan {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn file<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["path"] == path))
        .unwrap_or_else(|| panic!("{path} not in the report"))
}

fn sites(f: &Value, arch: &str, name: &str) -> u64 {
    f["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["arch"] == arch && c["name"] == name)
        .map(|c| c["sites"].as_u64().unwrap_or(0))
        .sum()
}

fn verdict<'a>(report: &'a Value, persona: &str) -> &'a Vec<Value> {
    report["verdicts"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["persona"] == persona))
        .and_then(|v| v["findings"].as_array())
        .unwrap_or_else(|| panic!("no verdict for {persona}"))
}

fn finding<'a>(findings: &'a [Value], kind: &str, call: Option<&str>) -> Option<&'a Value> {
    findings
        .iter()
        .find(|f| f["kind"] == kind && call.is_none_or(|c| f["call"] == c))
}

/// Sites objdump -d finds in `path`: (syscall + int $0x80 + sysenter, call *%gs:0x10,
/// vsyscall immediates).
fn objdump_sites(path: &Path) -> (u64, u64, u64) {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(path)
        .output()
        .expect("run objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut sys, mut gs, mut vs) = (0, 0, 0);
    for line in text.lines() {
        let insn = line.split('\t').nth(1).unwrap_or("").trim();
        let words: Vec<&str> = insn.split_whitespace().collect();
        match words.as_slice() {
            ["syscall"] | ["sysenter"] | ["int", "$0x80"] => sys += 1,
            ["call", "*%gs:0x10"] => gs += 1,
            _ => {}
        }
        if [
            "$0xffffffffff600000,",
            "$0xffffffffff600400,",
            "$0xffffffffff600800,",
        ]
        .iter()
        .any(|a| insn.contains(a))
        {
            vs += 1;
        }
    }
    (sys, gs, vs)
}

/// The same counts from the scanner's report for one file.
fn scanned_sites(f: &Value) -> (u64, u64, u64) {
    let n = |k: &str| f["instructions"][k].as_u64().unwrap_or(0);
    let imm = f["vsyscall"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["target"]["kind"] == "immediate")
        .count() as u64;
    (n("syscall") + n("int80") + n("sysenter"), n("gs_call"), imm)
}

/// Compares the scanner with objdump on the files of `report` under `root` whose
/// index is a multiple of `every`, and on every file with vsyscall sites.
fn compare_with_objdump(report: &Value, root: &Path, every: usize) -> usize {
    let mut compared = 0;
    for (k, f) in report["files"]
        .as_array()
        .expect("files")
        .iter()
        .enumerate()
    {
        let has_vs = f["vsyscall"].as_array().is_some_and(|v| !v.is_empty());
        if k % every != 0 && !has_vs {
            continue;
        }
        let rel = f["path"].as_str().expect("path").trim_start_matches('/');
        let path = root.join(rel);
        assert_eq!(
            scanned_sites(f),
            objdump_sites(&path),
            "{}: scanner vs objdump -d (syscall sites, gs calls, vsyscall loads)",
            path.display()
        );
        compared += 1;
    }
    compared
}

/// The scan's tree tests run once per suite run (its first pass).
fn once(test: &str) -> bool {
    common::platform_independent(test)
}

#[test]
fn every_shape_in_the_x86_64_fixture() {
    let bin = fixture("scan_shapes", &[]);
    let shown = bin.to_string_lossy().into_owned();
    let r = scan_json(&["--persona", "2.6", &shown]);
    let f = file(&r, &shown);
    assert_eq!(f["arch"], "x86_64");
    let shapes: Vec<(String, String, bool)> = f["vsyscall"]
        .as_array()
        .expect("vsyscall")
        .iter()
        .map(|v| {
            (
                v["entry"].as_str().unwrap_or("").to_owned(),
                v["shape"].as_str().unwrap_or("").to_owned(),
                v["patchable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let want = [
        ("time", "register-call", true),
        ("getcpu", "register-jump", true),
        ("gettimeofday", "cmov", false),
        ("time", "memory-call", true),
    ];
    assert_eq!(
        shapes,
        want.map(|(e, s, p)| (e.to_owned(), s.to_owned(), p)),
        "{f:#}"
    );
    // The imm32 of the first site is 3 bytes into its mov, and names the entry.
    let first = &f["vsyscall"][0];
    let load = first["load"].as_u64().expect("load");
    assert_eq!(first["target"]["at"].as_u64(), Some(load + 3));
    assert_eq!(first["target"]["size"].as_u64(), Some(4));
    let data = std::fs::read(&bin).expect("read fixture");
    // A PIE's .text is mapped at its file offset in the first segments.
    let imm = usize::try_from(load + 3).expect("offset");
    assert_eq!(data[imm..imm + 4], [0x00, 0x04, 0x60, 0xff]);

    for (name, arch, n) in [
        ("getpid", "x86_64", 1),
        ("getrandom", "x86_64", 1),
        ("_sysctl", "x86_64", 1),
        ("uname", "x86_64", 1),
        ("getpid", "i386", 1),
    ] {
        assert_eq!(sites(f, arch, name), n, "{name} ({arch})");
    }
    assert_eq!(f["unresolved"].as_u64(), Some(1));

    let v = verdict(&r, "2.6");
    let enosys = finding(v, "enosys", Some("getrandom")).expect("getrandom refused");
    assert_eq!(enosys["problem"], true);
    for call in ["uname", "_sysctl"] {
        assert!(
            finding(v, "emulated", Some(call)).is_some(),
            "{call}: {v:#?}"
        );
    }
    assert!(finding(v, "vsyscall", None).is_some());
    // The host has no _sysctl (removed in 5.5), which compatrun emulates.
    let host = verdict(&r, "host");
    let removed = finding(host, "removed-on-host", Some("_sysctl")).expect("_sysctl");
    assert!(removed["message"]
        .as_str()
        .is_some_and(|m| m.contains("compatrun emulates it")));
    // Under rhel9 (5.14) getrandom exists; only the vsyscall note and emulations stay.
    let r9 = scan_json(&["--persona", "rhel9", &shown]);
    assert!(finding(verdict(&r9, "rhel9"), "enosys", Some("getrandom")).is_none());

    // The text report says the same for people, summary first.
    let (code, text, _) = scan(&["--persona", "2.6", &shown]);
    assert_eq!(code, Some(0));
    assert!(text.starts_with("scan of "), "{text}");
    assert!(
        text.contains("calls getrandom (x86_64) at 1 site in 1 file: the persona answers ENOSYS"),
        "{text}"
    );
    assert!(text.contains("vsyscall gettimeofday at"), "{text}");

    if have("objdump") {
        assert_eq!(scanned_sites(f), objdump_sites(&bin));
    } else {
        skip(
            "every_shape_in_the_x86_64_fixture (objdump part)",
            "objdump (binutils) missing",
        );
    }
}

#[test]
fn every_shape_in_the_i386_fixture() {
    if !have_m32() {
        skip(
            "every_shape_in_the_i386_fixture",
            "cannot build i386 programs (gcc-multilib)",
        );
        return;
    }
    let bin = fixture("scan_shapes", &["-m32"]);
    let shown = bin.to_string_lossy().into_owned();
    let r = scan_json(&["--persona", "2.6", &shown]);
    let f = file(&r, &shown);
    assert_eq!(f["arch"], "i386");
    for k in ["int80", "gs_call", "sysenter"] {
        assert_eq!(f["instructions"][k].as_u64(), Some(1), "{k}: {f:#}");
    }
    for name in ["getpid", "getrandom", "uname"] {
        assert_eq!(sites(f, "i386", name), 1, "{name}");
    }
    assert!(f["vsyscall"].as_array().is_some_and(Vec::is_empty));
    let v = verdict(&r, "2.6");
    assert!(finding(v, "enosys", Some("getrandom")).is_some(), "{v:#?}");
    assert!(finding(v, "emulated", Some("uname")).is_some(), "{v:#?}");
    if have("objdump") {
        assert_eq!(scanned_sites(f), objdump_sites(&bin));
    }
}

#[test]
fn bad_input_is_named() {
    let dir = scratch_dir().join(format!("scan-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    // Missing path, --rootfs that is not a directory, nothing given: 125 with a message.
    let missing = dir.join("no-such-file");
    let (code, _, err) = scan(&[missing.to_str().expect("utf-8")]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("no-such-file"), "{err}");
    let (code, _, err) = scan(&["--rootfs", missing.to_str().expect("utf-8")]);
    assert_eq!(code, Some(125), "{err}");
    let (code, _, _) = scan(&[]);
    assert_eq!(code, Some(125));

    // Non-ELF, truncated ELF and a link out of the tree, in a directory scan.
    std::fs::write(dir.join("notes.txt"), "not a program\n").expect("write");
    let elf = std::fs::read(fixture("scan_shapes", &[])).expect("fixture");
    std::fs::write(dir.join("truncated"), &elf[..100]).expect("write");
    std::fs::write(dir.join("header-only"), &elf[..64]).expect("write");
    std::os::unix::fs::symlink("/usr/bin", dir.join("out")).expect("symlink");
    let r = scan_json(&[dir.to_str().expect("utf-8")]);
    assert_eq!(
        r["summary"]["examined"].as_u64(),
        Some(3),
        "{:#}",
        r["summary"]
    );
    assert_eq!(r["summary"]["elf"].as_u64(), Some(0));
    let bad: Vec<String> = r["unreadable"]
        .as_array()
        .expect("unreadable")
        .iter()
        .map(|u| {
            assert!(
                u["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("corrupt ELF")),
                "{u}"
            );
            u["path"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    let name = |n: &str| dir.join(n).to_string_lossy().into_owned();
    assert_eq!(bad, [name("header-only"), name("truncated")]);
    let (code, text, _) = scan(&[dir.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0));
    assert!(text.contains("2 unreadable"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The wheezy tree (eglibc 2.13): the 3 files objdump finds vsyscall code in, the C
/// library, verdicts, and objdump's sites file by file.
#[test]
fn the_wheezy_tree() {
    let Some(root) = std::env::var_os("COMPATRUN_OLD_ROOTFS").map(PathBuf::from) else {
        skip(
            "the_wheezy_tree",
            "COMPATRUN_OLD_ROOTFS is not set (scripts/test.sh sets it)",
        );
        return;
    };
    if !once("the_wheezy_tree") {
        return;
    }
    let r = scan_json(&[
        "--rootfs",
        root.to_str().expect("utf-8"),
        "--persona",
        "rhel6",
    ]);
    assert_eq!(r["libc"]["family"], "glibc");
    assert_eq!(r["libc"]["version"], "2.13");
    assert_eq!(r["libc"]["abi_note"], "2.6.26");
    let users: Vec<&str> = r["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["vsyscall"].as_array().is_some_and(|v| !v.is_empty()))
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(
        users,
        [
            "/lib/x86_64-linux-gnu/libc-2.13.so",
            "/lib/x86_64-linux-gnu/libpthread-2.13.so",
            "/sbin/ldconfig"
        ]
    );
    let libc = file(&r, "/lib/x86_64-linux-gnu/libc-2.13.so");
    let time = libc["vsyscall"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["entry"] == "time"))
        .expect("time()");
    assert_eq!(
        (&time["shape"], &time["patchable"]),
        (&"register-call".into(), &true.into())
    );
    let v = verdict(&r, "rhel6");
    let note = finding(v, "abi-note", None).expect("abi note");
    assert_eq!(note["problem"], false, "{note}");
    assert!(note["message"]
        .as_str()
        .is_some_and(|m| m.contains("glibc 2.13 asks for Linux 2.6.26: fine under rhel6")));
    if !have("objdump") {
        skip(
            "the_wheezy_tree (objdump part)",
            "objdump (binutils) missing",
        );
        return;
    }
    assert!(compare_with_objdump(&r, &root, 25) > 20);
}

/// The trees scripts/test-trees.sh builds into target/test-trees (once; tests/real_trees.rs
/// usually has by the time this runs, else it is made here).
fn test_trees(test: &str) -> Option<PathBuf> {
    static TREES: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let made = TREES.get_or_init(|| {
        if !common::is_root() {
            return Err("debootstrap and umoci need root".into());
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/test-trees.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/test-trees.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/test-trees.sh failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(root.join(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match made {
        Ok(t) if t.join("bullseye/etc/debian_version").exists() => Some(t.clone()),
        Ok(t) => {
            skip(test, &format!("{} has no bullseye tree", t.display()));
            None
        }
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

/// The bullseye tree (glibc 2.31, which asks for Linux 3.2): too new for the 2.6
/// persona, fine for rhel7; no vsyscall users; objdump agrees.
#[test]
fn the_bullseye_tree() {
    if !once("the_bullseye_tree") {
        return;
    }
    let Some(trees) = test_trees("the_bullseye_tree") else {
        return;
    };
    let root = trees.join("bullseye");
    let r = scan_json(&[
        "--rootfs",
        root.to_str().expect("utf-8"),
        "--persona",
        "2.6",
        "--persona",
        "rhel7",
    ]);
    assert_eq!(r["libc"]["version"], "2.31");
    assert_eq!(r["summary"]["vsyscall_files"].as_u64(), Some(0));
    assert!(r["summary"]["elf"].as_u64().is_some_and(|n| n > 100));
    let old = finding(verdict(&r, "2.6"), "abi-note", None).expect("abi note");
    assert_eq!(old["problem"], true, "{old}");
    assert!(old["message"]
        .as_str()
        .is_some_and(|m| m.contains("FATAL: kernel too old")));
    let fine = finding(verdict(&r, "rhel7"), "abi-note", None).expect("abi note");
    assert_eq!(fine["problem"], false, "{fine}");
    if have("objdump") {
        assert!(compare_with_objdump(&r, &root, 40) > 5);
    }
}

/// Debian's static busybox: one static glibc program, with its own syscall sites.
#[test]
fn the_busybox_tree() {
    if !once("the_busybox_tree") {
        return;
    }
    let root = scratch_dir().join(format!("scan-busybox-{}", std::process::id()));
    if let Err(why) = common::busybox_tree(&root) {
        skip("the_busybox_tree", &why);
        return;
    }
    let r = scan_json(&["--rootfs", root.to_str().expect("utf-8")]);
    assert_eq!(
        r["summary"]["elf"].as_u64(),
        Some(1),
        "links are not read twice"
    );
    let bb = file(&r, "/bin/busybox");
    assert_eq!(bb["kind"], "executable");
    assert!(bb["interpreter"].is_null());
    assert!(bb["instructions"]["syscall"]
        .as_u64()
        .is_some_and(|n| n > 10));
    if have("objdump") {
        assert_eq!(scanned_sites(bb), objdump_sites(&root.join("bin/busybox")));
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A docker-archive of the bullseye tree (made by skopeo in scripts/test-trees.sh):
/// unpacked into a private image cache, then scanned as a tree.
#[test]
fn an_image() {
    if !once("an_image") {
        return;
    }
    let Some(trees) = test_trees("an_image") else {
        return;
    };
    let archive = trees.join("docker.tar");
    if !archive.exists() {
        skip("an_image", "target/test-trees/docker.tar is missing");
        return;
    }
    let cache = scratch_dir().join(format!("scan-cache-{}", std::process::id()));
    let mut c = Command::new(compatrun_bin());
    c.args(["scan", "--json", "--persona", "rhel7", "--image"])
        .arg(&archive)
        .env("COMPATRUN_CACHE_DIR", &cache)
        .env_remove("COMPATRUN_PLATFORM");
    let o = run_cmd(c, None);
    let _ = std::fs::remove_dir_all(&cache);
    assert_eq!(o.status, 0, "{}", o.err());
    let r: Value = serde_json::from_str(&o.out()).expect("JSON");
    assert_eq!(r["libc"]["version"], "2.31");
    let f = file(&r, "/usr/bin/ls");
    assert_eq!(f["arch"], "x86_64");
    // A file that is not an image is bad input.
    let (code, _, err) = scan(&["--image", "/etc/hostname"]);
    assert_eq!(code, Some(125), "{err}");
}
