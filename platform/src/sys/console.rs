//! What a front end does with a guest's terminal that neither `nix` nor the standard
//! library wrap safely: receiving the pty master sent with a name (`SCM_RIGHTS`, as
//! runc's console socket carries it), and window sizes (`TIOCGWINSZ`, `TIOCSWINSZ`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Space for one `SCM_RIGHTS` message carrying one descriptor, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 24]);

/// Receives one descriptor and the bytes sent with it (runc's console socket message:
/// the pty master, and its name) from the Unix socket `sock`; `Ok(None)` when the other
/// end closed without sending one. The descriptor is close-on-exec.
pub fn recv_fd_with_name(sock: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, Vec<u8>)>> {
    let mut name = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: name.as_mut_ptr().cast(),
        iov_len: name.len(),
    };
    let mut buf = CmsgBuf([0; 24]);
    loop {
        // SAFETY: all-zero is a valid msghdr; it points only at locals that outlive the
        // call, and the control buffer is CMSG_SPACE(4) bytes, aligned for cmsghdr; the
        // header the kernel wrote is read only when it names SCM_RIGHTS, whose data is
        // one descriptor (the buffer has room for exactly one).
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
                    libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
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
        let len = usize::try_from(n).unwrap_or(0).min(name.len());
        return match fd {
            // SAFETY: the kernel installed this descriptor in our table for us alone
            // (SCM_RIGHTS), so taking ownership is sound.
            Some(fd) => Ok(Some((
                unsafe { OwnedFd::from_raw_fd(fd) },
                name[..len].to_vec(),
            ))),
            None if n == 0 => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message without a descriptor",
            )),
        };
    }
}

/// The window size (rows, columns) of the terminal open at `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize through the pointer, which points at
    // a local of that type; the descriptor is borrowed, so it stays open for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Sets the window size (rows, columns) of the terminal open at `fd` (its foreground
/// process group gets SIGWINCH when it changes).
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads one struct winsize through the pointer, which points
    // at a local of that type; the descriptor is borrowed, so it stays open for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
