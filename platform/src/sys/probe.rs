//! Asking the running kernel what a compiled filter does, without running any call.
//!
//! A forked child installs two filters: first a mask that fails every call (but `write`
//! and `exit_group`) with a marker errno, then the program under test. The kernel runs
//! both and keeps the most restrictive action, the newer filter winning ties: so a call
//! the program refuses with ENOSYS reports ENOSYS, and one it allows or catches reports
//! the marker. No probed call ever reaches its implementation, so any number can be
//! probed safely, on x86_64, x32 (bit 30) and i386 (`int 0x80`).

use std::io;
use std::os::fd::AsRawFd;

use crate::contract::Arch;
use crate::filter::{self, Insn, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

/// The marker errno of the mask filter (outside every errno the kernel defines).
pub const MARK: i64 = 4000;

/// What the kernel answered for one probed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The program under test answered ENOSYS.
    Enosys,
    /// The program under test let it through or caught it (the mask answered).
    Passed,
    /// Some other result (the program answered another errno).
    Other(i64),
}

/// The sixth argument (r9) that lets the probe child's own calls through the mask.
const PASS: u32 = 0xC0FF_EE00;
/// `offsetof(struct seccomp_data, args[5])`, low half on little-endian x86.
const OFF_ARG5: u32 = 16 + 5 * 8;

fn mask_program() -> Vec<Insn> {
    let s = |code: u16, k: u32| Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let j = |code: u16, k: u32, jt: u8, jf: u8| Insn { code, jt, jf, k };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mark = filter::RET_ERRNO | MARK as u32;
    vec![
        s(0x20, 4),                       // ld arch
        j(0x15, AUDIT_ARCH_X86_64, 0, 2), // x86_64 (not x32: probes use other args)?
        s(0x20, OFF_ARG5),                // ld args[5]
        j(0x15, PASS, 1, 0),              // the child's own call?
        s(0x06, mark),
        s(0x06, filter::RET_ALLOW),
    ]
}

/// One `syscall` instruction with three arguments and `r9` (the mask's pass mark, or 0).
fn syscall_insn(nr: u64, a0: u64, a1: u64, a2: u64, r9: u64) -> i64 {
    let ret: i64;
    // SAFETY: runs only in the probe child. Calls without the pass mark in r9 fail in the
    // mask filter before reaching any implementation; marked ones are the child's own
    // write (from a live buffer) and exit_group. `syscall` clobbers only rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a0, in("rsi") a1, in("rdx") a2,
            in("r10") 0u64, in("r8") 0u64, in("r9") r9,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A call of the probe child itself (write, exit_group): marked so the mask allows it.
fn own_call(nr: i64, a0: u64, a1: u64, a2: u64) -> i64 {
    syscall_insn(nr.unsigned_abs(), a0, a1, a2, u64::from(PASS))
}

/// Leaves the probe child (exit_group, marked to pass the mask).
fn child_exit(code: u64) -> ! {
    loop {
        own_call(libc::SYS_exit_group, code, 0, 0);
    }
}

fn raw_call(arch: Arch, nr: u32) -> i64 {
    match arch {
        Arch::X86_64 => x86_64_call(u64::from(nr)),
        Arch::X32 => x86_64_call(u64::from(nr | X32_SYSCALL_BIT)),
        Arch::I386 => i386_call(nr),
    }
}

fn x86_64_call(nr: u64) -> i64 {
    syscall_insn(nr, 0, 0, 0, 0)
}

fn i386_call(nr: u32) -> i64 {
    let ret: u64;
    // SAFETY: as for x86_64_call (arguments are irrelevant: no call runs; ebx is left as
    // LLVM has it); `int 0x80` from 64-bit code enters the i386 ABI and the kernel
    // zeroes r8-r11 on the way back, so they are declared clobbered.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inlateout("rax") u64::from(nr) => ret,
            in("rcx") 0u64, in("rdx") 0u64, in("rsi") 0u64, in("rdi") 0u64,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
            options(nostack),
        );
    }
    // The i386 ABI returns a 32-bit value in eax.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    i64::from(ret as u32 as i32)
}

/// Runs each of `calls` in a child under `program` (see the module docs) and reports
/// what the kernel answered. `Ok(None)` means the child died before answering all,
/// typically because this kernel has no i386 emulation.
pub fn probe(program: &[Insn], calls: &[(Arch, u32)]) -> io::Result<Option<Vec<Probe>>> {
    let mask = mask_program();
    let progs = [mask.as_slice(), program];
    let fprogs: Vec<libc::sock_fprog> = progs
        .iter()
        .map(|p| {
            Ok(libc::sock_fprog {
                len: u16::try_from(p.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?,
                filter: p.as_ptr().cast_mut(),
            })
        })
        .collect::<io::Result<_>>()?;
    let mut results = vec![0i64; calls.len()];
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: the child uses only raw system calls on memory prepared before fork (no
    // allocation, no locks) and leaves with exit_group.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; `results` has calls.len() slots and the fprogs point at live
        // programs.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1u64, 0u64, 0u64, 0u64) != 0 {
                child_exit(2);
            }
            // The mask first; then the program under test, through the mask (marked).
            let mask_fp: *const libc::sock_fprog = &fprogs[0];
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0u64,
                mask_fp,
            ) != 0
            {
                child_exit(3);
            }
            let fp: *const libc::sock_fprog = &fprogs[1];
            let op = u64::from(libc::SECCOMP_SET_MODE_FILTER);
            if own_call(libc::SYS_seccomp, op, 0, fp as u64) != 0 {
                child_exit(4);
            }
            for (slot, &(arch, nr)) in results.iter_mut().zip(calls) {
                *slot = raw_call(arch, nr);
            }
            let bytes = results.len() * 8;
            let base = results.as_ptr().cast::<u8>();
            let mut off = 0;
            while off < bytes {
                #[allow(clippy::cast_sign_loss)] // a valid fd is non-negative
                let fd = w.as_raw_fd() as u64;
                let n = own_call(
                    libc::SYS_write,
                    fd,
                    base.add(off) as u64,
                    (bytes - off) as u64,
                );
                if n <= 0 {
                    child_exit(5);
                }
                off += usize::try_from(n).unwrap_or(bytes);
            }
            child_exit(0);
        }
    }
    drop(w);
    let mut raw = Vec::with_capacity(calls.len() * 8);
    let mut file = std::fs::File::from(r);
    io::Read::read_to_end(&mut file, &mut raw)?;
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    if raw.len() != calls.len() * 8 {
        return Ok(None);
    }
    let enosys = -i64::from(libc::ENOSYS);
    Ok(Some(
        raw.chunks_exact(8)
            .map(|c| {
                let v = i64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
                match v {
                    v if v == enosys => Probe::Enosys,
                    v if v == -MARK => Probe::Passed,
                    v => Probe::Other(v),
                }
            })
            .collect(),
    ))
}

/// Whether this host maps the legacy vsyscall page (`[vsyscall]` in our own maps: the
/// kernel emulates calls into it, unless booted with `vsyscall=none`).
pub fn host_has_vsyscall_page() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("[vsyscall]"))
}

/// This host's vsyscall page mode as the kernel's `vsyscall=` boot option names it:
/// `none` (no page), `emulate` (readable) or `xonly` (execute-only, the default).
pub fn host_vsyscall_mode() -> &'static str {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    match maps.lines().find(|l| l.ends_with("[vsyscall]")) {
        None => "none",
        Some(l) if l.contains(" r-xp ") => "emulate",
        Some(_) => "xonly",
    }
}
