//! The audit log: every change the server makes, with its actor, time, before and after, and
//! reason, as one hash chain (each entry's hash covers the previous entry's hash), served by
//! `GET /v1/audit` and checked again by every client that reads it (`verify`).

/// The `prev` of the first entry: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The tag that starts every entry's hashed encoding (`AuditEntry::canonical`).
const DOMAIN: &[u8] = b"imaged-audit-1\n";

/// One entry of the audit log: who changed what, when, from what to what, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1, dense.
    #[serde(default)]
    pub seq: u64,
    /// Seconds since the epoch when the server wrote the entry.
    pub time: i64,
    /// Who: the user (`admin` for the bootstrap token, `imaged` for the server's own scheduled
    /// work) and, for signed writes, ` key KEYID` of the signer whose signature verified.
    pub actor: String,
    /// What: `publish`, `keep`, `channel set`, `policy`, `approval`, `gc`, `user add`, … (the
    /// list is in docs/security.md).
    pub action: String,
    /// On what: a channel, `IMAGE@N`, `user NAME`, a TUF role.
    pub subject: String,
    /// A short summary (`boot passed`, the policy's rules, what a collection removed).
    pub detail: String,
    /// The state before the change, where there is one (a channel's previous generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// The state after the change (a channel's new generation, a published manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Why, when the change says (a channel move's `reason`, a generation's change record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The previous entry's `hash` (`GENESIS` for the first).
    #[serde(default)]
    pub prev: String,
    /// Hex BLAKE3 of `canonical()`: every field above, `seq` and `prev` included.
    #[serde(default)]
    pub hash: String,
}

impl AuditEntry {
    /// An entry for the server to write: it stamps the time (when `time` is 0), the sequence
    /// number, `prev` and `hash` as it appends the entry.
    pub fn new(actor: &str, action: &str, subject: impl Into<String>, detail: impl Into<String>) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time: 0,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            detail: detail.into(),
            before: None,
            after: None,
            reason: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// With the state before the change.
    pub fn before(mut self, before: impl Into<String>) -> AuditEntry {
        self.before = Some(before.into());
        self
    }

    /// With the state after the change.
    pub fn after(mut self, after: impl Into<String>) -> AuditEntry {
        self.after = Some(after.into());
        self
    }

    /// With why the change was made; an empty reason is left out.
    pub fn reason(mut self, reason: impl Into<String>) -> AuditEntry {
        let reason = reason.into();
        self.reason = (!reason.is_empty()).then_some(reason);
        self
    }

    /// With the time set (otherwise the server stamps it when it writes the entry).
    pub fn at(mut self, time: i64) -> AuditEntry {
        self.time = time;
        self
    }

    /// The bytes the hash covers: `imaged-audit-1\n`, `seq` (u64 BE), `time` (i64 BE), then
    /// `actor`, `action`, `subject`, `detail` each as u32 BE length and UTF-8, then `before`,
    /// `after`, `reason` each as 0x00 when absent or 0x01 and length and UTF-8, then `prev`
    /// as length and its hex text. One byte string per entry, whatever the JSON looked like.
    pub fn canonical(&self) -> Vec<u8> {
        fn text(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut out = DOMAIN.to_vec();
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        for s in [&self.actor, &self.action, &self.subject, &self.detail] {
            text(&mut out, s);
        }
        for o in [&self.before, &self.after, &self.reason] {
            match o {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    text(&mut out, s);
                }
            }
        }
        text(&mut out, &self.prev);
        out
    }

    /// The hash this entry should carry: hex BLAKE3 of `canonical()`.
    pub fn expected_hash(&self) -> String {
        format::Digest::of(&self.canonical()).to_hex()
    }

    /// Numbers the entry `seq`, links it to `prev` and sets its hash.
    pub fn seal(&mut self, seq: u64, prev: &str) {
        self.seq = seq;
        self.prev = prev.to_string();
        self.hash = self.expected_hash();
    }
}

/// Where a chain stops being one: the first entry that does not follow from the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number of the first bad entry (for a gap: the number that is missing).
    pub seq: u64,
    /// What is wrong with it.
    pub kind: BreakKind,
}

/// What is wrong with the first bad entry of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// Its hash is not the hash of its fields: it was altered.
    Hash,
    /// Its `prev` is not the previous entry's hash: an entry before it was altered, removed
    /// or inserted.
    Prev,
    /// The sequence numbers skip: entries are missing.
    Gap,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            BreakKind::Hash => write!(f, "audit entry {} does not match its hash: it was altered", self.seq),
            BreakKind::Prev => write!(f, "audit entry {} does not follow from entry {}: the log was altered there", self.seq, self.seq - 1),
            BreakKind::Gap => write!(f, "audit entry {} is missing: the log was cut there", self.seq),
        }
    }
}

impl std::error::Error for ChainBreak {}

/// The newest entry of a verified chain: a reader who keeps it can later check that the log
/// still leads to it (nobody rewrote the whole chain since).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditHead {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Checks a whole log, oldest first, from entry 1: every hash, every link, no gap. Returns
/// the head (None for an empty log) or the first entry that breaks the chain.
pub fn verify(entries: &[AuditEntry]) -> Result<Option<AuditHead>, ChainBreak> {
    let mut prev = GENESIS;
    for (i, e) in entries.iter().enumerate() {
        let want = i as u64 + 1;
        if e.seq != want {
            return Err(ChainBreak { seq: want, kind: BreakKind::Gap });
        }
        if e.prev != prev {
            return Err(ChainBreak { seq: e.seq, kind: BreakKind::Prev });
        }
        if e.hash != e.expected_hash() {
            return Err(ChainBreak { seq: e.seq, kind: BreakKind::Hash });
        }
        prev = &e.hash;
    }
    Ok(entries.last().map(|e| AuditHead { seq: e.seq, hash: e.hash.clone() }))
}

/// Query of `GET /v1/audit`: every parameter optional, all of them must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries written at or after this time (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only entries by this actor: its user name (a signed write's actor `NAME key KEYID`
    /// matches `NAME` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// At most this many entries: the newest that match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// Whether `e` passes the `since` and `actor` filters (`limit` applies to the result).
    pub fn matches(&self, e: &AuditEntry) -> bool {
        let actor_ok =
            self.actor.as_deref().map_or(true, |a| e.actor == a || e.actor.split_once(" key ").is_some_and(|(name, _)| name == a));
        actor_ok && self.since.map_or(true, |t| e.time >= t)
    }

    /// The entries of `log` (oldest first) that match, the newest `limit` of them, oldest
    /// first.
    pub fn select<'a>(&self, log: &'a [AuditEntry]) -> Vec<&'a AuditEntry> {
        let mut out: Vec<&AuditEntry> = log.iter().filter(|e| self.matches(e)).collect();
        if let Some(limit) = self.limit {
            out.drain(..out.len().saturating_sub(limit));
        }
        out
    }
}

/// Answer of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditLog {
    /// The entries that match the query, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The newest entry of the whole log (whatever the query), None while it is empty.
    pub head: Option<AuditHead>,
    /// The sequence number of the first entry where the server found the chain broken
    /// (`verify` over the whole log); None when it holds. Clients verify again themselves.
    pub broken_at: Option<u64>,
}
