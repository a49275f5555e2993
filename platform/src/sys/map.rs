//! Read-only file mappings (memmap2), for reading large files such as whole ELF
//! libraries without copying them: `compatrun scan` maps every file it reads.

/// A file mapped read-only and private; dereferences to its bytes.
#[derive(Debug)]
pub struct ReadOnlyMap(memmap2::Mmap);

impl ReadOnlyMap {
    /// Maps all of `file` (which must be open for reading) read-only. An empty file
    /// gives an empty map.
    pub fn new(file: &std::fs::File) -> std::io::Result<Self> {
        // SAFETY: the mapping is read-only and private (memmap2 maps with PROT_READ,
        // MAP_PRIVATE), so no Rust reference to it can observe a write made through it,
        // and its length is the file's size at the time of mapping, fixed for the
        // mapping's life. The remaining hazard is another process truncating the file
        // while it is mapped (the kernel then raises SIGBUS on access), which memmap2
        // cannot rule out; callers only map files they read once and drop the map.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        Ok(ReadOnlyMap(map))
    }
}

impl std::ops::Deref for ReadOnlyMap {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}
