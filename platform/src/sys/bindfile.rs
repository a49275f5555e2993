//! Placing a file's contents over another path read-only: writing a new file in full and
//! binding it read-only. Used between fork and exec (the namespace's init) and in the
//! helper that mounts a guest's proc, so only async-signal-safe calls, no allocation.

use std::ffi::CStr;

/// Creates `name` (mode 0444) holding exactly `data`; false if it cannot be opened or
/// written in full.
pub fn write_new(name: &CStr, data: &[u8]) -> bool {
    // SAFETY: open, write and close on a NUL-terminated path and a live buffer; the
    // descriptor is ours alone and closed before returning.
    unsafe {
        let fd = libc::open(
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o444,
        );
        if fd < 0 {
            return false;
        }
        let mut off = 0;
        while off < data.len() {
            let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
            if n <= 0 {
                break;
            }
            off += n.unsigned_abs();
        }
        libc::close(fd);
        off == data.len()
    }
}

/// Binds `src` over `target` and makes that bind read-only; false if either step fails
/// (a failed remount leaves a writable bind in place).
pub fn bind_read_only(src: &CStr, target: &CStr) -> bool {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: mount(2) on NUL-terminated paths with null type and data; it changes only
    // the calling process's mount namespace.
    unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            none,
            libc::MS_BIND,
            std::ptr::null(),
        ) == 0
            && libc::mount(
                none,
                target.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ) == 0
    }
}
