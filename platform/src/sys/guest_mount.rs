//! Mounting a new `proc` for a guest thread, in the guest's own namespaces, with files of
//! the caller's over it: how a `mount -t proc` the guest makes shows the persona too.
//!
//! A helper process joins the thread's user namespace when it is not compatrun's (an OCI
//! container's, or one the guest made: the mount is then made with the rights the guest
//! has there, and the kernel's rules for a proc in a user namespace hold as for the
//! guest; the helper becomes that namespace's root), then its mount and pid namespaces
//! (`setns`), forks so that its child is inside that pid namespace (a proc shows the pid
//! namespace of whoever mounts it), takes the thread's root and working directory, makes the mount as the
//! guest asked, and binds each file over its counterpart in the new proc: each file is
//! written on a tmpfs mounted briefly over a directory of the new proc (nothing else
//! uses it yet) and bound from there, then the tmpfs is detached.
//! The helper runs between fork and exit: only async-signal-safe calls.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// What to mount, as the guest asked, and what to put over it.
#[derive(Debug)]
pub struct ProcMount {
    /// `mount`'s source argument.
    pub source: CString,
    /// Where, as the guest named it (relative to its root and working directory).
    pub target: CString,
    /// `mount`'s flags (a new mount: no remount, bind, move or propagation change).
    pub flags: u64,
    /// `mount`'s data (the options), if any.
    pub data: Option<CString>,
    /// Files to put over the new proc: path inside it (`sys/kernel/osrelease`) and
    /// contents.
    pub files: Vec<(CString, Vec<u8>)>,
}

/// Directories of a proc that hold the staging tmpfs for a moment (the first that works).
const STAGING: [&str; 4] = ["tty", "driver", "fs", "bus"];

/// Why the helper could not act for the guest (compatrun's failure, not the guest's:
/// the caller then lets the call run natively).
#[derive(Debug, thiserror::Error)]
#[error("cannot mount proc for thread {tid}: {op}: {source}")]
pub struct HelperError {
    /// The guest thread.
    pub tid: i32,
    /// The step.
    pub op: &'static str,
    /// What went wrong.
    pub source: io::Error,
}

/// Everything the helper needs, made before fork.
struct Prepared {
    /// The thread's user namespace, when it is not ours.
    user_ns: Option<File>,
    mnt_ns: File,
    pid_ns: File,
    root: File,
    cwd: File,
    /// Per staging directory: (its path, the file names in it).
    staging: Vec<(CString, Vec<CString>)>,
    /// Per file: where it goes.
    targets: Vec<CString>,
}

fn join(base: &CString, rel: &str) -> io::Result<CString> {
    let mut v = base.as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(rel.as_bytes());
    CString::new(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn prepare(tid: i32, req: &ProcMount) -> Result<Prepared, HelperError> {
    let open = |what: &'static str| {
        File::open(format!("/proc/{tid}/{what}")).map_err(|source| HelperError {
            tid,
            op: what,
            source,
        })
    };
    let bad = |source| HelperError {
        tid,
        op: "paths",
        source,
    };
    let staging = STAGING
        .iter()
        .map(|dir| {
            let d = join(&req.target, dir)?;
            let names = (0..req.files.len())
                .map(|i| join(&d, &format!("compatrun-{i}")))
                .collect::<io::Result<_>>()?;
            Ok((d, names))
        })
        .collect::<io::Result<_>>()
        .map_err(bad)?;
    let targets = req
        .files
        .iter()
        .map(|(rel, _)| join(&req.target, &rel.to_string_lossy()))
        .collect::<io::Result<_>>()
        .map_err(bad)?;
    let link = |p: String| std::fs::read_link(p).ok();
    let user_ns = if link(format!("/proc/{tid}/ns/user")) == link("/proc/self/ns/user".into()) {
        None
    } else {
        Some(open("ns/user")?)
    };
    Ok(Prepared {
        user_ns,
        mnt_ns: open("ns/mnt")?,
        pid_ns: open("ns/pid")?,
        root: open("root")?,
        cwd: open("cwd")?,
        staging,
        targets,
    })
}

/// Mounts `req` for guest thread `tid`. `Ok(Ok(()))`: mounted (the files over it where
/// the new proc has their counterparts); `Ok(Err(errno))`: the mount itself failed with
/// that errno, for the guest; `Err`: the helper could not act.
pub fn mount_proc(tid: i32, req: &ProcMount) -> Result<Result<(), i32>, HelperError> {
    let p = prepare(tid, req)?;
    let (rd, wr): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| HelperError {
            tid,
            op: "pipe",
            source: e.into(),
        })?;
    // SAFETY: the child runs only async-signal-safe code (helper never returns) on memory
    // prepared above, which stays alive in its copy-on-write image until it exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HelperError {
            tid,
            op: "fork",
            source: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        helper(&p, req, wr.as_raw_fd());
    }
    drop(wr);
    let mut buf = [0u8; 5];
    let n = nix::unistd::read(&rd, &mut buf).unwrap_or(0);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    let errno = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
    match (n, buf[0]) {
        (5, b'M') if errno == 0 => Ok(Ok(())),
        (5, b'M') => Ok(Err(errno)),
        (5, _) => Err(HelperError {
            tid,
            op: "join the guest's namespaces",
            source: io::Error::from_raw_os_error(errno),
        }),
        _ => Err(HelperError {
            tid,
            op: "helper",
            source: io::Error::from_raw_os_error(libc::EIO),
        }),
    }
}

/// Sends a tagged errno (`N`: the helper failed; `M`: the mount's own result) and exits.
fn report(fd: i32, tag: u8, errno: i32) -> ! {
    let e = errno.to_ne_bytes();
    let msg = [tag, e[0], e[1], e[2], e[3]];
    // SAFETY: write(2) of a live stack buffer and _exit(2), both async-signal-safe.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(0)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The helper, after fork: join the namespaces, fork into the pid namespace, mount.
fn helper(p: &Prepared, req: &ProcMount, out: i32) -> ! {
    // SAFETY: setns, fork and waitpid take descriptors and integers only; the
    // descriptors were opened before fork and are ours.
    unsafe {
        // The user namespace first, as its root: its rights then cover the pid and
        // mount namespaces it owns, and the files made for the mount have owners there
        // (an id the namespace does not map cannot create files). Raw calls: only this
        // process changes ids.
        if let Some(user) = &p.user_ns {
            if libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) != 0
                || libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32) != 0
                || libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) != 0
            {
                report(out, b'N', errno());
            }
        }
        if libc::setns(p.pid_ns.as_raw_fd(), libc::CLONE_NEWPID) != 0
            || libc::setns(p.mnt_ns.as_raw_fd(), libc::CLONE_NEWNS) != 0
        {
            report(out, b'N', errno());
        }
        let child = libc::fork();
        if child < 0 {
            report(out, b'N', errno());
        }
        if child > 0 {
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
            libc::_exit(0);
        }
    }
    in_guest_namespaces(p, req, out)
}

/// Inside the guest's pid and mount namespaces: its root and directory, then the mount.
fn in_guest_namespaces(p: &Prepared, req: &ProcMount, out: i32) -> ! {
    // SAFETY: async-signal-safe system calls on descriptors opened before fork and on
    // NUL-terminated strings prepared before fork.
    unsafe {
        if libc::fchdir(p.root.as_raw_fd()) != 0
            || libc::chroot(c".".as_ptr()) != 0
            || libc::fchdir(p.cwd.as_raw_fd()) != 0
        {
            report(out, b'N', errno());
        }
        let data = req
            .data
            .as_ref()
            .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
        if libc::mount(
            req.source.as_ptr(),
            req.target.as_ptr(),
            c"proc".as_ptr(),
            req.flags,
            data,
        ) != 0
        {
            report(out, b'M', errno());
        }
        for (dir, names) in &p.staging {
            if libc::mount(
                c"tmpfs".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
            {
                continue;
            }
            for ((name, target), (_, data)) in names.iter().zip(&p.targets).zip(&req.files) {
                if super::bindfile::write_new(name, data) {
                    super::bindfile::bind_read_only(name, target);
                }
            }
            libc::umount2(dir.as_ptr(), libc::MNT_DETACH);
            break;
        }
        report(out, b'M', 0)
    }
}
