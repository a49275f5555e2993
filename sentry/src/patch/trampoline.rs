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
//!
//! Under a persona with a `uname` identity the page starts with one more stub, which a
//! patched `uname` wrapper calls (`mov $stub,%eax; call *%rax`): it makes the real
//! `uname` (so the kernel fills in the live fields and answers EFAULT for a bad buffer),
//! and on success copies the persona's release and version, kept at the end of the
//! page, over the result. Its `syscall` instruction ends at [`UNAME_RETURN`] from the
//! page's start, the address the filter allows `uname` from.

use iced_x86::code_asm::{eax, ecx, ptr, qword_ptr, rax, rdi, rdx, rsi, CodeAssembler, CodeLabel};
use iced_x86::{BlockEncoderOptions, IcedError};

use crate::handlers::uname::PERSONA_FIELDS as FIELDS;
use crate::x86::VsyscallEntry;

/// The trampoline page's size.
pub const PAGE: u64 = 4096;

/// x86_64 `uname`.
pub const UNAME_NR: u32 = 63;
/// Where the `uname` stub's `syscall` instruction ends, from the page's start: the
/// instruction pointer the filter sees for the stub's own call.
pub const UNAME_RETURN: u64 = 7;

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
    /// The `uname` stub's address (the page's start), if the page has one.
    pub uname: Option<u64>,
}

impl Trampoline {
    /// Generates the page for `base`, answering the entries (in [`VsyscallEntry::ALL`]
    /// order) as `targets` say, with a `uname` stub first when `uname` holds the bytes
    /// it copies over the real result's release and version (`handlers::uname`'s
    /// `persona_bytes`).
    pub fn build(
        base: u64,
        targets: [Target; 3],
        uname: Option<&[u8]>,
    ) -> Result<Self, BuildError> {
        let mut a = CodeAssembler::new(64)?;
        let uname_data = match uname {
            Some(bytes) => Some((uname_stub(&mut a)?, bytes)),
            None => None,
        };
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
        if let Some((mut data, bytes)) = uname_data {
            a.set_label(&mut data)?;
            a.db(bytes)?;
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
        let uname = uname.map(|_| base);
        Ok(Trampoline {
            base,
            code,
            stubs,
            uname,
        })
    }

    /// The stub for `entry`, if it has one.
    pub fn stub(&self, entry: VsyscallEntry) -> Option<u64> {
        let i = VsyscallEntry::ALL.iter().position(|e| *e == entry)?;
        self.stubs[i]
    }
}

/// Emits the `uname` stub at the start of the page; the label its data goes at.
///
/// The caller is a patched wrapper at its function's entry (`call *%rax` in place of
/// `mov $63,%eax; syscall`), which goes on with the wrapper's own error check on `rax`:
/// the stub keeps to what `syscall` itself clobbers (rcx, r11) and the caller-saved
/// rdx and rsi, and returns the call's result in rax.
fn uname_stub(a: &mut CodeAssembler) -> Result<CodeLabel, IcedError> {
    let data = a.create_label();
    let mut done = a.create_label();
    // Constants of a few hundred bytes (`struct new_utsname` is 390).
    #[allow(clippy::cast_possible_truncation)]
    let (offset, len) = (FIELDS.start as u32, FIELDS.len() as u32);
    a.mov(eax, UNAME_NR)?;
    a.syscall()?;
    a.test(rax, rax)?;
    a.jne(done)?;
    a.mov(rdx, rdi)?;
    a.lea(rdi, ptr(rdx + offset))?;
    a.lea(rsi, ptr(data))?;
    a.mov(ecx, len)?;
    a.rep().movsb()?;
    a.mov(rdi, rdx)?;
    a.set_label(&mut done)?;
    a.ret()?;
    a.int3()?;
    Ok(data)
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
        let t = Trampoline::build(base, fns.map(Target::Vdso), None).expect("assembles");
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
            None,
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
        let t = Trampoline::build(0x1000, [Target::None; 3], None).expect("assembles");
        assert_eq!(t.stubs, [None; 3]);
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_another_base_other_bytes() {
        let targets = [
            Target::Vdso(0x7fff_0000_1000),
            Target::Syscall,
            Target::None,
        ];
        let a = Trampoline::build(0x30_0000, targets, None).expect("assembles");
        let b = Trampoline::build(0x30_0000, targets, None).expect("assembles");
        let c = Trampoline::build(0x40_0000, targets, None).expect("assembles");
        assert_eq!(a, b);
        assert_ne!(a.stubs, c.stubs);
    }

    #[test]
    fn the_uname_stub_makes_the_real_call_then_copies_the_persona_part_from_the_page() {
        let data: Vec<u8> = (0..130u8).collect();
        let base = 0x6ff0_0000;
        let t = Trampoline::build(base, [Target::Syscall; 3], Some(&data)).expect("assembles");
        assert_eq!(t.uname, Some(base));
        let mut d = Decoder::with_ip(64, &t.code, base, DecoderOptions::NONE);
        let mut insns = Vec::new();
        loop {
            let i = d.decode();
            insns.push(i);
            if i.code() == Code::Retnq {
                break;
            }
        }
        let codes: Vec<Code> = insns.iter().map(Instruction::code).collect();
        assert_eq!(
            codes,
            [
                Code::Mov_r32_imm32,
                Code::Syscall,
                Code::Test_rm64_r64,
                Code::Jne_rel8_64,
                Code::Mov_rm64_r64,
                Code::Lea_r64_m,
                Code::Lea_r64_m,
                Code::Mov_r32_imm32,
                Code::Movsb_m8_m8,
                Code::Mov_rm64_r64,
                Code::Retnq,
            ]
        );
        assert_eq!(insns[0].immediate32(), UNAME_NR);
        assert_eq!(
            insns[1].next_ip(),
            base + UNAME_RETURN,
            "the filter's allowed address"
        );
        // On failure straight to the ret, with the kernel's answer in rax.
        assert_eq!(insns[3].near_branch64(), insns[10].ip());
        // rdi = buf + 130, rsi = the data at the page's end, rcx = 130, rep movsb.
        assert_eq!(insns[5].op0_register(), Register::RDI);
        assert_eq!(insns[5].memory_base(), Register::RDX);
        assert_eq!(insns[5].memory_displacement64(), 130);
        assert_eq!(insns[6].op0_register(), Register::RSI);
        let at = usize::try_from(insns[6].ip_rel_memory_address() - base).expect("offset");
        assert_eq!(t.code[at..], data[..]);
        assert_eq!(insns[7].immediate32(), 130);
        assert!(insns[8].has_rep_prefix());
        // The vsyscall stubs follow; the first one's bytes are where the stub said.
        let stub = t.stub(VsyscallEntry::Gettimeofday).expect("stub");
        assert!(stub > insns[10].ip());
    }
}
