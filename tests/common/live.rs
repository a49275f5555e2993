//! A process watched while it runs: its stdout read line by line, its stdin written on
//! demand, signals sent to it, and its end awaited under a watchdog that kills it and
//! fails the test (a hang is a failure, never a pass; no timing is ever asserted).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous bound for anything awaited (a guard against hangs, never a measurement).
pub const WAIT: Duration = Duration::from_secs(60);

/// A running process, started in a new session without a controlling terminal (so no
/// terminal's job control takes part). Dropping it kills it with SIGKILL.
pub struct Live {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Live {
    /// Starts `cmd` with its stdin a pipe ([`Live::send`] writes to it).
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        platform::sys::exec_prep::new_session(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        Live {
            child: Some(child),
            stdin,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().expect("running").id()).expect("pid fits")
    }

    /// Waits for the next stdout line, which must be `want`.
    pub fn expect_line(&mut self, want: &str) {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                assert_eq!(line, want, "output so far: {:?}", self.seen);
            }
            Err(e) => panic!(
                "waiting for {want:?}: {e:?}; output so far: {:?}",
                self.seen
            ),
        }
    }

    /// The pid of the process's first child (compatrun's guest), once it exists.
    pub fn child_pid(&self) -> i32 {
        let pid = self.pid();
        let mut found = None;
        wait_for(&format!("process {pid} to have a child"), || {
            found = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            found.is_some()
        });
        found.expect("a child")
    }

    /// Waits for the next stdout line and returns it.
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(e) => panic!("waiting for a line: {e:?}; output so far: {:?}", self.seen),
        }
    }

    /// Writes `text` to the process's stdin.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Sends `sig` to the process itself.
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Waits (up to `limit`, then kills it and fails) for the process to end; returns its
    /// status (128+N for signal N), every stdout line it wrote, and its stderr.
    pub fn finish_within(mut self, limit: Duration) -> (i32, Vec<String>, String) {
        self.stdin = None;
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "did not finish within {limit:?}; output so far: {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stdout stays open: {:?}", self.seen),
            }
        }
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (code, std::mem::take(&mut self.seen), stderr)
    }

    /// [`Live::finish_within`] with [`WAIT`].
    pub fn finish(self) -> (i32, Vec<String>, String) {
        self.finish_within(WAIT)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `sig` to `pid`, which must exist.
pub fn signal(pid: i32, sig: i32) {
    let signal = nix::sys::signal::Signal::try_from(sig).expect("a known signal");
    let r = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    assert_eq!(r, Ok(()), "kill({pid}, {sig})");
}

/// Waits until `cond` holds, failing after [`WAIT`] with `what`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The state letter of /proc/PID/stat (R, S, T, t, Z, ...), or None once it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}
