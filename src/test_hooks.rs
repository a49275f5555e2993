//! Hooks for compatrun's own fault tests, switched on only by compatrun's own
//! environment when it starts (a guest cannot change that), and costing a normal run
//! nothing but one look at the environment.
//!
//! - `COMPATRUN_TEST_STOP_MID_PATCH` (any value): in the middle of every vsyscall call
//!   site's rewrite (every other thread of the guest process stopped, the first of the
//!   site's new bytes written, the rest not), compatrun logs where it is and stops
//!   itself with SIGSTOP, so a test can kill it exactly there; a SIGCONT lets it finish
//!   the site as it would have. tests/vm_vsyscall.rs uses it.

use nix::sys::signal::{raise, Signal};

/// The variable that switches the mid-patch stop on.
const STOP_MID_PATCH: &str = "COMPATRUN_TEST_STOP_MID_PATCH";

/// The mid-patch hook, if compatrun's environment asks for it.
pub fn mid_patch() -> Option<sentry::patch::MidPatchHook> {
    std::env::var_os(STOP_MID_PATCH).map(|_| stop_mid_patch as sentry::patch::MidPatchHook)
}

fn stop_mid_patch(tid: i32, at: u64, new: &[u8], written: usize) {
    let hex: Vec<String> = new.iter().map(|b| format!("{b:02x}")).collect();
    log::warn!(
        "[pid {tid}] {STOP_MID_PATCH}: stopping with the call site at {at:#x} rewritten \
         {written} of {} bytes (new bytes {})",
        new.len(),
        hex.join(" ")
    );
    if let Err(e) = raise(Signal::SIGSTOP) {
        log::warn!("{STOP_MID_PATCH}: cannot stop: {e}");
    }
}
