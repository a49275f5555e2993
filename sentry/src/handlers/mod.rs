//! The handlers: one module per emulated behaviour, and [`TABLE`], one row per caught
//! system call naming its ABIs, which personas catch it, its handler and how far the
//! emulation goes. The policy catches exactly the rows' calls (where the persona's kernel
//! had them, by the reviewed syscall table) and the sentry dispatches through the rows:
//! adding a handler is one row.

pub mod exec_stop;
pub mod mount;
pub mod procfs;
pub mod removed;
pub mod sysctl;
pub mod too_old;
pub mod uname;
pub mod vdso;
pub mod vsyscall;

use std::ffi::OsString;

use platform::{Arch, GuestThread, Syscall, Verdict};

use crate::persona::Uname;
use removed::Removed;
use uname::Layout;

/// What a handler may consult besides the thread and the call: the run's state.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The persona's identity (present for every row that [`When::Identity`] selects).
    pub identity: Option<&'a Uname>,
    /// The guest's own host name (`--hostname`), if it has one.
    pub nodename: Option<&'a [u8]>,
    /// The persona's identity files (path, contents).
    pub identity_files: &'a [(OsString, Vec<u8>)],
}

/// A handler: answers one caught call, or forwards it.
pub type HandlerFn = fn(&mut dyn GuestThread, &Syscall, &Context<'_>) -> Verdict;

/// Which personas catch a row's call (always only where the persona's kernel had it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Personas with a `[uname]` identity.
    Identity,
    /// Personas with a kernel version (every legacy persona).
    Legacy,
}

/// One caught system call.
#[derive(Clone, Copy)]
pub struct Row {
    /// The call's name in the syscall table.
    pub name: &'static str,
    /// The ABIs it is caught on.
    pub abis: &'static [Arch],
    /// Which personas catch it. The minimum kernel is the syscall table's: a persona
    /// catches the call only if its kernel had it on that ABI.
    pub when: When,
    /// The handler.
    pub handler: HandlerFn,
    /// How far the emulation goes, for readers and listings.
    pub support: &'static str,
    /// Whether the call's answer is a pure function of the persona and the real call,
    /// so that a patched wrapper can answer it in the guest (`patch::calls`): only
    /// x86_64 `uname`. The others read files or state with compatrun's eyes, or decide
    /// from the caller's privileges (`_sysctl`, `mount`, the removed calls), or are
    /// i386-only (the old `uname`s), where calls stay per-call emulated.
    pub in_guest: bool,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("name", &self.name)
            .field("abis", &self.abis)
            .field("when", &self.when)
            .finish_non_exhaustive()
    }
}

const ALL_ABIS: &[Arch] = &[Arch::X86_64, Arch::X32, Arch::I386];
const X86_64_AND_I386: &[Arch] = &[Arch::X86_64, Arch::I386];
const I386: &[Arch] = &[Arch::I386];

fn uname_as(
    mut g: &mut dyn GuestThread,
    call: &Syscall,
    cx: &Context<'_>,
    layout: Layout,
) -> Verdict {
    match cx.identity {
        Some(id) => uname::handle(&mut g, call, id, layout, cx.nodename),
        None => Verdict::Forward,
    }
}

/// Every caught call, one row each.
pub const TABLE: &[Row] = &[
    Row {
        name: "uname",
        abis: ALL_ABIS,
        when: When::Identity,
        handler: |g, c, cx| uname_as(g, c, cx, Layout::New),
        support: "full: the persona's release and version, the host's other fields",
        in_guest: true,
    },
    Row {
        name: "olduname",
        abis: I386,
        when: When::Identity,
        handler: |g, c, cx| uname_as(g, c, cx, Layout::Old),
        support: "full (old_utsname)",
        in_guest: false,
    },
    Row {
        name: "oldolduname",
        abis: I386,
        when: When::Identity,
        handler: |g, c, cx| uname_as(g, c, cx, Layout::OldOld),
        support: "full (9-byte fields)",
        in_guest: false,
    },
    Row {
        name: "mount",
        abis: ALL_ABIS,
        when: When::Identity,
        handler: |mut g, c, cx| mount::handle(&mut g, c, cx.identity_files),
        support: "a new proc is mounted by compatrun in the guest's namespaces with the \
                  persona's files over it; every other mount runs natively",
        in_guest: false,
    },
    Row {
        name: "_sysctl",
        abis: X86_64_AND_I386,
        when: When::Legacy,
        handler: |mut g, c, cx| {
            sysctl::handle(&mut g, c, sysctl::SysctlTable::shared(), cx.identity_files)
        },
        support: "the names in data/sysctl_binary.tbl, through /proc/sys, with the old errors",
        in_guest: false,
    },
    Row {
        name: "lookup_dcookie",
        abis: X86_64_AND_I386,
        when: When::Legacy,
        handler: |mut g, c, _| removed::handle(&mut g, c, Removed::LookupDcookie),
        support: "as with no profiler running: EPERM, or EINVAL with CAP_SYS_ADMIN",
        in_guest: false,
    },
    Row {
        name: "nfsservctl",
        abis: X86_64_AND_I386,
        when: When::Legacy,
        handler: |mut g, c, _| removed::handle(&mut g, c, Removed::Nfsservctl),
        support: "arguments checked, then ENODEV (no nfsd filesystem for the guest)",
        in_guest: false,
    },
    Row {
        name: "uselib",
        abis: X86_64_AND_I386,
        when: When::Legacy,
        handler: |mut g, c, _| removed::handle(&mut g, c, Removed::Uselib),
        support: "the library checked as the kernel did, then ENOEXEC (no a.out support)",
        in_guest: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::SyscallTable;

    #[test]
    fn every_row_names_a_call_the_table_has_on_each_of_its_abis() {
        let table = SyscallTable::builtin().expect("the built-in table");
        for row in TABLE {
            let entry = table
                .get(row.name)
                .unwrap_or_else(|| panic!("{}", row.name));
            for &arch in row.abis {
                assert!(entry.on(arch).is_some(), "{} on {arch}", row.name);
            }
            assert!(!row.support.is_empty(), "{}", row.name);
        }
        let mut names: Vec<_> = TABLE.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len(), "one row per call");
        let in_guest: Vec<_> = TABLE
            .iter()
            .filter(|r| r.in_guest)
            .map(|r| r.name)
            .collect();
        assert_eq!(in_guest, ["uname"], "the patcher has a stub for uname only");
    }
}
