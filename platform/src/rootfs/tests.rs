use super::*;
use crate::layout::BindSpec;
use std::os::unix::ffi::OsStringExt;

#[test]
fn paths_inside_the_tree_stay_inside() {
    let root = std::env::temp_dir().join(format!("compatrun-rootfs-{}", std::process::id()));
    std::fs::create_dir_all(root.join("data")).expect("mkdir");
    std::os::unix::fs::symlink("/etc", root.join("link")).expect("symlink");
    assert_eq!(
        in_tree(&root, OsStr::new("/data")).expect("plain"),
        root.join("data")
    );
    assert!(in_tree(&root, OsStr::new("/link/x")).is_err());
    assert!(in_tree(&root, OsStr::new("/data/../../etc")).is_err());
    assert!(in_tree(&root, OsStr::new("relative")).is_err());
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(
        candidates(OsStr::new("sh"), OsStr::new("/usr/bin:/bin")),
        vec![OsString::from("/usr/bin/sh"), OsString::from("/bin/sh")]
    );
    assert_eq!(
        candidates(OsStr::new("./x"), OsStr::new("/bin")),
        vec![OsString::from("./x")]
    );
}

fn bind(src: &Path, dst: &str, target: Target) -> MountSpec {
    MountSpec::Bind(BindSpec {
        src: src.as_os_str().to_owned(),
        dst: dst.into(),
        read_only: false,
        target,
        what: format!("bind {} on {dst}", src.display()),
    })
}

#[test]
fn missing_targets_are_refused_or_made_as_the_layout_says() {
    let base = std::env::temp_dir().join(format!("compatrun-plan-{}", std::process::id()));
    let (tree, scratch) = (base.join("tree"), base.join("scratch"));
    std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let mut setup = RootSetup {
        dir: tree.clone().into_os_string(),
        layout: vec![bind(
            &base,
            "/data/x",
            Target::Existing {
                missing: "the target /data/x is missing".into(),
            },
        )],
        hostname: None,
        path: "/bin".into(),
        overlay: None,
        workdir: Some("/w".into()),
    };
    // The front end's message for a target that must exist.
    let refused = plan(&setup).expect_err("missing target");
    assert_eq!(refused.to_string(), "the target /data/x is missing");
    setup.overlay = Some(scratch.clone().into_os_string());
    setup.layout = vec![
        bind(&base, "/data/x", Target::Create),
        bind(Path::new("/etc/passwd"), "/etc/y", Target::Create),
    ];
    let p = plan(&setup).expect("plan over an overlay");
    let steps: Vec<&str> = p.steps.iter().map(|(_, what)| what.as_str()).collect();
    for w in [
        "create /data in the root filesystem",
        "create /data/x in the root filesystem",
        "create /etc/y in the root filesystem",
        "create /w in the root filesystem",
    ] {
        assert!(steps.contains(&w), "{w:?} missing from {steps:?}");
    }
    assert!(
        !steps.contains(&"create /etc in the root filesystem"),
        "{steps:?}"
    );
    // Every step writes under the overlay's mount point, never into the tree.
    let merged = CString::new(scratch.join("merged").into_os_string().into_vec()).expect("c");
    for (step, what) in &p.steps {
        if let Step::Mkdir { path, .. } | Step::Touch { path } = step {
            assert!(
                path.as_bytes().starts_with(merged.as_bytes()),
                "{what}: {path:?}"
            );
        }
    }
    assert!(!tree.join("data").exists());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn links_in_the_tree_are_refused_below_its_own_mounts_only() {
    let base = std::env::temp_dir().join(format!("compatrun-links-{}", std::process::id()));
    let tree = base.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    // A tree whose /proc and /dev point at the host's: mounting there would cover them.
    std::os::unix::fs::symlink("/etc", tree.join("proc")).expect("symlink");
    std::os::unix::fs::symlink("/etc", tree.join("dev")).expect("symlink");
    let fs = |fstype: &str, dst: &str| MountSpec::Fs {
        fstype: fstype.into(),
        source: fstype.into(),
        dst: dst.into(),
        flags: 0,
        data: String::new(),
        mode: 0o755,
    };
    let mut setup = RootSetup {
        dir: tree.clone().into_os_string(),
        layout: vec![fs("proc", "/proc")],
        hostname: None,
        path: "/bin".into(),
        overlay: None,
        workdir: None,
    };
    let refused = plan(&setup).expect_err("link at a mount point");
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    // Below a tmpfs the plan mounted, the tree's own entries do not matter.
    std::fs::remove_file(tree.join("dev")).expect("rm");
    std::fs::create_dir(tree.join("dev")).expect("mkdir");
    std::os::unix::fs::symlink("/etc", tree.join("dev/pts")).expect("symlink");
    setup.layout = vec![
        fs("tmpfs", "/dev"),
        fs("devpts", "/dev/pts"),
        bind(
            Path::new("/dev/null"),
            "/dev/null",
            Target::Existing {
                missing: "never asked".into(),
            },
        ),
        MountSpec::Symlink {
            target: "/proc/self/fd".into(),
            dst: "/dev/fd".into(),
        },
    ];
    let p = plan(&setup).expect("a fresh /dev");
    let steps: Vec<&str> = p.steps.iter().map(|(_, what)| what.as_str()).collect();
    let null = format!("create {}", tree.join("dev/null").display());
    assert!(steps.contains(&null.as_str()), "{steps:?}");
    assert!(matches!(
        relative(OsStr::new("/a/../b")),
        Err(e) if e.to_string().contains("..")
    ));
    let _ = std::fs::remove_dir_all(&base);
}
