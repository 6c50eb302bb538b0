//! Exit codes of `imgfs`, the one list scripts branch on: printed by `imgfs --help` and
//! documented in the README.

use api::control::{FailureKind, Refusal, Switch};

/// How `imgfs` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success; `update` also when the channel names the current generation already.
    Ok = 0,
    /// Any failure not listed below (a mount that failed, IO, a prefetch that stopped).
    Failure = 1,
    /// Bad command-line usage (clap's own code).
    Usage = 2,
    /// No such generation, not pinned, or no previous generation to roll back to.
    NotFound = 3,
    /// The signed metadata refused the update (or the clock is behind it): the mount stays
    /// on its generation.
    Refused = 4,
    /// No server could be reached.
    Unreachable = 5,
    /// No imgfs mount answers at the mount point.
    NoMount = 6,
    /// The fleet's server refuses this endpoint (revoked or unknown): `imgfs agent` stops and
    /// its mounts keep serving.
    LockedOut = 7,
    /// `imgfs defer`: the mount's group policy does not allow it (no window, deferring
    /// forbidden, longer than allowed, or no desired state kept yet).
    Policy = 8,
}

impl ExitCode {
    /// Every code, in order.
    pub const ALL: &'static [ExitCode] = &[
        ExitCode::Ok,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::NotFound,
        ExitCode::Refused,
        ExitCode::Unreachable,
        ExitCode::NoMount,
        ExitCode::LockedOut,
        ExitCode::Policy,
    ];

    /// The number the process exits with.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The exit of `update` or `rollback` with this outcome.
    pub fn of_switch(outcome: &Switch) -> ExitCode {
        match outcome {
            Switch::Switched { .. } | Switch::AlreadyCurrent { .. } => ExitCode::Ok,
            Switch::Refused { reason: Refusal::Unreachable, .. } => ExitCode::Unreachable,
            Switch::Refused { reason: Refusal::LocalState | Refusal::LoadFailed, .. } => ExitCode::Failure,
            Switch::Refused { .. } => ExitCode::Refused,
            Switch::NothingToRollBackTo => ExitCode::NotFound,
        }
    }

    /// The exit of a command the mount answered with a failure of this kind.
    pub fn of_failure(kind: FailureKind) -> ExitCode {
        match kind {
            FailureKind::BadRequest => ExitCode::Usage,
            FailureKind::NotFound => ExitCode::NotFound,
            FailureKind::Unreachable => ExitCode::Unreachable,
            FailureKind::Refused => ExitCode::Refused,
            FailureKind::Failed => ExitCode::Failure,
        }
    }
}

/// The table `imgfs --help` ends with.
pub const HELP: &str = "\
Exit codes:
  0  success (update: switched, or the channel names the current generation already)
  1  failure (a mount that failed, IO, a prefetch that stopped)
  2  usage
  3  not found: no such generation, not pinned, nothing to roll back to
  4  refused: the signed metadata refused the update; the mount stays on its generation
  5  unreachable: no server could be reached
  6  no imgfs mount answers at MOUNTPOINT
  7  locked out: the fleet's server refuses this endpoint (revoked or unknown); its mounts keep serving
  8  defer: the mount's group policy does not allow it (no window, deferring forbidden or too long)";
