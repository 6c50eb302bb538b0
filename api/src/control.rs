//! The messages of imgfs's control socket (`imgfs status|update|rollback|pin|unpin|prefetch`)
//! and of a daemon's word to its parent. One request per connection: a `Request` as one line
//! of JSON. The answer is JSON documents, one per line: `ProgressLine`s for long commands,
//! then the command's answer (`Status`, `Switch`, `Unpinned`, `Prefetched`) or a `Failed`.
//! A client reads each line as a `Reply` of the answer type it expects.

use std::collections::BTreeMap;
use std::path::PathBuf;

use format::{ChannelName, Digest};

/// A command sent to a mount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The mount's state: answered with a `Status`.
    Status,
    /// Check the channel now and switch if it moved: answered with a `Switch`.
    Update,
    /// Switch back to the previous generation: answered with a `Switch`.
    Rollback,
    /// Switch to this generation, `IMAGE@N`, verified by its family's signature and epoch floor
    /// like a pinned mount's (the fleet agent's rollouts): answered with a `Switch`. The mount
    /// then stays on it until told otherwise (its channel poller does not move it).
    SwitchTo {
        /// `IMAGE@N`.
        generation: String,
    },
    /// Pin a generation and fetch what the cache lacks of it: `ProgressLine`s, then `Prefetched`.
    Pin {
        /// `IMAGE@N`, a manifest digest, `current` or `previous`.
        generation: String,
        /// Most bytes per second to fetch at (more than 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_rate: Option<u64>,
    },
    /// Let eviction take a pinned generation's objects again: answered with `Unpinned`.
    Unpin {
        /// As given to pin: `IMAGE@N` or a manifest digest.
        generation: String,
    },
    /// Fetch what the cache lacks of a generation: `ProgressLine`s, then `Prefetched`.
    Prefetch {
        /// `IMAGE@N`, a manifest digest, `current` or `previous`.
        generation: String,
        /// Most bytes per second to fetch at (more than 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_rate: Option<u64>,
    },
    /// Start recording which files and ranges the current generation serves, in order:
    /// answered with `TraceStarted`.
    TraceStart,
    /// Stop recording: answered with the `Trace`.
    TraceStop,
    /// Fetch what the cache lacks of the data `trace` reads in the current generation, in the
    /// trace's order: `ProgressLine`s, then `Prefetched`.
    PrefetchTrace {
        /// The trace (`imgfs trace stop`).
        trace: Trace,
        /// Most bytes per second to fetch at (more than 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_rate: Option<u64>,
    },
    /// Drop the writable layer's local changes at and below `path` (all of them without one),
    /// so that the image's version shows: answered with `ResetDone`.
    Reset {
        /// A path relative to the mount's root (`etc/motd`), escaped as in a trace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
}

/// Local changes were dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResetDone {
    /// Entries of the writable layer removed (a directory counts once).
    pub removed: u64,
}

/// What happened to a path of a mount's writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// A protected path was changed, added or removed on this machine, and the image's
    /// version was put back.
    Restored,
    /// At a switch, the new generation changed a path this machine had changed too: the local
    /// version was kept (OSTree's `/etc` rule); `imgfs reset` takes the image's.
    Conflict,
    /// `imgfs reset` dropped the local version.
    Reset,
}

/// One event of a mount's writable layer (a line of `DIR/events.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriftEvent {
    /// When, RFC 3339.
    pub at: String,
    /// What happened.
    pub kind: DriftKind,
    /// The path from the mount's root, escaped as in a trace.
    pub path: String,
    /// The generation served then, `IMAGE@N`.
    pub generation: String,
    /// The digest of the image's version (blake3 of a file's bytes or a symlink's target);
    /// absent if the image has none there, or for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Digest>,
    /// The digest of the local version; absent if it was removed, or for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Digest>,
    /// With a conflict: the digest of the previous generation's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Digest>,
}

/// A mount's writable layer, in its status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WritableReport {
    /// The layer's directory.
    pub dir: String,
    /// The drift policy's protected patterns.
    pub protected: Vec<String>,
    /// Paths the layer holds now (changed, added or removed on this machine).
    pub changes: u64,
    /// Events recorded since the layer was made.
    pub events: u64,
    /// The latest events, oldest first (at most 20).
    pub recent: Vec<DriftEvent>,
}

/// A trace began.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceStarted {
    /// The generation traced, `IMAGE@N`.
    pub generation: String,
}

/// Format version of a read trace.
pub const TRACE_VERSION: u32 = 1;

/// What a mount read while a trace ran (`imgfs trace stop`; docs/format.md "Read trace"):
/// the files of one generation and their ranges, in the order they were first read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    /// Always `TRACE_VERSION`.
    pub version: u32,
    /// The generation read, `IMAGE@N`.
    pub generation: String,
    /// Reads, adjacent and overlapping ranges of one file merged, in first-read order.
    pub reads: Vec<TraceRead>,
}

/// One range of one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceRead {
    /// The file's path from the generation's root (`escape_path`).
    pub path: String,
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// A path's bytes as text: valid UTF-8 as is, except `%`, which becomes `%25`; every byte of
/// an invalid sequence `%XX` (upper-case hex). `unescape_path` reverses it.
pub fn escape_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bytes `escape_path` made `s` from; `None` for a `%` not followed by two hex digits.
pub fn unescape_path(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// One line of an answer, as a client reads it: progress, the answer, or a failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Reply<T> {
    /// A progress report of a long command; more lines follow.
    Progress(ProgressLine),
    /// The command's answer.
    Done(T),
    /// The command failed (or was not understood).
    Failed(Failed),
}

/// What class of failure a `Failed` answer reports, for the client's exit status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The request was not understood (bad JSON, bad rate).
    BadRequest,
    /// The generation named is unknown, not pinned, or there is no previous one.
    NotFound,
    /// No server could be reached.
    Unreachable,
    /// The signed metadata refused it.
    Refused,
    /// Anything else: a fetch or load that failed, the client went away.
    #[default]
    #[serde(other)]
    Failed,
}

/// A command's failure: `{"error": MESSAGE, "kind": KIND}` (and the generation a prefetch
/// was for).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failed {
    /// What went wrong, for people.
    pub error: String,
    /// Its class.
    #[serde(default)]
    pub kind: FailureKind,
    /// With a prefetch or pin: the generation it was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

impl Failed {
    /// A failure of class `kind`.
    pub fn new(kind: FailureKind, error: impl Into<String>) -> Failed {
        Failed { error: error.into(), kind, generation: None }
    }
}

/// A generation as the mount names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenerationRef {
    /// `IMAGE@N`.
    pub generation: String,
    /// Its manifest's digest.
    pub manifest: Digest,
}

/// Why a switch was refused; the mount stays on its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No server could be reached for the signed metadata.
    Unreachable,
    /// A server's signed metadata was refused (signatures, thresholds, expiry, rollback).
    MetadataRefused,
    /// The signed metadata does not let this endpoint run it (family, architecture, epoch).
    NotAllowed,
    /// The channel or generation is not in the signed metadata.
    NotSigned,
    /// The clock is behind the latest time an update used.
    ClockBack,
    /// The endpoint's own trusted state could not be read or written.
    LocalState,
    /// The generation's metadata could not be fetched, or does not match its signed target.
    LoadFailed,
}

/// The outcome of `update` or `rollback`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "SwitchWire", try_from = "SwitchWire")]
pub enum Switch {
    /// The mount now serves `to` (new opens see it).
    Switched {
        /// The generation switched away from, `IMAGE@N`.
        from: String,
        /// The generation served now, `IMAGE@N`.
        to: String,
        /// The channel version that names it (0 if unknown).
        channel_version: u64,
        /// How long the switch took.
        millis: u64,
    },
    /// The channel names the generation served already.
    AlreadyCurrent {
        /// The generation, `IMAGE@N`.
        generation: String,
        /// The channel's version.
        channel_version: u64,
    },
    /// The switch was refused; the mount stays on its generation.
    Refused {
        /// Why, as a class.
        reason: Refusal,
        /// Why, for people.
        error: String,
    },
    /// A rollback with no previous generation.
    NothingToRollBackTo,
}

/// What `NothingToRollBackTo` says to people.
pub const NOTHING_TO_ROLL_BACK_TO: &str = "no previous generation to roll back to";

/// `Switch` on the wire: flat, with `switched` and `generation` as scripts read them.
#[derive(serde::Serialize, serde::Deserialize)]
struct SwitchWire {
    outcome: SwitchOutcome,
    switched: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Refusal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum SwitchOutcome {
    Switched,
    AlreadyCurrent,
    Refused,
    NothingToRollBackTo,
}

impl From<Switch> for SwitchWire {
    fn from(s: Switch) -> SwitchWire {
        let mut w = SwitchWire {
            outcome: SwitchOutcome::Switched,
            switched: false,
            from: None,
            generation: None,
            channel_version: None,
            millis: None,
            reason: None,
            error: None,
        };
        match s {
            Switch::Switched { from, to, channel_version, millis } => {
                (w.switched, w.from, w.generation) = (true, Some(from), Some(to));
                (w.channel_version, w.millis) = (Some(channel_version), Some(millis));
            }
            Switch::AlreadyCurrent { generation, channel_version } => {
                w.outcome = SwitchOutcome::AlreadyCurrent;
                (w.generation, w.channel_version) = (Some(generation), Some(channel_version));
            }
            Switch::Refused { reason, error } => {
                w.outcome = SwitchOutcome::Refused;
                (w.reason, w.error) = (Some(reason), Some(error));
            }
            Switch::NothingToRollBackTo => {
                w.outcome = SwitchOutcome::NothingToRollBackTo;
                w.error = Some(NOTHING_TO_ROLL_BACK_TO.into());
            }
        }
        w
    }
}

impl TryFrom<SwitchWire> for Switch {
    type Error = String;
    fn try_from(w: SwitchWire) -> Result<Switch, String> {
        let need = |v: Option<String>, field: &str| v.ok_or_else(|| format!("a switch outcome without {field}"));
        Ok(match w.outcome {
            SwitchOutcome::Switched => Switch::Switched {
                from: need(w.from, "from")?,
                to: need(w.generation, "generation")?,
                channel_version: w.channel_version.unwrap_or(0),
                millis: w.millis.unwrap_or(0),
            },
            SwitchOutcome::AlreadyCurrent => {
                Switch::AlreadyCurrent { generation: need(w.generation, "generation")?, channel_version: w.channel_version.unwrap_or(0) }
            }
            SwitchOutcome::Refused => {
                Switch::Refused { reason: w.reason.ok_or("a refusal without its reason")?, error: w.error.unwrap_or_default() }
            }
            SwitchOutcome::NothingToRollBackTo => Switch::NothingToRollBackTo,
        })
    }
}

/// How far a prefetch got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Data chunks the generation has.
    pub chunks: u64,
    /// Of those, how many the cache held when the prefetch started.
    pub cached_before: u64,
    /// Chunks to fetch.
    pub objects_total: u64,
    /// Chunks fetched so far.
    pub objects_done: u64,
    /// Decoded bytes to fetch.
    pub bytes_total: u64,
    /// Decoded bytes fetched so far.
    pub bytes_done: u64,
    /// Bytes received from the servers so far (compressed).
    pub transferred: u64,
}

/// A progress report of a pin or prefetch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgressLine {
    /// How far it got.
    pub progress: Progress,
    /// The generation, `IMAGE@N`.
    pub generation: String,
}

/// Answer of a pin or prefetch that finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prefetched {
    /// The generation, `IMAGE@N`.
    pub generation: String,
    /// Always true.
    pub done: bool,
    /// Whether it is pinned.
    pub pinned: bool,
    /// What was fetched.
    pub fetched: Progress,
}

/// Answer of `unpin`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unpinned {
    /// The generation unpinned, `IMAGE@N`.
    pub unpinned: String,
    /// Its manifest.
    pub manifest: Digest,
}

/// One server and its health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerHealth {
    /// Base URL.
    pub url: String,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed (refused, timed out, too slow, wrong bytes).
    pub failed: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Seconds until it is tried again first (0: healthy).
    pub resting_for: u64,
}

/// Transfer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    /// HTTP requests made.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
}

/// One eviction round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Eviction {
    /// Objects (and plain copies) removed.
    pub objects: u64,
    /// Bytes they took.
    pub bytes: u64,
    /// Bytes the cache holds after it.
    pub remaining: u64,
}

/// The cache's use and limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheReport {
    /// The object store's directory.
    pub dir: PathBuf,
    /// Bytes held: objects and plain copies.
    pub used_bytes: u64,
    /// Objects held.
    pub objects: u64,
    /// Bytes of objects.
    pub object_bytes: u64,
    /// Plain copies of files (passthrough mounts).
    pub plain_copies: u64,
    /// Bytes of plain copies.
    pub plain_copy_bytes: u64,
    /// `--cache-size` as given (`25%`, `6M`).
    pub limit: String,
    /// `--min-free` as given.
    pub min_free: String,
    /// The most the cache may hold now (the limit, lowered to keep the free space).
    pub allowance_bytes: Option<u64>,
    /// Free bytes on the cache's partition.
    pub disk_available_bytes: Option<u64>,
    /// Objects and copies evicted since the mount started.
    pub evicted_objects: u64,
    /// Bytes evicted since the mount started.
    pub evicted_bytes: u64,
    /// Rounds the keeper has run since the mount (tests wait on it instead of sleeping).
    #[serde(default)]
    pub keeper_rounds: u64,
    /// The last eviction round.
    pub last_eviction: Option<Eviction>,
}

/// A prefetch under way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prefetching {
    /// The generation, `IMAGE@N`.
    pub generation: String,
    /// How far it got.
    pub progress: Progress,
}

/// How files are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenMode {
    /// The kernel opens files without asking imgfs (the default).
    Kernel,
    /// imgfs takes opens and hands fully cached files to the kernel (`--passthrough`).
    Passthrough,
}

/// File opens so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Opens {
    /// How files are opened.
    pub mode: OpenMode,
    /// Opens read through imgfs (passthrough mode only).
    pub fuse: u64,
    /// Opens handed to the kernel (passthrough mode only).
    pub passthrough: u64,
}

/// The last metadata check of the trusted state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustCheck {
    /// When, TUF's UTC time format.
    pub at: String,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// The trusted metadata's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustSummary {
    /// Neither expired nor refused on every check since.
    pub fresh: bool,
    /// Since when it is stale (expired, or refused on every check since), UTC.
    pub stale_since: Option<String>,
    /// When the metadata this endpoint relies on expires, UTC.
    pub valid_until: Option<String>,
    /// The last check.
    pub last_check: Option<TrustCheck>,
    /// Every role's version.
    pub versions: BTreeMap<String, u64>,
    /// The security epoch floor.
    pub min_epoch: u64,
    /// The image family this endpoint runs, once known.
    pub family: Option<String>,
    /// The architecture this endpoint runs.
    pub arch: String,
    /// The latest time an update used, UTC.
    pub clock_high_water: String,
}

/// The last channel check (`update`, by hand or by the poller).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastCheck {
    /// How long ago.
    pub seconds_ago: u64,
    /// What it did.
    pub result: Switch,
}

/// Answer of `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The channel followed (absent for a mount that stays on one generation, `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelName>,
    /// The generation a mount made with `imgfs mount --at IMAGE@N` stays on (it follows no
    /// channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The channel version that named the current generation (0 if unknown).
    pub channel_version: u64,
    /// The generation a `switch_to` holds the mount on, `IMAGE@N`: its channel poller does not
    /// move it until an `update` or a `rollback` (absent: not held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The generation new opens see.
    pub current: GenerationRef,
    /// The one before, the target of a rollback.
    pub previous: Option<GenerationRef>,
    /// The cache.
    pub cache: CacheReport,
    /// Generations the user pinned.
    pub pins: Vec<GenerationRef>,
    /// Prefetches under way.
    pub prefetching: Vec<Prefetching>,
    /// Every server and its health.
    pub servers: Vec<ServerHealth>,
    /// Whether every server is resting after a failure.
    pub offline: bool,
    /// Requests and bytes received since the mount started.
    pub traffic: Traffic,
    /// File opens.
    pub opens: Opens,
    /// The trusted metadata.
    pub trust: TrustSummary,
    /// The last channel check, if any since the mount started.
    pub last_check: Option<LastCheck>,
    /// The writable layer, if the mount has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable: Option<WritableReport>,
    /// The last fetch of a generation's signed read trace data (at mount or switch), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_fetch: Option<TraceFetch>,
}

/// A fetch of the data a generation's signed read trace reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceFetch {
    /// The generation, `IMAGE@N`.
    pub generation: String,
    /// Objects fetched (those the cache lacked).
    pub objects: u64,
    /// Bytes received.
    pub bytes: u64,
    /// How long it took.
    pub millis: u64,
    /// Whether the switch to the generation waited for it (the data was in before the mount
    /// moved); false for a fetch at mount, or one that went on behind the switch.
    pub before_switch: bool,
}

/// A daemon's word to the parent that started it (one JSON line on a pipe): mounted, or why not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Startup {
    /// The mount is up.
    Mounted(Mounted),
    /// The mount failed.
    Failed {
        /// Why, for people.
        error: String,
    },
}

/// A mount that came up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mounted {
    /// The generation served, `IMAGE@N`.
    pub generation: String,
    /// The channel (absent for a mount that stays on one generation, `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelName>,
    /// The generation a mount made with `--at IMAGE@N` stays on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The channel version that named it.
    pub channel_version: u64,
    /// Not verified now: every server was unreachable or refused, so the last verified
    /// generation came from the cache.
    pub from_cache: bool,
    /// Where.
    pub mountpoint: PathBuf,
    /// How long mounting took.
    pub millis: u64,
    /// HTTP requests it made.
    pub requests: u64,
    /// Took over the connection of a process that served this mount before (a restart or an
    /// upgrade, docs/restart.md): nothing was mounted anew. Absent from earlier builds' lines.
    #[serde(default)]
    pub resumed: bool,
}

impl std::fmt::Display for Mounted {
    /// The line scripts wait for: `imgfs: mounted IMAGE@N (channel C vV) at DIR in T ms, R requests`
    /// (`(pinned)` instead of the channel for a mount made with `--at`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let follows = match (&self.channel, &self.at) {
            (Some(c), _) => format!("channel {c} v{}", self.channel_version),
            (None, _) => "pinned".to_string(),
        };
        write!(
            f,
            "imgfs: mounted {} ({}{}{}) at {} in {} ms, {} requests",
            self.generation,
            follows,
            if self.from_cache { ", not verified now: from the cache" } else { "" },
            if self.resumed { ", resumed on the live connection" } else { "" },
            self.mountpoint.display(),
            self.millis,
            self.requests
        )
    }
}
