//! The backends as data: what each one can do ([`Capabilities`]), and the one rule that
//! chooses among them for a run ([`choose`]), saying why.
//!
//! Every backend is a module that fills a [`Declaration`] and offers a `run` function;
//! [`Platform`] lists them in order of preference (the cheapest first) and dispatches to
//! them. [`choose`] knows no backend by name: it takes the first one, in that order,
//! that is available on this host and can do everything the run needs.

use crate::command::{ExitStatus, GuestCommand};
use crate::contract::{InterceptSpec, Supervisor};
pub use crate::declaration::{Capabilities, Declaration};
use crate::error::PlatformError;

/// The backends compatrun has, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// [`crate::seccomp`]: seccomp user notification, nothing traced.
    Seccomp,
    /// [`crate::ptrace`]: seccomp `RET_TRACE` stops under `PTRACE_SEIZE`.
    Ptrace,
}

impl Platform {
    /// Every backend, the preferred first.
    pub const ALL: [Platform; 2] = [Platform::Seccomp, Platform::Ptrace];

    /// Its declaration.
    pub fn declaration(self) -> &'static Declaration {
        match self {
            Platform::Seccomp => &crate::seccomp::DECLARATION,
            Platform::Ptrace => &crate::ptrace::DECLARATION,
        }
    }

    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        self.declaration().name
    }

    /// The backend of this name.
    pub fn by_name(name: &str) -> Option<Platform> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Runs `cmd` on this backend until every guest process is gone; the supervisor is
    /// told about every call `spec` catches.
    pub fn run<S: Supervisor + Send>(
        self,
        cmd: &GuestCommand,
        spec: &InterceptSpec,
        sup: &mut S,
    ) -> Result<ExitStatus, PlatformError> {
        match self {
            Platform::Seccomp => crate::seccomp::run(cmd, spec, sup),
            Platform::Ptrace => crate::ptrace::run(cmd, spec, sup),
        }
    }
}

/// What one run needs of its backend, as the caller knows it before the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunNeeds {
    /// The spec lists signals to see before delivery (the vsyscall page's SIGSEGV):
    /// needed only where the host has no vsyscall page to run such calls natively.
    pub wants_signals: bool,
    /// The guest will run in its own pid namespace.
    pub pid_ns: bool,
    /// The program must see the persona's version in the vDSO note at exec.
    pub exec_hook: bool,
}

/// A backend chosen for a run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The backend.
    pub platform: Platform,
    /// Why, in one sentence for the log.
    pub why: String,
}

/// Why `decl` cannot serve a run that needs `needs`, or `None` if it can. `vsyscall_page`
/// says whether this host maps the vsyscall page. The reasons are checked in a fixed
/// order and the first one is given.
fn unmet(decl: &Declaration, needs: RunNeeds, vsyscall_page: bool) -> Option<String> {
    if let Err(why) = (decl.available)() {
        return Some(why);
    }
    let name = decl.name;
    if needs.wants_signals && !vsyscall_page && !decl.caps.sees_signals {
        return Some(format!(
            "this host has no vsyscall page (vsyscall=none) and the persona's guests may call \
             it; the {name} platform does not see the fault to emulate it"
        ));
    }
    if needs.exec_hook && !decl.caps.sees_exec {
        return Some(format!(
            "the program's C library checks the kernel version at start-up (glibc before \
             2.35) and reads it from the vDSO, which the {name} platform cannot rewrite at \
             exec"
        ));
    }
    if !needs.pid_ns && decl.caps.needs_pid_ns {
        return Some(format!(
            "no pid namespace for the guest (it needs CAP_SYS_ADMIN, or a root filesystem \
             run); the {name} platform needs one to end the guest with compatrun"
        ));
    }
    None
}

/// The `auto` rule (README.md, "Platforms"): `asked` if one was named, else the first
/// backend in order of preference that can do all the run needs; if none can, the last
/// (the most capable). The reason given is the preferred backend's merit when it is
/// chosen, else why it could not serve.
pub fn choose(asked: Option<Platform>, needs: RunNeeds) -> Choice {
    if let Some(platform) = asked {
        return Choice {
            platform,
            why: "asked for".to_owned(),
        };
    }
    let order = Platform::ALL.map(|p| (p, p.declaration()));
    choose_among(&order, needs, crate::sys::probe::host_has_vsyscall_page())
}

fn choose_among(
    order: &[(Platform, &Declaration)],
    needs: RunNeeds,
    vsyscall_page: bool,
) -> Choice {
    let mut first_refusal = None;
    for &(platform, decl) in order {
        match unmet(decl, needs, vsyscall_page) {
            None => {
                let why = first_refusal.unwrap_or_else(|| decl.merit.to_owned());
                return Choice { platform, why };
            }
            Some(why) => {
                first_refusal.get_or_insert(why);
            }
        }
    }
    Choice {
        platform: order.last().map_or(Platform::Ptrace, |(p, _)| *p),
        why: first_refusal.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Platform::ALL {
            assert_eq!(Platform::by_name(p.name()), Some(p));
        }
        assert_eq!(Platform::by_name("no-such-backend"), None);
    }

    #[test]
    fn asked_for_wins() {
        let c = choose(Some(Platform::Ptrace), RunNeeds::default());
        assert_eq!(c.platform, Platform::Ptrace);
        assert_eq!(c.why, "asked for");
    }

    const ABLE: Capabilities = Capabilities {
        sees_signals: true,
        sees_exec: true,
        reports_exits: true,
        needs_pid_ns: false,
        forks_untraced: false,
    };
    const CHEAP: Declaration = Declaration {
        name: "cheap",
        merit: "cheap is cheap",
        caps: Capabilities {
            sees_signals: false,
            sees_exec: false,
            reports_exits: false,
            needs_pid_ns: true,
            forks_untraced: true,
        },
        available: || Ok(()),
    };
    const ABSENT: Declaration = Declaration {
        name: "absent",
        merit: "absent would be best",
        caps: ABLE,
        available: || Err("absent is not on this host".to_owned()),
    };
    const FULL: Declaration = Declaration {
        name: "full",
        merit: "full does everything",
        caps: ABLE,
        available: || Ok(()),
    };

    #[test]
    fn the_first_backend_that_can_serve_is_chosen_and_says_why() {
        // Fake backends stand in (the enum's variants only label them here).
        let order = [(Platform::Seccomp, &CHEAP), (Platform::Ptrace, &FULL)];
        let base = RunNeeds {
            wants_signals: false,
            pid_ns: true,
            exec_hook: false,
        };
        let c = choose_among(&order, base, false);
        assert_eq!(
            (c.platform, c.why.as_str()),
            (Platform::Seccomp, "cheap is cheap")
        );
        let refused = [
            (
                RunNeeds {
                    wants_signals: true,
                    ..base
                },
                false,
                "this host has no vsyscall page",
            ),
            (
                RunNeeds {
                    exec_hook: true,
                    ..base
                },
                true,
                "the program's C library checks",
            ),
            (
                RunNeeds {
                    pid_ns: false,
                    ..base
                },
                true,
                "no pid namespace",
            ),
        ];
        for (needs, page, reason) in refused {
            let c = choose_among(&order, needs, page);
            assert_eq!(c.platform, Platform::Ptrace, "{needs:?}");
            assert!(c.why.starts_with(reason), "{needs:?}: {}", c.why);
            assert!(c.why.contains("the cheap platform"), "{}", c.why);
        }
        // With the page, the vsyscall need is met natively.
        let needs = RunNeeds {
            wants_signals: true,
            ..base
        };
        assert_eq!(
            choose_among(&order, needs, true).platform,
            Platform::Seccomp
        );
    }

    #[test]
    fn an_unavailable_backend_gives_its_own_reason() {
        let order = [(Platform::Seccomp, &ABSENT), (Platform::Ptrace, &FULL)];
        let c = choose_among(&order, RunNeeds::default(), true);
        assert_eq!(c.platform, Platform::Ptrace);
        assert_eq!(c.why, "absent is not on this host");
        // None can serve: the last, with the first refusal.
        let order = [(Platform::Seccomp, &ABSENT), (Platform::Ptrace, &CHEAP)];
        let c = choose_among(&order, RunNeeds::default(), true);
        assert_eq!(c.platform, Platform::Ptrace);
        assert_eq!(c.why, "absent is not on this host");
    }
}
