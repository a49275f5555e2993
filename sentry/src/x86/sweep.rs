//! A linear sweep of one code section (as `objdump -d` does it): every system-call site,
//! with its call number where a constant reaches eax in the same basic block, and every
//! reference to a vsyscall entry.
//!
//! Basic blocks are cut at every instruction that is not straight-line (branches, calls,
//! returns, interrupts, `syscall` itself) and at every direct branch target found in the
//! section: a site or a load whose block is entered by a branch between the constant and
//! its use is reported unresolved (or not patchable), since another path may bring
//! another value.

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Register,
};
use platform::Arch;

use super::insn::{self, RegUse};
use super::{Bitness, Shape, SyscallSite, TargetBytes, VsyscallSite};

/// What a sweep found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// System-call sites, in address order.
    pub syscalls: Vec<SyscallSite>,
    /// vsyscall references, in address order of their use (or load).
    pub vsyscalls: Vec<VsyscallSite>,
    /// Instructions decoded.
    pub instructions: u64,
    /// Bytes that did not decode (each counted once, the sweep goes on at the next byte).
    pub invalid_bytes: u64,
}

/// A vsyscall address sitting in a register, not yet used.
#[derive(Clone, Copy, Debug)]
struct Pending {
    site: VsyscallSite,
    reg: Register,
    /// The address after the load: a branch target from here up to the use means another
    /// path reaches the use.
    load_end: u64,
}

/// Sweeps `code`, which sits at address `addr`, decoded as `bitness` code.
/// `read_const(a)` gives the 8-byte little-endian constant at address `a` (for calls
/// through memory), or `None` where that address holds nothing known.
pub fn sweep(
    code: &[u8],
    addr: u64,
    bitness: Bitness,
    read_const: &dyn Fn(u64) -> Option<u64>,
) -> Found {
    let mut found = Found::default();
    let mut decoder = Decoder::with_ip(bitness.bits(), code, addr, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut i = Instruction::default();
    // The constant in eax, and where the instruction that put it there ends.
    let mut eax: Option<(u64, u64)> = None;
    let mut pending: Vec<Pending> = Vec::new();
    // Direct branch targets, and the ranges [from, to] they must not fall in for the
    // site at index `usize` to keep its verdict.
    let mut targets: Vec<u64> = Vec::new();
    let mut syscall_checks: Vec<(u64, u64, usize)> = Vec::new();
    let mut vsyscall_checks: Vec<(u64, u64, usize)> = Vec::new();

    while decoder.can_decode() {
        decoder.decode_out(&mut i);
        found.instructions += 1;
        if i.is_invalid() {
            // iced may swallow what follows a bad byte; go on one byte later, as objdump.
            found.invalid_bytes += 1;
            let next = i.ip().wrapping_sub(addr).wrapping_add(1);
            let next = usize::try_from(next).unwrap_or(code.len()).min(code.len());
            if decoder.set_position(next).is_err() {
                break;
            }
            decoder.set_ip(i.ip().wrapping_add(1));
            eax = None;
            flush(&mut pending, &mut found);
            continue;
        }
        if let Some(t) = insn::direct_target(&i) {
            targets.push(t);
        }

        if let Some(kind) = insn::syscall_insn(&i, bitness) {
            let (arch, nr) = abi_and_nr(kind, bitness, eax.map(|(v, _)| v));
            if let (Some(_), Some((_, set_end))) = (nr, eax) {
                syscall_checks.push((set_end, i.ip(), found.syscalls.len()));
            }
            found.syscalls.push(SyscallSite {
                addr: i.ip(),
                insn: kind,
                arch,
                nr,
            });
            // The kernel's result replaces it.
            eax = None;
        }

        if bitness == Bitness::Bits64 {
            vsyscall_step(
                &i,
                read_const,
                &mut pending,
                &mut found,
                &mut vsyscall_checks,
            );
        }

        // What this instruction leaves in eax and the pending registers.
        let uses = if eax.is_some() || !pending.is_empty() {
            insn::reg_use(&mut factory, &i)
        } else {
            RegUse::default()
        };
        if let Some(v) = insn::eax_constant(&i) {
            eax = Some((v, i.next_ip()));
        } else if uses.writes(Register::RAX) {
            eax = None;
        }
        let before = pending.len();
        pending.retain(|p| {
            let gone = uses.writes(p.reg) || uses.reads(p.reg);
            if gone {
                found.vsyscalls.push(p.site);
            }
            !gone
        });
        debug_assert!(pending.len() <= before);
        if let Some((entry, reg, at, size)) = insn::vsyscall_load(&i) {
            pending.push(Pending {
                site: VsyscallSite {
                    entry,
                    shape: Shape::Loaded,
                    load: Some(i.ip()),
                    user: None,
                    end: None,
                    target: TargetBytes::Immediate { at, size },
                    patchable: false,
                },
                reg,
                load_end: i.next_ip(),
            });
        }
        if i.flow_control() != FlowControl::Next {
            eax = None;
            flush(&mut pending, &mut found);
        }
    }
    flush(&mut pending, &mut found);

    // A branch into [from, to] means the constant may not be what reaches the site.
    targets.sort_unstable();
    targets.dedup();
    let hit = |from: u64, to: u64| {
        let k = targets.partition_point(|&t| t < from);
        targets.get(k).is_some_and(|&t| t <= to)
    };
    for (from, to, k) in syscall_checks {
        if hit(from, to) {
            found.syscalls[k].nr = None;
        }
    }
    for (from, to, k) in vsyscall_checks {
        if hit(from, to) {
            found.vsyscalls[k].patchable = false;
        }
    }
    found.vsyscalls.sort_by_key(|s| s.user.or(s.load));
    found
}

/// Handles the vsyscall shapes for one 64-bit instruction: a register call, jump or
/// cmov using a pending load, or a call or jump through a constant.
fn vsyscall_step(
    i: &Instruction,
    read_const: &dyn Fn(u64) -> Option<u64>,
    pending: &mut Vec<Pending>,
    found: &mut Found,
    checks: &mut Vec<(u64, u64, usize)>,
) {
    if let Some((transfer, reg)) = insn::register_transfer(i) {
        if let Some(k) = pending.iter().position(|p| p.reg == reg) {
            let p = pending.swap_remove(k);
            checks.push((p.load_end, i.ip(), found.vsyscalls.len()));
            found.vsyscalls.push(VsyscallSite {
                shape: Shape::Register(transfer),
                user: Some(i.ip()),
                end: Some(i.next_ip()),
                patchable: true,
                ..p.site
            });
        }
        return;
    }
    if let Some((transfer, at)) = insn::memory_transfer(i) {
        if let Some(entry) = read_const(at).and_then(super::VsyscallEntry::from_addr) {
            found.vsyscalls.push(VsyscallSite {
                entry,
                shape: Shape::Memory(transfer),
                load: None,
                user: Some(i.ip()),
                end: Some(i.next_ip()),
                target: TargetBytes::Memory { at },
                patchable: true,
            });
        }
        return;
    }
    if let Some(k) = pending.iter().position(|p| insn::cmov_from(i, p.reg)) {
        let p = pending.swap_remove(k);
        found.vsyscalls.push(VsyscallSite {
            shape: Shape::Cmov,
            user: Some(i.ip()),
            ..p.site
        });
    }
}

/// Loads never used in their block are references of their own.
fn flush(pending: &mut Vec<Pending>, found: &mut Found) {
    found.vsyscalls.extend(pending.drain(..).map(|p| p.site));
}

/// The ABI a site enters and the call number, from the constant in eax if known.
fn abi_and_nr(kind: super::SyscallInsn, bitness: Bitness, eax: Option<u64>) -> (Arch, Option<u32>) {
    use super::SyscallInsn;
    const X32_BIT: u64 = 0x4000_0000;
    let arch = match (kind, bitness) {
        (SyscallInsn::Syscall, Bitness::Bits64) => Arch::X86_64,
        _ => Arch::I386,
    };
    // Only eax counts (the kernel reads rax; a 32-bit mov zero-extends).
    let Some(v) = eax else { return (arch, None) };
    let v = if arch == Arch::I386 {
        v & 0xffff_ffff
    } else {
        v
    };
    if arch == Arch::X86_64 && v & X32_BIT != 0 && v < X32_BIT + 0x1000 {
        return (Arch::X32, u32::try_from(v - X32_BIT).ok());
    }
    (arch, (v < 0x1000).then(|| u32::try_from(v).ok()).flatten())
}
