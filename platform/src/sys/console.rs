//! What a front end does with a guest's terminal that neither `nix` nor the standard
//! library wrap safely: receiving the pty master sent with a name (`SCM_RIGHTS`, as
//! runc's console socket carries it), and window sizes (`TIOCGWINSZ`, `TIOCSWINSZ`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Receives one descriptor and the bytes sent with it (runc's console socket message:
/// the pty master, and its name) from the Unix socket `sock`; `Ok(None)` when the other
/// end closed without sending one. The descriptor is close-on-exec.
pub fn recv_fd_with_name(sock: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, Vec<u8>)>> {
    let mut name = [0u8; 4096];
    Ok(super::scm::recv_fd(sock, &mut name)?.map(|(fd, n)| (fd, name[..n].to_vec())))
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
