//! When the agent checks in, pure: the server's interval with up to 10 % jitter, at once on
//! a push hint, never before a `Retry-After` ends, and with exponential backoff (1 s to 60 s,
//! jitter) after failures. Time is passed in, so tests need no sleeps.

use std::time::{Duration, Instant};

/// First wait after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait after failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait after one more failure: 1 s doubling to 60 s, each between half and all of it
    /// (`jitter` in [0, 1) picks where).
    pub fn next(&mut self, jitter: f64) -> Duration {
        let base = BACKOFF_MIN.saturating_mul(1u32 << self.failures.min(6)).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// A success: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The check-in schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Instant,
    not_before: Option<Instant>,
    backoff: Backoff,
}

impl Schedule {
    /// A schedule due at `now`.
    pub fn new(now: Instant) -> Schedule {
        Schedule { next: now, not_before: None, backoff: Backoff::default() }
    }

    /// When the next check-in is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a check-in is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A check-in succeeded at `now`: the next after `interval` plus up to 10 % (`jitter` in
    /// [0, 1)).
    pub fn checked_in(&mut self, now: Instant, interval: Duration, jitter: f64) {
        self.backoff.reset();
        self.next = self.later(now + interval.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0)));
    }

    /// A check-in failed at `now`: again after the backoff, but no later than `interval`.
    pub fn failed(&mut self, now: Instant, interval: Duration, jitter: f64) {
        let wait = self.backoff.next(jitter).min(interval);
        self.next = self.later(now + wait);
    }

    /// The server said to come back after `seconds`.
    pub fn retry_after(&mut self, now: Instant, seconds: u64) {
        let until = now + Duration::from_secs(seconds);
        self.not_before = Some(until);
        self.next = self.next.max(until);
    }

    /// A push hint at `now`: check in at once (unless the server asked to wait).
    pub fn hint(&mut self, now: Instant) {
        self.next = self.later(now.min(self.next));
    }

    fn later(&self, t: Instant) -> Instant {
        match self.not_before {
            Some(nb) => t.max(nb),
            None => t,
        }
    }
}

/// A fraction in [0, 1) for jitter: from the clock's nanoseconds and the process id, enough
/// to spread a fleet's check-ins.
pub fn jitter() -> f64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mixed = (n as u64 ^ (std::process::id() as u64).wrapping_mul(0x9e37_79b9)) % 1_000_000;
    mixed as f64 / 1_000_000.0
}
