//! User namespaces as a front end asks for them ([`UserNamespace`]): the id maps
//! ([`IdMap`], lines of inside, outside and count as `/proc/PID/uid_map` takes them),
//! their checks, and the other namespaces a guest gets new ([`Namespace`]), which must
//! be made after its user namespace so that it owns them.
//!
//! Who does what: for [`UserNamespace::Enter`] compatrun itself enters a new user
//! namespace before the fork (`ns::enter`; an ordinary user may only map its own ids,
//! one line each). For [`UserNamespace::New`] the guest's fork makes it, together with
//! the pid namespace (`sys::spawn::parent`), and compatrun, privileged and outside,
//! writes its maps before the child goes on; the supervisor never enters it, so it
//! still traces and hears the guest as before. For [`UserNamespace::Join`] the guest's
//! first process joins an existing one (`exec` into a running container).

use std::fmt::Write as _;
use std::os::fd::RawFd;

/// One line of an id map: `count` ids from `inside` (in the namespace) are `outside`
/// (in compatrun's namespace) onwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    /// The first id inside.
    pub inside: u32,
    /// The first id outside.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// The uid and gid maps of a user namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// The uid map's lines.
    pub uid: Vec<IdRange>,
    /// The gid map's lines.
    pub gid: Vec<IdRange>,
}

/// Which map a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// The uid map.
    Uid,
    /// The gid map.
    Gid,
}

impl std::fmt::Display for IdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        })
    }
}

/// A map the kernel would refuse, or one a guest cannot start under.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdMapError {
    /// No line at all.
    #[error("the {0} map is empty")]
    Empty(IdKind),
    /// More lines than the kernel takes.
    #[error("the {kind} map has {lines} lines (the kernel takes at most {max})", max = IdMap::MAX_LINES)]
    TooLong {
        /// Which map.
        kind: IdKind,
        /// How many lines it has.
        lines: usize,
    },
    /// A line of size zero.
    #[error("{kind} map line {line}: the size is zero")]
    ZeroSize {
        /// Which map.
        kind: IdKind,
        /// The line (from 0).
        line: usize,
    },
    /// A line whose range runs past the last id (4294967294).
    #[error(
        "{kind} map line {line}: ids out of range ({side} {first} + {count} passes 4294967294)"
    )]
    OutOfRange {
        /// Which map.
        kind: IdKind,
        /// The line (from 0).
        line: usize,
        /// `inside` or `outside`.
        side: &'static str,
        /// The range's first id.
        first: u32,
        /// Its size.
        count: u32,
    },
    /// Two lines share ids on one side.
    #[error("{kind} map lines {a} and {b} overlap ({side} ids)")]
    Overlap {
        /// Which map.
        kind: IdKind,
        /// The first line.
        a: usize,
        /// The second line.
        b: usize,
        /// `inside` or `outside`.
        side: &'static str,
    },
    /// Id 0 inside is not mapped: the guest's setup runs as root inside.
    #[error("the {0} map does not map id 0 inside (the container's root)")]
    NoRoot(IdKind),
}

impl IdMap {
    /// The most lines a map may have (Linux 4.15 and later).
    pub const MAX_LINES: usize = 340;

    /// One line each way: compatrun's own effective uid and gid appear as `uid` and
    /// `gid` inside (what an ordinary user may map).
    pub fn own(uid: u32, gid: u32) -> Self {
        IdMap {
            uid: vec![IdRange {
                inside: uid,
                outside: nix::unistd::geteuid().as_raw(),
                count: 1,
            }],
            gid: vec![IdRange {
                inside: gid,
                outside: nix::unistd::getegid().as_raw(),
                count: 1,
            }],
        }
    }

    /// Checks both maps as the kernel will (sizes, ranges, no overlap on either side),
    /// and that id 0 inside is mapped if `needs_root`.
    pub fn check(&self, needs_root: bool) -> Result<(), IdMapError> {
        check_one(IdKind::Uid, &self.uid, needs_root)?;
        check_one(IdKind::Gid, &self.gid, needs_root)
    }

    /// The id outside for `id` inside, per `lines`; `None` if it is not mapped.
    pub fn outside_of(lines: &[IdRange], id: u32) -> Option<u32> {
        lines.iter().find_map(|r| {
            let off = id.checked_sub(r.inside)?;
            (off < r.count).then(|| r.outside + off)
        })
    }

    /// `lines` as `/proc/PID/uid_map` takes them (one write of the whole text).
    pub fn text(lines: &[IdRange]) -> String {
        let mut s = String::new();
        for r in lines {
            let _ = writeln!(s, "{} {} {}", r.inside, r.outside, r.count);
        }
        s
    }
}

/// The last valid id plus one: (uid_t)-1 is never an id.
const ID_END: u64 = u32::MAX as u64;

fn check_one(kind: IdKind, lines: &[IdRange], needs_root: bool) -> Result<(), IdMapError> {
    if lines.is_empty() {
        return Err(IdMapError::Empty(kind));
    }
    if lines.len() > IdMap::MAX_LINES {
        return Err(IdMapError::TooLong {
            kind,
            lines: lines.len(),
        });
    }
    for (line, r) in lines.iter().enumerate() {
        if r.count == 0 {
            return Err(IdMapError::ZeroSize { kind, line });
        }
        for (side, first) in [("inside", r.inside), ("outside", r.outside)] {
            if u64::from(first) + u64::from(r.count) > ID_END {
                return Err(IdMapError::OutOfRange {
                    kind,
                    line,
                    side,
                    first,
                    count: r.count,
                });
            }
        }
    }
    let span = |first: u32, count: u32| (u64::from(first), u64::from(first) + u64::from(count));
    for (a, ra) in lines.iter().enumerate() {
        for (b, rb) in lines.iter().enumerate().skip(a + 1) {
            for (side, x, y) in [
                (
                    "inside",
                    span(ra.inside, ra.count),
                    span(rb.inside, rb.count),
                ),
                (
                    "outside",
                    span(ra.outside, ra.count),
                    span(rb.outside, rb.count),
                ),
            ] {
                if x.0 < y.1 && y.0 < x.1 {
                    return Err(IdMapError::Overlap { kind, a, b, side });
                }
            }
        }
    }
    if needs_root && IdMap::outside_of(lines, 0).is_none() {
        return Err(IdMapError::NoRoot(kind));
    }
    Ok(())
}

/// The user namespace a guest runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserNamespace {
    /// compatrun enters a new one itself before the fork, with these maps: one line
    /// each, of its own effective ids ([`IdMap::own`]); setgroups is denied, as an
    /// ordinary user must.
    Enter(IdMap),
    /// The guest's fork makes a new one (with its pid namespace, which it then owns);
    /// compatrun, outside and privileged, allows setgroups and writes these maps (any
    /// number of lines; id 0 inside must be mapped: the guest's setup runs as that
    /// root). The guest's first process then switches to [`crate::GuestCommand::user`],
    /// ids inside.
    New(IdMap),
    /// The guest's first process joins this one (an open `/proc/PID/ns/user`) before
    /// its mount namespace ([`crate::GuestCommand::join_mount_ns`]); only without a pid
    /// namespace of its own.
    Join(RawFd),
}

/// A namespace the guest gets new, made by the pid namespace's init together with its
/// mount namespace (so a new user namespace owns it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    /// Network.
    Net,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Host and domain name.
    Uts,
    /// Cgroup root.
    Cgroup,
}

impl Namespace {
    /// The `CLONE_NEW*` flag.
    pub fn flag(self) -> i32 {
        match self {
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    fn map(uid: Vec<IdRange>) -> IdMap {
        IdMap {
            gid: uid.clone(),
            uid,
        }
    }

    #[test]
    fn good_maps_pass_and_print_as_the_kernel_reads_them() {
        let m = map(vec![r(0, 100_000, 65536), r(65536, 300_000, 10)]);
        assert_eq!(m.check(true), Ok(()));
        assert_eq!(
            IdMap::text(&m.uid),
            "0 100000 65536\n65536 300000 10\n".to_owned()
        );
        assert_eq!(IdMap::outside_of(&m.uid, 5), Some(100_005));
        assert_eq!(IdMap::outside_of(&m.uid, 65537), Some(300_001));
        assert_eq!(IdMap::outside_of(&m.uid, 70_000), None);
        let last = map(vec![r(0, 0, u32::MAX)]);
        assert_eq!(last.check(true), Ok(()));
    }

    #[test]
    fn bad_maps_are_refused_with_the_line() {
        assert_eq!(
            map(vec![]).check(false),
            Err(IdMapError::Empty(IdKind::Uid))
        );
        assert_eq!(
            map(vec![r(0, 1000, 0)]).check(false),
            Err(IdMapError::ZeroSize {
                kind: IdKind::Uid,
                line: 0
            })
        );
        assert!(matches!(
            map(vec![r(0, 1000, 1), r(1, u32::MAX - 1, 2)]).check(false),
            Err(IdMapError::OutOfRange {
                line: 1,
                side: "outside",
                ..
            })
        ));
        assert!(matches!(
            map(vec![r(0, 1000, 10), r(5, 5000, 10)]).check(false),
            Err(IdMapError::Overlap {
                a: 0,
                b: 1,
                side: "inside",
                ..
            })
        ));
        assert!(matches!(
            map(vec![r(0, 1000, 10), r(10, 1009, 10)]).check(false),
            Err(IdMapError::Overlap {
                side: "outside",
                ..
            })
        ));
        assert_eq!(
            map(vec![r(1, 1000, 10)]).check(true),
            Err(IdMapError::NoRoot(IdKind::Uid))
        );
        assert_eq!(map(vec![r(1, 1000, 10)]).check(false), Ok(()));
        let long = map((0..341).map(|i| r(i * 2, 1000 + i * 2, 1)).collect());
        assert!(matches!(
            long.check(false),
            Err(IdMapError::TooLong { lines: 341, .. })
        ));
        let gid_only = IdMap {
            uid: vec![r(0, 1000, 1)],
            gid: vec![r(0, 1000, 0)],
        };
        assert_eq!(
            gid_only.check(false),
            Err(IdMapError::ZeroSize {
                kind: IdKind::Gid,
                line: 0
            })
        );
    }
}
