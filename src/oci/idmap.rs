//! A container's uid and gid maps (`linux.uidMappings`, `linux.gidMappings`) read from
//! its config and checked, with `process.user`'s ids against them; errors name the
//! field. What the maps are for is in [`super::userns`].

use anyhow::bail;
use oci_spec::runtime::{Linux, LinuxIdMapping};
use platform::{IdKind, IdMap, IdMapError, IdRange};

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
