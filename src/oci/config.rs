//! A bundle's config.json (parsed with the oci-spec crate) turned into what compatrun
//! does: the guest (through [`GuestBuilder`]), the root filesystem's layout, the
//! namespaces the supervisor creates or joins, limits, sysctls, the cgroup, the persona
//! and platform. A field compatrun cannot honour is an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use platform::CapSets;

use super::cgroups::CgroupPlan;
use super::mounts;

/// The annotation that picks a container's persona.
pub const PERSONA_ANNOTATION: &str = "run.compatrun.persona";
/// The annotation that picks a container's platform.
pub const PLATFORM_ANNOTATION: &str = "run.compatrun.platform";

/// What to do with one namespace type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ns {
    /// A new one.
    New,
    /// Join the one at this path.
    Join(PathBuf),
}

/// Everything compatrun takes from a config.json.
#[derive(Clone, Debug)]
pub struct Container {
    /// The process's argument vector.
    pub argv: Vec<String>,
    /// Its environment, `KEY=VALUE`.
    pub env: Vec<(String, String)>,
    /// Its working directory inside the root.
    pub cwd: String,
    /// Its uid and gid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
    /// Its umask.
    pub umask: Option<u32>,
    /// Its capabilities.
    pub caps: Option<CapSets>,
    /// Its limits: (resource name, soft, hard).
    pub rlimits: Vec<(String, u64, u64)>,
    /// no_new_privs.
    pub no_new_privs: bool,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// The root filesystem (canonical).
    pub tree: PathBuf,
    /// What is mounted in it.
    pub layout: Vec<platform::MountSpec>,
    /// The host name.
    pub hostname: Option<String>,
    /// Network, IPC, UTS and cgroup namespaces (pid and mount are always new).
    pub namespaces: Vec<(LinuxNamespaceType, Ns)>,
    /// A user namespace of the container's own (`{"type": "user"}`), with
    /// `linux.uidMappings` and `linux.gidMappings`.
    pub user_ns: Option<platform::IdMap>,
    /// sysctls to write, inside the namespaces.
    pub sysctl: BTreeMap<String, String>,
    /// The cgroup and its limits.
    pub cgroup: Option<CgroupPlan>,
    /// The persona (annotation, else the runtime's default).
    pub persona: String,
    /// The platform (annotation, else the runtime's default).
    pub platform: String,
    /// The config's annotations.
    pub annotations: BTreeMap<String, String>,
    /// `linux.seccomp`, compiled.
    pub seccomp: Vec<platform::ExtraFilter>,
    /// System call names in `linux.seccomp` that libseccomp does not know (skipped).
    pub seccomp_skipped: Vec<String>,
    /// `process.terminal`: the process gets a new pty ([`super::console`]).
    pub terminal: bool,
    /// `process.consoleSize` (rows, columns).
    pub console_size: Option<(u16, u16)>,
}

/// Capability names in number order (linux/capability.h).
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every capability name compatrun knows.
pub fn capability_names() -> Vec<&'static str> {
    CAPS.to_vec()
}

/// A set of capabilities as a mask (names as serde writes them).
fn cap_mask<T: serde::Serialize>(set: &Option<T>, which: &str) -> anyhow::Result<u64> {
    let Some(set) = set else { return Ok(0) };
    let names: Vec<String> = serde_json::from_value(serde_json::to_value(set)?)?;
    let mut mask = 0u64;
    for name in names {
        let bit = CAPS
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("process.capabilities.{which}: unknown capability {name}"))?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// The keys of a JSON object that are set (not null, not empty).
fn keys_set(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_array().is_some_and(Vec::is_empty)
                        || v.as_object().is_some_and(serde_json::Map::is_empty)
                        || v.as_str().is_some_and(str::is_empty))
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses every set key of `v` outside `known`, naming it as `prefix.key`.
fn only(v: &serde_json::Value, known: &[&str], prefix: &str) -> anyhow::Result<()> {
    for k in keys_set(v) {
        if !known.contains(&k.as_str()) {
            bail!("{prefix}.{k} is not supported by compatrun");
        }
    }
    Ok(())
}

/// `process.env` as (name, value) pairs; an entry without `=` is left out.
pub fn env_of(process: &oci_spec::runtime::Process) -> Vec<(String, String)> {
    process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// `process.capabilities` as masks.
pub fn capabilities(process: &oci_spec::runtime::Process) -> anyhow::Result<Option<CapSets>> {
    Ok(match process.capabilities() {
        None => None,
        Some(c) => Some(CapSets {
            bounding: cap_mask(c.bounding(), "bounding")?,
            effective: cap_mask(c.effective(), "effective")?,
            permitted: cap_mask(c.permitted(), "permitted")?,
            inheritable: cap_mask(c.inheritable(), "inheritable")?,
            ambient: cap_mask(c.ambient(), "ambient")?,
        }),
    })
}

/// `linux.seccomp` compiled into the filter the container's processes install, and the
/// system call names libseccomp does not know (skipped).
pub fn seccomp(spec: &Spec) -> anyhow::Result<(Vec<platform::ExtraFilter>, Vec<String>)> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        None => Ok((Vec::new(), Vec::new())),
        Some(s) => super::seccomp::compile(s).map(|(f, skipped)| (vec![f], skipped)),
    }
}

/// Reads `bundle/config.json`.
pub fn load(bundle: &Path) -> anyhow::Result<Spec> {
    let path = bundle.join("config.json");
    // Fields whose bad values the parser would not name are checked on the raw JSON.
    if let Ok(raw) = std::fs::read(&path) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) {
            super::seccomp::check_raw(&v).with_context(|| format!("{}", path.display()))?;
        }
    }
    Spec::load(&path).with_context(|| format!("{}", path.display()))
}

/// Turns a config into what compatrun does; `persona` and `platform` are the runtime's
/// defaults.
pub fn translate(
    spec: &Spec,
    bundle: &Path,
    id: &str,
    persona: &str,
    platform_name: &str,
) -> anyhow::Result<Container> {
    let raw = serde_json::to_value(spec)?;
    only(
        &raw,
        &[
            "ociVersion",
            "process",
            "root",
            "hostname",
            "mounts",
            "hooks",
            "annotations",
            "linux",
            "domainname",
        ],
        "config",
    )?;
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        bail!("domainname is not supported by compatrun");
    }
    let process = spec
        .process()
        .as_ref()
        .context("config.json has no process")?;
    only(
        &raw["process"],
        &[
            "terminal",
            "user",
            "args",
            "env",
            "cwd",
            "capabilities",
            "rlimits",
            "noNewPrivileges",
            "oomScoreAdj",
            "consoleSize",
        ],
        "process",
    )?;
    let argv = process.args().clone().unwrap_or_default();
    if argv.is_empty() {
        bail!("process.args is empty");
    }
    let env = env_of(process);
    let user = process.user();
    only(
        &raw["process"]["user"],
        &["uid", "gid", "additionalGids", "umask"],
        "process.user",
    )?;
    let caps = capabilities(process)?;
    let rlimits = raw["process"]["rlimits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    Ok((
                        r["type"]
                            .as_str()
                            .context("process.rlimits: no type")?
                            .to_owned(),
                        r["soft"].as_u64().context("process.rlimits: no soft")?,
                        r["hard"].as_u64().context("process.rlimits: no hard")?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let root = spec.root().as_ref().context("config.json has no root")?;
    let tree_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let tree = crate::guest::canonical_tree(&tree_path, "root.path")?;
    let linux_raw = raw.get("linux").cloned().unwrap_or_default();
    only(
        &linux_raw,
        &[
            "namespaces",
            "resources",
            "cgroupsPath",
            "devices",
            "maskedPaths",
            "readonlyPaths",
            "sysctl",
            "rootfsPropagation",
            "seccomp",
            "uidMappings",
            "gidMappings",
        ],
        "linux",
    )?;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(p) = linux.rootfs_propagation() {
        if !matches!(p.as_str(), "" | "private" | "rprivate") {
            bail!("linux.rootfsPropagation {p} is not supported by compatrun (only private)");
        }
    }
    let mut namespaces = Vec::new();
    let (mut pid, mut mount, mut uts, mut user_ns) = (false, false, false, false);
    for ns in linux.namespaces().clone().unwrap_or_default() {
        let how = match ns.path() {
            Some(p) => Ns::Join(p.clone()),
            None => Ns::New,
        };
        match ns.typ() {
            LinuxNamespaceType::Pid | LinuxNamespaceType::Mount => {
                if how != Ns::New {
                    bail!(
                        "linux.namespaces: joining an existing {:?} namespace is not supported by compatrun",
                        ns.typ()
                    );
                }
                pid |= ns.typ() == LinuxNamespaceType::Pid;
                mount |= ns.typ() == LinuxNamespaceType::Mount;
            }
            LinuxNamespaceType::Network
            | LinuxNamespaceType::Ipc
            | LinuxNamespaceType::Uts
            | LinuxNamespaceType::Cgroup => {
                uts |= ns.typ() == LinuxNamespaceType::Uts;
                namespaces.push((ns.typ(), how));
            }
            LinuxNamespaceType::User => {
                if how != Ns::New {
                    bail!(
                        "linux.namespaces: joining an existing user namespace is not supported by compatrun (it makes the container's own, from linux.uidMappings and linux.gidMappings)"
                    );
                }
                user_ns = true;
            }
            other => bail!("linux.namespaces: {other:?} namespaces are not supported by compatrun"),
        }
    }
    if !pid || !mount {
        bail!("linux.namespaces: compatrun always gives a container its own pid and mount namespace; the config must ask for both");
    }
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname.is_some() && !uts {
        bail!("hostname needs a uts namespace in linux.namespaces");
    }
    let user_ns = super::idmap::id_map(&linux, user_ns)?;
    if let Some(map) = &user_ns {
        super::idmap::check_user(map, user)?;
    }
    // In a user namespace the kernel mounts sysfs only with a network namespace that
    // namespace owns: otherwise the host's /sys is bound (Debian's runc 1.1.5 fails
    // such a config with EPERM instead).
    let new_net = namespaces
        .iter()
        .any(|(t, how)| *t == LinuxNamespaceType::Network && *how == Ns::New);
    let bind_sys = user_ns.is_some() && !new_net;
    let layout = mounts::layout(
        spec,
        &linux,
        &tree,
        root.readonly().unwrap_or(false),
        bind_sys,
    )?;
    let sysctl: BTreeMap<String, String> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for key in sysctl.keys() {
        let namespaced = |t: LinuxNamespaceType| namespaces.iter().any(|(typ, _)| *typ == t);
        let ok = (key.starts_with("net.") && namespaced(LinuxNamespaceType::Network))
            || ((key.starts_with("kernel.shm")
                || key.starts_with("kernel.msg")
                || key == "kernel.sem"
                || key.starts_with("fs.mqueue."))
                && namespaced(LinuxNamespaceType::Ipc));
        if !ok {
            bail!("linux.sysctl {key}: not a sysctl of the container's own namespaces");
        }
    }
    let cgroup = super::cgroups::plan(
        linux.cgroups_path().as_deref(),
        linux_raw.get("resources"),
        id,
    )?;
    let annotations: BTreeMap<String, String> = spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (seccomp, seccomp_skipped) = seccomp(spec)?;
    let persona = annotations
        .get(PERSONA_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| persona.to_owned());
    let platform_name = annotations
        .get(PLATFORM_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| platform_name.to_owned());
    if !matches!(platform_name.as_str(), "auto" | "ptrace" | "seccomp") {
        bail!("{PLATFORM_ANNOTATION}={platform_name}: expected auto, ptrace or seccomp");
    }
    Ok(Container {
        argv,
        env,
        cwd: process.cwd().to_string_lossy().into_owned(),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps,
        rlimits,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
        tree,
        layout,
        hostname,
        namespaces,
        user_ns,
        sysctl,
        cgroup,
        persona,
        platform: platform_name,
        annotations,
        seccomp,
        seccomp_skipped,
        terminal: process.terminal().unwrap_or(false),
        console_size: super::console::size(process)?,
    })
}
