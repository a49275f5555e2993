//! What a caught system call means under a kernel persona.
//!
//! This crate owns the persona data ([`persona`], [`table`]), the policy that turns a
//! persona into the platform's [`InterceptSpec`] ([`policy`]), and the handlers that
//! emulate what the persona's kernel did differently ([`handlers`]). It never names
//! ptrace or a notification fd: handlers see a stopped thread only through
//! [`platform::GuestThread`].

#![deny(missing_docs)]

pub mod elf;
pub mod handlers;
pub mod patch;
pub mod persona;
pub mod policy;
pub mod table;
pub mod version;
pub mod x86;

use platform::{
    Arch, GuestThread, InterceptSpec, Regs, SignalInfo, SignalVerdict, Supervisor, Syscall, Verdict,
};

pub use persona::{Persona, PersonaError};
pub use table::SyscallTable;
pub use version::KernelVersion;

use handlers::Row;

/// The sentry for one run: a persona, compiled into a spec and a dispatch table.
#[derive(Debug)]
pub struct Sentry {
    persona: Persona,
    spec: InterceptSpec,
    dispatch: Vec<(Arch, u32, &'static Row)>,
    too_old: handlers::too_old::TooOld,
    /// Where the vDSO images seen so far keep their version note.
    vdso_notes: handlers::vdso::VdsoNotes,
    /// Which programs need an exec stop (seccomp platform).
    exec_stops: handlers::exec_stop::ExecStops,
    identity_files: Vec<(std::ffi::OsString, Vec<u8>)>,
    nodename: Option<Vec<u8>>,
    patcher: patch::Patcher,
}

impl Sentry {
    /// Prepares the sentry for `persona`.
    pub fn new(persona: Persona, table: &SyscallTable) -> Result<Self, table::TableError> {
        let mut policy = policy::Policy::build(&persona, table);
        let uname = in_guest_uname(&persona, &policy.spec);
        if uname.is_some() {
            policy.spec.allow_from_ip.extend(uname_stub_ips());
        }
        let identity_files = persona
            .uname
            .as_ref()
            .map(handlers::procfs::files)
            .unwrap_or_default();
        Ok(Sentry {
            patcher: patch::Patcher::new(true, &policy.spec, uname),
            identity_files,
            persona,
            spec: policy.spec,
            dispatch: policy.dispatch,
            too_old: handlers::too_old::TooOld::default(),
            vdso_notes: handlers::vdso::VdsoNotes::default(),
            exec_stops: handlers::exec_stop::ExecStops::default(),
            nodename: None,
        })
    }

    /// What the platform must catch and refuse.
    pub fn intercept_spec(&self) -> &InterceptSpec {
        &self.spec
    }

    /// Files the guest should see instead of the host's (the persona's identity in
    /// /proc); empty for a persona that keeps the host's identity.
    pub fn synthetic_files(&self) -> Vec<(std::ffi::OsString, Vec<u8>)> {
        self.persona
            .uname
            .as_ref()
            .map(handlers::procfs::files)
            .unwrap_or_default()
    }

    /// Whether this persona needs exec-time work for `program` (resolved inside `root`,
    /// the guest's `/`): it has a kernel version, and the program's C library checks
    /// that version at start-up, reading it from the vDSO's note ("kernel too old").
    pub fn needs_exec_hook(&self, root: &std::path::Path, program: &std::path::Path) -> bool {
        self.persona.kernel.is_some() && handlers::too_old::checks_kernel_version(root, program)
    }

    /// The host name the guest's own UTS namespace has (`--hostname`): the emulated
    /// `uname` reports it instead of compatrun's.
    pub fn set_nodename(&mut self, name: Option<&str>) {
        self.nodename = name.map(|n| n.as_bytes().to_vec());
    }

    /// Whether vsyscall call sites are patched (the default) or every call into the
    /// missing page is emulated ([`patch`]).
    /// Off, the filter no longer lets the `uname` stub's own call through either.
    pub fn set_patching(&mut self, on: bool) {
        let hook = self.patcher.mid_patch_hook();
        let uname = in_guest_uname(&self.persona, &self.spec);
        let stubs = uname_stub_ips();
        self.spec.allow_from_ip.retain(|a| !stubs.contains(a));
        if on && uname.is_some() {
            self.spec.allow_from_ip.extend(stubs);
        }
        self.patcher = patch::Patcher::new(on, &self.spec, uname);
        self.patcher.set_mid_patch_hook(hook);
    }

    /// A hook called in the middle of every call site's rewrite, for compatrun's own
    /// fault tests ([`patch::MidPatchHook`]).
    pub fn set_mid_patch_hook(&mut self, hook: Option<patch::MidPatchHook>) {
        self.patcher.set_mid_patch_hook(hook);
    }

    /// What happened to calls into the missing vsyscall page, for `--log info`; `None`
    /// when there were none.
    /// Also says how many emulated calls' wrappers now answer in the guest.
    pub fn vsyscall_summary(&self) -> Option<String> {
        let t = self.patcher.totals();
        let vsyscall = (t.emulated > 0).then(|| {
            format!(
                "vsyscall: {} call sites patched, {} calls emulated, {} trampoline pages mapped",
                t.sites - t.call_sites,
                t.emulated,
                t.trampolines
            )
        });
        let calls = (t.call_sites > 0).then(|| {
            format!(
                "in-guest answers: {} uname call sites patched, {} trampoline pages mapped",
                t.call_sites, t.trampolines
            )
        });
        match (vsyscall, calls) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        }
    }

    /// The persona in force.
    pub fn persona(&self) -> &Persona {
        &self.persona
    }

    /// How many guest call sites the sentry has patched so far (a run report attributes
    /// each increase to the program of the thread being handled).
    pub fn sites_patched(&self) -> u64 {
        self.patcher.totals().sites
    }
}

/// The persona's part of `uname`'s answer, if its x86_64 `uname` is caught (the
/// trampoline page then carries a stub that answers it in the guest).
fn in_guest_uname(persona: &Persona, spec: &InterceptSpec) -> Option<Vec<u8>> {
    let caught = spec.rule_for(Arch::X86_64, patch::UNAME_NR) == platform::Rule::Catch;
    persona
        .uname
        .as_ref()
        .filter(|_| caught)
        .map(handlers::uname::persona_bytes)
}

/// Where the `uname` stub's own call comes from, in each candidate trampoline page: the
/// filter lets x86_64 `uname` through from there.
fn uname_stub_ips() -> Vec<(u32, u64)> {
    patch::CANDIDATES
        .iter()
        .map(|base| (patch::UNAME_NR, base + patch::UNAME_RETURN))
        .collect()
}

impl Supervisor for Sentry {
    fn syscall<G: GuestThread>(&mut self, thread: &mut G, call: &Syscall) -> Verdict {
        let Some((_, _, row)) = self
            .dispatch
            .iter()
            .find(|(a, n, _)| *a == call.arch && *n == call.nr)
        else {
            // Caught but not ours to change: run it as the guest asked.
            return Verdict::Forward;
        };
        let cx = handlers::Context {
            identity: self.persona.uname.as_ref(),
            nodename: self.nodename.as_deref(),
            identity_files: &self.identity_files,
        };
        let verdict = (row.handler)(thread, call, &cx);
        if row.in_guest && matches!(verdict, Verdict::Return(_)) {
            self.patcher.emulated_call(thread, call);
        }
        verdict
    }

    fn execed<G: GuestThread>(&mut self, thread: &mut G) {
        // After an exec the thread leads its process (the kernel gives it the group's id).
        self.patcher.execed(thread.tid());
        if let Some(v) = self.persona.kernel {
            // Only a C library that reads the note (glibc before 2.35) needs it rewritten.
            if self.too_old.execed(thread.tid(), v) {
                self.vdso_notes.rewrite_version(thread, v);
            }
        }
    }

    fn exec_needs_stop<G: GuestThread>(&mut self, thread: &mut G, call: &Syscall) -> bool {
        if self.persona.kernel.is_none() {
            return false;
        }
        let needed = self.exec_stops.needed(thread, call);
        if !needed {
            // Not shown the exec: what was kept for the old image goes now.
            self.patcher.execed(thread.tgid());
            self.too_old.forget(thread.tid());
        }
        needed
    }

    fn exited(&mut self, tid: i32, status: platform::ExitStatus) {
        self.patcher.exited(tid);
        let Some(v) = self.persona.kernel else { return };
        let code = match status {
            platform::ExitStatus::Exited(c) => Some(c),
            platform::ExitStatus::Signaled { .. } => None,
        };
        if let Some(line) = self.too_old.exited(tid, code, &self.persona.name, v) {
            log::warn!("{line}");
        }
    }

    fn signal<G: GuestThread>(
        &mut self,
        thread: &mut G,
        info: &SignalInfo,
        regs: &mut Regs,
    ) -> SignalVerdict {
        if self.persona.kernel.is_some() {
            if let Some(entry) = handlers::vsyscall::fault_entry(info, regs) {
                self.patcher.fault(thread, entry, regs);
            }
            handlers::vsyscall::handle(thread, info, regs)
        } else {
            SignalVerdict::Deliver
        }
    }
}
