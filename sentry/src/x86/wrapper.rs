//! The C library's system-call wrapper, as the in-guest answer for emulated calls patches
//! it: a function whose first instructions are exactly
//!
//! ```text
//! b8 NR 00 00 00        mov $NR,%eax
//! 0f 05                 syscall
//! 48 3d 01 f0 ff ff     cmp $-4095,%rax
//! 73 xx                 jae error        (forward, past the ret)
//! c3                    ret
//! ```
//!
//! (`uname` in glibc 2.12 to 2.36 and eglibc 2.13). Its first seven bytes are replaced by
//! `mov $stub,%eax; call *%rax`, and the stub returns to the `cmp` with the call's result
//! in rax, so the wrapper's own error handling runs as before.

use iced_x86::{Code, Decoder, DecoderOptions, Register};

/// Bytes of `mov $NR,%eax; syscall`: what is rewritten.
pub const WRAPPER_HEAD: usize = 7;
/// Bytes of the whole shape checked, head and error check and `ret`.
pub const WRAPPER_LEN: usize = 16;

/// Whether `code`, the bytes at `entry`, start with exactly the wrapper shape for call
/// `nr` (nothing but what the module's documentation shows).
pub fn is_syscall_wrapper(code: &[u8], entry: u64, nr: u32) -> bool {
    let Some(code) = code.get(..WRAPPER_LEN) else {
        return false;
    };
    let mut d = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut next = || d.can_decode().then(|| d.decode());
    let (Some(mov), Some(sys), Some(cmp), Some(jae), Some(ret)) =
        (next(), next(), next(), next(), next())
    else {
        return false;
    };
    let end = entry + WRAPPER_LEN as u64;
    mov.code() == Code::Mov_r32_imm32
        && mov.op0_register() == Register::EAX
        && mov.immediate32() == nr
        && mov.len() == 5
        && sys.code() == Code::Syscall
        && cmp.code() == Code::Cmp_RAX_imm32
        && cmp.op0_register() == Register::RAX
        && cmp.immediate(1) == 4095u64.wrapping_neg()
        && jae.code() == Code::Jae_rel8_64
        && jae.near_branch64() >= end
        && ret.code() == Code::Retnq
        && ret.next_ip() == end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc 2.36's `uname` (Debian bookworm).
    const GLIBC_2_36: [u8; 16] = [
        0xb8, 0x3f, 0, 0, 0, 0x0f, 0x05, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x01, 0xc3,
    ];

    #[test]
    fn glibcs_uname_is_the_shape_and_near_misses_are_not() {
        assert!(is_syscall_wrapper(&GLIBC_2_36, 0xd3b00, 63));
        // eglibc 2.13 (wheezy) and glibc 2.12 have the same bytes.
        assert!(
            !is_syscall_wrapper(&GLIBC_2_36, 0xd3b00, 64),
            "another number"
        );
        assert!(
            !is_syscall_wrapper(&GLIBC_2_36[..15], 0xd3b00, 63),
            "truncated"
        );
        let mut m = GLIBC_2_36;
        m[14] = 0xfe; // jae backwards, into the checked bytes
        assert!(!is_syscall_wrapper(&m, 0xd3b00, 63));
        let mut m = GLIBC_2_36;
        m[15] = 0xcc; // no ret
        assert!(!is_syscall_wrapper(&m, 0xd3b00, 63));
        let mut m = GLIBC_2_36;
        m[0] = 0x48; // mov $63,%rax with a REX prefix: other lengths, other bytes
        assert!(!is_syscall_wrapper(&m, 0xd3b00, 63));
        let mut m = GLIBC_2_36;
        m[12] = 0x7f; // cmp $another,%rax
        assert!(!is_syscall_wrapper(&m, 0xd3b00, 63));
        // int $0x80 instead of syscall
        let mut m = GLIBC_2_36;
        m[5..7].copy_from_slice(&[0xcd, 0x80]);
        assert!(!is_syscall_wrapper(&m, 0xd3b00, 63));
    }
}
