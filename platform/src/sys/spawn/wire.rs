//! The messages that pass between compatrun, the pre-exec child and the pid namespace's
//! init, and their byte format: every message is one fixed-size frame, encoded and
//! decoded here and nowhere else.
//!
//! Each channel is a pipe that carries frames one way: the go-ahead (parent -> child,
//! after "mapped" when the child has a user namespace of its own, which the child
//! answers on the error pipe),
//! a failure (child or init -> parent; the pipe is close-on-exec, so a successful exec
//! leaves it empty), and job-control reports (init -> parent, notify mode). A frame is
//! shorter than `PIPE_BUF`, so it is written and read whole.

use std::io;
use std::os::fd::BorrowedFd;

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
    /// Setting the requested capabilities.
    Capabilities,
    /// Waiting on the start gate.
    Gate,
    /// Installing the front end's own filters ([`crate::ExtraFilter`]).
    ExtraFilter,
    /// Making the guest's terminal.
    Terminal,
    /// Writing the sysctl with this index ([`crate::GuestCommand::sysctls`]).
    Sysctl(u16),
}

/// Why the child did not reach the guest program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildFailure {
    /// The step that failed.
    pub stage: ChildStage,
    /// The errno it failed with.
    pub errno: i32,
}

/// A job-control change of the guest's first process, as its init reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestJobEvent {
    /// Stopped by this signal.
    Stopped(i32),
    /// Continued.
    Continued,
}

/// One message between the roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Parent -> child: seized (or listening); go on to the filter and exec.
    Go,
    /// Parent -> child, before `Go`: the maps of the child's new user namespace are
    /// written; become its root. Child -> parent (on the error pipe): done, and the
    /// other new namespaces are made.
    Mapped,
    /// Child or init -> parent: the guest program was not reached.
    Failed(ChildFailure),
    /// Init -> parent: the guest's first process stopped or continued.
    Job(GuestJobEvent),
}

/// The size of every frame.
pub const FRAME: usize = 8;

const TAG_GO: u8 = b'G';
const TAG_MAPPED: u8 = b'M';
const TAG_FAILED: u8 = b'F';
const TAG_STOPPED: u8 = b'S';
const TAG_CONTINUED: u8 = b'C';

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
            ChildStage::Capabilities => 8,
            ChildStage::Gate => 9,
            ChildStage::ExtraFilter => 10,
            ChildStage::Terminal => 11,
            ChildStage::Sysctl(_) => 12,
        }
    }

    fn detail(self) -> u16 {
        match self {
            ChildStage::Rootfs(i) | ChildStage::Sysctl(i) => i,
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
            Self::Capabilities,
            Self::Gate,
            Self::ExtraFilter,
            Self::Terminal,
            Self::Sysctl(detail),
        ]
        .into_iter()
        .find(|s| s.code() == c)
    }
}

impl Message {
    /// The frame for this message. Allocation-free, so the child may call it.
    pub fn encode(self) -> [u8; FRAME] {
        let mut f = [0u8; FRAME];
        match self {
            Message::Go => f[0] = TAG_GO,
            Message::Mapped => f[0] = TAG_MAPPED,
            Message::Failed(ChildFailure { stage, errno }) => {
                f[0] = TAG_FAILED;
                f[1] = stage.code();
                f[2..6].copy_from_slice(&errno.to_ne_bytes());
                f[6..8].copy_from_slice(&stage.detail().to_ne_bytes());
            }
            Message::Job(GuestJobEvent::Stopped(sig)) => {
                f[0] = TAG_STOPPED;
                f[1] = u8::try_from(sig).unwrap_or(0);
            }
            Message::Job(GuestJobEvent::Continued) => f[0] = TAG_CONTINUED,
        }
        f
    }

    /// The message in a frame; `None` for a short or malformed one.
    pub fn decode(frame: &[u8]) -> Option<Message> {
        let f: &[u8; FRAME] = frame.try_into().ok()?;
        match f[0] {
            TAG_GO => Some(Message::Go),
            TAG_MAPPED => Some(Message::Mapped),
            TAG_FAILED => {
                let detail = u16::from_ne_bytes([f[6], f[7]]);
                Some(Message::Failed(ChildFailure {
                    stage: ChildStage::from_code(f[1], detail)?,
                    errno: i32::from_ne_bytes([f[2], f[3], f[4], f[5]]),
                }))
            }
            TAG_STOPPED => Some(Message::Job(GuestJobEvent::Stopped(i32::from(f[1])))),
            TAG_CONTINUED => Some(Message::Job(GuestJobEvent::Continued)),
            _ => None,
        }
    }
}

/// Sends `msg` on `fd` from compatrun's side.
pub fn send(fd: BorrowedFd<'_>, msg: Message) -> io::Result<()> {
    let frame = msg.encode();
    let n = nix::unistd::write(fd, &frame).map_err(io::Error::from)?;
    if n == FRAME {
        Ok(())
    } else {
        Err(io::Error::from(io::ErrorKind::WriteZero))
    }
}

/// Receives one message on `fd`; `None` at EOF, on an error or on a malformed frame.
pub fn recv(fd: BorrowedFd<'_>) -> Option<Message> {
    let mut frame = [0u8; FRAME];
    let n = nix::unistd::read(fd, &mut frame).ok()?;
    Message::decode(&frame[..n])
}

/// Sends `msg` on the raw descriptor `fd` from the child or the init (async-signal-safe:
/// one write(2) of a stack buffer). Returns whether the whole frame was written.
pub fn send_raw(fd: i32, msg: Message) -> bool {
    let frame = msg.encode();
    // SAFETY: write(2) is async-signal-safe and reads exactly `frame.len()` bytes of a
    // live stack buffer; a bad `fd` only makes it fail with EBADF.
    let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    usize::try_from(n) == Ok(FRAME)
}

/// Receives one message on the raw descriptor `fd` in the child, retrying on EINTR;
/// `None` at EOF or on a malformed frame.
pub fn recv_raw(fd: i32) -> Option<Message> {
    let mut frame = [0u8; FRAME];
    loop {
        // SAFETY: read(2) is async-signal-safe and writes at most `frame.len()` bytes
        // into a live stack buffer; a bad `fd` only makes it fail with EBADF.
        let n = unsafe { libc::read(fd, frame.as_mut_ptr().cast(), frame.len()) };
        match usize::try_from(n) {
            Ok(n) => return Message::decode(&frame[..n]),
            Err(_) if errno() == libc::EINTR => continue,
            Err(_) => return None,
        }
    }
}

/// The calling thread's errno (async-signal-safe).
pub fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn every_message_survives_its_frame() {
        let stages = [
            ChildStage::Handshake,
            ChildStage::Chdir,
            ChildStage::Filter,
            ChildStage::Exec,
            ChildStage::Isolate,
            ChildStage::Rootfs(513),
            ChildStage::User,
            ChildStage::Capabilities,
            ChildStage::Gate,
            ChildStage::Terminal,
            ChildStage::Sysctl(7),
        ];
        let mut all = vec![
            Message::Go,
            Message::Mapped,
            Message::Job(GuestJobEvent::Stopped(libc::SIGTSTP)),
            Message::Job(GuestJobEvent::Continued),
        ];
        all.extend(stages.into_iter().map(|stage| {
            Message::Failed(ChildFailure {
                stage,
                errno: libc::ENOEXEC,
            })
        }));
        for msg in all {
            assert_eq!(Message::decode(&msg.encode()), Some(msg), "{msg:?}");
        }
    }

    #[test]
    fn short_and_unknown_frames_are_refused() {
        let frame = Message::Go.encode();
        assert_eq!(Message::decode(&frame[..FRAME - 1]), None);
        assert_eq!(Message::decode(&[]), None);
        assert_eq!(Message::decode(&[b'?'; FRAME]), None);
        let mut bad_stage = Message::Failed(ChildFailure {
            stage: ChildStage::Exec,
            errno: 2,
        })
        .encode();
        bad_stage[1] = 99;
        assert_eq!(Message::decode(&bad_stage), None);
    }

    #[test]
    fn frames_cross_a_pipe_one_at_a_time() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        send(w.as_fd(), Message::Job(GuestJobEvent::Stopped(19))).expect("send");
        send(w.as_fd(), Message::Job(GuestJobEvent::Continued)).expect("send");
        drop(w);
        assert_eq!(
            recv(r.as_fd()),
            Some(Message::Job(GuestJobEvent::Stopped(19)))
        );
        assert_eq!(
            recv(r.as_fd()),
            Some(Message::Job(GuestJobEvent::Continued))
        );
        assert_eq!(recv(r.as_fd()), None);
    }
}
