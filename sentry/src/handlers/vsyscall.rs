//! The legacy vsyscall page: `gettimeofday` at 0xffffffffff600000, `time` at ...600400 and
//! `getcpu` at ...600800, which glibc before 2.14 and every old static binary call
//! directly.
//!
//! On a host booted with `vsyscall=none` the page is gone and such a call faults: the
//! thread stops with SIGSEGV, its instruction pointer and the fault address both on one of
//! the three entries. The handler performs the call, puts the result in rax, returns to
//! the caller (pops the return address, as the page's `ret` would have) and the signal is
//! never delivered. Anything else touching the page (a jump into the middle of it, a read
//! of it) gets its SIGSEGV, as on a modern kernel emulating the page. On `xonly` and
//! `emulate` hosts the kernel emulates the three entries itself and nothing reaches here.
//!
//! A bad output pointer gets `-EFAULT` in rax (the kernel's own emulation sends SIGSEGV
//! instead; old glibc ignores both).

use platform::{GuestThread, Regs, SignalInfo, SignalVerdict};

/// Base of the vsyscall page.
pub const BASE: u64 = 0xffff_ffff_ff60_0000;
const GETTIMEOFDAY: u64 = BASE;
const TIME: u64 = BASE + 0x400;
const GETCPU: u64 = BASE + 0x800;

/// The page's entries: the system call each stands for, and its address.
pub const ENTRIES: [(&str, u64); 3] = [
    ("gettimeofday", GETTIMEOFDAY),
    ("time", TIME),
    ("getcpu", GETCPU),
];

/// Where a thread last ran, from `/proc/TID/stat` (field 39, `processor`), and its NUMA
/// node (from sysfs; 0 when the machine has no NUMA information).
fn cpu_and_node(tid: i32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let cpu: u32 = rest.split_whitespace().nth(36)?.parse().ok()?;
    let node = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}"))
        .ok()
        .and_then(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
                .next()
        })
        .unwrap_or(0);
    Some((cpu, node))
}

fn now() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        i64::from(d.subsec_micros()),
    )
}

/// Writes `data` at `addr` unless `addr` is NULL; false if the guest memory is bad.
fn put<G: GuestThread>(guest: &mut G, addr: u64, data: &[u8]) -> bool {
    addr == 0 || guest.write_mem(addr, data).is_ok()
}

/// Performs the call at `entry` for the stopped thread; the value for rax.
fn call<G: GuestThread>(guest: &mut G, entry: u64, args: &[u64; 6]) -> i64 {
    let efault = -i64::from(libc::EFAULT);
    match entry {
        GETTIMEOFDAY => {
            let (sec, usec) = now();
            let mut tv = [0u8; 16];
            tv[..8].copy_from_slice(&sec.to_ne_bytes());
            tv[8..].copy_from_slice(&usec.to_ne_bytes());
            // struct timezone: the kernel's sys_tz, zero unless set by settimeofday.
            if put(guest, args[0], &tv) && put(guest, args[1], &[0u8; 8]) {
                0
            } else {
                efault
            }
        }
        TIME => {
            let (sec, _) = now();
            if put(guest, args[0], &sec.to_ne_bytes()) {
                sec
            } else {
                efault
            }
        }
        _ => {
            let (cpu, node) = cpu_and_node(guest.tid()).unwrap_or((0, 0));
            if put(guest, args[0], &cpu.to_ne_bytes()) && put(guest, args[1], &node.to_ne_bytes()) {
                0
            } else {
                efault
            }
        }
    }
}

/// The entry a thread faulted at, if `info` is exactly a call into the missing page
/// (SIGSEGV with the instruction pointer and the fault address both on one entry).
pub fn fault_entry(info: &SignalInfo, regs: &Regs) -> Option<crate::x86::VsyscallEntry> {
    if info.signo != libc::SIGSEGV || info.addr != regs.ip {
        return None;
    }
    crate::x86::VsyscallEntry::from_addr(regs.ip)
}

/// Handles a SIGSEGV that may be a call into the missing vsyscall page.
pub fn handle<G: GuestThread>(guest: &mut G, info: &SignalInfo, regs: &mut Regs) -> SignalVerdict {
    let entry = regs.ip;
    if info.signo != libc::SIGSEGV
        || info.addr != entry
        || ![GETTIMEOFDAY, TIME, GETCPU].contains(&entry)
    {
        return SignalVerdict::Deliver;
    }
    // The caller's return address is on top of its stack; without it, deliver the fault.
    let mut ret_addr = [0u8; 8];
    if guest.read_mem(regs.sp, &mut ret_addr).is_err() {
        return SignalVerdict::Deliver;
    }
    let value = call(guest, entry, &regs.args);
    log::trace!("[pid {}] vsyscall {entry:#x} -> {value}", guest.tid());
    #[allow(clippy::cast_sign_loss)] // rax holds the raw bits of a signed result
    {
        regs.ret = value as u64;
    }
    regs.ip = u64::from_ne_bytes(ret_addr);
    regs.sp = regs.sp.wrapping_add(8);
    SignalVerdict::Suppress
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::Fault;

    /// A guest whose memory is a small buffer mapped at 0x1000.
    struct FakeGuest {
        mem: Vec<u8>,
    }

    impl GuestThread for FakeGuest {
        fn tid(&self) -> i32 {
            std::process::id().try_into().unwrap_or(1)
        }
        fn tgid(&self) -> i32 {
            self.tid()
        }
        fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
            let off = addr
                .checked_sub(0x1000)
                .and_then(|o| usize::try_from(o).ok());
            let fault = Fault {
                addr,
                len: buf.len(),
            };
            let off = off.ok_or(fault)?;
            let src = self.mem.get(off..off + buf.len()).ok_or(fault)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
            self.write_mem(addr, data)
        }
        fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
            let off = addr
                .checked_sub(0x1000)
                .and_then(|o| usize::try_from(o).ok());
            let fault = Fault {
                addr,
                len: data.len(),
            };
            let off = off.ok_or(fault)?;
            self.mem
                .get_mut(off..off + data.len())
                .ok_or(fault)?
                .copy_from_slice(data);
            Ok(())
        }
    }

    fn segv(addr: u64) -> SignalInfo {
        SignalInfo {
            signo: libc::SIGSEGV,
            code: 1,
            addr,
        }
    }

    fn guest_with_return_address() -> (FakeGuest, Regs) {
        let mut g = FakeGuest { mem: vec![0; 256] };
        g.mem[0x80..0x88].copy_from_slice(&0x0040_05d0_u64.to_ne_bytes());
        let regs = Regs {
            sp: 0x1080,
            ..Regs::default()
        };
        (g, regs)
    }

    #[test]
    fn time_returns_now_writes_the_pointer_and_returns_to_the_caller() {
        let (mut g, mut regs) = guest_with_return_address();
        regs.ip = TIME;
        regs.args[0] = 0x1000;
        assert_eq!(
            handle(&mut g, &segv(TIME), &mut regs),
            SignalVerdict::Suppress
        );
        let t = i64::try_from(regs.ret).expect("positive");
        assert!((t - now().0).abs() <= 1);
        assert_eq!(g.mem[..8], t.to_ne_bytes());
        assert_eq!((regs.ip, regs.sp), (0x4005d0, 0x1088));
    }

    #[test]
    fn gettimeofday_and_getcpu_fill_their_structures() {
        let (mut g, mut regs) = guest_with_return_address();
        regs.ip = GETTIMEOFDAY;
        regs.args[0] = 0x1000;
        assert_eq!(
            handle(&mut g, &segv(GETTIMEOFDAY), &mut regs),
            SignalVerdict::Suppress
        );
        assert_eq!(regs.ret, 0);
        let sec = i64::from_ne_bytes(g.mem[..8].try_into().expect("8 bytes"));
        assert!((sec - now().0).abs() <= 1);

        let (mut g, mut regs) = guest_with_return_address();
        regs.ip = GETCPU;
        regs.args[0] = 0x1010;
        assert_eq!(
            handle(&mut g, &segv(GETCPU), &mut regs),
            SignalVerdict::Suppress
        );
        let cpu = u32::from_ne_bytes(g.mem[0x10..0x14].try_into().expect("4 bytes"));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!((cpu as usize) < cpus.max(64));
    }

    #[test]
    fn bad_pointers_give_efault_and_other_faults_are_delivered() {
        let (mut g, mut regs) = guest_with_return_address();
        regs.ip = TIME;
        regs.args[0] = 0xdead_0000;
        assert_eq!(
            handle(&mut g, &segv(TIME), &mut regs),
            SignalVerdict::Suppress
        );
        assert_eq!(regs.ret, (-i64::from(libc::EFAULT)).cast_unsigned());

        // A jump into the middle of the page, a read of it, another signal: delivered.
        for (ip, addr, signo) in [
            (BASE + 0x10, BASE + 0x10, libc::SIGSEGV),
            (0x400000, TIME, libc::SIGSEGV),
            (TIME, TIME, libc::SIGBUS),
        ] {
            let (mut g, mut regs) = guest_with_return_address();
            regs.ip = ip;
            let info = SignalInfo {
                signo,
                code: 1,
                addr,
            };
            assert_eq!(handle(&mut g, &info, &mut regs), SignalVerdict::Deliver);
        }
        // An unreadable stack: the fault is delivered rather than guessed at.
        let (mut g, mut regs) = guest_with_return_address();
        regs.ip = TIME;
        regs.sp = 8;
        assert_eq!(
            handle(&mut g, &segv(TIME), &mut regs),
            SignalVerdict::Deliver
        );
    }
}
