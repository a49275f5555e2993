//! Single-instruction questions the sweep and the patcher's check share: is this a
//! system-call instruction, a load of a vsyscall address, a call or jump through a
//! register or a memory constant, and which registers does it write.

use iced_x86::{Code, Instruction, InstructionInfoFactory, OpAccess, OpKind, Register};

use super::{Bitness, SyscallInsn, Transfer, VsyscallEntry};

/// The system-call instruction `i` is, if any.
pub(super) fn syscall_insn(i: &Instruction, bitness: Bitness) -> Option<SyscallInsn> {
    match i.code() {
        Code::Syscall => Some(SyscallInsn::Syscall),
        Code::Sysenter => Some(SyscallInsn::Sysenter),
        Code::Int_imm8 if i.immediate8() == 0x80 => Some(SyscallInsn::Int80),
        Code::Call_rm32
            if bitness == Bitness::Bits32
                && i.op0_kind() == OpKind::Memory
                && i.memory_segment() == Register::GS
                && i.memory_base() == Register::None
                && i.memory_index() == Register::None
                && i.memory_displacement64() == 0x10 =>
        {
            Some(SyscallInsn::GsCall)
        }
        _ => None,
    }
}

/// A load of a vsyscall entry's address into a 64-bit register: (entry, register,
/// address of the immediate, its size).
pub(super) fn vsyscall_load(i: &Instruction) -> Option<(VsyscallEntry, Register, u64, u8)> {
    let size: u8 = match i.code() {
        Code::Mov_rm64_imm32 if i.op0_kind() == OpKind::Register => 4,
        Code::Mov_r64_imm64 => 8,
        _ => return None,
    };
    let entry = VsyscallEntry::from_addr(i.immediate(1))?;
    // The immediate is the last field of both encodings.
    let at = i.next_ip().checked_sub(u64::from(size))?;
    Some((entry, i.op0_register(), at, size))
}

/// `call *%reg` / `jmp *%reg` (64-bit): the transfer and the register.
pub(super) fn register_transfer(i: &Instruction) -> Option<(Transfer, Register)> {
    let t = match i.code() {
        Code::Call_rm64 => Transfer::Call,
        Code::Jmp_rm64 => Transfer::Jump,
        _ => return None,
    };
    (i.op0_kind() == OpKind::Register).then(|| (t, i.op0_register()))
}

/// `call *disp(%rip)` / `call *abs32` (or `jmp`, 64-bit): the transfer and the address
/// of the 8-byte constant it goes through. A base or index register, or an fs/gs
/// segment, make the address unknowable from the code alone.
pub(super) fn memory_transfer(i: &Instruction) -> Option<(Transfer, u64)> {
    let t = match i.code() {
        Code::Call_rm64 => Transfer::Call,
        Code::Jmp_rm64 => Transfer::Jump,
        _ => return None,
    };
    if i.op0_kind() != OpKind::Memory || matches!(i.memory_segment(), Register::FS | Register::GS) {
        return None;
    }
    if i.is_ip_rel_memory_operand() {
        return Some((t, i.ip_rel_memory_address()));
    }
    (i.memory_base() == Register::None && i.memory_index() == Register::None)
        .then(|| (t, i.memory_displacement64()))
}

/// Whether `i` is `cmovCC` with `reg` as its source.
pub(super) fn cmov_from(i: &Instruction, reg: Register) -> bool {
    use iced_x86::Mnemonic::*;
    matches!(
        i.mnemonic(),
        Cmova
            | Cmovae
            | Cmovb
            | Cmovbe
            | Cmove
            | Cmovg
            | Cmovge
            | Cmovl
            | Cmovle
            | Cmovne
            | Cmovno
            | Cmovnp
            | Cmovns
            | Cmovo
            | Cmovp
            | Cmovs
    ) && i.op1_kind() == OpKind::Register
        && i.op1_register() == reg
}

/// What one instruction does to the general-purpose registers: bit sets over the 16
/// full (64-bit) registers, rax = bit 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RegUse {
    pub reads: u16,
    pub writes: u16,
}

impl RegUse {
    pub fn writes(self, reg: Register) -> bool {
        gpr_bit(reg).is_some_and(|b| self.writes & b != 0)
    }

    pub fn reads(self, reg: Register) -> bool {
        gpr_bit(reg).is_some_and(|b| self.reads & b != 0)
    }
}

/// The bit of `reg`'s full register among the 16 general-purpose ones.
fn gpr_bit(reg: Register) -> Option<u16> {
    let full = reg.full_register();
    let n = (full as u32).checked_sub(Register::RAX as u32)?;
    (n < 16).then(|| 1u16 << n)
}

/// Register use of `i` (memory operands' base and index count as reads).
pub(super) fn reg_use(factory: &mut InstructionInfoFactory, i: &Instruction) -> RegUse {
    let info = factory.info_options(i, iced_x86::InstructionInfoOptions::NO_MEMORY_USAGE);
    let mut out = RegUse::default();
    for used in info.used_registers() {
        let Some(bit) = gpr_bit(used.register()) else {
            continue;
        };
        match used.access() {
            OpAccess::Read | OpAccess::CondRead => out.reads |= bit,
            OpAccess::Write | OpAccess::CondWrite => out.writes |= bit,
            OpAccess::ReadWrite | OpAccess::ReadCondWrite => {
                out.reads |= bit;
                out.writes |= bit;
            }
            OpAccess::None | OpAccess::NoMemAccess => {}
        }
    }
    out
}

/// A constant `i` puts in eax/rax, if that is all it does: `mov $imm,%eax`,
/// `mov $imm,%rax`, `xor %eax,%eax` / `sub %eax,%eax`.
pub(super) fn eax_constant(i: &Instruction) -> Option<u64> {
    let to_eax = i.op0_kind() == OpKind::Register
        && matches!(i.op0_register(), Register::EAX | Register::RAX);
    if !to_eax {
        return None;
    }
    match i.code() {
        Code::Mov_r32_imm32 | Code::Mov_rm32_imm32 => Some(u64::from(i.immediate32())),
        Code::Mov_rm64_imm32 | Code::Mov_r64_imm64 => Some(i.immediate(1)),
        Code::Xor_r32_rm32
        | Code::Xor_rm32_r32
        | Code::Sub_r32_rm32
        | Code::Sub_rm32_r32
        | Code::Xor_r64_rm64
        | Code::Xor_rm64_r64
        | Code::Sub_r64_rm64
        | Code::Sub_rm64_r64
            if i.op1_kind() == OpKind::Register && i.op1_register() == i.op0_register() =>
        {
            Some(0)
        }
        _ => None,
    }
}

/// The targets of a direct branch or call (`None` for anything else).
pub(super) fn direct_target(i: &Instruction) -> Option<u64> {
    matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
    .then(|| i.near_branch_target())
}
