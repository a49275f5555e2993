//! The hooks that run in the container's namespaces: createContainer (its path resolved
//! in the runtime's mount namespace, as the spec says, and exec'd from a descriptor) and
//! startContainer (its path resolved in the container). Each runs through a fresh
//! `compatrun oci _hook` (single-threaded, as joining a mount or user namespace needs)
//! that joins the container's user namespace if it has one of its own (as its root), its
//! cgroup, IPC, UTS, network and mount namespaces, then execs the hook
//! in its own place, so its pid, stdin (the state) and exit status are the hook's. The
//! container's pid namespace is not joined: a process cannot move itself into one.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context};
use nix::sched::CloneFlags;

/// The hook kinds that run in the container's namespaces.
pub const INSIDE: [&str; 2] = ["createContainer", "startContainer"];

/// The command that runs hook `h` (config.json's object) of `kind` in the namespaces of
/// the container whose first process is `pid`.
pub fn command(h: &serde_json::Value, kind: &str, pid: i32) -> anyhow::Result<Command> {
    let mut c = Command::new(std::env::current_exe().context("compatrun's own path")?);
    c.args(["oci", "_hook", "--pid", &pid.to_string(), "--kind", kind])
        .arg(h.to_string());
    Ok(c)
}

fn strings(v: &serde_json::Value, what: &str) -> anyhow::Result<Vec<String>> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    serde_json::from_value(v.clone()).with_context(|| format!("{what}: not a list of strings"))
}

fn cstrings(v: &[String], what: &str) -> anyhow::Result<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).with_context(|| format!("{what}: a NUL byte")))
        .collect()
}

/// A container with a user namespace of its own: the hook joins it first and becomes its
/// root (as runc runs these hooks, from the container's side), so that what it makes
/// there is owned by the container's ids and its rights are the container root's.
fn join_user_namespace(pid: i32, what: &str) -> anyhow::Result<()> {
    let theirs = format!("/proc/{pid}/ns/user");
    if std::fs::read_link(&theirs).ok() == std::fs::read_link("/proc/self/ns/user").ok() {
        return Ok(());
    }
    let f = std::fs::File::open(&theirs)
        .with_context(|| format!("{what}: the container's user namespace"))?;
    nix::sched::setns(f, CloneFlags::CLONE_NEWUSER)
        .with_context(|| format!("{what}: join the container's user namespace"))?;
    let root_uid = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(root_gid, root_gid, root_gid))
        .and_then(|()| nix::unistd::setresuid(root_uid, root_uid, root_uid))
        .with_context(|| format!("{what}: become the user namespace's root"))
}

/// `_hook`: joins the namespaces of `pid` and execs the hook; returns only on failure.
pub fn exec_inside(pid: i32, kind: &str, hook: &str) -> anyhow::Result<()> {
    let h: serde_json::Value = serde_json::from_str(hook).context("the hook's JSON")?;
    let what = format!("hooks.{kind}");
    let path = h["path"]
        .as_str()
        .with_context(|| format!("{what}: a hook without a path"))?;
    let args = strings(&h["args"], &format!("{what} {path}: args"))?;
    let env = strings(&h["env"], &format!("{what} {path}: env"))?;
    // createContainer's path is the runtime's: open it before leaving our mount namespace.
    let here = if kind == "createContainer" {
        Some(std::fs::File::open(path).with_context(|| format!("{what}: {path}"))?)
    } else {
        None
    };
    // Every namespace is opened first, with our own rights: as the root of the
    // container's user namespace we could no longer open its process's /proc files.
    let mut joins = Vec::new();
    for (name, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        if std::fs::read_link(&theirs).ok() == std::fs::read_link(&ours).ok() {
            continue;
        }
        let f = std::fs::File::open(&theirs)
            .with_context(|| format!("{what}: the container's {name} namespace"))?;
        joins.push((name, f, flag));
    }
    join_user_namespace(pid, &what)?;
    for (name, f, flag) in joins {
        nix::sched::setns(f, flag)
            .with_context(|| format!("{what}: join the container's {name} namespace"))?;
    }
    std::env::set_current_dir("/").with_context(|| format!("{what}: chdir /"))?;
    match here {
        Some(f) => {
            let mut argv = cstrings(&args, &format!("{what} {path}: args"))?;
            if argv.is_empty() {
                argv.push(CString::new(path.as_bytes()).context("path")?);
            }
            let envp = cstrings(&env, &format!("{what} {path}: env"))?;
            let e = nix::unistd::fexecve(f.as_fd(), &argv, &envp).err();
            bail!(
                "{what}: {path}: {}",
                e.map(|e| e.desc()).unwrap_or("exec failed")
            )
        }
        None => {
            let mut c = Command::new(path);
            if let Some((first, rest)) = args.split_first() {
                c.arg0(first).args(rest);
            }
            c.env_clear()
                .envs(env.iter().filter_map(|kv| kv.split_once('=')));
            let e = c.exec();
            bail!("{what}: {path} (in the container): {e}")
        }
    }
}
