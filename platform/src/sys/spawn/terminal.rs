//! The guest's first process making its own terminal, between fork and exec (so only
//! async-signal-safe calls): a pty from `/dev/ptmx` as the process sees it, the slave as
//! its controlling terminal and standard descriptors, the master sent to the front end.

use super::image::ChildCtx;
use super::wire::{errno, ChildStage};
use crate::command::TerminalSpec;

/// The bytes that go with the master: runc sends the name of the file it opened.
const MASTER_NAME: &[u8] = b"/dev/ptmx";

/// Makes the terminal `t` asks for; on failure reports [`ChildStage::Terminal`] and exits.
pub(super) fn take_terminal(ctx: &ChildCtx<'_>, t: &TerminalSpec) {
    if let Err(e) = make(t) {
        ctx.fail(ChildStage::Terminal, e, 125);
    }
}

fn make(t: &TerminalSpec) -> Result<(), i32> {
    // SAFETY: async-signal-safe system calls on a constant path, on descriptors this
    // process opens here (or was handed in `t.socket`), and on locals that outlive each
    // call: the ioctls take an int or a winsize on our stack, as their numbers say.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(errno());
        }
        let unlock: libc::c_int = 0;
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(errno());
        }
        if let Some((rows, cols)) = t.size {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if libc::ioctl(master, libc::TIOCSWINSZ, &ws) != 0 {
                return Err(errno());
            }
        }
        // The slave of this very master (whatever devpts instance it came from).
        let slave = libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            return Err(errno());
        }
        if t.console && !bind_console(slave) {
            return Err(errno());
        }
        if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(errno());
        }
        for fd in 0..3 {
            if libc::dup2(slave, fd) != fd {
                return Err(errno());
            }
        }
        if slave > 2 {
            libc::close(slave);
        }
        if !send_with_name(t.socket, master) {
            return Err(errno());
        }
        libc::close(master);
        libc::close(t.socket);
    }
    Ok(())
}

/// Binds the slave open at `slave` over `/dev/console` (through its /proc/self/fd link,
/// formatted on the stack), making an empty file there first if there is none.
fn bind_console(slave: i32) -> bool {
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let Ok(mut n) = u32::try_from(slave) else {
        return false;
    };
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        path[14 + i] = *d;
    }
    // SAFETY: async-signal-safe system calls on constant paths and on `path`, a
    // NUL-terminated buffer on our stack (14 bytes of prefix, at most 10 digits, then
    // zeros).
    unsafe {
        let fd = libc::open(
            c"/dev/console".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOCTTY | libc::O_CLOEXEC,
            0o666,
        );
        if fd >= 0 {
            libc::close(fd);
        }
        libc::mount(
            path.as_ptr().cast(),
            c"/dev/console".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) == 0
    }
}

/// Sends `fd` over the Unix socket `sock` with [`MASTER_NAME`] as the message's bytes.
fn send_with_name(sock: i32, fd: i32) -> bool {
    crate::sys::scm::send_fd(sock, fd, MASTER_NAME)
}
