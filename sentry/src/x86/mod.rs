//! x86 machine code as compatrun needs to understand it: where a piece of code enters the
//! kernel (`syscall`, `int 0x80`, `sysenter`, i386 glibc's `call *%gs:0x10`) and with which
//! call number, and where it calls into the legacy vsyscall page.
//!
//! This is the one decoder both `compatrun scan` (which sweeps whole files) and the
//! call-site patcher (which asks about the one site a faulting thread came from) build
//! on, so that both agree on what a vsyscall call site is and which of them may be
//! rewritten. Decoding is iced-x86's; the bytes are untrusted (guest memory, files of
//! unknown origin): anything malformed or truncated is reported as such, never a panic.
//! Nothing here reads or changes a process.
//!
//! - [`sweep`]: a linear sweep of a code section: every system-call site and vsyscall
//!   reference.
//! - [`site_before`]: the patcher's question, strictly answered.
//! - [`is_syscall_wrapper`]: whether a function is exactly a C library's system-call
//!   wrapper, for the in-guest answer to emulated calls.

mod before;
mod insn;
mod sweep;
mod tail;
mod wrapper;

#[cfg(test)]
mod tests;

pub use before::{site_before, Refusal};
pub use sweep::{sweep, Found};
pub use tail::{direct_call_before, jump_through_memory, loaded_register, tail_site_at};
pub use wrapper::{is_syscall_wrapper, WRAPPER_HEAD, WRAPPER_LEN};

use platform::Arch;

/// The base of the legacy vsyscall page.
pub const VSYSCALL_BASE: u64 = 0xffff_ffff_ff60_0000;

/// Whether code runs in 32-bit or 64-bit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bitness {
    /// i386 code (ELFCLASS32, EM_386).
    Bits32,
    /// x86_64 code (ELFCLASS64, EM_X86_64).
    Bits64,
}

impl Bitness {
    /// The bitness as iced-x86 takes it.
    pub fn bits(self) -> u32 {
        match self {
            Bitness::Bits32 => 32,
            Bitness::Bits64 => 64,
        }
    }
}

/// One of the three entries of the vsyscall page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VsyscallEntry {
    /// `gettimeofday`, at 0xffffffffff600000.
    Gettimeofday,
    /// `time`, at 0xffffffffff600400.
    Time,
    /// `getcpu`, at 0xffffffffff600800.
    Getcpu,
}

impl VsyscallEntry {
    /// Every entry, in address order.
    pub const ALL: [VsyscallEntry; 3] = [
        VsyscallEntry::Gettimeofday,
        VsyscallEntry::Time,
        VsyscallEntry::Getcpu,
    ];

    /// The entry's address.
    pub fn addr(self) -> u64 {
        match self {
            VsyscallEntry::Gettimeofday => VSYSCALL_BASE,
            VsyscallEntry::Time => VSYSCALL_BASE + 0x400,
            VsyscallEntry::Getcpu => VSYSCALL_BASE + 0x800,
        }
    }

    /// The system call the entry stands for.
    pub fn name(self) -> &'static str {
        match self {
            VsyscallEntry::Gettimeofday => "gettimeofday",
            VsyscallEntry::Time => "time",
            VsyscallEntry::Getcpu => "getcpu",
        }
    }

    /// The entry at exactly `addr`, if it is one.
    pub fn from_addr(addr: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.addr() == addr)
    }
}

/// The instruction a system-call site uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallInsn {
    /// `syscall` (x86_64; i386 ABI in 32-bit code).
    Syscall,
    /// `int $0x80` (the i386 ABI, even from 64-bit code).
    Int80,
    /// `sysenter`.
    Sysenter,
    /// `call *%gs:0x10`: i386 glibc's way into the vDSO's `__kernel_vsyscall`.
    GsCall,
}

impl SyscallInsn {
    /// The instruction as a disassembler prints it.
    pub fn text(self) -> &'static str {
        match self {
            SyscallInsn::Syscall => "syscall",
            SyscallInsn::Int80 => "int $0x80",
            SyscallInsn::Sysenter => "sysenter",
            SyscallInsn::GsCall => "call *%gs:0x10",
        }
    }
}

/// A place where code enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSite {
    /// The instruction's address.
    pub addr: u64,
    /// Which instruction.
    pub insn: SyscallInsn,
    /// The ABI the kernel will see (x32 when a 64-bit `syscall`'s number has bit 30).
    pub arch: Arch,
    /// The call number, when a constant reaches eax/rax in the same basic block with no
    /// branch target in between; `None` (unresolved) otherwise.
    pub nr: Option<u32>,
}

/// How control reaches a vsyscall entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transfer {
    /// A call (the entry returns to the instruction after it).
    Call,
    /// A jump (a tail call: the entry returns to the caller's caller).
    Jump,
}

/// The shape of a vsyscall reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `mov $E,%reg` (a sign-extended imm32) or `movabs $E,%reg`, then `call *%reg` or
    /// `jmp *%reg`, nothing in between writing the register.
    Register(Transfer),
    /// `call *disp(%rip)` or `call *abs` (or `jmp`) through an 8-byte constant holding E.
    Memory(Transfer),
    /// A conditional move picks the loaded address (glibc's fallback when the vDSO lacks
    /// a symbol: not taken on a host with a vDSO).
    Cmov,
    /// The address is loaded into a register and used some other way (stored, passed,
    /// used after a branch): a reference, not a recognisable call.
    Loaded,
}

/// Where the bytes that name the vsyscall entry are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetBytes {
    /// The immediate of the load instruction: the address of its first byte and its size
    /// (4 for a sign-extended imm32, 8 for a movabs imm64).
    Immediate {
        /// Address of the immediate's first byte.
        at: u64,
        /// 4 or 8.
        size: u8,
    },
    /// The 8-byte constant in memory the call or jump goes through.
    Memory {
        /// The constant's address.
        at: u64,
    },
}

/// A reference to a vsyscall entry in code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsyscallSite {
    /// The entry named.
    pub entry: VsyscallEntry,
    /// The shape.
    pub shape: Shape,
    /// The instruction that loads the address into a register (`None` for the memory
    /// shape).
    pub load: Option<u64>,
    /// The call, jump or cmov that uses it (`None` for [`Shape::Loaded`]).
    pub user: Option<u64>,
    /// The address right after the call or jump (a call's return address).
    pub end: Option<u64>,
    /// Where the bytes holding the entry's address are.
    pub target: TargetBytes,
    /// Whether this is exactly one of the shapes a patcher may rewrite: a register or
    /// memory call or jump, with no known branch target between load and use. (For the
    /// memory shape the patcher must still check that the constant's page is private.)
    pub patchable: bool,
}
