//! compatrun's side of the spawn: forks the child (into a new pid namespace if asked),
//! then talks to it through [`Spawned`]: the go-ahead once the child is supervised, the
//! seccomp listener it sends back, the init's job-control reports, and its failure.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::unistd::Pid;

use super::image::{ChildCtx, ChildImage};
use super::wire::{self, ChildFailure, GuestJobEvent, Message};

/// A forked child waiting for [`Spawned::release`].
#[derive(Debug)]
pub struct Spawned {
    /// The child's pid.
    pub pid: Pid,
    go: Option<OwnedFd>,
    err: OwnedFd,
    /// Notify mode: where the guest sends its listener.
    listener: Option<OwnedFd>,
    /// Notify mode: the init's reports of the guest's stops.
    report: Option<OwnedFd>,
}

impl Spawned {
    /// Lets the child go on to install the filter and exec.
    pub fn release(&mut self) -> io::Result<()> {
        let Some(go) = self.go.take() else {
            return Ok(());
        };
        wire::send(go.as_fd(), Message::Go)
    }

    /// Notify mode: waits for the guest's seccomp listener. `Ok(None)` when the guest
    /// failed before installing its filter (see [`Spawned::failure`] once it is reaped).
    pub fn listener(&mut self) -> io::Result<Option<OwnedFd>> {
        let Some(sock) = self.listener.take() else {
            return Ok(None);
        };
        crate::sys::notify::recv_fd(sock.as_fd())
    }

    /// Notify mode: the descriptor the init's reports arrive on (readable when one is
    /// waiting; EOF once the init is gone).
    pub fn report_fd(&self) -> Option<BorrowedFd<'_>> {
        self.report.as_ref().map(|fd| fd.as_fd())
    }

    /// Notify mode: reads one report (call when [`Spawned::report_fd`] is readable);
    /// `None` at EOF or on a malformed report.
    pub fn read_report(&self) -> Option<GuestJobEvent> {
        match wire::recv(self.report.as_ref()?.as_fd())? {
            Message::Job(event) => Some(event),
            _ => None,
        }
    }

    /// After the child exited: what it reported, if it failed before the guest ran.
    /// (The pipe is close-on-exec, so a successful exec leaves it empty.)
    pub fn failure(&self) -> Option<ChildFailure> {
        match wire::recv(self.err.as_fd())? {
            Message::Failed(failure) => Some(failure),
            _ => None,
        }
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Writes the maps of the child `pid`'s new user namespace, as its privileged parent
/// may (any number of lines), with setgroups allowed so that the guest can set its
/// supplementary groups.
fn write_maps(pid: i32, uid_map: &str, gid_map: &str) -> io::Result<()> {
    for (file, text) in [
        ("setgroups", "allow"),
        ("uid_map", uid_map),
        ("gid_map", gid_map),
    ] {
        std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("write the user namespace's {file} ({:?}): {e}", text.trim()),
            )
        })?;
    }
    Ok(())
}

/// Waits for the child's word that it is its user namespace's root and has made the
/// other new namespaces (`unshare`, `CLONE_NEW*` flags), then joins those with the
/// calling thread: an engine looks at the container's network namespace through the
/// supervisor's `/proc/PID/ns/net`, as when compatrun makes it for itself.
fn join_made(pid: i32, unshare: i32, err: BorrowedFd<'_>) -> io::Result<()> {
    match wire::recv(err) {
        Some(Message::Mapped) => {}
        Some(Message::Failed(f)) => {
            return Err(io::Error::new(
                io::Error::from_raw_os_error(f.errno).kind(),
                format!(
                    "the guest's user namespace ({:?}): {}",
                    f.stage,
                    io::Error::from_raw_os_error(f.errno)
                ),
            ))
        }
        _ => {
            return Err(io::Error::other(
                "the guest ended before it took its user namespace",
            ))
        }
    }
    for (name, flag) in [
        ("net", libc::CLONE_NEWNET),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("cgroup", libc::CLONE_NEWCGROUP),
    ] {
        if unshare & flag == 0 {
            continue;
        }
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{name}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::from_bits_truncate(flag)).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("join the guest's {name} namespace: {e}"),
            )
        })?;
    }
    Ok(())
}

/// Forks a child that waits for the go-ahead, then sets up and execs `image`.
pub fn spawn(image: &ChildImage) -> io::Result<Spawned> {
    let (go_r, go_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let (listen_parent, listen_child) = if image.notify {
        let (a, b) = crate::sys::notify::socketpair()?;
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
    let ptrs = image.pointers()?;

    // SAFETY: fork is sound here because the child runs only async-signal-safe code
    // (child_main uses raw libc calls on memory prepared above and never returns). With
    // a pid namespace, a raw clone(CLONE_NEWPID) is the same fork into a new namespace;
    // unlike unshare(CLONE_NEWPID) it leaves compatrun free to start threads after.
    let pid = unsafe {
        if image.pid_ns {
            // With a user namespace of its own, made in the same call: it then owns the
            // pid namespace (the init may mount its /proc).
            let user = if image.new_user_ns.is_some() {
                libc::CLONE_NEWUSER
            } else {
                0
            };
            let flags = libc::CLONE_NEWPID | user | libc::SIGCHLD;
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
            ptrs: &ptrs,
        };
        super::child::child_main(&ctx);
    }
    drop(go_r);
    drop(err_w);
    drop(listen_child);
    drop(report_w);
    if let Some((uid_map, gid_map)) = &image.new_user_ns {
        if let Err(e) = write_maps(pid, uid_map, gid_map)
            .and_then(|()| wire::send(go_w.as_fd(), Message::Mapped))
            .and_then(|()| join_made(pid, image.unshare, err_r.as_fd()))
        {
            let pid = Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(e);
        }
    }
    Ok(Spawned {
        pid: Pid::from_raw(pid),
        go: Some(go_w),
        err: err_r,
        listener: listen_parent,
        report: report_r,
    })
}
