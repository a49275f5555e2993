//! Terminals for a container's processes (`process.terminal`), as runc gives them: the
//! guest's first process makes a pty from its own `/dev/ptmx` and sends the master to
//! the runtime over a socket pair ([`platform::TerminalSpec`]); the runtime passes it on
//! to the engine's `--console-socket` (one `SCM_RIGHTS` message whose bytes are the
//! name, `/dev/ptmx`), or, in the foreground without a socket (`run`, `exec -t`),
//! proxies it to its own standard input and output ([`Proxy`]).

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

/// What the master's message carries besides the descriptor (runc sends the name of
/// the file it opened).
pub const MASTER_NAME: &str = "/dev/ptmx";

/// runc's rules for a terminal and a console socket (its messages too): a detached
/// process (`create`, `run -d`, `exec -d`) with a terminal needs a socket to send it to,
/// and a socket is only for a detached process with a terminal.
pub fn check(terminal: bool, detach: bool, socket: bool) -> anyhow::Result<()> {
    if detach && terminal && !socket {
        bail!("cannot allocate tty if runc will detach without setting console socket");
    }
    if (!detach || !terminal) && socket {
        bail!("cannot use console socket if runc will not detach or allocate tty");
    }
    Ok(())
}

/// Connects to the engine's `--console-socket`.
pub fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path).with_context(|| format!("--console-socket {}", path.display()))
}

/// `process.consoleSize` as (rows, columns), when both are set (as runc applies it).
pub fn size(process: &oci_spec::runtime::Process) -> anyhow::Result<Option<(u16, u16)>> {
    let Some(b) = process.console_size() else {
        return Ok(None);
    };
    if b.height() == 0 || b.width() == 0 {
        return Ok(None);
    }
    let rows = u16::try_from(b.height()).context("process.consoleSize.height is too large")?;
    let cols = u16::try_from(b.width()).context("process.consoleSize.width is too large")?;
    Ok(Some((rows, cols)))
}

/// Waits for the master the guest sends on `ours` (the other end of the pair it was
/// given); an error if the guest ended first.
pub fn recv_master(ours: &UnixStream) -> anyhow::Result<OwnedFd> {
    match platform::sys::console::recv_fd_with_name(ours.as_fd()) {
        Ok(Some((fd, _name))) => Ok(fd),
        Ok(None) => bail!("the container's process ended before its terminal was made"),
        Err(e) => Err(e).context("receive the terminal's master"),
    }
}

/// Sends `master` on `to` as runc does: one message, the name as its bytes.
pub fn send_master(to: &UnixStream, master: BorrowedFd<'_>) -> anyhow::Result<()> {
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(MASTER_NAME.as_bytes())];
    sendmsg::<()>(
        to.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .context("send the terminal's master to the console socket")?;
    Ok(())
}

/// Our own terminal put in raw mode while a container's terminal is proxied; restored
/// when dropped.
struct RawMode {
    tty: File,
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved);
    }
}

/// Gives `master` the window size of our terminal `tty` now and whenever it changes
/// (checked four times a second, until either side is gone); the kernel then sends
/// SIGWINCH to the container terminal's foreground process group, as it would for a
/// terminal of its own. A poll, not a SIGWINCH handler: that signal is passed on to the
/// container's process (see `lifecycle::run`), as runc passes it on.
fn follow_window_size(tty: File, master: OwnedFd) {
    use platform::sys::console::{set_window_size, window_size};
    // Not joined: it ends when a descriptor fails, or with us.
    std::thread::spawn(move || {
        let mut last = None;
        loop {
            let Ok(size) = window_size(tty.as_fd()) else {
                return;
            };
            if last != Some(size) {
                if set_window_size(master.as_fd(), size.0, size.1).is_err() {
                    return;
                }
                last = Some(size);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
}

/// A container's terminal joined to our standard input and output (runc's foreground
/// `run` and `exec -t` without a console socket): keys go to the master, what the
/// container writes comes out on our stdout. Our own terminal, if stdin is one, is in
/// raw mode meanwhile and lends the pty its window size.
pub struct Proxy {
    output: JoinHandle<()>,
    _raw: Option<RawMode>,
}

impl Proxy {
    /// Starts copying between `master` and our standard descriptors.
    pub fn start(master: OwnedFd) -> anyhow::Result<Proxy> {
        let stdin = std::io::stdin();
        let raw = if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
            let tty = File::from(stdin.as_fd().try_clone_to_owned()?);
            follow_window_size(tty.try_clone()?, master.try_clone()?);
            let saved = termios::tcgetattr(&tty).context("the terminal's settings")?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(&tty, SetArg::TCSANOW, &raw).context("raw mode")?;
            Some(RawMode { tty, saved })
        } else {
            None
        };
        let mut keys = File::from(master.try_clone()?);
        // Not joined: it may sit in a read of our stdin until we exit.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || keys.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut screen = File::from(master);
        let output = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut out = std::io::stdout().lock();
            // EIO once no process holds the slave any more.
            while let Ok(n) = screen.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = out.flush();
            }
        });
        Ok(Proxy { output, _raw: raw })
    }

    /// Once the process has ended: lets the last output through (waiting at most
    /// `bound` for whatever else still holds the terminal), then restores our terminal.
    pub fn finish(self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while !self.output.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.output.is_finished() {
            let _ = self.output.join();
        }
    }
}
