//! Health after a switch, pure: the probe at once, the activation's unit restarts after a
//! healthy first probe, the probe again when the soak time has passed since the switch, and
//! the verdict. Time is passed in (an injected clock), so tests need no sleeps; the agent passes
//! `cache::clock::instant()`, which end-to-end tests move forward with the shared test clock,
//! runs the probes themselves on threads (`probe`) and feeds their outcomes back.

use std::time::{Duration, Instant};

use super::reconcile::Offer;

/// Where a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The probe right after the switch.
    First,
    /// Restarting the activation's units (after a healthy first probe).
    Restart,
    /// The probe when the soak time has passed since the switch.
    Soak,
}

/// Something to run for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Run the health probe.
    Probe,
    /// Restart the activation's units.
    Restart,
}

/// The health check of one mount after a switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What the mount switched to, and the offer it came from (a failure is remembered
    /// against it).
    pub offer: Offer,
    /// When it switched.
    pub since: Instant,
    /// How long it must stay healthy.
    pub soak: Duration,
    /// Units to restart after the first probe (activation `restart:`).
    pub units: Vec<String>,
    /// Where it is.
    pub phase: Phase,
    /// A task of it is running.
    pub busy: bool,
    /// Tells this check's outcomes from those of a check it replaced.
    pub serial: u64,
}

/// What a finished task means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// More to do later (`Check::due`).
    Continue,
    /// Healthy at once and after the soak: report `healthy`.
    Healthy,
    /// The probe failed: roll back.
    ProbeFailed,
    /// The units could not be restarted.
    RestartFailed,
}

impl Check {
    /// A check of a switch at `since` to `offer`'s generation.
    pub fn new(offer: Offer, since: Instant, soak: Duration, units: Vec<String>, serial: u64) -> Check {
        Check { offer, since, soak, units, phase: Phase::First, busy: false, serial }
    }

    /// When its next task is due.
    pub fn due(&self) -> Instant {
        match self.phase {
            Phase::First | Phase::Restart => self.since,
            Phase::Soak => self.since + self.soak,
        }
    }

    /// The task to start at `now`, if one is due and none runs; marks it running.
    pub fn start(&mut self, now: Instant) -> Option<Task> {
        if self.busy || now < self.due() {
            return None;
        }
        self.busy = true;
        Some(match self.phase {
            Phase::First | Phase::Soak => Task::Probe,
            Phase::Restart => Task::Restart,
        })
    }

    /// The running task ended, `ok` or not: what follows.
    pub fn finished(&mut self, ok: bool) -> Verdict {
        self.busy = false;
        match (self.phase, ok) {
            (Phase::First | Phase::Soak, false) => Verdict::ProbeFailed,
            (Phase::Restart, false) => Verdict::RestartFailed,
            (Phase::First, true) if !self.units.is_empty() => {
                self.phase = Phase::Restart;
                Verdict::Continue
            }
            (Phase::Soak, true) => Verdict::Healthy,
            (Phase::First | Phase::Restart, true) if self.soak.is_zero() => Verdict::Healthy,
            (Phase::First | Phase::Restart, true) => {
                self.phase = Phase::Soak;
                Verdict::Continue
            }
        }
    }
}
