//! The switch gate, pure: when a mount may switch to a generation it was offered, from its
//! group's maintenance window (`api::window`, re-exported here) and a user's deferral (`imgfs
//! defer`). Time is passed in as unix seconds.

#[cfg(test)]
mod tests;

use api::fleet::Window;
pub use api::window::{inside, next_open, Schedule};

/// A user's deferral of a mount's switches (`imgfs defer`), as kept in `STATE/deferrals.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferral {
    /// When it was made, unix seconds.
    pub made: i64,
    /// Until when it asks, unix seconds.
    pub until: i64,
}

/// Why a switch waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Outside the group's maintenance window.
    Window,
    /// A user deferred it.
    Deferred,
}

impl Why {
    /// As reported in a `waiting` event: `window`, `deferred`.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Window => "window",
            Why::Deferred => "deferred",
        }
    }
}

/// Whether a mount may switch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Switch now.
    Now,
    /// Not before `until` (unix seconds; the next window opening or the deferral's end; asked
    /// again then, as something else may still hold it).
    Wait {
        /// Why.
        why: Why,
        /// Until when.
        until: i64,
    },
}

/// Until when a deferral holds a switch offered at `offered` under a window allowing
/// `max_defer` seconds: what it asks, but at most `max_defer` after it was made, and at most
/// `max_defer` after the offer (the deadline: deferring again and again does not hold a switch
/// back for longer). None when the policy allows no deferral.
pub fn deferred_until(deferral: Deferral, max_defer: u64, offered: i64) -> Option<i64> {
    if max_defer == 0 {
        return None;
    }
    let max = max_defer.min(i64::MAX as u64 / 4) as i64;
    Some(deferral.until.min(deferral.made.saturating_add(max)).min(offered.saturating_add(max)))
}

/// Whether a mount offered a generation at `offered` may switch to it at `now`.
///
/// `ignore_windows` (an emergency plan, a withdrawal) switches now whatever the window and a
/// deferral say. A deferral holds the switch (see [`deferred_until`]) only where a window's
/// policy allows deferring; then the window holds it until it opens. No window: now. A window
/// that cannot be used ([`Schedule::parse`] says why) holds nothing back: an endpoint left
/// unpatched because it cannot read its window would be worse than one patched outside it
/// (the agent logs why).
pub fn gate(now: i64, window: Option<&Window>, ignore_windows: bool, deferral: Option<Deferral>, offered: i64) -> Gate {
    if ignore_windows {
        return Gate::Now;
    }
    let Some(window) = window else { return Gate::Now };
    let Ok(schedule) = Schedule::parse(window) else { return Gate::Now };
    if let Some(until) = deferral.and_then(|d| deferred_until(d, window.max_defer_seconds, offered)) {
        if now < until {
            return Gate::Wait { why: Why::Deferred, until };
        }
    }
    match schedule.next_open(now) {
        open if open <= now => Gate::Now,
        until => Gate::Wait { why: Why::Window, until },
    }
}
