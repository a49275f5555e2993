//! `uname` and its two i386 ancestors: the persona's release and version, with the host's
//! sysname, nodename, machine and domainname.
//!
//! The host fields are read afresh on every call (a `hostname` change shows at once).
//! They are the supervisor's own UTS namespace's, which is the guest's unless the guest
//! unshared its own (documented limit).

use platform::{Arch, GuestThread, Syscall, Verdict};

use crate::persona::Uname;

/// `__NEW_UTS_LEN + 1`: one field of `struct new_utsname` and `struct old_utsname`.
const FIELD: usize = 65;
/// `__OLD_UTS_LEN + 1`: one field of `struct oldold_utsname`.
const OLD_FIELD: usize = 9;

/// Which structure the caller passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `uname` (x86_64, x32; i386 nr 122): six 65-byte fields.
    New,
    /// i386 `olduname` (nr 109): five 65-byte fields, no domainname.
    Old,
    /// i386 `oldolduname` (nr 59): five 9-byte fields.
    OldOld,
}

/// The six fields, in `struct new_utsname` order; `nodename` replaces the host's (the
/// guest's own UTS namespace, `--hostname`).
fn fields(id: &Uname, arch: Arch, nodename: Option<&[u8]>) -> Result<[Vec<u8>; 6], i32> {
    let host = nix::sys::utsname::uname().map_err(|e| e as i32)?;
    let bytes = |s: &std::ffi::OsStr| std::os::unix::ffi::OsStrExt::as_bytes(s).to_vec();
    // The kernel reports i686 to 32-bit callers only under PER_LINUX32; a plain compat
    // task sees the host machine. We follow the common case of an i386 ABI caller.
    let machine = if arch == Arch::I386 {
        b"i686".to_vec()
    } else {
        bytes(host.machine())
    };
    Ok([
        bytes(host.sysname()),
        nodename.map_or_else(|| bytes(host.nodename()), <[u8]>::to_vec),
        id.release.as_bytes().to_vec(),
        id.version.as_bytes().to_vec(),
        machine,
        bytes(host.domainname()),
    ])
}

/// Lays the fields out as the structure for `layout`, each NUL-padded and truncated to
/// leave a terminating NUL, as the kernel copies them.
pub fn encode(fields: &[Vec<u8>; 6], layout: Layout) -> Vec<u8> {
    let (count, width) = match layout {
        Layout::New => (6, FIELD),
        Layout::Old => (5, FIELD),
        Layout::OldOld => (5, OLD_FIELD),
    };
    let mut out = vec![0u8; count * width];
    for (slot, value) in out.chunks_mut(width).zip(fields.iter()) {
        let n = value.len().min(width - 1);
        slot[..n].copy_from_slice(&value[..n]);
    }
    out
}

/// Where, in a `struct new_utsname`, the fields the persona changes lie (release and
/// version, one after the other).
pub const PERSONA_FIELDS: std::ops::Range<usize> = 2 * FIELD..4 * FIELD;

/// The bytes of [`PERSONA_FIELDS`] for persona `id`, exactly as [`handle`] writes them
/// (the in-guest answer copies these over a real `uname`'s result).
pub fn persona_bytes(id: &Uname) -> Vec<u8> {
    let fields = [
        Vec::new(),
        Vec::new(),
        id.release.as_bytes().to_vec(),
        id.version.as_bytes().to_vec(),
        Vec::new(),
        Vec::new(),
    ];
    encode(&fields, Layout::New)[PERSONA_FIELDS].to_vec()
}

/// Handles a caught `uname`-family call: write the structure to the guest's buffer.
pub fn handle<G: GuestThread>(
    guest: &mut G,
    call: &Syscall,
    id: &Uname,
    layout: Layout,
    nodename: Option<&[u8]>,
) -> Verdict {
    let fields = match fields(id, call.arch, nodename) {
        Ok(f) => f,
        Err(errno) => return Verdict::errno(errno),
    };
    let buf = encode(&fields, layout);
    match guest.write_mem(call.args[0], &buf) {
        Ok(()) => Verdict::Return(0),
        Err(_) => Verdict::errno(libc::EFAULT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_structures() {
        let f = [
            b"Linux".to_vec(),
            b"a-very-long-host-name".to_vec(),
            b"2.6.32-754.el6.x86_64".to_vec(),
            vec![b'v'; 80],
            b"x86_64".to_vec(),
            b"(none)".to_vec(),
        ];
        let new = encode(&f, Layout::New);
        assert_eq!(new.len(), 390);
        assert_eq!(&new[130..151], b"2.6.32-754.el6.x86_64");
        assert_eq!(new[195 + 64], 0, "over-long version is truncated, NUL kept");
        assert_eq!(&new[325..331], b"(none)");
        assert_eq!(encode(&f, Layout::Old).len(), 325);
        let oldold = encode(&f, Layout::OldOld);
        assert_eq!(oldold.len(), 45);
        assert_eq!(&oldold[9..18], b"a-very-l\0");
    }

    #[test]
    fn the_persona_part_is_what_the_handler_writes_there() {
        let id = Uname {
            release: "2.6.32-754.el6.x86_64".into(),
            version: "#1 SMP ".repeat(12),
            proc_version: None,
        };
        let host = [
            b"Linux".to_vec(),
            b"somewhere".to_vec(),
            id.release.as_bytes().to_vec(),
            id.version.as_bytes().to_vec(),
            b"x86_64".to_vec(),
            b"(none)".to_vec(),
        ];
        let whole = encode(&host, Layout::New);
        assert_eq!(persona_bytes(&id), &whole[PERSONA_FIELDS]);
        assert_eq!(persona_bytes(&id).len(), 130);
    }
}
