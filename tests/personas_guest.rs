//! What a guest program sees of a persona's system-call table: calls newer than the
//! persona's kernel answer ENOSYS, the others run natively.
//!
//! tests/fixtures/newsyscalls.c calls getrandom (Linux 3.17), statx (4.11), openat2
//! (5.6), clone3 (5.3; with a NULL argument block, so EINVAL where it exists) and
//! close_range (5.9) through syscall(2), and prints `name: ENOSYS`, `name: ok` or
//! `name: errno N` for each.

mod common;

use std::path::PathBuf;

use common::{compare, fixture, native, skip, under};

const CALLS: [&str; 5] = ["getrandom", "statx", "openat2", "clone3", "close_range"];

/// What the fixture prints on a kernel that has every call.
const ALL_PRESENT: &str =
    "getrandom: ok\nstatx: ok\nopenat2: ok\nclone3: errno 22\nclose_range: ok\n";

/// The expected output when the calls in `missing` answer ENOSYS and the rest work.
fn expected(missing: &[&str]) -> String {
    ALL_PRESENT
        .lines()
        .map(|l| {
            let name = l.split(':').next().unwrap_or("");
            if missing.contains(&name) {
                format!("{name}: ENOSYS\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The host must have every call for the comparisons with newer personas to mean
/// anything; otherwise the test is skipped.
fn host_has_all(test: &str, bin: &PathBuf) -> bool {
    let n = native(&[bin]);
    if n.out() != ALL_PRESENT {
        skip(
            test,
            &format!("the host kernel lacks some of the calls:\n{}", n.out()),
        );
        return false;
    }
    true
}

fn check(bin: &PathBuf, persona: &str, missing: &[&str]) {
    let g = under(persona, &[bin]);
    assert_eq!(
        (g.status, g.out()),
        (0, expected(missing)),
        "persona {persona}; stderr: {}",
        g.err()
    );
}

#[test]
fn under_2_6_every_new_call_is_enosys() {
    let bin = fixture("newsyscalls", &[]);
    check(&bin, "2.6", &CALLS);
    check(&bin, "rhel6", &CALLS);
}

#[test]
fn under_host_no_call_is_enosys() {
    let bin = fixture("newsyscalls", &[]);
    // Whatever the host kernel has, the host persona changes nothing.
    compare("host", &[&bin]);
    if host_has_all("under_host_no_call_is_enosys", &bin) {
        check(&bin, "host", &[]);
    }
}

#[test]
fn under_3_10_the_calls_after_3_10_are_enosys() {
    // Linux 3.10 predates all five (getrandom came in 3.17).
    let bin = fixture("newsyscalls", &[]);
    check(&bin, "3.10", &CALLS);
    check(&bin, "rhel7", &CALLS);
}

#[test]
fn under_4_18_getrandom_and_statx_exist() {
    let bin = fixture("newsyscalls", &[]);
    if host_has_all("under_4_18_getrandom_and_statx_exist", &bin) {
        check(&bin, "4.18", &["openat2", "clone3", "close_range"]);
        check(&bin, "rhel8", &["openat2", "clone3", "close_range"]);
    }
}

#[test]
fn under_5_14_no_call_is_enosys() {
    let bin = fixture("newsyscalls", &[]);
    if host_has_all("under_5_14_no_call_is_enosys", &bin) {
        check(&bin, "5.14", &[]);
        check(&bin, "rhel9", &[]);
    }
}

/// The same calls made by a 32-bit (i386) program, whose system-call numbers differ:
/// the persona's i386 table applies.
#[test]
fn an_i386_guest_gets_the_same_answers() {
    let test = "an_i386_guest_gets_the_same_answers";
    let ok = common::have_m32();
    if !ok {
        return skip(
            test,
            "cannot build and run i386 programs (gcc-multilib, libc6-dev-i386)",
        );
    }
    let bin = fixture("newsyscalls", &["-m32"]);
    check(&bin, "2.6", &CALLS);
    check(&bin, "3.10", &CALLS);
    if host_has_all(test, &bin) {
        check(&bin, "host", &[]);
        check(&bin, "4.18", &["openat2", "clone3", "close_range"]);
        check(&bin, "5.14", &[]);
    }
}
