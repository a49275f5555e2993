//! Seccomp user notification: the listener's ioctls, and passing the listener from the
//! guest's first process to compatrun over a socket (`SCM_RIGHTS`).
//!
//! The guest installs its filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER`; the kernel
//! returns the listener in the guest, which sends it to compatrun and closes its own copy
//! before it execs, so no guest process ever holds a way to answer its own calls.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): wake the supervisor on the CPU of
/// the thread that made the call, and switch to it at once.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// One notification: a guest thread waiting in a caught call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The kernel's cookie for this call; replies and validity checks name it.
    pub id: u64,
    /// The calling thread, as seen from compatrun's pid namespace.
    pub tid: i32,
    /// `seccomp_data.arch` (an AUDIT_ARCH value).
    pub arch: u32,
    /// `seccomp_data.nr`, raw (x32 calls carry the x32 bit).
    pub nr: u32,
    /// The six argument registers.
    pub args: [u64; 6],
    /// `seccomp_data.instruction_pointer`: the address after the call's instruction.
    pub ip: u64,
}

/// Whether the running kernel's notification structures fit the ones compiled in here
/// (`SECCOMP_GET_NOTIF_SIZES`): a newer kernel may grow them, and receiving into a
/// buffer smaller than the kernel's would overrun it. Errors mean "not supported".
pub fn check_sizes() -> io::Result<()> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one `seccomp_notif_sizes` through the
    // pointer, which points at a local of exactly that type.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &raw mut sizes,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let fits = usize::from(sizes.seccomp_notif) <= std::mem::size_of::<libc::seccomp_notif>()
        && usize::from(sizes.seccomp_notif_resp) <= std::mem::size_of::<libc::seccomp_notif_resp>();
    if fits {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel's seccomp notification structures are larger than compatrun's",
        ))
    }
}

/// Asks for synchronous wake-ups (Linux 6.6 and later; older kernels refuse, which only
/// costs speed). Returns whether the kernel accepted.
pub fn set_sync_wakeup(listener: BorrowedFd<'_>) -> bool {
    // SAFETY: SECCOMP_IOCTL_NOTIF_SET_FLAGS takes its flags by value in the argument; no
    // memory is passed; the kernel checks that the fd is a listener.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        ) == 0
    }
}

/// Waits for the next notification (`SECCOMP_IOCTL_NOTIF_RECV`).
///
/// `ENOENT` means the caller vanished before it could be handed over; `EINTR` that a
/// signal interrupted the wait: callers retry both.
pub fn recv(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: all-zero is a valid `seccomp_notif` (plain integers), and the kernel
    // requires the buffer to be zeroed.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one `seccomp_notif` through the pointer; `check_sizes` (run
    // before any listener is used) made sure the kernel's struct is no larger.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &raw mut n,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::cast_sign_loss)] // seccomp_data.nr is the raw 32-bit number
    let nr = n.data.nr as u32;
    Ok(Notification {
        id: n.id,
        tid: i32::try_from(n.pid).unwrap_or(-1),
        arch: n.data.arch,
        nr,
        args: n.data.args,
        ip: n.data.instruction_pointer,
    })
}

/// Answers notification `id`: `None` lets the call run as made
/// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), `Some(v)` makes it return `v` (a value in
/// -4095..=-1 is an error number). `ENOENT` means the caller is gone (killed while
/// waiting): nothing to answer.
pub fn respond(listener: BorrowedFd<'_>, id: u64, value: Option<i64>) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: 0,
    };
    match value {
        None => resp.flags = u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap_or(1),
        Some(v) if (-4095..0).contains(&v) => resp.error = i32::try_from(v).unwrap_or(-1),
        Some(v) => resp.val = v,
    }
    // SAFETY: SEND reads one `seccomp_notif_resp` from the pointer, a fully initialised
    // local of that type.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &raw mut resp,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether notification `id` is still pending (`SECCOMP_IOCTL_NOTIF_ID_VALID`): the
/// kernel's guard against a thread that died, and whose id was reused, between the
/// notification and what the supervisor does to it.
pub fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ID_VALID reads one u64 from the pointer, a local.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &raw mut id,
        ) == 0
    }
}

/// A connected pair of `AF_UNIX` sequenced-packet sockets (EOF when the peer closes), close-on-exec: the guest's first
/// process sends the listener on one end, compatrun receives it on the other.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two descriptors into the local array it is given.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by the kernel and are owned by nobody
    // else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends descriptor `fd` over `sock`. Async-signal-safe (no allocation): the guest's
/// first process calls it between fork and exec. Returns false on failure.
pub fn send_fd_raw(sock: RawFd, fd: RawFd) -> bool {
    super::scm::send_fd(sock, fd, &[0])
}

/// Receives one descriptor sent with [`send_fd_raw`]; `Ok(None)` when the other end
/// closed without sending (the guest failed before installing its filter).
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    Ok(super::scm::recv_fd(sock, &mut [0u8; 1])?.map(|(fd, _)| fd))
}

/// Whether this process could install a filter with a listener: the kernel allows one
/// listener per process, so under another user-notification supervisor (compatrun
/// inside compatrun, some container runtimes) it refuses with EBUSY. Tried in a forked
/// child, so this process is never filtered.
pub fn listener_possible() -> bool {
    // One instruction: SECCOMP_RET_ALLOW.
    let allow = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0x7fff_0000,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_ptr().cast_mut(),
    };
    // SAFETY: the child makes only async-signal-safe system calls on memory prepared
    // before the fork, then _exits; the parent only waits for it.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return false;
        }
        if pid == 0 {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1u64, 0u64, 0u64, 0u64);
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const prog,
            );
            libc::_exit(if fd >= 0 { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                return false;
            }
        }
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}
