//! A container's user namespace (`{"type": "user"}` with `linux.uidMappings` and
//! `linux.gidMappings`), as runc makes it: namespaces given by path are joined first
//! (by the supervisor), then the guest's fork makes the user namespace, compatrun (root
//! outside) writes its maps, and the container's init makes the other new namespaces
//! inside it, which it then owns. The supervisor itself stays outside, so it still
//! traces and hears the guest. What the supervisor did for itself without a user
//! namespace (new namespaces, the host name, sysctls) is done inside here.

use anyhow::bail;
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};
use platform::{IdKind, IdMap, IdMapError, IdRange, Namespace};

use super::config::{Container, Ns};

/// The config field a map comes from.
fn field(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Uid => "linux.uidMappings",
        IdKind::Gid => "linux.gidMappings",
    }
}

fn ranges(m: &Option<Vec<LinuxIdMapping>>) -> Vec<IdRange> {
    m.iter()
        .flatten()
        .map(|l| IdRange {
            inside: l.container_id(),
            outside: l.host_id(),
            count: l.size(),
        })
        .collect()
}

/// The maps of `linux` for a container with a user namespace (`user`), checked; a map
/// without a user namespace is refused.
pub fn id_map(linux: &Linux, user: bool) -> anyhow::Result<Option<IdMap>> {
    let map = IdMap {
        uid: ranges(linux.uid_mappings()),
        gid: ranges(linux.gid_mappings()),
    };
    if !user {
        if !map.uid.is_empty() || !map.gid.is_empty() {
            bail!(
                "linux.uidMappings and linux.gidMappings need a user namespace in linux.namespaces"
            );
        }
        return Ok(None);
    }
    if let Err(e) = map.check(true) {
        let kind = match &e {
            IdMapError::Empty(k) | IdMapError::NoRoot(k) => *k,
            IdMapError::TooLong { kind, .. }
            | IdMapError::ZeroSize { kind, .. }
            | IdMapError::OutOfRange { kind, .. }
            | IdMapError::Overlap { kind, .. } => *kind,
        };
        bail!("{}: {e}", field(kind));
    }
    Ok(Some(map))
}

/// `process.user`'s ids are taken inside the namespace: each must be mapped.
pub fn check_user(map: &IdMap, user: &oci_spec::runtime::User) -> anyhow::Result<()> {
    if IdMap::outside_of(&map.uid, user.uid()).is_none() {
        bail!(
            "process.user.uid {} is not mapped by linux.uidMappings",
            user.uid()
        );
    }
    let gids = std::iter::once(user.gid()).chain(user.additional_gids().iter().flatten().copied());
    for gid in gids {
        if IdMap::outside_of(&map.gid, gid).is_none() {
            bail!("process.user: gid {gid} is not mapped by linux.gidMappings");
        }
    }
    Ok(())
}

/// The platform's name for a namespace the init makes.
fn platform_ns(t: LinuxNamespaceType) -> Option<Namespace> {
    Some(match t {
        LinuxNamespaceType::Network => Namespace::Net,
        LinuxNamespaceType::Ipc => Namespace::Ipc,
        LinuxNamespaceType::Uts => Namespace::Uts,
        LinuxNamespaceType::Cgroup => Namespace::Cgroup,
        _ => return None,
    })
}

/// With a user namespace: the new namespaces the container's init makes inside it;
/// the supervisor joins only those given by path.
pub fn made_inside(c: &Container) -> Vec<Namespace> {
    if c.user_ns.is_none() {
        return Vec::new();
    }
    c.namespaces
        .iter()
        .filter(|(_, how)| *how == Ns::New)
        .filter_map(|(t, _)| platform_ns(*t))
        .collect()
}

/// Whether the supervisor makes or joins this namespace itself (all of them without a
/// user namespace; with one, those given by path).
pub fn supervisor_enters(c: &Container, how: &Ns) -> bool {
    c.user_ns.is_none() || *how != Ns::New
}

/// Whether the host name is set inside, by the container's init (a new UTS namespace
/// owned by the container's user namespace).
pub fn hostname_inside(c: &Container) -> bool {
    made_inside(c).contains(&Namespace::Uts)
}

/// With a user namespace: the sysctls, which the container's init writes in the
/// namespaces it made, as their root (only it may write `kernel.shm*` there).
pub fn sysctls_inside(c: &Container) -> Vec<(String, String)> {
    if c.user_ns.is_none() {
        return Vec::new();
    }
    c.sysctl
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A root filesystem the container's mapped root may not use gets a hint: in a user
/// namespace the tree is reached as the id root maps to, without the host root's rights.
pub fn explain(c: &Container, e: platform::PlatformError) -> anyhow::Error {
    let denied = matches!(
        &e,
        platform::PlatformError::Rootfs { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied
    );
    let host_root = c
        .user_ns
        .as_ref()
        .and_then(|m| IdMap::outside_of(&m.uid, 0));
    match host_root {
        Some(uid) if denied => anyhow::Error::new(e).context(format!(
            "linux.uidMappings maps the container's root to host uid {uid}, which must be able to use root.path and the mounts' sources (own the tree, as podman chowns an image for --uidmap, and search every directory on the way)"
        )),
        _ => e.into(),
    }
}
