//! The pid namespace's init (its pid 1): makes the guest's mount namespace (/proc, the
//! root filesystem, synthetic files), forks the guest's first process, then reaps every
//! process of the namespace and ends with the first one's status. In notify mode it also
//! forwards compatrun's signals to the guest and reports the guest's job-control stops.
//! Runs between fork and exec: only async-signal-safe calls.

use super::image::{ChildCtx, ChildImage, STAGING};
use super::wire::{self, errno, ChildStage, GuestJobEvent, Message};

/// In a fresh pid namespace (we are its pid 1): mount a /proc that shows only this
/// namespace, fork the guest's first process (returns in it) and, here, reap everything
/// until the namespace is empty, then exit with the first process's status. Holding no
/// descriptors, so the guest's pipes close when the guest closes them.
pub(super) fn become_init(ctx: &ChildCtx<'_>) {
    // SAFETY: async-signal-safe system calls on constant C strings and on locals; after
    // fork the parent branch never returns (it ends in _exit).
    unsafe {
        // (A UTS namespace made with the user namespace serves the host name too.)
        let uts = if ctx.image.rootfs.as_ref().is_some_and(|p| p.new_uts)
            && ctx.image.unshare & libc::CLONE_NEWUTS == 0
        {
            libc::CLONE_NEWUTS
        } else {
            0
        };
        if libc::unshare(libc::CLONE_NEWNS | uts) != 0 {
            ctx.fail(ChildStage::Isolate, errno(), 125);
        }
        write_sysctls(ctx);
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            ctx.fail(ChildStage::Isolate, errno(), 125);
        }
        if let Some(plan) = &ctx.image.rootfs {
            if let Err((i, e)) = crate::sys::rootfs::carry_out(plan) {
                ctx.fail(ChildStage::Rootfs(i), e, 125);
            }
        } else if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) != 0
        {
            ctx.fail(ChildStage::Isolate, errno(), 125);
        }
        if !mount_synthetic(ctx.image) {
            ctx.fail(ChildStage::Isolate, errno(), 125);
        }
        // Named before the fork: the guest may look at pid 1 before the init runs again
        // (its first process inherits the name until it execs).
        libc::prctl(
            libc::PR_SET_NAME,
            c"compatrun-init".as_ptr() as u64,
            0u64,
            0u64,
            0u64,
        );
        let pid = libc::fork();
        if pid < 0 {
            ctx.fail(ChildStage::Isolate, errno(), 125);
        }
        if pid == 0 {
            return;
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0u64, 0u64, 0u64, 0u64);
        init_main(ctx, pid)
    }
}

/// The pid namespace's init after forking the guest's first process `guest`: reaps
/// everything until the namespace is empty, then exits with the first process's status
/// (128+N for a death by signal N). It holds no descriptor of the guest's or of our
/// caller's, so their pipes close when the guest closes them.
///
/// In notify mode it also stands in for compatrun inside the namespace: signals compatrun
/// passes on are forwarded to `guest`, and the guest's stops and continues are reported
/// on the pipe so compatrun can mirror them to its own parent.
fn init_main(ctx: &ChildCtx<'_>, guest: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe system calls on locals and on descriptors this process
    // owns; the signal handlers installed use atomics and raw system calls only.
    unsafe {
        // Keep only the report pipe (as fd 0) and a pidfd of the guest (as fd 1).
        let mut report = -1;
        if ctx.report >= 0 {
            let pidfd = i32::try_from(libc::syscall(libc::SYS_pidfd_open, guest, 0)).unwrap_or(-1);
            let high_report = libc::fcntl(ctx.report, libc::F_DUPFD_CLOEXEC, 3);
            let high_pidfd = libc::fcntl(pidfd, libc::F_DUPFD_CLOEXEC, 3);
            if high_report >= 0 && libc::dup2(high_report, 0) == 0 {
                report = 0;
            }
            if high_pidfd >= 0 && libc::dup2(high_pidfd, 1) == 1 {
                crate::sys::signals::set_target(guest, 1);
            }
            crate::sys::signals::init_forwarding();
        }
        // From here on the init only reaps, reports and passes signals on.
        if let Err(e) = super::lockdown::lock_down(&ctx.ptrs.init_prog) {
            ctx.fail(ChildStage::Isolate, e, 125);
        }
        close_from(if ctx.report >= 0 { 2 } else { 0 });
        let options = if report >= 0 {
            libc::WUNTRACED | libc::WCONTINUED
        } else {
            0
        };
        let mut first: libc::c_int = 0;
        loop {
            let mut status: libc::c_int = 0;
            let r = libc::waitpid(-1, &mut status, options);
            if r < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            if r != guest {
                continue;
            }
            let note = if libc::WIFSTOPPED(status) {
                Some(GuestJobEvent::Stopped(libc::WSTOPSIG(status)))
            } else if libc::WIFCONTINUED(status) {
                Some(GuestJobEvent::Continued)
            } else {
                first = status;
                crate::sys::signals::root_gone();
                None
            };
            if let (Some(note), true) = (note, report >= 0) {
                wire::send_raw(report, Message::Job(note));
            }
        }
        let code = if libc::WIFSIGNALED(first) {
            128 + libc::WTERMSIG(first)
        } else {
            libc::WEXITSTATUS(first)
        };
        libc::_exit(code)
    }
}

/// Writes the image's sysctls, in the namespaces just made and as their root (the /proc
/// mounted here is still the host's, but a sysctl file is the writer's namespace's).
fn write_sysctls(ctx: &ChildCtx<'_>) {
    for (i, (path, value)) in ctx.image.sysctls.iter().enumerate() {
        let i = u16::try_from(i).unwrap_or(u16::MAX);
        // SAFETY: open, write and close on a NUL-terminated path and a live buffer
        // prepared before fork.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                ctx.fail(ChildStage::Sysctl(i), errno(), 125);
            }
            let n = libc::write(fd, value.as_ptr().cast(), value.len());
            if usize::try_from(n).ok() != Some(value.len()) {
                let e = if n < 0 { errno() } else { libc::EIO };
                ctx.fail(ChildStage::Sysctl(i), e, 125);
            }
            libc::close(fd);
        }
    }
}

/// Closes every descriptor from `first` up.
fn close_from(first: u32) {
    // SAFETY: close_range and close take only descriptor numbers; nothing here uses the
    // closed descriptors afterwards.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) != 0 {
            for fd in first..1024 {
                libc::close(i32::try_from(fd).unwrap_or(0));
            }
        }
    }
}

/// Puts each `(target, data)` over its target as a read-only file: the files are made on
/// a tmpfs mounted over a staging directory, bind-mounted onto their targets, and the
/// tmpfs is detached again (the bind mounts keep the files). A memfd cannot serve: the
/// kernel refuses bind mounts from its internal mount.
fn mount_synthetic(image: &ChildImage) -> bool {
    if image.synthetic.is_empty() {
        return true;
    }
    for ((dir, names), &hides) in STAGING.iter().zip(&image.staging).zip(&image.staging_hides) {
        if hides {
            continue;
        }
        // SAFETY: async-signal-safe system calls on NUL-terminated paths prepared before
        // fork and on live buffers; everything happens in our private mount namespace.
        unsafe {
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
            let mut ok = true;
            for (((target, data), name), extra) in image
                .synthetic
                .iter()
                .zip(names)
                .zip(&image.synthetic_extra)
            {
                ok = crate::sys::bindfile::write_new(name, data)
                    && crate::sys::bindfile::bind_read_only(name, target);
                if !ok {
                    break;
                }
                // The same file in every other proc the guest sees; one that cannot
                // take it (a missing file, a read-only mount) keeps the host's.
                for target in extra {
                    crate::sys::bindfile::bind_read_only(name, target);
                }
            }
            libc::umount2(dir.as_ptr(), libc::MNT_DETACH);
            return ok;
        }
    }
    false
}
