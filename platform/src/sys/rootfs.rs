//! Carrying out a root filesystem plan (`crate::rootfs`) in the pid namespace's init,
//! between fork and the guest's exec: async-signal-safe system calls only, on strings
//! prepared before the fork.

use crate::rootfs::{Plan, Step};

/// `struct mount_attr` of linux/mount.h (the `libc` crate does not export it).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY` of linux/mount.h.
const MOUNT_ATTR_RDONLY: u64 = 1;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Runs every step of `plan` in order; the first failure stops it with the step's index
/// and the errno.
pub(crate) fn carry_out(plan: &Plan) -> Result<(), (u16, i32)> {
    let none = std::ptr::null::<libc::c_char>();
    for (i, (step, _)) in plan.steps.iter().enumerate() {
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        // SAFETY: each call takes NUL-terminated strings owned by the plan (alive for
        // the whole run), null pointers where the kernel accepts them, or a stack
        // `MountAttr` with its exact size; none of them allocates, so they are safe
        // between fork and exec.
        let ok = unsafe {
            match step {
                Step::Mount {
                    src,
                    dst,
                    fstype,
                    flags,
                    data,
                } => {
                    libc::mount(
                        src.as_ref().map_or(none, |s| s.as_ptr()),
                        dst.as_ptr(),
                        fstype.as_ref().map_or(none, |s| s.as_ptr()),
                        *flags,
                        data.as_ref()
                            .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
                    ) == 0
                }
                Step::ReadOnly { dst, fallback } => {
                    // Read-only all the way down (a bound /sys carries the host's cgroup
                    // mounts below it). Before Linux 5.12 there is no mount_setattr:
                    // then only the top mount is remounted read-only.
                    let attr = MountAttr {
                        attr_set: MOUNT_ATTR_RDONLY,
                        attr_clr: 0,
                        propagation: 0,
                        userns_fd: 0,
                    };
                    let r = libc::syscall(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD,
                        dst.as_ptr(),
                        libc::AT_RECURSIVE,
                        &raw const attr,
                        std::mem::size_of::<MountAttr>(),
                    );
                    r == 0
                        || (errno() == libc::ENOSYS
                            && libc::mount(none, dst.as_ptr(), none, *fallback, std::ptr::null())
                                == 0)
                }
                Step::Mkdir { path, mode } => {
                    libc::mkdir(path.as_ptr(), *mode) == 0 || errno() == libc::EEXIST
                }
                Step::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    // (An existing file that cannot be opened, /proc/kcore, is there.)
                    (fd >= 0 && libc::close(fd) == 0)
                        || libc::access(path.as_ptr(), libc::F_OK) == 0
                }
                Step::Symlink { target, path } => {
                    libc::symlink(target.as_ptr(), path.as_ptr()) == 0 || errno() == libc::EEXIST
                }
                Step::Pivot { dir } => {
                    libc::chdir(dir.as_ptr()) == 0
                        && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
                        && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0
                        && libc::chdir(c"/".as_ptr()) == 0
                }
                Step::Hostname { name } => {
                    libc::sethostname(name.as_ptr(), name.as_bytes().len()) == 0
                }
            }
        };
        if !ok {
            return Err((index, errno()));
        }
    }
    Ok(())
}
