//! The two calls `compatrun bench`'s measuring guest makes that need `unsafe`: a raw
//! system call by number (to time a call the persona's filter refuses, which no libc
//! wrapper would make) and a call into the legacy vsyscall page's `time` entry.

/// The `time` entry of the legacy vsyscall page.
const VSYSCALL_TIME: usize = 0xffff_ffff_ff60_0400;

/// System call `nr` with no arguments (all argument registers 0); returns the kernel's
/// raw result: the value, or `-errno`.
pub fn raw_syscall0(nr: i64) -> i64 {
    // SAFETY: the call passes no pointers (every argument is 0), so whatever `nr` names,
    // the kernel reads and writes no memory of ours on its behalf; the benchmark only
    // uses numbers the persona's filter refuses, which never reach the kernel's table.
    let r = unsafe { libc::syscall(nr, 0usize, 0usize, 0usize, 0usize, 0usize, 0usize) };
    if r == -1 {
        -i64::from(nix::errno::Errno::last_raw())
    } else {
        r
    }
}

/// Calls the vsyscall page's `time(NULL)`. The caller must have checked that the page is
/// mapped ([`crate::host_has_vsyscall_page`]) or that a supervisor emulates it; otherwise
/// the call faults (SIGSEGV), as it would for any program.
pub fn vsyscall_time() -> i64 {
    // SAFETY: the kernel's vsyscall ABI puts `time_t time(time_t *)` at VSYSCALL_TIME
    // with the C calling convention; a null argument means nothing is written. Where the
    // page is missing the call raises SIGSEGV (a defined signal, not undefined
    // behaviour in this process's memory).
    unsafe {
        let f: extern "C" fn(*mut libc::time_t) -> libc::time_t = std::mem::transmute::<
            usize,
            extern "C" fn(*mut libc::time_t) -> libc::time_t,
        >(VSYSCALL_TIME);
        f(std::ptr::null_mut())
    }
}
