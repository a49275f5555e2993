//! config.json's `mounts`, `linux.devices`, `linux.maskedPaths`, `linux.readonlyPaths`
//! and `root.readonly` as the root filesystem's layout ([`MountSpec`]s), with what runc
//! adds where the spec is silent: the default devices and the /dev links when /dev is a
//! fresh tmpfs.

use std::path::Path;

use anyhow::bail;
use oci_spec::runtime::{Linux, Spec};
use platform::{BindSpec, MountSpec, Target};

/// The device nodes every container gets (bound from the host) when /dev is a tmpfs.
const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Mount options that are flags, and the flags they set.
fn flag(option: &str) -> Option<u64> {
    Some(match option {
        "ro" => libc::MS_RDONLY,
        "nosuid" => libc::MS_NOSUID,
        "nodev" => libc::MS_NODEV,
        "noexec" => libc::MS_NOEXEC,
        "sync" => libc::MS_SYNCHRONOUS,
        "dirsync" => libc::MS_DIRSYNC,
        "mand" => libc::MS_MANDLOCK,
        "noatime" => libc::MS_NOATIME,
        "nodiratime" => libc::MS_NODIRATIME,
        "relatime" => libc::MS_RELATIME,
        "strictatime" => libc::MS_STRICTATIME,
        "bind" => libc::MS_BIND,
        "rbind" => libc::MS_BIND | libc::MS_REC,
        // The defaults, and private propagation, which every mount in the container's
        // namespace already has.
        "rw" | "suid" | "dev" | "exec" | "async" | "nomand" | "atime" | "diratime"
        | "norelatime" | "nostrictatime" | "private" | "rprivate" => 0,
        _ => return None,
    })
}

const PROPAGATION: [&str; 6] = [
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

/// The layout for `spec`'s mounts in `tree`; `bind_sys`: a sysfs mount is the host's
/// /sys bound (recursively) instead, as in a user namespace without a network namespace
/// of its own, where sysfs cannot be mounted.
pub fn layout(
    spec: &Spec,
    linux: &Linux,
    tree: &Path,
    readonly_root: bool,
    bind_sys: bool,
) -> anyhow::Result<Vec<MountSpec>> {
    let mut l = Vec::new();
    let mut dev_is_tmpfs = false;
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        let dst = m.destination();
        let name = format!("mounts[{i}] ({})", dst.display());
        if !dst.is_absolute() {
            bail!("{name}: the destination must be absolute");
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            bail!("{name}: uidMappings and gidMappings are not supported by compatrun");
        }
        let mut flags = 0u64;
        let mut data: Vec<String> = Vec::new();
        for o in m.options().clone().unwrap_or_default() {
            if PROPAGATION.contains(&o.as_str()) {
                bail!("{name}: propagation {o} is not supported by compatrun (only private)");
            }
            match flag(&o) {
                Some(f) => flags |= f,
                None => data.push(o),
            }
        }
        let typ = m.typ().clone().unwrap_or_default();
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| typ.clone());
        if flags & libc::MS_BIND != 0 || typ == "bind" {
            if !data.is_empty() {
                bail!("{name}: bind options {data:?} are not supported by compatrun");
            }
            let src = Path::new(&source);
            let read_only = flags & libc::MS_RDONLY != 0;
            l.push(MountSpec::Bind(BindSpec {
                src: src.as_os_str().to_owned(),
                dst: dst.as_os_str().to_owned(),
                read_only,
                target: Target::Create,
                what: format!("{name}: bind {} on {}", src.display(), dst.display()),
            }));
            let extra = flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
            if extra != 0 {
                l.push(MountSpec::Remount {
                    dst: dst.as_os_str().to_owned(),
                    flags: libc::MS_BIND | extra | (flags & libc::MS_RDONLY),
                });
            }
            continue;
        }
        match typ.as_str() {
            "sysfs" if bind_sys => {
                l.push(MountSpec::Bind(BindSpec {
                    src: "/sys".into(),
                    dst: dst.as_os_str().to_owned(),
                    read_only: flags & libc::MS_RDONLY != 0,
                    target: Target::Create,
                    what: format!("{name}: bind the host's /sys (a user namespace without a network namespace of its own cannot mount sysfs)"),
                }));
            }
            "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" => {
                if dst == Path::new("/dev") && typ == "tmpfs" {
                    dev_is_tmpfs = true;
                }
                l.push(MountSpec::Fs {
                    fstype: typ.clone(),
                    source,
                    dst: dst.as_os_str().to_owned(),
                    flags,
                    data: data.join(","),
                    mode: 0o755,
                });
            }
            "cgroup" | "cgroup2" => {
                // The host's cgroup file systems as they are mounted (v1, hybrid or v2),
                // as runc shows them when the container has no cgroup namespace of its own.
                l.push(MountSpec::Bind(BindSpec {
                    src: "/sys/fs/cgroup".into(),
                    dst: dst.as_os_str().to_owned(),
                    read_only: flags & libc::MS_RDONLY != 0,
                    target: Target::Create,
                    what: format!("{name}: bind the host's /sys/fs/cgroup"),
                }));
            }
            other => bail!("{name}: mount type {other:?} is not supported by compatrun"),
        }
    }
    if dev_is_tmpfs {
        let mut devices: Vec<String> = DEFAULT_DEVICES
            .iter()
            .map(|d| format!("/dev/{d}"))
            .collect();
        for d in linux.devices().clone().unwrap_or_default() {
            devices.push(host_device(&d)?);
        }
        for d in devices {
            if !Path::new(&d).exists() {
                continue;
            }
            l.push(MountSpec::Bind(BindSpec {
                src: d.clone().into(),
                dst: d.clone().into(),
                read_only: false,
                target: Target::Create,
                what: format!("bind the host's {d}"),
            }));
        }
        for (target, dst) in [
            ("pts/ptmx", "/dev/ptmx"),
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
            ("/proc/kcore", "/dev/core"),
        ] {
            l.push(MountSpec::Symlink {
                target: target.into(),
                dst: dst.into(),
            });
        }
    } else if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        bail!(
            "linux.devices needs /dev mounted as a tmpfs in mounts (compatrun binds devices there)"
        );
    }
    for p in linux.masked_paths().clone().unwrap_or_default() {
        let host = Path::new(&p);
        if !host.is_absolute() {
            bail!("linux.maskedPaths {p}: must be absolute");
        }
        l.push(MountSpec::Mask { dst: p.into() });
    }
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        if !Path::new(&p).is_absolute() {
            bail!("linux.readonlyPaths {p}: must be absolute");
        }
        l.push(MountSpec::ReadOnlyPath { dst: p.into() });
    }
    if readonly_root {
        l.push(MountSpec::Remount {
            dst: "/".into(),
            flags: libc::MS_BIND | libc::MS_RDONLY,
        });
    }
    let _ = tree;
    Ok(l)
}

/// The host's node for one of `linux.devices`: compatrun binds host nodes in (as a user
/// namespace must), so the host must have that very device at that path.
fn host_device(d: &oci_spec::runtime::LinuxDevice) -> anyhow::Result<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = d.path().to_string_lossy().into_owned();
    let meta = std::fs::metadata(d.path()).map_err(|e| {
        anyhow::anyhow!("linux.devices {path}: compatrun binds devices from the host, which has none there ({e})")
    })?;
    let kind_ok = match d.typ() {
        oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => {
            meta.file_type().is_char_device()
        }
        oci_spec::runtime::LinuxDeviceType::B => meta.file_type().is_block_device(),
        oci_spec::runtime::LinuxDeviceType::P => meta.file_type().is_fifo(),
        _ => false,
    };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if !kind_ok
        || i64::try_from(major).ok() != Some(d.major())
        || i64::try_from(minor).ok() != Some(d.minor())
    {
        bail!("linux.devices {path}: the host's node there is not that device (compatrun binds host devices)");
    }
    Ok(path)
}
