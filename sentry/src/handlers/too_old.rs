//! Saying why a guest stopped with "FATAL: kernel too old".
//!
//! glibc's loader before 2.35 refuses to start on a kernel older than the minimum it was
//! built for (its NT_GNU_ABI_TAG), printing "FATAL: kernel too old" and exiting 127. Under
//! a persona that is the persona's doing, so compatrun adds one line naming it. After each
//! exec the new image's loader (PT_INTERP, or the program itself when static) is looked
//! at once per file: whether it is a checking glibc (it carries that message) and what
//! it requires. If the persona is older, that loader will refuse to start, and when the
//! process then ends unsuccessfully the line is printed.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::elf::{self, u16_at, u32_at, u64_at};
use crate::version::KernelVersion;

/// What one loader file requires: `Some(min)` if it checks and needs more than the
/// persona (`None` also where it needs no more, checking or not).
type Verdict = Option<KernelVersion>;

/// Remembers loaders already examined and processes that may stop for this reason.
#[derive(Debug, Default)]
pub struct TooOld {
    /// (path, inode, mtime) of a loader → what it requires.
    seen: HashMap<(PathBuf, u64, i64), Verdict>,
    /// Processes whose loader requires more than the persona: loader path, requirement.
    at_risk: HashMap<i32, Risk>,
    /// Programs already looked at, by their file and the root they ran in → the same
    /// answer, so that a program run again costs two `stat`s (a shell loop execs the
    /// same few programs thousands of times, and the guest waits for this).
    programs: HashMap<ProgramKey, Look>,
    /// Loaders (and static programs) by (device, inode, mtime) → whether they check.
    checking: HashMap<(u64, u64, i64), bool>,
}

/// What is known of one program.
#[derive(Clone, Debug)]
struct Look {
    /// Its C library compares the kernel's version at start-up (reads the vDSO note).
    checks: bool,
    /// It will refuse the persona.
    risk: Option<Risk>,
}

/// A loader (as the guest names it) and the kernel it requires.
type Risk = (PathBuf, KernelVersion);

/// A program file and the root it ran in: (device, inode, mtime, size) of the file,
/// (device, inode) of the root.
pub(crate) type ProgramKey = (u64, u64, i64, u64, u64, u64);

/// How many programs are remembered at most (a guest running more just starts over).
const MAX_PROGRAMS: usize = 4096;

/// The key of a program file (`file`) seen in a root (`root`).
pub(crate) fn key_of(file: &std::fs::Metadata, root: &std::fs::Metadata) -> ProgramKey {
    use std::os::unix::fs::MetadataExt;
    (
        file.dev(),
        file.ino(),
        file.mtime(),
        file.size(),
        root.dev(),
        root.ino(),
    )
}

/// Keeps `value` for `key` in a table of programs, which starts over when full.
pub(crate) fn remember<V>(table: &mut HashMap<ProgramKey, V>, key: ProgramKey, value: V) {
    if table.len() >= MAX_PROGRAMS {
        table.clear();
    }
    table.insert(key, value);
}

/// The cache key of `tid`'s program, from `/proc/TID/exe` and `/proc/TID/root`.
fn program_key(exe: &std::path::Path, root: &std::path::Path) -> Option<ProgramKey> {
    let file = std::fs::metadata(exe).ok()?;
    let dir = std::fs::metadata(root).ok()?;
    Some(key_of(&file, &dir))
}

const NT_GNU_ABI_TAG: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const MESSAGE: &[u8] = b"FATAL: kernel too old";

/// Program headers of an ELF file image: (type, offset, size).
fn segments(image: &[u8]) -> Option<Vec<(u32, usize, usize)>> {
    if image.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is64 = *image.get(4)? == 2;
    let (phoff, phentsize, phnum) = if is64 {
        (
            usize::try_from(u64_at(image, 0x20)?).ok()?,
            u16_at(image, 0x36)?,
            u16_at(image, 0x38)?,
        )
    } else {
        (
            usize::try_from(u32_at(image, 0x1c)?).ok()?,
            u16_at(image, 0x2a)?,
            u16_at(image, 0x2c)?,
        )
    };
    let mut out = Vec::new();
    for i in 0..usize::from(phnum.min(64)) {
        let ph = phoff.checked_add(i.checked_mul(usize::from(phentsize))?)?;
        let (t, off, size) = if is64 {
            (
                u32_at(image, ph)?,
                u64_at(image, ph + 8)?,
                u64_at(image, ph + 0x20)?,
            )
        } else {
            (
                u32_at(image, ph)?,
                u64::from(u32_at(image, ph + 4)?),
                u64::from(u32_at(image, ph + 0x10)?),
            )
        };
        out.push((t, usize::try_from(off).ok()?, usize::try_from(size).ok()?));
    }
    Some(out)
}

/// The highest NT_GNU_ABI_TAG (OS 0, Linux) in the file's PT_NOTE segments.
pub fn abi_tag(image: &[u8]) -> Option<KernelVersion> {
    let mut best: Option<KernelVersion> = None;
    for (t, off, size) in segments(image)? {
        if t != PT_NOTE {
            continue;
        }
        let notes = image.get(off..off.checked_add(size)?)?;
        for note in elf::notes(notes) {
            if note.name != b"GNU\0" || note.kind != NT_GNU_ABI_TAG {
                continue;
            }
            let word = |k: usize| u32_at(note.desc, 4 * k);
            if word(0) == Some(0) {
                let v = KernelVersion::new(
                    u16::try_from(word(1)?).ok()?,
                    u16::try_from(word(2)?).ok()?,
                    u16::try_from(word(3)?).ok()?,
                );
                best = best.max(Some(v));
            }
        }
    }
    best
}

/// The PT_INTERP path of an executable image, if it has one.
pub(crate) fn interpreter(image: &[u8]) -> Option<PathBuf> {
    let (_, off, size) = segments(image)?
        .into_iter()
        .find(|(t, _, _)| *t == PT_INTERP)?;
    let raw = image.get(off..off.checked_add(size)?)?;
    let raw = raw.split(|&b| b == 0).next()?;
    Some(PathBuf::from(std::ffi::OsStr::new(
        std::str::from_utf8(raw).ok()?,
    )))
}

/// `path` as the guest sees it, for reading from here: symbolic links (absolute ones
/// included) are followed inside `root` (the guest's /proc/TID/root), never outside it.
fn resolve_in_root(root: &std::path::Path, path: &std::path::Path) -> Option<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        let inside = root.join(current.strip_prefix("/").unwrap_or(&current));
        let meta = std::fs::symlink_metadata(&inside).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(inside);
        }
        let target = std::fs::read_link(&inside).ok()?;
        current = if target.is_absolute() {
            target
        } else {
            current
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .join(target)
        };
    }
    None
}

/// Where a dynamically linked guest's C library usually is (the loader compares with
/// the minimum it was built for, which glibc records as the C library's ABI tag; the
/// loader itself often carries none).
const LIBC_PATHS: [&str; 6] = [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/lib/i386-linux-gnu/libc.so.6",
    "/lib/libc.so.6",
    "/usr/lib/libc.so.6",
];

/// Whether an ELF image carries glibc's "kernel too old" check (its message). A loader
/// or static binary is megabytes: a vectorised search keeps this off the exec path.
pub fn carries_check(data: &[u8]) -> bool {
    memchr::memmem::find(data, MESSAGE).is_some()
}

/// The minimum kernel `path`'s loader (or static program) will insist on, if it exceeds
/// `persona` and the loader checks at all. The minimum comes first, from the ABI tag in
/// the first pages of the loader or of its C library; only a minimum above the persona
/// needs the whole loader searched for the check (a static program is megabytes, and
/// under an emulated CPU reading it at every new program was a visible part of a run).
fn examine(path: &std::path::Path, root: &std::path::Path, persona: KernelVersion) -> Verdict {
    let head = read_head(path, 64 * 1024)?;
    let min = abi_tag(&head).or_else(|| {
        // Same ELF class as the loader.
        let class = head.get(4).copied();
        LIBC_PATHS.iter().find_map(|p| {
            let path = resolve_in_root(root, std::path::Path::new(p))?;
            let head = read_head(&path, 64 * 1024)?;
            if head.get(4).copied() != class {
                return None;
            }
            // The ABI tag note sits near the start of a libc; a file laid out otherwise
            // is read whole.
            abi_tag(&head).or_else(|| abi_tag(&read_whole(&path)?))
        })
    })?;
    if min <= persona {
        return None; // nothing to refuse, whether it checks or not
    }
    // glibc 2.35+ (or not glibc) has no check.
    carries_check(&read_whole(path)?).then_some(min)
}

/// Up to the first `len` bytes of the regular file at `path`.
fn read_head(path: &std::path::Path, len: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    open_regular(path)?.take(len).read_to_end(&mut head).ok()?;
    Some(head)
}

/// The whole regular file at `path`.
fn read_whole(path: &std::path::Path) -> Option<Vec<u8>> {
    read_head(path, u64::MAX)
}

/// `path` opened for reading if it is a regular file. The guest names these files and
/// can swap them: a FIFO or a device must neither block compatrun (non-blocking open)
/// nor become its terminal (no controlling tty), and is never read.
pub(crate) fn open_regular(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// Whether `program` (a path inside `root`, the guest's `/`) or the loader it names
/// still compares the kernel's version with its own minimum at start-up (glibc before
/// 2.35, static or dynamic). Such a program reads the version from the vDSO's note, which
/// only a platform that sees exec events can rewrite. Unreadable files count as "no".
pub fn checks_kernel_version(root: &std::path::Path, program: &std::path::Path) -> bool {
    let has_check = |path: &std::path::Path| {
        resolve_in_root(root, path)
            .and_then(|p| read_whole(&p))
            .map(|data| {
                let checks = carries_check(&data);
                (checks, interpreter(&data))
            })
    };
    match has_check(program) {
        Some((true, _)) => true,
        Some((false, Some(loader))) => has_check(&loader).is_some_and(|(c, _)| c),
        _ => false,
    }
}

impl TooOld {
    /// After `tid`'s exec: note whether its loader will refuse `persona`'s version, and
    /// say whether the new program's C library compares the kernel's version at
    /// start-up, reading the vDSO's note (true where that cannot be told).
    pub fn execed(&mut self, tid: i32, persona: KernelVersion) -> bool {
        self.at_risk.remove(&tid);
        let exe = PathBuf::from(format!("/proc/{tid}/exe"));
        let root = PathBuf::from(format!("/proc/{tid}/root"));
        let key = program_key(&exe, &root);
        let look = match key.and_then(|k| self.programs.get(&k)) {
            Some(known) => Some(known.clone()),
            None => {
                // A look that could not be made (the process already gone) is not kept.
                let looked = self.look_at(&exe, &root, persona);
                if let (Some(k), Some(look)) = (key, &looked) {
                    remember(&mut self.programs, k, look.clone());
                }
                looked
            }
        };
        let Some(look) = look else {
            return true;
        };
        if let Some(risk) = look.risk {
            self.at_risk.insert(tid, risk);
        }
        look.checks
    }

    /// What is known of the program at `exe` (run in `root`): whether its loader (or
    /// itself, when static) checks the kernel's version, and its requirement if that
    /// exceeds `persona`; `None` if the program or its loader could not be read.
    fn look_at(
        &mut self,
        exe: &std::path::Path,
        root: &std::path::Path,
        persona: KernelVersion,
    ) -> Option<Look> {
        use std::os::unix::fs::MetadataExt;
        // Only the first pages matter for PT_INTERP.
        let head = {
            let f = open_regular(exe)?;
            let mut buf = vec![0u8; 8192];
            let n = std::io::Read::read(&mut &f, &mut buf).unwrap_or(0);
            buf.truncate(n);
            buf
        };
        let (loader, shown) = match interpreter(&head) {
            Some(interp) => (resolve_in_root(root, &interp)?, interp),
            None => (
                exe.to_path_buf(),
                std::fs::read_link(exe).unwrap_or(exe.to_path_buf()),
            ),
        };
        let meta = std::fs::metadata(&loader).ok()?;
        let checks = *self
            .checking
            .entry((meta.dev(), meta.ino(), meta.mtime()))
            .or_insert_with(|| read_whole(&loader).is_none_or(|d| carries_check(&d)));
        if !checks {
            return Some(Look { checks, risk: None });
        }
        let key = (shown.clone(), meta.ino(), meta.mtime());
        let verdict = *self
            .seen
            .entry(key)
            .or_insert_with(|| examine(&loader, root, persona));
        let risk = verdict.filter(|min| *min > persona).map(|min| (shown, min));
        Some(Look { checks, risk })
    }

    /// `tid` executes a program that is not looked at: nothing is known of it.
    pub fn forget(&mut self, tid: i32) {
        self.at_risk.remove(&tid);
    }

    /// `tid` exited with `code`: the line to print, if its loader refused the persona
    /// (a checking loader that requires more always refuses; it exits non-zero: glibc's
    /// usual 127, eglibc 2.13's 1).
    pub fn exited(
        &mut self,
        tid: i32,
        code: Option<i32>,
        persona: &str,
        version: KernelVersion,
    ) -> Option<String> {
        let (loader, min) = self.at_risk.remove(&tid)?;
        (code != Some(0)).then(|| {
            format!(
                "the C library in {} needs Linux {min} or newer, but persona {persona} \
                 is Linux {version}: that is why it stopped with \"FATAL: kernel too old\"; \
                 choose a newer persona",
                loader.display()
            )
        })
    }
}
