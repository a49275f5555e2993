//! Whether an address in a process is the entry of a function its mapped ELF file
//! exports (a defined, global or weak function in the dynamic symbol table): the only
//! places where an emulated call's wrapper is patched, since at a function's entry the
//! red zone below the stack pointer holds nothing live and the pushed return address
//! clobbers nothing.
//!
//! The file is the one the mapping names in `/proc/PID/maps`, read through
//! `/proc/PID/root` (the guest's own view of the path); the answer is cached by the
//! file's device, inode, size and modification time, and by address within the file.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// Files larger than this are not read (a C library is a few MiB).
const MAX_FILE: u64 = 64 << 20;

/// Answers cached across processes of one run.
#[derive(Debug, Default)]
pub struct Exports {
    /// (device, inode, size, mtime, address in the file) → exported function entry?
    known: HashMap<(u64, u64, u64, i64, u64), bool>,
}

/// One line of `/proc/PID/maps`, the parts needed here.
struct Mapping {
    lo: u64,
    offset: u64,
    path: String,
}

impl Exports {
    /// Whether `addr` in process `tgid` is an exported function's first byte.
    pub fn is_entry(&mut self, tgid: i32, addr: u64) -> bool {
        let Some(map) = mapping_of(tgid, addr) else {
            return false;
        };
        let file = format!("/proc/{tgid}/root{}", map.path);
        let Ok(meta) = std::fs::metadata(&file) else {
            return false;
        };
        if !meta.is_file() || meta.len() > MAX_FILE {
            return false;
        }
        let Some(file_offset) = (addr - map.lo).checked_add(map.offset) else {
            return false;
        };
        let key = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            file_offset,
        );
        if let Some(&known) = self.known.get(&key) {
            return known;
        }
        let answer = std::fs::read(&file)
            .ok()
            .is_some_and(|data| exported_at_offset(&data, file_offset));
        self.known.insert(key, answer);
        answer
    }
}

/// The file mapping holding `addr` in `tgid`, if it is one with an absolute path.
fn mapping_of(tgid: i32, addr: u64) -> Option<Mapping> {
    let maps = std::fs::read_to_string(format!("/proc/{tgid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        if !(lo <= addr && addr < hi) {
            return None;
        }
        let _perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let _dev = f.next()?;
        let _inode = f.next()?;
        // The rest of the line is the path; a deleted file or a pseudo-mapping is not
        // looked at.
        let path = f.collect::<Vec<_>>().join(" ");
        (path.starts_with('/') && !path.ends_with(" (deleted)")).then_some(Mapping {
            lo,
            offset,
            path,
        })
    })
}

/// Whether file offset `off` of the ELF image `data` lies in a loaded segment at the
/// address of a defined global function of its dynamic symbol table.
pub fn exported_at_offset(data: &[u8], off: u64) -> bool {
    let Ok(file) = object::File::parse(data) else {
        return false;
    };
    let Some(vaddr) = file.segments().find_map(|s| {
        let (start, size) = s.file_range();
        (start <= off && off < start.saturating_add(size))
            .then(|| s.address().checked_add(off - start))
            .flatten()
    }) else {
        return false;
    };
    file.dynamic_symbols().any(|sym| {
        sym.address() == vaddr
            && sym.kind() == SymbolKind::Text
            && sym.is_definition()
            && sym.is_global()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_c_library_exports_uname_at_its_symbol_and_not_one_byte_on() {
        let Some(path) = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            eprintln!("SKIPPED: no x86_64 C library at a known path");
            return;
        };
        let data = std::fs::read(path).expect("read libc");
        let file = object::File::parse(&*data).expect("an ELF file");
        let uname = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok("uname"))
            .expect("uname in the dynamic symbols");
        let seg = file
            .segments()
            .find(|s| s.address() <= uname.address() && uname.address() < s.address() + s.size())
            .expect("a segment holding uname");
        let off = seg.file_range().0 + (uname.address() - seg.address());
        assert!(exported_at_offset(&data, off));
        assert!(!exported_at_offset(&data, off + 1));
        assert!(!exported_at_offset(b"not an ELF file", 0));
    }
}
