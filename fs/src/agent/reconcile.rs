//! The agent's decisions, pure: given the desired mounts and what runs, which mounts to
//! start, stop, restart or update (`plan`); given a mount's status and what was seen of it
//! before, which events to report (`observe`); the endpoint's cache state from its mounts'
//! (`cache_state`) and whether it changed enough to report (`cache_changed`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::control::{Status, Switch};
use api::fleet::{CacheState, DesiredMount, EventKind, Source};

/// A channel mount is sent `update` for the same hint at most this often (the channel's
/// signed metadata may lag the hint for a while).
pub const UPDATE_AGAIN: Duration = Duration::from_secs(30);

/// How a mount is run: what its process was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Channel or pinned generation.
    pub source: Source,
    /// Percent of the partition its cache may use.
    pub cache_share: u8,
    /// FUSE passthrough.
    pub passthrough: bool,
}

/// Default cache share of a mount, percent.
pub const DEFAULT_CACHE_SHARE: u8 = 25;

impl Spec {
    /// The spec a desired mount asks for.
    pub fn of(m: &DesiredMount) -> Spec {
        Spec {
            source: m.mount.source.clone(),
            cache_share: m.mount.cache_share.unwrap_or(DEFAULT_CACHE_SHARE),
            passthrough: m.mount.passthrough,
        }
    }
}

/// What the agent knows of one mount it runs (keyed by the namespace's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// What it was started with.
    pub spec: Spec,
    /// Up (and serving what), or down until a restart.
    pub state: RunState,
    /// The last `update` sent: for which hint, when.
    pub last_update: Option<(String, Instant)>,
}

/// A mount's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// It answers on its control socket and serves `current`.
    Up {
        /// `IMAGE@N`.
        current: String,
    },
    /// It failed to start or died: started again at `retry_at`.
    Down {
        /// When to try again.
        retry_at: Instant,
    },
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Mount a path not running.
    Start {
        /// Namespace path.
        path: String,
        /// How.
        spec: Spec,
    },
    /// Unmount a path no longer desired.
    Stop {
        /// Namespace path.
        path: String,
    },
    /// The namespace changed how the path is mounted (channel, pin, share, passthrough):
    /// unmount and mount again.
    Restart {
        /// Namespace path.
        path: String,
        /// The new way.
        spec: Spec,
    },
    /// Ask the mount to check its channel now (the server's hint names another generation),
    /// or, pinned, to go back to its pin.
    Update {
        /// Namespace path.
        path: String,
        /// The generation expected, `IMAGE@N`.
        hint: String,
    },
}

/// What to do to make `running` what `desired` says, at `now`: stops first, then starts and
/// restarts (in the desired order), then updates.
pub fn plan(desired: &[DesiredMount], running: &BTreeMap<String, Running>, now: Instant) -> Vec<Action> {
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    let mut updates = Vec::new();
    for path in running.keys() {
        if !desired.iter().any(|d| &d.mount.path == path) {
            stops.push(Action::Stop { path: path.clone() });
        }
    }
    for d in desired {
        let path = d.mount.path.clone();
        let spec = Spec::of(d);
        let Some(r) = running.get(&path) else {
            starts.push(Action::Start { path, spec });
            continue;
        };
        if r.spec != spec {
            starts.push(Action::Restart { path, spec });
            continue;
        }
        match &r.state {
            RunState::Down { retry_at } => {
                if *retry_at <= now {
                    starts.push(Action::Start { path, spec });
                }
            }
            RunState::Up { current } => {
                let expected = match &spec.source {
                    Source::Pinned(g) => Some(g.clone()),
                    Source::Channel(_) => d.generation.clone(),
                };
                let Some(hint) = expected.filter(|g| g != current) else { continue };
                let recently = r.last_update.as_ref().is_some_and(|(h, t)| h == &hint && now.saturating_duration_since(*t) < UPDATE_AGAIN);
                if !recently {
                    updates.push(Action::Update { path, hint });
                }
            }
        }
    }
    stops.into_iter().chain(starts).chain(updates).collect()
}

/// What was seen of a mount at its last status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// `IMAGE@N` served.
    pub current: String,
    /// Its trusted metadata was stale.
    pub stale: bool,
    /// Every server was resting after failures.
    pub offline: bool,
}

/// The events a mount's `status` shows since `before` (at `path`), and what is seen now.
/// A new generation that the mount's own poller switched to is `Switched`; any other change
/// of generation (`imgfs rollback` by hand) is `RolledBack`. Stale metadata and unreachable
/// servers are reported when they begin.
pub fn observe(path: &str, before: Option<&Seen>, st: &Status) -> (Vec<EventKind>, Seen) {
    let now = Seen { current: st.current.generation.clone(), stale: !st.trust.fresh, offline: st.offline };
    let mut events = Vec::new();
    let Some(before) = before else { return (events, now) };
    if before.current != now.current {
        let by_poller = st.last_check.as_ref().and_then(|c| match &c.result {
            Switch::Switched { to, millis, .. } if to == &now.current => Some(*millis),
            _ => None,
        });
        events.push(match by_poller {
            Some(millis) => EventKind::Switched { path: path.into(), from: before.current.clone(), to: now.current.clone(), millis },
            None => EventKind::RolledBack {
                path: path.into(),
                from: before.current.clone(),
                to: now.current.clone(),
                why: "rolled back on the endpoint (imgfs rollback)".into(),
            },
        });
    }
    if now.stale && !before.stale {
        let error = st
            .trust
            .last_check
            .as_ref()
            .and_then(|c| c.error.clone())
            .or_else(|| st.trust.stale_since.as_ref().map(|s| format!("the signed metadata is stale since {s}")))
            .unwrap_or_else(|| "the signed metadata is stale".into());
        events.push(EventKind::MetadataStale { path: path.into(), error: clip(&error) });
    }
    if now.offline && !before.offline {
        let error = st.servers.iter().filter_map(|s| s.last_error.clone()).last().unwrap_or_else(|| "every server is resting after failures".into());
        events.push(EventKind::FetchFailed { path: path.into(), error: clip(&error) });
    }
    (events, now)
}

/// Text cut to what a report takes (`api::fleet::MAX_TEXT`), control characters but newlines
/// and tabs dropped.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect();
    while out.len() > api::fleet::MAX_TEXT {
        out.pop();
    }
    out
}

/// The endpoint's cache: its mounts' caches together (used bytes summed, the least free
/// space, pins and held generations merged and sorted).
pub fn cache_state<'a>(statuses: impl IntoIterator<Item = &'a Status>) -> CacheState {
    let mut c = CacheState::default();
    let mut free: Option<u64> = None;
    for st in statuses {
        c.used_bytes += st.cache.used_bytes;
        if let Some(f) = st.cache.disk_available_bytes {
            free = Some(free.map_or(f, |x| x.min(f)));
        }
        c.pins.extend(st.pins.iter().map(|p| p.generation.clone()));
        c.generations.push(st.current.generation.clone());
        c.generations.extend(st.previous.iter().map(|p| p.generation.clone()));
        c.generations.extend(st.pins.iter().map(|p| p.generation.clone()));
        c.generations.extend(st.prefetching.iter().map(|p| p.generation.clone()));
    }
    c.free_bytes = free.unwrap_or(0);
    for v in [&mut c.pins, &mut c.generations] {
        v.sort();
        v.dedup();
    }
    c
}

/// Whether the cache changed enough to report: other pins or generations, or use or free
/// space moved by more than a tenth (and at least 64 MiB).
pub fn cache_changed(old: Option<&CacheState>, new: &CacheState) -> bool {
    let Some(old) = old else { return true };
    let moved = |a: u64, b: u64| a.abs_diff(b) > (a / 10).max(64 << 20);
    old.pins != new.pins || old.generations != new.generations || moved(old.used_bytes, new.used_bytes) || moved(old.free_bytes, new.free_bytes)
}

/// The `x-imaged-actual` pairs of the mounts running: each path with its generation, or none
/// while down.
pub fn actual(running: &BTreeMap<String, Running>) -> Vec<(String, Option<String>)> {
    running
        .iter()
        .map(|(p, r)| {
            let g = match &r.state {
                RunState::Up { current } => Some(current.clone()),
                RunState::Down { .. } => None,
            };
            (p.clone(), g)
        })
        .collect()
}
