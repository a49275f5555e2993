//! Fuzzing of what a hostile party controls, on the stable toolchain: a coverage-less
//! mutation fuzzer (no instrumentation, no nightly), seeded from the checked-in corpus
//! in tests/fuzz-corpus/ and bounded in time (`COMPATRUN_FUZZ_SECS` per target, 3 s by
//! default; `COMPATRUN_FUZZ_SEED` replays a run, whose seed every target prints).
//!
//! - `persona_files`: persona TOML (`Persona::parse`), then the sentry and filter
//!   spec built from whatever parses;
//! - `image_archives`: docker-archive and OCI layout tars (`image::prepare`): the
//!   archive's members (manifest.json, index.json, the config, layer tars and their
//!   headers) mutated one at a time inside a well-formed outer tar, so each parser and
//!   the layer unpacker see hostile input, into a scratch cache;
//! - `guest_memory`: the sentry's handlers (`uname` and its old variants, `_sysctl`
//!   name vectors, the vsyscall SIGSEGV path) against a fake guest thread whose memory
//!   is hostile: unmapped holes, read-only and unreadable pages, pointers and lengths
//!   anywhere, for every ABI.
//!
//! A target fails on a panic (and prints the input that caused it); every verdict must
//! be a value or an errno in the kernel's range.
//!
//! Everything runs in the test process (no guest, no platform), so scripts/test.sh runs
//! these in its first pass only (`common::platform_independent`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use platform::{Arch, Fault, GuestThread, Regs, SignalInfo, Supervisor, Syscall, Verdict};
use sentry::{Persona, Sentry, SyscallTable};

/// A small, fast pseudo-random generator (splitmix64): reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn budget() -> Duration {
    let secs = std::env::var("COMPATRUN_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0_f64);
    Duration::from_secs_f64(secs)
}

fn seed(target: &str) -> Rng {
    let seed = std::env::var("COMPATRUN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()) << 20)
        });
    eprintln!("FUZZ {target}: seed {seed} (COMPATRUN_FUZZ_SEED={seed} replays it)");
    Rng(seed)
}

fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(dir);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out.sort();
    out
}

/// Tokens that mean something to the parsers, spliced in by the mutator.
const TOKENS: &[&[u8]] = &[
    b"[uname]\n",
    b"[syscalls]\n",
    b"kernel = ",
    b"release = ",
    b"version = ",
    b"add = [",
    b"remove = [",
    b"nofile = ",
    b"description = ",
    b"\"",
    b"'''",
    b"]",
    b"[",
    b"=",
    b"\n",
    b"\"9999.9999.9999\"",
    b"\"0.0\"",
    b"\"2.6.32\"",
    b"-1",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"getrandom\"",
    b"\"_sysctl\"",
    b"\"no_such_call\"",
    b"1e999",
    b"{",
    b"}",
    b"inf",
    b"nan",
    b"true",
    b"#",
    b"null",
    b"[]",
    b"{}",
    b"\"sha256:",
    b"\"../\"",
    b"\"/etc/passwd\"",
    b"\"mediaType\"",
    b"\"manifests\"",
    b"\"layers\"",
    b"\"diff_ids\"",
    b"\"Layers\"",
    b"\"Config\"",
    b",",
    b":",
    b"0",
    b"\"\"",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], mut data: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(8) {
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.byte();
            }
            2 => {
                let i = rng.below(data.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                data.splice(i..i, t.iter().copied());
            }
            3 if !data.is_empty() => {
                let a = rng.below(data.len());
                let b = (a + rng.below(64)).min(data.len());
                data.drain(a..b);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(other.len() + 1);
                let b = (a + rng.below(256)).min(other.len());
                let i = rng.below(data.len() + 1);
                data.splice(i..i, other[a..b].iter().copied());
            }
            5 if !data.is_empty() => data.truncate(rng.below(data.len())),
            _ => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.byte());
            }
        }
    }
    data
}

/// Runs `one` on mutated seeds until the budget is spent; a panic fails with the input.
fn fuzz(target: &str, dir: &str, mut one: impl FnMut(&[u8], &mut Rng)) {
    let seeds = corpus(dir);
    let mut rng = seed(target);
    let start = Instant::now();
    let mut runs = 0u64;
    // Every seed as it is first.
    let mut inputs: Vec<Vec<u8>> = seeds.clone();
    while start.elapsed() < budget() || !inputs.is_empty() {
        let input = match inputs.pop() {
            Some(i) => i,
            None => {
                let base = seeds[rng.below(seeds.len())].clone();
                mutate(&mut rng, &seeds, base)
            }
        };
        let mut sub = Rng(rng.next());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(&input, &mut sub)));
        if r.is_err() {
            let file = common::scratch_dir().join(format!("fuzz-crash-{target}"));
            let _ = std::fs::write(&file, &input);
            panic!(
                "{target} panicked on input {:?} (saved in {})",
                String::from_utf8_lossy(&input),
                file.display()
            );
        }
        runs += 1;
    }
    eprintln!(
        "FUZZ {target}: {runs} inputs in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

fn table() -> SyscallTable {
    SyscallTable::builtin().expect("the built-in table")
}

#[test]
fn persona_files() {
    if !common::platform_independent("persona_files") {
        return;
    }
    let table = table();
    fuzz("persona_files", "persona", |input, _| {
        let text = String::from_utf8_lossy(input);
        if let Ok(p) = Persona::parse("fuzz", &text, Path::new("fuzz.toml"), &table) {
            if let Ok(s) = Sentry::new(p, &table) {
                let _ = platform::filter::compile(
                    s.intercept_spec(),
                    platform::filter::CatchAction::Trace,
                );
                let _ = s.synthetic_files();
            }
        }
    });
}

/// Guest memory as a hostile guest lays it out: pages that are readable and writable,
/// read-only, or neither, and holes between them.
struct FakeThread {
    pages: Vec<(u64, Vec<u8>, bool, bool)>, // (start, bytes, readable, writable)
}

const PAGE: u64 = 4096;
const PAGE_USIZE: usize = 4096;

impl FakeThread {
    fn new(rng: &mut Rng, input: &[u8]) -> Self {
        let mut pages = Vec::new();
        for i in 0..4u64 {
            let start = 0x10000 + i * 2 * PAGE; // a hole after each page
            let mut bytes: Vec<u8> = (0..PAGE).map(|_| rng.byte()).collect();
            // Seed bytes (name vectors, strings) at the start of the first pages.
            if i < 2 {
                let n = input.len().min(bytes.len());
                bytes[..n].copy_from_slice(&input[..n]);
            }
            let kind = rng.below(3);
            pages.push((start, bytes, kind != 2, kind == 0));
        }
        FakeThread { pages }
    }

    /// An address a hostile guest might pass: in a page, near its end, in a hole, or
    /// anywhere.
    fn pointer(&self, rng: &mut Rng) -> u64 {
        let (start, ..) = self.pages[rng.below(self.pages.len())];
        match rng.below(6) {
            0 => start,
            1 => start + PAGE - rng.below(64) as u64,
            2 => start + PAGE + rng.below(PAGE_USIZE) as u64,
            3 => rng.next(),
            4 => 0,
            _ => start + rng.below(PAGE_USIZE) as u64,
        }
    }

    fn access(
        &mut self,
        addr: u64,
        len: usize,
        need_write: bool,
    ) -> Result<Vec<(usize, usize, u64)>, Fault> {
        let fault = Fault { addr, len };
        let end = addr.checked_add(len as u64).ok_or(fault)?;
        let mut parts = Vec::new();
        let mut at = addr;
        while at < end {
            let (i, (start, bytes, r, w)) = self
                .pages
                .iter()
                .enumerate()
                .find(|(_, (s, b, ..))| at >= *s && at < *s + b.len() as u64)
                .ok_or(fault)?;
            if !r || (need_write && !w) {
                return Err(fault);
            }
            let off = usize::try_from(at - start).map_err(|_| fault)?;
            let n = usize::try_from((end - at).min(bytes.len() as u64 - (at - start)))
                .map_err(|_| fault)?;
            parts.push((i, off, n as u64));
            at += n as u64;
        }
        Ok(parts)
    }
}

impl GuestThread for FakeThread {
    fn tid(&self) -> i32 {
        2
    }
    fn tgid(&self) -> i32 {
        2
    }
    fn read_mem(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let parts = self.access(addr, buf.len(), false)?;
        let mut done = 0;
        for (i, off, n) in parts {
            let n = usize::try_from(n).unwrap_or(0);
            buf[done..done + n].copy_from_slice(&self.pages[i].1[off..off + n]);
            done += n;
        }
        Ok(())
    }
    fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let parts = self.access(addr, data.len(), true)?;
        let mut done = 0;
        for (i, off, n) in parts {
            let n = usize::try_from(n).unwrap_or(0);
            self.pages[i].1[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
    fn write_code(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        // As a debugger may: any mapped page, whatever its protection.
        let saved: Vec<(bool, bool)> = self.pages.iter().map(|p| (p.2, p.3)).collect();
        for p in &mut self.pages {
            p.2 = true;
            p.3 = true;
        }
        let r = self.write_mem(addr, data);
        for (p, (r0, w0)) in self.pages.iter_mut().zip(saved) {
            p.2 = r0;
            p.3 = w0;
        }
        r
    }
}

/// The calls the sentry emulates, per ABI (uname, olduname, oldolduname, _sysctl), and
/// a stray number.
fn pick_call(rng: &mut Rng) -> (Arch, u32) {
    const CALLS: &[(Arch, u32)] = &[
        (Arch::X86_64, 63),
        (Arch::X86_64, 156),
        (Arch::X32, 63),
        (Arch::X32, 156),
        (Arch::I386, 122),
        (Arch::I386, 109),
        (Arch::I386, 59),
        (Arch::I386, 149),
    ];
    if rng.below(10) == 0 {
        (Arch::X86_64, u32::try_from(rng.below(1024)).unwrap_or(0))
    } else {
        CALLS[rng.below(CALLS.len())]
    }
}

#[test]
fn guest_memory() {
    if !common::platform_independent("guest_memory") {
        return;
    }
    let table = table();
    let personas: Vec<Sentry> = ["2.6", "rhel6", "3.10"]
        .iter()
        .map(|n| {
            Sentry::new(Persona::resolve(n, &table).expect("persona"), &table).expect("sentry")
        })
        .collect();
    let mut personas = personas;
    fuzz("guest_memory", "guest-memory", |input, rng| {
        let mut thread = FakeThread::new(rng, input);
        let sentry = &mut personas[rng.below(3)];
        // A _sysctl args block (name, nlen, oldval, oldlenp, newval, newlen) in guest
        // memory, its fields pointing anywhere.
        let block = thread.pointer(rng);
        let mut words = [0u64; 6];
        for w in &mut words {
            *w = match rng.below(3) {
                0 => thread.pointer(rng),
                1 => rng.below(64) as u64,
                _ => rng.next(),
            };
        }
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let _ = thread.write_code(block, &raw);
        let (arch, nr) = pick_call(rng);
        let mut args = [0u64; 6];
        for a in &mut args {
            *a = if rng.below(2) == 0 {
                block
            } else {
                thread.pointer(rng)
            };
        }
        if arch == Arch::I386 {
            for a in &mut args {
                *a &= 0xffff_ffff;
            }
        }
        match sentry.syscall(
            &mut thread,
            &Syscall {
                arch,
                nr,
                args,
                ip: 0,
            },
        ) {
            Verdict::Forward => {}
            Verdict::Return(v) => assert!(v >= -4095, "{arch:?} {nr}: {v}"),
        }
        // The vsyscall page's SIGSEGV, with a hostile stack and registers.
        let info = SignalInfo {
            signo: libc::SIGSEGV,
            code: i32::try_from(rng.below(4)).unwrap_or(0),
            addr: [
                0xffff_ffff_ff60_0000,
                0xffff_ffff_ff60_0400,
                0xffff_ffff_ff60_0800,
            ][rng.below(3)]
                + if rng.below(4) == 0 {
                    rng.below(16) as u64
                } else {
                    0
                },
        };
        let mut regs = Regs {
            ip: info.addr,
            sp: thread.pointer(rng),
            ..Regs::default()
        };
        regs.args[0] = thread.pointer(rng);
        regs.args[1] = thread.pointer(rng);
        let _ = sentry.signal(&mut thread, &info, &mut regs);
    });
}

/// Rebuilds the outer tar of `input` with one member mutated (the outer tar stays
/// well-formed, so the image's own files reach their parsers); `input` as it is when it
/// is no tar.
fn mutate_member(input: &[u8], rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut members: Vec<(tar::Header, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(input);
    let Ok(entries) = archive.entries() else {
        return input.to_vec();
    };
    for e in entries {
        let Ok(mut e) = e else { return input.to_vec() };
        let mut data = Vec::new();
        if std::io::Read::read_to_end(&mut e, &mut data).is_err() {
            return input.to_vec();
        }
        members.push((e.header().clone(), data));
    }
    if members.is_empty() {
        return input.to_vec();
    }
    let i = rng.below(members.len());
    members[i].1 = mutate(rng, seeds, std::mem::take(&mut members[i].1));
    let mut out = tar::Builder::new(Vec::new());
    for (mut h, data) in members {
        h.set_size(data.len() as u64);
        h.set_cksum();
        if out.append(&h, data.as_slice()).is_err() {
            return input.to_vec();
        }
    }
    out.into_inner().unwrap_or_else(|_| input.to_vec())
}

#[test]
fn image_archives() {
    if !common::platform_independent("image_archives") {
        return;
    }
    let work = common::scratch_dir().join(common::unique_marker("fuzz-image"));
    std::fs::create_dir_all(&work).expect("scratch");
    let seeds = corpus("image");
    fuzz("image_archives", "image", |input, rng| {
        let data = if rng.below(4) == 0 {
            input.to_vec()
        } else {
            mutate_member(input, rng, &seeds)
        };
        let path = work.join("image.tar");
        std::fs::write(&path, &data).expect("write the archive");
        let cache_dir = work.join("cache");
        let cache = compatrun::image::Cache::at(cache_dir.clone());
        let _ = compatrun::image::prepare(&path, &cache, false);
        let _ = compatrun::image::remove_tree(&cache_dir);
    });
    let _ = compatrun::image::remove_tree(&work);
}
