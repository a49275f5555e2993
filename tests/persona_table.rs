//! Walks every entry of the syscall table for every built-in persona, asking the running
//! kernel (not a model of it) what the compiled filter does with each number: a call the
//! persona's kernel lacked must answer ENOSYS, one it had must pass the filter. No probed
//! call ever runs (see `platform::sys::probe`).

mod common;

use platform::filter::{self, CatchAction};
use platform::sys::probe::{probe, Probe};
use platform::{Arch, Rule};
use sentry::policy::{self, Policy};
use sentry::table::Removal;
use sentry::{KernelVersion, Persona, SyscallTable};

fn table() -> SyscallTable {
    SyscallTable::builtin().expect("the built-in table parses")
}

/// Calls the kernel lets past seccomp unfiltered (their entry points check their caller
/// and kill anything but the kernel's own trampolines with SIGILL), so no filter can
/// refuse them and the probe must not make them.
const SECCOMP_PASSTHROUGH: &[&str] = &["uretprobe", "uprobe"];

/// Numbers past the end of the table: unknown to old kernels, so ENOSYS under a legacy
/// persona and passed through under `host`.
const BEYOND: std::ops::Range<u32> = 470..512;

#[test]
fn every_table_entry_behaves_as_the_persona_says_in_the_real_kernel() {
    let table = table();
    let mut i386_skipped = false;
    for persona in Persona::builtins(&table).expect("built-in personas load") {
        let spec = Policy::build(&persona, &table).spec;
        let prog = filter::compile(&spec, CatchAction::Trace);
        for arch in Arch::ALL {
            let mut calls: Vec<(Arch, u32, bool, String)> = Vec::new();
            for entry in &table.entries {
                if SECCOMP_PASSTHROUGH.contains(&entry.name.as_str()) {
                    continue;
                }
                if let Some((nr, _)) = entry.on(arch) {
                    let expect_present = policy::exists(&persona, entry, arch);
                    calls.push((arch, nr, expect_present, entry.name.clone()));
                }
            }
            if arch != Arch::I386 {
                for nr in BEYOND {
                    let name = format!("unassigned #{nr}");
                    calls.push((arch, nr, persona.kernel.is_none(), name));
                }
            }
            let nrs: Vec<(Arch, u32)> = calls.iter().map(|(a, n, _, _)| (*a, *n)).collect();
            let Some(results) = probe(&prog, &nrs).expect("probe child") else {
                assert_eq!(arch, Arch::I386, "the probe child died on {arch}");
                i386_skipped = true;
                continue;
            };
            let mut wrong = Vec::new();
            for ((_, nr, present, name), got) in calls.iter().zip(&results) {
                let want = if *present {
                    Probe::Passed
                } else {
                    Probe::Enosys
                };
                if *got != want {
                    wrong.push(format!(
                        "{name} (#{nr}): expected {want:?}, kernel said {got:?}"
                    ));
                }
            }
            assert!(
                wrong.is_empty(),
                "persona {} on {arch}: {} entries wrong:\n{}",
                persona.name,
                wrong.len(),
                wrong.join("\n")
            );
        }
    }
    if i386_skipped {
        common::skip(
            "every_table_entry_behaves_as_the_persona_says_in_the_real_kernel (i386 part)",
            "this kernel has no i386 emulation (int 0x80 faults), so i386 numbers cannot be probed",
        );
    }
}

#[test]
fn each_persona_refuses_what_came_after_it_and_keeps_what_came_before() {
    let table = table();
    let v = |s: &str| s.parse::<KernelVersion>().expect(s);
    for persona in Persona::builtins(&table).expect("built-in personas load") {
        let spec = Policy::build(&persona, &table).spec;
        for entry in &table.entries {
            let Some((nr, added)) = entry.on(Arch::X86_64) else {
                continue;
            };
            let rule = spec.rule_for(Arch::X86_64, nr);
            let Some(kernel) = persona.kernel else {
                assert_ne!(rule, Rule::Errno(38), "host refuses {}", entry.name);
                continue;
            };
            let removed = match entry.removed {
                Removal::No => false,
                Removal::In(gone) => gone <= kernel,
                Removal::Never => true,
            };
            let should_exist = added <= kernel && !removed;
            assert_eq!(
                rule != Rule::Errno(38),
                should_exist,
                "persona {}: {} (added {added}, {:?}) has rule {rule:?}",
                persona.name,
                entry.name,
                entry.removed
            );
        }
        // Spot checks against well-known history.
        let check = |name: &str, present: bool| {
            let nr = table
                .get(name)
                .and_then(|e| e.x86_64)
                .map(|(n, _)| n)
                .expect(name);
            let rule = spec.rule_for(Arch::X86_64, nr);
            assert_eq!(
                rule != Rule::Errno(38),
                present,
                "persona {}: {name}",
                persona.name
            );
        };
        if persona.kernel == Some(v("2.6.32")) {
            check("perf_event_open", true); // 2.6.31
            check("recvmmsg", false); // 2.6.33
            check("getrandom", false); // 3.17
            check("_sysctl", true); // removed in 5.5
            check("uname", true);
        }
        if persona.kernel == Some(v("3.10")) {
            check("finit_module", true); // 3.8
            check("getrandom", false);
            check("statx", false); // 4.11
        }
        if persona.kernel == Some(v("5.14")) {
            check("openat2", true); // 5.6
            check("_sysctl", false);
            check("futex_waitv", false); // 5.16
        }
    }
}

#[test]
fn personas_catch_only_the_calls_they_emulate() {
    let table = table();
    // Calls a legacy persona answers itself wherever its kernel had them.
    let emulated = ["_sysctl", "lookup_dcookie", "nfsservctl", "uselib"];
    for persona in Persona::builtins(&table).expect("built-in personas load") {
        let spec = Policy::build(&persona, &table).spec;
        for entry in &table.entries {
            let Some((nr, _)) = entry.on(Arch::X86_64) else {
                continue;
            };
            let caught = spec.rule_for(Arch::X86_64, nr) == Rule::Catch;
            // uname and mount (a new proc gets the persona's files) for an identity.
            let expected = (["uname", "mount"].contains(&entry.name.as_str())
                && persona.uname.is_some())
                || (persona.kernel.is_some()
                    && emulated.contains(&entry.name.as_str())
                    && policy::exists(&persona, entry, Arch::X86_64));
            assert_eq!(caught, expected, "persona {}: {}", persona.name, entry.name);
        }
    }
}
