//! The one wall clock of the server, the endpoint and the tools, with a seam so that tests let
//! time pass without sleeping.
//!
//! `now()` is the system clock, plus an offset when the environment variable
//! `IMAGED_TEST_CLOCK` names a file: the file holds a whole number of seconds, zero or more,
//! added to the system clock. The offset only goes forward: the clock never reads earlier than
//! the system's, so an offset can make signed metadata expire sooner, never make expired
//! metadata fresh again (a test that lowers the offset later sets the clock back, which the
//! endpoint's clock high-water mark sees as it would a real clock set back). A file that cannot
//! be read or holds anything else (a negative number, text) counts as no offset, with a warning
//! on standard error: a call never fails, whatever lock its caller holds.
//!
//! It is a test seam and acts in every build: a server run with it signs metadata that expires
//! the offset later than configured, and an import with it trusts files changed within the
//! racy window. Every binary calls [`crate::seams::warn_if_set`] at start, which says so.
//!
//! The file is read on every call, so a test changes the time by writing a new file and
//! renaming it into place. Calls are rare (an update check, a signing round, a channel change,
//! a push's pin, an import's start): none is on a per-read or per-object path. Without the
//! variable, a call costs one environment lookup. The pure crates (`format`, `trust`) take the
//! time as a parameter; their callers pass `cache::clock::now()`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable naming the offset file.
pub const TEST_CLOCK_VAR: &str = "IMAGED_TEST_CLOCK";

/// Seconds since the Unix epoch, offset for tests (see the module's documentation).
pub fn now() -> i64 {
    now_system().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The time as a `SystemTime`, offset for tests (see the module's documentation).
pub fn now_system() -> SystemTime {
    SystemTime::now() + Duration::from_secs(offset())
}

/// A monotonic instant that the test clock's offset moves forward too: for waits measured in
/// seconds of the workspace's time (an agent's soak after a switch), which a test then lets
/// pass by advancing the clock. An offset lowered later would move it back: tests only raise it.
pub fn instant() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(offset())
}

/// The seconds `IMAGED_TEST_CLOCK`'s file adds to the system clock; 0 without the variable.
pub fn offset() -> u64 {
    match std::env::var_os(TEST_CLOCK_VAR) {
        Some(file) if !file.is_empty() => read_offset(Path::new(&file)),
        _ => 0,
    }
}

fn read_offset(file: &Path) -> u64 {
    match std::fs::read_to_string(file) {
        Ok(text) => parse_offset(&text).unwrap_or_else(|| {
            eprintln!("warning: {TEST_CLOCK_VAR} names {}, which holds {text:?}: not a whole number of seconds; no offset", file.display());
            0
        }),
        Err(e) => {
            eprintln!("warning: {TEST_CLOCK_VAR} names {}, which cannot be read ({e}); no offset", file.display());
            0
        }
    }
}

/// The offset `text` spells: a whole number of seconds, zero or more, surrounded by blanks.
fn parse_offset(text: &str) -> Option<u64> {
    let digits = text.trim();
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::parse_offset;

    #[test]
    fn an_offset_is_a_whole_number_of_seconds_zero_or_more() {
        for (text, want) in [
            ("0", Some(0)),
            ("5\n", Some(5)),
            (" 86400 ", Some(86_400)),
            ("-5", None),
            ("+5", None),
            ("1.5", None),
            ("", None),
            ("x", None),
        ] {
            assert_eq!(parse_offset(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_clock_without_an_offset_is_the_system_clock() {
        // The variable is not set in unit tests.
        let system = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let now = super::now();
        assert!(now >= system && now <= system + 1, "{now} against {system}");
    }
}
