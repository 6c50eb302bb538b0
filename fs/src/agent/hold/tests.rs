//! Tests of the held switches: an emergency goes at once, a closed window prefetches then waits
//! and says why once per change, a deferral is reported, holds not asked about are forgotten.

use std::time::{Duration, Instant};

use api::fleet::{GroupName, NamespaceMount, Source, Window};

use super::*;

/// 2026-01-01T12:00:00Z.
const NOON: i64 = 1_767_268_800;
/// 2026-01-02T02:00:00Z.
const OPENS: i64 = NOON + 14 * 3600;

fn mount(window: Option<Window>, ignore_windows: bool) -> DesiredMount {
    DesiredMount {
        mount: NamespaceMount {
            path: "/os".into(),
            source: Source::Pinned("os@1".into()),
            cache_share: None,
            passthrough: false,
            health: None,
            writable: None,
        },
        group: GroupName::new("kiosks").unwrap(),
        generation: Some("os@2".into()),
        rollout: None,
        soak_seconds: None,
        ignore_windows,
        window,
        activation: None,
    }
}

fn nightly(max_defer: u64) -> Option<Window> {
    Some(Window { cron: "0 2 * * *".into(), duration_seconds: 3600, timezone: "UTC".into(), max_defer_seconds: max_defer })
}

fn waiting(why: &str, until: i64) -> EventKind {
    EventKind::Waiting { path: "/os".into(), generation: "os@2".into(), why: why.into(), until: Some(until) }
}

/// Takes in finished prefetches until none runs (the mount point has no mount: they fail at once).
fn settle(holds: &mut Holds, now: i64) -> Vec<EventKind> {
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while holds.prefetching("/os") {
        assert!(Instant::now() < until, "the prefetch never ended");
        std::thread::sleep(Duration::from_millis(10));
        holds.finished(now, &mut events);
    }
    events
}

#[test]
fn an_emergency_switches_at_once_whatever_the_window_and_deferral() {
    let dir = tempfile::tempdir().unwrap();
    let mut holds = Holds::default();
    let mut events = Vec::new();
    let deferral = Some(Deferral { made: NOON, until: NOON + 3600 });
    assert!(holds.consider(NOON, &mount(nightly(7200), true), "os@2", dir.path(), deferral, &mut events));
    assert_eq!(events, []);
    assert_eq!(holds.wake(), None);
    // Without a window there is nothing to wait for either.
    assert!(holds.consider(NOON, &mount(None, false), "os@2", dir.path(), deferral, &mut events));
    assert_eq!(events, []);
}

#[test]
fn a_closed_window_prefetches_then_waits_and_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut holds = Holds::default();
    let m = mount(nightly(0), false);
    let mut events = Vec::new();
    assert!(!holds.consider(NOON, &m, "os@2", dir.path(), None, &mut events));
    assert_eq!(events, [waiting("prefetching", OPENS)]);
    assert_eq!(holds.wake(), Some(OPENS));
    // No mount answers at the mount point: the prefetch fails, nothing is reported for it, and
    // the mount waits for its window.
    assert_eq!(settle(&mut holds, NOON), []);
    let mut events = Vec::new();
    assert!(!holds.consider(NOON + 5, &m, "os@2", dir.path(), None, &mut events));
    assert_eq!(events, [waiting("window", OPENS)]);
    let mut events = Vec::new();
    assert!(!holds.consider(NOON + 10, &m, "os@2", dir.path(), None, &mut events));
    assert_eq!(events, [], "said once");
    holds.end_turn();
    // The window opens: switch.
    assert!(holds.consider(OPENS, &m, "os@2", dir.path(), None, &mut events));
    assert_eq!(holds.wake(), None);
}

#[test]
fn a_deferral_is_reported_and_holds_not_asked_about_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut holds = Holds::default();
    let m = mount(nightly(7200), false);
    let inside = OPENS + 60;
    let deferral = Some(Deferral { made: inside, until: inside + 1800 });
    let mut events = Vec::new();
    assert!(!holds.consider(inside, &m, "os@2", dir.path(), deferral, &mut events));
    assert_eq!(events, [waiting("prefetching", inside + 1800)]);
    settle(&mut holds, inside);
    let mut events = Vec::new();
    assert!(!holds.consider(inside + 1, &m, "os@2", dir.path(), deferral, &mut events));
    assert_eq!(events, [waiting("deferred", inside + 1800)]);
    holds.end_turn();
    holds.end_turn();
    assert_eq!(holds.wake(), None, "not asked about in a turn: forgotten");
}

#[test]
fn a_restored_offer_keeps_the_deferral_deadline_of_the_first_offer() {
    let dir = tempfile::tempdir().unwrap();
    let m = mount(nightly(7200), false);
    let inside = OPENS + 60;
    // Offered an hour and a half ago (before a restart); a fresh deferral of two hours.
    let first = inside - 5400;
    let deferral = Some(Deferral { made: inside, until: inside + 7200 });
    let mut holds = Holds::default();
    holds.restore("/os", "os@2", first);
    let mut events = Vec::new();
    assert!(!holds.consider(inside, &m, "os@2", dir.path(), deferral, &mut events));
    assert_eq!(events, [waiting("prefetching", first + 7200)], "the deadline counts from the first offer");
    assert_eq!(holds.offered("/os"), Some(("os@2".into(), first)));
    // Without it, the deadline would count from now.
    let mut fresh = Holds::default();
    let mut events = Vec::new();
    assert!(!fresh.consider(inside, &m, "os@2", dir.path(), deferral, &mut events));
    assert_eq!(events, [waiting("prefetching", inside + 7200)]);
    // A restore for a generation the mount is not offered is replaced by the offer.
    let mut other = Holds::default();
    other.restore("/os", "os@9", first);
    let mut events = Vec::new();
    other.consider(inside, &m, "os@2", dir.path(), deferral, &mut events);
    assert_eq!(other.offered("/os"), Some(("os@2".into(), inside)));
    settle(&mut holds, inside);
    settle(&mut fresh, inside);
    settle(&mut other, inside);
}
