//! A container's user namespace (`{"type": "user"}` with `linux.uidMappings` and
//! `linux.gidMappings`), as runc makes it: namespaces given by path are joined first
//! (by the supervisor), then the guest's fork makes the user namespace, compatrun (root
//! outside) writes its maps, and the container's init makes the other new namespaces
//! inside it, which it then owns. The supervisor itself stays outside, so it still
//! traces and hears the guest. What the supervisor did for itself without a user
//! namespace (new namespaces, the host name, sysctls) is done inside here.

use oci_spec::runtime::LinuxNamespaceType;
use platform::{IdMap, Namespace};

use super::config::{Container, Ns};

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
