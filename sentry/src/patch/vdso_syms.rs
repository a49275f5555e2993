//! The process's own vDSO functions a trampoline jumps to: `__vdso_gettimeofday`,
//! `__vdso_time` and `__vdso_getcpu`, found in the vDSO's dynamic symbol table in guest
//! memory. Every field read is bounds-checked: a strange image yields no functions
//! (the trampoline then makes the real system calls), never a panic.

use platform::GuestThread;

use crate::elf::{u16_at, u32_at, u64_at};

/// `SHT_DYNSYM`.
const SHT_DYNSYM: u32 = 11;
/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// `STT_FUNC`.
const STT_FUNC: u8 = 2;
/// The most bytes of a vDSO read (they are 8 KiB or less).
const MAX_IMAGE: u64 = 64 * 1024;

/// The vDSO symbol for each vsyscall entry, in `VsyscallEntry::ALL` order.
const NAMES: [&[u8]; 3] = [b"__vdso_gettimeofday", b"__vdso_time", b"__vdso_getcpu"];

/// The addresses of the vDSO's functions for the three vsyscall entries (in
/// `VsyscallEntry::ALL` order) in the process whose vDSO is at `base`.
pub fn functions<G: GuestThread>(g: &mut G, base: u64) -> [Option<u64>; 3] {
    find(g, base).unwrap_or([None; 3])
}

fn find<G: GuestThread>(g: &mut G, base: u64) -> Option<[Option<u64>; 3]> {
    let mut ehdr = [0u8; 64];
    g.read_mem(base, &mut ehdr).ok()?;
    // A 64-bit little-endian ELF only (a 64-bit process's vDSO).
    if ehdr[..6] != *b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phnum) = (u64_at(&ehdr, 0x20)?, u16_at(&ehdr, 0x38)?);
    let (shoff, shentsize, shnum) = (
        u64_at(&ehdr, 0x28)?,
        u16_at(&ehdr, 0x3a)?,
        u16_at(&ehdr, 0x3c)?,
    );
    let end = shoff.checked_add(u64::from(shentsize) * u64::from(shnum))?;
    if shentsize < 64 || end > MAX_IMAGE || phoff.checked_add(56 * u64::from(phnum))? > MAX_IMAGE {
        return None;
    }
    let mut image = vec![0u8; usize::try_from(end.max(phoff + 56 * u64::from(phnum))).ok()?];
    g.read_mem(base, &mut image).ok()?;
    // Symbol values are link-time addresses: the first PT_LOAD's p_vaddr sits at base.
    let phoff = usize::try_from(phoff).ok()?;
    let vaddr0 = (0..usize::from(phnum)).find_map(|i| {
        let at = phoff.checked_add(i * 56)?;
        (u32_at(&image, at)? == PT_LOAD).then(|| u64_at(&image, at + 0x10))?
    })?;
    let section = |i: usize| -> Option<(u32, u64, u64, u32, u64)> {
        let at = usize::try_from(shoff).ok()? + i * usize::from(shentsize);
        Some((
            u32_at(&image, at + 4)?,    // sh_type
            u64_at(&image, at + 0x18)?, // sh_offset
            u64_at(&image, at + 0x20)?, // sh_size
            u32_at(&image, at + 0x28)?, // sh_link
            u64_at(&image, at + 0x38)?, // sh_entsize
        ))
    };
    let (_, sym_off, sym_size, link, entsize) = (0..usize::from(shnum))
        .filter_map(section)
        .find(|s| s.0 == SHT_DYNSYM)?;
    let (_, str_off, str_size, _, _) = section(usize::try_from(link).ok()?)?;
    if entsize < 24 || sym_size > MAX_IMAGE || str_size > MAX_IMAGE {
        return None;
    }
    let mut syms = vec![0u8; usize::try_from(sym_size).ok()?];
    g.read_mem(base.checked_add(sym_off)?, &mut syms).ok()?;
    let mut strs = vec![0u8; usize::try_from(str_size).ok()?];
    g.read_mem(base.checked_add(str_off)?, &mut strs).ok()?;

    let mut out = [None; 3];
    for sym in syms.chunks_exact(usize::try_from(entsize).ok()?) {
        let name_at = usize::try_from(u32_at(sym, 0)?).ok()?;
        let info = *sym.get(4)?;
        let value = u64_at(sym, 8)?;
        let Some(name) = strs
            .get(name_at..)
            .and_then(|s| s.split(|&b| b == 0).next())
        else {
            continue;
        };
        if info & 0xf != STT_FUNC || value == 0 {
            continue;
        }
        if let Some(i) = NAMES.iter().position(|n| *n == name) {
            out[i] = base.checked_add(value.checked_sub(vaddr0)?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::VsyscallEntry;
    use platform::Fault;

    /// compatrun's own process as the guest: its vDSO is the host's.
    struct Me;

    impl GuestThread for Me {
        fn tid(&self) -> i32 {
            i32::try_from(std::process::id()).unwrap_or(1)
        }
        fn tgid(&self) -> i32 {
            self.tid()
        }
        fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
            platform::mem::read(nix::unistd::Pid::from_raw(self.tid()), addr, buf)
        }
        fn write_mem(&mut self, addr: u64, _: &[u8]) -> Result<(), Fault> {
            Err(Fault { addr, len: 0 })
        }
        fn write_code(&mut self, addr: u64, _: &[u8]) -> Result<(), Fault> {
            Err(Fault { addr, len: 0 })
        }
    }

    #[test]
    fn finds_this_hosts_vdso_functions_inside_its_vdso() {
        let Some(base) = crate::handlers::vdso::vdso_base(Me.tid()) else {
            eprintln!("SKIPPED finds_this_hosts_vdso_functions: this process has no vDSO");
            return;
        };
        let fns = functions(&mut Me, base);
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let vdso = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                (
                    u64::from_str_radix(a, 16).expect("hex"),
                    u64::from_str_radix(b, 16).expect("hex"),
                )
            })
            .expect("a [vdso] mapping");
        for (i, f) in fns.iter().enumerate() {
            let f = f.unwrap_or_else(|| panic!("no vDSO function for {:?}", VsyscallEntry::ALL[i]));
            assert!(f > vdso.0 && f < vdso.1, "{f:#x} outside {vdso:x?}");
        }
    }

    #[test]
    fn garbage_images_give_no_functions() {
        struct Junk(Vec<u8>);
        impl GuestThread for Junk {
            fn tid(&self) -> i32 {
                1
            }
            fn tgid(&self) -> i32 {
                1
            }
            fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
                let off = usize::try_from(addr).map_err(|_| Fault { addr, len: 0 })?;
                let src = self
                    .0
                    .get(off..off.saturating_add(buf.len()))
                    .ok_or(Fault {
                        addr,
                        len: buf.len(),
                    })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            fn write_mem(&mut self, addr: u64, _: &[u8]) -> Result<(), Fault> {
                Err(Fault { addr, len: 0 })
            }
            fn write_code(&mut self, addr: u64, _: &[u8]) -> Result<(), Fault> {
                Err(Fault { addr, len: 0 })
            }
        }
        let mut img = vec![0u8; 4096];
        img[..6].copy_from_slice(b"\x7fELF\x02\x01");
        for (off, v) in [(0x28usize, u64::MAX - 8), (0x20, 1 << 40)] {
            img[off..off + 8].copy_from_slice(&v.to_le_bytes());
            assert_eq!(functions(&mut Junk(img.clone()), 0), [None; 3]);
        }
        assert_eq!(functions(&mut Junk(vec![0xff; 100]), 0), [None; 3]);
        assert_eq!(functions(&mut Junk(Vec::new()), 0), [None; 3]);
    }
}
