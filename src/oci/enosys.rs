//! The ENOSYS stub in front of an OCI seccomp profile, as runc puts one there: a call
//! numbered above every call the profile names (for its ABI) is answered ENOSYS instead
//! of the profile's default action. A profile older than the program's C library thus
//! lets the library see "not implemented" for a new call and fall back to an older
//! one, where EPERM (the usual default) would be taken as a real refusal.

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Act};
use platform::BpfInsn;

/// `AUDIT_ARCH_X86_64` (linux/audit.h).
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The bit that marks an x32 call on the x86_64 architecture; left to the profile.
const X32_BIT: u32 = 0x4000_0000;
/// `SECCOMP_RET_ERRNO`.
const RET_ERRNO: u32 = 0x0005_0000;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// The highest number among the calls `s` names, on `arch` (`None`: it names none there).
fn highest(s: &LinuxSeccomp, arch: ScmpArch) -> Option<u32> {
    s.syscalls()
        .iter()
        .flatten()
        .flat_map(|rule| rule.names().iter())
        .filter_map(|name| ScmpSyscall::from_name_by_arch(name, arch).ok())
        .filter_map(|nr| u32::try_from(nr.as_raw_syscall()).ok())
        .filter(|&nr| arch != ScmpArch::X8664 || nr & X32_BIT == 0)
        .max()
}

/// The stub to put before the profile's program (empty where none is needed: a default
/// action that allows or only logs, or one that answers ENOSYS already). `archs` are
/// the profile's architectures; x86_64 and i386 get a bound each.
pub fn stub(s: &LinuxSeccomp, archs: &[ScmpArch]) -> Vec<BpfInsn> {
    let default_enosys =
        s.default_action() == Act::ScmpActErrno && s.default_errno_ret() == Some(38);
    if matches!(s.default_action(), Act::ScmpActAllow | Act::ScmpActLog) || default_enosys {
        return Vec::new();
    }
    // x86_64 is the native architecture, always in the filter.
    let mut bounds = vec![(AUDIT_ARCH_X86_64, highest(s, ScmpArch::X8664))];
    if archs.contains(&ScmpArch::X86) {
        bounds.push((AUDIT_ARCH_I386, highest(s, ScmpArch::X86)));
    }
    let bounds: Vec<(u32, u32)> = bounds
        .into_iter()
        .filter_map(|(audit, max)| Some((audit, max?)))
        .collect();
    if bounds.is_empty() {
        return Vec::new();
    }
    // Per architecture: load it, "matches?", load the number, "above the bound?";
    // x86_64 leaves x32 calls to the profile. Every block ends at the shared ENOSYS
    // return or, past it, at the profile's own program (which loads what it needs).
    // A block is at most 5 instructions, so the relative jumps fit in a byte.
    let blocks: Vec<Vec<(u16, Target, Target, u32)>> = bounds
        .iter()
        .map(|&(audit, max)| {
            let mut b = vec![
                (LD_W_ABS, Target::Next, Target::Next, 4),
                (JEQ_K, Target::Next, Target::NextBlock, audit),
                (LD_W_ABS, Target::Next, Target::Next, 0),
            ];
            if audit == AUDIT_ARCH_X86_64 {
                b.push((JSET_K, Target::Profile, Target::Next, X32_BIT));
            }
            b.push((JGT_K, Target::Enosys, Target::Profile, max));
            b
        })
        .collect();
    let enosys_at: usize = blocks.iter().map(Vec::len).sum();
    let profile_at = enosys_at + 1;
    let mut out = Vec::with_capacity(profile_at);
    for block in &blocks {
        let next_block = out.len() + block.len();
        for &(code, jt, jf, k) in block {
            let pc = out.len();
            let offset = |t: Target| -> u8 {
                let to = match t {
                    Target::Next => pc + 1,
                    Target::NextBlock if next_block == enosys_at => profile_at,
                    Target::NextBlock => next_block,
                    Target::Enosys => enosys_at,
                    Target::Profile => profile_at,
                };
                u8::try_from(to - pc - 1).unwrap_or(0)
            };
            let (jt, jf) = if code == LD_W_ABS {
                (0, 0)
            } else {
                (offset(jt), offset(jf))
            };
            out.push(insn(code, jt, jf, k));
        }
    }
    out.push(insn(RET_K, 0, 0, RET_ERRNO | 38));
    out
}

/// Where a stub jump goes.
#[derive(Clone, Copy)]
enum Target {
    Next,
    NextBlock,
    Enosys,
    Profile,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on (arch, nr): `Some(return value)`, or `None` when it falls off its
    /// end into the profile's program.
    fn run(prog: &[BpfInsn], arch: u32, nr: u32) -> Option<u32> {
        let (mut pc, mut acc) = (0usize, 0u32);
        while let Some(i) = prog.get(pc) {
            let jump = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
            pc = match i.code {
                LD_W_ABS => {
                    acc = if i.k == 4 { arch } else { nr };
                    pc + 1
                }
                JEQ_K => jump(acc == i.k),
                JGT_K => jump(acc > i.k),
                JSET_K => jump(acc & i.k != 0),
                RET_K => return Some(i.k),
                other => panic!("unexpected opcode {other:#x}"),
            };
        }
        assert_eq!(
            pc,
            prog.len(),
            "a jump past the profile's first instruction"
        );
        None
    }

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).expect("profile")
    }

    #[test]
    fn calls_above_the_highest_named_get_enosys_per_abi() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write", "close"], "action": "SCMP_ACT_ALLOW"}],
        }));
        let prog = stub(&p, &[ScmpArch::X8664, ScmpArch::X86]);
        let enosys = Some(RET_ERRNO | 38);
        // x86_64: close is 3; i386: close is 6.
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 3), None);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 2), None);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 4), enosys);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 1000), enosys);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, X32_BIT | 500), None);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 6), None);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 7), enosys);
        assert_eq!(run(&prog, 0xC000_00B7, 1000), None, "another ABI");
        // Without x86 in the profile, i386 calls are left to it.
        let prog = stub(&p, &[]);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 1000), None);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 1000), enosys);
    }

    #[test]
    fn no_stub_where_the_default_allows_logs_or_is_enosys() {
        for (action, ret) in [
            ("SCMP_ACT_ALLOW", None),
            ("SCMP_ACT_LOG", None),
            ("SCMP_ACT_ERRNO", Some(38)),
        ] {
            let mut v = serde_json::json!({
                "defaultAction": action,
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO"}],
            });
            if let Some(r) = ret {
                v["defaultErrnoRet"] = r.into();
            }
            assert!(stub(&profile(v), &[ScmpArch::X86]).is_empty(), "{action}");
        }
        // A profile that names no call has nothing to bound.
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_KILL"}));
        assert!(stub(&p, &[ScmpArch::X86]).is_empty());
    }
}
