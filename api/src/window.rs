//! Maintenance windows, pure: a group's window (a 5-field cron expression of the window's
//! starts, a duration and a time zone) checked and asked when it is open. The server checks a
//! window when a group is written; the agent's switch gate (`fs/src/agent/window.rs`) asks it.
//! Time is passed in as unix seconds; the time zone rules come from `jiff` (the system's tz
//! database, else the one built in).
//!
//! The cron grammar is the plain one: per field `*`, a number, a range `a-b`, a step `*/n` or
//! `a-b/n` or `a/n` (from `a` to the field's end), and comma-separated lists of those. Names
//! (`MON`, `JAN`), `L`, `W`, `#`, `?`, `@daily` and a seconds field are refused, so an
//! expression means the same on every endpoint. Day-of-week is 0-7 (0 and 7 are Sunday). As in
//! Vixie cron, when both day fields are restricted a day matching either one counts; a field
//! is unrestricted only when it is exactly `*`.
//!
//! Daylight saving time: a start in a gap (a local time that does not exist) happens at the
//! same distance after the gap's start (02:30 on a spring-forward day at 02:00 is 03:30); a
//! start in a fold (a local time that happens twice) happens once, at its first occurrence.

#[cfg(test)]
mod tests;

use crate::fleet::Window;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A field of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// 0-59.
    Minute,
    /// 0-23.
    Hour,
    /// 1-31.
    DayOfMonth,
    /// 1-12.
    Month,
    /// 0-7, Sunday being 0 and 7.
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] = [Field::Minute, Field::Hour, Field::DayOfMonth, Field::Month, Field::DayOfWeek];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day of month",
            Field::Month => "month",
            Field::DayOfWeek => "day of week",
        }
    }

    /// The smallest and largest value it takes.
    pub fn range(self) -> (u32, u32) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a cron expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not five fields.
    #[error("{found} fields; a window's cron expression has 5: minute hour day-of-month month day-of-week")]
    FieldCount {
        /// How many there were.
        found: usize,
    },
    /// Something other than numbers, `*`, `-`, `/` and `,` (a name, `L`, `W`, `#`, `?`), or
    /// an empty item.
    #[error("{field} {text:?}: only numbers, `*`, ranges `a-b`, steps `/n` and lists `a,b` are allowed")]
    Syntax {
        /// The field.
        field: Field,
        /// The item.
        text: String,
    },
    /// A number outside the field's range.
    #[error("{field} {value} is out of range {min}-{max}")]
    OutOfRange {
        /// The field.
        field: Field,
        /// The number.
        value: u32,
        /// The smallest allowed.
        min: u32,
        /// The largest allowed.
        max: u32,
    },
    /// A range whose start is after its end.
    #[error("{field} range {start}-{end} runs backwards")]
    Backwards {
        /// The field.
        field: Field,
        /// Its start.
        start: u32,
        /// Its end.
        end: u32,
    },
    /// A step of 0.
    #[error("{field} {text:?}: a step must be at least 1")]
    ZeroStep {
        /// The field.
        field: Field,
        /// The item.
        text: String,
    },
}

/// Why a window cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The cron expression does not parse.
    #[error("window cron expression {cron:?}: {source}")]
    Cron {
        /// The expression.
        cron: String,
        /// Why.
        #[source]
        source: CronError,
    },
    /// No such time zone.
    #[error("window time zone {name:?} is not known: {why}")]
    TimeZone {
        /// The name given.
        name: String,
        /// What the tz database said.
        why: String,
    },
    /// A window of no length.
    #[error("a window lasts at least one second (duration_seconds is 0)")]
    ZeroDuration,
    /// The expression names no existing day (`0 0 30 2 *`).
    #[error("window cron expression {cron:?} never matches a day that exists")]
    NeverOpens {
        /// The expression.
        cron: String,
    },
}

/// A parsed cron expression: a bit per value each field takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    /// Bit 0 is Sunday (7 is folded into 0).
    weekdays: u8,
    any_day: bool,
    any_weekday: bool,
}

impl Cron {
    /// Parses a 5-field expression.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount { found: fields.len() });
        }
        let mut bits = [0u64; 5];
        for (i, (field, text)) in Field::ALL.into_iter().zip(&fields).enumerate() {
            bits[i] = parse_field(field, text)?;
        }
        let weekdays = bits[4] | (bits[4] >> 7);
        Ok(Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays: (weekdays & 0x7f) as u8,
            any_day: fields[2] == "*",
            any_weekday: fields[4] == "*",
        })
    }

    /// Whether a start may fall on `date`.
    pub fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        }
    }

    /// The local times (hour, minute) of a day that match, in order.
    fn times(&self) -> impl Iterator<Item = (i8, i8)> + '_ {
        (0..24i8)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| (0..60i8).filter(|m| self.minutes & (1 << m) != 0).map(move |m| (h, m)))
    }
}

/// One field's values as bits (bit `v` set when `v` matches).
fn parse_field(field: Field, text: &str) -> Result<u64, CronError> {
    let (min, max) = field.range();
    let mut bits = 0u64;
    for item in text.split(',') {
        let syntax = || CronError::Syntax { field, text: item.to_string() };
        let number = |s: &str| -> Result<u32, CronError> {
            if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let value: u32 = s.parse().map_err(|_| syntax())?;
            if value < min || value > max {
                return Err(CronError::OutOfRange { field, value, min, max });
            }
            Ok(value)
        };
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) || step.len() > 4 {
                    return Err(syntax());
                }
                let step: u32 = step.parse().map_err(|_| syntax())?;
                if step == 0 {
                    return Err(CronError::ZeroStep { field, text: item.to_string() });
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(CronError::Backwards { field, start: a, end: b });
            }
            (a, b)
        } else {
            let a = number(range)?;
            // `a/n` runs from `a` to the field's end.
            (a, if step.is_some() { max } else { a })
        };
        for v in (start..=end).step_by(step.unwrap_or(1) as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// The longest stretch without a start of an expression that matches at all: a 29th of
/// February across a century that is not a leap year (2096 to 2104), with a day to spare.
const SEARCH_DAYS: i32 = 8 * 366 + 1;

/// A window ready to be asked: its starts, its length, its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    duration: i64,
}

impl Schedule {
    /// Checks and parses a window.
    pub fn parse(window: &Window) -> Result<Schedule, WindowError> {
        let cron = Cron::parse(&window.cron).map_err(|source| WindowError::Cron { cron: window.cron.clone(), source })?;
        let tz =
            TimeZone::get(&window.timezone).map_err(|e| WindowError::TimeZone { name: window.timezone.clone(), why: e.to_string() })?;
        if window.duration_seconds == 0 {
            return Err(WindowError::ZeroDuration);
        }
        let schedule = Schedule { cron, tz, duration: window.duration_seconds.min(i64::MAX as u64 / 2) as i64 };
        // From any instant, an expression that ever matches does within the search span.
        if schedule.next_start(946_684_800).is_none() {
            return Err(WindowError::NeverOpens { cron: window.cron.clone() });
        }
        Ok(schedule)
    }

    /// The first start at or after `from` (unix seconds); None if there is none within eight
    /// years (only for an expression that never matches).
    pub fn next_start(&self, from: i64) -> Option<i64> {
        let from_ts = Timestamp::from_second(from).ok()?;
        // A start in a gap moves past the local date it was named on, so the search begins a
        // day early.
        let mut date = self.tz.to_datetime(from_ts).date().yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            if self.cron.matches_day(date) {
                let best = self.cron.times().filter_map(|(h, m)| self.instant(date.at(h, m, 0, 0))).filter(|t| *t >= from).min();
                if best.is_some() {
                    return best;
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The instant a local time names here (see the module's note on daylight saving time).
    fn instant(&self, local: DateTime) -> Option<i64> {
        self.tz.to_ambiguous_timestamp(local).compatible().ok().map(|t| t.as_second())
    }

    /// Whether `now` is inside a window: a start at most `duration` seconds ago.
    pub fn inside(&self, now: i64) -> bool {
        self.next_start(now.saturating_sub(self.duration).saturating_add(1)).is_some_and(|s| s <= now)
    }

    /// `now` if inside a window, else the next start (`i64::MAX` if it never opens).
    pub fn next_open(&self, now: i64) -> i64 {
        if self.inside(now) {
            return now;
        }
        self.next_start(now).unwrap_or(i64::MAX)
    }
}

/// Whether `now` is inside one of `window`'s windows. A window that cannot be used (see
/// [`gate`]) is always open.
pub fn inside(now: i64, window: &Window) -> bool {
    Schedule::parse(window).map_or(true, |s| s.inside(now))
}

/// `now` if inside one of `window`'s windows, else when the next one opens. A window that
/// cannot be used is always open.
pub fn next_open(now: i64, window: &Window) -> i64 {
    Schedule::parse(window).map_or(now, |s| s.next_open(now))
}
