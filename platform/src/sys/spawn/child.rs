//! The forked child between `fork` and `execve`: waits for the parent's go-ahead,
//! becomes (or forks under) the pid namespace's init, switches user, directory and
//! limits, installs the seccomp filter and execs the guest. Only async-signal-safe calls,
//! on memory the parent prepared ([`ChildCtx`]).

use super::image::ChildCtx;
use super::wire::{self, errno, ChildStage, Message};

/// The child between fork and exec. Only async-signal-safe calls.
pub(super) fn child_main(ctx: &ChildCtx<'_>) -> ! {
    // SAFETY: every call below is an async-signal-safe system call on descriptors this
    // process owns and on memory prepared before fork that stays alive (the parent's
    // copy-on-write image) until execve or _exit.
    unsafe {
        libc::close(ctx.go_w);
        libc::close(ctx.err_r);
        // The Rust runtime ignores SIGPIPE in compatrun itself; the guest starts with the
        // disposition compatrun was started with (recorded before the runtime ran).
        let pipe = if ctx.image.sigpipe_ignored {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        libc::signal(libc::SIGPIPE, pipe);
        // If the parent dies before seizing us, die too rather than run unsupervised.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as u64,
            0u64,
            0u64,
            0u64,
        );
        // (As pid 1 of a new pid namespace, our parent is outside it and shows as 0.)
        let ppid = libc::getppid();
        if ppid != ctx.parent && !((ctx.image.pid_ns || ctx.image.joined_pid_ns) && ppid == 0) {
            libc::_exit(125);
        }
    }
    if ctx.image.new_user_ns.is_some() {
        become_namespace_root(ctx);
    }
    if wire::recv_raw(ctx.go_r) != Some(Message::Go) {
        // EOF: the parent gave up (or died) without seizing us.
        ctx.fail(ChildStage::Handshake, libc::ECHILD, 125);
    }
    // SAFETY: as above.
    unsafe {
        libc::close(ctx.go_r);
        // Seized with PTRACE_O_EXITKILL now: that guards us from here on, and the guest
        // should see the parent-death signal it would natively have (none). In notify
        // mode we are the pid namespace's init and keep it: if compatrun dies, we die,
        // and with us every process of the namespace. (A fork clears it for the guest.)
        if !ctx.image.notify {
            libc::prctl(libc::PR_SET_PDEATHSIG, 0u64, 0u64, 0u64, 0u64);
        }
    }
    if ctx.image.pid_ns {
        super::init::become_init(ctx); // returns in the guest's first process only
    }
    // SAFETY: as above.
    unsafe {
        if let Some(fd) = ctx.image.join_user {
            // Into the container's user namespace first: its root there may then join
            // the mount namespace it owns; the user switch below takes ids inside it.
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                ctx.fail(ChildStage::Isolate, errno(), 125);
            }
            libc::close(fd);
        }
        if let Some(fd) = ctx.image.join_mnt {
            // setns of a mount namespace also moves our root and working directory.
            if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                ctx.fail(ChildStage::Isolate, errno(), 125);
            }
            libc::close(fd);
        }
    }
    // The terminal comes from the root the guest sees (as runc's init opens /dev/ptmx
    // after its pivot_root), before the user switch and the filter.
    if let Some(t) = &ctx.image.terminal {
        super::terminal::take_terminal(ctx, t);
    }
    // Without capabilities given, a switch to a non-root user keeps the permitted set
    // only until the filters are in (then every capability goes, as setuid would have
    // dropped them), so that they need no no_new_privs.
    let keep_for_filters =
        ctx.image.caps.is_none() && matches!(ctx.image.user, Some((uid, _)) if uid != 0);
    // SAFETY: as above.
    unsafe {
        let mut dropped_privileges = false;
        if let Some(caps) = &ctx.image.caps {
            // The bounding set first (it needs CAP_SETPCAP, which a switch of user
            // clears from the effective set); keep the permitted set across that switch.
            for cap in 0..64u64 {
                if caps.bounding & (1 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0u64, 0u64, 0u64) != 0
                    && errno() != libc::EINVAL
                {
                    ctx.fail(ChildStage::Capabilities, errno(), 125);
                }
            }
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1u64, 0u64, 0u64, 0u64) != 0 {
                ctx.fail(ChildStage::Capabilities, errno(), 125);
            }
        }
        if keep_for_filters {
            // A refusal only means no_new_privs below.
            libc::prctl(libc::PR_SET_KEEPCAPS, 1u64, 0u64, 0u64, 0u64);
        }
        if let Some((uid, gid)) = ctx.image.user {
            let one = [gid];
            let groups: &[libc::gid_t] = ctx.image.groups.as_deref().unwrap_or(&one);
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                ctx.fail(ChildStage::User, errno(), 125);
            }
            // KEEPCAPS (above) kept the permitted set: with CAP_SYS_ADMIN raised again,
            // the filters need no no_new_privs, which would stop setuid programs (su,
            // ping) in the guest.
            dropped_privileges = uid != 0 && !super::caps::raise_sys_admin();
        }
        if let Some(cwd) = &ctx.image.cwd {
            if libc::chdir(cwd.as_ptr()) != 0 {
                ctx.fail(ChildStage::Chdir, errno(), 125);
            }
        }
        if let Some(limit) = ctx.image.nofile_soft {
            // Lower the soft limit only; the hard limit stays, so the guest may raise it.
            let mut rl: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur > limit {
                rl.rlim_cur = limit;
                libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            }
        }
        if (ctx.image.no_new_privs || dropped_privileges)
            && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1u64, 0u64, 0u64, 0u64) != 0
        {
            ctx.fail(ChildStage::Filter, errno(), 125);
        }
        let prog: *const libc::sock_fprog = &ctx.ptrs.prog;
        let flags = if ctx.image.notify {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        } else {
            0
        };
        let listener = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            prog,
        );
        if listener < 0 {
            ctx.fail(ChildStage::Filter, errno(), 125);
        }
        if ctx.image.notify {
            // Hand the listener to compatrun and keep no copy: the guest must never be
            // able to answer its own calls.
            let fd = i32::try_from(listener).unwrap_or(-1);
            if !crate::sys::notify::send_fd_raw(ctx.listen, fd) {
                ctx.fail(ChildStage::Filter, errno(), 125);
            }
            libc::close(fd);
            libc::close(ctx.listen);
        }
    }
    // The front end's filters go in as late as they can: with no_new_privs just before
    // the exec, else now, while CAP_SYS_ADMIN (which installing one then takes) is kept.
    // SAFETY: prctl takes only numbers.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0u64, 0u64, 0u64, 0u64) } == 1;
    if !nnp {
        install_extra_filters(ctx);
    }
    if let Some(caps) = &ctx.image.caps {
        set_capabilities(ctx, caps);
    } else if keep_for_filters {
        if let Err(e) = super::caps::set(0, 0, 0) {
            ctx.fail(ChildStage::Capabilities, e, 125);
        }
        // SAFETY: prctl takes only numbers.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0u64, 0u64, 0u64, 0u64) };
    }
    if let Some(fd) = ctx.image.gate {
        let mut byte = 0u8;
        let n = loop {
            // SAFETY: read into one byte on the stack from a descriptor the front end
            // handed us; close takes only the number.
            let n = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
            if n >= 0 || errno() != libc::EINTR {
                break n;
            }
        };
        if n != 1 {
            // End of file: the container was deleted before it was started.
            ctx.fail(ChildStage::Gate, libc::ECANCELED, 125);
        }
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
    if nnp {
        install_extra_filters(ctx);
    }
    if !ctx.image.candidates.is_empty() {
        exec_candidates(ctx);
    }
    // SAFETY: execve on NUL-terminated strings and NULL-terminated pointer arrays
    // prepared before fork; it returns only on failure.
    let mut e = unsafe {
        libc::execve(
            ctx.image.path.as_ptr(),
            ctx.ptrs.argv.as_ptr(),
            ctx.ptrs.envp.as_ptr(),
        );
        errno()
    };
    if e == libc::ENOEXEC {
        // SAFETY: as above (execvp's /bin/sh fallback for a file without a #! line).
        e = unsafe {
            libc::execve(
                c"/bin/sh".as_ptr(),
                ctx.ptrs.sh_argv.as_ptr(),
                ctx.ptrs.envp.as_ptr(),
            );
            errno()
        };
    }
    let code = if e == libc::ENOENT { 127 } else { 126 };
    ctx.fail(ChildStage::Exec, e, code)
}

/// In a user namespace of our own: waits until the parent has written its maps, then
/// becomes its root (the capabilities the namespace gave us stay), with no
/// supplementary groups of the host's, makes the other new namespaces and tells the
/// parent (on the error pipe). The credential change clears the parent-death signal, so
/// it is set again; the go-ahead that follows shows the parent is still there (EOF
/// otherwise). Only async-signal-safe calls.
fn become_namespace_root(ctx: &ChildCtx<'_>) {
    if wire::recv_raw(ctx.go_r) != Some(Message::Mapped) {
        ctx.fail(ChildStage::Handshake, libc::ECHILD, 125);
    }
    // The raw system calls, not the C library's wrappers: a child of a raw clone still
    // has the library believe in the parent's other threads, and its wrappers would wait
    // for them to change their ids too.
    // SAFETY: setgroups with an empty list, setresgid, setresuid and prctl take numbers
    // only.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32) != 0
            || libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) != 0
        {
            ctx.fail(ChildStage::User, errno(), 125);
        }
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as u64,
            0u64,
            0u64,
            0u64,
        );
        // The other new namespaces, owned by this user namespace now; the parent joins
        // them once we say so.
        if ctx.image.unshare != 0 && libc::unshare(ctx.image.unshare) != 0 {
            ctx.fail(ChildStage::Isolate, errno(), 125);
        }
    }
    if !wire::send_raw(ctx.err_w, Message::Mapped) {
        ctx.fail(ChildStage::Handshake, errno(), 125);
    }
}

/// Installs the front end's filters in order, after compatrun's own. A persona that
/// predates `seccomp(2)` (3.17) has compatrun's filter answer it ENOSYS; the filter then
/// goes in through `prctl(PR_SET_SECCOMP)`, which the host kernel answers. Only
/// async-signal-safe calls.
fn install_extra_filters(ctx: &ChildCtx<'_>) {
    for (prog, flags) in &ctx.ptrs.extra {
        let prog: *const libc::sock_fprog = prog;
        // SAFETY: `prog` points into the image prepared before fork, which lives until
        // execve; the kernel copies the program.
        let mut r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                *flags,
                prog,
            )
        };
        if r < 0 && errno() == libc::ENOSYS {
            // SAFETY: as above.
            r = unsafe {
                libc::c_long::from(libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    prog,
                    0u64,
                    0u64,
                ))
            };
        }
        if r < 0 {
            ctx.fail(ChildStage::ExtraFilter, errno(), 125);
        }
    }
}

/// Execs the first of the program's candidate paths (inside the root filesystem) that
/// the kernel takes, as `execvp` does; fails with 127 if none exists, 126 if one exists
/// but cannot run. Never returns.
fn exec_candidates(ctx: &ChildCtx<'_>) -> ! {
    let mut first_error = libc::ENOENT;
    for (path, sh_argv) in ctx.image.candidates.iter().zip(&ctx.ptrs.candidate_sh_argv) {
        // SAFETY: execve on NUL-terminated strings and NULL-terminated pointer arrays
        // prepared before fork; it returns only on failure.
        let e = unsafe {
            libc::execve(
                path.as_ptr(),
                ctx.ptrs.argv.as_ptr(),
                ctx.ptrs.envp.as_ptr(),
            );
            errno()
        };
        if e == libc::ENOEXEC {
            // SAFETY: as above (/bin/sh inside the tree with this candidate's argument
            // vector, like execvp's fallback).
            unsafe {
                libc::execve(
                    c"/bin/sh".as_ptr(),
                    sh_argv.as_ptr(),
                    ctx.ptrs.envp.as_ptr(),
                );
            }
        }
        if e != libc::ENOENT && e != libc::ENOTDIR && first_error == libc::ENOENT {
            first_error = e;
        }
    }
    let code = if first_error == libc::ENOENT {
        127
    } else {
        126
    };
    ctx.fail(ChildStage::Exec, first_error, code)
}

/// The effective, permitted and inheritable sets, then the ambient one (after the user
/// switch, whose KEEPCAPS kept the permitted set). Only async-signal-safe calls.
fn set_capabilities(ctx: &ChildCtx<'_>, caps: &crate::CapSets) {
    if let Err(e) = super::caps::set(caps.effective, caps.permitted, caps.inheritable) {
        ctx.fail(ChildStage::Capabilities, e, 125);
    }
    // SAFETY: prctl takes only numbers.
    unsafe {
        for cap in 0..64u64 {
            if caps.ambient & (1 << cap) != 0
                && libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0u64,
                    0u64,
                ) != 0
            {
                ctx.fail(ChildStage::Capabilities, errno(), 125);
            }
        }
    }
}
