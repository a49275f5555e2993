//! Turns a persona into the platform's [`InterceptSpec`]: which numbers run natively,
//! which the filter refuses with ENOSYS, and which are caught for a handler.

use platform::{Arch, InterceptSpec, Rule};

use crate::handlers::{self, Row, When};
use crate::persona::Persona;
use crate::table::{Entry, SyscallTable};
use crate::version::KernelVersion;

/// `ENOSYS` as a filter errno.
const ENOSYS: u16 = 38;
/// Linux 3.4 introduced the x32 ABI.
const X32_SINCE: KernelVersion = KernelVersion::new(3, 4, 0);
/// x32-only numbers (512 to 547): the x32 variants of calls that existed in 3.4.
const X32_SPECIFIC: std::ops::RangeInclusive<u32> = 512..=547;

/// A persona's decisions: the spec for the filter and the handler for each caught call.
#[derive(Debug)]
pub struct Policy {
    /// What the filter does per ABI and number.
    pub spec: InterceptSpec,
    /// The handler behind each caught (ABI, number).
    pub dispatch: Vec<(Arch, u32, &'static Row)>,
}

/// Whether `entry` exists on `arch` under `persona` (table, then its corrections).
pub fn exists(persona: &Persona, entry: &Entry, arch: Arch) -> bool {
    let Some(v) = persona.kernel else {
        return true;
    };
    if persona.remove.contains(&entry.name) {
        return false;
    }
    if persona.add.contains(&entry.name) && entry.on(arch).is_some() {
        return true;
    }
    if arch == Arch::X32 && v < X32_SINCE {
        return false;
    }
    entry.exists_in(arch, v)
}

impl Policy {
    /// Builds the policy for `persona`.
    pub fn build(persona: &Persona, table: &SyscallTable) -> Self {
        let mut rules = Vec::new();
        let mut defaults = Vec::new();
        for arch in Arch::ALL {
            if persona.kernel.is_none() {
                defaults.push((arch, Rule::Allow));
                continue;
            }
            // A number the table does not know did not exist in an old kernel.
            defaults.push((arch, Rule::Errno(ENOSYS)));
            for entry in &table.entries {
                if let Some((nr, _)) = entry.on(arch) {
                    let rule = if exists(persona, entry, arch) {
                        Rule::Allow
                    } else {
                        Rule::Errno(ENOSYS)
                    };
                    rules.push((arch, nr, rule));
                }
            }
            if arch == Arch::X32 && persona.kernel.is_some_and(|v| v >= X32_SINCE) {
                rules.extend(X32_SPECIFIC.map(|nr| (arch, nr, Rule::Allow)));
            }
        }
        let mut dispatch = Vec::new();
        if persona.kernel.is_some() {
            for row in handlers::TABLE {
                let wanted = match row.when {
                    When::Identity => persona.uname.is_some(),
                    When::Legacy => true,
                };
                let Some(entry) = table.get(row.name).filter(|_| wanted) else {
                    continue;
                };
                for &arch in row.abis {
                    let Some((nr, _)) = entry.on(arch) else {
                        continue;
                    };
                    if exists(persona, entry, arch) {
                        rules.push((arch, nr, Rule::Catch));
                        dispatch.push((arch, nr, row));
                    }
                }
            }
        }
        // Every legacy persona emulates the vsyscall page where the host has none; the
        // platform only looks at SIGSEGVs, which ordinary programs never get.
        let signals = if persona.kernel.is_some() {
            vec![libc::SIGSEGV]
        } else {
            Vec::new()
        };
        // Where the host emulates the page itself (vsyscall=xonly/emulate), its three
        // entries arrive at the filter as real calls from the page's address: they worked
        // in every kernel that had the page, even where the call itself did not exist
        // yet (x86_64 `getcpu` before 3.1).
        let mut allow_from_ip = Vec::new();
        if persona.kernel.is_some() {
            for (name, ip) in handlers::vsyscall::ENTRIES {
                if let Some((nr, _)) = table.get(name).and_then(|e| e.x86_64) {
                    allow_from_ip.push((nr, ip));
                }
            }
        }
        Policy {
            spec: InterceptSpec {
                rules,
                defaults,
                signals,
                allow_from_ip,
                // The vDSO note and the "kernel too old" check happen at exec.
                exec_events: persona.kernel.is_some(),
            },
            dispatch,
        }
    }
}

/// Per-ABI counts for listings: (calls refused with ENOSYS, calls caught).
pub fn summary(spec: &InterceptSpec, table: &SyscallTable, arch: Arch) -> (usize, usize) {
    let mut refused = 0;
    let mut caught = 0;
    for entry in &table.entries {
        if let Some((nr, _)) = entry.on(arch) {
            match spec.rule_for(arch, nr) {
                Rule::Errno(_) => refused += 1,
                Rule::Catch => caught += 1,
                Rule::Allow => {}
            }
        }
    }
    (refused, caught)
}
