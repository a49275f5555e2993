//! The default layout of a command-line guest's root filesystem (`--rootfs`, `--image`):
//! which file systems, devices, links and host files it gets, and the `--bind`s, as the
//! list of [`MountSpec`]s the platform carries out. The platform knows none of this.
//!
//! In order: `/proc` of the guest's pid namespace; the host's `/sys`, read-only down to
//! every mount below it; a small `/dev` on a tmpfs (the host's null, zero, full, random,
//! urandom and tty bound in, since a user namespace may not create device nodes; a new
//! devpts instance with `/dev/ptmx`; `/dev/shm`; the fd links); the host's
//! `/etc/resolv.conf` and `/etc/hosts` over the tree's (read-only, only where the tree has
//! them as regular files, or in an image's overlay where it has none); the `--bind`s.

use std::ffi::OsString;
use std::path::Path;

use platform::{BindSpec, MountSpec, Target};

/// The device nodes bound from the host.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The host files bound over the tree's.
const HOST_FILES: [&str; 2] = ["etc/resolv.conf", "etc/hosts"];

/// One `--bind SRC:DST[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The host path.
    pub src: OsString,
    /// Where it appears inside the tree (absolute, as the guest sees it).
    pub dst: OsString,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What the layout is for.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The guest writes to a throw-away overlay (an image): what the tree lacks may be
    /// made there. A `--rootfs` tree is never written to (but for missing mount points).
    pub overlay: bool,
    /// Bind the host's /etc/resolv.conf and /etc/hosts in.
    pub host_files: bool,
}

fn fs(fstype: &str, dst: &str, flags: u64, data: &str, mode: u32) -> MountSpec {
    MountSpec::Fs {
        fstype: fstype.into(),
        source: fstype.into(),
        dst: dst.into(),
        flags,
        data: data.into(),
        mode,
    }
}

fn link(target: &str, dst: &str) -> MountSpec {
    MountSpec::Symlink {
        target: target.into(),
        dst: dst.into(),
    }
}

/// The layout for `tree` (as it is now: what it has decides where host files go).
pub fn default(tree: &Path, binds: &[Bind], opts: Options) -> anyhow::Result<Vec<MountSpec>> {
    let mut l = vec![
        fs(
            "proc",
            "/proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
            0o555,
        ),
        MountSpec::Bind(BindSpec {
            src: "/sys".into(),
            dst: "/sys".into(),
            read_only: true,
            target: Target::Create,
            what: "bind the host's /sys".into(),
        }),
        fs(
            "tmpfs",
            "/dev",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "mode=755,size=65536k",
            0o755,
        ),
    ];
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if host.exists() {
            l.push(MountSpec::Bind(BindSpec {
                src: host.clone().into_os_string(),
                dst: host.clone().into_os_string(),
                read_only: false,
                target: Target::Create,
                what: format!("bind the host's {}", host.display()),
            }));
        }
    }
    l.extend([
        fs(
            "devpts",
            "/dev/pts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
            0o755,
        ),
        link("pts/ptmx", "/dev/ptmx"),
        fs(
            "tmpfs",
            "/dev/shm",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
            0o1777,
        ),
        link("/proc/self/fd", "/dev/fd"),
        link("/proc/self/fd/0", "/dev/stdin"),
        link("/proc/self/fd/1", "/dev/stdout"),
        link("/proc/self/fd/2", "/dev/stderr"),
    ]);
    if opts.host_files {
        for rel in HOST_FILES {
            let host = Path::new("/").join(rel);
            if !host.is_file() {
                log::info!("{}: the host has none to bind in", host.display());
                continue;
            }
            // Over the tree's own regular file; where an image has none, over an empty
            // one made in its overlay. A --rootfs tree is never written to for this.
            let ours = std::fs::symlink_metadata(tree.join(rel));
            let target = match ours {
                Ok(m) if m.file_type().is_file() => Target::Existing {
                    missing: format!("{}: vanished from the tree", host.display()),
                },
                Err(_)
                    if opts.overlay
                        && std::fs::symlink_metadata(tree.join("etc"))
                            .map_or(true, |m| m.is_dir()) =>
                {
                    Target::Create
                }
                _ => {
                    log::info!(
                        "{}: the root filesystem has no regular file there; the host's is not bound in",
                        host.display()
                    );
                    continue;
                }
            };
            l.push(MountSpec::Bind(BindSpec {
                src: host.clone().into_os_string(),
                dst: host.clone().into_os_string(),
                read_only: true,
                target,
                what: format!("bind the host's {}", host.display()),
            }));
        }
    }
    for b in binds {
        let src = Path::new(&b.src);
        if !src.exists() {
            anyhow::bail!("--bind {}: no such file or directory", src.display());
        }
        let dst = Path::new(&b.dst);
        l.push(MountSpec::Bind(BindSpec {
            src: b.src.clone(),
            dst: b.dst.clone(),
            read_only: b.read_only,
            // An image's tree is not written to: the target is made in its overlay.
            target: if opts.overlay {
                Target::Create
            } else {
                Target::Existing {
                    missing: format!(
                        "--bind target {} does not exist in the root filesystem (create it first)",
                        dst.display()
                    ),
                }
            },
            what: format!("bind {} on {}", src.display(), dst.display()),
        }));
    }
    Ok(l)
}
