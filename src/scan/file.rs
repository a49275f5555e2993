//! One file of a scan: mapped read-only, parsed as ELF (the `object` crate), its code
//! swept with the sentry's shared x86 decoder, its ABI note and C library markers read.
//! A file that is not ELF is `Ok(None)`; one that claims to be ELF but is broken is an
//! error naming what is wrong, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectKind, ObjectSection, ObjectSegment, SectionFlags, SegmentFlags};
use platform::Arch;
use sentry::x86::{self, Bitness, SyscallInsn, VsyscallSite};
use sentry::KernelVersion;

/// SHF_EXECINSTR.
const SHF_EXECINSTR: u64 = 0x4;
/// PF_X.
const PF_X: u32 = 0x1;
/// The start of glibc's banner in libc.so.6.
const GLIBC_BANNER: &[u8] = b"GNU C Library ";

/// What a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A position-dependent executable (ET_EXEC).
    Executable,
    /// A position-independent executable (ET_DYN with an interpreter).
    Pie,
    /// A shared library (ET_DYN without an interpreter).
    SharedLibrary,
    /// A relocatable object (ET_REL).
    Object,
    /// Anything else (a core file).
    Other,
}

/// What the scan learnt about one ELF file.
#[derive(Clone, Debug)]
pub struct ElfReport {
    /// The path as shown (relative to the tree for tree scans).
    pub path: PathBuf,
    /// 32 or 64-bit code.
    pub bitness: Bitness,
    /// Executable, library, ...
    pub kind: Kind,
    /// PT_INTERP, if any (a static executable has none).
    pub interpreter: Option<String>,
    /// The highest NT_GNU_ABI_TAG: the oldest kernel the file says it runs on.
    pub abi_note: Option<KernelVersion>,
    /// Whether it carries glibc's start-up kernel check (a pre-2.35 loader or static
    /// glibc program).
    pub checks_kernel: bool,
    /// glibc's banner, if this is a libc.so.6 ("GNU C Library (Debian EGLIBC
    /// 2.13-38+deb7u10) stable release version 2.13").
    pub glibc_banner: Option<String>,
    /// Bytes of code swept.
    pub code_bytes: u64,
    /// Sites per (ABI, call number; `None` = unresolved).
    pub calls: BTreeMap<(Arch, Option<u32>), u32>,
    /// Sites per instruction kind.
    pub insns: BTreeMap<SyscallInsn, u32>,
    /// References to the vsyscall page.
    pub vsyscalls: Vec<VsyscallSite>,
    /// Bytes inside code that did not decode.
    pub invalid_bytes: u64,
}

impl ElfReport {
    /// System-call sites whose call number the sweep could not tell.
    pub fn unresolved(&self) -> u32 {
        self.calls
            .iter()
            .filter(|((_, nr), _)| nr.is_none())
            .map(|(_, &n)| n)
            .sum()
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// open, stat or mmap failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It starts like ELF but does not parse.
    #[error("corrupt ELF: {0}")]
    Corrupt(String),
    /// An ELF file for another machine.
    #[error("ELF for {0}, not x86")]
    NotX86(String),
}

/// Reads `path` (shown as `shown`): `Ok(None)` when it is not an x86 ELF file.
pub fn read(path: &Path, shown: PathBuf) -> Result<Option<ElfReport>, FileError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 4];
    if f.read(&mut magic)? < 4 || &magic != b"\x7fELF" {
        return Ok(None);
    }
    let map = platform::sys::map::ReadOnlyMap::new(&f)?;
    analyse(&map, shown).map(Some)
}

/// Analyses an ELF image.
pub fn analyse(data: &[u8], shown: PathBuf) -> Result<ElfReport, FileError> {
    let file = object::File::parse(data).map_err(|e| FileError::Corrupt(e.to_string()))?;
    let bitness = match file.architecture() {
        object::Architecture::X86_64 => Bitness::Bits64,
        object::Architecture::I386 => Bitness::Bits32,
        other => return Err(FileError::NotX86(format!("{other:?}"))),
    };
    let interpreter = file
        .section_by_name(".interp")
        .and_then(|s| s.data().ok())
        .map(|d| String::from_utf8_lossy(d.split(|&b| b == 0).next().unwrap_or(d)).into_owned());
    let kind = match file.kind() {
        ObjectKind::Executable => Kind::Executable,
        // glibc's libc.so.6 and libpthread have an interpreter too (they run).
        ObjectKind::Dynamic if interpreter.is_some() && !is_library_name(&shown) => Kind::Pie,
        ObjectKind::Dynamic => Kind::SharedLibrary,
        ObjectKind::Relocatable => Kind::Object,
        _ => Kind::Other,
    };
    // Loadable file contents by address, for constants that calls go through.
    let loads: Vec<(u64, &[u8])> = file
        .segments()
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .collect();
    let read_const = |addr: u64| -> Option<u64> {
        loads.iter().find_map(|&(base, bytes)| {
            let off = usize::try_from(addr.checked_sub(base)?).ok()?;
            let b: [u8; 8] = bytes.get(off..off.checked_add(8)?)?.try_into().ok()?;
            Some(u64::from_le_bytes(b))
        })
    };

    // Code: the executable sections, or without section headers the executable
    // segments.
    let mut code: Vec<(u64, &[u8])> = file
        .sections()
        .filter(|s| matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & SHF_EXECINSTR != 0))
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    if code.is_empty() && file.sections().next().is_none() {
        code = file
            .segments()
            .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
    }

    let mut report = ElfReport {
        path: shown,
        bitness,
        kind,
        interpreter,
        abi_note: sentry::handlers::too_old::abi_tag(data),
        checks_kernel: sentry::handlers::too_old::carries_check(data),
        glibc_banner: glibc_banner(data),
        code_bytes: 0,
        calls: BTreeMap::new(),
        insns: BTreeMap::new(),
        vsyscalls: Vec::new(),
        invalid_bytes: 0,
    };
    for (addr, bytes) in code {
        report.code_bytes += bytes.len() as u64;
        let found = x86::sweep(bytes, addr, bitness, &read_const);
        for s in &found.syscalls {
            *report.calls.entry((s.arch, s.nr)).or_default() += 1;
            *report.insns.entry(s.insn).or_default() += 1;
        }
        report.vsyscalls.extend(found.vsyscalls);
        report.invalid_bytes += found.invalid_bytes;
    }
    Ok(report)
}

/// Whether a file's name says it is a shared library (`libc-2.13.so`, `libz.so.1`).
fn is_library_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".so") || n.contains(".so."))
}

/// glibc's banner line, if `data` holds one.
fn glibc_banner(data: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(data, GLIBC_BANNER)?;
    let rest = &data[at..data.len().min(at + 200)];
    let end = rest
        .iter()
        .position(|&b| b == 0 || b == b'\n' || b == b',')
        .unwrap_or(rest.len());
    let line = String::from_utf8_lossy(&rest[..end])
        .trim_end_matches('.')
        .to_owned();
    line.contains("version").then_some(line)
}

/// The version at the end of a glibc banner ("... release version 2.13" is 2.13).
pub fn glibc_version(banner: &str) -> Option<(u32, u32)> {
    let v = banner.rsplit("version ").next()?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_banners() {
        let b = b"xx\0GNU C Library (Debian EGLIBC 2.13-38+deb7u10) stable release version 2.13, by Roland\0";
        let banner = glibc_banner(b).expect("found");
        assert_eq!(
            banner,
            "GNU C Library (Debian EGLIBC 2.13-38+deb7u10) stable release version 2.13"
        );
        assert_eq!(glibc_version(&banner), Some((2, 13)));
        let new = "GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36";
        assert_eq!(glibc_version(new), Some((2, 36)));
        assert_eq!(glibc_banner(b"GNU C Library \0"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(40, 0xff);
        assert!(analyse(&elf, "x".into()).is_err());
        assert!(analyse(b"\x7fELF", "x".into()).is_err());
    }
}
