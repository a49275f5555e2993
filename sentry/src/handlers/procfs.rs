//! The persona's identity in /proc: `/proc/version`, `/proc/sys/kernel/osrelease` and
//! `/proc/sys/kernel/version` (the last two are also what `sysctl kernel.osrelease` and
//! `_sysctl` read). The platform puts these contents over the host's files in the guest's
//! own mount namespace, so opening any other file costs nothing extra.

use std::ffi::OsString;

use crate::persona::Uname;

/// The files and their contents for an identity.
pub fn files(id: &Uname) -> Vec<(OsString, Vec<u8>)> {
    let proc_version = id.proc_version.clone().unwrap_or_else(|| {
        format!(
            "Linux version {} (compatrun@persona) (gcc) {}",
            id.release, id.version
        )
    });
    vec![
        (
            "/proc/version".into(),
            format!("{}\n", proc_version.trim_end()).into_bytes(),
        ),
        (
            "/proc/sys/kernel/osrelease".into(),
            format!("{}\n", id.release).into_bytes(),
        ),
        (
            "/proc/sys/kernel/version".into(),
            format!("{}\n", id.version).into_bytes(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_follow_the_identity() {
        let id = Uname {
            release: "2.6.32".into(),
            version: "#1 SMP".into(),
            proc_version: None,
        };
        let f = files(&id);
        assert_eq!(
            f[0].1,
            b"Linux version 2.6.32 (compatrun@persona) (gcc) #1 SMP\n"
        );
        assert_eq!(f[1].1, b"2.6.32\n");
        assert_eq!(f[2].1, b"#1 SMP\n");
    }
}
