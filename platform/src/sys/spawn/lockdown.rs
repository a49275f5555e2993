//! The pid namespace's init gives up what it does not need once the guest runs: every
//! capability but CAP_KILL (it signals a guest that may run as another user), and every
//! system call but the few it makes (an allow-list filter that kills it otherwise).
//! The guest cannot attach to it (compatrun is its tracer on every platform), but a root
//! guest may still write its memory (`/proc/1/mem`, `process_vm_writev`): code planted
//! there can then neither act nor escape the persona; it can only end the run.
//! Runs between fork and exec: only async-signal-safe calls.

/// `CAP_KILL` from linux/capability.h.
const CAP_KILL: u32 = 5;
/// Keeps only CAP_KILL, sets no_new_privs (the init never execs; a filter needs it
/// without CAP_SYS_ADMIN) and installs `prog` on the calling thread (the init is
/// single-threaded). Returns the errno of the step that failed.
pub(super) fn lock_down(prog: &libc::sock_fprog) -> Result<(), i32> {
    let last = || super::wire::errno();
    super::caps::set(1 << CAP_KILL, 1 << CAP_KILL, 0)?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1u64, 0u64, 0u64, 0u64) } != 0 {
        return Err(last());
    }
    // SAFETY: `prog` points at a sock_fprog whose filter array lives in the ChildImage,
    // alive until _exit; the kernel copies the program and keeps no pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            std::ptr::from_ref(prog),
        )
    };
    if r != 0 {
        return Err(last());
    }
    Ok(())
}
