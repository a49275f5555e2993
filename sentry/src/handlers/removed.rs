//! Calls the persona's kernel had but today's host has removed, answered as that kernel
//! answered in a usual distribution configuration (RHEL, Debian: profiling on, nfsd a
//! module that a guest cannot use, a.out support off). Each answer is documented in
//! docs/PERSONAS.md.
//!
//! - `lookup_dcookie` (removed 5.12): EPERM without CAP_SYS_ADMIN, else EINVAL (no
//!   profiler is running, so no cookie is live).
//! - `nfsservctl` (removed 3.1): EFAULT for an unreadable argument, EINVAL for a wrong
//!   `ca_version` or an unknown command, else ENODEV (the nfsd filesystem is not there
//!   for the guest; callers such as rpc.nfsd then use /proc/fs/nfsd).
//! - `uselib` (i386; the x86_64 entry has answered ENOSYS since 2.6.11): the library is
//!   looked up in the guest's view and checked as the kernel did (ENOENT, ENOTDIR,
//!   EACCES for anything but a readable, executable regular file), then ENOEXEC: no
//!   binary format could load a shared library (a.out support is off).

use platform::{Arch, GuestThread, Syscall, Verdict};

/// Which removed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// `lookup_dcookie`.
    LookupDcookie,
    /// `nfsservctl`.
    Nfsservctl,
    /// `uselib`.
    Uselib,
}

/// `NFSCTL_VERSION`.
const NFSCTL_VERSION: i32 = 0x0201;
/// The commands 2.6-era nfsservctl knew (SVC, ADDCLIENT, DELCLIENT, EXPORT, UNEXPORT,
/// GETFD, GETFS).
const NFSCTL_COMMANDS: [i64; 7] = [0, 1, 2, 3, 4, 7, 8];
/// `PATH_MAX`.
const PATH_MAX: usize = 4096;
/// `CAP_SYS_ADMIN`.
const CAP_SYS_ADMIN: u32 = 21;

/// The guest thread's effective capabilities and uid/gid, from /proc/TID/status.
fn creds(tid: i32) -> Option<(u64, u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |key: &str, n: usize| -> Option<&str> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .nth(n)
    };
    let caps = u64::from_str_radix(field("CapEff:", 0)?, 16).ok()?;
    Some((
        caps,
        field("Uid:", 1)?.parse().ok()?,
        field("Gid:", 1)?.parse().ok()?,
    ))
}

/// Reads a NUL-terminated string from the guest, page by page (a string that ends just
/// before an unmapped page must not fault). ENAMETOOLONG past PATH_MAX.
pub fn read_cstr<G: GuestThread>(g: &mut G, addr: u64) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let to_page_end = 4096 - usize::try_from(at % 4096).unwrap_or(0);
        let n = to_page_end.min(PATH_MAX - out.len());
        let mut chunk = vec![0u8; n];
        g.read_mem(at, &mut chunk).map_err(|_| libc::EFAULT)?;
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at = at.checked_add(n as u64).ok_or(libc::EFAULT)?;
    }
    Err(libc::ENAMETOOLONG)
}

fn uselib<G: GuestThread>(g: &mut G, path_ptr: u64) -> i32 {
    use std::os::unix::fs::MetadataExt;
    let tid = g.tid();
    let path = match read_cstr(g, path_ptr) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if path.is_empty() {
        return libc::ENOENT;
    }
    let path = String::from_utf8_lossy(&path).into_owned();
    // The guest's view: its root for absolute paths, its cwd for relative ones.
    let host = if let Some(rest) = path.strip_prefix('/') {
        format!("/proc/{tid}/root/{rest}")
    } else {
        format!("/proc/{tid}/cwd/{path}")
    };
    let meta = match std::fs::metadata(&host) {
        Ok(m) => m,
        Err(e) => return e.raw_os_error().unwrap_or(libc::ENOENT),
    };
    if !meta.is_file() {
        return libc::EACCES;
    }
    let (caps, uid, gid) = creds(tid).unwrap_or((0, u32::MAX, u32::MAX));
    let mode = meta.mode();
    let bits = if uid == 0 && caps != 0 {
        // root may read anything, and execute anything with some x bit
        0o4 | if mode & 0o111 != 0 { 0o1 } else { 0 }
    } else if meta.uid() == uid {
        (mode >> 6) & 0o7
    } else if meta.gid() == gid {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    if bits & 0o5 != 0o5 {
        return libc::EACCES;
    }
    libc::ENOEXEC
}

/// Answers a removed call.
pub fn handle<G: GuestThread>(g: &mut G, call: &Syscall, which: Removed) -> Verdict {
    let e = match which {
        Removed::LookupDcookie => {
            let admin = creds(g.tid()).is_some_and(|(caps, _, _)| caps & (1 << CAP_SYS_ADMIN) != 0);
            if admin {
                libc::EINVAL
            } else {
                libc::EPERM
            }
        }
        Removed::Nfsservctl => {
            let mut v = [0u8; 4];
            if g.read_mem(call.args[1], &mut v).is_err() {
                libc::EFAULT
            } else if i32::from_le_bytes(v) != NFSCTL_VERSION {
                libc::EINVAL
            } else {
                #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // C int
                let cmd = i64::from(call.args[0] as u32 as i32);
                if NFSCTL_COMMANDS.contains(&cmd) {
                    libc::ENODEV
                } else {
                    libc::EINVAL
                }
            }
        }
        Removed::Uselib if call.arch == Arch::X86_64 => libc::ENOSYS,
        Removed::Uselib => uselib(g, call.args[0]),
    };
    Verdict::errno(e)
}
