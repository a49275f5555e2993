//! `_sysctl(2)` (x86_64 156, i386 149), removed from Linux in 5.5, for personas whose
//! kernel had it, done the way that kernel did it (kernel/sysctl_binary.c): the binary
//! name vector is looked up in a reviewed table (`data/sysctl_binary.tbl`), the matching
//! /proc/sys file is read or written, and its text is converted to or from the binary
//! form the table names. Error codes are the old kernel's: ENOTDIR for a name it does
//! not know, EFAULT for bad pointers, the file's own errors (EACCES, EPERM, ENOENT).
//!
//! The guest's view is used: files are reached through /proc/TID/root, and the persona's
//! own identity files (kernel.osrelease, kernel.version) answer with the persona's text
//! even where the guest has no private /proc. Reading needs the file readable by others
//! or a guest euid of 0; writing needs euid 0 (the supervisor's own rights are never
//! lent to the guest). net.* values are those of compatrun's network namespace.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;

use platform::{Arch, GuestThread, Syscall, Verdict};

/// The table as shipped.
pub const BUILTIN: &str = include_str!("../../data/sysctl_binary.tbl");

/// `CTL_MAXNAME`: the longest name vector the kernel accepted (exclusive).
const CTL_MAXNAME: i64 = 10;
/// The kernel's read buffer for numeric conversions (`BUFSZ - 1`).
const NUMERIC_READ: usize = 255;
/// The most a guest may write through one call.
const MAX_WRITE: u64 = 64 * 1024;

/// How a value travels between the text in /proc/sys and the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// Bytes as they are, without the trailing newline.
    String,
    /// An array of C `int` (written as unsigned).
    IntVec,
    /// An array of C `unsigned long`.
    ULongVec,
    /// 16 raw bytes from the text UUID.
    Uuid,
    /// A DECnet node address (not emulated: answers ENOTDIR).
    DnNodeAddress,
}

/// The parsed table: name vector → (path under /proc/sys, conversion).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysctlTable {
    entries: HashMap<Vec<i32>, (String, Conversion)>,
}

impl SysctlTable {
    /// Parses `VECTOR PATH CONVERSION [# note]` lines.
    pub fn parse(text: &str) -> Result<Self, crate::table::TableError> {
        let mut entries = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |what: String| crate::table::TableError { line: i + 1, what };
            let data = raw.split('#').next().unwrap_or("");
            let cols: Vec<&str> = data.split_whitespace().collect();
            if cols.is_empty() {
                continue;
            }
            let [vector, path, conv] = cols[..] else {
                return Err(err(format!("expected 3 columns, found {}", cols.len())));
            };
            let name = vector
                .split('.')
                .map(str::parse::<i32>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| err(format!("bad name vector {vector:?}")))?;
            let conv = match conv {
                "string" => Conversion::String,
                "intvec" => Conversion::IntVec,
                "ulongvec" => Conversion::ULongVec,
                "uuid" => Conversion::Uuid,
                "dn_node_address" => Conversion::DnNodeAddress,
                other => return Err(err(format!("unknown conversion {other:?}"))),
            };
            if path.contains("..") || path.starts_with('/') {
                return Err(err(format!("bad path {path:?}")));
            }
            if entries.insert(name, (path.to_owned(), conv)).is_some() {
                return Err(err(format!("{vector} is listed twice")));
            }
        }
        Ok(SysctlTable { entries })
    }

    /// The built-in table.
    pub fn builtin() -> Result<Self, crate::table::TableError> {
        Self::parse(BUILTIN)
    }

    /// The built-in table, parsed on first use: only a guest that calls `_sysctl` needs
    /// it, and parsing its 80 kB at every start would cost every run (a unit test
    /// checks that it parses; were it not to, every name would be unknown).
    pub fn shared() -> &'static Self {
        static TABLE: std::sync::OnceLock<SysctlTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            Self::builtin().unwrap_or_else(|e| {
                log::error!("the built-in _sysctl table: {e}");
                SysctlTable::default()
            })
        })
    }

    /// The entry for a name vector. Like the kernel, the first leaf on the way wins and
    /// components after it are ignored (`1.2.99` reads kernel.osrelease).
    pub fn lookup(&self, name: &[i32]) -> Option<(&str, Conversion)> {
        (1..=name.len())
            .find_map(|k| self.entries.get(&name[..k]))
            .map(|(p, c)| (p.as_str(), *c))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn errno(e: i32) -> Verdict {
    Verdict::errno(e)
}

/// Reads a pointer-sized or int-sized little-endian field.
fn field(buf: &[u8], off: usize, size: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(&buf[off..off + size]);
    u64::from_le_bytes(v)
}

/// The guest thread's effective uid, from /proc/TID/status.
fn euid(tid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `simple_strtoul(s, &end, 10)`: leading decimal digits (none: 0), wrapping.
fn strtoul(s: &[u8]) -> (u64, usize) {
    let mut v: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add(u64::from(s[i] - b'0'));
        i += 1;
    }
    (v, i)
}

/// The numeric vector conversion of the kernel's bin_intvec/bin_ulongvec.
pub fn numbers_to_binary(text: &[u8], max_items: usize, width: usize) -> Vec<u8> {
    let text = &text[..text.len().min(NUMERIC_READ)];
    let mut out = Vec::new();
    let mut pos = 0;
    for _ in 0..max_items {
        let (value, used) = strtoul(&text[pos..]);
        pos += used;
        while pos < text.len() && text[pos].is_ascii_whitespace() {
            pos += 1;
        }
        out.extend_from_slice(&value.to_le_bytes()[..width]);
        if !text.get(pos).is_some_and(u8::is_ascii_digit) {
            break;
        }
    }
    out
}

/// The kernel's uuid_parse: 36 characters, hex with dashes at 8, 13, 18, 23.
pub fn parse_uuid(text: &[u8]) -> Option<[u8; 16]> {
    let t = text.get(..36)?;
    let mut out = [0u8; 16];
    let mut k = 0;
    let mut i = 0;
    while i < 36 {
        if [8, 13, 18, 23].contains(&i) {
            if t[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        out[k] = u8::try_from(hex(t[i])? * 16 + hex(t[i + 1])?).ok()?;
        k += 1;
        i += 2;
    }
    Some(out)
}

/// Handles a caught `_sysctl`. `synthetic` are the persona's own /proc files.
pub fn handle<G: GuestThread>(
    g: &mut G,
    call: &Syscall,
    table: &SysctlTable,
    synthetic: &[(OsString, Vec<u8>)],
) -> Verdict {
    let efault = || errno(libc::EFAULT);
    // struct __sysctl_args: name, nlen, oldval, oldlenp, newval, newlen (+ unused).
    let (ptr, args_len) = if call.arch == Arch::X86_64 {
        (8, 48)
    } else {
        (4, 24)
    };
    let mut args = [0u8; 48];
    if g.read_mem(call.args[0], &mut args[..args_len]).is_err() {
        return efault();
    }
    let name_ptr = field(&args, 0, ptr);
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // nlen is a C int
    let nlen = i64::from(field(&args, ptr, 4) as u32 as i32);
    let oldval = field(&args, 2 * ptr, ptr);
    let oldlenp = field(&args, 3 * ptr, ptr);
    let newval = field(&args, 4 * ptr, ptr);
    let newlen = field(&args, 5 * ptr, ptr);
    if oldval != 0 && oldlenp == 0 {
        return efault();
    }
    let mut oldlen: u64 = 0;
    if oldlenp != 0 {
        let mut b = [0u8; 8];
        if g.read_mem(oldlenp, &mut b[..ptr]).is_err() {
            return efault();
        }
        oldlen = u64::from_le_bytes(b);
    }
    if nlen <= 0 || nlen >= CTL_MAXNAME {
        return errno(libc::ENOTDIR);
    }
    let n = usize::try_from(nlen).unwrap_or(0);
    let mut raw = vec![0u8; 4 * n];
    if g.read_mem(name_ptr, &mut raw).is_err() {
        return efault();
    }
    let name: Vec<i32> = raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let Some((path, conv)) = table.lookup(&name) else {
        return errno(libc::ENOTDIR);
    };
    if conv == Conversion::DnNodeAddress {
        return errno(libc::ENOTDIR);
    }
    let reading = oldval != 0 && oldlen != 0;
    let writing = newval != 0 && newlen != 0;
    let copied = if reading || writing {
        match transfer(
            g,
            path,
            conv,
            (reading, oldval, oldlen),
            (writing, newval, newlen),
            synthetic,
        ) {
            Ok(c) => c,
            Err(e) => return errno(e),
        }
    } else {
        0
    };
    if oldlenp != 0 && g.write_mem(oldlenp, &copied.to_le_bytes()[..ptr]).is_err() {
        return efault();
    }
    Verdict::Return(0)
}

/// Reads and/or writes the value; the number of bytes given to the caller.
fn transfer<G: GuestThread>(
    g: &mut G,
    path: &str,
    conv: Conversion,
    (reading, oldval, oldlen): (bool, u64, u64),
    (writing, newval, newlen): (bool, u64, u64),
    synthetic: &[(OsString, Vec<u8>)],
) -> Result<u64, i32> {
    let tid = g.tid();
    let root_euid = euid(tid) == Some(0);
    let proc_path = format!("/proc/sys/{path}");
    let own = synthetic
        .iter()
        .find(|(p, _)| *p == *proc_path)
        .map(|(_, d)| d.clone());
    let file = format!("/proc/{tid}/root{proc_path}");
    let meta = std::fs::metadata(&file).map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
    let mode = meta.permissions().mode();
    // Opening for writing (as the kernel did first) fails on read-only entries.
    if writing && (mode & 0o222 == 0 || own.is_some()) {
        return Err(libc::EACCES);
    }
    if writing && !root_euid {
        return Err(if mode & 0o002 == 0 {
            libc::EACCES
        } else {
            libc::EPERM
        });
    }
    if reading && !root_euid && mode & 0o004 == 0 {
        return Err(libc::EACCES);
    }
    let mut copied = 0u64;
    if reading {
        let text = match own {
            Some(d) => d,
            None => std::fs::read(&file).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?,
        };
        let max = usize::try_from(oldlen).unwrap_or(usize::MAX);
        // `unsigned long` of the kernel: 8 bytes for every caller of an x86_64 kernel.
        let width = 8;
        let mut out = match conv {
            Conversion::String => text[..text.len().min(max)].to_vec(),
            Conversion::IntVec => numbers_to_binary(&text, max / 4, 4),
            Conversion::ULongVec => numbers_to_binary(&text, max / width, width),
            Conversion::Uuid => {
                let uuid = parse_uuid(&text).ok_or(libc::EIO)?;
                uuid[..16.min(max)].to_vec()
            }
            Conversion::DnNodeAddress => return Err(libc::ENOTDIR),
        };
        let mut len = out.len();
        if conv == Conversion::String && out.last() == Some(&b'\n') {
            // The kernel turned the trailing newline into a NUL it did not count.
            if let Some(last) = out.last_mut() {
                *last = 0;
            }
            len -= 1;
        }
        g.write_mem(oldval, &out).map_err(|_| libc::EFAULT)?;
        out.clear();
        copied = u64::try_from(len).unwrap_or(0);
    }
    if writing {
        if newlen > MAX_WRITE {
            return Err(libc::EINVAL);
        }
        let mut data = vec![0u8; usize::try_from(newlen).map_err(|_| libc::EINVAL)?];
        g.read_mem(newval, &mut data).map_err(|_| libc::EFAULT)?;
        let text = match conv {
            Conversion::IntVec | Conversion::ULongVec => {
                let width = if conv == Conversion::IntVec { 4 } else { 8 };
                data.chunks_exact(width)
                    .map(|c| {
                        let mut v = [0u8; 8];
                        v[..width].copy_from_slice(c);
                        format!("{}\t", u64::from_le_bytes(v))
                    })
                    .collect::<String>()
                    .into_bytes()
            }
            _ => data,
        };
        std::fs::write(&file, text).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_knows_the_classic_names() {
        let t = SysctlTable::builtin().expect("valid table");
        assert!(t.len() > 50, "{} entries", t.len());
        assert_eq!(
            t.lookup(&[1, 2]),
            Some(("kernel/osrelease", Conversion::String))
        );
        assert_eq!(
            t.lookup(&[1, 4]),
            Some(("kernel/version", Conversion::String))
        );
        assert_eq!(
            t.lookup(&[1, 40, 6]),
            Some(("kernel/random/uuid", Conversion::Uuid))
        );
        assert!(t.lookup(&[1, 9999]).is_none());
        assert_eq!(
            t.lookup(&[1, 2, 99]),
            Some(("kernel/osrelease", Conversion::String))
        );
    }

    #[test]
    fn conversions_follow_the_kernel() {
        let v = numbers_to_binary(b"4\t4\t1\t7\n", 4, 4);
        assert_eq!(
            v,
            [4u32, 4, 1, 7]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
        );
        assert_eq!(numbers_to_binary(b"4\t4\t1\t7\n", 2, 4).len(), 8);
        assert_eq!(numbers_to_binary(b"-1\n", 4, 4), vec![0, 0, 0, 0]);
        let u = parse_uuid(b"0123abcd-4567-89ef-0123-456789abcdef\n").expect("uuid");
        assert_eq!(u[0], 0x01);
        assert_eq!(u[15], 0xef);
        assert!(parse_uuid(b"not a uuid").is_none());
        assert!(SysctlTable::parse("1.2 kernel/osrelease frob").is_err());
        assert!(SysctlTable::parse("1.x kernel/osrelease string").is_err());
        assert!(SysctlTable::parse("1.2 ../etc/shadow string").is_err());
    }
}
