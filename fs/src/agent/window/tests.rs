//! Tests of the switch gate's decisions: no window or told to ignore it, waiting for the
//! window, a deferral up to the policy, and the window after a deferral.

use api::fleet::Window;
use jiff::Timestamp;

use super::*;

/// Unix seconds of an RFC 3339 instant.
fn t(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_second()
}

fn window(cron: &str, duration: u64, timezone: &str, max_defer: u64) -> Window {
    Window { cron: cron.into(), duration_seconds: duration, timezone: timezone.into(), max_defer_seconds: max_defer }
}

#[test]
fn the_gate_without_a_window_or_when_told_to_ignore_it() {
    let now = t("2026-01-01T12:00:00Z");
    let closed = window("0 2 * * *", 3600, "UTC", 7200);
    let deferral = Some(Deferral { made: now, until: now + 3600 });
    assert_eq!(gate(now, None, false, None, now), Gate::Now);
    // No window, no policy: a deferral is not honoured.
    assert_eq!(gate(now, None, false, deferral, now), Gate::Now);
    // An emergency overrides both the window and the deferral.
    assert_eq!(gate(now, Some(&closed), true, deferral, now), Gate::Now);
    // A window that cannot be used holds nothing back.
    assert_eq!(gate(now, Some(&window("0 2 * * MON", 3600, "UTC", 0)), false, None, now), Gate::Now);
    assert_eq!(gate(now, Some(&window("0 2 * * *", 3600, "Nowhere/Else", 0)), false, None, now), Gate::Now);
}

#[test]
fn the_gate_waits_for_the_window() {
    let w = window("0 2 * * *", 3600, "UTC", 0);
    let offered = t("2026-01-01T12:00:00Z");
    assert_eq!(gate(offered, Some(&w), false, None, offered), Gate::Wait { why: Why::Window, until: t("2026-01-02T02:00:00Z") });
    assert_eq!(gate(t("2026-01-02T02:00:00Z"), Some(&w), false, None, offered), Gate::Now);
    assert_eq!(gate(t("2026-01-02T02:59:59Z"), Some(&w), false, None, offered), Gate::Now);
    assert_eq!(
        gate(t("2026-01-02T03:00:00Z"), Some(&w), false, None, offered),
        Gate::Wait { why: Why::Window, until: t("2026-01-03T02:00:00Z") }
    );
}

#[test]
fn the_gate_honours_a_deferral_up_to_the_policy() {
    // Always open, 2 h of deferral allowed.
    let w = window("* * * * *", 60, "UTC", 7200);
    let now = t("2026-01-01T12:00:00Z");
    let defer = |made: i64, until: i64| Some(Deferral { made, until });
    assert_eq!(gate(now, Some(&w), false, defer(now, now + 3600), now), Gate::Wait { why: Why::Deferred, until: now + 3600 });
    // Longer than the policy allows: held only up to its limit from when it was made.
    assert_eq!(gate(now, Some(&w), false, defer(now, now + 86400), now), Gate::Wait { why: Why::Deferred, until: now + 7200 });
    // Deferring again later does not pass the deadline: the limit from the offer.
    let later = now + 7000;
    assert_eq!(gate(later, Some(&w), false, defer(later, later + 3600), now), Gate::Wait { why: Why::Deferred, until: now + 7200 });
    assert_eq!(gate(now + 7200, Some(&w), false, defer(later, later + 3600), now), Gate::Now);
    // Ended: switch.
    assert_eq!(gate(now + 3600, Some(&w), false, defer(now, now + 3600), now), Gate::Now);
    // A policy that forbids deferring ignores it.
    let strict = window("* * * * *", 60, "UTC", 0);
    assert_eq!(gate(now, Some(&strict), false, defer(now, now + 3600), now), Gate::Now);
}

#[test]
fn after_a_deferral_the_window_still_holds() {
    let w = window("0 2 * * *", 3600, "UTC", 4 * 3600);
    let now = t("2026-01-02T01:00:00Z");
    let d = Some(Deferral { made: now, until: now + 1800 });
    assert_eq!(gate(now, Some(&w), false, d, now), Gate::Wait { why: Why::Deferred, until: now + 1800 });
    assert_eq!(gate(now + 1800, Some(&w), false, d, now), Gate::Wait { why: Why::Window, until: t("2026-01-02T02:00:00Z") });
    // A deferral made inside the window holds it there.
    let inside = t("2026-01-02T02:10:00Z");
    let d = Some(Deferral { made: inside, until: inside + 600 });
    assert_eq!(gate(inside, Some(&w), false, d, now), Gate::Wait { why: Why::Deferred, until: inside + 600 });
    assert_eq!(gate(inside + 600, Some(&w), false, d, now), Gate::Now);
}
