//! Strict seccomp mode, as filters: which calls ask for it (caught by compatrun's filter,
//! [`requests`]), and the filter a thread gets instead of the mode ([`confinement`]).
//!
//! The kernel refuses strict mode to a thread that has a filter, and every guest thread
//! has compatrun's. So a request (`prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)` or
//! `seccomp(SECCOMP_SET_MODE_STRICT, 0, NULL)`, x86_64 or i386) is caught, by its
//! arguments so no other `prctl` or `seccomp` call is, and the thread gets a filter that allows what strict mode
//! allows (x86_64 `read`, `write`, `exit`, `rt_sigreturn`; through `int 0x80`, the i386
//! `read`, `write`, `exit`, `sigreturn` the kernel's `mode1_syscalls_32` lists) and
//! answers anything else with `SECCOMP_RET_TRAP` carrying [`FORBIDDEN`]: a trap outranks
//! every action compatrun's own filter takes, so the call never runs, and the SIGSYS it
//! raises reaches compatrun (the thread's tracer), which ends the thread with SIGKILL as
//! the kernel's strict mode does. (`SECCOMP_RET_KILL_THREAD` would end it with SIGSYS and
//! a core dump instead.)

use super::allow::{allow_only, AllowList};
use super::{ArgCatch, ArgValue, Insn, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use crate::contract::{Arch, InterceptSpec, Rule, Syscall};

/// `SECCOMP_RET_TRAP`.
pub const RET_TRAP: u32 = 0x0003_0000;
/// The `SECCOMP_RET_DATA` of a forbidden call in a confined thread (the SIGSYS's
/// `si_errno`).
pub const FORBIDDEN: u16 = 0x5354;
/// `SIGSYS`'s `si_code` for a seccomp trap (`SYS_SECCOMP`).
pub const SYS_SECCOMP: i32 = 1;

/// `prctl` (x86_64).
pub const PRCTL: u32 = 157;
/// `seccomp` (x86_64).
pub const SECCOMP: u32 = 317;
const PR_SET_SECCOMP: u32 = 22;
const SECCOMP_MODE_STRICT: u64 = 1;
const SECCOMP_SET_MODE_STRICT: u32 = 0;

/// `prctl` (i386).
pub const PRCTL_32: u32 = 172;
/// `seccomp` (i386).
pub const SECCOMP_32: u32 = 354;

const BY_PRCTL: ArgCatch = ArgCatch {
    arch: Arch::X86_64,
    nr: PRCTL,
    args: &[
        (0, ArgValue::Low32(PR_SET_SECCOMP)),
        (1, ArgValue::Full(SECCOMP_MODE_STRICT)),
    ],
};
const BY_SECCOMP: ArgCatch = ArgCatch {
    arch: Arch::X86_64,
    nr: SECCOMP,
    args: &[(0, ArgValue::Low32(SECCOMP_SET_MODE_STRICT))],
};
const BY_PRCTL_32: ArgCatch = ArgCatch {
    arch: Arch::I386,
    nr: PRCTL_32,
    ..BY_PRCTL
};
const BY_SECCOMP_32: ArgCatch = ArgCatch {
    arch: Arch::I386,
    nr: SECCOMP_32,
    ..BY_SECCOMP
};

/// The strict-mode requests compatrun's filter catches, x86_64 and i386: each call
/// unless the persona's kernel lacks it (the filter then answers its errno, as before).
pub fn requests(spec: &InterceptSpec) -> Vec<ArgCatch> {
    [BY_PRCTL, BY_SECCOMP, BY_PRCTL_32, BY_SECCOMP_32]
        .into_iter()
        .filter(|c| !matches!(spec.rule_for(c.arch, c.nr), Rule::Errno(_)))
        .collect()
}

/// Whether `call` asks for strict mode, by the same test the filter makes.
pub fn is_request(call: &Syscall) -> bool {
    #[allow(clippy::cast_possible_truncation)] // an int parameter: its low 32 bits
    let arg0 = call.args[0] as u32;
    let by_prctl = arg0 == PR_SET_SECCOMP && call.args[1] == SECCOMP_MODE_STRICT;
    let by_seccomp = arg0 == SECCOMP_SET_MODE_STRICT;
    match (call.arch, call.nr) {
        (Arch::X86_64, PRCTL) | (Arch::I386, PRCTL_32) => by_prctl,
        (Arch::X86_64, SECCOMP) | (Arch::I386, SECCOMP_32) => by_seccomp,
        _ => false,
    }
}

/// The x86_64 calls strict mode allows: `read`, `write`, `exit`, `rt_sigreturn`.
pub const ALLOWED_64: [u32; 4] = [0, 1, 60, 15];
/// The i386 calls strict mode allows (`int 0x80`): `read`, `write`, `exit`, `sigreturn`.
pub const ALLOWED_32: [u32; 4] = [3, 4, 1, 119];

/// The filter a confined thread gets instead of strict mode.
pub fn confinement() -> Vec<Insn> {
    allow_only(
        &[
            AllowList {
                arch: AUDIT_ARCH_X86_64,
                nrs: &ALLOWED_64,
            },
            AllowList {
                arch: AUDIT_ARCH_I386,
                nrs: &ALLOWED_32,
            },
        ],
        RET_TRAP | u32::from(FORBIDDEN),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{
        compile_with, evaluate, evaluate_call, CatchAction, RET_ALLOW, RET_ERRNO, RET_TRACE,
        RET_USER_NOTIF, X32_SYSCALL_BIT,
    };
    use super::*;

    const TRAP: u32 = RET_TRAP | FORBIDDEN as u32;

    #[test]
    fn the_confinement_allows_what_strict_mode_allows_and_traps_the_rest() {
        let prog = confinement();
        for nr in 0..600u32 {
            let want = if ALLOWED_64.contains(&nr) {
                RET_ALLOW
            } else {
                TRAP
            };
            assert_eq!(
                evaluate(&prog, AUDIT_ARCH_X86_64, nr, 0),
                Some(want),
                "{nr}"
            );
            let want = if ALLOWED_32.contains(&nr) {
                RET_ALLOW
            } else {
                TRAP
            };
            assert_eq!(
                evaluate(&prog, AUDIT_ARCH_I386, nr, 0),
                Some(want),
                "i386 {nr}"
            );
            let x32 = evaluate(&prog, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, 0);
            assert_eq!(x32, Some(TRAP), "x32 {nr}");
        }
        // A trap outranks every action compatrun's filter takes (lower is stronger).
        for other in [RET_ERRNO | 38, RET_USER_NOTIF, RET_TRACE | 1, RET_ALLOW] {
            assert!(RET_TRAP < other & 0xffff_0000);
        }
    }

    fn call(nr: u32, args: [u64; 6]) -> Syscall {
        Syscall {
            arch: Arch::X86_64,
            nr,
            args,
            ip: 0,
        }
    }

    #[test]
    fn only_the_exact_requests_are_caught() {
        let mut spec = InterceptSpec::allow_all();
        spec.rules.push((Arch::X86_64, 63, Rule::Catch));
        let prog = compile_with(&spec, CatchAction::UserNotif, &requests(&spec));
        let judge = |nr: u32, args: [u64; 6]| {
            let got = evaluate_call(&prog, AUDIT_ARCH_X86_64, nr, 0, &args);
            assert_eq!(
                got == Some(RET_USER_NOTIF),
                is_request(&call(nr, args)),
                "filter and is_request disagree on {nr} {args:?}"
            );
            got
        };
        let caught = Some(RET_USER_NOTIF);
        assert_eq!(judge(PRCTL, [22, 1, 0, 0, 0, 0]), caught);
        assert_eq!(judge(PRCTL, [0xdead_0000_0016, 1, 7, 0, 0, 0]), caught);
        assert_eq!(judge(PRCTL, [22, 2, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(judge(PRCTL, [22, 1 << 32 | 1, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(judge(PRCTL, [38, 1, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(judge(SECCOMP, [0, 0, 0, 0, 0, 0]), caught);
        assert_eq!(judge(SECCOMP, [1 << 32, 5, 9, 0, 0, 0]), caught);
        assert_eq!(judge(SECCOMP, [1, 0, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(judge(39, [22, 1, 0, 0, 0, 0]), Some(RET_ALLOW));
        // The spec's own catches are untouched.
        let uname = evaluate_call(&prog, AUDIT_ARCH_X86_64, 63, 0, &[0; 6]);
        assert_eq!(uname, caught);
        // i386 requests too, x32 ones go to the kernel.
        let i386 = |nr, args: [u64; 6]| {
            let got = evaluate_call(&prog, AUDIT_ARCH_I386, nr, 0, &args);
            let call = Syscall {
                arch: Arch::I386,
                nr,
                args,
                ip: 0,
            };
            assert_eq!(
                got == Some(RET_USER_NOTIF),
                is_request(&call),
                "i386 {nr} {args:?}"
            );
            got
        };
        assert_eq!(i386(PRCTL_32, [22, 1, 0, 0, 0, 0]), caught);
        assert_eq!(i386(PRCTL_32, [22, 2, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(i386(SECCOMP_32, [0, 0, 0, 0, 0, 0]), caught);
        assert_eq!(i386(SECCOMP_32, [1, 0, 0, 0, 0, 0]), Some(RET_ALLOW));
        assert_eq!(i386(PRCTL, [22, 1, 0, 0, 0, 0]), Some(RET_ALLOW));
        let x32 = PRCTL | X32_SYSCALL_BIT;
        let x32 = evaluate_call(&prog, AUDIT_ARCH_X86_64, x32, 0, &[22, 1, 0, 0, 0, 0]);
        assert_eq!(x32, Some(RET_ALLOW));
    }

    #[test]
    fn a_persona_without_the_call_keeps_its_errno() {
        let mut spec = InterceptSpec::allow_all();
        spec.rules.push((Arch::X86_64, SECCOMP, Rule::Errno(38)));
        let catches = requests(&spec);
        assert_eq!(catches, vec![BY_PRCTL, BY_PRCTL_32, BY_SECCOMP_32]);
        let prog = compile_with(&spec, CatchAction::Trace, &catches);
        let got = evaluate_call(&prog, AUDIT_ARCH_X86_64, SECCOMP, 0, &[0; 6]);
        assert_eq!(got, Some(RET_ERRNO | 38));
        let got = evaluate_call(&prog, AUDIT_ARCH_X86_64, PRCTL, 0, &[22, 1, 0, 0, 0, 0]);
        assert_eq!(got, Some(RET_TRACE | 1));
    }
}
