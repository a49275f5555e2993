//! The differences a legacy persona is allowed to make to CPython's results, each with
//! its reason, and the sides a suite runs on: which entries apply to a side and what
//! outcome it should therefore have where native had another.

use crate::LEGACY;

/// A difference a legacy persona implies: the case's outcome is `guest` instead of
/// `native` under the personas `when` selects.
pub struct Allowed {
    /// A test id, or a prefix ending in `*`.
    pub case: &'static str,
    pub when: When,
    pub native: &'static str,
    pub guest: &'static str,
    pub reason: &'static str,
}

/// Outcome names: those of cpython_junit.py, and `absent` (no such case in the run).
pub const ABSENT: &str = "absent";

pub const ALLOWED: &[Allowed] = &[
    Allowed {
        case: "test.test_os.FileTests.test_copy_file_range",
        when: When::KernelBefore(4, 5),
        native: "pass",
        guest: "skip",
        reason: "uses copy_file_range (4.5): ENOSYS, the test skips",
    },
    Allowed {
        case: "test.test_os.FileTests.test_copy_file_range_offset",
        when: When::KernelBefore(4, 5),
        native: "pass",
        guest: "skip",
        reason: "uses copy_file_range (4.5): ENOSYS, the test skips",
    },
    Allowed {
        case: "test.test_os.GetRandomTests.setUpClass",
        when: When::KernelBefore(3, 17),
        native: ABSENT,
        guest: "skip",
        reason: "getrandom (3.17): ENOSYS, setUpClass skips the whole class",
    },
    Allowed {
        case: "test.test_os.GetRandomTests.test_*",
        when: When::KernelBefore(3, 17),
        native: "pass",
        guest: ABSENT,
        reason: "getrandom (3.17): the class is skipped in setUpClass, which the junit \
                 report does not list case by case",
    },
    Allowed {
        case: "test.test_os.MemfdCreateTests.test_memfd_create",
        when: When::KernelBefore(3, 17),
        native: "pass",
        guest: "skip",
        reason: "memfd_create (3.17): requires_linux_version(3, 17) reads uname -r and skips",
    },
    Allowed {
        case: "test.test_posix.PosixTester.test_pidfd_open",
        when: When::KernelBefore(5, 3),
        native: "pass",
        guest: "skip",
        reason: "uses pidfd_open (5.3): ENOSYS, the test skips",
    },
    Allowed {
        case: "test.test_posix.PosixTester.test_preadv_flags",
        when: When::KernelBefore(4, 6),
        native: "pass",
        guest: "skip",
        reason: "preadv2 (4.6) with RWF_HIPRI: ENOSYS, glibc reports EOPNOTSUPP, the test skips",
    },
    Allowed {
        case: "test.test_signal.PidfdSignalTest.test_pidfd_send_signal",
        when: When::KernelBefore(5, 1),
        native: "pass",
        guest: "skip",
        reason: "uses pidfd_send_signal (5.1): ENOSYS, the test skips",
    },
    // Legacy personas start the guest with the soft RLIMIT_NOFILE lowered to 1024, the
    // old kernels' default (compatrun --nofile). Where the host's soft limit is higher,
    // the test can reach EMFILE in its 1026 opens only under the persona.
    Allowed {
        case: "test.test_subprocess.ProcessTestCase.test_no_leaking",
        when: When::Legacy,
        native: "skip",
        guest: "pass",
        reason: "soft RLIMIT_NOFILE 1024 under legacy personas: natively (higher limit) the \
                 test skips, 'failed to reach the file descriptor limit (tried 1026)'",
    },
    Allowed {
        case: "test.test_subprocess.ProcessTestCaseNoPoll.test_no_leaking",
        when: When::Legacy,
        native: "skip",
        guest: "pass",
        reason: "soft RLIMIT_NOFILE 1024 under legacy personas: natively (higher limit) the \
                 test skips, 'failed to reach the file descriptor limit (tried 1026)'",
    },
];

/// Which personas an [`Allowed`] difference applies to.
#[derive(Clone, Copy, Debug)]
pub enum When {
    /// Personas whose kernel is older than this version (what the case needs came then).
    KernelBefore(u32, u32),
    /// Every persona with a kernel version (everything but `host`).
    Legacy,
}

impl Allowed {
    pub fn applies(&self, kernel: (u32, u32)) -> bool {
        match self.when {
            When::KernelBefore(major, minor) => kernel < (major, minor),
            When::Legacy => true,
        }
    }

    pub fn matches(&self, id: &str) -> bool {
        match self.case.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => id == self.case,
        }
    }
}

/// Who runs the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Native,
    Persona(&'static str),
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Native => "native",
            Side::Persona(p) => p,
        }
    }

    /// The allow-list entries that apply under this side.
    pub fn allowed(self) -> Vec<&'static Allowed> {
        match self {
            Side::Persona(p) if p == LEGACY.0 => {
                ALLOWED.iter().filter(|a| a.applies(LEGACY.1)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The allow-list entry that changes case `id`'s outcome `native` on this side.
    ///
    /// An entry for a call the persona's kernel lacks that makes the case skip covers
    /// whatever the case did natively (pass, fail or error): the test never reaches what
    /// it would have failed at, so a native failure turned into that skip is expected
    /// too (natively test_pidfd_send_signal fails when SIGINT is ignored, for one).
    pub fn allowance(self, id: &str, native: &str) -> Option<&'static Allowed> {
        self.allowed().into_iter().find(|a| {
            a.matches(id)
                && (a.native == native
                    || (matches!(a.when, When::KernelBefore(..))
                        && a.guest == "skip"
                        && a.native == "pass"
                        && ["fail", "error"].contains(&native)))
        })
    }

    /// The outcome this side should have where native had `native`.
    pub fn expect<'a>(self, id: &str, native: &'a str) -> &'a str {
        self.allowance(id, native).map_or(native, |a| a.guest)
    }
}
