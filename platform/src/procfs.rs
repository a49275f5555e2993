//! Every procfs the guest sees when it starts: besides the `/proc` the namespace's init
//! mounts, the guest's mount namespace is a copy of compatrun's, so any `proc` mounted
//! elsewhere before the run (the chroot build-root habit: `mount -t proc proc tree/proc;
//! chroot tree ...`) is there too, showing the host's kernel. The synthetic files go over
//! their counterparts in each of those as well. This module finds them (before the fork,
//! from `/proc/self/mountinfo`) and says where each synthetic file goes in them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::layout::RootSetup;

/// The mount points of every `proc` file system in `mountinfo` (the text of
/// `/proc/self/mountinfo`), in mount order, with the kernel's octal escapes undone.
pub fn proc_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            let fstype = fs.split_whitespace().next()?;
            (fstype == "proc").then(|| unescape(fields.split_whitespace().nth(4)?))?
        })
        .collect()
}

/// Undoes mountinfo's escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> Option<PathBuf> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok()?;
            out.push(u8::from_str_radix(oct, 8).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// Where the guest sees each of compatrun's `proc` mounts `mounts` (host paths), other
/// than the `/proc` compatrun mounts for it: with no root filesystem, where they are;
/// with `root` (bound recursively onto itself, so mounts below it come along), those
/// below the tree, as paths inside it; under an image's overlay, none (an overlay does
/// not carry the mounts of its lower directory).
pub fn guest_proc_mounts(mounts: &[PathBuf], root: Option<&RootSetup>) -> Vec<PathBuf> {
    let inside = |m: &Path| -> Option<PathBuf> {
        match root {
            None => Some(m.to_path_buf()),
            Some(r) if r.overlay.is_some() => None,
            Some(r) => m
                .strip_prefix(&r.dir)
                .ok()
                .map(|rel| Path::new("/").join(rel)),
        }
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for m in mounts.iter().filter_map(|m| inside(m)) {
        // The init's own /proc is mounted fresh over /proc; anything below /proc is
        // hidden by it.
        if m.starts_with("/proc") || out.contains(&m) {
            continue;
        }
        out.push(m);
    }
    out
}

/// Where the synthetic file `file` (a path under `/proc`) goes in the `proc` mounted at
/// `mount`; `None` for a file outside `/proc`.
pub fn retarget(file: &Path, mount: &Path) -> Option<PathBuf> {
    let rel = file.strip_prefix("/proc").ok()?;
    Some(mount.join(rel))
}

/// For each synthetic file, the extra targets in the other `proc` mounts the guest will
/// see (read from compatrun's own mount table now; empty if it cannot be read).
pub fn extra_targets(files: &[(OsString, Vec<u8>)], root: Option<&RootSetup>) -> Vec<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = guest_proc_mounts(&proc_mount_points(&mountinfo), root);
    files
        .iter()
        .map(|(file, _)| {
            mounts
                .iter()
                .filter_map(|m| retarget(Path::new(file), m))
                .collect()
        })
        .collect()
}

/// Whether `dir` is `path` or one of its ancestors (a tmpfs over `dir` would hide it).
pub fn covers(dir: &Path, path: &Path) -> bool {
    path.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 23 0:40 / /proc/sys/fs/binfmt_misc rw,relatime shared:13 - autofs systemd-1 rw
30 22 0:50 / /srv/tree/proc rw,relatime shared:20 - proc proc rw
31 22 0:51 / /srv/my\\040tree/proc rw,relatime shared:21 - proc none rw
32 22 0:52 / /srv/tree/sys rw,relatime shared:22 - sysfs sysfs rw
33 22 0:53 / /srv/tree/var/chroot/proc rw,relatime - proc proc rw
";

    #[test]
    fn finds_every_proc_mount_with_escapes_undone() {
        assert_eq!(
            proc_mount_points(MOUNTINFO),
            [
                "/proc",
                "/srv/tree/proc",
                "/srv/my tree/proc",
                "/srv/tree/var/chroot/proc"
            ]
            .map(PathBuf::from)
        );
    }

    fn root(dir: &str, overlay: bool) -> RootSetup {
        RootSetup {
            dir: dir.into(),
            layout: Vec::new(),
            hostname: None,
            path: "/bin".into(),
            overlay: overlay.then(|| "/scratch".into()),
            workdir: None,
        }
    }

    #[test]
    fn the_guest_sees_them_where_its_root_puts_them() {
        let mounts = proc_mount_points(MOUNTINFO);
        assert_eq!(
            guest_proc_mounts(&mounts, None),
            [
                "/srv/tree/proc",
                "/srv/my tree/proc",
                "/srv/tree/var/chroot/proc"
            ]
            .map(PathBuf::from)
        );
        // Inside the tree: its own /proc is mounted fresh; the deeper one stays.
        assert_eq!(
            guest_proc_mounts(&mounts, Some(&root("/srv/tree", false))),
            [PathBuf::from("/var/chroot/proc")]
        );
        assert!(guest_proc_mounts(&mounts, Some(&root("/srv/tree", true))).is_empty());
    }

    #[test]
    fn files_are_retargeted_below_each_mount() {
        assert_eq!(
            retarget(
                Path::new("/proc/sys/kernel/osrelease"),
                Path::new("/t/proc")
            ),
            Some(PathBuf::from("/t/proc/sys/kernel/osrelease"))
        );
        assert_eq!(retarget(Path::new("/etc/x"), Path::new("/t/proc")), None);
        assert!(covers(Path::new("/tmp"), Path::new("/tmp/t/proc/version")));
        assert!(!covers(Path::new("/tmp"), Path::new("/tmpx/proc/version")));
    }
}
