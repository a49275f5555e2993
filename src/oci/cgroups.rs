//! A container's cgroup (`linux.cgroupsPath`) and its limits (`linux.resources`: pids,
//! memory, cpu, devices) through cgroupfs, on cgroup v2, v1 or a hybrid of both: the
//! supervisor moves itself in before the guest is forked (so every container process is
//! in it), and `delete` removes it. Other resources are refused by name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// What to make and write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupPlan {
    /// The path below each hierarchy's root.
    pub path: PathBuf,
    /// pids.max.
    pub pids: Option<i64>,
    /// The memory limit in bytes.
    pub memory: Option<i64>,
    /// cpu shares (v1) / weight (v2, converted).
    pub cpu_shares: Option<u64>,
    /// cpu quota and period, in µs.
    pub cpu_quota: Option<(i64, u64)>,
    /// Device rules for the v1 devices controller: (allow, "c 1:3 rwm").
    pub devices: Vec<(bool, String)>,
}

/// The device rules runc adds after the config's, so a container's default devices work.
const DEFAULT_ALLOW: [&str; 9] = [
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts
];

/// The plan for a config's cgroupsPath and resources (`None` when it has neither; with
/// resources but no path, `compatrun/ID`, as runc makes a default path).
pub fn plan(
    path: Option<&Path>,
    resources: Option<&serde_json::Value>,
    id: &str,
) -> anyhow::Result<Option<CgroupPlan>> {
    let default = PathBuf::from("compatrun").join(id);
    let path = match path {
        Some(p) => p,
        None if resources.is_some_and(|r| r.as_object().is_some_and(|o| !o.is_empty())) => {
            default.as_path()
        }
        None => return Ok(None),
    };
    // systemd's "slice:prefix:name" as cgroupfs names it.
    let s = path.to_string_lossy();
    let rel = match s.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] => PathBuf::from(slice).join(format!("{prefix}-{name}.scope")),
        _ => PathBuf::from(s.trim_start_matches('/')),
    };
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("linux.cgroupsPath {s}: no `..` allowed");
    }
    let mut p = CgroupPlan {
        path: rel,
        ..CgroupPlan::default()
    };
    let Some(r) = resources else {
        return Ok(Some(p));
    };
    for (k, v) in r.as_object().into_iter().flatten() {
        if unset(v) {
            continue;
        }
        match k.as_str() {
            "pids" => p.pids = v["limit"].as_i64().filter(|&n| n != 0),
            "memory" => {
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    match mk.as_str() {
                        "limit" => p.memory = mv.as_i64().filter(|&n| n != 0),
                        _ if unset(mv) => {}
                        // Podman sets swap to the limit (no extra swap), which is the
                        // v1 default without a memsw controller.
                        "swap" if mv.as_i64() == v["limit"].as_i64() => {}
                        _ => bail!("linux.resources.memory.{mk} is not supported by compatrun"),
                    }
                }
            }
            "cpu" => {
                for (ck, cv) in v.as_object().into_iter().flatten() {
                    match ck.as_str() {
                        "shares" => p.cpu_shares = cv.as_u64().filter(|&n| n != 0),
                        "quota" | "period" => {}
                        _ if unset(cv) => {}
                        _ => bail!("linux.resources.cpu.{ck} is not supported by compatrun"),
                    }
                }
                if let Some(q) = v["quota"].as_i64().filter(|&q| q != 0) {
                    p.cpu_quota = Some((q, v["period"].as_u64().unwrap_or(100_000)));
                }
            }
            "devices" => {
                for d in v.as_array().into_iter().flatten() {
                    let typ = d["type"].as_str().unwrap_or("a");
                    let num = |x: &serde_json::Value| {
                        x.as_i64().map_or("*".to_owned(), |n| n.to_string())
                    };
                    let access = d["access"].as_str().unwrap_or("rwm");
                    let rule = if typ == "a" {
                        "a".to_owned()
                    } else {
                        format!("{typ} {}:{} {access}", num(&d["major"]), num(&d["minor"]))
                    };
                    p.devices
                        .push((d["allow"].as_bool().unwrap_or(false), rule));
                }
            }
            other => match v
                .as_object()
                .and_then(|o| o.iter().find(|(_, f)| !unset(f)))
            {
                Some((f, _)) => bail!("linux.resources.{other}.{f} is not supported by compatrun"),
                None if v.is_object() => {}
                None => bail!("linux.resources.{other} is not supported by compatrun"),
            },
        }
    }
    Ok(Some(p))
}

/// Whether a resource value says nothing: null, false, 0, or an empty list or object (or
/// one whose fields all say nothing). runc writes a limit only when it is non-zero, and
/// engines fill these in: Docker sends `blockIO: {weight: 0}`, `cpu: {shares: 0}` and
/// `memory: {disableOOMKiller: false}` for a container without limits.
fn unset(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(_) => false,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.values().all(unset),
    }
}

/// The cgroup directories of `plan` on this host: (hierarchy root is v2, directory).
pub(super) fn dirs(plan: &CgroupPlan) -> Vec<(bool, PathBuf)> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![(true, base.join(&plan.path))];
    }
    let mut out: Vec<(bool, PathBuf)> = ["pids", "memory", "cpu", "devices", "freezer"]
        .iter()
        .map(|c| base.join(c))
        .filter(|d| d.join("cgroup.procs").exists())
        .map(|d| (false, d.join(&plan.path)))
        .collect();
    if base.join("unified/cgroup.procs").exists() {
        out.push((true, base.join("unified").join(&plan.path)));
    }
    out
}

fn write(dir: &Path, file: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(file), value)
        .with_context(|| format!("cgroup: write {value:?} to {}", dir.join(file).display()))
}

/// Makes the cgroup, writes the limits and moves this process into it.
pub fn enter(plan: &CgroupPlan) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    for (v2, dir) in dirs(plan) {
        std::fs::create_dir_all(&dir).with_context(|| format!("cgroup: {}", dir.display()))?;
        limits(plan, v2, &dir)?;
        write(&dir, "cgroup.procs", &pid)?;
    }
    check_controllers(plan)
}

/// Writes new limits into an existing container's cgroup (`update`).
pub fn update(plan: &CgroupPlan) -> anyhow::Result<()> {
    for (v2, dir) in dirs(plan) {
        if dir.exists() {
            limits(plan, v2, &dir)?;
        }
    }
    check_controllers(plan)
}

/// Writes `plan`'s limits into one hierarchy's directory.
fn limits(plan: &CgroupPlan, v2: bool, dir: &Path) -> anyhow::Result<()> {
    let has = |f: &str| dir.join(f).exists();
    if let Some(n) = plan.pids.filter(|_| has("pids.max")) {
        write(
            dir,
            "pids.max",
            &if n > 0 { n.to_string() } else { "max".into() },
        )?;
    }
    if let Some(m) = plan.memory {
        if v2 && has("memory.max") {
            write(dir, "memory.max", &m.to_string())?;
        } else if has("memory.limit_in_bytes") {
            write(dir, "memory.limit_in_bytes", &m.to_string())?;
        }
    }
    if let Some(s) = plan.cpu_shares {
        if v2 && has("cpu.weight") {
            // runc's conversion of shares (2..262144) to weight (1..10000).
            let w = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(dir, "cpu.weight", &w.to_string())?;
        } else if has("cpu.shares") {
            write(dir, "cpu.shares", &s.to_string())?;
        }
    }
    if let Some((q, period)) = plan.cpu_quota {
        if v2 && has("cpu.max") {
            let q = if q > 0 { q.to_string() } else { "max".into() };
            write(dir, "cpu.max", &format!("{q} {period}"))?;
        } else if has("cpu.cfs_quota_us") {
            write(dir, "cpu.cfs_period_us", &period.to_string())?;
            write(dir, "cpu.cfs_quota_us", &q.to_string())?;
        }
    }
    if !plan.devices.is_empty() && has("devices.allow") {
        for (allow, rule) in &plan.devices {
            write(
                dir,
                if *allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                },
                rule,
            )?;
        }
        for rule in DEFAULT_ALLOW {
            write(dir, "devices.allow", rule)?;
        }
    }
    Ok(())
}

/// Refuses limits this host has no controller for.
fn check_controllers(plan: &CgroupPlan) -> anyhow::Result<()> {
    let missing = |what: &str, set: bool, file: &str| -> anyhow::Result<()> {
        if set && !dirs(plan).iter().any(|(_, d)| d.join(file).exists()) {
            bail!("linux.resources.{what}: this host has no cgroup controller for it");
        }
        Ok(())
    };
    missing("pids", plan.pids.is_some(), "pids.max")?;
    let v1_devices = dirs(plan)
        .iter()
        .any(|(_, d)| d.join("devices.allow").exists());
    if plan.devices.iter().any(|(allow, r)| *allow || r != "a") && !v1_devices {
        bail!("linux.resources.devices: only the v1 devices controller is supported by compatrun");
    }
    Ok(())
}

/// Moves this process into an existing container's cgroup (`exec`).
pub fn join(path: &Path) -> anyhow::Result<()> {
    let plan = CgroupPlan {
        path: path.to_path_buf(),
        ..CgroupPlan::default()
    };
    for (_, dir) in dirs(&plan) {
        if dir.exists() {
            write(&dir, "cgroup.procs", &std::process::id().to_string())?;
        }
    }
    Ok(())
}

/// Removes the cgroup (its processes must be gone).
pub fn remove(plan: &CgroupPlan) {
    for (_, dir) in dirs(plan) {
        for _ in 0..50 {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => break,
            }
        }
    }
}
