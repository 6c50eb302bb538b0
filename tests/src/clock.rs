//! The clock seam from the tests' side (`TestClock`): a file of seconds that `cache::clock`
//! adds to the clock of every process started with `IMAGED_TEST_CLOCK` naming it, so a test
//! lets time pass by writing a number instead of sleeping.

use std::path::{Path, PathBuf};

/// An offset file for `cache::clock`, starting at 0 s.
pub struct TestClock {
    path: PathBuf,
}

impl TestClock {
    /// A clock file at `path`, holding 0 (the system clock).
    pub fn new(path: &Path) -> TestClock {
        let clock = TestClock { path: path.to_path_buf() };
        clock.set(0);
        clock
    }

    /// The file, for `IMAGED_TEST_CLOCK`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seconds added to the system clock now.
    pub fn offset(&self) -> u64 {
        std::fs::read_to_string(&self.path).unwrap().trim().parse().unwrap()
    }

    /// Moves the clock of every process using this file `secs` seconds forward.
    pub fn advance(&self, secs: u64) {
        self.set(self.offset() + secs);
    }

    /// The time the processes using this file see: unix seconds.
    pub fn now(&self) -> i64 {
        let system = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        system + self.offset() as i64
    }

    /// Writes a new file and renames it into place, so that a reader never sees half a number.
    fn set(&self, secs: u64) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{secs}\n")).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}
