//! A scan's report: plain text for people (summary, verdicts, then the files worth a
//! look) or JSON (the schema is documented in docs/SCAN.md; `schema` is bumped on any
//! incompatible change).

use std::io::Write;

use sentry::x86::{Bitness, Shape, SyscallInsn, TargetBytes, Transfer};
use serde::Serialize;

use super::file::ElfReport;
use super::verdict::{self, Host, Verdict};
use super::Scan;

/// The C library a tree (or a set of files) uses.
#[derive(Debug, Serialize)]
struct Libc {
    family: &'static str,
    version: Option<String>,
    banner: Option<String>,
    path: Option<String>,
    abi_note: Option<String>,
    checks_kernel: bool,
}

fn libc(scan: &Scan) -> Libc {
    let glibc = scan.elf.iter().find(|f| f.glibc_banner.is_some());
    let name_has = |f: &ElfReport, s: &str| {
        f.path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(s))
            || f.interpreter.as_deref().is_some_and(|i| i.contains(s))
    };
    let checks = scan.elf.iter().any(|f| f.checks_kernel);
    let family = if glibc.is_some() || checks || scan.elf.iter().any(|f| name_has(f, "ld-linux")) {
        "glibc"
    } else if scan.elf.iter().any(|f| name_has(f, "musl")) {
        "musl"
    } else {
        "unknown"
    };
    Libc {
        family,
        version: verdict::glibc_version(&scan.elf).map(|(a, b)| format!("{a}.{b}")),
        banner: glibc.and_then(|f| f.glibc_banner.clone()),
        path: glibc.map(|f| f.path.display().to_string()),
        abi_note: glibc.and_then(|f| f.abi_note).map(|v| v.to_string()),
        checks_kernel: checks,
    }
}

#[derive(Serialize)]
struct Summary {
    examined: usize,
    bytes: u64,
    elf: usize,
    x86_64: usize,
    i386: usize,
    other_elf: usize,
    unreadable: usize,
    seconds: f64,
    code_bytes: u64,
    syscall_sites: u64,
    unresolved_sites: u64,
    vsyscall_files: usize,
    vsyscall_sites: usize,
    vsyscall_patchable: usize,
}

fn summary(scan: &Scan) -> Summary {
    let count = |b: Bitness| scan.elf.iter().filter(|f| f.bitness == b).count();
    let sites = |f: &ElfReport| f.calls.values().map(|&n| u64::from(n)).sum::<u64>();
    let unresolved = |f: &ElfReport| u64::from(f.unresolved());
    Summary {
        examined: scan.examined,
        bytes: scan.bytes,
        elf: scan.elf.len(),
        x86_64: count(Bitness::Bits64),
        i386: count(Bitness::Bits32),
        other_elf: scan.other_elf,
        unreadable: scan.unreadable.len(),
        seconds: scan.seconds,
        code_bytes: scan.elf.iter().map(|f| f.code_bytes).sum(),
        syscall_sites: scan.elf.iter().map(sites).sum(),
        unresolved_sites: scan.elf.iter().map(unresolved).sum(),
        vsyscall_files: scan.elf.iter().filter(|f| !f.vsyscalls.is_empty()).count(),
        vsyscall_sites: scan.elf.iter().map(|f| f.vsyscalls.len()).sum(),
        vsyscall_patchable: scan
            .elf
            .iter()
            .flat_map(|f| &f.vsyscalls)
            .filter(|s| s.patchable)
            .count(),
    }
}

fn arch_name(b: Bitness) -> &'static str {
    match b {
        Bitness::Bits32 => "i386",
        Bitness::Bits64 => "x86_64",
    }
}

fn kind_name(k: super::file::Kind) -> &'static str {
    use super::file::Kind;
    match k {
        Kind::Executable => "executable",
        Kind::Pie => "pie",
        Kind::SharedLibrary => "shared-library",
        Kind::Object => "object",
        Kind::Other => "other",
    }
}

fn insn_key(i: SyscallInsn) -> &'static str {
    match i {
        SyscallInsn::Syscall => "syscall",
        SyscallInsn::Int80 => "int80",
        SyscallInsn::Sysenter => "sysenter",
        SyscallInsn::GsCall => "gs_call",
    }
}

fn shape_name(s: Shape) -> &'static str {
    match s {
        Shape::Register(Transfer::Call) => "register-call",
        Shape::Register(Transfer::Jump) => "register-jump",
        Shape::Memory(Transfer::Call) => "memory-call",
        Shape::Memory(Transfer::Jump) => "memory-jump",
        Shape::Cmov => "cmov",
        Shape::Loaded => "loaded",
    }
}

fn file_json(f: &ElfReport, table: &sentry::SyscallTable) -> serde_json::Value {
    use serde_json::json;
    let calls: Vec<_> = f
        .calls
        .iter()
        .filter_map(|(&(arch, nr), &n)| {
            let nr = nr?;
            let name = table.by_number(arch, nr).map(|e| e.name.clone());
            Some(json!({"arch": arch.to_string(), "nr": nr, "name": name, "sites": n}))
        })
        .collect();
    let unresolved = f.unresolved();
    let vs: Vec<_> = f
        .vsyscalls
        .iter()
        .map(|s| {
            let target = match s.target {
                TargetBytes::Immediate { at, size } => {
                    json!({"kind": "immediate", "at": at, "size": size})
                }
                TargetBytes::Memory { at } => json!({"kind": "memory", "at": at, "size": 8}),
            };
            json!({
                "entry": s.entry.name(), "address": s.entry.addr(), "shape": shape_name(s.shape),
                "load": s.load, "user": s.user, "end": s.end, "target": target,
                "patchable": s.patchable,
            })
        })
        .collect();
    let insns: serde_json::Map<String, serde_json::Value> = f
        .insns
        .iter()
        .map(|(&i, &n)| (insn_key(i).to_owned(), json!(n)))
        .collect();
    json!({
        "path": f.path.display().to_string(),
        "arch": arch_name(f.bitness),
        "kind": f.kind,
        "interpreter": f.interpreter,
        "abi_note": f.abi_note.map(|v| v.to_string()),
        "checks_kernel": f.checks_kernel,
        "glibc_banner": f.glibc_banner,
        "code_bytes": f.code_bytes,
        "invalid_bytes": f.invalid_bytes,
        "instructions": insns,
        "unresolved": unresolved,
        "calls": calls,
        "vsyscall": vs,
    })
}

/// Writes the JSON report.
pub fn json(
    out: &mut dyn Write,
    scan: &Scan,
    host: &Host,
    verdicts: &[Verdict],
) -> anyhow::Result<()> {
    let table = sentry::SyscallTable::builtin()?;
    let doc = serde_json::json!({
        "schema": 1,
        "roots": scan.roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>(),
        "host": host,
        "summary": summary(scan),
        "libc": libc(scan),
        "verdicts": verdicts,
        "files": scan.elf.iter().map(|f| file_json(f, &table)).collect::<Vec<_>>(),
        "unreadable": scan.unreadable.iter()
            .map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e}))
            .collect::<Vec<_>>(),
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// At most `n` names, then how many more.
fn some_names(names: &[String], n: usize) -> String {
    let mut s = names.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > n {
        s.push_str(&format!(" and {} more", names.len() - n));
    }
    s
}

/// Writes the text report.
pub fn text(
    out: &mut dyn Write,
    scan: &Scan,
    host: &Host,
    verdicts: &[Verdict],
) -> anyhow::Result<()> {
    let s = summary(scan);
    let roots: Vec<String> = scan.roots.iter().map(|r| r.display().to_string()).collect();
    writeln!(out, "scan of {}", roots.join(" "))?;
    writeln!(
        out,
        "  {} files ({:.1} MB), {} ELF (x86_64 {}, i386 {}), {} for other machines, {} unreadable; {:.2} s",
        s.examined,
        s.bytes as f64 / 1e6,
        s.elf,
        s.x86_64,
        s.i386,
        s.other_elf,
        s.unreadable,
        s.seconds
    )?;
    let l = libc(scan);
    let mut line = format!("  C library: {}", l.family);
    if let Some(v) = &l.version {
        line.push_str(&format!(" {v}"));
    }
    if let Some(n) = &l.abi_note {
        line.push_str(&format!(", asks for Linux {n}"));
    }
    if l.checks_kernel {
        line.push_str(", checks the kernel version at start-up");
    }
    if let Some(b) = &l.banner {
        line.push_str(&format!(" ({b})"));
    }
    writeln!(out, "{line}")?;
    writeln!(
        out,
        "  system-call sites: {} ({} unresolved); vsyscall page: {}, {} sites ({} patchable)",
        s.syscall_sites,
        s.unresolved_sites,
        verdict::plural(s.vsyscall_files, "file"),
        s.vsyscall_sites,
        s.vsyscall_patchable
    )?;
    writeln!(
        out,
        "  this host: Linux {}, vsyscall page {}",
        host.release,
        if host.vsyscall_page {
            "present"
        } else {
            "absent"
        }
    )?;
    for v in verdicts {
        writeln!(out, "\n{} (Linux {}):", v.persona, v.kernel)?;
        if v.findings.is_empty() {
            writeln!(out, "  nothing in these files meets a difference")?;
        }
        let (never, rest): (Vec<_>, Vec<_>) =
            v.findings.iter().partition(|f| f.kind == "unimplemented");
        for f in rest {
            let mark = if f.problem { "!" } else { "-" };
            writeln!(out, "  {mark} {}", f.message)?;
            writeln!(out, "      {}", some_names(&f.files, 3))?;
        }
        // Wrappers of calls no kernel implements: one line for all of them.
        if !never.is_empty() {
            let calls: Vec<&str> = never.iter().filter_map(|f| f.call.as_deref()).collect();
            let sites: u32 = never.iter().map(|f| f.sites).sum();
            writeln!(
                out,
                "  - calls {} ({}) at {}: no kernel since 2.6.0 implements them; ENOSYS \
                 everywhere, as the C library expects",
                verdict::plural(calls.len(), "unimplemented call"),
                calls.join(" "),
                verdict::plural(sites as usize, "site"),
            )?;
        }
    }
    let notable: Vec<&ElfReport> = scan
        .elf
        .iter()
        .filter(|f| !f.vsyscalls.is_empty() || f.glibc_banner.is_some())
        .collect();
    if !notable.is_empty() {
        writeln!(out, "\nfiles:")?;
    }
    for f in notable {
        let sites: u32 = f.calls.values().sum();
        let unresolved = f.unresolved();
        writeln!(
            out,
            "  {} ({} {}{}): {sites} system-call sites ({unresolved} unresolved)",
            f.path.display(),
            arch_name(f.bitness),
            kind_name(f.kind),
            f.abi_note
                .map_or_else(String::new, |v| format!(", ABI note Linux {v}")),
        )?;
        for v in &f.vsyscalls {
            let at = v.user.or(v.load).unwrap_or(0);
            writeln!(
                out,
                "      vsyscall {} at {at:#x}: {}{}",
                v.entry.name(),
                shape_name(v.shape),
                if v.patchable { ", patchable" } else { "" }
            )?;
        }
    }
    if !scan.unreadable.is_empty() {
        writeln!(out, "\nunreadable:")?;
        for (p, e) in &scan.unreadable {
            writeln!(out, "  {}: {e}", p.display())?;
        }
    }
    Ok(())
}
