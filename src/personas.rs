//! `compatrun personas`: what each persona changes, from the same data the sentry uses.

use std::io::Write;

use platform::{Arch, Rule};
use sentry::policy::{self, Policy};
use sentry::{Persona, SyscallTable};

/// Prints the list of built-in personas, or the details of `which`.
pub fn print(table: &SyscallTable, which: Option<&str>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match which {
        None => {
            writeln!(
                out,
                "{:<8} {:<28} {:>6}  DESCRIPTION",
                "PERSONA", "UNAME -R", "ENOSYS"
            )?;
            for p in Persona::builtins(table)? {
                let spec = Policy::build(&p, table).spec;
                let (refused, _) = policy::summary(&spec, table, Arch::X86_64);
                let release = p.uname.as_ref().map_or("(host)", |u| u.release.as_str());
                writeln!(
                    out,
                    "{:<8} {:<28} {:>6}  {}",
                    p.name, release, refused, p.description
                )?;
            }
            writeln!(
                out,
                "\nENOSYS: x86_64 system calls the persona's kernel did not have (answered in the \
                 seccomp filter).\nDetails: compatrun personas NAME"
            )?;
        }
        Some(arg) => {
            let p = Persona::resolve(arg, table)?;
            let spec = Policy::build(&p, table).spec;
            writeln!(out, "persona:     {}", p.name)?;
            writeln!(out, "description: {}", p.description)?;
            match &p.uname {
                Some(u) => {
                    writeln!(out, "uname -r:    {}", u.release)?;
                    writeln!(out, "uname -v:    {}", u.version)?;
                }
                None => writeln!(out, "uname:       the host's")?,
            }
            match p.kernel {
                Some(v) => writeln!(out, "syscalls:    as in Linux {v}")?,
                None => writeln!(out, "syscalls:    the host's (nothing refused)")?,
            }
            for arch in Arch::ALL {
                let (refused, caught) = policy::summary(&spec, table, arch);
                let names = |rule: Rule| -> Vec<&str> {
                    table
                        .entries
                        .iter()
                        .filter(|e| {
                            e.on(arch)
                                .is_some_and(|(nr, _)| spec.rule_for(arch, nr) == rule)
                        })
                        .map(|e| e.name.as_str())
                        .collect()
                };
                writeln!(out, "\n{arch}: {caught} caught, {refused} answer ENOSYS")?;
                let caught_names = names(Rule::Catch);
                if !caught_names.is_empty() {
                    writeln!(out, "  caught: {}", caught_names.join(" "))?;
                }
                let refused_names = names(Rule::Errno(38));
                if !refused_names.is_empty() {
                    writeln!(out, "  ENOSYS: {}", refused_names.join(" "))?;
                }
            }
        }
    }
    Ok(())
}
