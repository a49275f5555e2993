//! A guest thread waiting in a notified call, as the sentry sees it ([`GuestThread`]).
//!
//! Guest memory is reached through `/proc/TID/mem`, opened once per thread and kept: the
//! open file is bound to the address space it was opened on, so a cached file can never
//! reach another process, even after the thread dies and its id is reused (it then just
//! fails and is reopened). Every open is followed by the kernel's validity check of the
//! notification (`SECCOMP_IOCTL_NOTIF_ID_VALID`): if the waiting thread died between the
//! notification and the open, the id check fails and nothing is read or written.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

use nix::unistd::Pid;

use super::held::Worker;
use crate::contract::{Arch, Fault, GuestThread, InterceptSpec, Rule, Syscall, ThreadOpError};
use crate::sys::notify;

/// How many threads' memory files stay open at most (a guest with more live threads
/// making caught calls just reopens some).
const MAX_OPEN: usize = 256;

/// Open `/proc/TID/mem` files, by thread id.
#[derive(Debug, Default)]
pub(crate) struct MemFiles {
    files: HashMap<i32, File>,
}

impl MemFiles {
    /// The memory file for `tid`, opened (and checked against notification `id`, unless
    /// the thread is `held` stopped, which keeps its id from being reused) if it is not
    /// open yet.
    fn get(&mut self, listener: BorrowedFd<'_>, id: u64, tid: i32, held: bool) -> Option<&File> {
        if !self.files.contains_key(&tid) {
            let file = File::options()
                .read(true)
                .write(true)
                .open(format!("/proc/{tid}/mem"))
                .ok()?;
            // Opened on the right process only if the caller is still waiting now.
            if !held && !notify::id_valid(listener, id) {
                return None;
            }
            if self.files.len() >= MAX_OPEN {
                self.files.clear();
            }
            self.files.insert(tid, file);
        }
        self.files.get(&tid)
    }

    /// Runs `op` on `tid`'s memory file; if a cached file has gone stale (the thread
    /// execed or died), reopens it once.
    fn with<T>(
        &mut self,
        listener: BorrowedFd<'_>,
        id: u64,
        tid: i32,
        held: bool,
        mut op: impl FnMut(&File) -> Option<T>,
    ) -> Option<T> {
        let fresh = !self.files.contains_key(&tid);
        if let Some(v) = self.get(listener, id, tid, held).and_then(&mut op) {
            return Some(v);
        }
        if fresh {
            return None;
        }
        self.files.remove(&tid);
        self.get(listener, id, tid, held).and_then(op)
    }
}

/// A thread waiting in notification `id`.
pub(crate) struct NotifiedThread<'a> {
    pub(crate) listener: BorrowedFd<'a>,
    pub(crate) id: u64,
    pub(crate) tid: i32,
    pub(crate) mem: &'a mut MemFiles,
    /// The notified call.
    pub(crate) call: Syscall,
    /// What the filter hands over: a call run in the thread must not be one of these
    /// (it would wait for the supervisor thread, which waits for it).
    pub(crate) caught: &'a InterceptSpec,
    /// Where calls run in the thread ([`GuestThread::run_syscall`]).
    pub(crate) worker: &'a Worker,
    /// The worker was asked to hold the thread: the verdict goes through it.
    pub(crate) held: bool,
}

impl NotifiedThread<'_> {
    fn write_through(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let fault = Fault {
            addr,
            len: data.len(),
        };
        if data.is_empty() {
            return Ok(());
        }
        addr.checked_add(data.len() as u64).ok_or(fault)?;
        self.mem
            .with(self.listener, self.id, self.tid, self.held, |f| {
                matches!(f.write_at(data, addr), Ok(n) if n == data.len()).then_some(())
            })
            .ok_or(fault)
    }
}

impl GuestThread for NotifiedThread<'_> {
    /// A thread waiting for a notification's answer can be made to run x86_64 calls
    /// (`held`), and its process's other threads stopped for `patch_code`
    /// (`stopall.rs`).
    fn can_run_syscalls(&self) -> bool {
        true
    }

    fn run_syscall(&mut self, nr: u32, args: [u64; 6]) -> Result<i64, ThreadOpError> {
        if self.call.arch != Arch::X86_64 || self.caught.rule_for(Arch::X86_64, nr) == Rule::Catch {
            return Err(ThreadOpError::Unsupported);
        }
        if !self.held && !notify::id_valid(self.listener, self.id) {
            return Err(ThreadOpError::Gone);
        }
        self.held = true;
        self.worker.run_syscall(self.tid, self.call.nr, nr, args)
    }

    fn patch_code(&mut self, addr: u64, data: &[u8]) -> Result<(), ThreadOpError> {
        if !self.held && !notify::id_valid(self.listener, self.id) {
            return Err(ThreadOpError::Gone);
        }
        self.worker.patch_code(self.tid, addr, data.to_vec())
    }

    fn tid(&self) -> i32 {
        self.tid
    }

    fn tgid(&self) -> i32 {
        crate::mem::tgid_of(Pid::from_raw(self.tid)).unwrap_or(self.tid)
    }

    fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let len = buf.len();
        let fault = Fault { addr, len };
        if len == 0 {
            return Ok(());
        }
        addr.checked_add(len as u64).ok_or(fault)?;
        self.mem
            .with(self.listener, self.id, self.tid, self.held, |f| {
                matches!(f.read_at(buf, addr), Ok(n) if n == len).then_some(())
            })
            .ok_or(fault)
    }

    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        // The mem file would write into read-only pages too; a system call's result
        // may not (EFAULT, as the kernel answers).
        if !data.is_empty() && !crate::mem::writable(self.tid, addr, data.len()) {
            return Err(Fault {
                addr,
                len: data.len(),
            });
        }
        self.write_through(addr, data)
    }

    fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        // /proc/PID/mem writes with FOLL_FORCE: read-only private mappings get a private
        // copy of the page, as for a debugger.
        self.write_through(addr, data)
    }
}
