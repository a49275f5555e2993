//! Kernel personas: reviewed data saying which kernel a guest should believe it runs on.
//!
//! Built-in personas are the TOML files in `personas/`, compiled in; users pass their own
//! file with `--kernel-persona ./my.toml`. A persona gives the kernel version whose
//! system-call table applies (`kernel`), what `uname` reports (`[uname]`), and explicit
//! per-call corrections (`[syscalls] add`/`remove`, e.g. a vendor's backports).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::table::SyscallTable;
use crate::version::KernelVersion;

/// The built-in personas: (name, file text), in the order `compatrun personas` lists them.
pub const BUILTIN: &[(&str, &str)] = &[
    ("host", include_str!("../personas/host.toml")),
    ("2.6", include_str!("../personas/2.6.toml")),
    ("rhel6", include_str!("../personas/rhel6.toml")),
    ("3.10", include_str!("../personas/3.10.toml")),
    ("rhel7", include_str!("../personas/rhel7.toml")),
    ("4.18", include_str!("../personas/4.18.toml")),
    ("rhel8", include_str!("../personas/rhel8.toml")),
    ("5.14", include_str!("../personas/5.14.toml")),
    ("rhel9", include_str!("../personas/rhel9.toml")),
];

/// The soft open-file limit legacy personas clamp to by default.
pub const DEFAULT_NOFILE: u64 = 1024;

/// What `uname` reports under a persona (the other fields stay the host's).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uname {
    /// `uname -r`, e.g. `2.6.32-754.el6.x86_64`.
    pub release: String,
    /// `uname -v`, e.g. `#1 SMP Tue Jun 19 21:26:04 UTC 2018`.
    pub version: String,
    /// The whole line of `/proc/version` (builder and compiler included); when absent,
    /// one is made from `release` and `version`.
    pub proc_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyscallOverrides {
    #[serde(default)]
    add: Vec<toml::Spanned<String>>,
    #[serde(default)]
    remove: Vec<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonaFile {
    name: Option<String>,
    description: String,
    kernel: Option<toml::Spanned<String>>,
    uname: Option<Uname>,
    nofile: Option<u64>,
    #[serde(default)]
    syscalls: SyscallOverrides,
}

/// A loaded, validated persona.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persona {
    /// Its name (`rhel6`, or a user file's `name`/file stem).
    pub name: String,
    /// One line for listings.
    pub description: String,
    /// The kernel whose system calls exist; `None` for the host's own (nothing refused).
    pub kernel: Option<KernelVersion>,
    /// The identity `uname` reports; `None` keeps the host's.
    pub uname: Option<Uname>,
    /// Calls that exist although `kernel` predates them (backports).
    pub add: Vec<String>,
    /// Calls that do not exist although `kernel` had them.
    pub remove: Vec<String>,
    /// The soft open-file limit the guest starts with at most (`None`: unchanged).
    pub nofile: Option<u64>,
}

/// Why a persona could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    /// No built-in persona by that name, and it does not look like a file.
    #[error("unknown kernel persona {name:?}; built-in personas: {available} (or give a path to a persona file)")]
    Unknown {
        /// What was asked for.
        name: String,
        /// The built-in names, comma-separated.
        available: String,
    },
    /// The persona file could not be read.
    #[error("cannot read persona file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The persona file is malformed (the message names the line).
    #[error("persona file {}: line {line}: {what}", path.display())]
    Invalid {
        /// The file (or `builtin:NAME`).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Persona {
    /// Resolves `--kernel-persona ARG`: a built-in name, else a file path (anything with
    /// a `/` or ending in `.toml`).
    pub fn resolve(arg: &str, table: &SyscallTable) -> Result<Self, PersonaError> {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == arg) {
            return Self::parse(name, text, Path::new(&format!("builtin:{name}")), table);
        }
        if arg.contains('/') || arg.ends_with(".toml") {
            let path = Path::new(arg);
            let text = std::fs::read_to_string(path).map_err(|source| PersonaError::Read {
                path: path.to_owned(),
                source,
            })?;
            let stem = path
                .file_stem()
                .map_or_else(|| arg.to_owned(), |s| s.to_string_lossy().into_owned());
            return Self::parse(&stem, &text, path, table);
        }
        Err(PersonaError::Unknown {
            name: arg.to_owned(),
            available: BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// All built-in personas.
    pub fn builtins(table: &SyscallTable) -> Result<Vec<Self>, PersonaError> {
        BUILTIN
            .iter()
            .map(|(name, text)| {
                Self::parse(name, text, Path::new(&format!("builtin:{name}")), table)
            })
            .collect()
    }

    /// Parses and validates persona file text. `default_name` is used when the file
    /// names none; `path` only labels messages.
    pub fn parse(
        default_name: &str,
        text: &str,
        path: &Path,
        table: &SyscallTable,
    ) -> Result<Self, PersonaError> {
        let invalid = |line: usize, what: String| PersonaError::Invalid {
            path: path.to_owned(),
            line,
            what,
        };
        let file: PersonaFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            invalid(line, e.message().trim().replace('\n', "; "))
        })?;
        let kernel = match &file.kernel {
            Some(k) => Some(
                k.get_ref()
                    .parse::<KernelVersion>()
                    .map_err(|e| invalid(line_of(text, k.span().start), e.to_string()))?,
            ),
            None => match &file.uname {
                Some(u) => Some(KernelVersion::from_release(&u.release).ok_or_else(|| {
                    invalid(
                        1,
                        format!(
                            "no `kernel` given and uname release {:?} does not start with a version",
                            u.release
                        ),
                    )
                })?),
                None => None,
            },
        };
        if let Some(u) = &file.uname {
            for (field, value) in [("release", &u.release), ("version", &u.version)] {
                // struct utsname fields are 65 bytes, NUL included.
                if value.len() > 64 || value.contains('\0') {
                    return Err(invalid(
                        1,
                        format!("uname {field} must be at most 64 bytes without NULs"),
                    ));
                }
            }
        }
        let names = |list: &[toml::Spanned<String>]| -> Result<Vec<String>, PersonaError> {
            list.iter()
                .map(|s| {
                    if table.get(s.get_ref()).is_some() {
                        Ok(s.get_ref().clone())
                    } else {
                        Err(invalid(
                            line_of(text, s.span().start),
                            format!("unknown system call {:?}", s.get_ref()),
                        ))
                    }
                })
                .collect()
        };
        let add = names(&file.syscalls.add)?;
        let remove = names(&file.syscalls.remove)?;
        if kernel.is_none() && !(add.is_empty() && remove.is_empty()) {
            return Err(invalid(
                1,
                "[syscalls] corrections need a `kernel` version to correct".to_owned(),
            ));
        }
        // Old rpm/yum close every descriptor up to the soft limit: under a container
        // engine's limit of ~1e9 that takes hours. Legacy personas start at the RHEL 6/7
        // default of 1024 unless the file says otherwise (0: leave it alone).
        let nofile = match file.nofile {
            Some(0) => None,
            Some(n) => Some(n),
            None => kernel.map(|_| DEFAULT_NOFILE),
        };
        Ok(Persona {
            nofile,
            name: file.name.unwrap_or_else(|| default_name.to_owned()),
            description: file.description,
            kernel,
            uname: file.uname,
            add,
            remove,
        })
    }

    /// Whether this persona changes nothing (the host baseline).
    pub fn is_host(&self) -> bool {
        self.kernel.is_none() && self.uname.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SyscallTable {
        SyscallTable::builtin().expect("builtin table parses")
    }

    #[test]
    fn every_builtin_persona_loads() {
        let t = table();
        let all = Persona::builtins(&t).expect("builtins are valid");
        assert_eq!(all.len(), BUILTIN.len());
        let rhel6 = Persona::resolve("rhel6", &t).expect("rhel6");
        assert_eq!(rhel6.kernel, Some(KernelVersion::new(2, 6, 32)));
        assert_eq!(
            rhel6.uname.as_ref().map(|u| u.release.as_str()),
            Some("2.6.32-754.el6.x86_64")
        );
        assert!(Persona::resolve("host", &t).expect("host").is_host());
    }

    #[test]
    fn errors_name_the_line() {
        let t = table();
        let p = Path::new("x.toml");
        let cases: &[(&str, usize)] = &[
            ("description = \"d\"\nkernel = \"2.6.x\"\n", 2),
            ("description = \"d\"\nkernel = \"3.10\"\n[syscalls]\nadd = [\n \"getrandom\",\n \"bogus\"]\n", 6),
            ("description = \"d\"\n\nkernel = [\n", 4), // unterminated: reported at the end
            ("description = \"d\"\nfrobnicate = 1\n", 2),
        ];
        for (text, line) in cases {
            match Persona::parse("x", text, p, &t) {
                Err(PersonaError::Invalid { line: l, .. }) => assert_eq!(l, *line, "{text}"),
                other => panic!("{text}: expected an error naming line {line}, got {other:?}"),
            }
        }
        assert!(matches!(
            Persona::resolve("no-such-persona", &t),
            Err(PersonaError::Unknown { .. })
        ));
        assert!(matches!(
            Persona::resolve("/no/such/file.toml", &t),
            Err(PersonaError::Read { .. })
        ));
    }

    #[test]
    fn kernel_defaults_to_the_release_version() {
        let text =
            "description = \"d\"\n[uname]\nrelease = \"2.6.18-419.el5\"\nversion = \"#1 SMP\"\n";
        let p = Persona::parse("rhel5", text, Path::new("x"), &table()).expect("valid");
        assert_eq!(p.kernel, Some(KernelVersion::new(2, 6, 18)));
    }
}
