//! Forking the guest and running the few instructions between `fork` and `execve`.
//!
//! Everything the child needs is prepared before `fork` ([`ChildImage`]), because the
//! child may only make async-signal-safe calls: the parent may have other threads (test
//! harnesses do), and any allocation in the child could deadlock on a lock they held.
//!
//! The child waits on a pipe until the parent has seized it, so the seccomp filter and
//! the `execve` of the guest both happen under the tracer's eye: no guest instruction
//! ever runs uncaught, and if the parent dies first the child exits instead.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::unistd::Pid;

use crate::filter::Insn;
use crate::GuestCommand;

/// Where the child failed, sent to the parent over the error pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildStage {
    /// Waiting for the parent's go-ahead (the parent vanished).
    Handshake,
    /// Setting the working directory.
    Chdir,
    /// Installing the seccomp filter.
    Filter,
    /// Executing the program.
    Exec,
    /// Setting up the pid namespace's init (mount namespace, /proc, fork).
    Isolate,
    /// Setting up the root filesystem: the plan's step with this index failed.
    Rootfs(u16),
    /// Switching to the requested user and group.
    User,
}

impl ChildStage {
    fn code(self) -> u8 {
        match self {
            ChildStage::Handshake => 1,
            ChildStage::Chdir => 2,
            ChildStage::Filter => 3,
            ChildStage::Exec => 4,
            ChildStage::Isolate => 5,
            ChildStage::Rootfs(_) => 6,
            ChildStage::User => 7,
        }
    }

    fn detail(self) -> u16 {
        match self {
            ChildStage::Rootfs(i) => i,
            _ => 0,
        }
    }

    fn from_code(c: u8, detail: u16) -> Option<Self> {
        [
            Self::Handshake,
            Self::Chdir,
            Self::Filter,
            Self::Exec,
            Self::Isolate,
            Self::Rootfs(detail),
            Self::User,
        ]
        .into_iter()
        .find(|s| s.code() == c)
    }
}

/// Everything the child needs, allocated before `fork`.
#[derive(Debug)]
pub struct ChildImage {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    sh_argv: Vec<CString>,
    cwd: Option<CString>,
    nofile_soft: Option<u64>,
    sigpipe_ignored: bool,
    pid_ns: bool,
    synthetic: Vec<(CString, Vec<u8>)>,
    /// Per STAGING directory, a file name for each synthetic file.
    staging: Vec<Vec<CString>>,
    filter: Vec<Insn>,
    no_new_privs: bool,
    /// Seccomp user notification: install the filter with a listener, send it to the
    /// parent, and keep the pid namespace's init bound to the parent's life.
    notify: bool,
    /// The root filesystem's plan, carried out by the init.
    rootfs: Option<crate::rootfs::Plan>,
    /// With a root filesystem: where the program may be inside it, tried in order.
    candidates: Vec<CString>,
    /// The user and group the guest's first process switches to.
    user: Option<(u32, u32)>,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", s),
        )
    })
}

impl ChildImage {
    /// Prepares the exec of `cmd` under the seccomp program `filter`.
    pub fn new(cmd: &GuestCommand, filter: Vec<Insn>, no_new_privs: bool) -> io::Result<Self> {
        let path = cstring(&cmd.program)?;
        let argv = cmd
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = cmd
            .env
            .iter()
            .map(|e| cstring(e))
            .collect::<io::Result<Vec<_>>>()?;
        // execvp's fallback for a file without a #! line: run it with /bin/sh.
        let mut sh_argv = vec![CString::from(c"/bin/sh"), path.clone()];
        sh_argv.extend(argv.iter().skip(1).cloned());
        let cwd = cmd.cwd.as_deref().map(cstring).transpose()?;
        Ok(ChildImage {
            path,
            argv,
            envp,
            sh_argv,
            cwd,
            nofile_soft: cmd.nofile_soft,
            sigpipe_ignored: super::signals::sigpipe_ignored_at_start(),
            pid_ns: cmd.pid_ns,
            synthetic: cmd
                .synthetic_files
                .iter()
                .map(|(path, data)| Ok((cstring(path)?, data.clone())))
                .collect::<io::Result<_>>()?,
            staging: STAGING
                .iter()
                .map(|dir| {
                    (0..cmd.synthetic_files.len())
                        .map(|i| {
                            let mut p = dir.to_bytes().to_vec();
                            p.extend_from_slice(format!("/compatrun-{i}").as_bytes());
                            CString::new(p).unwrap_or_default()
                        })
                        .collect()
                })
                .collect(),
            filter,
            no_new_privs,
            notify: false,
            rootfs: cmd.root.as_ref().map(crate::rootfs::plan).transpose()?,
            candidates: match &cmd.root {
                Some(root) => crate::rootfs::candidates(&cmd.program, &root.path)
                    .iter()
                    .map(|c| cstring(c))
                    .collect::<io::Result<_>>()?,
                None => Vec::new(),
            },
            user: cmd.user,
        })
    }

    /// Makes the guest's filter report to a listener that the parent receives
    /// ([`Spawned::listener`]) instead of to a tracer, and the pid namespace's init report
    /// the guest's job-control stops ([`Spawned::read_report`]). Needs a pid namespace:
    /// the init dies with the parent (parent-death signal), and the kernel then kills
    /// every process in the namespace, so no guest code runs unsupervised.
    pub fn with_notify(mut self) -> Self {
        self.notify = true;
        self
    }
}

/// A forked child waiting for [`Spawned::release`].
#[derive(Debug)]
pub struct Spawned {
    /// The child's pid.
    pub pid: Pid,
    go: Option<OwnedFd>,
    err: OwnedFd,
    /// Notify mode: where the guest sends its listener.
    listener: Option<OwnedFd>,
    /// Notify mode: the init's reports of the guest's stops (2 bytes each).
    report: Option<OwnedFd>,
}

/// A job-control change of the guest's first process, as its init reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestJobEvent {
    /// Stopped by this signal.
    Stopped(i32),
    /// Continued.
    Continued,
}

/// Why the child did not reach the guest program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildFailure {
    /// The step that failed.
    pub stage: ChildStage,
    /// The errno it failed with.
    pub errno: i32,
}

impl Spawned {
    /// Lets the child go on to install the filter and exec.
    pub fn release(&mut self) -> io::Result<()> {
        let Some(go) = self.go.take() else {
            return Ok(());
        };
        nix::unistd::write(&go, &[1u8]).map_err(io::Error::from)?;
        Ok(())
    }

    /// Notify mode: waits for the guest's seccomp listener. `Ok(None)` when the guest
    /// failed before installing its filter (see [`Spawned::failure`] once it is reaped).
    pub fn listener(&mut self) -> io::Result<Option<OwnedFd>> {
        let Some(sock) = self.listener.take() else {
            return Ok(None);
        };
        super::notify::recv_fd(sock.as_fd())
    }

    /// Notify mode: the descriptor the init's reports arrive on (readable when one is
    /// waiting; EOF once the init is gone).
    pub fn report_fd(&self) -> Option<BorrowedFd<'_>> {
        self.report.as_ref().map(|fd| fd.as_fd())
    }

    /// Notify mode: reads one report (call when [`Spawned::report_fd`] is readable);
    /// `None` at EOF or on a malformed report.
    pub fn read_report(&self) -> Option<GuestJobEvent> {
        let fd = self.report.as_ref()?;
        let mut buf = [0u8; 2];
        let n = nix::unistd::read(fd, &mut buf).ok()?;
        match (n, buf[0]) {
            (2, b'S') => Some(GuestJobEvent::Stopped(i32::from(buf[1]))),
            (2, b'C') => Some(GuestJobEvent::Continued),
            _ => None,
        }
    }

    /// After the child exited: what it reported, if it failed before the guest ran.
    /// (The pipe is close-on-exec, so a successful exec leaves it empty.)
    pub fn failure(&self) -> Option<ChildFailure> {
        let mut buf = [0u8; 7];
        let n = nix::unistd::read(&self.err, &mut buf).ok()?;
        if n != buf.len() {
            return None;
        }
        let stage = ChildStage::from_code(buf[0], u16::from_ne_bytes([buf[5], buf[6]]))?;
        let errno = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
        Some(ChildFailure { stage, errno })
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Forks a child that waits for the go-ahead, then sets up and execs `image`.
pub fn spawn(image: &ChildImage) -> io::Result<Spawned> {
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let (listen_parent, listen_child) = if image.notify {
        let (a, b) = super::notify::socketpair()?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let (report_r, report_w) = if image.notify {
        let (r, w) = pipe_cloexec()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let parent = nix::unistd::getpid();

    // Pointer arrays built before fork (the child must not allocate).
    let argv: Vec<*const libc::c_char> = image
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = image
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let sh_argv: Vec<*const libc::c_char> = image
        .sh_argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // Per candidate inside a root filesystem: `/bin/sh CANDIDATE ARGS...`, execvp's
    // fallback for the candidate the kernel refused with ENOEXEC.
    let candidate_sh_argv: Vec<Vec<*const libc::c_char>> = image
        .candidates
        .iter()
        .map(|c| {
            [c"/bin/sh".as_ptr(), c.as_ptr()]
                .into_iter()
                .chain(image.argv.iter().skip(1).map(|a| a.as_ptr()))
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(image.filter.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long"))?,
        filter: image.filter.as_ptr().cast_mut(),
    };

    // SAFETY: fork is sound here because the child runs only async-signal-safe code
    // (child_main uses raw libc calls on memory prepared above and never returns). With
    // a pid namespace, a raw clone(CLONE_NEWPID) is the same fork into a new namespace;
    // unlike unshare(CLONE_NEWPID) it leaves compatrun free to start threads after.
    let pid = unsafe {
        if image.pid_ns {
            let flags = libc::CLONE_NEWPID | libc::SIGCHLD;
            i32::try_from(libc::syscall(
                libc::SYS_clone,
                flags,
                0usize,
                0usize,
                0usize,
                0usize,
            ))
            .unwrap_or(-1)
        } else {
            libc::fork()
        }
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let ctx = ChildCtx {
            parent: parent.as_raw(),
            go_r: go_r.as_raw_fd(),
            go_w: go_w.as_raw_fd(),
            err_r: err_r.as_raw_fd(),
            err_w: err_w.as_raw_fd(),
            listen: listen_child.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            report: report_w.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            image,
            argv: &argv,
            envp: &envp,
            sh_argv: &sh_argv,
            candidate_sh_argv: &candidate_sh_argv,
            prog: &prog,
        };
        child_main(&ctx);
    }
    drop(go_r);
    drop(err_w);
    drop(listen_child);
    drop(report_w);
    Ok(Spawned {
        pid: Pid::from_raw(pid),
        go: Some(go_w),
        err: err_r,
        listener: listen_parent,
        report: report_r,
    })
}

struct ChildCtx<'a> {
    parent: libc::pid_t,
    go_r: i32,
    go_w: i32,
    err_r: i32,
    err_w: i32,
    /// Notify mode: our end of the socket the listener goes to (else -1).
    listen: i32,
    /// Notify mode: the init's report pipe (else -1).
    report: i32,
    image: &'a ChildImage,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    sh_argv: &'a [*const libc::c_char],
    /// `sh_argv` for each of the image's candidates, in the same order.
    candidate_sh_argv: &'a [Vec<*const libc::c_char>],
    prog: &'a libc::sock_fprog,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Reports `stage` and the current errno on the error pipe and exits (never returns).
fn child_fail(ctx: &ChildCtx<'_>, stage: ChildStage, err: i32, code: i32) -> ! {
    let e = err.to_ne_bytes();
    let d = stage.detail().to_ne_bytes();
    let msg = [stage.code(), e[0], e[1], e[2], e[3], d[0], d[1]];
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a live stack buffer
    // of the length passed.
    unsafe {
        libc::write(ctx.err_w, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    }
}

/// The child between fork and exec. Only async-signal-safe calls.
fn child_main(ctx: &ChildCtx<'_>) -> ! {
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
        if ppid != ctx.parent && !(ctx.image.pid_ns && ppid == 0) {
            libc::_exit(125);
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(ctx.go_r, (&raw mut byte).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            // EOF: the parent gave up (or died) without seizing us.
            child_fail(ctx, ChildStage::Handshake, libc::ECHILD, 125);
        }
        libc::close(ctx.go_r);
        // Seized with PTRACE_O_EXITKILL now: that guards us from here on, and the guest
        // should see the parent-death signal it would natively have (none). In notify
        // mode we are the pid namespace's init and keep it: if compatrun dies, we die,
        // and with us every process of the namespace. (A fork clears it for the guest.)
        if !ctx.image.notify {
            libc::prctl(libc::PR_SET_PDEATHSIG, 0u64, 0u64, 0u64, 0u64);
        }
        if ctx.image.pid_ns {
            become_init(ctx); // returns in the guest's first process only
        }
        let mut dropped_privileges = false;
        if let Some((uid, gid)) = ctx.image.user {
            let groups = [gid];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                child_fail(ctx, ChildStage::User, errno(), 125);
            }
            dropped_privileges = uid != 0;
        }
        if let Some(cwd) = &ctx.image.cwd {
            if libc::chdir(cwd.as_ptr()) != 0 {
                child_fail(ctx, ChildStage::Chdir, errno(), 125);
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
            child_fail(ctx, ChildStage::Filter, errno(), 125);
        }
        let prog: *const libc::sock_fprog = ctx.prog;
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
            child_fail(ctx, ChildStage::Filter, errno(), 125);
        }
        if ctx.image.notify {
            // Hand the listener to compatrun and keep no copy: the guest must never be
            // able to answer its own calls.
            let fd = i32::try_from(listener).unwrap_or(-1);
            if !super::notify::send_fd_raw(ctx.listen, fd) {
                child_fail(ctx, ChildStage::Filter, errno(), 125);
            }
            libc::close(fd);
            libc::close(ctx.listen);
        }
        if !ctx.image.candidates.is_empty() {
            exec_candidates(ctx);
        }
        libc::execve(
            ctx.image.path.as_ptr(),
            ctx.argv.as_ptr(),
            ctx.envp.as_ptr(),
        );
        let mut e = errno();
        if e == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), ctx.sh_argv.as_ptr(), ctx.envp.as_ptr());
            e = errno();
        }
        let code = if e == libc::ENOENT { 127 } else { 126 };
        child_fail(ctx, ChildStage::Exec, e, code)
    }
}

/// Execs the first of the program's candidate paths (inside the root filesystem) that
/// the kernel takes, as `execvp` does; fails with 127 if none exists, 126 if one exists
/// but cannot run. Never returns.
fn exec_candidates(ctx: &ChildCtx<'_>) -> ! {
    let mut first_error = libc::ENOENT;
    for (path, sh_argv) in ctx.image.candidates.iter().zip(ctx.candidate_sh_argv) {
        // SAFETY: execve on NUL-terminated strings and NULL-terminated pointer arrays
        // prepared before fork; it returns only on failure.
        let e = unsafe {
            libc::execve(path.as_ptr(), ctx.argv.as_ptr(), ctx.envp.as_ptr());
            errno()
        };
        if e == libc::ENOEXEC {
            // SAFETY: as above (/bin/sh inside the tree with this candidate's argument
            // vector, like execvp's fallback).
            unsafe {
                libc::execve(c"/bin/sh".as_ptr(), sh_argv.as_ptr(), ctx.envp.as_ptr());
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
    child_fail(ctx, ChildStage::Exec, first_error, code)
}

/// In a fresh pid namespace (we are its pid 1): mount a /proc that shows only this
/// namespace, fork the guest's first process (returns in it) and, here, reap everything
/// until the namespace is empty, then exit with the first process's status. Holding no
/// descriptors, so the guest's pipes close when the guest closes them.
fn become_init(ctx: &ChildCtx<'_>) {
    // SAFETY: async-signal-safe system calls on constant C strings and on locals; after
    // fork the parent branch never returns (it ends in _exit).
    unsafe {
        let uts = if ctx.image.rootfs.as_ref().is_some_and(|p| p.new_uts) {
            libc::CLONE_NEWUTS
        } else {
            0
        };
        if libc::unshare(libc::CLONE_NEWNS | uts) != 0 {
            child_fail(ctx, ChildStage::Isolate, errno(), 125);
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            child_fail(ctx, ChildStage::Isolate, errno(), 125);
        }
        if let Some(plan) = &ctx.image.rootfs {
            if let Err((i, e)) = super::rootfs::carry_out(plan) {
                child_fail(ctx, ChildStage::Rootfs(i), e, 125);
            }
        } else if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) != 0
        {
            child_fail(ctx, ChildStage::Isolate, errno(), 125);
        }
        if !mount_synthetic(ctx.image) {
            child_fail(ctx, ChildStage::Isolate, errno(), 125);
        }
        let pid = libc::fork();
        if pid < 0 {
            child_fail(ctx, ChildStage::Isolate, errno(), 125);
        }
        if pid == 0 {
            return;
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"compatrun-init".as_ptr() as u64,
            0u64,
            0u64,
            0u64,
        );
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
                super::signals::set_target(guest, 1);
            }
            super::signals::init_forwarding();
            close_from(2);
        } else {
            close_from(0);
        }
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
                Some([b'S', u8::try_from(libc::WSTOPSIG(status)).unwrap_or(0)])
            } else if libc::WIFCONTINUED(status) {
                Some([b'C', 0])
            } else {
                first = status;
                super::signals::root_gone();
                None
            };
            if let (Some(note), true) = (note, report >= 0) {
                libc::write(report, note.as_ptr().cast(), note.len());
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

/// Directories that may briefly hold a private tmpfs while synthetic files are made
/// (inside the guest's own mount namespace; the first that works is used).
const STAGING: [&std::ffi::CStr; 4] = [c"/tmp", c"/mnt", c"/run", c"/dev"];

/// Puts each `(target, data)` over its target as a read-only file: the files are made on
/// a tmpfs mounted over a staging directory, bind-mounted onto their targets, and the
/// tmpfs is detached again (the bind mounts keep the files). A memfd cannot serve: the
/// kernel refuses bind mounts from its internal mount.
fn mount_synthetic(image: &ChildImage) -> bool {
    if image.synthetic.is_empty() {
        return true;
    }
    let none = std::ptr::null::<libc::c_char>();
    for (dir, names) in STAGING.iter().zip(&image.staging) {
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
            for ((target, data), name) in image.synthetic.iter().zip(names) {
                let fd = libc::open(
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o444,
                );
                if fd < 0 {
                    ok = false;
                    break;
                }
                let mut off = 0;
                while off < data.len() {
                    let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
                    if n <= 0 {
                        ok = false;
                        break;
                    }
                    off += n.unsigned_abs();
                }
                libc::close(fd);
                ok = ok
                    && libc::mount(
                        name.as_ptr(),
                        target.as_ptr(),
                        none,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) == 0
                    && libc::mount(
                        none,
                        target.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) == 0;
                if !ok {
                    break;
                }
            }
            libc::umount2(dir.as_ptr(), libc::MNT_DETACH);
            return ok;
        }
    }
    false
}
