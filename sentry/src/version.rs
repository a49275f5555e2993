//! Kernel versions as the persona table writes them: `2.6`, `2.6.32`, `5.14`.

use std::fmt;
use std::str::FromStr;

/// A kernel version, compared numerically (`2.6.9 < 2.6.32 < 3.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major number.
    pub major: u16,
    /// Minor number.
    pub minor: u16,
    /// Patch level (0 when not given).
    pub patch: u16,
}

impl KernelVersion {
    /// Builds a version.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// The version a uname release string starts with (`"2.6.32-754.el6.x86_64"` is
    /// 2.6.32), if it starts with one.
    pub fn from_release(release: &str) -> Option<Self> {
        let end = release
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(release.len());
        release[..end].trim_end_matches('.').parse().ok()
    }
}

/// A version string that is not `MAJOR.MINOR[.PATCH]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a kernel version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 2.6.32)")]
pub struct BadVersion(pub String);

impl FromStr for KernelVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Two or three dot-separated numbers, each 1 to 5 digits within u16. By hand,
        // byte by byte: the syscall table parses ~1,400 of these at every start.
        let bad = || BadVersion(s.to_owned());
        let mut parts = [0u16; 3];
        let (mut count, mut digits) = (0usize, 0usize);
        for b in s.bytes() {
            match b {
                b'0'..=b'9' if count < 3 => {
                    let v = u32::from(parts[count]) * 10 + u32::from(b - b'0');
                    parts[count] = u16::try_from(v).map_err(|_| bad())?;
                    digits += 1;
                }
                b'.' if digits > 0 && count < 2 => {
                    count += 1;
                    digits = 0;
                }
                _ => return Err(bad()),
            }
        }
        if digits == 0 || count == 0 {
            return Err(bad());
        }
        Ok(KernelVersion {
            major: parts[0],
            minor: parts[1],
            patch: parts[2],
        })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let v = |s: &str| s.parse::<KernelVersion>().expect(s);
        assert!(v("2.6.9") < v("2.6.32"));
        assert!(v("2.6.32") < v("3.0"));
        assert_eq!(v("2.6"), KernelVersion::new(2, 6, 0));
        for bad in [
            "", "2", "2.6.32.1", "a.b", "2..6", "2.6.x", "-1.2", "2.", "2.6.", ".6", "70000.1",
            "2.6 ", "+2.6",
        ] {
            assert!(bad.parse::<KernelVersion>().is_err(), "{bad}");
        }
        assert_eq!(
            KernelVersion::from_release("2.6.32-754.el6.x86_64"),
            Some(v("2.6.32"))
        );
        assert_eq!(
            KernelVersion::from_release("6.1.0-18-amd64"),
            Some(v("6.1"))
        );
        assert_eq!(KernelVersion::from_release("garbage"), None);
    }
}
