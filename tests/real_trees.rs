//! Real trees and images made by real tools (scripts/test-trees.sh, cached in
//! target/test-trees): a Debian bullseye minbase tree from `debootstrap`, a tree of
//! Debian's busybox-static with every applet, OCI layouts of the bullseye tree made by
//! `umoci` (a second layer of whiteouts; a third, in its own layout, with an opaque
//! directory from `umoci insert --opaque`), the layout as a tar, and a docker-archive
//! by `skopeo`. Each is run as root and as uid 65534 (a user namespace where the guest
//! is root), on the suite's platform, and compared with what is true of the tree: its
//! files, its dpkg database, the tree's own programs run natively with `chroot`.
//! Skips visibly when the trees cannot be made (not root, no network, tools missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{compatrun_bin, is_root, run_cmd, skip, Outcome};

/// The persona the bullseye tree runs under: its glibc 2.31 wants Linux 3.2 or newer.
const PERSONA: &str = "rhel7";

/// target/test-trees, made once per test run (Err with the reason when it cannot be).
fn trees() -> Result<&'static Path, String> {
    static TREES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TREES
        .get_or_init(|| {
            if !is_root() {
                return Err("debootstrap and umoci need root".into());
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let out = Command::new("bash")
                .arg(root.join("scripts/test-trees.sh"))
                .output()
                .map_err(|e| format!("cannot run scripts/test-trees.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/test-trees.sh failed (no network, or debootstrap, umoci, skopeo \
                     missing: scripts/test-deps.sh installs them): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(root.join(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn trees_or_skip(test: &str) -> Option<&'static Path> {
    match trees() {
        Ok(t) => Some(t),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// `compatrun ARGS...` as root or (`unprivileged`) as uid 65534, with a clean
/// environment: PATH, the image cache `cache`, and the suite's platform.
fn compatrun(
    unprivileged: bool,
    cache: Option<&Path>,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Outcome {
    let mut cmd = if unprivileged {
        common::as_nobody(&compatrun_bin())
    } else {
        Command::new(compatrun_bin())
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    if let Ok(p) = std::env::var("COMPATRUN_PLATFORM") {
        cmd.env("COMPATRUN_PLATFORM", p);
    }
    if let Some(c) = cache {
        cmd.env("COMPATRUN_CACHE_DIR", c);
    }
    run_cmd(cmd, stdin)
}

/// `chroot TREE ARGV...` natively (root only), with the same clean environment.
fn native_chroot(tree: &Path, argv: &[&str]) -> Outcome {
    let mut cmd = Command::new("chroot");
    cmd.arg(tree)
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    run_cmd(cmd, None)
}

/// "Package Version" of every package the tree's dpkg database lists as installed,
/// read from var/lib/dpkg/status by this test, sorted.
fn installed_packages(tree: &Path) -> Vec<String> {
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).expect("dpkg status");
    let mut out: Vec<String> = status
        .split("\n\n")
        .filter(|p| p.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|p| {
            let field = |name: &str| {
                p.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            Some(format!("{} {}", field("Package:")?, field("Version:")?))
        })
        .collect();
    out.sort();
    out
}

/// The upstream major.minor of the tree's bash package ("5.1-2+deb11u1" gives "5.1").
fn bash_major_minor(tree: &Path) -> String {
    let pkgs = installed_packages(tree);
    let version = pkgs
        .iter()
        .find_map(|p| p.strip_prefix("bash "))
        .expect("bash is installed in the tree");
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    upstream
        .split(['-', '+'])
        .next()
        .expect("version")
        .to_owned()
}

/// `uname -r` and `uname -v` of `persona`, as `compatrun personas PERSONA` states them.
fn persona_identity(persona: &str) -> (String, String) {
    let o = compatrun(false, None, &["personas", persona], None);
    assert_eq!(o.status, 0, "{}", o.err());
    let field = |name: &str| {
        o.out()
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in `compatrun personas {persona}`"))
    };
    (field("uname -r:"), field("uname -v:"))
}

/// A fresh image cache for one test (writable by uid 65534 too), removed when dropped.
struct Cache(PathBuf);

impl Cache {
    fn new(name: &str) -> Cache {
        let c =
            common::scratch_dir().join(format!("real-trees-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&c);
        std::fs::create_dir_all(&c).expect("mkdir cache");
        let _ = Command::new("chmod").arg("777").arg(&c).status();
        Cache(c)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The trees `compatrun images list` shows for `cache`.
fn cached_trees(cache: &Path) -> Vec<PathBuf> {
    let o = compatrun(false, Some(cache), &["images", "list"], None);
    assert_eq!(o.status, 0, "{}", o.err());
    o.out()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(PathBuf::from))
        .collect()
}

/// Each run as root (false) and as uid 65534 (true); the trees exist only for root.
const USERS: [bool; 2] = [false, true];

#[test]
fn bullseye_runs_its_own_bash_with_its_own_files() {
    let test = "bullseye_runs_its_own_bash_with_its_own_files";
    let Some(t) = trees_or_skip(test) else { return };
    let tree = t.join("bullseye");
    let tree_s = tree.to_str().expect("utf8");
    let version = std::fs::read_to_string(tree.join("etc/debian_version")).expect("debian_version");
    let script = "cat /etc/debian_version; echo $BASH_VERSION; ls /; echo $$; id -u; id -g";
    let native = native_chroot(
        &tree,
        &[
            "/bin/bash",
            "-c",
            "cat /etc/debian_version; echo $BASH_VERSION; ls /",
        ],
    );
    assert_eq!(native.status, 0, "native chroot: {}", native.err());
    for unprivileged in USERS {
        let o = compatrun(
            unprivileged,
            None,
            &[
                "-k",
                PERSONA,
                "--rootfs",
                tree_s,
                "--",
                "/bin/bash",
                "-c",
                script,
            ],
            None,
        );
        assert_eq!(o.status, 0, "unprivileged={unprivileged}: {}", o.err());
        let out = o.out();
        // The tree's own files and bash, as the tree's bash shows them natively.
        assert!(
            out.starts_with(&native.out()),
            "unprivileged={unprivileged}: guest\n{out}\nnative chroot\n{}",
            native.out()
        );
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(version.trim_end()));
        let bash = lines.next().expect("BASH_VERSION");
        assert!(
            bash.starts_with(&format!("{}.", bash_major_minor(&tree))),
            "BASH_VERSION {bash} is not the tree's bash package"
        );
        // The guest is the first process of its own pid namespace (after compatrun's
        // init), and root inside, also when started by uid 65534.
        let tail: Vec<&str> = out.lines().rev().take(3).collect();
        assert_eq!(tail, ["0", "0", "2"], "unprivileged={unprivileged}: {out}");
    }
}

#[test]
fn dpkg_lists_exactly_the_trees_installed_packages() {
    let test = "dpkg_lists_exactly_the_trees_installed_packages";
    let Some(t) = trees_or_skip(test) else { return };
    let tree = t.join("bullseye");
    let tree_s = tree.to_str().expect("utf8");
    let packages = installed_packages(&tree);
    assert!(
        packages.len() > 50,
        "a minbase tree has ~90 packages: {packages:?}"
    );
    let script = "dpkg -l | grep -c '^ii'; \
                  dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' | \
                  grep ' ii *$' | sed 's/ ii *$//' | LC_ALL=C sort";
    let mut expected = format!("{}\n", packages.len());
    for p in &packages {
        expected.push_str(p);
        expected.push('\n');
    }
    // The whole `dpkg -l` listing, as the tree's dpkg prints it natively.
    let native = native_chroot(&tree, &["dpkg", "-l"]);
    assert_eq!(native.status, 0, "native chroot: {}", native.err());
    for unprivileged in USERS {
        let o = compatrun(
            unprivileged,
            None,
            &[
                "-k", PERSONA, "--rootfs", tree_s, "--", "/bin/sh", "-c", script,
            ],
            None,
        );
        assert_eq!(
            (o.status, o.out()),
            (0, expected.clone()),
            "unprivileged={unprivileged}: {}",
            o.err()
        );
        let o = compatrun(
            unprivileged,
            None,
            &["-k", PERSONA, "--rootfs", tree_s, "--", "dpkg", "-l"],
            None,
        );
        assert_eq!(
            (o.status, o.out()),
            (0, native.out()),
            "unprivileged={unprivileged}: {}",
            o.err()
        );
    }
}

/// A shell script (brought in with `--bind`, read-only) printing every place a program
/// looks for the kernel's identity.
const IDENTITY_PROBE: &str = "#!/bin/sh
echo \"uname -r: $(uname -r)\"
echo \"uname -v: $(uname -v)\"
echo \"osrelease: $(cat /proc/sys/kernel/osrelease)\"
echo \"version: $(cat /proc/sys/kernel/version)\"
echo \"proc: $(cat /proc/version)\"
echo \"uname -a: $(uname -a)\"
";

/// Checks the probe's output: every fixed line, `/proc/version` naming the release and
/// ending with the version, and `uname -a` (the tree's own uname) telling the same.
fn check_identity(out: &str, persona: &str, hostname: &str, what: &str) {
    let (release, version) = persona_identity(persona);
    let fixed = format!(
        "uname -r: {release}\nuname -v: {version}\nosrelease: {release}\nversion: {version}\n"
    );
    let uname_a = format!("uname -a: Linux {hostname} {release} {version} x86_64");
    assert!(
        out.starts_with(&fixed),
        "{what}:\n{out}\nexpected to start with\n{fixed}"
    );
    let proc = out
        .lines()
        .find_map(|l| l.strip_prefix("proc: "))
        .expect("a /proc/version line");
    assert!(
        proc.starts_with(&format!("Linux version {release} ")) && proc.ends_with(&version),
        "{what}: /proc/version is {proc:?}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("uname -a: "))
        .expect("a uname -a line");
    assert!(
        line.starts_with(&uname_a),
        "{what}: {line:?}, expected {uname_a:?}…"
    );
}

fn probe_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = common::scratch_dir().join("real-trees-probe");
        std::fs::create_dir_all(&d).expect("mkdir probe");
        std::fs::write(d.join("identity.sh"), IDENTITY_PROBE).expect("write probe");
        let _ = Command::new("chmod").arg("-R").arg("a+rX").arg(&d).status();
        d
    })
    .clone()
}

#[test]
fn the_trees_own_programs_see_the_personas_kernel_everywhere() {
    let test = "the_trees_own_programs_see_the_personas_kernel_everywhere";
    let Some(t) = trees_or_skip(test) else { return };
    let probe = probe_dir();
    let bind = format!("{}:/mnt:ro", probe.display());
    // bullseye (glibc 2.31, coreutils 8.32) under rhel7; busybox under 2.6.
    for (tree, persona) in [("bullseye", PERSONA), ("busybox", "2.6")] {
        let root = t.join(tree);
        let root_s = root.to_str().expect("utf8");
        for unprivileged in USERS {
            let o = compatrun(
                unprivileged,
                None,
                &[
                    "-k",
                    persona,
                    "--hostname",
                    "oldhost",
                    "--rootfs",
                    root_s,
                    "--bind",
                    &bind,
                    "--",
                    "/bin/sh",
                    "/mnt/identity.sh",
                ],
                None,
            );
            assert_eq!(
                o.status,
                0,
                "{tree} unprivileged={unprivileged}: {}",
                o.err()
            );
            check_identity(
                &o.out(),
                persona,
                "oldhost",
                &format!("{tree} under {persona}, unprivileged={unprivileged}"),
            );
        }
    }
    // bullseye's glibc 2.31 wants Linux 3.2: under 2.6.32 its loader refuses, as on
    // that kernel, and compatrun says why (auto picks ptrace, which shows the loader
    // the persona's version in the vDSO note).
    let o = compatrun(
        false,
        None,
        &[
            "-k",
            "2.6",
            "--platform",
            "auto",
            "--rootfs",
            t.join("bullseye").to_str().expect("utf8"),
            "--",
            "/bin/true",
        ],
        None,
    );
    assert_eq!(o.status, 127, "{}", o.err());
    assert!(o.err().contains("FATAL: kernel too old"), "{}", o.err());
    assert!(o.err().contains("choose a newer persona"), "{}", o.err());
}

/// Everyday commands, all busybox applets.
const BUSYBOX_SCRIPT: &str = "echo hello world | tr a-z A-Z; \
    printf 'b\\na\\nc\\n' | sort | tr '\\n' ' '; echo; \
    echo $((6 * 7)); echo abc | sed s/b/X/; echo 'x y' | awk '{print $2}'; \
    ls /bin | wc -l; grep -c . /etc/passwd; basename /a/b/c; id -u; echo $$; \
    test -d /proc/self && echo proc; cat /proc/1/comm";

#[test]
fn busybox_static_tree_runs_basic_commands() {
    let test = "busybox_static_tree_runs_basic_commands";
    let Some(t) = trees_or_skip(test) else { return };
    let tree = t.join("busybox");
    let applets = std::fs::read_dir(tree.join("bin")).expect("bin").count();
    let script = BUSYBOX_SCRIPT;
    let expected = format!("HELLO WORLD\na b c \n42\naXc\ny\n{applets}\n2\nc\n0\n2\nproc\n");
    for unprivileged in USERS {
        let o = compatrun(
            unprivileged,
            None,
            &[
                "-k",
                "2.6",
                "--rootfs",
                tree.to_str().expect("utf8"),
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
            None,
        );
        assert_eq!(o.status, 0, "unprivileged={unprivileged}: {}", o.err());
        let out = o.out();
        assert!(
            out.starts_with(&expected),
            "unprivileged={unprivileged}: got\n{out}\nexpected to start with\n{expected}\n{}",
            o.err()
        );
        // pid 1 is compatrun's init, not anything of the host.
        assert_eq!(out.lines().last(), Some("compatrun-init"), "{out}");
    }
}

/// What the first run prints and then changes: the image's files as its layers leave
/// them, then writes that must land only in the throw-away overlay.
const IMAGE_SCRIPT: &str = "cat /etc/debian_version; dpkg -l | grep -c '^ii'; uname -r; pwd; \
    echo \"LANG=$LANG\"; id -u; \
    test -e /etc/issue.net && echo whiteout-missed; \
    ls -A /etc/update-motd.d; \
    echo changed >/etc/debian_version; rm /etc/passwd; touch /guest-wrote; \
    cat /etc/debian_version";

/// What the second run (the image's own Cmd, /bin/bash, reading stdin) prints.
const SECOND_RUN: &str = "cat /etc/debian_version; test -e /guest-wrote && echo write-kept; \
    test -e /etc/passwd && echo passwd; pwd\n";

/// Runs `image` twice with a fresh cache: the layers applied (whiteouts), the image's
/// config (Cmd, Env, WorkingDir), the guest's writes thrown away, the cached tree
/// untouched by them and reused by the second run.
fn image_runs(t: &Path, image: &str, unprivileged: bool) {
    let what = format!("{image} unprivileged={unprivileged}");
    let tree = t.join("bullseye");
    let version = std::fs::read_to_string(tree.join("etc/debian_version")).expect("debian_version");
    let packages = installed_packages(&tree).len();
    let (release, _) = persona_identity(PERSONA);
    let cache = Cache::new(&format!("{}-{unprivileged}", image.replace('.', "-")));
    let cache = cache.0.as_path();
    let path = t.join(image);
    let path_s = path.to_str().expect("utf8");
    let o = compatrun(
        unprivileged,
        Some(cache),
        &[
            "-k",
            PERSONA,
            "--image",
            path_s,
            "--",
            "/bin/bash",
            "-c",
            IMAGE_SCRIPT,
        ],
        None,
    );
    assert_eq!(
        (o.status, o.out()),
        (
            0,
            format!(
                "{version}{packages}\n{release}\n/root\nLANG=C.UTF-8\n0\nonly-above\nchanged\n"
            )
        ),
        "{what}: {}",
        o.err()
    );
    let cached = cached_trees(cache);
    assert_eq!(cached.len(), 1, "{what}: {cached:?}");
    let rootfs = &cached[0];
    // The cached tree is as unpacked: the guest's writes went to the overlay.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/debian_version")).ok(),
        Some(version.clone()),
        "{what}"
    );
    assert!(rootfs.join("etc/passwd").is_file(), "{what}");
    assert!(!rootfs.join("guest-wrote").exists(), "{what}");
    assert!(!rootfs.join("etc/issue.net").exists(), "{what}");
    // Second run: no program given, so the image's Cmd (/bin/bash) reads stdin.
    let o = compatrun(
        unprivileged,
        Some(cache),
        &["--log", "info", "-k", PERSONA, "--image", path_s],
        Some(SECOND_RUN.as_bytes()),
    );
    assert_eq!(
        (o.status, o.out()),
        (0, format!("{version}passwd\n/root\n")),
        "{what}: {}",
        o.err()
    );
    assert!(
        o.err()
            .contains(&format!("reusing the cached tree {}", rootfs.display())),
        "{what}: {}",
        o.err()
    );
    assert_eq!(cached_trees(cache), cached, "{what}");
}

#[test]
fn umoci_oci_layout_directory_runs_with_its_layers_applied() {
    let test = "umoci_oci_layout_directory_runs_with_its_layers_applied";
    let Some(t) = trees_or_skip(test) else { return };
    image_runs(t, "oci", false);
}

#[test]
fn umoci_oci_layout_as_a_tar_runs_with_its_layers_applied() {
    let test = "umoci_oci_layout_as_a_tar_runs_with_its_layers_applied";
    let Some(t) = trees_or_skip(test) else { return };
    image_runs(t, "oci.tar", false);
}

#[test]
fn skopeo_docker_archive_runs_with_its_layers_applied() {
    let test = "skopeo_docker_archive_runs_with_its_layers_applied";
    let Some(t) = trees_or_skip(test) else { return };
    image_runs(t, "docker.tar", false);
}

#[test]
fn skopeo_docker_archive_runs_for_an_ordinary_user() {
    let test = "skopeo_docker_archive_runs_for_an_ordinary_user";
    let Some(t) = trees_or_skip(test) else { return };
    image_runs(t, "docker.tar", true);
}

/// `umoci insert --opaque` writes the opaque marker before the directory's own entry,
/// and (umoci up to 0.4.7) ends the layer without the tar end-of-archive blocks or the
/// last file's padding; the layer's digests still match, and Go-based engines (which
/// take a clean end of data at an entry boundary as the end) run such images.
#[test]
fn umoci_opaque_directory_shows_only_the_upper_layer() {
    let test = "umoci_opaque_directory_shows_only_the_upper_layer";
    let Some(t) = trees_or_skip(test) else { return };
    let cache = Cache::new("oci-opaque");
    let cache = cache.0.as_path();
    let path = t.join("oci-opaque");
    let o = compatrun(
        false,
        Some(cache),
        &[
            "-k",
            PERSONA,
            "--image",
            path.to_str().expect("utf8"),
            "--",
            "/bin/sh",
            "-c",
            "ls -A /etc/skel; cat /etc/skel/only-upper; ls -A /etc/update-motd.d; \
             test -e /etc/issue.net || echo whiteout-kept; cat /etc/debian_version",
        ],
        None,
    );
    let version = std::fs::read_to_string(t.join("bullseye/etc/debian_version")).expect("version");
    assert_eq!(
        (o.status, o.out()),
        (
            0,
            format!("only-upper\nfrom the third layer\nonly-above\nwhiteout-kept\n{version}")
        ),
        "{}",
        o.err()
    );
}
