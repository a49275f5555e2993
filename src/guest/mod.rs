//! One way to describe a guest: [`GuestBuilder`] turns what a front end knows (a command
//! line, an image's config, an OCI bundle's config.json) into the platform's
//! [`GuestCommand`], and says where the program is for the platform choice. The front end
//! chooses the root filesystem's layout ([`layout::default`] for the command line); the
//! builder resolves the program, the user and the working directory, and decides between
//! switching ids (root) and a user namespace (an ordinary user).

pub mod layout;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::{GuestCommand, MountSpec};
use sentry::Sentry;

/// The PATH a guest in a tree gets when its environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A root filesystem for the guest.
#[derive(Clone, Debug)]
pub struct RootFs {
    /// The tree (canonical).
    pub dir: PathBuf,
    /// What is mounted, made and linked in it, in order.
    pub layout: Vec<MountSpec>,
    /// The guest's host name (its own UTS namespace).
    pub hostname: Option<String>,
    /// An empty directory for a throw-away overlay over `dir` (images).
    pub overlay: Option<PathBuf>,
}

/// What a front end knows about the guest it wants.
#[derive(Clone, Debug, Default)]
pub struct GuestBuilder {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    workdir: Option<OsString>,
    user: Option<(String, String)>,
    nofile_soft: Option<u64>,
    pid_ns: bool,
    root: Option<RootFs>,
    groups: Option<Vec<u32>>,
    capabilities: Option<platform::CapSets>,
    start_gate: Option<std::os::fd::RawFd>,
    join: Option<(std::os::fd::RawFd, PathBuf)>,
    extra_filters: Vec<platform::ExtraFilter>,
    terminal: Option<platform::TerminalSpec>,
    user_ns: Option<platform::UserNamespace>,
    namespaces: Vec<platform::Namespace>,
    sysctls: Vec<(String, String)>,
}

/// The description the platform runs, and where its program is (the root it runs in, the
/// program's path as seen from here) for the platform choice, when that is known.
#[derive(Debug)]
pub struct Built {
    /// What the platform runs.
    pub command: GuestCommand,
    /// The tree and the program's path in it.
    pub exec_target: Option<(PathBuf, PathBuf)>,
}

impl GuestBuilder {
    /// A guest running `argv` (the program first) with an empty environment.
    pub fn new(argv: Vec<OsString>) -> Self {
        GuestBuilder {
            argv,
            ..GuestBuilder::default()
        }
    }

    /// Sets (or replaces) an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets every variable of `vars`, in order.
    pub fn envs<K: Into<OsString>, V: Into<OsString>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// The working directory (inside the tree, if there is one).
    pub fn workdir(mut self, dir: Option<OsString>) -> Self {
        self.workdir = dir;
        self
    }

    /// The user: `UID[:GID]`, numbers or (with a tree) names; `what` names its source in
    /// errors (`--user`, "the image's user").
    pub fn user(mut self, spec: Option<&str>, what: &str) -> Self {
        self.user = spec.map(|s| (s.to_owned(), what.to_owned()));
        self
    }

    /// Lowers the soft open-file limit to at most this.
    pub fn nofile_soft(mut self, limit: Option<u64>) -> Self {
        self.nofile_soft = limit;
        self
    }

    /// Runs the guest in its own pid namespace (implied by a root filesystem).
    pub fn pid_ns(mut self, on: bool) -> Self {
        self.pid_ns = on;
        self
    }

    /// Runs the guest in a root filesystem.
    pub fn root(mut self, root: RootFs) -> Self {
        self.root = Some(root);
        self
    }

    /// Exactly these supplementary groups (with a user; none given: the user's group
    /// alone).
    pub fn groups(mut self, groups: Vec<u32>) -> Self {
        self.groups = Some(groups);
        self
    }

    /// The capabilities the guest keeps.
    pub fn capabilities(mut self, caps: Option<platform::CapSets>) -> Self {
        self.capabilities = caps;
        self
    }

    /// Seccomp filters of the front end's own (an OCI config's `linux.seccomp`), which
    /// the guest installs after compatrun's (see [`GuestCommand::extra_filters`]).
    pub fn extra_filters(mut self, filters: Vec<platform::ExtraFilter>) -> Self {
        self.extra_filters = filters;
        self
    }

    /// A descriptor the guest waits on (one byte) before its exec.
    pub fn start_gate(mut self, fd: Option<std::os::fd::RawFd>) -> Self {
        self.start_gate = fd;
        self
    }

    /// Runs the guest in the mount namespace open at `fd` (no root filesystem of its
    /// own); `view` is that namespace's root as seen from here (`/proc/PID/root`), where
    /// the program is looked up.
    pub fn join_mount_ns(mut self, fd: std::os::fd::RawFd, view: PathBuf) -> Self {
        self.join = Some((fd, view));
        self
    }

    /// A terminal the guest's first process makes for itself, sending its master out
    /// on a socket ([`platform::TerminalSpec`]).
    pub fn terminal(mut self, t: Option<platform::TerminalSpec>) -> Self {
        self.terminal = t;
        self
    }

    /// A user namespace for the guest (an OCI config's, or the container's to join);
    /// without one, an ordinary user with a tree gets one of its own ids.
    pub fn user_ns(mut self, ns: Option<platform::UserNamespace>) -> Self {
        self.user_ns = ns;
        self
    }

    /// Namespaces the guest gets new besides pid and mount, made inside its user
    /// namespace ([`GuestCommand::namespaces`]).
    pub fn namespaces(mut self, ns: Vec<platform::Namespace>) -> Self {
        self.namespaces = ns;
        self
    }

    /// Sysctls the guest's init writes in the guest's own namespaces
    /// ([`GuestCommand::sysctls`]).
    pub fn sysctls(mut self, sysctls: Vec<(String, String)>) -> Self {
        self.sysctls = sysctls;
        self
    }

    /// The guest's PATH, if its environment has one.
    fn path(&self) -> Option<OsString> {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
    }

    /// The platform's description of this guest; the persona's /proc files come from
    /// `sentry`, which also learns the host name.
    pub fn build(self, sentry: &mut Sentry) -> anyhow::Result<Built> {
        let as_root = platform::sys::has_cap_sys_admin();
        let Some(program) = self.argv.first().cloned() else {
            anyhow::bail!("no program given");
        };
        let guest_path = self.path();
        let env: Vec<OsString> = self
            .env
            .into_iter()
            .map(|(mut k, v)| {
                k.push("=");
                k.push(v);
                k
            })
            .collect();
        let Some(root) = self.root else {
            if self.user.is_some() && !as_root {
                anyhow::bail!(
                    "--user without --rootfs needs root (an ordinary user cannot switch users)"
                );
            }
            let synthetic_files = if self.pid_ns {
                sentry.synthetic_files()
            } else {
                if sentry.persona().uname.is_some() {
                    log::info!("no pid and mount namespace: /proc/version and /proc/sys/kernel show the host kernel");
                }
                Vec::new()
            };
            let user = self
                .user
                .as_ref()
                .map(|(spec, _)| numeric_user(spec))
                .transpose()?;
            let (resolved, target) =
                match &self.join {
                    None => {
                        let r = platform::resolve_program(&program, guest_path.as_deref())?;
                        let t = (PathBuf::from("/"), PathBuf::from(&r));
                        (r, t)
                    }
                    Some((_, view)) => {
                        let path = guest_path.clone().unwrap_or_else(|| DEFAULT_PATH.into());
                        let found = platform::rootfs::find_in_tree(view, &program, &path)
                            .ok_or_else(|| platform::PlatformError::NotFound {
                                program: program.to_string_lossy().into_owned(),
                            })?;
                        (found.clone().into_os_string(), (view.clone(), found))
                    }
                };
            return Ok(Built {
                command: GuestCommand {
                    program: resolved,
                    argv: self.argv,
                    env,
                    cwd: self.workdir,
                    nofile_soft: self.nofile_soft,
                    pid_ns: self.pid_ns,
                    synthetic_files,
                    root: None,
                    user,
                    user_ns: self.user_ns,
                    namespaces: self.namespaces,
                    sysctls: self.sysctls,
                    groups: self.groups,
                    capabilities: self.capabilities,
                    start_gate: self.start_gate,
                    join_mount_ns: self.join.as_ref().map(|(fd, _)| *fd),
                    extra_filters: self.extra_filters,
                    terminal: self.terminal,
                },
                exec_target: Some(target),
            });
        };
        let dir = &root.dir;
        sentry.set_nodename(root.hostname.as_deref());
        let path = guest_path.unwrap_or_else(|| DEFAULT_PATH.into());
        // The program as the platform choice sees it: its first candidate in the tree.
        let target = platform::rootfs::find_in_tree(dir, &program, &path).map(|p| (dir.clone(), p));
        let wanted_user = self
            .user
            .as_ref()
            .map(|(spec, what)| tree_user(dir, spec, what))
            .transpose()?;
        let cwd = self.workdir.unwrap_or_else(|| "/".into());
        let (user, user_ns) = if let Some(ns) = self.user_ns {
            (Some(wanted_user.unwrap_or((0, 0))), Some(ns))
        } else if as_root {
            (wanted_user, None)
        } else {
            let (uid, gid) = wanted_user.unwrap_or((0, 0));
            log::info!(
                "an ordinary user: the guest runs in a user namespace as uid {uid}, gid {gid}"
            );
            (
                None,
                Some(platform::UserNamespace::Enter(platform::IdMap::own(
                    uid, gid,
                ))),
            )
        };
        Ok(Built {
            command: GuestCommand {
                program,
                argv: self.argv,
                env,
                cwd: Some(cwd.clone()),
                nofile_soft: self.nofile_soft,
                pid_ns: true,
                synthetic_files: sentry.synthetic_files(),
                root: Some(platform::RootSetup {
                    dir: root.dir.into_os_string(),
                    layout: root.layout,
                    hostname: root.hostname.map(OsString::from),
                    path,
                    overlay: root.overlay.map(PathBuf::into_os_string),
                    workdir: Some(cwd),
                }),
                user,
                user_ns,
                namespaces: self.namespaces,
                sysctls: self.sysctls,
                groups: self.groups,
                capabilities: self.capabilities,
                start_gate: self.start_gate,
                join_mount_ns: None,
                extra_filters: self.extra_filters,
                terminal: self.terminal,
            },
            exec_target: target,
        })
    }
}

/// A directory given as a root filesystem, checked and made canonical; `what` names it in
/// errors (`--rootfs`).
pub fn canonical_tree(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("{what} {}: not a directory", dir.display()),
        Err(e) => anyhow::bail!("{what} {}: {e}", dir.display()),
    }
    std::fs::canonicalize(dir).with_context(|| format!("{what} {}", dir.display()))
}

/// `--user UID[:GID]` without a tree: numbers only (GID defaults to UID).
fn numeric_user(spec: &str) -> anyhow::Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, spec));
    let num = |x: &str| {
        x.parse::<u32>().map_err(|_| {
            anyhow::anyhow!(
                "--user {spec}: without --rootfs or --image give numbers (names are looked up in the tree's /etc/passwd)"
            )
        })
    };
    Ok((num(user)?, num(group)?))
}

/// `--user` or an image config's `User`: `UID[:GID]`, numbers or names from the tree's
/// /etc/passwd and /etc/group (`what` names the source in errors).
fn tree_user(tree: &std::path::Path, spec: &str, what: &str) -> anyhow::Result<(u32, u32)> {
    let (user, group) = spec.split_once(':').unwrap_or((spec, ""));
    // The tree's file itself: a symbolic link there would be followed on the host. A
    // line without a numeric id does not count (never a default of 0).
    let lookup = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        let path = tree.join(file);
        if ["etc", file]
            .iter()
            .any(|p| std::fs::symlink_metadata(tree.join(p)).is_ok_and(|m| m.is_symlink()))
        {
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) {
                return None;
            }
            Some((
                f.get(2)?.parse().ok()?,
                f.get(3).and_then(|x| x.parse().ok()),
            ))
        })
    };
    let (uid, default_gid) = match user.parse::<u32>() {
        Ok(u) => (u, None),
        Err(_) => lookup("etc/passwd", user)
            .ok_or_else(|| anyhow::anyhow!("{what} {user:?} is not in the tree's /etc/passwd"))?,
    };
    let gid = if group.is_empty() {
        default_gid.unwrap_or(uid)
    } else {
        match group.parse::<u32>() {
            Ok(g) => g,
            Err(_) => lookup("etc/group", group).map(|(g, _)| g).ok_or_else(|| {
                anyhow::anyhow!("{what}: group {group:?} is not in the tree's /etc/group")
            })?,
        }
    };
    Ok((uid, gid))
}
