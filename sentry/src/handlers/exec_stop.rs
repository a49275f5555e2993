//! Whether an exec needs the new program stopped for the sentry's exec-time work.
//!
//! That work (the vDSO's version note, the "kernel too old" line) matters only to a
//! program whose C library compares the kernel's version at start-up: glibc before 2.35,
//! through its loader or linked statically (the check's message is in that file). The
//! seccomp platform has to seize a thread to stop it at its exec; for any other program
//! (the host's own current tools run under a legacy persona, say) that seize and stop
//! are pure cost on every fork+exec. So at the `execve` notification the program the
//! guest names is opened as the guest's exec will find it (inside its root) and judged
//! once per file: only one that checks, or one that cannot be judged, is stopped.
//!
//! The answer may go stale between the look and the exec (the guest replaces the file
//! in between): then that one program keeps the host's version in its vDSO note, which
//! the guest could also have had by other means. Nothing of the guest's is trusted: an
//! unreadable path, a relative one, a script, `execveat`, anything unusual is stopped.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use platform::{Arch, GuestThread, Syscall};

use super::removed::read_cstr;
use super::too_old::{carries_check, interpreter, key_of, remember, ProgramKey};

/// Programs already judged.
#[derive(Debug, Default)]
pub struct ExecStops {
    known: HashMap<ProgramKey, bool>,
}

impl ExecStops {
    /// Whether the exec `call` that `g` waits in must stop the new program.
    pub fn needed<G: GuestThread>(&mut self, g: &mut G, call: &Syscall) -> bool {
        let is_execve = matches!(
            (call.arch, call.nr),
            (Arch::X86_64, 59) | (Arch::I386, 11) | (Arch::X32, 520)
        );
        if !is_execve {
            return true;
        }
        let Ok(path) = read_cstr(g, call.args[0]) else {
            return true; // the call itself will fail
        };
        if path.first() != Some(&b'/') {
            return true; // relative to the guest's cwd: not judged
        }
        let Ok(path) = CString::new(path) else {
            return true;
        };
        let tid = g.tid();
        let Ok(root) = File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(format!("/proc/{tid}/root"))
        else {
            return true;
        };
        let Ok(mut program) = platform::sys::open_in_root(root.as_fd(), &path) else {
            return true;
        };
        let (Ok(file), Ok(dir)) = (program.metadata(), root.metadata()) else {
            return true;
        };
        if !file.is_file() {
            return true; // the exec fails, or it is not ours to read (a FIFO, a device)
        }
        let key = key_of(&file, &dir);
        if let Some(&known) = self.known.get(&key) {
            return known;
        }
        let needed = checks_version(&mut program, &root);
        remember(&mut self.known, key, needed);
        needed
    }
}

/// Whether `program` (opened inside `root`) compares the kernel's version when it
/// starts: true unless it is an ELF file whose loader, or itself when static, is
/// readable and carries no such check.
fn checks_version(program: &mut File, root: &File) -> bool {
    let mut head = Vec::new();
    if program.by_ref().take(8192).read_to_end(&mut head).is_err() {
        return true;
    }
    if head.get(..4) != Some(b"\x7fELF") {
        return true; // a script (its interpreter decides) or another format
    }
    let whole = |file: &mut File, start: Vec<u8>| -> Option<Vec<u8>> {
        let mut data = start;
        file.read_to_end(&mut data).ok()?;
        Some(data)
    };
    let data = match interpreter(&head) {
        Some(loader) => {
            let Some(loader) = loader.to_str().and_then(|l| CString::new(l).ok()) else {
                return true;
            };
            match platform::sys::open_in_root(root.as_fd(), &loader) {
                Ok(mut f) if f.metadata().is_ok_and(|m| m.is_file()) => whole(&mut f, Vec::new()),
                _ => None,
            }
        }
        None => whole(program, head),
    };
    data.is_none_or(|d| carries_check(&d))
}
