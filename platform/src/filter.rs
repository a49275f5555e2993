//! Compiles an [`InterceptSpec`] into one classic-BPF seccomp program.
//!
//! The program reads only `seccomp_data.arch` and `seccomp_data.nr` (the instruction
//! pointer and arguments only for the few numbers an exception or an [`ArgCatch`] names),
//! so the kernel's per-filter action cache (Linux 5.11+) can answer every other
//! always-allowed number without running the program at all. Per ABI, the numbers
//! are grouped into ranges with one rule each and searched with a balanced tree of
//! `jge`, so a call costs O(log ranges) instructions. Unknown architectures kill the
//! process: nothing slips past.
//!
//! This is hand-written rather than built with a seccomp crate because none of the
//! maintained pure-Rust builders covers all we need here: one filter for x86_64, x32 and
//! i386 together, and `SECCOMP_RET_USER_NOTIF`.

pub mod allow;
pub mod strict;

use crate::contract::{Arch, InterceptSpec, Rule};

/// One classic BPF instruction (the layout of the kernel's `struct sock_filter`).
pub type Insn = libc::sock_filter;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `__X32_SYSCALL_BIT`.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ERRNO` (low 16 bits: the errno).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_USER_NOTIF`.
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_RET_TRACE` (low 16 bits: data for the tracer).
pub const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_IP: u32 = 8;
const OFF_ARGS: u32 = 16;

/// One x86_64 or i386 call caught only with given argument values (every other call of
/// that number gets the spec's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCatch {
    /// The ABI: x86_64 or i386 (an x32 one is never caught).
    pub arch: Arch,
    /// The number in that ABI.
    pub nr: u32,
    /// `(argument index, value)` pairs that must all hold; a value of `u32` type is
    /// compared in the low 32 bits only (as the kernel reads an `int` argument).
    pub args: &'static [(usize, ArgValue)],
}

/// A value an [`ArgCatch`] compares an argument with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgValue {
    /// The low 32 bits (an `int` or `unsigned int` parameter).
    Low32(u32),
    /// All 64 bits (a `long` or pointer parameter).
    Full(u64),
}

// BPF opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;

/// How a caught call reaches the supervisor: the return value the filter uses for
/// [`Rule::Catch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchAction {
    /// `SECCOMP_RET_TRACE`: a ptrace seccomp stop. The 16-bit data carries the ABI.
    Trace,
    /// `SECCOMP_RET_USER_NOTIF`: a notification on the listener fd.
    UserNotif,
}

/// The 16-bit `SECCOMP_RET_DATA` that identifies an ABI in a trace stop.
pub fn arch_tag(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => 1,
        Arch::X32 => 2,
        Arch::I386 => 3,
    }
}

/// The ABI and in-table number of a call as `seccomp_data` describes it (the audit
/// architecture and the raw number, which carries the x32 bit for x32 calls).
pub fn decode(audit_arch: u32, nr: u32) -> (Arch, u32) {
    if audit_arch == AUDIT_ARCH_I386 {
        (Arch::I386, nr)
    } else if nr & X32_SYSCALL_BIT != 0 {
        (Arch::X32, nr & !X32_SYSCALL_BIT)
    } else {
        (Arch::X86_64, nr)
    }
}

/// The ABI for a trace-stop data value, if it is one of ours.
pub fn arch_from_tag(tag: u64) -> Option<Arch> {
    Arch::ALL
        .into_iter()
        .find(|&a| u64::from(arch_tag(a)) == tag)
}

fn ret_value(rule: Rule, arch: Arch, catch: CatchAction) -> u32 {
    match rule {
        Rule::Allow => RET_ALLOW,
        Rule::Errno(e) => RET_ERRNO | u32::from(e),
        Rule::Catch => match catch {
            CatchAction::Trace => RET_TRACE | u32::from(arch_tag(arch)),
            CatchAction::UserNotif => RET_USER_NOTIF,
        },
    }
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Maximal runs of numbers sharing one return value: `(first number, value)`, sorted,
/// the first starting at 0 and each running up to the next one's start.
fn ranges(spec: &InterceptSpec, arch: Arch, catch: CatchAction) -> Vec<(u32, u32)> {
    let default_rule = spec.default_for(arch);
    // One pass over the rules, later ones winning, as `InterceptSpec::rule_for` says.
    let mut named: Vec<(u32, Rule)> = spec
        .rules
        .iter()
        .filter(|&&(a, _, _)| a == arch)
        .map(|&(_, n, r)| (n, r))
        .collect();
    // A stable sort keeps a number's rules in order; reversed, dedup keeps the last.
    named.sort_by_key(|&(n, _)| n);
    named.reverse();
    named.dedup_by_key(|&mut (n, _)| n);
    named.reverse();
    let value_of = |n: u32| {
        let rule = named
            .binary_search_by_key(&n, |&(k, _)| k)
            .map_or(default_rule, |i| named[i].1);
        ret_value(rule, arch, catch)
    };
    let mut out: Vec<(u32, u32)> = vec![(0, ret_value(default_rule, arch, catch))];
    let mut push = |start: u32, value: u32| {
        if out.last().is_some_and(|&(_, v)| v == value) {
            return;
        }
        if out.last().is_some_and(|&(s, _)| s == start) {
            out.pop();
            if out.last().is_some_and(|&(_, v)| v == value) {
                return;
            }
        }
        out.push((start, value));
    };
    for n in named.iter().map(|&(n, _)| n) {
        push(n, value_of(n));
        if let Some(next) = n.checked_add(1) {
            // The default resumes after n unless n+1 is named too (it then overrides).
            push(next, value_of(next));
        }
    }
    out
}

/// Emits a search over `ranges` (the accumulator holds the number).
fn emit_tree(ranges: &[(u32, u32)], out: &mut Vec<Insn>) {
    if let [(_, value)] = ranges {
        out.push(stmt(BPF_RET_K, *value));
        return;
    }
    let mid = ranges.len() / 2;
    let (left, right) = ranges.split_at(mid);
    let mut left_code = Vec::new();
    emit_tree(left, &mut left_code);
    let boundary = right[0].0;
    match u8::try_from(left_code.len()) {
        Ok(skip) => out.push(jump(BPF_JMP_JGE_K, boundary, skip, 0)),
        Err(_) => {
            // Conditional jumps reach 255 instructions; go through an unconditional one.
            out.push(jump(BPF_JMP_JGE_K, boundary, 0, 1));
            let far = u32::try_from(left_code.len()).unwrap_or(u32::MAX);
            out.push(stmt(BPF_JMP_JA, far));
        }
    }
    out.extend(left_code);
    emit_tree(right, out);
}

/// Compiles `spec` into a seccomp program for an x86_64 host.
///
/// Layout: check the architecture (kill on anything but x86_64 and i386); for x86_64,
/// split x32 numbers off by their bit; then one range search per ABI.
pub fn compile(spec: &InterceptSpec, catch: CatchAction) -> Vec<Insn> {
    compile_with(spec, catch, &[])
}

/// [`compile`], with `arg_catches` caught (as [`Rule::Catch`]) before the spec's rules
/// apply.
pub fn compile_with(
    spec: &InterceptSpec,
    catch: CatchAction,
    arg_catches: &[ArgCatch],
) -> Vec<Insn> {
    let mut x86_64 = vec![stmt(BPF_LD_W_ABS, OFF_NR)];
    for &(nr, ip) in &spec.allow_from_ip {
        push_ip_exception(&mut x86_64, nr, ip);
    }
    for c in arg_catches.iter().filter(|c| c.arch == Arch::X86_64) {
        push_arg_catch(&mut x86_64, c, ret_value(Rule::Catch, Arch::X86_64, catch));
    }
    let mut x64_tree = Vec::new();
    emit_tree(&ranges(spec, Arch::X86_64, catch), &mut x64_tree);
    // jset X32 bit: skip over the x86_64 tree to the x32 block.
    let mut x32 = vec![stmt(BPF_ALU_AND_K, !X32_SYSCALL_BIT)];
    emit_tree(&ranges(spec, Arch::X32, catch), &mut x32);
    push_branch(&mut x86_64, BPF_JMP_JSET_K, X32_SYSCALL_BIT, x64_tree.len());
    x86_64.extend(x64_tree);
    x86_64.extend(x32);

    let mut i386 = vec![stmt(BPF_LD_W_ABS, OFF_NR)];
    for c in arg_catches.iter().filter(|c| c.arch == Arch::I386) {
        push_arg_catch(&mut i386, c, ret_value(Rule::Catch, Arch::I386, catch));
    }
    emit_tree(&ranges(spec, Arch::I386, catch), &mut i386);

    let mut prog = vec![stmt(BPF_LD_W_ABS, OFF_ARCH)];
    // arch == x86_64 ? jump over the `ja` into the x86_64 block : take the `ja` past it.
    prog.push(jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0));
    prog.push(stmt(
        BPF_JMP_JA,
        u32::try_from(x86_64.len()).unwrap_or(u32::MAX),
    ));
    prog.extend(x86_64);
    prog.push(jump(BPF_JMP_JEQ_K, AUDIT_ARCH_I386, 1, 0));
    prog.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    prog.extend(i386);
    prog
}

/// Pushes "x86_64 call `nr` made from instruction address `ip`: allow". Only calls
/// numbered `nr` read the instruction pointer, so every other number stays cacheable.
/// Expects the number in the accumulator and leaves it there.
fn push_ip_exception(out: &mut Vec<Insn>, nr: u32, ip: u64) {
    #[allow(clippy::cast_possible_truncation)] // the two halves of a 64-bit address
    let (lo, hi) = (ip as u32, (ip >> 32) as u32);
    out.extend([
        jump(BPF_JMP_JEQ_K, nr, 0, 6),
        stmt(BPF_LD_W_ABS, OFF_IP),
        jump(BPF_JMP_JEQ_K, lo, 0, 3),
        stmt(BPF_LD_W_ABS, OFF_IP + 4),
        jump(BPF_JMP_JEQ_K, hi, 0, 1),
        stmt(BPF_RET_K, RET_ALLOW),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ]);
}

/// Pushes "call `c.nr` with `c.args`: return `ret`" (into `c.arch`'s block). Only calls numbered `c.nr`
/// read an argument. Expects the number in the accumulator and leaves it there.
fn push_arg_catch(out: &mut Vec<Insn>, c: &ArgCatch, ret: u32) {
    let mut body = Vec::new();
    for &(index, value) in c.args {
        let off = OFF_ARGS + 8 * u32::try_from(index).unwrap_or(u32::MAX);
        #[allow(clippy::cast_possible_truncation)] // the two halves of a 64-bit value
        let halves = match value {
            ArgValue::Low32(v) => vec![(off, v)],
            ArgValue::Full(v) => vec![(off, v as u32), (off + 4, (v >> 32) as u32)],
        };
        for (off, v) in halves {
            body.push(stmt(BPF_LD_W_ABS, off));
            body.push(jump(BPF_JMP_JEQ_K, v, 0, 0)); // jf patched below
        }
    }
    body.push(stmt(BPF_RET_K, ret));
    // Every failed comparison goes to the `ld nr` after the body.
    let len = body.len();
    for (i, insn) in body.iter_mut().enumerate() {
        if insn.code == BPF_JMP_JEQ_K {
            insn.jf = u8::try_from(len - i - 1).unwrap_or(u8::MAX);
        }
    }
    out.push(jump(
        BPF_JMP_JEQ_K,
        c.nr,
        0,
        u8::try_from(len).unwrap_or(u8::MAX),
    ));
    out.extend(body);
    out.push(stmt(BPF_LD_W_ABS, OFF_NR));
}

/// Pushes "if cond jump over `then_len` instructions that follow, to what comes after".
/// The taken branch skips the next `then_len` instructions.
fn push_branch(out: &mut Vec<Insn>, code: u16, k: u32, then_len: usize) {
    match u8::try_from(then_len) {
        Ok(skip) => out.push(jump(code, k, skip, 0)),
        Err(_) => {
            out.push(jump(code, k, 0, 1));
            out.push(stmt(
                BPF_JMP_JA,
                u32::try_from(then_len).unwrap_or(u32::MAX),
            ));
        }
    }
}

/// Runs `prog` as the kernel would for one call: a reference interpreter for the subset
/// [`compile`] emits, used by tests and by `compatrun personas --explain`.
///
/// Returns `None` for a malformed program (a jump out of range, an unknown opcode).
pub fn evaluate(prog: &[Insn], arch: u32, nr: u32, ip: u64) -> Option<u32> {
    evaluate_call(prog, arch, nr, ip, &[u64::MAX; 6])
}

/// [`evaluate`] with the call's arguments (where [`evaluate`] passes all ones).
pub fn evaluate_call(prog: &[Insn], arch: u32, nr: u32, ip: u64, args: &[u64; 6]) -> Option<u32> {
    let mut acc: u32 = 0;
    let mut pc: usize = 0;
    loop {
        let insn = prog.get(pc)?;
        pc += 1;
        match insn.code {
            BPF_LD_W_ABS => {
                acc = match insn.k {
                    OFF_NR => nr,
                    OFF_ARCH => arch,
                    #[allow(clippy::cast_possible_truncation)]
                    OFF_IP => ip as u32,
                    #[allow(clippy::cast_possible_truncation)]
                    k if k == OFF_IP + 4 => (ip >> 32) as u32,
                    k if (OFF_ARGS..OFF_ARGS + 48).contains(&k) && k % 4 == 0 => {
                        let word = usize::try_from((k - OFF_ARGS) / 4).ok()?;
                        let arg = args[word / 2];
                        #[allow(clippy::cast_possible_truncation)]
                        if word % 2 == 0 {
                            arg as u32
                        } else {
                            (arg >> 32) as u32
                        }
                    }
                    _ => return None,
                }
            }
            BPF_ALU_AND_K => acc &= insn.k,
            BPF_JMP_JA => pc = pc.checked_add(usize::try_from(insn.k).ok()?)?,
            BPF_JMP_JEQ_K | BPF_JMP_JGE_K | BPF_JMP_JSET_K => {
                let taken = match insn.code {
                    BPF_JMP_JEQ_K => acc == insn.k,
                    BPF_JMP_JGE_K => acc >= insn.k,
                    _ => acc & insn.k != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            BPF_RET_K => return Some(insn.k),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(rules: Vec<(Arch, u32, Rule)>, default: Rule) -> InterceptSpec {
        InterceptSpec {
            rules,
            defaults: Arch::ALL.iter().map(|&a| (a, default)).collect(),
            signals: Vec::new(),
            allow_from_ip: Vec::new(),
            exec_events: false,
        }
    }

    fn expected(spec: &InterceptSpec, arch: Arch, nr: u32, catch: CatchAction) -> u32 {
        ret_value(spec.rule_for(arch, nr), arch, catch)
    }

    fn check_all(spec: &InterceptSpec, catch: CatchAction) {
        let prog = compile(spec, catch);
        assert!(prog.len() < 4096, "program too long: {}", prog.len());
        let probes: Vec<u32> = (0..1200)
            .chain([u32::MAX, u32::MAX - 1, 0x3fff_ffff])
            .collect();
        for nr in probes {
            let got64 = evaluate(&prog, AUDIT_ARCH_X86_64, nr & !X32_SYSCALL_BIT, 0);
            assert_eq!(
                got64,
                Some(expected(spec, Arch::X86_64, nr & !X32_SYSCALL_BIT, catch))
            );
            let got32 = evaluate(&prog, AUDIT_ARCH_I386, nr, 0);
            assert_eq!(
                got32,
                Some(expected(spec, Arch::I386, nr, catch)),
                "i386 nr {nr}"
            );
            let gotx32 = evaluate(&prog, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, 0);
            let base = nr & !X32_SYSCALL_BIT;
            assert_eq!(
                gotx32,
                Some(expected(spec, Arch::X32, base, catch)),
                "x32 nr {nr}"
            );
        }
        assert_eq!(evaluate(&prog, 0xdead_beef, 1, 0), Some(RET_KILL_PROCESS));
    }

    #[test]
    fn allow_all_allows_everything_but_foreign_arches() {
        check_all(&InterceptSpec::allow_all(), CatchAction::Trace);
    }

    #[test]
    fn mixed_rules_match_the_spec_for_every_number() {
        let mut rules = vec![
            (Arch::X86_64, 63, Rule::Catch),
            (Arch::I386, 122, Rule::Catch),
        ];
        for n in 299..460 {
            rules.push((Arch::X86_64, n, Rule::Errno(38)));
        }
        rules.push((Arch::X86_64, 300, Rule::Allow));
        rules.push((Arch::X32, 63, Rule::Catch));
        rules.push((Arch::X86_64, 0, Rule::Catch));
        check_all(&spec_with(rules.clone(), Rule::Allow), CatchAction::Trace);
        check_all(&spec_with(rules, Rule::Errno(38)), CatchAction::UserNotif);
    }

    #[test]
    fn many_alternating_ranges_use_far_jumps_correctly() {
        // Every other number caught: hundreds of ranges, forcing jumps beyond 255.
        let rules = (0..600u32)
            .filter(|n| n % 2 == 0)
            .flat_map(|n| Arch::ALL.map(|a| (a, n, Rule::Catch)))
            .collect();
        check_all(&spec_with(rules, Rule::Errno(1)), CatchAction::Trace);
    }

    #[test]
    fn a_call_from_its_allowed_address_passes_and_only_there() {
        let mut spec = spec_with(vec![(Arch::X86_64, 309, Rule::Errno(38))], Rule::Allow);
        spec.allow_from_ip.push((309, 0xffff_ffff_ff60_0800));
        let prog = compile(&spec, CatchAction::Trace);
        let run = |nr, ip| evaluate(&prog, AUDIT_ARCH_X86_64, nr, ip);
        assert_eq!(run(309, 0xffff_ffff_ff60_0800), Some(RET_ALLOW));
        assert_eq!(run(309, 0x40_1000), Some(RET_ERRNO | 38));
        assert_eq!(run(309, 0xffff_ffff_ff60_0400), Some(RET_ERRNO | 38));
        assert_eq!(run(309, 0x0000_0000_ff60_0800), Some(RET_ERRNO | 38));
        assert_eq!(run(39, 0xffff_ffff_ff60_0800), Some(RET_ALLOW));
        check_all(&spec, CatchAction::Trace);
    }

    #[test]
    fn arch_tags_round_trip() {
        for a in Arch::ALL {
            assert_eq!(arch_from_tag(u64::from(arch_tag(a))), Some(a));
        }
        assert_eq!(arch_from_tag(0), None);
    }
}
