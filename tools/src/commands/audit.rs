//! `imgctl audit`: reads the server's whole audit log, checks its hash chain here (every
//! hash recomputed, every link and number followed from entry 1), and only then shows the
//! entries asked for (`--since`, `--actor`).

use api::audit::{AuditEntry, AuditHead, AuditLog, AuditQuery, BreakKind, ChainBreak};

use super::CommandError;
use crate::remote::Remote;

/// What to show of a verified log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPlan {
    /// Only entries written at or after this time (seconds since the epoch).
    pub since: Option<i64>,
    /// Only entries by this actor.
    pub actor: Option<String>,
}

/// What `imgctl audit` prints (`--json`: this, as one line).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditOutput {
    /// The entries asked for, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The newest entry of the whole log, verified (None for an empty log): keep it to check
    /// later that the log still leads to it.
    pub head: Option<AuditHead>,
    /// How many entries the whole log has.
    pub total: u64,
}

/// A `--since` that is neither seconds since the epoch, `YYYY-MM-DD` nor
/// `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--since {0:?}: give seconds since the epoch, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)")]
pub struct BadSince(pub String);

/// Parses `--since`: seconds since the epoch, a date (`2026-12-03`, midnight UTC) or a UTC
/// time (`2026-12-03T14:00:00Z`).
pub fn parse_since(s: &str) -> Result<i64, BadSince> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| BadSince(s.to_string()));
    }
    let full = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_string() };
    trust::time::parse(&full).map_err(|_| BadSince(s.to_string()))
}

/// Fetches the whole log, verifies it and selects what `plan` asks for.
pub fn audit(remote: &Remote, plan: &AuditPlan) -> Result<AuditOutput, CommandError> {
    let log = remote.audit(&AuditQuery::default())?;
    Ok(select(&log, plan)?)
}

/// Verifies a whole log as the server sent it, then selects. The server's own verdict counts
/// too: it knows the newest entry it wrote, so entries cut off the end show there.
pub fn select(log: &AuditLog, plan: &AuditPlan) -> Result<AuditOutput, ChainBreak> {
    let head = api::audit::verify(&log.entries)?;
    if let Some(seq) = log.broken_at {
        return Err(ChainBreak { seq, kind: BreakKind::Gap });
    }
    let q = AuditQuery { since: plan.since, actor: plan.actor.clone(), limit: None };
    let entries = q.select(&log.entries).into_iter().cloned().collect();
    Ok(AuditOutput { entries, head, total: log.entries.len() as u64 })
}
