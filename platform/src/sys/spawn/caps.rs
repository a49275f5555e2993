//! Setting the calling thread's capability sets with capset(2), for the roles that run
//! between fork and exec (the guest's first process, the namespace's init): only
//! async-signal-safe calls, no allocation.

/// `_LINUX_CAPABILITY_VERSION_3`: two [`CapData`], the low 32 capabilities first.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` of linux/capability.h.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct` of linux/capability.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the calling thread's effective, permitted and inheritable sets (bit N is
/// capability N); the errno when the kernel refuses.
pub(super) fn set(effective: u64, permitted: u64, inheritable: u64) -> Result<(), i32> {
    let half = |set: u64, high: bool| -> u32 {
        let v = if high { set >> 32 } else { set & 0xffff_ffff };
        u32::try_from(v).unwrap_or(0)
    };
    let data = [false, true].map(|high| CapData {
        effective: half(effective, high),
        permitted: half(permitted, high),
        inheritable: half(inheritable, high),
    });
    let header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads one header and two data structs, live locals laid out as the
    // kernel's (repr(C), version 3); it only changes the calling thread's own sets.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } != 0 {
        return Err(super::wire::errno());
    }
    Ok(())
}

/// The calling thread's (effective, permitted) sets; the errno when the kernel refuses.
pub(super) fn get() -> Result<(u64, u64), i32> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes one header and two data structs, live locals laid out as the
    // kernel's (repr(C), version 3).
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
        return Err(super::wire::errno());
    }
    let join = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// Makes CAP_SYS_ADMIN effective again after a switch to a non-root user that kept the
/// permitted set (KEEPCAPS), so the seccomp filters go in without no_new_privs, which
/// the config did not ask for (runc installs them before dropping privileges, too).
/// False where it is not in the permitted set; the caller then sets no_new_privs.
pub(super) fn raise_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21; // linux/capability.h
    let admin = 1u64 << CAP_SYS_ADMIN;
    match get() {
        Ok((effective, permitted)) if permitted & admin != 0 => {
            // Inheritable does not matter here: the final sets are set after the filters.
            set(effective | admin, permitted, 0).is_ok()
        }
        _ => false,
    }
}
