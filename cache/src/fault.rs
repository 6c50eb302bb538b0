//! Fault points for crash tests: every durable write and sync of the store (object and pack
//! writes, pack and index commits, fsyncs, `atomic::write`) calls [`point`], and a process
//! started with `IMAGED_FAULT=KIND:N` kills itself with SIGKILL just before the `N`th point of
//! that kind (counted from 1 across the whole process), as a power cut or a kill -9 would stop
//! it there. `KIND` is `write` (data written, a file renamed or removed) or `sync` (an fsync or
//! syncfs). So a crash test stops at a chosen place instead of after a fixed delay (redb's
//! crash-test backend is the model). Unset, a point costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a fault: `write:N` or `sync:N`, N counted from 1.
pub const ENV: &str = "IMAGED_FAULT";

/// What kind of durable step a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Data written to a file, or a file renamed or removed.
    Write,
    /// An fsync or syncfs.
    Sync,
}

/// Where the armed fault strikes: the `at`th point of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The kind of point counted.
    pub kind: Kind,
    /// Which one, counted from 1.
    pub at: u64,
}

/// Why an `IMAGED_FAULT` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV}={value:?} is not `write:N` or `sync:N` with N counted from 1")]
pub struct FaultSpecError {
    /// The value given.
    pub value: String,
}

impl std::str::FromStr for Fault {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Fault, FaultSpecError> {
        let bad = || FaultSpecError { value: s.to_string() };
        let (kind, at) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "write" => Kind::Write,
            "sync" => Kind::Sync,
            _ => return Err(bad()),
        };
        let at: u64 = at.parse().map_err(|_| bad())?;
        if at == 0 {
            return Err(bad());
        }
        Ok(Fault { kind, at })
    }
}

static ARMED: OnceLock<Option<Fault>> = OnceLock::new();
static WRITES: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<Fault> {
    *ARMED.get_or_init(|| {
        let value = std::env::var(ENV).ok()?;
        // A crash test that names a point it cannot reach would pass without crashing:
        // a malformed value stops the process rather than being ignored.
        Some(value.parse().unwrap_or_else(|e: FaultSpecError| panic!("{e}")))
    })
}

/// Parses the specification now (panics on a malformed one), so a mistake shows at start.
pub fn check() {
    let _ = armed();
}

/// Counts one durable step of `kind`; kills the process (SIGKILL) if it is the armed one.
pub fn point(kind: Kind) {
    let Some(fault) = armed() else { return };
    let counter = match kind {
        Kind::Write => &WRITES,
        Kind::Sync => &SYNCS,
    };
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    if fault.kind == kind && n == fault.at {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this is only reached if sending it failed.
        std::process::abort();
    }
}
