//! The trampoline page a patched vsyscall call site reaches: one small stub per entry of
//! the vsyscall page, generated with iced-x86's assembler for the address the page is
//! mapped at.
//!
//! A stub either jumps to the process's own vDSO function for the call (a tail call
//! through an 8-byte slot in the page: the vDSO function returns straight to the
//! patched site's caller, as the vsyscall entry would have), or, where the vDSO lacks
//! the function, makes the real system call (`mov $nr,%eax; syscall; ret`), which the
//! seccomp filter judges like any other. An entry with neither gets no stub, and its
//! sites keep being emulated per call.

use iced_x86::code_asm::{eax, qword_ptr, CodeAssembler, CodeLabel};
use iced_x86::{BlockEncoderOptions, IcedError};

use crate::x86::VsyscallEntry;

/// The trampoline page's size.
pub const PAGE: u64 = 4096;

/// The x86_64 system call each entry stands for.
pub fn syscall_nr(entry: VsyscallEntry) -> u32 {
    match entry {
        VsyscallEntry::Gettimeofday => 96,
        VsyscallEntry::Time => 201,
        VsyscallEntry::Getcpu => 309,
    }
}

/// How one entry is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The vDSO function at this address.
    Vdso(u64),
    /// The real system call.
    Syscall,
    /// Not at all: its sites stay emulated.
    None,
}

/// Why a trampoline could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The assembler refused.
    #[error("assembling the trampoline: {0}")]
    Asm(#[from] IcedError),
    /// The code does not fit one page.
    #[error("the trampoline does not fit its page")]
    TooBig,
}

/// A trampoline page's contents, for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trampoline {
    /// Where the page is (or is to be) mapped.
    pub base: u64,
    /// The page's bytes (shorter than the page; the rest is zeros).
    pub code: Vec<u8>,
    /// Each entry's stub address, in [`VsyscallEntry::ALL`] order.
    pub stubs: [Option<u64>; 3],
}

impl Trampoline {
    /// Generates the page for `base`, answering the entries (in [`VsyscallEntry::ALL`]
    /// order) as `targets` say.
    pub fn build(base: u64, targets: [Target; 3]) -> Result<Self, BuildError> {
        let mut a = CodeAssembler::new(64)?;
        let mut labels: Vec<Option<CodeLabel>> = Vec::new();
        let mut slots: Vec<(CodeLabel, u64)> = Vec::new();
        for (entry, target) in VsyscallEntry::ALL.into_iter().zip(targets) {
            if target == Target::None {
                labels.push(None);
                continue;
            }
            let mut stub = a.create_label();
            a.set_label(&mut stub)?;
            match target {
                Target::Vdso(addr) => {
                    let slot = a.create_label();
                    a.jmp(qword_ptr(slot))?;
                    slots.push((slot, addr));
                }
                _ => {
                    a.mov(eax, syscall_nr(entry))?;
                    a.syscall()?;
                    a.ret()?;
                }
            }
            // Nothing falls through into the next stub.
            a.int3()?;
            labels.push(Some(stub));
        }
        for (mut slot, addr) in slots {
            a.set_label(&mut slot)?;
            a.dq(&[addr])?;
        }
        if a.instructions().is_empty() {
            a.int3()?;
        }
        let result =
            a.assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
        let mut stubs = [None; 3];
        for (slot, label) in stubs.iter_mut().zip(&labels) {
            if let Some(label) = label {
                *slot = Some(result.label_ip(label)?);
            }
        }
        let code = result.inner.code_buffer;
        if code.len() as u64 > PAGE {
            return Err(BuildError::TooBig);
        }
        Ok(Trampoline { base, code, stubs })
    }

    /// The stub for `entry`, if it has one.
    pub fn stub(&self, entry: VsyscallEntry) -> Option<u64> {
        let i = VsyscallEntry::ALL.iter().position(|e| *e == entry)?;
        self.stubs[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Register};

    /// Decodes the stub at `addr` in `t` up to and including its first control transfer.
    fn decode_stub(t: &Trampoline, addr: u64) -> Vec<Instruction> {
        let off = usize::try_from(addr - t.base).expect("offset");
        let mut d = Decoder::with_ip(64, &t.code[off..], addr, DecoderOptions::NONE);
        let mut out = Vec::new();
        while d.can_decode() {
            let i = d.decode();
            assert!(!i.is_invalid(), "invalid instruction in stub at {addr:#x}");
            let stop = matches!(i.code(), Code::Jmp_rm64 | Code::Retnq);
            out.push(i);
            if stop {
                break;
            }
        }
        out
    }

    fn slot_value(t: &Trampoline, at: u64) -> u64 {
        let off = usize::try_from(at - t.base).expect("offset");
        u64::from_le_bytes(t.code[off..off + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn vdso_stubs_decode_to_a_jump_through_a_slot_holding_the_function() {
        let base = 0x20_0000;
        let fns = [0x7fff_f7fc_1a20, 0x7fff_f7fc_1b40, 0x7fff_f7fc_1c00];
        let t = Trampoline::build(base, fns.map(Target::Vdso)).expect("assembles");
        for (entry, f) in VsyscallEntry::ALL.into_iter().zip(fns) {
            let stub = t.stub(entry).expect("stub");
            assert!(stub >= base && stub < base + PAGE);
            let insns = decode_stub(&t, stub);
            assert_eq!(insns.len(), 1, "{entry:?}: {insns:?}");
            let jmp = insns[0];
            assert_eq!(jmp.code(), Code::Jmp_rm64);
            assert!(jmp.is_ip_rel_memory_operand());
            assert_eq!(slot_value(&t, jmp.ip_rel_memory_address()), f);
        }
        // Every stub fits in the low 2 GiB, so a sign-extended imm32 reaches it.
        assert!(t.stubs.iter().flatten().all(|&s| s < 0x8000_0000));
    }

    #[test]
    fn syscall_stubs_decode_to_the_real_call_and_entries_without_either_have_none() {
        let t = Trampoline::build(
            0x7ff0_0000,
            [Target::Syscall, Target::None, Target::Syscall],
        )
        .expect("assembles");
        assert_eq!(t.stub(VsyscallEntry::Time), None);
        for entry in [VsyscallEntry::Gettimeofday, VsyscallEntry::Getcpu] {
            let insns = decode_stub(&t, t.stub(entry).expect("stub"));
            let codes: Vec<Code> = insns.iter().map(Instruction::code).collect();
            assert_eq!(codes, [Code::Mov_r32_imm32, Code::Syscall, Code::Retnq]);
            assert_eq!(insns[0].op0_register(), Register::EAX);
            assert_eq!(insns[0].immediate32(), syscall_nr(entry));
        }
        // The whole code decodes without an invalid instruction before the slots.
        let t = Trampoline::build(0x1000, [Target::None; 3]).expect("assembles");
        assert_eq!(t.stubs, [None; 3]);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_another_base_other_bytes() {
        let targets = [
            Target::Vdso(0x7fff_0000_1000),
            Target::Syscall,
            Target::None,
        ];
        let a = Trampoline::build(0x30_0000, targets).expect("assembles");
        let b = Trampoline::build(0x30_0000, targets).expect("assembles");
        let c = Trampoline::build(0x40_0000, targets).expect("assembles");
        assert_eq!(a, b);
        assert_ne!(a.stubs, c.stubs);
    }
}
