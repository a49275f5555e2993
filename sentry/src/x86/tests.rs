//! The decoder on hand-assembled bytes, each fixture first decoded back to the
//! instructions it is meant to be, near-misses included.

use iced_x86::{Code, Decoder, DecoderOptions};
use platform::Arch;

use super::*;

const AT: u64 = 0x40_1000;

/// The instructions `bytes` decode to (the fixture says what it is).
fn codes(bytes: &[u8], bits: u32) -> Vec<Code> {
    Decoder::with_ip(bits, bytes, AT, DecoderOptions::NONE)
        .into_iter()
        .map(|i| i.code())
        .collect()
}

fn no_consts(_: u64) -> Option<u64> {
    None
}

fn sweep64(bytes: &[u8]) -> Found {
    sweep(bytes, AT, Bitness::Bits64, &no_consts)
}

// glibc 2.13's time(): sub $8,%rsp; mov $0xffffffffff600400,%rax; call *%rax; add; ret
const TIME: &[u8] = &[
    0x48, 0x83, 0xec, 0x08, 0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0xff, 0xd0, 0x48, 0x83, 0xc4,
    0x08, 0xc3,
];

#[test]
fn fixtures_decode_to_what_they_say() {
    use Code::*;
    assert_eq!(
        codes(TIME, 64),
        [
            Sub_rm64_imm8,
            Mov_rm64_imm32,
            Call_rm64,
            Add_rm64_imm8,
            Retnq
        ]
    );
    assert_eq!(codes(MOVABS_JMP, 64), [Mov_r64_imm64, Jmp_rm64]);
    assert_eq!(codes(R11, 64), [Mov_rm64_imm32, Call_rm64]);
    assert_eq!(
        codes(CMOV, 64),
        [Test_rm64_r64, Mov_rm64_imm32, Mov_rm64_r64, Cmove_r64_rm64]
    );
    assert_eq!(codes(&[0xff, 0x15, 0x10, 0, 0, 0], 64), [Call_rm64]);
    assert_eq!(codes(&[0xff, 0x24, 0x25, 0, 0x20, 0x60, 0], 64), [Jmp_rm64]);
    assert_eq!(codes(&[0x65, 0xff, 0x15, 0x10, 0, 0, 0], 32), [Call_rm32]);
    assert_eq!(codes(&[0x0f, 0x34, 0xcd, 0x80], 32), [Sysenter, Int_imm8]);
}

#[test]
fn glibc_time_is_a_patchable_register_call() {
    let f = sweep64(TIME);
    assert_eq!(
        f.vsyscalls,
        [VsyscallSite {
            entry: VsyscallEntry::Time,
            shape: Shape::Register(Transfer::Call),
            load: Some(AT + 4),
            user: Some(AT + 11),
            end: Some(AT + 13),
            target: TargetBytes::Immediate {
                at: AT + 7,
                size: 4
            },
            patchable: true,
        }]
    );
    assert!(f.syscalls.is_empty());
    // The patcher's view of the same bytes: it faulted at time with AT+13 pushed.
    let s = site_before(TIME, AT, AT + 13, VsyscallEntry::Time, &no_consts);
    assert_eq!(s, Ok(f.vsyscalls[0]));
    // Asked about another entry, the mov does not feed that one.
    assert_eq!(
        site_before(TIME, AT, AT + 13, VsyscallEntry::Getcpu, &no_consts),
        Err(Refusal::NoLoad)
    );
}

// movabs $0xffffffffff600800,%rax; jmp *%rax (a tail call)
const MOVABS_JMP: &[u8] = &[
    0x48, 0xb8, 0x00, 0x08, 0x60, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xe0,
];
// mov $0xffffffffff600400,%r11; call *%r11
const R11: &[u8] = &[0x49, 0xc7, 0xc3, 0x00, 0x04, 0x60, 0xff, 0x41, 0xff, 0xd3];
// glibc's vDSO fallback: test %rax,%rax; mov $0xffffffffff600000,%rdx; mov %rsp,%rsi;
// cmove %rdx,%rax
const CMOV: &[u8] = &[
    0x48, 0x85, 0xc0, 0x48, 0xc7, 0xc2, 0x00, 0x00, 0x60, 0xff, 0x48, 0x89, 0xe6, 0x48, 0x0f, 0x44,
    0xc2,
];

#[test]
fn movabs_tail_jump_other_registers_and_cmov() {
    let f = sweep64(MOVABS_JMP);
    assert_eq!(f.vsyscalls.len(), 1);
    let s = f.vsyscalls[0];
    assert_eq!(
        (s.entry, s.shape, s.target, s.patchable),
        (
            VsyscallEntry::Getcpu,
            Shape::Register(Transfer::Jump),
            TargetBytes::Immediate {
                at: AT + 2,
                size: 8
            },
            true
        )
    );

    let f = sweep64(R11);
    assert_eq!(f.vsyscalls.len(), 1);
    assert_eq!(f.vsyscalls[0].shape, Shape::Register(Transfer::Call));
    assert_eq!(f.vsyscalls[0].end, Some(AT + 10));
    let s = site_before(R11, AT, AT + 10, VsyscallEntry::Time, &no_consts);
    assert_eq!(
        s.map(|s| s.target),
        Ok(TargetBytes::Immediate {
            at: AT + 3,
            size: 4
        })
    );

    let f = sweep64(CMOV);
    assert_eq!(f.vsyscalls.len(), 1);
    let s = f.vsyscalls[0];
    assert_eq!(
        (s.entry, s.shape, s.load, s.user, s.patchable),
        (
            VsyscallEntry::Gettimeofday,
            Shape::Cmov,
            Some(AT + 3),
            Some(AT + 13),
            false
        )
    );
}

#[test]
fn calls_through_a_constant_in_memory() {
    let table = AT + 0x100;
    let consts = |a: u64| (a == table).then_some(VsyscallEntry::Time.addr());
    // call *0xfa(%rip): the constant at AT+6+0xfa = AT+0x100
    let rip = [0xff, 0x15, 0xfa, 0x00, 0x00, 0x00];
    let f = sweep(&rip, AT, Bitness::Bits64, &consts);
    assert_eq!(
        f.vsyscalls,
        [VsyscallSite {
            entry: VsyscallEntry::Time,
            shape: Shape::Memory(Transfer::Call),
            load: None,
            user: Some(AT),
            end: Some(AT + 6),
            target: TargetBytes::Memory { at: table },
            patchable: true,
        }]
    );
    assert_eq!(
        site_before(&rip, AT, AT + 6, VsyscallEntry::Time, &consts).map(|s| s.target),
        Ok(TargetBytes::Memory { at: table })
    );
    // The same call when the constant holds something else.
    assert!(sweep(&rip, AT, Bitness::Bits64, &no_consts)
        .vsyscalls
        .is_empty());
    assert_eq!(
        site_before(&rip, AT, AT + 6, VsyscallEntry::Time, &no_consts),
        Err(Refusal::WrongConstant)
    );
    // jmp *0x401100 (absolute)
    let abs = [0xff, 0x24, 0x25, 0x00, 0x11, 0x40, 0x00];
    let f = sweep(&abs, AT, Bitness::Bits64, &consts);
    assert_eq!(f.vsyscalls.len(), 1);
    assert_eq!(f.vsyscalls[0].shape, Shape::Memory(Transfer::Jump));
}

#[test]
fn near_misses_are_not_patchable() {
    let time = VsyscallEntry::Time;
    // mov $E,%rax; mov %rbx,%rax; call *%rax: the register is overwritten.
    let clobber = [
        0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0x48, 0x89, 0xd8, 0xff, 0xd0,
    ];
    assert_eq!(
        codes(&clobber, 64),
        [Code::Mov_rm64_imm32, Code::Mov_rm64_r64, Code::Call_rm64]
    );
    let f = sweep64(&clobber);
    assert_eq!(f.vsyscalls.len(), 1);
    assert_eq!(
        (f.vsyscalls[0].shape, f.vsyscalls[0].patchable),
        (Shape::Loaded, false)
    );
    assert_eq!(
        site_before(&clobber, AT, AT + 12, time, &no_consts),
        Err(Refusal::Clobbered)
    );

    // A wrong immediate (0xfffffffffe600400) and a 32-bit mov (zero-extended, not E).
    let wrong = [0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xfe, 0xff, 0xd0];
    assert!(sweep64(&wrong).vsyscalls.is_empty());
    assert_eq!(
        site_before(&wrong, AT, AT + 9, time, &no_consts),
        Err(Refusal::NoLoad)
    );
    let zext = [0xb8, 0x00, 0x04, 0x60, 0xff, 0xff, 0xd0];
    assert!(sweep64(&zext).vsyscalls.is_empty());

    // Loaded into rax, called through rdx.
    let other = [0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0xff, 0xd2];
    assert_eq!(sweep64(&other).vsyscalls[0].shape, Shape::Loaded);
    assert!(site_before(&other, AT, AT + 9, time, &no_consts).is_err());

    // jmp L; mov $E,%rax; L: call *%rax: the call is reached without the load.
    let branch = [
        0xeb, 0x07, 0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0xff, 0xd0,
    ];
    assert_eq!(
        codes(&branch, 64),
        [Code::Jmp_rel8_64, Code::Mov_rm64_imm32, Code::Call_rm64]
    );
    let f = sweep64(&branch);
    assert_eq!(
        (f.vsyscalls[0].shape, f.vsyscalls[0].patchable),
        (Shape::Register(Transfer::Call), false)
    );
    assert_eq!(
        site_before(&branch, AT, AT + 11, time, &no_consts),
        Err(Refusal::BranchTarget)
    );

    // Truncated: the bytes given start inside the mov.
    assert_eq!(
        site_before(&TIME[6..13], AT + 6, AT + 13, time, &no_consts),
        Err(Refusal::NoLoad)
    );
    // Not a call at all before ret, and a return address outside the bytes.
    assert_eq!(
        site_before(TIME, AT, AT + 18, time, &no_consts),
        Err(Refusal::NoCall)
    );
    assert!(matches!(
        site_before(TIME, AT, AT + 19, time, &no_consts),
        Err(Refusal::OutOfRange { .. })
    ));
    assert!(matches!(
        site_before(TIME, AT, AT - 1, time, &no_consts),
        Err(Refusal::OutOfRange { .. })
    ));
    // i386 code never names the page.
    assert!(sweep(TIME, AT, Bitness::Bits32, &no_consts)
        .vsyscalls
        .is_empty());
}

#[test]
fn harmless_instructions_between_load_and_call_are_accepted() {
    // mov $E,%rax; mov %rsp,%rdi; xor %esi,%esi; call *%rax (libpthread's shape)
    let b = [
        0x48, 0xc7, 0xc0, 0x00, 0x00, 0x60, 0xff, 0x48, 0x89, 0xe7, 0x31, 0xf6, 0xff, 0xd0,
    ];
    let f = sweep64(&b);
    assert_eq!(f.vsyscalls.len(), 1);
    assert!(f.vsyscalls[0].patchable);
    let s = site_before(&b, AT, AT + 14, VsyscallEntry::Gettimeofday, &no_consts);
    assert_eq!(s.map(|s| (s.load, s.user)), Ok((Some(AT), Some(AT + 12))));
}

/// A site as the tests compare it: instruction, ABI, number.
type Site = (SyscallInsn, Arch, Option<u32>);

fn nrs(f: &Found) -> Vec<Site> {
    f.syscalls.iter().map(|s| (s.insn, s.arch, s.nr)).collect()
}

#[test]
fn syscall_numbers_in_the_basic_block() {
    use SyscallInsn::*;
    let cases: &[(&[u8], Site)] = &[
        // mov $39,%eax; syscall
        (
            &[0xb8, 0x27, 0, 0, 0, 0x0f, 0x05],
            (Syscall, Arch::X86_64, Some(39)),
        ),
        // xor %eax,%eax; syscall
        (&[0x31, 0xc0, 0x0f, 0x05], (Syscall, Arch::X86_64, Some(0))),
        // mov $60,%rax; mov %ebx,%edi; syscall
        (
            &[0x48, 0xc7, 0xc0, 0x3c, 0, 0, 0, 0x89, 0xdf, 0x0f, 0x05],
            (Syscall, Arch::X86_64, Some(60)),
        ),
        // mov $39,%eax; mov %ebx,%eax; syscall: overwritten
        (
            &[0xb8, 0x27, 0, 0, 0, 0x89, 0xd8, 0x0f, 0x05],
            (Syscall, Arch::X86_64, None),
        ),
        // mov $39,%eax; call .+5; syscall: the block ended
        (
            &[0xb8, 0x27, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0x0f, 0x05],
            (Syscall, Arch::X86_64, None),
        ),
        // jmp L; mov $39,%eax; L: syscall: a branch lands in between
        (
            &[0xeb, 0x05, 0xb8, 0x27, 0, 0, 0, 0x0f, 0x05],
            (Syscall, Arch::X86_64, None),
        ),
        // mov $0x40000027,%eax; syscall: x32
        (
            &[0xb8, 0x27, 0, 0, 0x40, 0x0f, 0x05],
            (Syscall, Arch::X32, Some(39)),
        ),
        // mov $20,%eax; int $0x80 from 64-bit code: the i386 table
        (
            &[0xb8, 0x14, 0, 0, 0, 0xcd, 0x80],
            (Int80, Arch::I386, Some(20)),
        ),
        // syscall with nothing known
        (&[0x0f, 0x05], (Syscall, Arch::X86_64, None)),
    ];
    for (bytes, want) in cases {
        assert_eq!(nrs(&sweep64(bytes)), [*want], "{bytes:02x?}");
    }
}

#[test]
fn i386_sites() {
    use SyscallInsn::*;
    // mov $20,%eax; int $0x80; mov $224,%eax; call *%gs:0x10; mov $1,%eax; sysenter
    let b = [
        0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xb8, 0xe0, 0, 0, 0, 0x65, 0xff, 0x15, 0x10, 0, 0, 0,
        0xb8, 0x01, 0, 0, 0, 0x0f, 0x34,
    ];
    let f = sweep(&b, AT, Bitness::Bits32, &no_consts);
    assert_eq!(
        nrs(&f),
        [
            (Int80, Arch::I386, Some(20)),
            (GsCall, Arch::I386, Some(224)),
            (Sysenter, Arch::I386, Some(1)),
        ]
    );
    assert_eq!(f.syscalls[1].addr, AT + 12);
    // call *%fs:0x10 and call *%gs:0x14 are not the vDSO entry.
    let near = [
        0x64, 0xff, 0x15, 0x10, 0, 0, 0, 0x65, 0xff, 0x15, 0x14, 0, 0, 0,
    ];
    assert!(sweep(&near, AT, Bitness::Bits32, &no_consts)
        .syscalls
        .is_empty());
}

#[test]
fn garbage_is_survived() {
    // 0x06 does not decode in 64-bit mode; the sweep goes on and finds the syscall.
    let f = sweep64(&[0x06, 0x0f, 0x05]);
    assert_eq!(f.invalid_bytes, 1);
    assert_eq!(f.syscalls.len(), 1);
    // Pseudo-random bytes: no panic, whatever they decode to, in every mode and window.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    let any = |_: u64| Some(VsyscallEntry::Time.addr());
    for bits in [Bitness::Bits32, Bitness::Bits64] {
        let f = sweep(&bytes, u64::MAX - 100, bits, &any);
        assert!(f.instructions > 0);
    }
    for ret in (0..bytes.len() as u64).step_by(97) {
        let _ = site_before(
            &bytes[..1024.min(bytes.len())],
            0,
            ret,
            VsyscallEntry::Time,
            &any,
        );
    }
    assert!(site_before(&[], 0, 0, VsyscallEntry::Time, &any).is_err());
}
