//! Reading ELF structures out of untrusted bytes (guest memory, guest files): every
//! field is bounds-checked and a malformed image yields `None`, never a panic.

/// Little-endian u16 at `off`.
pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Little-endian u32 at `off`.
pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Little-endian u64 at `off`.
pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// One ELF note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// The owner name, NUL included (as stored).
    pub name: &'a [u8],
    /// `n_type`.
    pub kind: u32,
    /// Offset of the descriptor within the notes buffer.
    pub desc_offset: usize,
    /// The descriptor.
    pub desc: &'a [u8],
}

/// The notes in a PT_NOTE segment's bytes, stopping at the first malformed one.
pub fn notes(buf: &[u8]) -> Vec<Note<'_>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(note) = note_at(buf, at) {
        let next = note
            .desc_offset
            .checked_add(note.desc.len().saturating_add(3) & !3);
        out.push(note);
        match next {
            Some(n) if n > at => at = n,
            _ => break,
        }
    }
    out
}

fn note_at(buf: &[u8], at: usize) -> Option<Note<'_>> {
    let namesz = usize::try_from(u32_at(buf, at)?).ok()?;
    let descsz = usize::try_from(u32_at(buf, at.checked_add(4)?)?).ok()?;
    let kind = u32_at(buf, at.checked_add(8)?)?;
    let name_at = at.checked_add(12)?;
    let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
    Some(Note {
        name: buf.get(name_at..name_at.checked_add(namesz)?)?,
        kind,
        desc_offset: desc_at,
        desc: buf.get(desc_at..desc_at.checked_add(descsz)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_read_and_garbage_is_survived() {
        let mut buf = Vec::new();
        for (name, kind, desc) in [
            (&b"GNU\0"[..], 1u32, &[0u8, 0, 0, 0, 2, 0, 0, 0][..]),
            (b"Linux\0", 0, &[1, 2, 3, 4]),
        ] {
            buf.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_le_bytes());
            buf.extend_from_slice(&u32::try_from(desc.len()).unwrap_or(0).to_le_bytes());
            buf.extend_from_slice(&kind.to_le_bytes());
            buf.extend_from_slice(name);
            buf.resize(buf.len().next_multiple_of(4), 0);
            buf.extend_from_slice(desc);
            buf.resize(buf.len().next_multiple_of(4), 0);
        }
        let n = notes(&buf);
        assert_eq!(n.len(), 2);
        assert_eq!(
            (n[1].name, n[1].kind, n[1].desc),
            (&b"Linux\0"[..], 0, &[1u8, 2, 3, 4][..])
        );
        // Truncations and absurd sizes end the walk quietly.
        for cut in 0..buf.len() {
            let _ = notes(&buf[..cut]);
        }
        let mut evil = buf.clone();
        evil[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(notes(&evil).is_empty());
        assert_eq!(u64_at(&buf, usize::MAX - 2), None);
    }
}
