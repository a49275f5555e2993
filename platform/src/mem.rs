//! Reading and writing guest memory from the supervisor.
//!
//! `process_vm_readv`/`writev` copy in one system call without stopping anything and fail
//! cleanly on unmapped or protected guest addresses, which become a [`Fault`] (EFAULT for
//! the guest). Guest pointers are never trusted: a wrapping range is a fault before any
//! system call is made.

use std::io::{IoSlice, IoSliceMut};

use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use crate::contract::Fault;

fn remote(addr: u64, len: usize) -> Result<RemoteIoVec, Fault> {
    let fault = Fault { addr, len };
    let base = usize::try_from(addr).map_err(|_| fault)?;
    base.checked_add(len).ok_or(fault)?;
    Ok(RemoteIoVec { base, len })
}

/// Reads exactly `buf.len()` bytes at `addr` in `pid`'s address space.
pub fn read(pid: Pid, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
    let len = buf.len();
    if len == 0 {
        return Ok(());
    }
    let iov = [remote(addr, len)?];
    match process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &iov) {
        Ok(n) if n == len => Ok(()),
        _ => Err(Fault { addr, len }),
    }
}

/// Writes all of `data` at `addr` in `pid`'s address space.
pub fn write(pid: Pid, addr: u64, data: &[u8]) -> Result<(), Fault> {
    let len = data.len();
    if len == 0 {
        return Ok(());
    }
    let iov = [remote(addr, len)?];
    match process_vm_writev(pid, &[IoSlice::new(data)], &iov) {
        Ok(n) if n == len => Ok(()),
        _ => Err(Fault { addr, len }),
    }
}

/// Writes `data` at `addr` through `/proc/PID/mem`, which (for a tracer) may write into
/// read-only private mappings: the kernel gives the process its own copy of the page.
pub fn write_force(pid: Pid, addr: u64, data: &[u8]) -> Result<(), Fault> {
    use std::os::unix::fs::FileExt;
    let fault = Fault {
        addr,
        len: data.len(),
    };
    remote(addr, data.len())?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|_| fault)?;
    match file.write_at(data, addr) {
        Ok(n) if n == data.len() => Ok(()),
        _ => Err(fault),
    }
}

/// Writes up to 8 bytes at `addr` in a thread stopped under our ptrace, as
/// [`write_force`] does, with one `PTRACE_PEEKDATA` and one `PTRACE_POKEDATA` (a
/// debugger's write, copy-on-write included) instead of opening `/proc/PID/mem`.
/// Fails (nothing written) for longer data or where the 8 bytes at `addr` are not all
/// mapped.
pub fn poke(pid: Pid, addr: u64, data: &[u8]) -> Result<(), Fault> {
    use nix::sys::ptrace;
    let fault = Fault {
        addr,
        len: data.len(),
    };
    if data.len() > 8 {
        return Err(fault);
    }
    let at = remote(addr, 8)?.base as ptrace::AddressType;
    let word = ptrace::read(pid, at).map_err(|_| fault)?;
    let mut bytes = word.to_ne_bytes();
    bytes[..data.len()].copy_from_slice(data);
    ptrace::write(pid, at, libc::c_long::from_ne_bytes(bytes)).map_err(|_| fault)
}

/// Whether `[addr, addr + len)` lies in mappings the thread `tid` may write itself
/// (`w` in `/proc/TID/maps`): a write through `/proc/TID/mem` ignores page protections
/// (as for a debugger), where the kernel answers EFAULT to a system call writing into a
/// read-only buffer.
pub fn writable(tid: i32, addr: u64, len: usize) -> bool {
    let Some(end) = addr.checked_add(len as u64) else {
        return false;
    };
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{tid}/maps")) else {
        return false;
    };
    let mut at = addr;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        // Mappings are listed in address order: the next byte to check must be in this
        // one, or there is a hole.
        if hi <= at {
            continue;
        }
        if lo > at || perms.as_bytes().get(1) != Some(&b'w') {
            return false;
        }
        at = hi;
        if at >= end {
            return true;
        }
    }
    false
}

/// The thread group (process) a thread belongs to: itself if it leads one, else from
/// `/proc/TID/status`.
pub fn tgid_of(tid: Pid) -> Option<i32> {
    // A thread that leads its group is its process: `pidfd_open` accepts only a leader
    // (one system call, where /proc/TID/status is formatted in full).
    if crate::sys::pidfd_open(tid).is_ok() {
        return Some(tid.as_raw());
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_follows_the_mappings_protection() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        let heap = vec![0u8; 100_000];
        assert!(writable(me, heap.as_ptr() as u64, heap.len()));
        let text: &'static str = "a string literal lives in a read-only mapping";
        assert!(!writable(me, text.as_ptr() as u64, text.len()));
        assert!(!writable(me, 0, 1));
        assert!(!writable(me, u64::MAX - 1, 4));
    }

    #[test]
    fn reads_and_writes_own_memory_and_faults_cleanly() {
        let me = nix::unistd::getpid();
        let mut src = *b"compatrun";
        let mut out = [0u8; 9];
        read(me, src.as_ptr() as u64, &mut out).expect("read own memory");
        assert_eq!(&out, b"compatrun");
        write(me, src.as_mut_ptr() as u64, b"COMPAT").expect("write own memory");
        assert_eq!(&src, b"COMPATrun");
        assert_eq!(read(me, 8, &mut out), Err(Fault { addr: 8, len: 9 }));
        assert!(read(me, u64::MAX - 2, &mut out).is_err());
        assert_eq!(tgid_of(me), Some(me.as_raw()));
        // A thread that does not lead its process is looked up.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid()).expect("sent");
            done_rx.recv().ok();
        });
        let tid = rx.recv().expect("thread id");
        assert_ne!(tid, me);
        assert_eq!(tgid_of(tid), Some(me.as_raw()));
        done_tx.send(()).expect("sent");
        t.join().expect("thread ended");
    }
}
