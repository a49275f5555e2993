//! Settling disputed cases: the worker pool that runs the full runs and the re-runs,
//! the verdict on each case from its outcomes on both sides, and the disputes found.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::allowed::{Side, ABSENT};
use crate::run::{outcome, Cases, Run};
use crate::SLOTS;

/// A unit of work for [`pool`].
pub type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// What a re-run job returns: which side and module, the cases it settled, its time.
pub type Rerun = ((Side, &'static str), Cases, Duration);

/// Runs `jobs` on [`SLOTS`] threads, in order of the list; returns results in that order.
pub fn pool<T: Send>(jobs: Vec<Job<'_, T>>) -> Vec<T> {
    let n = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let results = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<T>>>());
    std::thread::scope(|s| {
        for _ in 0..SLOTS {
            s.spawn(|| loop {
                let next = queue.lock().expect("queue").next();
                let Some((i, job)) = next else { break };
                let r = job();
                results.lock().expect("results")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// How a disputed case was settled.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
pub enum Verdict {
    /// Differs consistently: a real difference.
    Real,
    /// Differed in the full run, agreed in every re-run.
    Flaky,
    /// Native itself produced the guest's outcomes.
    FlakyNative,
    /// Not reached because the full guest run died under another case; agreed in re-runs.
    NotReached,
}

/// Settles a disputed case from its outcomes: `native` and `guest` hold the full run's
/// first, then the re-runs' (the same number on both sides). `full_run_aborted`: the
/// guest's full run of the module died under some case.
pub fn settle(
    persona: Side,
    id: &str,
    native: &[String],
    guest: &[String],
    full_run_aborted: bool,
) -> Verdict {
    let agreed = (1..guest.len()).all(|i| guest[i] == persona.expect(id, &native[i]));
    let native_set: BTreeSet<&str> = native.iter().map(|o| persona.expect(id, o)).collect();
    if agreed && guest[0] == ABSENT && full_run_aborted {
        Verdict::NotReached
    } else if agreed {
        Verdict::Flaky
    } else if guest.iter().all(|o| native_set.contains(o.as_str())) {
        Verdict::FlakyNative
    } else {
        Verdict::Real
    }
}

pub struct Dispute {
    pub persona: Side,
    pub module: &'static str,
    pub id: String,
    pub native: Vec<String>,
    pub guest: Vec<String>,
    pub expected: String,
    pub detail: String,
    pub verdict: Verdict,
}

impl Dispute {
    pub fn line(&self) -> String {
        let mut s = format!(
            "  {}: native {} / {} {} (expected {})",
            self.id,
            self.native.join(","),
            self.persona.name(),
            self.guest.join(","),
            self.expected
        );
        if !self.detail.is_empty() {
            let _ = write!(s, "\n      {}", self.detail);
        }
        s
    }
}

/// Settles every disputed case from its outcomes in the full runs (`full`) and the
/// re-runs (`reruns`), most serious first; an allowed difference that only the re-runs
/// showed is added to `used_allow` and `expected_diffs`.
pub fn settle_all(
    disputed: &BTreeMap<(Side, &'static str), BTreeSet<String>>,
    full: &BTreeMap<(Side, &'static str), Run>,
    reruns: &BTreeMap<(Side, &'static str), Vec<Cases>>,
    used_allow: &mut BTreeSet<&'static str>,
    expected_diffs: &mut Vec<String>,
) -> Vec<Dispute> {
    // Settle each disputed case.
    let mut settled: Vec<Dispute> = Vec::new();
    for (&(persona, module), ids) in disputed {
        let n = &full[&(Side::Native, module)];
        let g = &full[&(persona, module)];
        let nr = &reruns[&(Side::Native, module)];
        let gr = &reruns[&(persona, module)];
        for id in ids {
            let native: Vec<String> = std::iter::once(outcome(&n.cases, id))
                .chain(nr.iter().map(|c| outcome(c, id)))
                .map(String::from)
                .collect();
            let guest: Vec<String> = std::iter::once(outcome(&g.cases, id))
                .chain(gr.iter().map(|c| outcome(c, id)))
                .map(String::from)
                .collect();
            let expected = persona.expect(id, &native[0]).to_string();
            let verdict = settle(persona, id, &native, &guest, g.aborted().is_some());
            if verdict != Verdict::Real {
                // An allowed difference the full run did not show (it never got there).
                let seen = (1..guest.len()).find_map(|i| {
                    persona
                        .allowance(id, &native[i])
                        .filter(|a| guest[i] == a.guest)
                        .map(|a| (a, &native[i]))
                });
                if let Some((a, no)) = seen {
                    used_allow.insert(a.case);
                    expected_diffs.push(format!(
                        "  {}: {id}: native {no} -> {}: {} (seen in the re-runs)",
                        persona.name(),
                        a.guest,
                        a.reason
                    ));
                }
            }
            // The most telling detail: the guest's first one.
            let detail = std::iter::once(g.cases.get(id))
                .chain(gr.iter().map(|c| c.get(id)))
                .flatten()
                .map(|c| c.detail.clone())
                .find(|d| !d.is_empty())
                .unwrap_or_default();
            settled.push(Dispute {
                persona,
                module,
                id: id.clone(),
                native,
                guest,
                expected,
                detail,
                verdict,
            });
        }
    }
    settled.sort_by(|a, b| {
        (a.verdict, a.persona, a.module, &a.id).cmp(&(b.verdict, b.persona, b.module, &b.id))
    });
    settled
}
