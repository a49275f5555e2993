//! The patcher's decisions, against a fake process whose code lies in a real private
//! mapping of the test process (so the mapping check reads real `/proc` data) and whose
//! vDSO is the test process's own. The whole path through a real guest is proven in the
//! VM test (tests/vm_vsyscall.rs).

use std::collections::HashMap;

use platform::{Fault, GuestThread, InterceptSpec, Regs, ThreadOpError};

use super::*;

const TIME: u64 = 0xffff_ffff_ff60_0400;
/// Where the fake stack (holding the return address) starts in the code buffer.
const STACK: usize = 200;

/// A fake process: `code` is a heap buffer at its real address; trampoline pages are
/// mapped by `run_syscall`; anything else is read from the test process itself.
#[derive(Default)]
struct Fake {
    code: Vec<u8>,
    pages: HashMap<u64, Vec<u8>>,
    /// Candidate addresses whose `mmap` answers EEXIST.
    taken: Vec<u64>,
    mmaps: usize,
    patched: Vec<(u64, Vec<u8>)>,
}

impl Fake {
    /// `site` at offset 32 of the code, the return address after it on the stack.
    fn with_site(site: &[u8]) -> (Self, Regs) {
        let mut code = vec![0x90u8; 256];
        code[32..32 + site.len()].copy_from_slice(site);
        let mut f = Fake {
            code,
            ..Fake::default()
        };
        let ret = f.base() + 32 + site.len() as u64;
        f.code[STACK..STACK + 8].copy_from_slice(&ret.to_le_bytes());
        let regs = Regs {
            ip: TIME,
            sp: f.base() + STACK as u64,
            ret: TIME,
            ..Regs::default()
        };
        (f, regs)
    }

    fn base(&self) -> u64 {
        self.code.as_ptr() as u64
    }

    fn slot(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let base = self.base();
        if addr >= base && addr + len as u64 <= base + self.code.len() as u64 {
            let off = usize::try_from(addr - base).ok()?;
            return self.code.get_mut(off..off + len);
        }
        let page = addr & !0xfff;
        let off = usize::try_from(addr - page).ok()?;
        self.pages.get_mut(&page)?.get_mut(off..off + len)
    }
}

impl GuestThread for Fake {
    fn can_run_syscalls(&self) -> bool {
        true
    }

    fn tid(&self) -> i32 {
        i32::try_from(std::process::id()).unwrap_or(1)
    }
    fn tgid(&self) -> i32 {
        self.tid()
    }
    fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        if let Some(s) = self.slot(addr, buf.len()) {
            buf.copy_from_slice(s);
            return Ok(());
        }
        if (addr & !0xfff) < 0x8000_0000 {
            return Err(Fault {
                addr,
                len: buf.len(),
            });
        }
        platform::mem::read(nix::unistd::Pid::from_raw(self.tid()), addr, buf)
    }
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let len = data.len();
        self.slot(addr, len)
            .ok_or(Fault { addr, len })?
            .copy_from_slice(data);
        Ok(())
    }
    fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        self.write_mem(addr, data)
    }
    fn run_syscall(&mut self, nr: u32, args: [u64; 6]) -> Result<i64, ThreadOpError> {
        match nr {
            9 if self.taken.contains(&args[0]) => Ok(-i64::from(libc::EEXIST)),
            9 => {
                assert_eq!(args[3], MAP_FLAGS);
                self.mmaps += 1;
                self.pages.insert(args[0], vec![0; 4096]);
                Ok(i64::try_from(args[0]).unwrap_or(-1))
            }
            _ => Ok(-i64::from(libc::ENOSYS)),
        }
    }
    fn patch_code(&mut self, addr: u64, data: &[u8]) -> Result<(), ThreadOpError> {
        self.patched.push((addr, data.to_vec()));
        self.write_code(addr, data)?;
        Ok(())
    }
}

/// `mov $0xffffffffff600400,%rax; call *%rax`
const MOV_CALL: [u8; 9] = [0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0xff, 0xd0];

fn patcher() -> Patcher {
    Patcher::new(true, &InterceptSpec::allow_all(), None)
}

#[test]
fn a_mov_call_site_is_rewritten_to_a_stub_in_a_new_low_page_once() {
    let (mut g, regs) = Fake::with_site(&MOV_CALL);
    let mut p = patcher();
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    assert_eq!(g.mmaps, 1);
    let page = CANDIDATES[0];
    assert!(g.pages.contains_key(&page));
    // The imm32 (at offset 3 of the mov) now names a stub in that page.
    assert_eq!(g.patched.len(), 1);
    let (at, bytes) = &g.patched[0];
    assert_eq!(*at, g.base() + 32 + 3);
    let stub = u64::from(u32::from_le_bytes(bytes[..].try_into().expect("4 bytes")));
    assert!((page..page + 4096).contains(&stub), "{stub:#x}");
    assert_eq!(g.code[35..39], bytes[..]);
    assert_eq!(
        p.totals(),
        Totals {
            sites: 1,
            emulated: 1,
            trampolines: 1,
            call_sites: 0,
        }
    );
    // The page holds exactly the trampoline generated for it, with this process's vDSO.
    let fns = crate::handlers::vdso::vdso_base(g.tid())
        .map_or([None; 3], |b| vdso_syms::functions(&mut g, b));
    let t = Trampoline::build(
        page,
        fns.map(|f| f.map_or(Target::Syscall, Target::Vdso)),
        None,
    )
    .expect("assembles");
    assert_eq!(g.pages[&page][..t.code.len()], t.code[..]);
    assert_eq!(t.stub(VsyscallEntry::Time), Some(stub));
    // A second fault from the same site (a call already in flight) is only counted.
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    assert_eq!((g.patched.len(), g.mmaps), (1, 1));
    assert_eq!(p.totals().emulated, 2);
}

#[test]
fn near_misses_and_inconsistent_registers_are_left_alone() {
    // mov $E,%rax; mov %rax,%rcx; call *%rcx -- and mov $E,%rax; add $0,%rax; call *%rax
    let near = [
        &[
            0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0x48, 0x89, 0xc1, 0xff, 0xd1,
        ][..],
        &[
            0x48, 0xc7, 0xc0, 0x00, 0x04, 0x60, 0xff, 0x48, 0x83, 0xc0, 0x00, 0xff, 0xd0,
        ],
        // the other entry's address loaded
        &[0x48, 0xc7, 0xc0, 0x00, 0x00, 0x60, 0xff, 0xff, 0xd0],
    ];
    for site in near {
        let (mut g, regs) = Fake::with_site(site);
        let before = g.code.clone();
        let mut p = patcher();
        p.fault(&mut g, VsyscallEntry::Time, &regs);
        assert!(g.patched.is_empty(), "{site:02x?}");
        assert_eq!(g.code, before);
        assert_eq!(p.totals().sites, 0);
    }
    // The right bytes, but rax does not hold the entry: something else brought the
    // thread here.
    let (mut g, mut regs) = Fake::with_site(&MOV_CALL);
    regs.ret = 0x1234;
    let mut p = patcher();
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    assert!(g.patched.is_empty());
}

#[test]
fn a_forked_child_reuses_the_inherited_page_and_an_exec_forgets_the_sites() {
    let (mut g, regs) = Fake::with_site(&MOV_CALL);
    let mut p = patcher();
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    assert_eq!(g.mmaps, 1);
    // A new process (forget everything about this one) with the same memory, faulting
    // at another site: the page is found by its contents, not mapped again.
    p.execed(g.tgid());
    let second = g.base() + 64;
    g.code[64..73].copy_from_slice(&MOV_CALL);
    g.code[STACK..STACK + 8].copy_from_slice(&(second + 9).to_le_bytes());
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    assert_eq!((g.mmaps, g.patched.len()), (1, 2));
    assert_eq!(p.totals().trampolines, 1);
}

#[test]
fn a_taken_address_moves_the_page_on_and_patching_off_changes_nothing() {
    let (mut g, regs) = Fake::with_site(&MOV_CALL);
    g.taken.push(CANDIDATES[0]);
    let mut p = patcher();
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    assert!(g.pages.contains_key(&CANDIDATES[1]));
    assert_eq!(g.patched.len(), 1);

    let (mut g, regs) = Fake::with_site(&MOV_CALL);
    let mut off = Patcher::new(false, &InterceptSpec::allow_all(), None);
    off.fault(&mut g, VsyscallEntry::Time, &regs);
    assert_eq!((g.mmaps, g.patched.len()), (0, 0));
    assert_eq!(off.totals().emulated, 1);
}

#[test]
fn an_entry_the_persona_refuses_and_the_vdso_lacks_gets_no_stub() {
    let mut spec = InterceptSpec::allow_all();
    spec.rules.push((Arch::X86_64, 309, Rule::Errno(38)));
    let p = Patcher::new(true, &spec, None);
    assert_eq!(p.syscall_ok, [true, true, false]);
}

/// What the mid-patch hook saw, per calling test thread.
type HookCall = (i32, u64, Vec<u8>, usize);

thread_local! {
    static HOOK_CALLS: std::cell::RefCell<Vec<HookCall>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn record_hook(tid: i32, at: u64, new: &[u8], written: usize) {
    HOOK_CALLS.with(|c| c.borrow_mut().push((tid, at, new.to_vec(), written)));
}

#[test]
fn the_mid_patch_hook_sees_the_site_half_written_and_the_site_is_finished_after_it() {
    let (mut plain, regs) = Fake::with_site(&MOV_CALL);
    patcher().fault(&mut plain, VsyscallEntry::Time, &regs);
    let (_, whole) = plain.patched[0].clone();

    let (mut g, regs) = Fake::with_site(&MOV_CALL);
    let mut p = patcher();
    p.set_mid_patch_hook(Some(record_hook));
    p.fault(&mut g, VsyscallEntry::Time, &regs);
    let at = g.base() + 35;
    // One byte with the others stopped, the hook, then the rest: the same bytes in the
    // end as without the hook.
    assert_eq!(
        g.patched,
        [(at, whole[..1].to_vec()), (at + 1, whole[1..].to_vec())]
    );
    assert_eq!(g.code[35..39], whole[..]);
    let calls = HOOK_CALLS.with(|c| c.borrow().clone());
    assert_eq!(calls, [(g.tid(), at, whole.clone(), 1)]);
    assert_eq!(p.totals().sites, 1);
    // A site left alone never calls it.
    let (mut near, mut regs) = Fake::with_site(&MOV_CALL);
    regs.ret = 0x1234;
    p.fault(&mut near, VsyscallEntry::Time, &regs);
    assert_eq!(HOOK_CALLS.with(|c| c.borrow().len()), 1);
}
