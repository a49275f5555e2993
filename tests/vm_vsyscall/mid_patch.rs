//! compatrun killed (SIGKILL) while it rewrites a call site: the last stage of the fault
//! tests (tests/faults.rs has the others), here because only a host without the
//! vsyscall page patches call sites.
//!
//! The stage is reached by compatrun itself, not by a timing: with
//! `COMPATRUN_TEST_STOP_MID_PATCH` in its environment (src/test_hooks.rs) it stops itself
//! (SIGSTOP) with the guest's other threads stopped and the first byte of the site's new
//! address written, the rest not; tests/vm/kill-mid-patch.sh waits for that stop,
//! records the state, kills compatrun and looks at what is left. The guest is
//! `vsyscall_sites threads`: eight threads on one site.

use std::collections::HashMap;

use super::{note, prepare, shared_boot, skip, Step};

/// The steps, in the shared boot: killed in the middle of the patch (then the next run),
/// and let go on from the same stop.
pub const STEPS: &[(&str, &str)] = &[
    (
        "kill-mid-patch",
        "sh kill-mid-patch.sh kill ./vsyscall_sites threads 300",
    ),
    (
        "cont-mid-patch",
        "sh kill-mid-patch.sh cont ./vsyscall_sites threads 300",
    ),
];

/// The bytes `movq $0xffffffffff600400,%rax` carries as its immediate, before a patch.
const TIME_IMM32: [u8; 4] = [0x00, 0x04, 0x60, 0xff];

/// The values of the script's `key: value` lines for `key`, in order.
fn values<'a>(step: &'a Step, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}: ");
    step.out
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

/// Hex bytes ("10 00 20 00") as bytes.
fn hex_bytes(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("{b:?}: {e}")))
        .collect()
}

/// The hook's line among `lines`: (the site's new bytes, how many were written).
fn hook_line(lines: &[&str], out: &str) -> (Vec<u8>, usize) {
    let hooks: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("COMPATRUN_TEST_STOP_MID_PATCH: stopping with the call site at"))
        .collect();
    assert_eq!(hooks.len(), 1, "one stop, at the one site:\n{out}");
    let line = hooks[0];
    let new = line
        .split_once("(new bytes ")
        .and_then(|(_, r)| r.strip_suffix(')'))
        .map(hex_bytes)
        .unwrap_or_else(|| panic!("no new bytes in {line:?}"));
    let written = line
        .split_once(" rewritten ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    (new, written)
}

/// The `--log info` summary among `lines`: (sites patched, calls emulated, pages).
fn summary(lines: &[&str], out: &str) -> (u64, u64, u64) {
    let line = lines
        .iter()
        .find_map(|l| l.strip_prefix("compatrun: info: vsyscall: "))
        .unwrap_or_else(|| panic!("no vsyscall summary:\n{out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 3, "summary {line:?}");
    (n[0], n[1], n[2])
}

/// Killed while a call site is patched: the guest (every thread stopped for the patch,
/// the site half rewritten in its memory) does not go on, nothing is left (processes,
/// mounts, files or directories in /, /tmp, /run, /mnt, /dev, /work, /root; the run's
/// `--report` file, or a temporary one, among them), the program's file is as it was, and the next run in the same boot patches the site and
/// answers right. Let go on from the same stop instead, the patch is finished and the
/// run is right: the hook itself changes nothing.
#[test]
fn killed_while_a_call_site_is_patched() {
    const TEST: &str = "killed_while_a_call_site_is_patched";
    if !crate::common::platform_independent(TEST) {
        return;
    }
    if let Err(reason) = prepare() {
        skip(TEST, &reason);
        return;
    }
    let s: &HashMap<String, Step> = shared_boot().steps();
    let k = &s["kill-mid-patch"];
    let out = &k.out;
    assert_eq!(k.status, 0, "the script failed:\n{out}");
    assert_eq!(values(k, "stopped"), ["yes"], "{out}");

    // Where the kill landed: compatrun's log up to its stop has the hook's line and no
    // finished patch, and the guest's memory holds the site half rewritten.
    let log = values(k, "log-at-kill");
    let (new, written) = hook_line(&log, out);
    assert_eq!((new.len(), written), (4, 1), "{out}");
    assert!(
        !log.iter().any(|l| l.contains("call site patched")),
        "the patch was finished before the kill:\n{out}"
    );
    let site = values(k, "site-bytes");
    assert_eq!(site.len(), 1, "the site's bytes were not read:\n{out}");
    let site = hex_bytes(site[0]);
    let mut half = TIME_IMM32;
    half[0] = new[0];
    assert_eq!(site, half, "not the half-written site:\n{out}");
    // Every thread of the guest (the main one and its eight) sat in a tracing stop.
    let threads = values(k, "guest-threads");
    assert_eq!(threads.len(), 1, "one guest process:\n{out}");
    let states = threads[0].split_whitespace().nth(1).unwrap_or("");
    assert_eq!(
        states, "ttttttttt",
        "the guest's threads while stopped:\n{out}"
    );
    let processes = values(k, "process");
    assert!(
        processes.iter().any(|p| p.ends_with(" compatrun T")),
        "compatrun was not stopped:\n{out}"
    );
    note(&format!(
        "{TEST}: at the kill: {}; guest NSpid {:?}",
        processes.join(", "),
        values(k, "guest-ns")
    ));

    // After the kill: compatrun died of it, the guest with it, never printing; nothing
    // is left; the program's file was never written.
    assert_eq!(values(k, "status"), ["137"], "{out}");
    assert_eq!(values(k, "left"), ["none"], "processes left:\n{out}");
    assert!(
        values(k, "out-after-kill").is_empty(),
        "the guest went on:\n{out}"
    );
    assert_eq!(values(k, "changed"), ["none"], "left behind:\n{out}");
    assert_eq!(values(k, "file-unchanged"), ["yes"], "{out}");

    // The next run works: one site patched, the answers right.
    assert_eq!(values(k, "next-status"), ["0"], "{out}");
    let next = values(k, "next");
    assert!(next.contains(&"threads ok 2400"), "{out}");
    let (sites, emulated, pages) = summary(&next, out);
    assert_eq!((sites, pages), (1, 1), "{out}");
    assert!((1..=8).contains(&emulated), "{out}");

    // Let go on from the stop: the site is finished and the run is right.
    let c = &s["cont-mid-patch"];
    let out = &c.out;
    assert_eq!(c.status, 0, "the script failed:\n{out}");
    assert_eq!(values(c, "stopped"), ["yes"], "{out}");
    assert_eq!(values(c, "status"), ["0"], "{out}");
    assert!(values(c, "out").contains(&"threads ok 2400"), "{out}");
    let log = values(c, "log");
    assert_eq!(hook_line(&log, out).1, 1, "{out}");
    assert!(log.iter().any(|l| l.contains("call site patched")), "{out}");
    let (sites, emulated, pages) = summary(&log, out);
    assert_eq!((sites, pages), (1, 1), "{out}");
    assert!((1..=8).contains(&emulated), "{out}");
}
