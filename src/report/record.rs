//! What a run report collects while the run goes on: the command, the persona, the
//! platform and why, the counting sentry, and the time, turned into a [`Report`] at the
//! end however the run ended.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use platform::{ExitStatus, GuestCommand, PlatformError};
use sentry::{Persona, Sentry};

use super::output::{self, PersonaInfo, PlatformInfo, Report, RunOutcome};
use super::Counting;
use crate::cli::{Cli, Platform};

/// A run report in the making.
#[derive(Debug)]
pub struct Record {
    start: Instant,
    started_unix: f64,
    command: Vec<String>,
    persona: Option<PersonaInfo>,
    platform: Option<PlatformInfo>,
    counting: Option<Counting>,
}

impl Record {
    /// Starts the clock for `cli`'s run.
    pub fn start(cli: &Cli) -> Self {
        Record {
            start: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            command: cli
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            persona: None,
            platform: None,
            counting: None,
        }
    }

    /// The persona in force.
    pub fn persona(&mut self, persona: &Persona) {
        self.persona = Some(PersonaInfo {
            name: persona.name.clone(),
            description: persona.description.clone(),
            kernel: persona.kernel.map(|v| v.to_string()),
        });
    }

    /// Runs the guest on `platform` (chosen for `reason`) under a counting `sentry`.
    pub fn run(
        &mut self,
        platform: Platform,
        reason: String,
        command: &GuestCommand,
        sentry: Sentry,
    ) -> Result<ExitStatus, PlatformError> {
        self.platform = Some(PlatformInfo {
            name: platform.name(),
            reason,
        });
        let caps = platform.declaration().caps;
        let counting = self
            .counting
            .insert(Counting::new(sentry, caps.sees_exec && caps.reports_exits));
        let spec = counting.spec();
        platform.run(command, &spec, counting)
    }

    /// The sentry of the run, once [`Record::run`] has started it.
    pub fn sentry(&self) -> Option<&Sentry> {
        self.counting.as_ref().map(Counting::sentry)
    }

    /// The report, for a run that ended with exit status `code` (and `error`, if
    /// compatrun failed).
    pub fn finish(self, code: u8, error: Option<&anyhow::Error>) -> Report {
        let (programs, totals) = self
            .counting
            .as_ref()
            .map(output::programs)
            .unwrap_or_default();
        Report {
            schema: output::SCHEMA,
            compatrun_version: env!("CARGO_PKG_VERSION"),
            command: self.command,
            persona: self.persona.unwrap_or(PersonaInfo {
                name: String::new(),
                description: "(the run failed before its persona was loaded)".to_owned(),
                kernel: None,
            }),
            platform: self.platform,
            refused_calls_counted: true,
            started_unix: self.started_unix,
            wall_time_s: self.start.elapsed().as_secs_f64(),
            outcome: RunOutcome {
                // Ended by a signal after the run was wound up: as the caller sees it.
                exit_code: platform::sys::signals::ended_by()
                    .map_or(i32::from(code), |sig| 128 + sig),
                ended_by_signal: platform::sys::signals::ended_by(),
                error: error.map(|e| format!("{e:#}")),
            },
            totals,
            programs,
        }
    }
}
