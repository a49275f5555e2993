//! Call-site patching of vsyscall callers: after the first emulated call from a site,
//! later calls from it never stop.
//!
//! On a host without the vsyscall page every call into it is a fault the platform shows
//! the sentry (a ptrace signal stop, ~10-150 µs). When a thread faults at entry E, the
//! instructions that led there are decoded with the shared decoder ([`crate::x86`]);
//! only if they are exactly one of the known shapes (`mov $E,%reg` … `call *%reg`, the
//! `jmp *%reg` tail call of a called function, a call through a constant in memory) is
//! the site rewritten: the bytes naming E get the address of a stub in a trampoline
//! page compatrun maps into the process (a `mmap` run in the stopped thread, at a fixed
//! low address so a sign-extended imm32 reaches it), which jumps to the process's own
//! vDSO function or makes the real system call. The rules:
//!
//! - every other thread of the process is stopped while a site is rewritten;
//! - only what decodes exactly as expected is patched, and only in private mappings
//!   (the write gives the process its own copy of the page; no file is ever written);
//!   everything else keeps being emulated per call, as is the first call of each site;
//! - a forked child inherits the trampoline and the patched sites; an exec starts
//!   afresh (the trampoline is found again by its contents, so a child that reaches a
//!   site its parent never patched reuses the inherited page);
//! - the seccomp filter judges the system calls a trampoline makes like any other; an
//!   entry whose call the persona refuses, and which the vDSO lacks, gets no stub.
//!
//! The same page carries the in-guest answer for emulated calls ([`calls`]): a `uname`
//! wrapper the supervisor has answered once is rewritten to call a stub there.

mod calls;
mod exported;
mod trampoline;
mod vdso_syms;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use platform::{Arch, GuestThread, InterceptSpec, Regs, Rule, ThreadOpError};

use crate::x86::{self, Refusal, Shape, TargetBytes, VsyscallEntry};
use trampoline::{Target, Trampoline};

pub use trampoline::{syscall_nr, UNAME_NR, UNAME_RETURN};

/// Where a trampoline page may go, in order of preference: below the usual start of
/// non-PIE executables (0x400000) and near the top of the low 2 GiB, where neither
/// `brk` heaps nor top-down `mmap` reach in ordinary processes.
pub const CANDIDATES: [u64; 4] = [0x0020_0000, 0x0030_0000, 0x7fe0_0000, 0x6ff0_0000];
/// Code bytes read before a return address (the longest accepted shape is shorter).
const CODE_BEFORE: u64 = 64;
/// Code bytes read at a called function's start (tail-call shape).
const CODE_AT: usize = 64;
/// Sites looked at per process at most (a guest cannot make compatrun decode without
/// end).
const MAX_SITES: usize = 256;

/// `mmap` protection and flags for the trampoline page.
const PROT_RX: u64 = (libc::PROT_READ | libc::PROT_EXEC) as u64;
const MAP_FLAGS: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;

/// Why one site was left alone (logged at debug level).
#[derive(Debug, thiserror::Error)]
enum NotPatched {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("the code before the return address cannot be read")]
    Unreadable,
    #[error("the register the call goes through does not hold the entry's address")]
    RegisterMismatch,
    #[error("the bytes to rewrite are not in a private mapping")]
    NotPrivate,
    #[error(
        "no way to answer {0} without a stop (no vDSO function, and the persona refuses the call)"
    )]
    NoStub(&'static str),
    #[error("the code is not exactly a system-call wrapper")]
    NotWrapper,
    #[error("the wrapper is not an exported function's entry")]
    NotExported,
    #[error("no trampoline page could be mapped")]
    NoTrampoline,
    #[error("{0}")]
    Op(#[from] ThreadOpError),
}

impl From<platform::Fault> for NotPatched {
    fn from(f: platform::Fault) -> Self {
        NotPatched::Op(ThreadOpError::Fault(f))
    }
}

#[derive(Debug, Default)]
enum TrampState {
    #[default]
    Unknown,
    Ready(Trampoline),
    Failed,
}

/// What is known of one process.
#[derive(Debug, Default)]
struct Proc {
    tramp: TrampState,
    /// Return addresses whose site was looked at (each once).
    tried: HashSet<u64>,
    /// Emulated calls' sites (the wrapper's entry) that were looked at (each once).
    tried_calls: HashSet<u64>,
    patched: u32,
    emulated: u64,
}

/// A hook the patcher calls in the middle of rewriting a site, for compatrun's own fault
/// tests: every other thread of the process is stopped, `written` of the site's new
/// bytes `new` are in place at `at`, the rest not yet. Whatever the hook does (stop or
/// kill the supervisor), the site is finished when it returns. Arguments: the faulting
/// thread, `at`, `new`, `written`.
pub type MidPatchHook = fn(tid: i32, at: u64, new: &[u8], written: usize);

/// Totals over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Call sites rewritten (vsyscall callers and emulated calls' wrappers).
    pub sites: u64,
    /// Of those, wrappers of emulated calls (answered in the guest from then on).
    pub call_sites: u64,
    /// Calls into the missing page that were emulated (one stop each).
    pub emulated: u64,
    /// Processes that got a trampoline page.
    pub trampolines: u64,
}

/// The patcher for one run.
#[derive(Debug)]
pub struct Patcher {
    enabled: bool,
    /// Per entry (in `VsyscallEntry::ALL` order): whether a stub may make the real
    /// system call (the persona's filter does not refuse it).
    syscall_ok: [bool; 3],
    /// The persona's part of `uname`'s answer, when it has one: the page then carries
    /// a `uname` stub.
    uname: Option<Vec<u8>>,
    exports: exported::Exports,
    procs: HashMap<i32, Proc>,
    totals: Totals,
    mid_patch: Option<MidPatchHook>,
}

impl Patcher {
    /// A patcher for a run with `spec`; `enabled` false keeps every call emulated;
    /// `uname`, the persona's part of `uname`'s answer
    /// ([`crate::handlers::uname::persona_bytes`]), gives the page a `uname` stub.
    pub fn new(enabled: bool, spec: &InterceptSpec, uname: Option<Vec<u8>>) -> Self {
        let syscall_ok = VsyscallEntry::ALL
            .map(|e| !matches!(spec.rule_for(Arch::X86_64, syscall_nr(e)), Rule::Errno(_)));
        Patcher {
            enabled,
            syscall_ok,
            uname,
            exports: exported::Exports::default(),
            procs: HashMap::new(),
            totals: Totals::default(),
            mid_patch: None,
        }
    }

    /// Calls `hook` in the middle of every site's rewrite (see [`MidPatchHook`]).
    pub fn set_mid_patch_hook(&mut self, hook: Option<MidPatchHook>) {
        self.mid_patch = hook;
    }

    /// The hook set with [`Patcher::set_mid_patch_hook`].
    pub fn mid_patch_hook(&self) -> Option<MidPatchHook> {
        self.mid_patch
    }

    /// The totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// A thread faulted at `entry`'s address with `regs` (before emulation): the call
    /// is counted and, the first time its site is seen, the site is patched if it can be.
    pub fn fault<G: GuestThread>(&mut self, g: &mut G, entry: VsyscallEntry, regs: &Regs) {
        self.totals.emulated += 1;
        let tgid = g.tgid();
        let proc = self.procs.entry(tgid).or_default();
        proc.emulated += 1;
        if !self.enabled || !g.can_run_syscalls() {
            return;
        }
        let mut ret = [0u8; 8];
        if g.read_mem(regs.sp, &mut ret).is_err() {
            return;
        }
        let ret = u64::from_ne_bytes(ret);
        if proc.tried.len() >= MAX_SITES || !proc.tried.insert(ret) {
            return;
        }
        let tid = g.tid();
        let how = How {
            syscall_ok: self.syscall_ok,
            mid_patch: self.mid_patch,
        };
        let uname = self.uname.as_deref();
        match patch_site(g, proc, how, uname, entry, ret, regs, &mut self.totals) {
            Ok(at) => {
                proc.patched += 1;
                self.totals.sites += 1;
                log::debug!(
                    "[pid {tid}] {} call site patched (returning to {ret:#x}; bytes at {at:#x})",
                    entry.name()
                );
            }
            Err(why) => log::debug!(
                "[pid {tid}] {} call site returning to {ret:#x} not patched: {why}",
                entry.name()
            ),
        }
    }

    /// `tgid` executed a new program: its trampoline and patched sites are gone.
    pub fn execed(&mut self, tgid: i32) {
        self.procs.remove(&tgid);
    }

    /// `tid` is gone; if it led its process, forget the process.
    pub fn exited(&mut self, tid: i32) {
        if let Some(p) = self.procs.remove(&tid) {
            if p.patched > 0 || p.emulated > 0 {
                log::debug!(
                    "[pid {tid}] {} call sites patched, {} vsyscall calls emulated",
                    p.patched,
                    p.emulated
                );
            }
        }
    }
}

/// How sites are patched in this run.
#[derive(Clone, Copy)]
struct How {
    /// Per entry: whether a stub may make the real system call.
    syscall_ok: [bool; 3],
    mid_patch: Option<MidPatchHook>,
}

/// Patches the site of a call into `entry` returning to `ret`; the address rewritten.
#[allow(clippy::too_many_arguments)] // the patcher's parts, borrowed apart
fn patch_site<G: GuestThread>(
    g: &mut G,
    proc: &mut Proc,
    how: How,
    uname: Option<&[u8]>,
    entry: VsyscallEntry,
    ret: u64,
    regs: &Regs,
    totals: &mut Totals,
) -> Result<u64, NotPatched> {
    let site = find_site(g, entry, ret, regs)?;
    let (at, size) = match site.target {
        TargetBytes::Immediate { at, size } => (at, usize::from(size)),
        TargetBytes::Memory { at } => (at, 8),
    };
    if !private_mapping(g.tgid(), at, size as u64) {
        return Err(NotPatched::NotPrivate);
    }
    let tramp = trampoline(g, proc, how.syscall_ok, uname, totals)?;
    let stub = tramp.stub(entry).ok_or(NotPatched::NoStub(entry.name()))?;
    let bytes = stub.to_le_bytes();
    // A 4-byte immediate is sign-extended: the stub is below 2 GiB, so its low half is it.
    let new = &bytes[..size];
    match how.mid_patch {
        None => g.patch_code(at, new)?,
        Some(hook) => {
            // The first byte, then the hook, then the rest (the other threads stay
            // stopped from the first write until the handler returns).
            g.patch_code(at, &new[..1])?;
            hook(g.tid(), at, new, 1);
            g.patch_code(at + 1, &new[1..])?;
        }
    }
    Ok(at)
}

/// The site that brought a thread to `entry` with `ret` on its stack.
fn find_site<G: GuestThread>(
    g: &mut G,
    entry: VsyscallEntry,
    ret: u64,
    regs: &Regs,
) -> Result<x86::VsyscallSite, NotPatched> {
    let code = read_before(g, ret).ok_or(NotPatched::Unreadable)?;
    let start = ret - code.len() as u64;
    let guest = RefCell::new(&mut *g);
    let read_const = |addr: u64| -> Option<u64> {
        let mut b = [0u8; 8];
        guest.borrow_mut().read_mem(addr, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    };
    let (site, code, start) = match x86::site_before(&code, start, ret, entry, &read_const) {
        Ok(site) => (site, code, start),
        Err(Refusal::NoCall) => {
            // Perhaps a call to a function that tail-jumps into the page.
            let mut callee = x86::direct_call_before(&code, start, ret).ok_or(Refusal::NoCall)?;
            let mut body = read_at(*guest.borrow_mut(), callee)?;
            // Through a PLT entry (`jmp *GOT(%rip)`) to the function itself, once.
            if let Some(got) = x86::jump_through_memory(&body, callee) {
                callee = read_const(got).ok_or(NotPatched::Unreadable)?;
                body = read_at(*guest.borrow_mut(), callee)?;
            }
            (x86::tail_site_at(&body, callee, entry)?, body, callee)
        }
        Err(e) => return Err(e.into()),
    };
    if !site.patchable {
        return Err(Refusal::Clobbered.into());
    }
    // The register the transfer used must hold E now: nothing ran since the fault.
    if let (Shape::Register(_), Some(load)) = (site.shape, site.load) {
        let reg = x86::loaded_register(&code, start, load);
        if !register_holds(regs, reg, entry.addr()) {
            return Err(NotPatched::RegisterMismatch);
        }
    }
    Ok(site)
}

/// Whether `reg` holds `value` in `regs`; false for registers the contract's `Regs`
/// does not carry.
fn register_holds(regs: &Regs, reg: Option<iced_x86::Register>, value: u64) -> bool {
    use iced_x86::Register as R;
    let v = match reg {
        Some(R::RAX) => regs.ret,
        Some(R::RDI) => regs.args[0],
        Some(R::RSI) => regs.args[1],
        Some(R::RDX) => regs.args[2],
        Some(R::RCX) => regs.args[3],
        Some(R::R8) => regs.args[4],
        Some(R::R9) => regs.args[5],
        _ => return false,
    };
    v == value
}

/// Up to [`CODE_BEFORE`] bytes ending at `ret`, or, where those are not all mapped, the
/// bytes from the start of `ret`'s page.
fn read_before<G: GuestThread>(g: &mut G, ret: u64) -> Option<Vec<u8>> {
    let page_start = ret & !0xfff;
    for start in [ret.saturating_sub(CODE_BEFORE), page_start] {
        let mut buf = vec![0u8; usize::try_from(ret.checked_sub(start)?).ok()?];
        if !buf.is_empty() && g.read_mem(start, &mut buf).is_ok() {
            return Some(buf);
        }
    }
    None
}

/// Up to [`CODE_AT`] code bytes at `addr` (fewer where the mapping ends sooner).
fn read_at<G: GuestThread>(g: &mut G, addr: u64) -> Result<Vec<u8>, NotPatched> {
    let mut buf = vec![0u8; CODE_AT];
    if g.read_mem(addr, &mut buf).is_ok() {
        return Ok(buf);
    }
    buf.truncate(CODE_AT.min(usize::try_from(0x1000 - (addr & 0xfff)).unwrap_or(0)));
    match g.read_mem(addr, &mut buf) {
        Ok(()) if !buf.is_empty() => Ok(buf),
        _ => Err(NotPatched::Unreadable),
    }
}

/// Whether `[addr, addr+len)` lies in one private mapping of process `tgid`.
pub(crate) fn private_mapping(tgid: i32, addr: u64, len: u64) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{tgid}/maps")) else {
        return false;
    };
    maps.lines().any(|line| {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            return false;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            return false;
        };
        lo <= addr && addr.saturating_add(len) <= hi && perms.as_bytes().get(3) == Some(&b'p')
    })
}

/// The process's trampoline page: the one it has (inherited through fork, or mapped
/// before), else a new one.
fn trampoline<'p, G: GuestThread>(
    g: &mut G,
    proc: &'p mut Proc,
    syscall_ok: [bool; 3],
    uname: Option<&[u8]>,
    totals: &mut Totals,
) -> Result<&'p Trampoline, NotPatched> {
    if let TrampState::Unknown = proc.tramp {
        proc.tramp = match map_trampoline(g, syscall_ok, uname, totals) {
            Ok(t) => TrampState::Ready(t),
            Err(e) => {
                log::debug!("[pid {}] no trampoline page: {e}", g.tid());
                TrampState::Failed
            }
        };
    }
    match &proc.tramp {
        TrampState::Ready(t) => Ok(t),
        _ => Err(NotPatched::NoTrampoline),
    }
}

fn map_trampoline<G: GuestThread>(
    g: &mut G,
    syscall_ok: [bool; 3],
    uname: Option<&[u8]>,
    totals: &mut Totals,
) -> Result<Trampoline, NotPatched> {
    let fns = crate::handlers::vdso::vdso_base(g.tid())
        .map_or([None; 3], |base| vdso_syms::functions(g, base));
    let mut targets = [Target::None; 3];
    for (i, t) in targets.iter_mut().enumerate() {
        *t = match fns[i] {
            Some(f) => Target::Vdso(f),
            None if syscall_ok[i] => Target::Syscall,
            None => Target::None,
        };
    }
    for base in CANDIDATES {
        let t = Trampoline::build(base, targets, uname).map_err(|_| NotPatched::NoTrampoline)?;
        let mut there = vec![0u8; t.code.len()];
        if g.read_mem(base, &mut there).is_ok() && there == t.code {
            return Ok(t); // inherited from the parent
        }
        let got = g.run_syscall(
            9, // mmap
            [base, trampoline::PAGE, PROT_RX, MAP_FLAGS, u64::MAX, 0],
        )?;
        #[allow(clippy::cast_sign_loss)] // a non-negative mmap result is an address
        let got_addr = got as u64;
        if got >= 0 && got_addr != base {
            // A kernel without MAP_FIXED_NOREPLACE took it as a hint: give it back.
            let _ = g.run_syscall(11, [got_addr, trampoline::PAGE, 0, 0, 0, 0]);
            continue;
        }
        if got < 0 {
            continue; // taken (EEXIST), below mmap_min_addr (EPERM), ...
        }
        g.write_code(base, &t.code)?;
        totals.trampolines += 1;
        return Ok(t);
    }
    Err(NotPatched::NoTrampoline)
}

#[cfg(test)]
mod tests;
