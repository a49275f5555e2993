//! The tail-call shape, for the patcher: a thread faulted at vsyscall entry E with a
//! return address R that follows a direct `call F`, and F begins with straight-line code
//! that loads E into a register and jumps through it (`mov $E,%reg` … `jmp *%reg`), so
//! E returns straight to F's caller.
//!
//! Decoding starts at F, a real instruction boundary (a call's target), and follows only
//! straight-line code: any branch, any write to the register between load and jump, or
//! anything that does not decode refuses the site.

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Register};

use super::insn;
use super::{Refusal, Shape, TargetBytes, Transfer, VsyscallEntry, VsyscallSite};

/// Instructions looked at from the function's start up to the jump.
const MAX_INSNS: usize = 12;

/// The target of the direct `call rel32` that ends exactly at `ret` in `code` (which
/// sits at `code_start`), if one does.
pub fn direct_call_before(code: &[u8], code_start: u64, ret: u64) -> Option<u64> {
    let off = usize::try_from(ret.checked_sub(code_start)?.checked_sub(5)?).ok()?;
    let bytes = code.get(off..off + 5)?;
    let mut d = Decoder::with_ip(64, bytes, ret - 5, DecoderOptions::NONE);
    let i = d.decode();
    (i.code() == Code::Call_rel32_64 && i.next_ip() == ret).then(|| i.near_branch_target())
}

/// The address of the 8-byte constant that the first instruction of `code` (at `at`)
/// jumps through, if it is `jmp *disp(%rip)` or `jmp *abs` (a PLT entry's first
/// instruction).
pub fn jump_through_memory(code: &[u8], at: u64) -> Option<u64> {
    let mut d = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    let i = d.decode();
    if i.is_invalid() {
        return None;
    }
    match insn::memory_transfer(&i) {
        Some((Transfer::Jump, constant)) => Some(constant),
        _ => None,
    }
}

/// The tail-call site at the start of the function whose first bytes are `code` (at
/// `func`), for entry `entry`.
pub fn tail_site_at(code: &[u8], func: u64, entry: VsyscallEntry) -> Result<VsyscallSite, Refusal> {
    let mut d = Decoder::with_ip(64, code, func, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut loaded: Option<(Register, u64, u64, u8)> = None;
    for _ in 0..MAX_INSNS {
        if !d.can_decode() {
            break;
        }
        let i = d.decode();
        if i.is_invalid() || i.next_ip() > func + code.len() as u64 {
            return Err(Refusal::Clobbered);
        }
        if let Some((reg, load, at, size)) = loaded {
            if let Some((Transfer::Jump, r)) = insn::register_transfer(&i) {
                if r != reg {
                    return Err(Refusal::Clobbered);
                }
                return Ok(VsyscallSite {
                    entry,
                    shape: Shape::Register(Transfer::Jump),
                    load: Some(load),
                    user: Some(i.ip()),
                    end: Some(i.next_ip()),
                    target: TargetBytes::Immediate { at, size },
                    patchable: true,
                });
            }
        }
        if let Some((e, reg, at, size)) = insn::vsyscall_load(&i) {
            if e != entry {
                return Err(Refusal::NoLoad);
            }
            loaded = Some((reg, i.ip(), at, size));
            continue;
        }
        if i.flow_control() != FlowControl::Next {
            return Err(if loaded.is_some() {
                Refusal::Clobbered
            } else {
                Refusal::NoLoad
            });
        }
        if let Some((reg, ..)) = loaded {
            if insn::reg_use(&mut factory, &i).writes(reg) {
                return Err(Refusal::Clobbered);
            }
        }
    }
    Err(if loaded.is_some() {
        Refusal::Clobbered
    } else {
        Refusal::NoLoad
    })
}

/// The register the vsyscall load at `load` (inside `code`, which sits at `code_start`)
/// writes, if that instruction is one.
pub fn loaded_register(code: &[u8], code_start: u64, load: u64) -> Option<Register> {
    let off = usize::try_from(load.checked_sub(code_start)?).ok()?;
    let mut d = Decoder::with_ip(64, code.get(off..)?, load, DecoderOptions::NONE);
    insn::vsyscall_load(&d.decode()).map(|(_, reg, _, _)| reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: [u8; 4] = [0x00, 0x04, 0x60, 0xff];

    fn mov_rax_time() -> Vec<u8> {
        let mut v = vec![0x48, 0xc7, 0xc0];
        v.extend_from_slice(&TIME);
        v
    }

    #[test]
    fn a_called_function_that_tail_jumps_is_found() {
        // f: mov $0xffffffffff600400,%rax; jmp *%rax
        let mut f = mov_rax_time();
        f.extend_from_slice(&[0xff, 0xe0]);
        f.extend_from_slice(&[0xcc; 8]);
        let site = tail_site_at(&f, 0x401000, VsyscallEntry::Time).expect("patchable");
        assert_eq!(site.shape, Shape::Register(Transfer::Jump));
        assert_eq!(
            site.target,
            TargetBytes::Immediate {
                at: 0x401003,
                size: 4
            }
        );
        assert_eq!(site.user, Some(0x401007));
        assert_eq!(loaded_register(&f, 0x401000, 0x401000), Some(Register::RAX));

        // A straight-line instruction before the load and one leaving rax alone between.
        let mut g = vec![0x48, 0x89, 0xfa]; // mov %rdi,%rdx
        g.extend(mov_rax_time());
        g.extend_from_slice(&[0x31, 0xc9, 0xff, 0xe0]); // xor %ecx,%ecx; jmp *%rax
        let site = tail_site_at(&g, 0x1000, VsyscallEntry::Time).expect("patchable");
        assert_eq!(
            site.target,
            TargetBytes::Immediate {
                at: 0x1006,
                size: 4
            }
        );
    }

    #[test]
    fn near_misses_are_refused() {
        let tail = |mid: &[u8], end: &[u8]| {
            let mut f = mov_rax_time();
            f.extend_from_slice(mid);
            f.extend_from_slice(end);
            tail_site_at(&f, 0x1000, VsyscallEntry::Time)
        };
        // rax changed between load and jump; another register jumped through; a call
        // rather than a jump; a branch in between; the wrong entry; truncated.
        assert_eq!(
            tail(&[0x48, 0x31, 0xc0], &[0xff, 0xe0]),
            Err(Refusal::Clobbered)
        );
        assert_eq!(tail(&[], &[0xff, 0xe1]), Err(Refusal::Clobbered));
        assert!(tail(&[], &[0xff, 0xd0]).is_err());
        assert!(tail(&[0x74, 0x00], &[0xff, 0xe0]).is_err());
        assert_eq!(
            tail_site_at(
                &[0x48, 0xc7, 0xc0, 0, 0, 0x60, 0xff, 0xff, 0xe0],
                0,
                VsyscallEntry::Time
            ),
            Err(Refusal::NoLoad)
        );
        assert!(tail_site_at(&mov_rax_time()[..5], 0, VsyscallEntry::Time).is_err());
        assert!(tail_site_at(&[0xc3], 0, VsyscallEntry::Time).is_err());
    }

    #[test]
    fn plt_entries_are_followed_and_other_jumps_are_not() {
        // jmp *0x2fe2(%rip) at 0x1000: the constant is at 0x1006 + 0x2fe2.
        let plt = [0xff, 0x25, 0xe2, 0x2f, 0x00, 0x00, 0x68, 0x00];
        assert_eq!(jump_through_memory(&plt, 0x1000), Some(0x3fe8));
        assert_eq!(jump_through_memory(&[0xff, 0xe0], 0x1000), None); // jmp *%rax
        assert_eq!(jump_through_memory(&[0xff, 0x15, 0, 0, 0, 0], 0x1000), None); // call
        assert_eq!(jump_through_memory(&[0xff], 0x1000), None);
    }

    #[test]
    fn direct_calls_before_a_return_address() {
        // call 0x401000 from 0x402000 (rel32 = 0x401000 - 0x402005)
        let rel = (0x401000i64 - 0x402005).to_le_bytes();
        let mut code = vec![0x90, 0xe8];
        code.extend_from_slice(&rel[..4]);
        assert_eq!(
            direct_call_before(&code, 0x401fff, 0x402005),
            Some(0x401000)
        );
        assert_eq!(direct_call_before(&code, 0x401fff, 0x402004), None);
        assert_eq!(direct_call_before(&[0xff, 0xd0], 0x1000, 0x1002), None);
        assert_eq!(direct_call_before(&code, 0x402000, 0x402003), None);
    }
}
