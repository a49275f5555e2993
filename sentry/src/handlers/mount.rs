//! `mount(2)` of a new `proc` by the guest (`mount -t proc proc /x`): the new proc must
//! show the persona in `version`, `sys/kernel/osrelease` and `sys/kernel/version`, as the
//! guest's own `/proc` does. The sentry makes the mount itself, in the guest's
//! namespaces, with the persona's files over it (`platform::sys::guest_mount`), and
//! answers the guest with the mount's result.
//!
//! Everything else runs natively: other file system types, remounts, binds, moves and
//! propagation changes; a proc mount by a thread without CAP_SYS_ADMIN in its user
//! namespace (it fails there with EPERM as natively); and any call whose strings cannot
//! be read (the kernel answers EFAULT). A thread in a user namespace of its own (an OCI
//! container's, or one it made) gets the mount made in that namespace, with the rights
//! it has there.

use std::ffi::CString;

use platform::sys::guest_mount::{mount_proc, ProcMount};
use platform::{GuestThread, Syscall, Verdict};

use super::removed::read_cstr;

/// `MS_REMOUNT | MS_BIND | MS_MOVE | MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE`:
/// not a new mount.
const NOT_NEW: u64 = libc::MS_REMOUNT
    | libc::MS_BIND
    | libc::MS_MOVE
    | libc::MS_SHARED
    | libc::MS_PRIVATE
    | libc::MS_SLAVE
    | libc::MS_UNBINDABLE;
/// `CAP_SYS_ADMIN`.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether guest thread `tid` could mount a proc: it holds CAP_SYS_ADMIN (in its own
/// user namespace, where compatrun's helper makes the mount).
fn may_mount(tid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let cap_admin = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0);
    cap_admin
}

/// Handles `mount(source, target, fstype, flags, data)`.
pub fn handle<G: GuestThread>(
    g: &mut G,
    call: &Syscall,
    files: &[(std::ffi::OsString, Vec<u8>)],
) -> Verdict {
    let [source, target, fstype, flags, data, _] = call.args;
    if files.is_empty() || flags & NOT_NEW != 0 || fstype == 0 {
        return Verdict::Forward;
    }
    let Ok(fs) = read_cstr(g, fstype) else {
        return Verdict::Forward;
    };
    if fs != b"proc" {
        return Verdict::Forward;
    }
    let tid = g.tid();
    if !may_mount(tid) {
        return Verdict::Forward;
    }
    let string = |g: &mut G, addr: u64| -> Option<CString> {
        if addr == 0 {
            return CString::new("").ok();
        }
        CString::new(read_cstr(g, addr).ok()?).ok()
    };
    let (Some(source), Some(target)) = (string(g, source), string(g, target)) else {
        return Verdict::Forward;
    };
    let data = if data == 0 {
        None
    } else {
        match string(g, data) {
            Some(d) => Some(d),
            None => return Verdict::Forward,
        }
    };
    let files = files
        .iter()
        .filter_map(|(path, contents)| {
            let rel = std::path::Path::new(path).strip_prefix("/proc").ok()?;
            Some((
                CString::new(rel.as_os_str().as_encoded_bytes()).ok()?,
                contents.clone(),
            ))
        })
        .collect();
    let req = ProcMount {
        source,
        target,
        flags,
        data,
        files,
    };
    match mount_proc(tid, &req) {
        Ok(Ok(())) => Verdict::Return(0),
        Ok(Err(errno)) => Verdict::Return(-i64::from(errno)),
        Err(e) => {
            log::debug!("[pid {tid}] {e}; the mount runs natively");
            Verdict::Forward
        }
    }
}
