//! Container state under `--root`: one directory per container holding `state.json`,
//! the `exec.fifo` that `start` opens, and a lock (`flock` on the directory) that
//! `create`, `start`, `kill` and `delete` hold, so concurrent invocations never see a
//! half-written record.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// What `create` records about a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The supervisor (the process the engine waits on).
    pub supervisor: i32,
    /// Its start time (clock ticks after boot), to tell a reused pid apart.
    pub supervisor_start: u64,
    /// The container's first process, as the host sees it.
    pub pid: i32,
    /// Its start time.
    pub pid_start: u64,
    /// `start` has released it.
    pub started: bool,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The persona it runs under.
    pub persona: String,
    /// The platform it runs on.
    pub platform: String,
    /// The config's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The cgroup made for it.
    pub cgroup: Option<PathBuf>,
    /// Its `linux.seccomp`, which every process `exec` adds installs too (kept here, as
    /// runc keeps it, so that exec does not depend on the bundle's config.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// A container's status as the runtime spec names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Set up, waiting for `start`.
    Created,
    /// Its program runs.
    Running,
    /// Its process is gone.
    Stopped,
}

impl Status {
    /// The spec's name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// The start time of `pid` (field 22 of /proc/PID/stat), unless it is gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

impl Record {
    /// The status now.
    pub fn status(&self) -> Status {
        if alive(self.pid, self.pid_start) {
            if self.started {
                Status::Running
            } else {
                Status::Created
            }
        } else {
            Status::Stopped
        }
    }

    /// The state as the runtime spec (and `runc state`) prints it, with compatrun's
    /// persona and platform among the annotations.
    pub fn to_json(&self) -> serde_json::Value {
        let status = self.status();
        let mut annotations = self.annotations.clone();
        annotations.insert(
            super::config::PERSONA_ANNOTATION.into(),
            self.persona.clone(),
        );
        annotations.insert(
            super::config::PLATFORM_ANNOTATION.into(),
            self.platform.clone(),
        );
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": status.name(),
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "bundle": self.bundle,
            "rootfs": self.bundle.join("rootfs"),
            "created": self.created,
            "owner": "",
            "annotations": annotations,
        })
    }

    /// The state a hook reads on its stdin: as [`Record::to_json`], but with the
    /// config's annotations alone, as the container was configured (hooks compare them).
    pub fn hook_json(&self) -> serde_json::Value {
        let mut st = self.to_json();
        st["annotations"] = serde_json::json!(self.annotations);
        st
    }
}

/// Refuses ids that are not safe as one path component (runc's rule).
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
    {
        bail!("invalid container id {id:?} (letters, digits, _ + - . only)");
    }
    Ok(())
}

/// The state directory of one container, locked while this lives.
#[derive(Debug)]
pub struct Dir {
    /// Its path.
    pub path: PathBuf,
    _lock: Flock<File>,
}

impl Dir {
    /// Creates the container's directory (refused if the id is taken) and locks it.
    pub fn create(root: &Path, id: &str) -> anyhow::Result<Dir> {
        check_id(id)?;
        std::fs::create_dir_all(root).with_context(|| format!("--root {}", root.display()))?;
        let path = root.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("container with id {id} already exists")
            }
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        }
        Self::lock(path)
    }

    /// Locks an existing container's directory.
    pub fn open(root: &Path, id: &str) -> anyhow::Result<Dir> {
        check_id(id)?;
        let path = root.join(id);
        if !path.is_dir() {
            bail!("container {id} does not exist");
        }
        Self::lock(path)
    }

    fn lock(path: PathBuf) -> anyhow::Result<Dir> {
        let f = File::open(&path).with_context(|| format!("{}", path.display()))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("lock {}: {e}", path.display()))?;
        Ok(Dir { path, _lock: lock })
    }

    /// A path to `name` in this directory that fits a socket address (108 bytes) however
    /// long `--root` and the id are.
    pub fn socket_path(&self, name: &str) -> PathBuf {
        via_fd(&self._lock, name)
    }

    /// The record, written by `create`.
    pub fn load(&self) -> anyhow::Result<Record> {
        let file = self.path.join("state.json");
        let text = std::fs::read(&file).with_context(|| format!("{}", file.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{}", file.display()))
    }

    /// Writes the record (atomically: a new file renamed over the old).
    pub fn save(&self, r: &Record) -> anyhow::Result<()> {
        let tmp = self.path.join("state.json.new");
        std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)?;
        std::fs::rename(&tmp, self.path.join("state.json"))?;
        Ok(())
    }

    /// The fifo `start` opens.
    pub fn fifo(&self) -> PathBuf {
        self.path.join("exec.fifo")
    }
}

/// Every container id under `root`.
pub fn ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `/proc/self/fd/N/name` for the directory open as `dir`: the short path a Unix socket
/// in a deep directory is bound and connected by (Docker's state directories alone are
/// 108 bytes long with the socket's name).
pub fn via_fd(dir: &File, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}
