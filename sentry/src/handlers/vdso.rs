//! The kernel version in the vDSO's "Linux" ELF note.
//!
//! glibc's dynamic loader up to 2.34 reads the running kernel's version from this note
//! (`_dl_discover_osversion`) before it ever calls `uname`, and compares it with its own
//! minimum ("FATAL: kernel too old") and with each library's NT_GNU_ABI_TAG. After every
//! exec, before the loader runs, the note's 4-byte `LINUX_VERSION_CODE` is rewritten to
//! the persona's version (in the process's private copy of the page), so old loaders see
//! the same kernel as `uname`. The vDSO itself stays, with its fast clock functions
//! (PRoot instead drops `AT_SYSINFO_EHDR`, which costs every `clock_gettime` a syscall).

use platform::GuestThread;

use crate::elf::{self, u16_at, u32_at, u64_at};
use crate::version::KernelVersion;

/// `AT_SYSINFO_EHDR`: the auxv entry with the vDSO's address.
const AT_SYSINFO_EHDR: u64 = 33;
/// `PT_NOTE`.
const PT_NOTE: u32 = 4;
/// Enough program headers for any vDSO (they have 3 to 5).
const MAX_PHDRS: u16 = 16;
/// Enough note bytes for any vDSO's notes.
const MAX_NOTES: u64 = 4096;

/// `LINUX_VERSION_CODE` for `v` (the patch level saturates at 255, as the kernel does).
pub fn version_code(v: KernelVersion) -> u32 {
    (u32::from(v.major) << 16) | (u32::from(v.minor.min(255)) << 8) | u32::from(v.patch.min(255))
}

/// The vDSO base of `tid`'s process, from /proc/TID/auxv.
pub(crate) fn vdso_base(tid: i32) -> Option<u64> {
    let auxv = std::fs::read(format!("/proc/{tid}/auxv")).ok()?;
    // The tracer is 64-bit; a 32-bit process's auxv has 4-byte words.
    let word = if auxv.len() % 16 == 0
        && auxv
            .chunks_exact(16)
            .any(|c| c[..8] == AT_SYSINFO_EHDR.to_ne_bytes())
    {
        8
    } else {
        4
    };
    auxv.chunks_exact(2 * word).find_map(|pair| {
        let num = |b: &[u8]| {
            let mut v = [0u8; 8];
            v[..word].copy_from_slice(b);
            u64::from_ne_bytes(v)
        };
        (num(&pair[..word]) == AT_SYSINFO_EHDR).then(|| num(&pair[word..]))
    })
}

fn read<G: GuestThread, const N: usize>(g: &mut G, addr: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    g.read_mem(addr, &mut b).ok()?;
    Some(b)
}

/// The address of the 4-byte version in the "Linux" note of the ELF image at `base`.
/// Every field comes from guest memory and is bounds-checked: a strange image yields
/// `None`, never a panic.
pub fn find_version_note<G: GuestThread>(g: &mut G, base: u64) -> Option<u64> {
    let ehdr: [u8; 64] = read(g, base)?;
    if ehdr[..4] != *b"\x7fELF" {
        return None;
    }
    let is64 = ehdr[4] == 2;
    let (phoff, phentsize, phnum) = if is64 {
        (
            u64_at(&ehdr, 0x20)?,
            u16_at(&ehdr, 0x36)?,
            u16_at(&ehdr, 0x38)?,
        )
    } else {
        (
            u64::from(u32_at(&ehdr, 0x1c)?),
            u16_at(&ehdr, 0x2a)?,
            u16_at(&ehdr, 0x2c)?,
        )
    };
    for i in 0..phnum.min(MAX_PHDRS) {
        let ph_addr = base
            .checked_add(phoff)?
            .checked_add(u64::from(i) * u64::from(phentsize))?;
        let ph: [u8; 56] = read(g, ph_addr).or_else(|| {
            // A 32-bit header near the end of the mapping: read its 32 bytes only.
            let short: [u8; 32] = read(g, ph_addr)?;
            let mut b = [0u8; 56];
            b[..32].copy_from_slice(&short);
            Some(b)
        })?;
        let (p_type, p_offset, p_filesz) = if is64 {
            (u32_at(&ph, 0)?, u64_at(&ph, 0x08)?, u64_at(&ph, 0x20)?)
        } else {
            (
                u32_at(&ph, 0)?,
                u64::from(u32_at(&ph, 0x04)?),
                u64::from(u32_at(&ph, 0x10)?),
            )
        };
        if p_type != PT_NOTE {
            continue;
        }
        let len = usize::try_from(p_filesz.min(MAX_NOTES)).ok()?;
        let start = base.checked_add(p_offset)?;
        let mut notes = vec![0u8; len];
        g.read_mem(start, &mut notes).ok()?;
        if let Some(note) = elf::notes(&notes)
            .into_iter()
            .find(|n| n.name == b"Linux\0" && n.kind == 0 && n.desc.len() == 4)
        {
            return start.checked_add(u64::try_from(note.desc_offset).ok()?);
        }
    }
    None
}

/// How many distinct vDSO images are remembered (one per ABI in practice).
const MAX_IMAGES: usize = 8;

/// Where each vDSO image seen so far keeps its version note. The kernel maps the same
/// image into every process of an ABI, so after the first exec of each the note is found
/// from the image's ELF header alone, and checked, in two small reads.
#[derive(Debug, Default)]
pub struct VdsoNotes {
    /// ELF header → (offset of the 4-byte version from the base, the version found there).
    known: Vec<([u8; 64], u64, [u8; 4])>,
}

impl VdsoNotes {
    /// After an exec: put the persona's version into the new image's vDSO note.
    pub fn rewrite_version<G: GuestThread>(&mut self, g: &mut G, v: KernelVersion) {
        let tid = g.tid();
        let Some(base) = vdso_base(tid) else {
            return; // no vDSO (vdso=0, or a personality without one)
        };
        let Some(at) = self.note_of(g, base) else {
            log::debug!("[pid {tid}] vDSO at {base:#x} has no Linux version note");
            return;
        };
        if let Err(e) = g.write_code(at, &version_code(v).to_le_bytes()) {
            log::debug!("[pid {tid}] cannot rewrite the vDSO version note: {e}");
        }
    }

    /// The address of the version in the vDSO at `base`: remembered for an image seen
    /// before (same header, and the same version where it was), else searched for.
    fn note_of<G: GuestThread>(&mut self, g: &mut G, base: u64) -> Option<u64> {
        let ehdr: [u8; 64] = read(g, base)?;
        if let Some((_, off, code)) = self.known.iter().find(|(h, _, _)| *h == ehdr) {
            let at = base.checked_add(*off)?;
            if read::<G, 4>(g, at) == Some(*code) {
                return Some(at);
            }
        }
        let at = find_version_note(g, base)?;
        let code: [u8; 4] = read(g, at)?;
        if self.known.len() >= MAX_IMAGES {
            self.known.clear();
        }
        self.known.retain(|(h, _, _)| *h != ehdr);
        self.known.push((ehdr, at.checked_sub(base)?, code));
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_codes_match_the_kernel_macro() {
        assert_eq!(version_code(KernelVersion::new(2, 6, 32)), 0x02_06_20);
        assert_eq!(version_code(KernelVersion::new(3, 10, 0)), 0x03_0a_00);
        assert_eq!(version_code(KernelVersion::new(4, 9, 337)), 0x04_09_ff);
    }
}
