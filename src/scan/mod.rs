//! `compatrun scan`: what in a tree of programs will meet a changed kernel. Every ELF
//! file (x86_64 and i386 executables and libraries) is read in parallel, its code swept
//! with the sentry's shared decoder (system-call sites with their numbers, vsyscall
//! call sites), its ABI note and C library read; then each persona asked for (and this
//! host) judges the lot with the same policy a run uses. Output: text for people or
//! JSON (schema in docs/SCAN.md).

mod file;
mod output;
mod verdict;
mod walk;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use sentry::{Persona, SyscallTable};

pub use file::ElfReport;

/// What to scan and how to report it.
#[derive(Debug)]
pub struct Options {
    /// Files or directories.
    pub paths: Vec<PathBuf>,
    /// A root filesystem (paths shown as inside it).
    pub rootfs: Option<PathBuf>,
    /// A container image (unpacked into the cache first).
    pub image: Option<PathBuf>,
    /// Personas to judge against (default: every built-in legacy one).
    pub personas: Vec<String>,
    /// JSON instead of text.
    pub json: bool,
}

/// Everything a scan found, before judging.
#[derive(Debug)]
pub struct Scan {
    /// What was scanned, as given.
    pub roots: Vec<PathBuf>,
    /// Regular files examined.
    pub examined: usize,
    /// Their total size.
    pub bytes: u64,
    /// The x86 ELF files, by path.
    pub elf: Vec<ElfReport>,
    /// ELF files for other machines.
    pub other_elf: usize,
    /// Files or directories that could not be read, and why.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Wall time of reading and decoding.
    pub seconds: f64,
}

/// Runs `compatrun scan`.
pub fn run(opts: Options, table: &SyscallTable) -> anyhow::Result<()> {
    let personas: Vec<Persona> = if opts.personas.is_empty() {
        Persona::builtins(table)?
            .into_iter()
            .filter(|p| p.kernel.is_some())
            .collect()
    } else {
        opts.personas
            .iter()
            .map(|p| Persona::resolve(p, table))
            .collect::<Result<_, _>>()?
    };
    let _prepared;
    let (roots, tree) = match (&opts.image, &opts.rootfs) {
        (Some(image), _) => {
            let cache = crate::image::Cache::locate()?;
            let p = crate::image::prepare(image, &cache, false)?;
            let root = p.rootfs.clone();
            _prepared = p;
            (vec![root], true)
        }
        (None, Some(dir)) => {
            anyhow::ensure!(dir.is_dir(), "--rootfs {}: not a directory", dir.display());
            (vec![dir.clone()], true)
        }
        (None, None) => {
            anyhow::ensure!(
                !opts.paths.is_empty(),
                "nothing to scan: give PATH..., --rootfs DIR or --image IMAGE"
            );
            (opts.paths.clone(), false)
        }
    };
    let scan = scan(&roots, tree)?;
    let host = verdict::Host::this();
    let mut verdicts = vec![verdict::judge_host(table, &scan.elf, &host)];
    verdicts.extend(
        personas
            .iter()
            .map(|p| verdict::judge(p, table, &scan.elf, &host)),
    );
    let mut out = std::io::stdout().lock();
    if opts.json {
        output::json(&mut out, &scan, &host, &verdicts)
    } else {
        output::text(&mut out, &scan, &host, &verdicts)
    }
    .context("writing the report")
}

/// Walks `roots` and reads every file in parallel.
pub fn scan(roots: &[PathBuf], tree: bool) -> anyhow::Result<Scan> {
    let start = std::time::Instant::now();
    let walked = walk::walk(roots, tree).map_err(|e| anyhow::anyhow!("cannot scan {e}"))?;
    let files = &walked.files;
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut results: Vec<(usize, Result<Option<ElfReport>, file::FileError>)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut local = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(c) = files.get(k) else { break };
                            local.push((k, file::read(&c.path, c.shown.clone())));
                        }
                        local
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a scan worker panicked"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
    results.sort_by_key(|(k, _)| *k);
    let mut scan = Scan {
        roots: roots.to_vec(),
        examined: files.len(),
        bytes: files.iter().map(|c| c.size).sum(),
        elf: Vec::new(),
        other_elf: 0,
        unreadable: walked.unreadable,
        seconds: 0.0,
    };
    for (k, r) in results {
        match r {
            Ok(Some(report)) => scan.elf.push(report),
            Ok(None) => {}
            Err(file::FileError::NotX86(_)) => scan.other_elf += 1,
            Err(e) => scan
                .unreadable
                .push((files[k].shown.clone(), e.to_string())),
        }
    }
    scan.elf.sort_by(|a, b| a.path.cmp(&b.path));
    scan.unreadable.sort();
    scan.seconds = start.elapsed().as_secs_f64();
    Ok(scan)
}
