//! The reviewed table of system calls: when each appeared on x86_64 and i386, and when
//! it was removed. The data is `data/syscalls.tbl`, compiled in; names resolve to numbers
//! through the `syscalls` crate, so the table carries facts about history only.

use std::str::FromStr;

use platform::Arch;

use crate::version::KernelVersion;

/// The table as shipped.
pub const BUILTIN: &str = include_str!("../data/syscalls.tbl");

/// When a call stopped existing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Still present in the newest kernel.
    No,
    /// Answers ENOSYS from this version on.
    In(KernelVersion),
    /// The number is reserved but never implemented in any kernel we model.
    Never,
}

/// One system call's history on the two ABIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name, as `man 2 syscalls` and the `syscalls` crate spell it.
    pub name: String,
    /// Number and first version on x86_64 (x32 uses the same number, with the x32 bit).
    pub x86_64: Option<(u32, KernelVersion)>,
    /// Number and first version on i386.
    pub i386: Option<(u32, KernelVersion)>,
    /// Removal.
    pub removed: Removal,
    /// The reviewer's note, if any.
    pub note: String,
    /// Line in the data file (for messages).
    pub line: usize,
}

impl Entry {
    /// This entry's number and first version on `arch`.
    pub fn on(&self, arch: Arch) -> Option<(u32, KernelVersion)> {
        match arch {
            Arch::X86_64 | Arch::X32 => self.x86_64,
            Arch::I386 => self.i386,
        }
    }

    /// Whether a kernel of version `v` had this call on `arch`.
    pub fn exists_in(&self, arch: Arch, v: KernelVersion) -> bool {
        let Some((_, added)) = self.on(arch) else {
            return false;
        };
        added <= v
            && match self.removed {
                Removal::No => true,
                Removal::In(gone) => v < gone,
                Removal::Never => false,
            }
    }
}

/// A problem in the table data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("syscall table line {line}: {what}")]
pub struct TableError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// The parsed table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallTable {
    /// Entries in file order.
    pub entries: Vec<Entry>,
}

fn number(arch: Arch, name: &str) -> Option<u32> {
    let id = match arch {
        Arch::X86_64 | Arch::X32 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
        Arch::I386 => syscalls::x86::Sysno::from_str(name).ok()?.id(),
    };
    u32::try_from(id).ok()
}

impl SyscallTable {
    /// Parses the built-in table.
    pub fn builtin() -> Result<Self, TableError> {
        Self::parse(BUILTIN)
    }

    /// Parses table text: `name x86_64 i386 removed [# note]` per line, versions as
    /// `2.6.32`, `-` for absent, `never` for reserved numbers.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        // Parsed at every start: ASCII splitting and a sorted duplicate check keep it to
        // a fraction of a millisecond.
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |what: String| TableError { line, what };
            let (data, note) = raw.split_once('#').unwrap_or((raw, ""));
            let mut split = data.split_ascii_whitespace();
            let cols = [split.next(), split.next(), split.next(), split.next()];
            let extra = split.count();
            let [Some(name), Some(x64), Some(x86), Some(removed)] = cols else {
                if cols[0].is_none() {
                    continue;
                }
                let found = cols.iter().flatten().count();
                return Err(err(format!("expected 4 columns, found {found}")));
            };
            if extra > 0 {
                return Err(err(format!("expected 4 columns, found {}", 4 + extra)));
            }
            let version = |col: &str| -> Result<Option<KernelVersion>, TableError> {
                if col == "-" {
                    return Ok(None);
                }
                col.parse().map(Some).map_err(|e| err(format!("{e}")))
            };
            let resolve =
                |arch: Arch, col: &str| -> Result<Option<(u32, KernelVersion)>, TableError> {
                    let Some(v) = version(col)? else {
                        return Ok(None);
                    };
                    let nr = number(arch, name)
                        .ok_or_else(|| err(format!("{name} has no number on {arch}")))?;
                    Ok(Some((nr, v)))
                };
            let removed = match removed {
                "-" => Removal::No,
                "never" => Removal::Never,
                v => Removal::In(v.parse().map_err(|e| err(format!("{e}")))?),
            };
            let entry = Entry {
                name: name.to_owned(),
                x86_64: resolve(Arch::X86_64, x64)?,
                i386: resolve(Arch::I386, x86)?,
                removed,
                note: note.trim().to_owned(),
                line,
            };
            if entry.x86_64.is_none() && entry.i386.is_none() {
                return Err(err(format!("{name} exists on neither ABI")));
            }
            entries.push(entry);
        }
        // A name listed twice: sorted, the two are neighbours.
        let mut names: Vec<(&str, usize)> =
            entries.iter().map(|e| (e.name.as_str(), e.line)).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0].0 == w[1].0) {
            let line = w[0].1.max(w[1].1);
            return Err(TableError {
                line,
                what: format!("{} is listed twice", w[0].0),
            });
        }
        Ok(SyscallTable { entries })
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The entry for number `nr` on `arch`.
    pub fn by_number(&self, arch: Arch, nr: u32) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.on(arch).is_some_and(|(n, _)| n == nr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_format_and_rejects_mistakes() {
        let t = SyscallTable::parse("# c\n\nread 2.6 2.6 - # note\n_sysctl 2.6 2.6 5.5\n")
            .expect("valid");
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.get("read").map(|e| e.note.as_str()), Some("note"));
        let sysctl = t.get("_sysctl").expect("listed");
        let v = |s: &str| s.parse::<KernelVersion>().expect(s);
        assert!(sysctl.exists_in(Arch::X86_64, v("5.4")));
        assert!(!sysctl.exists_in(Arch::X86_64, v("5.5")));
        assert_eq!(
            t.by_number(Arch::X86_64, 156).map(|e| e.name.as_str()),
            Some("_sysctl")
        );
        for bad in [
            "read 2.6 2.6",
            "nosuchcall 2.6 2.6 -",
            "read x 2.6 -",
            "read 2.6 2.6 -\nread 2.6 2.6 -",
        ] {
            let e = SyscallTable::parse(bad).expect_err(bad);
            assert!(e.line >= 1);
        }
    }
}
