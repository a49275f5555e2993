//! Finding the guest's program on a PATH the way `execvp` does, before the fork (so a
//! missing program is a clear error, exit status 127, not a failed exec).

use std::ffi::OsString;

use crate::error::PlatformError;

/// Finds `program` the way `execvp` would: a name with a slash is used as given,
/// otherwise each directory of `path` (the guest's PATH) is tried in order.
///
/// Returns the first candidate that exists and is executable, else the first that exists
/// (so exec reports why it cannot run), else [`PlatformError::NotFound`].
pub fn resolve_program(
    program: &std::ffi::OsStr,
    path: Option<&std::ffi::OsStr>,
) -> Result<OsString, PlatformError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let not_found = || PlatformError::NotFound {
        program: program.to_string_lossy().into_owned(),
    };
    if program.is_empty() {
        return Err(not_found());
    }
    if program.as_bytes().contains(&b'/') {
        return if std::path::Path::new(program).exists() {
            Ok(program.to_owned())
        } else {
            Err(not_found())
        };
    }
    let path = path.unwrap_or(std::ffi::OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut first_existing = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = std::path::Path::new(std::ffi::OsStr::from_bytes(dir)).join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate.into_os_string());
        }
        first_existing.get_or_insert(candidate);
    }
    first_existing
        .map(|c| c.into_os_string())
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn resolves_like_execvp() {
        let sh = resolve_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin")));
        assert_eq!(sh.expect("sh in /bin"), OsString::from("/bin/sh"));
        assert!(matches!(
            resolve_program(OsStr::new("no-such-program-xyz"), None),
            Err(PlatformError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program(OsStr::new("./no/such/file"), None),
            Err(PlatformError::NotFound { .. })
        ));
        assert!(resolve_program(OsStr::new(""), None).is_err());
    }
}
