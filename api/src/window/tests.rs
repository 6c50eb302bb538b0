//! Tests of maintenance windows: the cron grammar and what it refuses, window starts and spans
//! in UTC, a zone without daylight saving time and one with it.

use crate::fleet::Window;

use super::*;

/// Unix seconds of an RFC 3339 instant.
fn t(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_second()
}

fn window(cron: &str, duration: u64, timezone: &str, max_defer: u64) -> Window {
    Window { cron: cron.into(), duration_seconds: duration, timezone: timezone.into(), max_defer_seconds: max_defer }
}

fn schedule(cron: &str, duration: u64, timezone: &str) -> Schedule {
    Schedule::parse(&window(cron, duration, timezone, 0)).unwrap()
}

/// The next start at or after `from` of `cron` in `timezone`, as RFC 3339 in UTC.
fn check_next(cron: &str, timezone: &str, from: &str, expect: &str) {
    let next = schedule(cron, 60, timezone).next_start(t(from)).unwrap();
    assert_eq!(Timestamp::from_second(next).unwrap().to_string(), expect, "{cron:?} in {timezone} from {from}");
}

fn check_refused(cron: &str, expect: CronError) {
    assert_eq!(Cron::parse(cron), Err(expect), "{cron:?}");
}

#[test]
fn plain_expressions_parse() {
    for cron in ["0 2 * * *", "*/15 * * * *", "0,30 8-18/2 * * 1-5", "5 4 * * 7", "0 0 1-7 * 0", "10/25 * * * *", "  0   2 * * *  "] {
        assert!(Cron::parse(cron).is_ok(), "{cron:?}");
    }
}

#[test]
fn anything_beyond_the_plain_grammar_is_refused() {
    use CronError::*;
    use Field::*;
    let syntax = |field, text: &str| Syntax { field, text: text.into() };
    check_refused("0 2 * *", FieldCount { found: 4 });
    check_refused("0 0 2 * * *", FieldCount { found: 6 });
    check_refused("@daily", FieldCount { found: 1 });
    check_refused("", FieldCount { found: 0 });
    check_refused("60 * * * *", OutOfRange { field: Minute, value: 60, min: 0, max: 59 });
    check_refused("0 24 * * *", OutOfRange { field: Hour, value: 24, min: 0, max: 23 });
    check_refused("0 0 0 * *", OutOfRange { field: DayOfMonth, value: 0, min: 1, max: 31 });
    check_refused("0 0 * 13 *", OutOfRange { field: Month, value: 13, min: 1, max: 12 });
    check_refused("0 0 * * 8", OutOfRange { field: DayOfWeek, value: 8, min: 0, max: 7 });
    check_refused("0 0 * JAN *", syntax(Month, "JAN"));
    check_refused("0 0 * * MON", syntax(DayOfWeek, "MON"));
    check_refused("0 0 L * *", syntax(DayOfMonth, "L"));
    check_refused("0 0 15W * *", syntax(DayOfMonth, "15W"));
    check_refused("0 0 * * 5#3", syntax(DayOfWeek, "5#3"));
    check_refused("0 0 ? * *", syntax(DayOfMonth, "?"));
    check_refused("1,,2 * * * *", syntax(Minute, ""));
    check_refused("-1 * * * *", syntax(Minute, "-1"));
    check_refused("1-2-3 * * * *", syntax(Minute, "1-2-3"));
    check_refused("*/ * * * *", syntax(Minute, "*/"));
    check_refused("+5 * * * *", syntax(Minute, "+5"));
    check_refused("5-1 * * * *", Backwards { field: Minute, start: 5, end: 1 });
    check_refused("*/0 * * * *", ZeroStep { field: Minute, text: "*/0".into() });
}

#[test]
fn unusable_windows_are_refused_with_their_reason() {
    let parse = |w: Window| Schedule::parse(&w).map(|_| ()).unwrap_err();
    assert!(matches!(parse(window("0 2 * * *", 60, "Mars/Olympus", 0)), WindowError::TimeZone { name, .. } if name == "Mars/Olympus"));
    assert_eq!(parse(window("0 2 * * *", 0, "UTC", 0)), WindowError::ZeroDuration);
    assert_eq!(parse(window("0 0 30 2 *", 60, "UTC", 0)), WindowError::NeverOpens { cron: "0 0 30 2 *".into() });
    assert_eq!(parse(window("0 0 31 4,6,9,11 *", 60, "UTC", 0)), WindowError::NeverOpens { cron: "0 0 31 4,6,9,11 *".into() });
    assert!(matches!(parse(window("0 2 * *", 60, "UTC", 0)), WindowError::Cron { source: CronError::FieldCount { found: 4 }, .. }));
    // The 29th of February opens, if rarely.
    check_next("0 0 29 2 *", "UTC", "2097-03-01T00:00:00Z", "2104-02-29T00:00:00Z");
}

#[test]
fn starts_in_utc() {
    check_next("0 2 * * *", "UTC", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z");
    // At or after: a start at the very second counts; a second later it is tomorrow's.
    check_next("0 2 * * *", "UTC", "2026-01-01T02:00:00Z", "2026-01-01T02:00:00Z");
    check_next("0 2 * * *", "UTC", "2026-01-01T02:00:01Z", "2026-01-02T02:00:00Z");
    check_next("59 23 31 12 *", "UTC", "2026-01-01T00:00:00Z", "2026-12-31T23:59:00Z");
    check_next("0 0 1 1 *", "UTC", "2026-12-31T23:59:30Z", "2027-01-01T00:00:00Z");
}

#[test]
fn steps_ranges_and_lists() {
    check_next("*/20 * * * *", "UTC", "2026-01-01T10:05:00Z", "2026-01-01T10:20:00Z");
    check_next("*/20 * * * *", "UTC", "2026-01-01T10:41:00Z", "2026-01-01T11:00:00Z");
    check_next("10/25 * * * *", "UTC", "2026-01-01T10:11:00Z", "2026-01-01T10:35:00Z");
    check_next("10/25 * * * *", "UTC", "2026-01-01T10:36:00Z", "2026-01-01T11:10:00Z");
    check_next("0 8-18/4 * * *", "UTC", "2026-01-01T12:01:00Z", "2026-01-01T16:00:00Z");
    check_next("0 8-18/4 * * *", "UTC", "2026-01-01T16:01:00Z", "2026-01-02T08:00:00Z");
    check_next("5,50 3 * * *", "UTC", "2026-01-01T03:06:00Z", "2026-01-01T03:50:00Z");
    check_next("0 0 * 2-3/1 *", "UTC", "2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z");
}

#[test]
fn days_of_week_and_of_month() {
    // 2026-01-01 is a Thursday.
    check_next("0 9 * * 1-5", "UTC", "2026-01-02T10:00:00Z", "2026-01-05T09:00:00Z");
    check_next("0 9 * * 7", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T09:00:00Z");
    check_next("0 9 * * 0", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T09:00:00Z");
    // Both restricted: the 13th or any Friday, whichever comes first.
    check_next("0 0 13 * 5", "UTC", "2026-01-03T00:00:00Z", "2026-01-09T00:00:00Z");
    check_next("0 0 13 * 5", "UTC", "2026-01-10T00:00:00Z", "2026-01-13T00:00:00Z");
    // One restricted: only it counts.
    check_next("0 0 13 * *", "UTC", "2026-01-03T00:00:00Z", "2026-01-13T00:00:00Z");
}

#[test]
fn a_window_spanning_midnight() {
    let s = schedule("0 22 * * *", 4 * 3600, "UTC");
    for (at, inside) in [
        ("2026-01-01T21:59:59Z", false),
        ("2026-01-01T22:00:00Z", true),
        ("2026-01-01T23:30:00Z", true),
        ("2026-01-02T01:59:59Z", true),
        ("2026-01-02T02:00:00Z", false),
        ("2026-01-02T12:00:00Z", false),
    ] {
        assert_eq!(s.inside(t(at)), inside, "{at}");
    }
    assert_eq!(s.next_open(t("2026-01-02T01:00:00Z")), t("2026-01-02T01:00:00Z"));
    assert_eq!(s.next_open(t("2026-01-02T02:00:00Z")), t("2026-01-02T22:00:00Z"));
    let w = window("0 22 * * *", 4 * 3600, "UTC", 0);
    assert!(inside(t("2026-01-02T00:00:00Z"), &w));
    assert_eq!(next_open(t("2026-01-02T03:00:00Z"), &w), t("2026-01-02T22:00:00Z"));
}

#[test]
fn a_zone_without_daylight_saving_time() {
    // Tokyo is UTC+9 all year.
    check_next("0 2 * * *", "Asia/Tokyo", "2026-01-01T00:00:00Z", "2026-01-01T17:00:00Z");
    check_next("0 2 * * *", "Asia/Tokyo", "2026-07-01T00:00:00Z", "2026-07-01T17:00:00Z");
    let s = schedule("0 23 * * *", 2 * 3600, "Asia/Tokyo");
    assert!(s.inside(t("2026-01-01T15:30:00Z")), "00:30 in Tokyo, inside the window of 23:00");
    assert!(!s.inside(t("2026-01-01T16:00:00Z")));
}

#[test]
fn a_zone_with_daylight_saving_time() {
    // Paris: CET (+1) in winter, CEST (+2) in summer.
    check_next("0 2 * * *", "Europe/Paris", "2026-01-10T00:00:00Z", "2026-01-10T01:00:00Z");
    check_next("0 2 * * *", "Europe/Paris", "2026-07-10T00:00:00Z", "2026-07-10T00:00:00Z");
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and happens at 03:30.
    check_next("30 2 * * *", "Europe/Paris", "2026-03-29T00:00:00Z", "2026-03-29T01:30:00Z");
    check_next("0 3 * * *", "Europe/Paris", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z");
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and starts once.
    check_next("30 2 * * *", "Europe/Paris", "2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z");
    check_next("30 2 * * *", "Europe/Paris", "2026-10-25T00:30:01Z", "2026-10-26T01:30:00Z");
    // A duration is real seconds: a 3 h window from 01:00 CEST on the fall-back night ends at
    // 02:00 CET.
    let s = schedule("0 1 * * *", 3 * 3600, "Europe/Paris");
    assert!(s.inside(t("2026-10-25T01:59:59Z")));
    assert!(!s.inside(t("2026-10-25T02:00:00Z")));
}
