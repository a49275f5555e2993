//! What a guest's root filesystem is to be, as a front end describes it: the tree, and
//! the layout of mounts, binds and links inside it. [`crate::rootfs`] checks a
//! description and carries it out; which devices, host files or binds a guest gets is
//! the front end's choice.

use std::ffi::OsString;

/// The guest's root filesystem, set up by the pid namespace's init: the tree is mounted
/// (bound onto itself, or an overlay over it), then `layout` is carried out in order, then
/// `pivot_root`. What goes into `layout` (which devices, host files, binds) is the front
/// end's choice; see [`crate::rootfs`] for how each entry is carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSetup {
    /// The directory that becomes `/`.
    pub dir: OsString,
    /// What is mounted, made or linked inside the tree, in order.
    pub layout: Vec<MountSpec>,
    /// The guest's host name, in its own UTS namespace.
    pub hostname: Option<OsString>,
    /// The PATH the program is looked up on inside the tree (when it has no slash).
    pub path: OsString,
    /// Keep `dir` unchanged: the guest's writes go to an overlay whose upper and work
    /// directories are made in this (empty, existing) directory.
    pub overlay: Option<OsString>,
    /// The guest's working directory (absolute, inside the tree): under an overlay it is
    /// made there when the tree lacks it, as container engines do.
    pub workdir: Option<OsString>,
}

/// One entry of a root filesystem's layout, carried out in order after the tree is
/// mounted. Paths (`dst`) are absolute paths as the guest sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSpec {
    /// `mount(source, dst, fstype, flags, data)`; `dst`'s missing directories are made
    /// first (the last with `mode`).
    Fs {
        /// The file system type (`proc`, `tmpfs`, `devpts`, ...).
        fstype: String,
        /// The mount source (usually the type again).
        source: String,
        /// Where.
        dst: OsString,
        /// `MS_*` flags.
        flags: u64,
        /// File-system-specific options (`mode=755`), empty for none.
        data: String,
        /// The mode of a directory made for it.
        mode: u32,
    },
    /// Bind a host path.
    Bind(BindSpec),
    /// Make the mount at `dst` and every mount below it read-only.
    ReadOnly {
        /// Where.
        dst: OsString,
    },
    /// Bind `dst` onto itself (so it is a mount point of its own) and make that
    /// read-only down to every mount below it; a `dst` that does not exist is skipped.
    /// For paths below a file system the layout mounted (`/proc/sys`), whose existence
    /// is judged on the host.
    ReadOnlyPath {
        /// Where.
        dst: OsString,
    },
    /// Hide what is at `dst` (an OCI `linux.maskedPaths` entry): a directory under an
    /// empty read-only tmpfs, anything else under `/dev/null`; a `dst` that does not
    /// exist is skipped. Judged where the guest will see it: in the tree, or on the host
    /// below a file system the layout mounted (`/proc/kcore`).
    Mask {
        /// Where.
        dst: OsString,
    },
    /// `mount(NULL, dst, NULL, MS_REMOUNT | flags, NULL)`: changes the flags of the
    /// mount at `dst` (with `MS_BIND` in `flags`, of that bind alone).
    Remount {
        /// Where.
        dst: OsString,
        /// `MS_*` flags.
        flags: u64,
    },
    /// A symbolic link at `dst` pointing to `target` (an existing one is kept).
    Symlink {
        /// What it points to.
        target: OsString,
        /// Where.
        dst: OsString,
    },
}

/// A host path bound into the tree (recursively, as `mount --rbind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSpec {
    /// The host path.
    pub src: OsString,
    /// Where it appears (absolute, as the guest sees it).
    pub dst: OsString,
    /// Read-only, down to every mount below it.
    pub read_only: bool,
    /// What to do when the tree lacks `dst`.
    pub target: Target,
    /// What the bind is, for error messages (`--bind /srv on /data`).
    pub what: String,
}

/// What a bind does when its target is missing in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The target must exist; otherwise the run fails with this message.
    Existing {
        /// The error message.
        missing: String,
    },
    /// A missing target is made: a directory for a directory source, else an empty file.
    Create,
}
