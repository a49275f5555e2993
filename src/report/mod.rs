//! `--report FILE.json`: what compatrun did for a run, counted by a [`Counting`]
//! supervisor wrapped around the sentry.
//!
//! The wrapper is used only when a report is asked for, so a run without one runs the
//! sentry alone, exactly as before. With one, the calls the persona's filter would answer
//! ENOSYS itself are caught instead ([`Counting::spec`]) and answered ENOSYS here, so they
//! can be counted: one stop per such call, paid only when a report is asked for.
//!
//! Calls are attributed to the program the calling process runs: its executable as
//! `/proc/TID/exe` names it (for a script, the interpreter). [`programs`] says how that is
//! kept right across exec on each platform. [`output`] writes the JSON (schema in
//! docs/REPORT.md).

pub mod output;
pub mod programs;
pub mod record;

use std::collections::{BTreeMap, HashMap};

use platform::{
    Arch, GuestThread, InterceptSpec, Regs, Rule, SignalInfo, SignalVerdict, Supervisor, Syscall,
    Verdict,
};
use sentry::Sentry;

use programs::Programs;

/// What happened to one caught call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A handler answered it (with a value, or an error counted by errno).
    Emulated(i64),
    /// The persona's kernel did not have it: ENOSYS (or the rule's errno).
    Refused,
    /// Caught but run natively as made.
    PassedOn,
}

/// Counts for one system call (one ABI and number) in one program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Times it was caught.
    pub count: u64,
    /// Answered by a handler.
    pub emulated: u64,
    /// Answered with the persona's errno (ENOSYS): the persona's kernel lacked it.
    pub refused: u64,
    /// Run natively after being caught.
    pub passed_on: u64,
    /// Handler answers that were errors, by errno (EFAULT: a bad guest pointer).
    pub errors: BTreeMap<i32, u64>,
}

/// Everything counted for one program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounts {
    /// Processes seen running it (see [`programs`] for what "seen" means per platform).
    pub processes: u64,
    /// Caught calls by (ABI, number).
    pub calls: HashMap<(Arch, u32), CallCounts>,
    /// Calls into the vsyscall page that compatrun emulated, by entry address.
    pub vsyscall: BTreeMap<u64, u64>,
    /// Signals on the vsyscall page shown to compatrun and delivered (not emulated).
    pub vsyscall_delivered: u64,
    /// Call sites the sentry patched in this program's processes.
    pub sites_patched: u64,
}

/// The sentry, counting what it does for each program.
#[derive(Debug)]
pub struct Counting {
    sentry: Sentry,
    /// The spec the sentry asked for, before refused calls were turned into catches.
    refused: RefusedRules,
    programs: Programs,
    counts: Vec<ProgramCounts>,
}

/// Which (ABI, number) the persona's filter refuses, and with which errno, looked up in
/// constant time per caught call.
#[derive(Debug)]
struct RefusedRules {
    /// Per ABI (index into [`Arch::ALL`]): the errno per number, 0 for "not refused".
    by_arch: [Vec<u16>; 3],
    /// Per ABI: the errno for numbers past the end of `by_arch` (0: not refused).
    default: [u16; 3],
}

fn arch_index(arch: Arch) -> usize {
    match arch {
        Arch::X86_64 => 0,
        Arch::X32 => 1,
        Arch::I386 => 2,
    }
}

impl RefusedRules {
    fn new(spec: &InterceptSpec) -> Self {
        let mut by_arch: [Vec<u16>; 3] = Default::default();
        let mut default = [0u16; 3];
        for arch in Arch::ALL {
            if let Rule::Errno(e) = spec.default_for(arch) {
                default[arch_index(arch)] = e;
            }
        }
        // Later rules for the same number win, as in the compiled filter.
        for &(arch, nr, rule) in &spec.rules {
            let i = arch_index(arch);
            let nr = nr as usize;
            if by_arch[i].len() <= nr {
                by_arch[i].resize(nr + 1, default[i]);
            }
            by_arch[i][nr] = match rule {
                Rule::Errno(e) => e,
                Rule::Allow | Rule::Catch => 0,
            };
        }
        RefusedRules { by_arch, default }
    }

    /// The errno the persona's filter answers `call` with, if it refuses it.
    fn errno(&self, call: &Syscall) -> Option<u16> {
        let i = arch_index(call.arch);
        let e = self.by_arch[i]
            .get(call.nr as usize)
            .copied()
            .unwrap_or(self.default[i]);
        (e != 0).then_some(e)
    }
}

impl Counting {
    /// Wraps `sentry`; `exec_events` says whether the platform reports execs and thread
    /// exits (ptrace) or not (seccomp user notification).
    pub fn new(sentry: Sentry, exec_events: bool) -> Self {
        Counting {
            refused: RefusedRules::new(sentry.intercept_spec()),
            sentry,
            programs: Programs::new(exec_events),
            counts: Vec::new(),
        }
    }

    /// The sentry being counted.
    pub fn sentry(&self) -> &Sentry {
        &self.sentry
    }

    /// The spec to compile: the sentry's, with every refused call caught instead, so it
    /// reaches [`Supervisor::syscall`] and is counted there.
    pub fn spec(&self) -> InterceptSpec {
        let mut spec = self.sentry.intercept_spec().clone();
        for (_, _, rule) in &mut spec.rules {
            if matches!(rule, Rule::Errno(_)) {
                *rule = Rule::Catch;
            }
        }
        for (_, rule) in &mut spec.defaults {
            if matches!(rule, Rule::Errno(_)) {
                *rule = Rule::Catch;
            }
        }
        spec
    }

    /// What was counted, per program path.
    pub fn programs(&self) -> Vec<(&std::ffi::OsStr, &ProgramCounts)> {
        self.programs
            .paths()
            .iter()
            .zip(&self.counts)
            .map(|(p, c)| (p.as_os_str(), c))
            .collect()
    }

    /// The counts of program `idx`, made as programs appear.
    fn counts(&mut self, idx: usize) -> &mut ProgramCounts {
        if self.counts.len() <= idx {
            self.counts.resize_with(idx + 1, ProgramCounts::default);
        }
        &mut self.counts[idx]
    }

    /// Attributes a thread's event to its program, counting a newly seen process.
    fn program_of<G: GuestThread>(&mut self, thread: &mut G) -> usize {
        let (idx, new_process) = self.programs.of_thread(thread);
        if new_process {
            self.counts(idx).processes += 1;
        }
        idx
    }

    /// Adds the sites the sentry patched since `before` to program `idx`.
    fn note_patched(&mut self, idx: usize, before: u64) {
        let patched = self.sentry.sites_patched().saturating_sub(before);
        if patched > 0 {
            self.counts(idx).sites_patched += patched;
        }
    }
}

impl Supervisor for Counting {
    fn syscall<G: GuestThread>(&mut self, thread: &mut G, call: &Syscall) -> Verdict {
        let idx = self.program_of(thread);
        let (verdict, outcome) = match self.refused.errno(call) {
            Some(e) => {
                let v = Verdict::errno(i32::from(e));
                (v, Outcome::Refused)
            }
            None => {
                let before = self.sentry.sites_patched();
                let v = self.sentry.syscall(thread, call);
                self.note_patched(idx, before);
                let outcome = match v {
                    Verdict::Forward => Outcome::PassedOn,
                    Verdict::Return(r) => Outcome::Emulated(r),
                };
                (v, outcome)
            }
        };
        let c = self
            .counts(idx)
            .calls
            .entry((call.arch, call.nr))
            .or_default();
        c.count += 1;
        match outcome {
            Outcome::Emulated(r) => {
                c.emulated += 1;
                if (-4095..0).contains(&r) {
                    let errno = i32::try_from(-r).unwrap_or(0);
                    *c.errors.entry(errno).or_default() += 1;
                }
            }
            Outcome::Refused => c.refused += 1,
            Outcome::PassedOn => c.passed_on += 1,
        }
        verdict
    }

    fn signal<G: GuestThread>(
        &mut self,
        thread: &mut G,
        info: &SignalInfo,
        regs: &mut Regs,
    ) -> SignalVerdict {
        let before = self.sentry.sites_patched();
        let verdict = self.sentry.signal(thread, info, regs);
        let on_page = info.signo == libc::SIGSEGV
            && (sentry::handlers::vsyscall::BASE..sentry::handlers::vsyscall::BASE + 4096)
                .contains(&info.addr);
        if on_page || self.sentry.sites_patched() != before {
            let idx = self.program_of(thread);
            self.note_patched(idx, before);
            let counts = self.counts(idx);
            match verdict {
                SignalVerdict::Suppress if on_page => {
                    *counts.vsyscall.entry(info.addr).or_default() += 1;
                }
                SignalVerdict::Deliver if on_page => counts.vsyscall_delivered += 1,
                _ => {}
            }
        }
        verdict
    }

    fn execed<G: GuestThread>(&mut self, thread: &mut G) {
        let before = self.sentry.sites_patched();
        self.sentry.execed(thread);
        let (idx, new_process) = self.programs.execed(thread);
        if new_process {
            self.counts(idx).processes += 1;
        }
        self.note_patched(idx, before);
    }

    fn exited(&mut self, tid: i32, status: platform::ExitStatus) {
        self.sentry.exited(tid, status);
        self.programs.exited(tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry::{Persona, SyscallTable};

    /// The per-call lookup agrees with the spec's own rule for every number of every
    /// ABI, for every built-in persona.
    #[test]
    fn refused_rules_match_the_spec() {
        let table = SyscallTable::builtin().expect("table");
        for name in ["host", "2.6", "rhel6", "3.10", "4.18", "5.14"] {
            let persona = Persona::resolve(name, &table).expect("persona");
            let sentry = Sentry::new(persona, &table).expect("sentry");
            let spec = sentry.intercept_spec();
            let refused = RefusedRules::new(spec);
            for arch in Arch::ALL {
                for nr in 0..1200 {
                    let want = match spec.rule_for(arch, nr) {
                        Rule::Errno(e) => Some(e),
                        _ => None,
                    };
                    let call = Syscall {
                        arch,
                        nr,
                        args: [0; 6],
                        ip: 0,
                    };
                    assert_eq!(refused.errno(&call), want, "{name} {arch} {nr}");
                }
            }
        }
    }
}
