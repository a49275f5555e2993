//! The in-guest answer for emulated calls: after the supervisor has answered a caught
//! x86_64 `uname` from a C library's wrapper, the wrapper is rewritten so that later
//! calls reach the trampoline page's `uname` stub instead of the supervisor.
//!
//! Only a site that is exactly the wrapper shape ([`x86::is_syscall_wrapper`]) at the
//! entry of an exported function of its mapped file ([`super::exported`]) is rewritten,
//! in place: `mov $NR,%eax; syscall` (7 bytes) becomes `mov $stub,%eax; call *%rax`
//! (the stub is below 4 GiB, so a 32-bit move reaches it). At a function's entry the
//! red zone below the stack pointer holds nothing live, so the pushed return address
//! clobbers nothing; a `syscall` inlined into other code is never touched, since its
//! caller's red zone may be live. Every other thread of the process is stopped, and
//! none may be inside the seven bytes, while they are written (`patch_code`).

use platform::{Arch, GuestThread, Syscall};

use super::{private_mapping, trampoline, NotPatched, Patcher, MAX_SITES};
use crate::x86;

/// `mov $imm32,%eax` and `call *%rax`.
const MOV_EAX: u8 = 0xb8;
const CALL_RAX: [u8; 2] = [0xff, 0xd0];

impl Patcher {
    /// The supervisor has just answered `call` for `g`: if it is an x86_64 `uname`
    /// from a wrapper that can be patched, the wrapper is patched (the first time its
    /// site is seen in the process).
    pub fn emulated_call<G: GuestThread>(&mut self, g: &mut G, call: &Syscall) {
        if !self.enabled
            || self.uname.is_none()
            || call.arch != Arch::X86_64
            || call.nr != trampoline::UNAME_NR
            || !g.can_run_syscalls()
        {
            return;
        }
        let Some(site) = call.ip.checked_sub(x86::WRAPPER_HEAD as u64) else {
            return;
        };
        let tgid = g.tgid();
        let proc = self.procs.entry(tgid).or_default();
        if proc.tried_calls.len() >= MAX_SITES || !proc.tried_calls.insert(site) {
            return;
        }
        let tid = g.tid();
        let uname = self.uname.as_deref();
        let result = (|| {
            let mut code = [0u8; x86::WRAPPER_LEN];
            g.read_mem(site, &mut code)
                .map_err(|_| NotPatched::Unreadable)?;
            if !x86::is_syscall_wrapper(&code, site, call.nr) {
                return Err(NotPatched::NotWrapper);
            }
            if !self.exports.is_entry(tgid, site) {
                return Err(NotPatched::NotExported);
            }
            if !private_mapping(tgid, site, x86::WRAPPER_HEAD as u64) {
                return Err(NotPatched::NotPrivate);
            }
            let tramp = super::trampoline(g, proc, self.syscall_ok, uname, &mut self.totals)?;
            let stub = tramp.uname.ok_or(NotPatched::NoStub("uname"))?;
            let stub = u32::try_from(stub).map_err(|_| NotPatched::NoStub("uname"))?;
            let mut bytes = [0u8; x86::WRAPPER_HEAD];
            bytes[0] = MOV_EAX;
            bytes[1..5].copy_from_slice(&stub.to_le_bytes());
            bytes[5..].copy_from_slice(&CALL_RAX);
            g.patch_code(site, &bytes)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                proc.patched += 1;
                self.totals.sites += 1;
                self.totals.call_sites += 1;
                log::debug!("[pid {tid}] uname wrapper at {site:#x} patched");
            }
            Err(why) => log::debug!("[pid {tid}] uname wrapper at {site:#x} not patched: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions, Register};

    #[test]
    fn the_rewritten_head_decodes_to_a_move_of_the_stub_and_a_call_through_rax() {
        let stub: u32 = 0x0020_0000;
        let mut bytes = vec![MOV_EAX];
        bytes.extend_from_slice(&stub.to_le_bytes());
        bytes.extend_from_slice(&CALL_RAX);
        assert_eq!(bytes.len(), x86::WRAPPER_HEAD);
        let mut d = Decoder::with_ip(64, &bytes, 0x1000, DecoderOptions::NONE);
        let mov = d.decode();
        let call = d.decode();
        assert_eq!(mov.code(), Code::Mov_r32_imm32);
        assert_eq!(mov.op0_register(), Register::EAX);
        assert_eq!(mov.immediate32(), stub);
        assert_eq!(call.code(), Code::Call_rm64);
        assert_eq!(call.op0_register(), Register::RAX);
        assert_eq!(call.next_ip(), 0x1000 + x86::WRAPPER_HEAD as u64);
    }
}
