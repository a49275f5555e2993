//! One descriptor passed over a Unix socket with the bytes that go with it
//! (`SCM_RIGHTS`): the seccomp listener from the guest's first process to compatrun, and
//! a terminal's master to an engine's console socket (runc's format: the descriptor and
//! its name).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Space for one `SCM_RIGHTS` message carrying one descriptor (`CMSG_SPACE(4)` on 64-bit
/// Linux), aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 24]);

/// Sends descriptor `fd` over `sock` with `bytes` (at least one) as the message's data.
/// Async-signal-safe (no allocation): the guest's first process calls it between fork
/// and exec. Returns false unless the whole message went.
pub fn send_fd(sock: RawFd, fd: RawFd, bytes: &[u8]) -> bool {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut buf = CmsgBuf([0; 24]);
    // SAFETY: all-zero is a valid msghdr; every pointer set below refers to a local or to
    // `bytes` (which the kernel only reads), all outliving the sendmsg call, and
    // CMSG_SPACE(4) == 24 fits `buf`, which is aligned for cmsghdr.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return false;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                return usize::try_from(n).is_ok_and(|n| n == bytes.len());
            }
        }
    }
}

/// Receives one descriptor sent with [`send_fd`] and its bytes (into `data`, truncated
/// to fit); `Ok(None)` when the other end closed without sending. The descriptor is
/// close-on-exec.
pub fn recv_fd(sock: BorrowedFd<'_>, data: &mut [u8]) -> io::Result<Option<(OwnedFd, usize)>> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut buf = CmsgBuf([0; 24]);
    loop {
        // SAFETY: all-zero is a valid msghdr; it points only at locals and `data`, which
        // outlive the call, and the control buffer is CMSG_SPACE(4) bytes, aligned for
        // cmsghdr; the header the kernel wrote is read only when it names SCM_RIGHTS
        // with room for exactly one descriptor.
        let (n, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = buf.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            let fd = if n > 0
                && !cmsg.is_null()
                && (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                && (*cmsg).cmsg_len == libc::CMSG_LEN(4) as usize
            {
                Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                ))
            } else {
                None
            };
            (n, fd)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let len = usize::try_from(n).unwrap_or(0).min(data.len());
        return match fd {
            // SAFETY: the kernel installed this descriptor in our table for us alone
            // (SCM_RIGHTS), so taking ownership is sound.
            Some(fd) => Ok(Some((unsafe { OwnedFd::from_raw_fd(fd) }, len))),
            None if n == 0 => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message without a descriptor",
            )),
        };
    }
}
