//! `pause`, `resume` and `update`: what the containerd runc shim asks of a running
//! container besides its lifecycle. Pausing freezes the container's cgroup (the v2
//! `cgroup.freeze`, or the v1 freezer where there is no v2 hierarchy): the supervisor is
//! in that cgroup too, so the guest and its supervisor stop and go on together.
//! `update` writes new `linux.resources` limits into the cgroup.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::cgroups::{self, CgroupPlan};
use super::cli::OciCli;
use super::state::{Dir, Status};

/// The file that freezes the cgroup at `path`, with its frozen and thawed values.
fn freezer(path: &Path) -> Option<(PathBuf, &'static str, &'static str)> {
    let plan = CgroupPlan {
        path: path.to_path_buf(),
        ..CgroupPlan::default()
    };
    let dirs = cgroups::dirs(&plan);
    let v2 = dirs
        .iter()
        .filter(|(v2, _)| *v2)
        .map(|(_, d)| d.join("cgroup.freeze"))
        .find(|f| f.exists());
    v2.map(|f| (f, "1", "0")).or_else(|| {
        dirs.iter()
            .filter(|(v2, _)| !*v2)
            .map(|(_, d)| d.join("freezer.state"))
            .find(|f| f.exists())
            .map(|f| (f, "FROZEN", "THAWED"))
    })
}

/// Whether the cgroup at `path` is frozen (or freezing).
pub fn frozen(path: &Path) -> bool {
    let Some((file, on, _)) = freezer(path) else {
        return false;
    };
    let now = std::fs::read_to_string(&file).unwrap_or_default();
    let now = now.trim();
    now == on || now == "FREEZING"
}

/// Thaws the cgroup at `path` (nothing when it is not frozen).
pub fn thaw(path: &Path) -> anyhow::Result<()> {
    if let Some((file, _, off)) = freezer(path) {
        std::fs::write(&file, off).with_context(|| format!("thaw: {}", file.display()))?;
    }
    Ok(())
}

/// The container's cgroup, which pause, resume and update need.
fn cgroup_of(g: &OciCli, id: &str, what: &str) -> anyhow::Result<(Dir, PathBuf)> {
    let dir = Dir::open(&g.root, id)?;
    let r = dir.load()?;
    // A paused container whose first process was killed is thawed all the same (its
    // supervisor, frozen with it, has still to see the exit).
    let thawing = what == "resume" && r.cgroup.as_deref().is_some_and(frozen);
    if r.status() != Status::Running && !thawing {
        bail!("cannot {what} container {id}: it is {}", r.status().name());
    }
    let Some(path) = r.cgroup else {
        bail!("cannot {what} container {id}: it has no cgroup (linux.cgroupsPath)");
    };
    Ok((dir, path))
}

/// `pause`: freezes the container and waits until the kernel says it is frozen.
pub fn pause(g: &OciCli, id: &str) -> anyhow::Result<()> {
    let (_dir, path) = cgroup_of(g, id, "pause")?;
    let Some((file, on, _)) = freezer(&path) else {
        bail!("cannot pause container {id}: this host has no cgroup freezer");
    };
    std::fs::write(&file, on).with_context(|| format!("pause: {}", file.display()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = if file.ends_with("cgroup.freeze") {
            let events = file.with_file_name("cgroup.events");
            std::fs::read_to_string(&events)
                .unwrap_or_default()
                .lines()
                .any(|l| l == "frozen 1")
        } else {
            std::fs::read_to_string(&file).unwrap_or_default().trim() == on
        };
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = thaw(&path);
            bail!("cannot pause container {id}: its cgroup did not freeze");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `resume`: thaws a paused container.
pub fn resume(g: &OciCli, id: &str) -> anyhow::Result<()> {
    let (_dir, path) = cgroup_of(g, id, "resume")?;
    if !frozen(&path) {
        bail!("cannot resume container {id}: it is not paused");
    }
    thaw(&path)
}

/// `update --resources FILE|-`: new limits (a `linux.resources` object) for a running
/// container's cgroup. Resources compatrun does not manage are refused by name.
pub fn update(g: &OciCli, id: &str, resources: Option<&Path>) -> anyhow::Result<()> {
    let (_dir, path) = cgroup_of(g, id, "update")?;
    let Some(file) = resources else {
        bail!("update: compatrun takes the new limits only as --resources FILE (or - for stdin)");
    };
    let mut text = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("update: the resources on stdin")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("update: --resources {}", file.display()))?;
    }
    let mut json: serde_json::Value =
        serde_json::from_str(&text).context("update: the resources are not JSON")?;
    // Empty objects and lists say nothing (the shim sends every field it knows).
    if let Some(o) = json.as_object_mut() {
        o.retain(|_, v| match v {
            serde_json::Value::Object(m) => m.values().any(|x| !x.is_null()),
            serde_json::Value::Array(a) => !a.is_empty(),
            serde_json::Value::Null => false,
            _ => true,
        });
    }
    let Some(plan) = cgroups::plan(Some(&path), Some(&json), id)? else {
        return Ok(());
    };
    cgroups::update(&plan)
}
