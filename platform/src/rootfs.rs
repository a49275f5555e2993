//! The guest's root filesystem (`--rootfs`): what is mounted where, as a plan of steps
//! made before the fork and carried out by the pid namespace's init in its own mount
//! namespace (`sys::spawn`), where it may only make async-signal-safe calls.
//!
//! In order: the tree is bound onto itself (so it is a mount point); `/proc` of the new
//! pid namespace; the host's `/sys`, read-only; a small `/dev` on a tmpfs (the host's
//! null, zero, full, random, urandom and tty bound in, since a user namespace may not
//! create device nodes; a new devpts instance with `/dev/ptmx`; `/dev/shm`; the fd
//! links); the host's `/etc/resolv.conf` and `/etc/hosts` over the tree's (read-only,
//! only where the tree has them as regular files); the `--bind`s; then `pivot_root`
//! into the tree and the old root detached, so nothing of the host's tree stays
//! reachable; and the host name. The persona's /proc files are put in place after.
//!
//! Mount points the tree lacks (`proc`, `sys`, `dev`) are created in it; nothing else in
//! the tree is written to.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::RootSetup;

/// One step of the plan.
#[derive(Debug)]
pub(crate) enum Step {
    /// `mount(src, dst, fstype, flags, data)`.
    Mount {
        src: Option<CString>,
        dst: CString,
        fstype: Option<CString>,
        flags: u64,
        data: Option<CString>,
    },
    /// `mkdir(path, mode)`; an existing directory is fine.
    Mkdir { path: CString, mode: u32 },
    /// Creates an empty file to bind a device node over.
    Touch { path: CString },
    /// `symlink(target, path)`.
    Symlink { target: CString, path: CString },
    /// `chdir(dir)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`.
    Pivot { dir: CString },
    /// `sethostname(name)` (the init has its own UTS namespace).
    Hostname { name: CString },
}

/// The steps, each with what it does (for the error message when it fails).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) steps: Vec<(Step, String)>,
    /// The init must unshare a UTS namespace too.
    pub(crate) new_uts: bool,
}

/// The device nodes bound from the host.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{p:?} contains NUL")))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `inside` (an absolute guest path) under `root`, refusing `..` and symbolic links
/// on the way: a bind target must be where the guest will see it.
fn in_tree(root: &Path, inside: &OsStr) -> io::Result<PathBuf> {
    let inside = Path::new(inside);
    if !inside.is_absolute() {
        return Err(invalid(format!(
            "{inside:?}: a path inside the root filesystem must be absolute"
        )));
    }
    let mut out = root.to_path_buf();
    for comp in inside.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                out.push(n);
                if std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(invalid(format!(
                        "{inside:?} goes through a symbolic link in the root filesystem; give the path it points to"
                    )));
                }
            }
            _ => {
                return Err(invalid(format!(
                    "{inside:?}: no `..` in paths inside the root filesystem"
                )))
            }
        }
    }
    Ok(out)
}

/// The mount flags a read-only remount of a bind of `src` must keep (inside a user
/// namespace the kernel refuses to drop the flags the original mount is locked with).
fn locked_flags(src: &Path) -> u64 {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(src) else { return 0 };
    let f = st.flags();
    let mut flags = 0;
    if f.contains(FsFlags::ST_NOSUID) {
        flags |= libc::MS_NOSUID;
    }
    if f.contains(FsFlags::ST_NODEV) {
        flags |= libc::MS_NODEV;
    }
    if f.contains(FsFlags::ST_NOEXEC) {
        flags |= libc::MS_NOEXEC;
    }
    flags
}

impl Plan {
    fn push(&mut self, step: Step, what: impl Into<String>) {
        self.steps.push((step, what.into()));
    }

    fn bind(&mut self, src: &Path, dst: &Path, read_only: bool, what: &str) -> io::Result<()> {
        self.push(
            Step::Mount {
                src: Some(c(src)?),
                dst: c(dst)?,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
            },
            what.to_owned(),
        );
        if read_only {
            self.push(
                Step::Mount {
                    src: None,
                    dst: c(dst)?,
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked_flags(src),
                    data: None,
                },
                format!("{what} (read-only)"),
            );
        }
        Ok(())
    }

    fn mount(
        &mut self,
        fstype: &str,
        dst: &Path,
        flags: u64,
        data: &str,
        what: &str,
    ) -> io::Result<()> {
        let fs = CString::new(fstype).map_err(|_| invalid("fstype".into()))?;
        self.push(
            Step::Mount {
                src: Some(fs.clone()),
                dst: c(dst)?,
                fstype: Some(fs),
                flags,
                data: (!data.is_empty())
                    .then(|| CString::new(data).map_err(|_| invalid("mount data".into())))
                    .transpose()?,
            },
            what.to_owned(),
        );
        Ok(())
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.push(
            Step::Mkdir {
                path: c(path)?,
                mode,
            },
            format!("create {}", path.display()),
        );
        Ok(())
    }

    fn symlink(&mut self, target: &str, path: &Path) -> io::Result<()> {
        let target = CString::new(target).map_err(|_| invalid("link target".into()))?;
        self.push(
            Step::Symlink {
                target,
                path: c(path)?,
            },
            format!("link {}", path.display()),
        );
        Ok(())
    }
}

/// Checks `setup` and turns it into the init's plan. Errors name what is wrong with the
/// user's input (a missing tree, a bind source or target that does not exist).
pub(crate) fn plan(setup: &RootSetup) -> io::Result<Plan> {
    let root = PathBuf::from(&setup.dir);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid(format!("{}: not a directory", root.display()))),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", root.display()))),
    }
    let mut p = Plan {
        new_uts: setup.hostname.is_some(),
        ..Plan::default()
    };
    let root = if let Some(scratch) = &setup.overlay {
        // The tree stays as it is: the guest sees an overlay of it, its writes land in
        // the scratch directory (which the caller removes after the run).
        let scratch = PathBuf::from(scratch);
        let (upper, work, merged) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d)?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            root.display(),
            upper.display(),
            work.display()
        );
        if data.contains(',')
            && [&root, &upper, &work]
                .iter()
                .any(|d| d.to_string_lossy().contains(','))
        {
            return Err(invalid(format!(
                "{}: an overlay cannot use paths with commas",
                root.display()
            )));
        }
        p.mount(
            "overlay",
            &merged,
            0,
            &data,
            "mount an overlay over the image's tree",
        )?;
        merged
    } else {
        p.bind(&root, &root, false, "bind the root filesystem onto itself")?;
        root
    };
    let proc_dir = root.join("proc");
    p.mkdir(&proc_dir, 0o555)?;
    p.mount(
        "proc",
        &proc_dir,
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
        "mount /proc in the new root",
    )?;
    let sys_dir = root.join("sys");
    p.mkdir(&sys_dir, 0o555)?;
    p.bind(Path::new("/sys"), &sys_dir, true, "bind the host's /sys")?;
    let dev = root.join("dev");
    p.mkdir(&dev, 0o755)?;
    p.mount(
        "tmpfs",
        &dev,
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=755,size=65536k",
        "mount a tmpfs on /dev",
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let node = dev.join(name);
        p.push(
            Step::Touch { path: c(&node)? },
            format!("create /dev/{name}"),
        );
        p.bind(&host, &node, false, &format!("bind the host's /dev/{name}"))?;
    }
    let pts = dev.join("pts");
    p.mkdir(&pts, 0o755)?;
    p.mount(
        "devpts",
        &pts,
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
        "mount a devpts instance on /dev/pts",
    )?;
    p.symlink("pts/ptmx", &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    p.mkdir(&shm, 0o1777)?;
    p.mount(
        "tmpfs",
        &shm,
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
        "mount a tmpfs on /dev/shm",
    )?;
    p.symlink("/proc/self/fd", &dev.join("fd"))?;
    for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        p.symlink(&format!("/proc/self/fd/{i}"), &dev.join(name))?;
    }
    if setup.host_files {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            let target = root.join(&f[1..]);
            let is_file = std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_file());
            if is_file && Path::new(f).exists() {
                p.bind(Path::new(f), &target, true, &format!("bind the host's {f}"))?;
            } else {
                log::info!("{f}: the root filesystem has no regular file there; the host's is not bound in");
            }
        }
    }
    for b in &setup.binds {
        let src = PathBuf::from(&b.src);
        if !src.exists() {
            return Err(invalid(format!(
                "--bind {}: no such file or directory",
                src.display()
            )));
        }
        let dst = in_tree(&root, &b.dst)?;
        if !dst.exists() {
            return Err(invalid(format!(
                "--bind target {} does not exist in the root filesystem (create it first)",
                Path::new(&b.dst).display()
            )));
        }
        p.bind(
            &src,
            &dst,
            b.read_only,
            &format!("bind {} on {}", src.display(), Path::new(&b.dst).display()),
        )?;
    }
    p.push(
        Step::Pivot { dir: c(&root)? },
        "pivot_root into the root filesystem",
    );
    if let Some(name) = &setup.hostname {
        let name = CString::new(name.as_bytes()).map_err(|_| invalid("hostname".into()))?;
        p.push(Step::Hostname { name }, "set the host name");
    }
    Ok(p)
}

/// Where `program` may be inside the tree, in the order `execvp` tries them: itself if
/// it has a slash, else each directory of `path`.
pub(crate) fn candidates(program: &OsStr, path: &OsStr) -> Vec<OsString> {
    if program.as_bytes().contains(&b'/') {
        return vec![program.to_owned()];
    }
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|d| {
            let d = if d.is_empty() { b".".as_slice() } else { d };
            Path::new(OsStr::from_bytes(d))
                .join(program)
                .into_os_string()
        })
        .collect()
}

/// The first of `program`'s candidates that exists in the tree at `root`, as the guest
/// names it (relative candidates are taken from the tree's `/`).
pub fn find_in_tree(root: &Path, program: &OsStr, path: &OsStr) -> Option<PathBuf> {
    candidates(program, path).into_iter().find_map(|c| {
        let guest = Path::new("/").join(&c);
        let inside = root.join(guest.strip_prefix("/").ok()?);
        // `exists` follows links from here; a link inside the tree may point elsewhere,
        // which is only a hint for the platform choice, not a lookup the guest relies on.
        (inside.exists() || inside.symlink_metadata().is_ok()).then_some(guest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
