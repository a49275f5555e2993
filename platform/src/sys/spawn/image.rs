//! What the parent prepares before `fork` for the child and the init: the owned
//! instructions ([`ChildImage`]), the raw pointer arrays `execve` takes
//! ([`ExecPointers`]), and the child's view of both with its descriptors
//! ([`ChildCtx`]). Nothing here runs between fork and exec except [`ChildCtx::fail`].

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::wire::{self, ChildFailure, ChildStage, Message};
use crate::command::GuestCommand;
use crate::filter::Insn;
use crate::userns::{IdMap, UserNamespace};

/// Everything the child needs, allocated before `fork`.
#[derive(Debug)]
pub struct ChildImage {
    pub(super) path: CString,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    pub(super) sh_argv: Vec<CString>,
    pub(super) cwd: Option<CString>,
    pub(super) nofile_soft: Option<u64>,
    pub(super) sigpipe_ignored: bool,
    pub(super) pid_ns: bool,
    pub(super) synthetic: Vec<(CString, Vec<u8>)>,
    /// Per STAGING directory, a file name for each synthetic file.
    pub(super) staging: Vec<Vec<CString>>,
    /// Per synthetic file, where it also goes in the other `proc` mounts the guest sees
    /// when it starts (`crate::procfs`; best effort: a failure there is skipped).
    pub(super) synthetic_extra: Vec<Vec<CString>>,
    /// Per STAGING directory, whether a tmpfs over it would hide one of those targets.
    pub(super) staging_hides: Vec<bool>,
    pub(super) filter: Vec<Insn>,
    /// The front end's own filters and their flags, installed after `filter`.
    pub(super) extra: Vec<(Vec<Insn>, u32)>,
    pub(super) no_new_privs: bool,
    /// Seccomp user notification: install the filter with a listener, send it to the
    /// parent, and keep the pid namespace's init bound to the parent's life.
    pub(super) notify: bool,
    /// The root filesystem's plan, carried out by the init.
    pub(super) rootfs: Option<crate::rootfs::Plan>,
    /// With a root filesystem: where the program may be inside it, tried in order.
    pub(super) candidates: Vec<CString>,
    /// The user and group the guest's first process switches to.
    pub(super) user: Option<(u32, u32)>,
    /// The allow-list the pid namespace's init puts itself under once the guest runs
    /// (`filter::allow::init_lockdown`).
    pub(super) init_filter: Vec<Insn>,
    /// Its supplementary groups (with `user`; `None`: the group alone).
    pub(super) groups: Option<Vec<libc::gid_t>>,
    /// The capabilities it keeps.
    pub(super) caps: Option<crate::CapSets>,
    /// The descriptor it waits on before its exec.
    pub(super) gate: Option<i32>,
    /// A mount namespace it joins first.
    pub(super) join_mnt: Option<i32>,
    /// The parent's children start in a pid namespace it joined (`setns`): the child
    /// then sees its parent as pid 0.
    pub(super) joined_pid_ns: bool,
    /// A terminal the guest's first process makes for itself.
    pub(super) terminal: Option<crate::command::TerminalSpec>,
    /// A new user namespace for the child (made with its pid namespace): the uid and
    /// gid maps the parent writes before the child goes on.
    pub(super) new_user_ns: Option<(String, String)>,
    /// A user namespace the child joins before its mount namespace.
    pub(super) join_user: Option<i32>,
    /// `CLONE_NEW*` flags the child unshares once it is its user namespace's root.
    pub(super) unshare: i32,
    /// Sysctls the init writes then: `/proc/sys/...` and the value.
    pub(super) sysctls: Vec<(CString, Vec<u8>)>,
}

/// Directories that may briefly hold a private tmpfs while synthetic files are made
/// (inside the guest's own mount namespace; the first that works is used).
pub(super) const STAGING: [&CStr; 4] = [c"/tmp", c"/mnt", c"/run", c"/dev"];

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", s),
        )
    })
}

/// One of the front end's filters, checked, as the kernel takes it.
fn extra_program(f: &crate::ExtraFilter) -> io::Result<(Vec<Insn>, u32)> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if f.flags & !crate::ExtraFilter::ALLOWED_FLAGS != 0 {
        return Err(invalid(format!(
            "seccomp filter flags {:#x}: only TSYNC, LOG and SPEC_ALLOW are accepted",
            f.flags
        )));
    }
    if f.program.is_empty() || f.program.len() > 4096 {
        return Err(invalid(format!(
            "a seccomp filter of {} instructions (1 to 4096 are accepted)",
            f.program.len()
        )));
    }
    let prog = f
        .program
        .iter()
        .map(|i| Insn {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    Ok((prog, f.flags))
}

/// `cmd`'s user namespace for the image: the maps the parent writes for a new one, and
/// the one the child joins; checked against the pid namespace each needs.
#[allow(clippy::type_complexity)]
fn user_namespace(cmd: &GuestCommand) -> io::Result<(Option<(String, String)>, Option<i32>)> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if !cmd.namespaces.is_empty() && !matches!(cmd.user_ns, Some(UserNamespace::New(_))) {
        return Err(invalid(
            "new namespaces for the guest go with a user namespace of its own".into(),
        ));
    }
    match &cmd.user_ns {
        None | Some(UserNamespace::Enter(_)) => Ok((None, None)),
        Some(UserNamespace::New(map)) => {
            if !cmd.pid_ns {
                return Err(invalid(
                    "a user namespace of the guest's own needs its own pid namespace".into(),
                ));
            }
            map.check(true).map_err(|e| invalid(e.to_string()))?;
            Ok((Some((IdMap::text(&map.uid), IdMap::text(&map.gid))), None))
        }
        Some(UserNamespace::Join(fd)) => {
            if cmd.pid_ns || cmd.join_mount_ns.is_none() {
                return Err(invalid(
                    "joining a user namespace goes with joining a mount namespace, without a pid namespace of the guest's own".into(),
                ));
            }
            Ok((None, Some(*fd)))
        }
    }
}

/// `cmd`'s sysctls as the files the init writes; a name that would lead out of
/// `/proc/sys` is refused.
fn sysctls(cmd: &GuestCommand) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if !cmd.sysctls.is_empty() && !cmd.pid_ns {
        return Err(invalid(
            "sysctls for the guest need its own pid namespace".into(),
        ));
    }
    cmd.sysctls
        .iter()
        .map(|(name, value)| {
            if name.is_empty()
                || name
                    .split(['.', '/'])
                    .any(|part| part.is_empty() || part == "..")
            {
                return Err(invalid(format!("sysctl {name:?}: not a sysctl name")));
            }
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            Ok((cstring(OsStr::new(&path))?, value.as_bytes().to_vec()))
        })
        .collect()
}

impl ChildImage {
    /// Prepares the exec of `cmd` under the seccomp program `filter`.
    pub fn new(cmd: &GuestCommand, filter: Vec<Insn>, no_new_privs: bool) -> io::Result<Self> {
        let (new_user_ns, join_user) = user_namespace(cmd)?;
        let path = cstring(&cmd.program)?;
        let argv = cmd
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = cmd
            .env
            .iter()
            .map(|e| cstring(e))
            .collect::<io::Result<Vec<_>>>()?;
        // execvp's fallback for a file without a #! line: run it with /bin/sh.
        let mut sh_argv = vec![CString::from(c"/bin/sh"), path.clone()];
        sh_argv.extend(argv.iter().skip(1).cloned());
        let cwd = cmd.cwd.as_deref().map(cstring).transpose()?;
        let extra = crate::procfs::extra_targets(&cmd.synthetic_files, cmd.root.as_ref());
        let staging_hides = STAGING
            .iter()
            .map(|d| {
                let dir = std::path::Path::new(OsStr::from_bytes(d.to_bytes()));
                extra
                    .iter()
                    .flatten()
                    .any(|t| crate::procfs::covers(dir, t))
            })
            .collect();
        let synthetic_extra = extra
            .iter()
            .map(|targets| targets.iter().map(|t| cstring(t.as_os_str())).collect())
            .collect::<io::Result<_>>()?;
        Ok(ChildImage {
            path,
            argv,
            envp,
            sh_argv,
            cwd,
            nofile_soft: cmd.nofile_soft,
            sigpipe_ignored: crate::sys::signals::sigpipe_ignored_at_start(),
            pid_ns: cmd.pid_ns,
            synthetic: cmd
                .synthetic_files
                .iter()
                .map(|(path, data)| Ok((cstring(path)?, data.clone())))
                .collect::<io::Result<_>>()?,
            staging: STAGING
                .iter()
                .map(|dir| {
                    (0..cmd.synthetic_files.len())
                        .map(|i| {
                            let mut p = dir.to_bytes().to_vec();
                            p.extend_from_slice(format!("/compatrun-{i}").as_bytes());
                            CString::new(p).unwrap_or_default()
                        })
                        .collect()
                })
                .collect(),
            synthetic_extra,
            staging_hides,
            filter,
            extra: cmd
                .extra_filters
                .iter()
                .map(extra_program)
                .collect::<io::Result<_>>()?,
            no_new_privs,
            notify: false,
            rootfs: cmd.root.as_ref().map(crate::rootfs::plan).transpose()?,
            candidates: match &cmd.root {
                Some(root) => crate::rootfs::candidates(&cmd.program, &root.path)
                    .iter()
                    .map(|c| cstring(c))
                    .collect::<io::Result<_>>()?,
                None => Vec::new(),
            },
            user: cmd.user,
            init_filter: crate::filter::allow::init_lockdown(),
            groups: cmd.groups.clone(),
            caps: cmd.capabilities,
            gate: cmd.start_gate,
            join_mnt: cmd.join_mount_ns,
            joined_pid_ns: std::fs::read_link("/proc/self/ns/pid_for_children").ok()
                != std::fs::read_link("/proc/self/ns/pid").ok(),
            terminal: cmd.terminal,
            new_user_ns,
            join_user,
            unshare: cmd.namespaces.iter().fold(0, |f, n| f | n.flag()),
            sysctls: sysctls(cmd)?,
        })
    }

    /// Makes the guest's filter report to a listener that the parent receives
    /// ([`super::Spawned::listener`]) instead of to a tracer, and the pid namespace's
    /// init report the guest's job-control stops ([`super::Spawned::read_report`]).
    /// Needs a pid namespace: the init dies with the parent (parent-death signal), and
    /// the kernel then kills every process in the namespace, so no guest code runs
    /// unsupervised.
    pub fn with_notify(mut self) -> Self {
        self.notify = true;
        self
    }

    /// The pointer arrays for `execve` and `seccomp`, built before fork (the child must
    /// not allocate). They point into `self`, which must outlive them.
    pub(super) fn pointers(&self) -> io::Result<ExecPointers> {
        let nul_terminated = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(ExecPointers {
            argv: nul_terminated(&self.argv),
            envp: nul_terminated(&self.envp),
            sh_argv: nul_terminated(&self.sh_argv),
            // Per candidate inside a root filesystem: `/bin/sh CANDIDATE ARGS...`,
            // execvp's fallback for the candidate the kernel refused with ENOEXEC.
            candidate_sh_argv: self
                .candidates
                .iter()
                .map(|c| {
                    [c"/bin/sh".as_ptr(), c.as_ptr()]
                        .into_iter()
                        .chain(self.argv.iter().skip(1).map(|a| a.as_ptr()))
                        .chain(std::iter::once(std::ptr::null()))
                        .collect()
                })
                .collect(),
            prog: libc::sock_fprog {
                len: u16::try_from(self.filter.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long")
                })?,
                filter: self.filter.as_ptr().cast_mut(),
            },
            init_prog: libc::sock_fprog {
                len: u16::try_from(self.init_filter.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seccomp program too long")
                })?,
                filter: self.init_filter.as_ptr().cast_mut(),
            },
            extra: self
                .extra
                .iter()
                .map(|(prog, flags)| {
                    Ok((
                        libc::sock_fprog {
                            len: u16::try_from(prog.len()).map_err(|_| {
                                io::Error::new(
                                    io::ErrorKind::InvalidInput,
                                    "seccomp program too long",
                                )
                            })?,
                            filter: prog.as_ptr().cast_mut(),
                        },
                        *flags,
                    ))
                })
                .collect::<io::Result<_>>()?,
        })
    }
}

/// The raw pointer arrays the child hands to the kernel, pointing into a [`ChildImage`].
pub(super) struct ExecPointers {
    pub(super) argv: Vec<*const libc::c_char>,
    pub(super) envp: Vec<*const libc::c_char>,
    pub(super) sh_argv: Vec<*const libc::c_char>,
    /// `sh_argv` for each of the image's candidates, in the same order.
    pub(super) candidate_sh_argv: Vec<Vec<*const libc::c_char>>,
    pub(super) prog: libc::sock_fprog,
    /// The init's own allow-list (see [`ChildImage`]'s `init_filter`).
    pub(super) init_prog: libc::sock_fprog,
    /// The front end's filters and their `seccomp(2)` flags.
    pub(super) extra: Vec<(libc::sock_fprog, u32)>,
}

/// The child's view after fork: its instructions, their pointers, and its descriptors.
pub(super) struct ChildCtx<'a> {
    /// compatrun's pid (the child's parent, unless in a new pid namespace).
    pub(super) parent: libc::pid_t,
    pub(super) go_r: i32,
    pub(super) go_w: i32,
    pub(super) err_r: i32,
    pub(super) err_w: i32,
    /// Notify mode: our end of the socket the listener goes to (else -1).
    pub(super) listen: i32,
    /// Notify mode: the init's report pipe (else -1).
    pub(super) report: i32,
    pub(super) image: &'a ChildImage,
    pub(super) ptrs: &'a ExecPointers,
}

impl ChildCtx<'_> {
    /// Reports `stage` and `err` on the error pipe and exits with `code` (never returns).
    /// Async-signal-safe.
    pub(super) fn fail(&self, stage: ChildStage, err: i32, code: i32) -> ! {
        wire::send_raw(
            self.err_w,
            Message::Failed(ChildFailure { stage, errno: err }),
        );
        // SAFETY: _exit(2) is async-signal-safe and takes no memory.
        unsafe { libc::_exit(code) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BpfInsn, ExtraFilter};

    fn allow_all() -> Vec<BpfInsn> {
        vec![BpfInsn {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: crate::filter::RET_ALLOW,
        }]
    }

    #[test]
    fn a_front_ends_filter_never_makes_a_listener_and_has_a_sane_length() {
        let ok = ExtraFilter {
            program: allow_all(),
            flags: ExtraFilter::FLAG_LOG | ExtraFilter::FLAG_SPEC_ALLOW,
        };
        let (prog, flags) = extra_program(&ok).expect("accepted");
        assert_eq!(
            (prog.len(), prog[0].k, flags),
            (1, crate::filter::RET_ALLOW, 6)
        );
        // SECCOMP_FILTER_FLAG_NEW_LISTENER: the guest would get a listener.
        let listener = ExtraFilter {
            program: allow_all(),
            flags: 1 << 3,
        };
        assert!(extra_program(&listener).is_err());
        let empty = ExtraFilter::default();
        assert!(extra_program(&empty).is_err());
        let long = ExtraFilter {
            program: vec![allow_all()[0]; 4097],
            flags: 0,
        };
        assert!(extra_program(&long).is_err());
    }

    fn command(pid_ns: bool) -> GuestCommand {
        GuestCommand {
            program: "/bin/true".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: None,
            nofile_soft: None,
            pid_ns,
            synthetic_files: Vec::new(),
            root: None,
            user: None,
            user_ns: None,
            namespaces: Vec::new(),
            sysctls: Vec::new(),
            groups: None,
            capabilities: None,
            start_gate: None,
            join_mount_ns: None,
            extra_filters: Vec::new(),
            terminal: None,
        }
    }

    fn map() -> IdMap {
        let line = crate::IdRange {
            inside: 0,
            outside: 100_000,
            count: 65536,
        };
        IdMap {
            uid: vec![line],
            gid: vec![line],
        }
    }

    #[test]
    fn a_user_namespace_goes_with_the_namespaces_it_needs() {
        // A new one: with a pid namespace, its maps as the parent writes them.
        let mut cmd = command(true);
        cmd.user_ns = Some(UserNamespace::New(map()));
        cmd.namespaces = vec![crate::Namespace::Net, crate::Namespace::Uts];
        let (new, join) = user_namespace(&cmd).expect("accepted");
        let text = "0 100000 65536\n".to_owned();
        assert_eq!(new, Some((text.clone(), text)));
        assert_eq!(join, None);
        // Not without a pid namespace, nor with a map the kernel would refuse.
        cmd.pid_ns = false;
        assert!(user_namespace(&cmd).is_err());
        let mut bad = map();
        bad.gid[0].count = 0;
        let mut cmd = command(true);
        cmd.user_ns = Some(UserNamespace::New(bad));
        assert!(user_namespace(&cmd).is_err());
        // New namespaces only inside a user namespace of the guest's own.
        let mut cmd = command(true);
        cmd.namespaces = vec![crate::Namespace::Ipc];
        assert!(user_namespace(&cmd).is_err());
        // Joining goes with a mount namespace to join, without a pid namespace.
        let mut cmd = command(false);
        cmd.user_ns = Some(UserNamespace::Join(7));
        assert!(user_namespace(&cmd).is_err());
        cmd.join_mount_ns = Some(8);
        assert_eq!(user_namespace(&cmd).expect("accepted"), (None, Some(7)));
        cmd.pid_ns = true;
        assert!(user_namespace(&cmd).is_err());
        // compatrun's own (an ordinary user's) is entered before the fork, not here.
        let mut cmd = command(false);
        cmd.user_ns = Some(UserNamespace::Enter(map()));
        assert_eq!(user_namespace(&cmd).expect("accepted"), (None, None));
    }

    #[test]
    fn sysctl_names_stay_below_proc_sys() {
        let mut cmd = command(true);
        cmd.sysctls = vec![("net.ipv4.ip_forward".into(), "1".into())];
        let files = sysctls(&cmd).expect("accepted");
        assert_eq!(
            files,
            vec![(
                CString::new("/proc/sys/net/ipv4/ip_forward").expect("path"),
                b"1".to_vec()
            )]
        );
        for bad in [
            "",
            "net..ipv4",
            "../../etc/passwd",
            "net/../../x",
            "kernel.",
        ] {
            cmd.sysctls = vec![(bad.into(), "1".into())];
            assert!(sysctls(&cmd).is_err(), "{bad:?}");
        }
        let mut cmd = command(false);
        cmd.sysctls = vec![("kernel.shmmni".into(), "1".into())];
        assert!(
            sysctls(&cmd).is_err(),
            "sysctls need the guest's own pid namespace"
        );
    }
}
