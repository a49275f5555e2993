//! compatrun as an OCI runtime with a user namespace (`{"type": "user"}`,
//! `linux.uidMappings` and `linux.gidMappings`), on the suite's platform: the container's
//! ids as seen from the host and inside, its own maps, a file it makes on a host
//! directory owned by the mapped id, the host name, sysctls and /proc (under the rhel6
//! persona, also a proc it mounts itself) in the namespaces it owns, devices bound from the host while mknod is
//! refused (root inside is root only there), exec into it, and nothing left after kill
//! and delete; the same bundle under runc (installed by scripts/test-deps.sh) shows the
//! same ids, maps and namespaces. Bad maps are refused naming their field. Skips
//! visibly when not root.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::oci::{bundle, edit_config, oci, state, wait_for, RHEL6};
use common::{is_root, platform, run_cmd, skip};

/// The host ids the container's 0..65536 are.
const HOST_ID: u32 = 100_000;

/// The test's directory, where every id may search each directory on the way (the
/// mapped root must reach the tree and the bound directory): the suite's scratch
/// directory if so (a checkout below a private home is not), else the system's temporary
/// directory; per platform and process, and removed when the test ends, passed or not.
struct Base(PathBuf);

/// Whether every id may search `dir` and each directory above it.
fn searchable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

impl Base {
    fn new(name: &str) -> Self {
        let scratch = common::scratch_dir();
        let parent = if searchable(&scratch) {
            scratch
        } else {
            std::env::temp_dir()
        };
        let dir = parent.join(format!(
            "compatrun-{name}-{}-{}",
            platform(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Base(dir)
    }
}

impl std::ops::Deref for Base {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busybox bundle running `script` in a user namespace that maps 0..65536 to
/// `HOST_ID`.. (uid and gid), with the tree owned by the mapped root (as podman chowns
/// an image for `--uidmap`), a host name, sysctls of its own network and IPC
/// namespaces, supplementary groups, and `shared` (given to the mapped root) bound at
/// /mnt/shared.
fn userns_bundle(dir: &Path, script: &str, shared: &Path) -> PathBuf {
    let b = bundle(dir, &["sh", "-c", script], "rhel6");
    std::os::unix::fs::chown(shared, Some(HOST_ID), Some(HOST_ID)).expect("chown");
    std::os::unix::fs::symlink("busybox", b.join("rootfs/bin/mknod")).expect("symlink");
    let st = Command::new("chown")
        .args(["-R", "-h", &format!("{HOST_ID}:{HOST_ID}")])
        .arg(b.join("rootfs"))
        .status()
        .expect("chown");
    assert!(st.success(), "chown the tree");
    let map = serde_json::json!([{"containerID": 0, "hostID": HOST_ID, "size": 65536}]);
    edit_config(&b, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(serde_json::json!({"type": "user"}));
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
        c["hostname"] = "userns-box".into();
        c["linux"]["sysctl"] =
            serde_json::json!({"kernel.shmmni": "1234", "net.ipv4.ip_default_ttl": "77"});
        c["process"]["user"]["additionalGids"] = serde_json::json!([10, 20]);
        // Root inside may mount (a proc of its own).
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set]
                .as_array_mut()
                .expect("capabilities")
                .push("CAP_SYS_ADMIN".into());
        }
        c["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(serde_json::json!({
                "destination": "/mnt/shared",
                "type": "bind",
                "source": shared,
                "options": ["rbind"]
            }));
    });
    b
}

/// What the container reports about its ids and namespaces, the same under any
/// runtime (no kernel release: that is the persona's).
const PROBE: &str = "id -u; id -G; cat /proc/self/uid_map /proc/self/gid_map; hostname; \
     cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_default_ttl; \
     echo x > /dev/null && echo null-ok; \
     mknod /tmp/node c 1 3 2>/dev/null && echo mknod-allowed || echo mknod-refused";

/// The probe's output in the container described above.
fn probe_expected() -> String {
    let map = format!("{:>10} {:>10} {:>10}\n", 0, HOST_ID, 65536);
    format!("0\n0 10 20\n{map}{map}userns-box\n1234\n77\nnull-ok\nmknod-refused\n")
}

fn host_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_container_runs_in_its_own_user_namespace() {
    let test = "a_container_runs_in_its_own_user_namespace";
    if !is_root() {
        return skip(
            test,
            "an OCI runtime needs root (namespaces, cgroups, mounts)",
        );
    }
    let base = Base::new("userns");
    let shared = base.join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let root = base.join("state");
    let id = format!("userns-{}", platform());
    let script = format!(
        "{PROBE}; cat /proc/sys/kernel/osrelease; mkdir /tmp/p; mount -t proc proc /tmp/p; \
         cat /tmp/p/sys/kernel/osrelease; touch /mnt/shared/made; echo ready; exec sleep 1000"
    );
    let b = userns_bundle(&base.join("bundle"), &script, &shared);
    // A createContainer hook (the host's static busybox, exec'd inside) runs in the user
    // namespace as its root, as under runc: what it writes is the container's.
    if Path::new("/bin/busybox").exists() {
        edit_config(&b, |c| {
            c["hooks"] = serde_json::json!({"createContainer": [{
                "path": "/bin/busybox",
                "args": ["busybox", "sh", "-c", "id -u > /tmp/hook; hostname >> /tmp/hook"]
            }]});
        });
    }
    let host_shmmni = host_file("/proc/sys/kernel/shmmni");
    let host_ttl = host_file("/proc/sys/net/ipv4/ip_default_ttl");
    let log = base.join("container.log");
    common::oci::create(&root, &b, &[], &id, &log);
    let st = state(&root, &id);
    let pid = st["pid"].as_i64().expect("pid");
    let out = oci(&root, &["start", &id]);
    assert_eq!(out.status, 0, "start: {}", out.err());
    wait_for("the container's probe", || {
        host_file(log.to_str().expect("utf8")).contains("ready")
    });
    assert_eq!(
        host_file(log.to_str().expect("utf8")),
        format!("{}{RHEL6}\n{RHEL6}\nready\n", probe_expected())
    );
    // From outside, its root is the mapped id; the host's own sysctls are untouched.
    let status = host_file(&format!("/proc/{pid}/status"));
    let line = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        line("Uid:"),
        format!("Uid:\t{HOST_ID}\t{HOST_ID}\t{HOST_ID}\t{HOST_ID}")
    );
    assert_eq!(
        line("Gid:"),
        format!("Gid:\t{HOST_ID}\t{HOST_ID}\t{HOST_ID}\t{HOST_ID}")
    );
    assert_eq!(host_file("/proc/sys/kernel/shmmni"), host_shmmni);
    assert_eq!(host_file("/proc/sys/net/ipv4/ip_default_ttl"), host_ttl);
    let made = std::fs::metadata(shared.join("made")).expect("the container's file");
    assert_eq!((made.uid(), made.gid()), (HOST_ID, HOST_ID));
    if Path::new("/bin/busybox").exists() {
        let hook = b.join("rootfs/tmp/hook");
        assert_eq!(host_file(hook.to_str().expect("utf8")), "0\nuserns-box\n");
        let meta = std::fs::metadata(&hook).expect("the hook's file");
        assert_eq!((meta.uid(), meta.gid()), (HOST_ID, HOST_ID));
    }
    // The supervisor is outside the user namespace, in the container's network one
    // (where engines set up the network through its pid).
    let ns = |pid: &str, name: &str| std::fs::read_link(format!("/proc/{pid}/ns/{name}")).ok();
    let sup = super_pid(&root, &id);
    assert_eq!(ns(&sup, "user"), ns("self", "user"));
    assert_ne!(ns(&pid.to_string(), "user"), ns("self", "user"));
    assert_eq!(ns(&sup, "net"), ns(&pid.to_string(), "net"));
    // exec joins the user namespace too.
    let out = oci(
        &root,
        &[
            "exec",
            &id,
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; hostname",
        ],
    );
    assert_eq!(out.status, 0, "exec: {}", out.err());
    assert_eq!(
        out.out(),
        format!("0\n{:>10} {:>10} {:>10}\nuserns-box\n", 0, HOST_ID, 65536)
    );
    common::oci::kill_and_delete(&root, &id, "KILL");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the container's process outlived delete"
    );
    let mounts = host_file("/proc/self/mountinfo");
    assert!(
        !mounts.contains(base.to_str().expect("utf8")),
        "mounts left: {mounts}"
    );
}

/// The supervisor's pid (`create`'s `--pid-file` value) from the state record.
fn super_pid(root: &Path, id: &str) -> String {
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(id).join("state.json")).expect("the state record"),
    )
    .expect("json");
    record["supervisor"].to_string()
}

#[test]
fn a_user_namespace_looks_as_under_runc() {
    let test = "a_user_namespace_looks_as_under_runc";
    if !is_root() {
        return skip(test, "an OCI runtime needs root");
    }
    let base = Base::new("userns-runc");
    let shared = base.join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let b = userns_bundle(&base.join("bundle"), PROBE, &shared);
    let ours = oci(
        &base.join("state"),
        &["run", "--bundle", b.to_str().expect("utf8"), "userns-run"],
    );
    assert_eq!(ours.status, 0, "compatrun run: {}", ours.err());
    assert_eq!(ours.out(), probe_expected());
    let runc = Path::new("/usr/sbin/runc");
    if !runc.exists() {
        return skip(
            test,
            "/usr/sbin/runc is missing (scripts/test-deps.sh installs it): no comparison",
        );
    }
    let mut cmd = Command::new(runc);
    cmd.arg("--root").arg(base.join("runc-state")).args([
        "run",
        "--bundle",
        b.to_str().expect("utf8"),
        "userns-runc",
    ]);
    let theirs = run_cmd(cmd, None);
    assert_eq!(theirs.status, 0, "runc run: {}", theirs.err());
    assert_eq!(ours.out(), theirs.out(), "compatrun and runc differ");
}

#[test]
fn without_a_network_namespace_of_its_own_sys_is_the_hosts() {
    let test = "without_a_network_namespace_of_its_own_sys_is_the_hosts";
    if !is_root() {
        return skip(test, "an OCI runtime needs root");
    }
    // In the host's network namespace the mapped root may not mount sysfs (runc 1.1.5
    // fails such a config with EPERM): compatrun binds the host's /sys, read-only as the
    // config's mount asks.
    let base = Base::new("userns-sys");
    let shared = base.join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let b = userns_bundle(
        &base.join("bundle"),
        "ls /sys/class/net/lo/ifindex; touch /sys/x 2>/dev/null || echo read-only; \
         cat /proc/self/mountinfo",
        &shared,
    );
    edit_config(&b, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "network");
        c["linux"]["sysctl"] = serde_json::json!({"kernel.shmmni": "1234"});
    });
    let out = oci(
        &base.join("state"),
        &["run", "--bundle", b.to_str().expect("utf8"), "userns-sys"],
    );
    assert_eq!(out.status, 0, "compatrun run: {}", out.err());
    let text = out.out();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("/sys/class/net/lo/ifindex"));
    assert_eq!(lines.next(), Some("read-only"));
    // mountinfo: ID PARENT DEV ROOT MOUNTPOINT OPTIONS ... - TYPE SOURCE SUPER
    let sys: Vec<Vec<&str>> = lines
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.get(4) == Some(&"/sys"))
        .collect();
    assert_eq!(sys.len(), 1, "{text}");
    let f = &sys[0];
    let dash = f.iter().position(|x| *x == "-").expect("separator");
    assert_eq!(f.get(dash + 1), Some(&"sysfs"), "{text}");
    assert!(f[5].split(',').any(|o| o == "ro"), "{text}");
}

#[test]
fn bad_id_maps_are_refused_naming_the_field() {
    let test = "bad_id_maps_are_refused_naming_the_field";
    if !is_root() {
        return skip(test, "an OCI runtime needs root");
    }
    let base = Base::new("userns-bad");
    let root = base.join("state");
    let user = serde_json::json!({"type": "user"});
    let line =
        |c: u32, h: u32, n: u32| serde_json::json!({"containerID": c, "hostID": h, "size": n});
    let good = serde_json::json!([line(0, HOST_ID, 65536)]);
    let cases = [
        (
            "overlap",
            serde_json::json!([line(0, HOST_ID, 100), line(50, 300_000, 100)]),
            good.clone(),
            true,
            "linux.uidMappings: uid map lines 0 and 1 overlap (inside ids)",
        ),
        (
            "zero",
            good.clone(),
            serde_json::json!([line(0, HOST_ID, 0)]),
            true,
            "linux.gidMappings: gid map line 0: the size is zero",
        ),
        (
            "range",
            serde_json::json!([line(0, 4_294_967_000, 1000)]),
            good.clone(),
            true,
            "linux.uidMappings: uid map line 0: ids out of range",
        ),
        (
            "noroot",
            serde_json::json!([line(1, HOST_ID, 10)]),
            good.clone(),
            true,
            "linux.uidMappings: the uid map does not map id 0 inside",
        ),
        (
            "nouserns",
            good.clone(),
            good.clone(),
            false,
            "linux.uidMappings and linux.gidMappings need a user namespace",
        ),
    ];
    for (name, uid, gid, with_user, message) in cases.into_iter().chain([
        (
            "unmapped-uid",
            serde_json::json!([line(0, HOST_ID, 1000)]),
            good.clone(),
            true,
            "process.user.uid 5000 is not mapped by linux.uidMappings",
        ),
        (
            "unmapped-gid",
            good.clone(),
            serde_json::json!([line(0, HOST_ID, 1000)]),
            true,
            "process.user: gid 7000 is not mapped by linux.gidMappings",
        ),
    ]) {
        let b = bundle(&base.join(name), &["true"], "host");
        edit_config(&b, |c| {
            if with_user {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .expect("namespaces")
                    .push(user.clone());
            }
            c["linux"]["uidMappings"] = uid;
            c["linux"]["gidMappings"] = gid;
            if name.starts_with("unmapped") {
                c["process"]["user"] =
                    serde_json::json!({"uid": 5000, "gid": 10, "additionalGids": [7000]});
            }
        });
        let out = oci(
            &root,
            &["create", "--bundle", b.to_str().expect("utf8"), name],
        );
        assert_eq!(out.status, 125, "{name}: {}", out.err());
        assert!(out.err().contains(message), "{name}: {}", out.err());
        assert!(
            !root.join(name).exists(),
            "{name}: a failed create leaves its state"
        );
    }
    // A tree the mapped root cannot use: a clear error after the namespace was made,
    // and nothing left.
    let shared = base.join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let b = userns_bundle(&base.join("unusable"), "true", &shared);
    let st = Command::new("chown")
        .args(["-R", "-h", "0:0"])
        .arg(b.join("rootfs"))
        .status()
        .expect("chown");
    assert!(st.success(), "chown the tree back");
    std::fs::set_permissions(
        b.join("rootfs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let out = oci(
        &root,
        &["create", "--bundle", b.to_str().expect("utf8"), "unusable"],
    );
    assert_eq!(out.status, 125, "unusable: {}", out.err());
    assert!(
        out.err().contains(
            "maps the container's root to host uid 100000, which must be able to use root.path"
        ),
        "{}",
        out.err()
    );
    assert!(!root.join("unusable").exists(), "unusable: state left");
    assert!(
        !host_file("/proc/self/mountinfo").contains(base.to_str().expect("utf8")),
        "unusable: mounts left"
    );
    // Joining an existing user namespace is refused by name.
    let b = bundle(&base.join("join"), &["true"], "host");
    edit_config(&b, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(serde_json::json!({"type": "user", "path": "/proc/1/ns/user"}));
        c["linux"]["uidMappings"] = good.clone();
        c["linux"]["gidMappings"] = good.clone();
    });
    let out = oci(
        &root,
        &["create", "--bundle", b.to_str().expect("utf8"), "join"],
    );
    assert_eq!(out.status, 125, "join: {}", out.err());
    assert!(
        out.err()
            .contains("joining an existing user namespace is not supported"),
        "{}",
        out.err()
    );
}
