//! Judging what a scan found against a persona, or against this host, with the same data
//! a run uses: the persona's policy (which calls the filter answers ENOSYS, which are
//! caught and emulated), the syscall table (when each call appeared and was removed),
//! and whether this host has the vsyscall page.

use std::collections::BTreeMap;

use platform::{Arch, Rule};
use sentry::handlers::{Row, When};
use sentry::policy::Policy;
use sentry::table::Removal;
use sentry::{KernelVersion, Persona, SyscallTable};

use super::file::ElfReport;

/// One judgement, with the sites and files it concerns.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    /// `vsyscall`, `enosys`, `unimplemented`, `emulated`, `removed-on-host`,
    /// `unknown-call`, `abi-note`.
    pub kind: &'static str,
    /// `true` when the finding means something will fail.
    pub problem: bool,
    /// The system call concerned, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The ABI of the call, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Call sites concerned.
    pub sites: u32,
    /// Files concerned (their paths as shown).
    pub files: Vec<String>,
    /// What it means, in one sentence.
    pub message: String,
}

/// The verdict for one persona (or the host).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    /// The persona's name, or `host`.
    pub persona: String,
    /// The kernel whose system calls apply.
    pub kernel: String,
    /// What applies, problems first.
    pub findings: Vec<Finding>,
}

/// What is known about this host.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Host {
    /// `uname -r`.
    pub release: String,
    /// Whether the vsyscall page is mapped (vsyscall=xonly or emulate).
    pub vsyscall_page: bool,
    /// The kernel version.
    #[serde(skip)]
    pub version: Option<KernelVersion>,
}

impl Host {
    /// This host.
    pub fn this() -> Self {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Host {
            version: KernelVersion::from_release(&release),
            release,
            vsyscall_page: platform::host_has_vsyscall_page(),
        }
    }
}

/// Sites and files per (ABI, call number).
type CallSites<'a> = BTreeMap<(Arch, u32), (u32, Vec<&'a ElfReport>)>;

fn call_sites(files: &[ElfReport]) -> CallSites<'_> {
    let mut out: CallSites<'_> = BTreeMap::new();
    for f in files {
        for (&(arch, nr), &n) in &f.calls {
            if let Some(nr) = nr {
                let e = out.entry((arch, nr)).or_default();
                e.0 += n;
                e.1.push(f);
            }
        }
    }
    out
}

fn names(files: &[&ElfReport]) -> Vec<String> {
    files.iter().map(|f| f.path.display().to_string()).collect()
}

/// The finding for `sites` call sites of one system call in `files`.
fn call_finding(
    kind: &'static str,
    problem: bool,
    shown: String,
    arch: Arch,
    sites: u32,
    files: &[&ElfReport],
    what: &str,
) -> Finding {
    let message = format!(
        "calls {shown} ({arch}) at {} in {}: {what}",
        plural(sites as usize, "site"),
        plural(files.len(), "file")
    );
    Finding {
        kind,
        problem,
        call: Some(shown),
        arch: Some(arch.to_string()),
        sites,
        files: names(files),
        message,
    }
}

/// `1 file`, `2 files`.
pub fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The tree's glibc version (from a libc.so.6 banner), if any.
pub fn glibc_version(files: &[ElfReport]) -> Option<(u32, u32)> {
    files
        .iter()
        .filter_map(|f| {
            f.glibc_banner
                .as_deref()
                .and_then(super::file::glibc_version)
        })
        .min()
}

/// The vsyscall finding for a persona (`legacy`: it emulates the page) or the host.
fn vsyscall(files: &[ElfReport], host: &Host, legacy: Option<&str>) -> Option<Finding> {
    let users: Vec<&ElfReport> = files.iter().filter(|f| !f.vsyscalls.is_empty()).collect();
    if users.is_empty() {
        return None;
    }
    let sites: usize = users.iter().map(|f| f.vsyscalls.len()).sum();
    let patchable: usize = users
        .iter()
        .map(|f| f.vsyscalls.iter().filter(|s| s.patchable).count())
        .sum();
    let head = format!(
        "needs the vsyscall page: {} ({} sites, {patchable} patchable)",
        plural(users.len(), "file"),
        sites
    );
    let (problem, tail) = match (host.vsyscall_page, legacy) {
        (true, _) => (
            false,
            "this host has it: the kernel emulates the calls".to_owned(),
        ),
        (false, Some(_)) => (
            false,
            "this host has none: compatrun emulates it (ptrace platform; --platform auto picks it)"
                .to_owned(),
        ),
        (false, None) => (
            true,
            "this host has none: natively they die with SIGSEGV; run them under a legacy persona"
                .to_owned(),
        ),
    };
    Some(Finding {
        kind: "vsyscall",
        problem,
        call: None,
        arch: None,
        sites: u32::try_from(sites).unwrap_or(u32::MAX),
        files: names(&users),
        message: format!("{head}; {tail}"),
    })
}

/// What an emulating handler does, in words.
fn handler_words(row: &Row) -> &'static str {
    match (row.when, row.name) {
        (When::Identity, _) => "compatrun emulates it (the persona's identity)",
        (When::Legacy, "_sysctl") => "compatrun emulates it (through /proc/sys)",
        (When::Legacy, _) => "compatrun answers it as the old kernel did",
    }
}

/// The ABI-note finding: files whose note asks for a newer kernel than `kernel`.
fn abi_notes(files: &[ElfReport], kernel: KernelVersion, who: &str) -> Vec<Finding> {
    // Whether the C library checks: known from its banner or its start-up check, else
    // (files scanned without their C library) assumed, as a glibc before 2.35 would.
    let checking = glibc_version(files).map_or_else(
        || {
            files.iter().any(|f| f.checks_kernel)
                || !files
                    .iter()
                    .any(|f| f.path.to_string_lossy().contains("musl"))
        },
        |v| v < (2, 35),
    );
    let mut out = Vec::new();
    // The C library's own note is what the loader compares with the kernel.
    if let Some(libc) = files.iter().find(|f| f.glibc_banner.is_some()) {
        if let (Some(need), Some((ma, mi))) = (libc.abi_note, glibc_version(files)) {
            let fine = need <= kernel || !checking;
            out.push(Finding {
                kind: "abi-note",
                problem: !fine,
                call: None,
                arch: None,
                sites: 0,
                files: names(&[libc]),
                message: if fine {
                    format!("glibc {ma}.{mi} asks for Linux {need}: fine under {who}")
                } else {
                    format!(
                        "glibc {ma}.{mi} asks for Linux {need}: too new for {who} (Linux {kernel}): \
                         every dynamic program stops with \"FATAL: kernel too old\""
                    )
                },
            });
        }
    }
    let too_new: Vec<&ElfReport> = files
        .iter()
        .filter(|f| f.glibc_banner.is_none() && f.abi_note.is_some_and(|n| n > kernel))
        .collect();
    if !too_new.is_empty() {
        let max = too_new.iter().filter_map(|f| f.abi_note).max();
        out.push(Finding {
            kind: "abi-note",
            problem: checking,
            call: None,
            arch: None,
            sites: 0,
            files: names(&too_new),
            message: format!(
                "{} ask for a newer kernel than {who}'s Linux {kernel} (up to {}){}",
                plural(too_new.len(), "file"),
                max.map_or_else(String::new, |v| v.to_string()),
                if checking {
                    ": a glibc before 2.35 refuses them (\"FATAL: kernel too old\", or the library is not found)"
                } else {
                    "; this C library does not check"
                }
            ),
        });
    }
    out
}

/// When a call came and went: ` (Linux 2.6.33 added it)`, ` (removed in Linux 3.1)`.
fn history(e: &sentry::table::Entry, arch: Arch) -> String {
    match (e.removed, e.on(arch)) {
        (Removal::In(v), _) => format!(" (removed in Linux {v})"),
        (_, Some((_, added))) => format!(" (Linux {added} added it)"),
        _ => String::new(),
    }
}

fn name_of(table: &SyscallTable, arch: Arch, nr: u32) -> Option<String> {
    table.by_number(arch, nr).map(|e| e.name.clone())
}

/// The verdict for `persona`.
pub fn judge(persona: &Persona, table: &SyscallTable, files: &[ElfReport], host: &Host) -> Verdict {
    let policy = Policy::build(persona, table);
    let mut findings = Vec::new();
    let legacy = persona.kernel.map(|_| persona.name.as_str());
    if let Some(k) = persona.kernel {
        findings.extend(abi_notes(files, k, &persona.name));
    }
    findings.extend(vsyscall(files, host, legacy));
    for ((arch, nr), (sites, fs)) in call_sites(files) {
        let rule = policy.spec.rule_for(arch, nr);
        let call = name_of(table, arch, nr);
        let shown = call.clone().unwrap_or_else(|| format!("#{nr}"));
        let (kind, problem, what) = match rule {
            Rule::Allow => continue,
            Rule::Errno(_) if call.is_none() => (
                "unknown-call",
                true,
                "no kernel compatrun knows has this number: the persona answers ENOSYS".to_owned(),
            ),
            Rule::Errno(_) => match table.by_number(arch, nr) {
                Some(e) if e.removed == Removal::Never => (
                    "unimplemented",
                    false,
                    "no kernel since 2.6.0 implements it: ENOSYS everywhere, as the C library expects"
                        .to_owned(),
                ),
                Some(e) => (
                    "enosys",
                    true,
                    format!("the persona answers ENOSYS{}", history(e, arch)),
                ),
                None => ("enosys", true, "the persona answers ENOSYS".to_owned()),
            },
            Rule::Catch => {
                let h = policy
                    .dispatch
                    .iter()
                    .find(|(a, n, _)| *a == arch && *n == nr)
                    .map(|(_, _, h)| *h);
                (
                    "emulated",
                    false,
                    h.map_or("compatrun catches it", handler_words).to_owned(),
                )
            }
        };
        findings.push(call_finding(kind, problem, shown, arch, sites, &fs, &what));
    }
    findings.sort_by_key(|f| !f.problem);
    Verdict {
        persona: persona.name.clone(),
        kernel: persona
            .kernel
            .map_or_else(|| format!("host ({})", host.release), |k| k.to_string()),
        findings,
    }
}

/// The verdict for this host, without compatrun.
pub fn judge_host(table: &SyscallTable, files: &[ElfReport], host: &Host) -> Verdict {
    let mut findings = Vec::new();
    findings.extend(vsyscall(files, host, None));
    if let Some(hv) = host.version {
        findings.extend(
            abi_notes(files, hv, "this host")
                .into_iter()
                .filter(|f| f.problem),
        );
        let emulated: Vec<&str> = sentry::handlers::TABLE
            .iter()
            .filter(|row| row.when == When::Legacy)
            .map(|row| row.name)
            .collect();
        for ((arch, nr), (sites, fs)) in call_sites(files) {
            let entry = table.by_number(arch, nr);
            let (kind, problem, what) = match entry {
                None => (
                    "unknown-call",
                    true,
                    "no kernel compatrun knows has this number".to_owned(),
                ),
                Some(e) if e.removed == Removal::Never => (
                    "unimplemented",
                    false,
                    "no kernel since 2.6.0 implements it: ENOSYS everywhere, as the C library expects"
                        .to_owned(),
                ),
                Some(e) if !e.exists_in(arch, hv) => (
                    "removed-on-host",
                    true,
                    if emulated.contains(&e.name.as_str()) {
                        format!(
                            "this host answers ENOSYS{}; compatrun emulates it under a legacy persona",
                            history(e, arch)
                        )
                    } else {
                        format!("this host answers ENOSYS{}", history(e, arch))
                    },
                ),
                Some(_) => continue,
            };
            let shown = entry.map_or_else(|| format!("#{nr}"), |e| e.name.clone());
            findings.push(call_finding(kind, problem, shown, arch, sites, &fs, &what));
        }
    }
    findings.sort_by_key(|f| !f.problem);
    Verdict {
        persona: "host".into(),
        kernel: host.release.clone(),
        findings,
    }
}
