//! Allow-lists: small seccomp programs that allow a few numbers per ABI and answer
//! everything else with one action. compatrun's own namespace init runs under one
//! once the guest has started ([`init_lockdown`]), so code a guest could plant in it
//! (through `/proc/1/mem` or `process_vm_writev`) can make none of the calls that matter.

use super::{
    jump, stmt, Insn, AUDIT_ARCH_X86_64, BPF_JMP_JEQ_K, BPF_JMP_JSET_K, BPF_LD_W_ABS, BPF_RET_K,
    OFF_ARCH, OFF_NR, RET_ALLOW, RET_KILL_PROCESS, X32_SYSCALL_BIT,
};

/// The numbers one ABI may call. `arch` is an `AUDIT_ARCH_*` value; for
/// `AUDIT_ARCH_X86_64` the numbers are 64-bit ones and every x32 call (the x32 bit set)
/// gets the program's `otherwise`.
#[derive(Clone, Copy, Debug)]
pub struct AllowList<'a> {
    /// The audit architecture.
    pub arch: u32,
    /// The allowed system-call numbers.
    pub nrs: &'a [u32],
}

/// Compiles "allow exactly these numbers per ABI, `otherwise` for anything else
/// (other numbers, other ABIs, x32)". Each ABI's block is a linear run of comparisons:
/// these lists are short.
pub fn allow_only(lists: &[AllowList<'_>], otherwise: u32) -> Vec<Insn> {
    let mut prog = Vec::new();
    for list in lists {
        let x32_check = usize::from(list.arch == AUDIT_ARCH_X86_64);
        let n = list.nrs.len();
        // After the arch test: load nr, [jset x32], n comparisons, ret otherwise, ret allow.
        let rest = 1 + x32_check + n + 2;
        prog.push(stmt(BPF_LD_W_ABS, OFF_ARCH));
        prog.push(jump(BPF_JMP_JEQ_K, list.arch, 0, to_u8(rest)));
        prog.push(stmt(BPF_LD_W_ABS, OFF_NR));
        if x32_check == 1 {
            prog.push(jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, to_u8(n), 0));
        }
        for (i, &nr) in list.nrs.iter().enumerate() {
            // Taken: skip the comparisons left and the `ret otherwise`, to `ret allow`.
            prog.push(jump(BPF_JMP_JEQ_K, nr, to_u8(n - i), 0));
        }
        prog.push(stmt(BPF_RET_K, otherwise));
        prog.push(stmt(BPF_RET_K, RET_ALLOW));
    }
    prog.push(stmt(BPF_RET_K, otherwise));
    prog
}

/// Jump offsets of these short programs always fit; the lists are compile-time constants
/// well under 250 entries.
fn to_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// The x86_64 calls the namespace's init makes once the guest runs: reaping (`wait4`,
/// `waitid`), its report pipe (`write`), passing signals on (`pidfd_send_signal`,
/// `kill`, `getpgid`, `getpgrp`, `rt_sigaction`, `rt_sigprocmask`, `rt_sigreturn`,
/// `tgkill`, `getpid`, `gettid`, `restart_syscall`), closing descriptors (`close`,
/// `close_range`) and ending (`exit`, `exit_group`). Names resolved by the `syscalls`
/// crate, so the numbers cannot drift.
pub fn init_calls() -> Vec<u32> {
    use syscalls::x86_64::Sysno;
    [
        Sysno::wait4,
        Sysno::waitid,
        Sysno::write,
        Sysno::pidfd_send_signal,
        Sysno::kill,
        Sysno::tgkill,
        Sysno::getpid,
        Sysno::gettid,
        Sysno::getpgid,
        Sysno::getpgrp,
        Sysno::rt_sigaction,
        Sysno::rt_sigprocmask,
        Sysno::rt_sigreturn,
        Sysno::restart_syscall,
        Sysno::close,
        Sysno::close_range,
        Sysno::exit,
        Sysno::exit_group,
    ]
    .into_iter()
    .filter_map(|s| u32::try_from(s.id()).ok())
    .collect()
}

/// The program the namespace's init installs on itself once the guest runs: its own
/// calls ([`init_calls`]) and nothing else; anything else kills it, and with it (pid 1)
/// every process of the namespace, so planted code ends the run instead of acting.
pub fn init_lockdown() -> Vec<Insn> {
    let calls = init_calls();
    allow_only(
        &[AllowList {
            arch: AUDIT_ARCH_X86_64,
            nrs: &calls,
        }],
        RET_KILL_PROCESS,
    )
}

#[cfg(test)]
mod tests {
    use super::super::{evaluate, AUDIT_ARCH_I386};
    use super::*;

    #[test]
    fn allows_exactly_the_listed_numbers_per_abi() {
        let kill_thread = 0;
        let prog = allow_only(
            &[
                AllowList {
                    arch: AUDIT_ARCH_X86_64,
                    nrs: &[0, 1, 60, 15],
                },
                AllowList {
                    arch: AUDIT_ARCH_I386,
                    nrs: &[3, 4, 1, 119],
                },
            ],
            kill_thread,
        );
        for nr in 0..1000u32 {
            let want64 = if [0, 1, 60, 15].contains(&nr) {
                RET_ALLOW
            } else {
                kill_thread
            };
            assert_eq!(evaluate(&prog, AUDIT_ARCH_X86_64, nr, 0), Some(want64));
            let want32 = if [3, 4, 1, 119].contains(&nr) {
                RET_ALLOW
            } else {
                kill_thread
            };
            assert_eq!(evaluate(&prog, AUDIT_ARCH_I386, nr, 0), Some(want32));
            assert_eq!(
                evaluate(&prog, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, 0),
                Some(kill_thread),
                "x32 {nr}"
            );
        }
        assert_eq!(evaluate(&prog, 0xdead_beef, 0, 0), Some(kill_thread));
    }

    #[test]
    fn the_init_may_reap_report_and_signal_but_not_exec_open_or_trace() {
        use syscalls::x86_64::Sysno;
        let prog = init_lockdown();
        let run = |s: Sysno| {
            evaluate(
                &prog,
                AUDIT_ARCH_X86_64,
                u32::try_from(s.id()).expect("small number"),
                0,
            )
        };
        for ok in [
            Sysno::wait4,
            Sysno::write,
            Sysno::pidfd_send_signal,
            Sysno::exit_group,
        ] {
            assert_eq!(run(ok), Some(RET_ALLOW), "{ok}");
        }
        for bad in [
            Sysno::execve,
            Sysno::open,
            Sysno::openat,
            Sysno::mmap,
            Sysno::mprotect,
            Sysno::ptrace,
            Sysno::mount,
            Sysno::uname,
            Sysno::clone,
            Sysno::fork,
            Sysno::seccomp,
            Sysno::read,
        ] {
            assert_eq!(run(bad), Some(RET_KILL_PROCESS), "{bad}");
        }
        assert_eq!(
            evaluate(&prog, AUDIT_ARCH_I386, 1, 0),
            Some(RET_KILL_PROCESS)
        );
        assert_eq!(
            evaluate(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1, 0),
            Some(RET_KILL_PROCESS)
        );
    }
}
