//! The patcher's question: a thread faulted at vsyscall entry E with return address R on
//! its stack; do the bytes before R end in a call to E that may be rewritten, and where
//! are the bytes naming E?
//!
//! Decoding backwards is ambiguous on x86, so the answer is strict: every way the bytes
//! before R can be decoded into the accepted shapes is tried, and the site is patchable
//! only when exactly one of them fits, with nothing suspicious in between. Anything else
//! is a [`Refusal`] saying why.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory};

use super::insn;
use super::{Shape, TargetBytes, Transfer, VsyscallEntry, VsyscallSite};

/// The most instructions accepted between the load and the call (none of which may
/// write the register or branch).
const MAX_BETWEEN: usize = 8;
/// The longest x86 instruction.
const MAX_INSN: usize = 15;

/// Why the site before a return address may not be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The return address is not inside (or at the end of) the bytes given.
    #[error("the return address {ret:#x} is not within the code given ({start:#x}, {len} bytes)")]
    OutOfRange {
        /// The return address asked about.
        ret: u64,
        /// Where the code given starts.
        start: u64,
        /// How many bytes were given.
        len: usize,
    },
    /// No `call *%reg` or `call *mem` ends exactly at the return address.
    #[error("no indirect call ends at the return address")]
    NoCall,
    /// A call ends there, but no `mov $E,%reg` feeding it was found.
    #[error("the call's register is not loaded with the entry's address before it")]
    NoLoad,
    /// A load was found, but something between it and the call writes the register,
    /// branches, or does not decode.
    #[error("the register is changed, or control may leave, between the load and the call")]
    Clobbered,
    /// The call goes through memory whose constant is not E (or cannot be read).
    #[error("the constant the call goes through does not hold the entry's address")]
    WrongConstant,
    /// More than one decoding of the bytes fits.
    #[error("the bytes before the call decode in more than one way")]
    Ambiguous,
    /// A direct branch seen in the bytes lands between the load and the call.
    #[error("a branch lands between the load and the call")]
    BranchTarget,
}

/// Decodes one instruction of `window` at offset `off`, or `None` if none fits there
/// (invalid or running past the window's end).
fn one(window: &[u8], start: u64, off: usize, bits: u32) -> Option<Instruction> {
    let bytes = window.get(off..)?;
    let mut d = Decoder::with_ip(bits, bytes, start + off as u64, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

/// The site of the call that returns to `ret`, given the bytes `code` at `code_start`
/// (at least the instructions up to `ret`; a few dozen bytes before it are plenty), for
/// a thread that faulted at `entry` (64-bit code only: i386 has no vsyscall page).
///
/// Accepted: `mov $E,%reg` (sign-extended imm32) or `movabs $E,%reg`, then at most a
/// few straight-line instructions that leave the register alone, then `call *%reg`
/// ending at `ret`; or `call *disp(%rip)` / `call *abs` ending at `ret` through a constant
/// that `read_const` says holds E (the patcher must still check the constant's page is
/// private before rewriting it).
pub fn site_before(
    code: &[u8],
    code_start: u64,
    ret: u64,
    entry: VsyscallEntry,
    read_const: &dyn Fn(u64) -> Option<u64>,
) -> Result<VsyscallSite, Refusal> {
    let end = ret
        .checked_sub(code_start)
        .and_then(|o| usize::try_from(o).ok())
        .filter(|&o| o <= code.len())
        .ok_or(Refusal::OutOfRange {
            ret,
            start: code_start,
            len: code.len(),
        })?;
    let window = &code[..end];
    let mut candidates: Vec<VsyscallSite> = Vec::new();
    let mut saw_call = false;
    let mut wrong_constant = false;
    let mut clobbered = false;

    // A single call instruction ending exactly at ret.
    for off in end.saturating_sub(MAX_INSN)..end {
        let Some(i) = one(window, code_start, off, 64) else {
            continue;
        };
        if i.next_ip() != ret {
            continue;
        }
        if let Some((Transfer::Call, _)) = insn::register_transfer(&i) {
            saw_call = true;
        }
        if let Some((Transfer::Call, at)) = insn::memory_transfer(&i) {
            saw_call = true;
            if read_const(at) == Some(entry.addr()) {
                candidates.push(VsyscallSite {
                    entry,
                    shape: Shape::Memory(Transfer::Call),
                    load: None,
                    user: Some(i.ip()),
                    end: Some(ret),
                    target: TargetBytes::Memory { at },
                    patchable: true,
                });
            } else {
                wrong_constant = true;
            }
        }
    }

    // A load of E, followed by straight-line code, then `call *%reg` ending at ret.
    let mut factory = InstructionInfoFactory::new();
    for off in 0..end {
        let Some(load) = one(window, code_start, off, 64) else {
            continue;
        };
        let Some((e, reg, at, size)) = insn::vsyscall_load(&load) else {
            continue;
        };
        if e != entry {
            continue;
        }
        let mut next = usize::try_from(load.next_ip() - code_start).unwrap_or(usize::MAX);
        for _ in 0..=MAX_BETWEEN {
            let Some(i) = one(window, code_start, next, 64) else {
                clobbered = true;
                break;
            };
            if i.next_ip() == ret {
                match insn::register_transfer(&i) {
                    Some((Transfer::Call, r)) if r == reg => candidates.push(VsyscallSite {
                        entry,
                        shape: Shape::Register(Transfer::Call),
                        load: Some(load.ip()),
                        user: Some(i.ip()),
                        end: Some(ret),
                        target: TargetBytes::Immediate { at, size },
                        patchable: true,
                    }),
                    _ => clobbered = true,
                }
                break;
            }
            if i.flow_control() != FlowControl::Next || insn::reg_use(&mut factory, &i).writes(reg)
            {
                clobbered = true;
                break;
            }
            next += i.len();
        }
    }

    let site = match candidates.as_slice() {
        [one] => *one,
        [] if !saw_call => return Err(Refusal::NoCall),
        [] if wrong_constant => return Err(Refusal::WrongConstant),
        [] if clobbered => return Err(Refusal::Clobbered),
        [] => return Err(Refusal::NoLoad),
        _ => return Err(Refusal::Ambiguous),
    };
    if let (Some(load), Some(user)) = (site.load, site.user) {
        if branch_lands_between(window, code_start, load, user) {
            return Err(Refusal::BranchTarget);
        }
    }
    Ok(site)
}

/// Whether a decoding of the bytes before `load` that reaches `load` on an instruction
/// boundary holds a direct branch landing after the load and at or before the call.
fn branch_lands_between(window: &[u8], start: u64, load: u64, call: u64) -> bool {
    let load_off = usize::try_from(load - start).unwrap_or(0);
    let load_end = one(window, start, load_off, 64).map_or(load, |i| i.next_ip());
    (0..load_off).any(|from| {
        let mut off = from;
        let mut seen = Vec::new();
        while off < load_off {
            let Some(i) = one(&window[..load_off], start, off, 64) else {
                return false;
            };
            if let Some(t) = insn::direct_target(&i) {
                seen.push(t);
            }
            off += i.len();
        }
        off == load_off && seen.iter().any(|&t| (load_end..=call).contains(&t))
    })
}
