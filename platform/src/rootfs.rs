//! Carrying out a root filesystem: the tree is mounted (bound onto itself, or an overlay
//! over it), then the front end's layout, a list of [`MountSpec`]s, is turned into a plan
//! of steps before the fork and carried out in order by the pid namespace's init in its own
//! mount namespace (`sys::spawn`, where it may only make async-signal-safe calls), then
//! `pivot_root` into the tree with the old root detached, so nothing of the host's tree
//! stays reachable, and the host name. The persona's /proc files are put in place after.
//!
//! This module knows nothing of which devices, host files or binds a guest should get:
//! the front ends (the command line, an OCI bundle) choose them. It checks what it is
//! given: every path inside the tree is absolute, without `..`, and (unless it lies below
//! a file system the layout itself mounted) does not go through a symbolic link in the
//! tree, since a link there would be followed on the host.
//!
//! A mount point's missing directories are made; a bind's missing target is an error, or
//! made (an empty file or a directory, as its source), as its [`Target`] says. Under an
//! image's overlay, everything made lands in the overlay, which the run discards.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::layout::{MountSpec, RootSetup, Target};

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
        self.mount_from(fstype, fstype, dst, flags, data, what)
    }

    fn mount_from(
        &mut self,
        source: &str,
        fstype: &str,
        dst: &Path,
        flags: u64,
        data: &str,
        what: &str,
    ) -> io::Result<()> {
        let cs = |x: &str, name: &str| {
            CString::new(x).map_err(|_| invalid(format!("{what}: the {name} contains NUL")))
        };
        self.push(
            Step::Mount {
                src: Some(cs(source, "source")?),
                dst: c(dst)?,
                fstype: Some(cs(fstype, "type")?),
                flags,
                data: (!data.is_empty())
                    .then(|| cs(data, "options"))
                    .transpose()?,
            },
            what.to_owned(),
        );
        Ok(())
    }

    /// `rel`'s directories under `root`, each made if missing (the last with `mode`).
    fn mkdir_all(&mut self, root: &Path, rel: &Path, mode: u32) -> io::Result<()> {
        let mut sub = root.to_path_buf();
        let mut comps = rel.components().peekable();
        while let Some(comp) = comps.next() {
            sub.push(comp);
            let m = if comps.peek().is_none() { mode } else { 0o755 };
            self.push(
                Step::Mkdir {
                    path: c(&sub)?,
                    mode: m,
                },
                format!("create {}", sub.display()),
            );
        }
        Ok(())
    }

    /// Makes `path` as a directory or an empty file (an existing one is kept).
    fn make(&mut self, path: &Path, dir: bool) -> io::Result<()> {
        let what = format!("create {}", path.display());
        if dir {
            self.push(
                Step::Mkdir {
                    path: c(path)?,
                    mode: 0o755,
                },
                what,
            );
        } else {
            self.push(Step::Touch { path: c(path)? }, what);
        }
        Ok(())
    }

    /// Creates `rel` (relative to the tree) in the tree or overlay mounted at `root`: every
    /// missing directory on the way, and the last component as a directory or, unless
    /// `dir`, an empty file. `tree` is the tree as it is now, which the mounted root (the
    /// tree itself, or an overlay with a new, empty upper layer) equals when the plan starts.
    fn create_missing(
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
                    format!("create /{} in the root filesystem", sub.display()),
                );
            } else {
                self.push(
                    Step::Mkdir {
                        path: c(&path)?,
                        mode: 0o755,
                    },
                    format!("create /{} in the root filesystem", sub.display()),
                );
            }
        }
        Ok(())
    }

    fn symlink(&mut self, target: &OsStr, path: &Path) -> io::Result<()> {
        let target = CString::new(target.as_bytes()).map_err(|_| invalid("link target".into()))?;
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

/// Paths of the file systems a plan has mounted so far (relative to the tree): what lies
/// below them is theirs, not the tree's.
#[derive(Default)]
struct Mounted(Vec<PathBuf>);

impl Mounted {
    fn covers(&self, rel: &Path) -> bool {
        self.0
            .iter()
            .any(|m| rel.starts_with(m) && rel != m.as_path())
    }
}

/// `dst` (an absolute guest path) relative to the tree, with no `..`.
/// Where to look at `dst` (`rel` in the tree) before the guest exists, for a spec that
/// depends on what is there: below a file system the plan mounts, on the host (a fresh
/// /proc or /sys has the host's entries); elsewhere in the tree.
fn judged(mounted: &Mounted, tree: &Path, dst: &OsStr, rel: &Path) -> io::Result<PathBuf> {
    if mounted.covers(rel) {
        Ok(PathBuf::from(dst))
    } else {
        in_tree(tree, dst)
    }
}

fn relative(dst: &OsStr) -> io::Result<PathBuf> {
    let path = Path::new(dst);
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{path:?}: a path inside the root filesystem must be absolute"
        )));
    }
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(invalid(format!(
                    "{path:?}: no `..` in paths inside the root filesystem"
                )))
            }
        }
    }
    Ok(out)
}

/// Checks `setup` and turns it into the init's plan. Errors name what is wrong with the
/// input (a missing tree, a bind source or target that does not exist).
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
        if [&tree, &upper, &work]
            .iter()
            .any(|d| d.to_string_lossy().contains(','))
        {
            return Err(invalid(format!(
                "{}: an overlay cannot use paths with commas",
                tree.display()
            )));
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            tree.display(),
            upper.display(),
            work.display()
        );
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
    let mut mounted = Mounted::default();
    // Directories a Mask hid: what lies below them is gone for later specs.
    let mut masked: Vec<PathBuf> = Vec::new();
    for spec in &setup.layout {
        match spec {
            MountSpec::Fs {
                fstype,
                source,
                dst,
                flags,
                data,
                mode,
            } => {
                let rel = relative(dst)?;
                let fresh = mounted.covers(&rel);
                if !fresh {
                    in_tree(&tree, dst)?;
                }
                p.mkdir_all(&root, &rel, *mode)?;
                let what = format!("mount {fstype} on {}", Path::new(dst).display());
                p.mount_from(source, fstype, &root.join(&rel), *flags, data, &what)?;
                mounted.0.push(rel);
            }
            MountSpec::Bind(b) => {
                let src = PathBuf::from(&b.src);
                if !src.exists() {
                    return Err(invalid(format!(
                        "{}: {}: no such file or directory",
                        b.what,
                        src.display()
                    )));
                }
                let rel = relative(&b.dst)?;
                let dst = root.join(&rel);
                if mounted.covers(&rel) {
                    // Below a file system this plan mounted: the target is made there.
                    if let Some(parent) = rel.parent() {
                        p.mkdir_all(&root, parent, 0o755)?;
                    }
                    p.make(&dst, src.is_dir())?;
                } else {
                    let in_the_tree = in_tree(&tree, &b.dst)?;
                    if !in_the_tree.exists() {
                        match &b.target {
                            Target::Existing { missing } => return Err(invalid(missing.clone())),
                            Target::Create => p.create_missing(&tree, &root, &rel, src.is_dir())?,
                        }
                    }
                }
                p.bind(&src, &dst, b.read_only, &b.what)?;
            }
            MountSpec::ReadOnly { dst } => {
                let rel = relative(dst)?;
                if !mounted.covers(&rel) {
                    in_tree(&tree, dst)?;
                }
                let dst = root.join(&rel);
                p.push(
                    Step::ReadOnly {
                        dst: c(&dst)?,
                        fallback: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    },
                    format!("make {} read-only", Path::new(&rel).display()),
                );
            }
            MountSpec::Mask { dst } => {
                let rel = relative(dst)?;
                if masked.iter().any(|m| rel.starts_with(m)) {
                    continue; // hidden already, under an earlier mask
                }
                let at = root.join(&rel);
                let what = format!("mask {}", Path::new(dst).display());
                match std::fs::metadata(judged(&mounted, &tree, dst, &rel)?) {
                    Ok(m) if m.is_dir() => {
                        p.mount_from("tmpfs", "tmpfs", &at, libc::MS_RDONLY, "size=0", &what)?;
                        masked.push(rel);
                    }
                    Ok(_) => p.bind(Path::new("/dev/null"), &at, false, &what)?,
                    Err(_) => {}
                }
            }
            MountSpec::ReadOnlyPath { dst } => {
                let rel = relative(dst)?;
                if judged(&mounted, &tree, dst, &rel)?.exists() {
                    let at = root.join(&rel);
                    let what = format!("make {} read-only", Path::new(dst).display());
                    p.push(
                        Step::Mount {
                            src: Some(c(&at)?),
                            dst: c(&at)?,
                            fstype: None,
                            flags: libc::MS_BIND | libc::MS_REC,
                            data: None,
                        },
                        what.clone(),
                    );
                    p.push(
                        Step::ReadOnly {
                            dst: c(&at)?,
                            fallback: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        },
                        what,
                    );
                }
            }
            MountSpec::Remount { dst, flags } => {
                let rel = relative(dst)?;
                if !mounted.covers(&rel) {
                    in_tree(&tree, dst)?;
                }
                p.push(
                    Step::Mount {
                        src: None,
                        dst: c(&root.join(&rel))?,
                        fstype: None,
                        flags: libc::MS_REMOUNT | flags,
                        data: None,
                    },
                    format!("remount {}", Path::new(dst).display()),
                );
            }
            MountSpec::Symlink { target, dst } => {
                let rel = relative(dst)?;
                if !mounted.covers(&rel) {
                    in_tree(&tree, dst)?;
                }
                p.symlink(target, &root.join(&rel))?;
            }
        }
    }
    if let (true, Some(dir)) = (overlay, &setup.workdir) {
        // As container engines do: a working directory the image lacks is made (in the
        // overlay). Where it cannot be, the chdir says why.
        if let Ok(in_the_tree) = in_tree(&tree, dir) {
            let rel = in_the_tree.strip_prefix(&tree).unwrap_or(Path::new(""));
            if !in_the_tree.exists() && !rel.as_os_str().is_empty() {
                let _ = p.create_missing(&tree, &root, rel, true);
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
mod tests;
