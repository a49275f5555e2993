//! The guest's root filesystem (`--rootfs`): what is mounted where, as a plan of steps
//! made before the fork and carried out by the pid namespace's init in its own mount
//! namespace (`sys::spawn`), where it may only make async-signal-safe calls.
//!
//! In order: the tree is bound onto itself (so it is a mount point), or for an image an
//! overlay is mounted over it; `/proc` of the new pid namespace; the host's `/sys`,
//! read-only down to every mount below it; a small `/dev` on a tmpfs (the host's null,
//! zero, full, random, urandom and tty bound in, since a user namespace may not create
//! device nodes; a new devpts instance with `/dev/ptmx`; `/dev/shm`; the fd links); the
//! host's `/etc/resolv.conf` and `/etc/hosts` over the tree's (read-only, only where the
//! tree has them as regular files, or in an image's overlay where it has none); the
//! `--bind`s; then `pivot_root` into the tree and the old root detached, so nothing of
//! the host's tree stays reachable; and the host name. The persona's /proc files are
//! put in place after.
//!
//! Mount points a `--rootfs` tree lacks (`proc`, `sys`, `dev`) are created in it;
//! nothing else in it is written to: a missing `--bind` target is an error. Under an
//! image's overlay, missing targets are created in the overlay, which the run discards.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::command::RootSetup;

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
    /// Makes the mount at `dst` and every mount below it read-only (`mount_setattr`);
    /// where the kernel lacks that call (before 5.12), remounts `dst` alone with
    /// `fallback` (the flags the bound mount is locked with kept).
    ReadOnly { dst: CString, fallback: u64 },
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
                Step::ReadOnly {
                    dst: c(dst)?,
                    fallback: libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | locked_flags(src),
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

    /// Creates `rel` (relative to the tree) in the overlay mounted at `root`: every
    /// missing directory on the way, and the last component as a directory or, unless
    /// `dir`, an empty file. `tree` is the overlay's lower layer, which the merged view
    /// equals when the plan starts (its upper layer is new and empty).
    fn create_in_overlay(
        &mut self,
        tree: &Path,
        root: &Path,
        rel: &Path,
        dir: bool,
    ) -> io::Result<()> {
        let mut sub = PathBuf::new();
        let mut missing = false;
        let mut comps = rel.components().peekable();
        while let Some(comp) = comps.next() {
            sub.push(comp);
            let last = comps.peek().is_none();
            if !missing {
                match std::fs::symlink_metadata(tree.join(&sub)) {
                    Ok(m) if m.is_dir() && !last => continue,
                    Ok(_) if last => return Ok(()),
                    Ok(_) => {
                        return Err(invalid(format!(
                            "/{}: not a directory in the image",
                            sub.display()
                        )))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => missing = true,
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("/{}: {e}", sub.display())))
                    }
                }
            }
            let path = root.join(&sub);
            if last && !dir {
                self.push(
                    Step::Touch { path: c(&path)? },
                    format!("create /{} in the overlay", sub.display()),
                );
            } else {
                self.push(
                    Step::Mkdir {
                        path: c(&path)?,
                        mode: 0o755,
                    },
                    format!("create /{} in the overlay", sub.display()),
                );
            }
        }
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
    // `tree` is the directory as it is now, which every check looks at; `root` is where
    // the guest's `/` is mounted (the tree itself, or the overlay over it).
    let tree = PathBuf::from(&setup.dir);
    match std::fs::metadata(&tree) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid(format!("{}: not a directory", tree.display()))),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", tree.display()))),
    }
    let overlay = setup.overlay.is_some();
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
            tree.display(),
            upper.display(),
            work.display()
        );
        if data.contains(',')
            && [&tree, &upper, &work]
                .iter()
                .any(|d| d.to_string_lossy().contains(','))
        {
            return Err(invalid(format!(
                "{}: an overlay cannot use paths with commas",
                tree.display()
            )));
        }
        p.mount(
            "overlay",
            &merged,
            0,
            &data,
            "mount an overlay over the image's tree (overlayfs is needed; an ordinary user \
             needs Linux 5.11 or later, and the cache must not itself be on an overlay: \
             set COMPATRUN_CACHE_DIR to a directory on a local file system)",
        )?;
        merged
    } else {
        p.bind(&tree, &tree, false, "bind the root filesystem onto itself")?;
        tree.clone()
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
        for rel in ["etc/resolv.conf", "etc/hosts"] {
            let host = Path::new("/").join(rel);
            if !host.is_file() {
                log::info!("{}: the host has none to bind in", host.display());
                continue;
            }
            // Over the tree's own regular file; where an image has none, over an empty
            // one made in its overlay. A --rootfs tree is never written to for this.
            let mut fine =
                std::fs::symlink_metadata(tree.join(rel)).is_ok_and(|m| m.file_type().is_file());
            if !fine && overlay && std::fs::symlink_metadata(tree.join(rel)).is_err() {
                // (It fails, having planned nothing, only where /etc is no directory.)
                fine = p
                    .create_in_overlay(&tree, &root, Path::new(rel), false)
                    .is_ok();
            }
            if fine {
                let what = format!("bind the host's {}", host.display());
                p.bind(&host, &root.join(rel), true, &what)?;
            } else {
                log::info!(
                    "{}: the root filesystem has no regular file there; the host's is not bound in",
                    host.display()
                );
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
        let in_the_tree = in_tree(&tree, &b.dst)?;
        let rel = in_the_tree.strip_prefix(&tree).unwrap_or(Path::new(""));
        let dst = root.join(rel);
        if !in_the_tree.exists() {
            if !overlay {
                return Err(invalid(format!(
                    "--bind target {} does not exist in the root filesystem (create it first)",
                    Path::new(&b.dst).display()
                )));
            }
            // An image's tree is not written to: the target is made in its overlay.
            p.create_in_overlay(&tree, &root, rel, src.is_dir())?;
        }
        p.bind(
            &src,
            &dst,
            b.read_only,
            &format!("bind {} on {}", src.display(), Path::new(&b.dst).display()),
        )?;
    }
    if let (true, Some(dir)) = (overlay, &setup.workdir) {
        // As container engines do: a working directory the image lacks is made (in the
        // overlay). Where it cannot be, the chdir says why.
        if let Ok(in_the_tree) = in_tree(&tree, dir) {
            let rel = in_the_tree.strip_prefix(&tree).unwrap_or(Path::new(""));
            if !in_the_tree.exists() && !rel.as_os_str().is_empty() {
                let _ = p.create_in_overlay(&tree, &root, rel, true);
            }
        }
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

    #[test]
    fn an_overlay_gets_what_a_tree_is_refused() {
        let base = std::env::temp_dir().join(format!("compatrun-plan-{}", std::process::id()));
        let (tree, scratch) = (base.join("tree"), base.join("scratch"));
        std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        let mut setup = RootSetup {
            dir: tree.clone().into_os_string(),
            binds: vec![crate::command::Bind {
                src: base.clone().into_os_string(),
                dst: "/data/x".into(),
                read_only: false,
            }],
            host_files: true,
            hostname: None,
            path: "/bin".into(),
            overlay: None,
            workdir: Some("/w".into()),
        };
        // A tree is not written to: a missing bind target is the user's to make.
        let refused = plan(&setup).expect_err("missing target");
        assert!(refused.to_string().contains("does not exist"), "{refused}");
        setup.overlay = Some(scratch.clone().into_os_string());
        let p = plan(&setup).expect("plan over an overlay");
        let steps: Vec<&str> = p.steps.iter().map(|(_, what)| what.as_str()).collect();
        let mut wanted = vec![
            "create /data in the overlay",
            "create /data/x in the overlay",
            "create /w in the overlay",
        ];
        if Path::new("/etc/resolv.conf").is_file() {
            wanted.push("create /etc/resolv.conf in the overlay");
        }
        for w in wanted {
            assert!(steps.contains(&w), "{w:?} missing from {steps:?}");
        }
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
}
