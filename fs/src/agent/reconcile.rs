//! The agent's decisions, pure: given the desired mounts and what runs, which mounts to
//! start, stop, restart, update, switch to a rollout's generation, take back from a
//! withdrawn generation or stage for the next boot (`plan`, `plan_with`); given a mount's
//! status and what was seen of it before, which events to report (`observe`); the endpoint's
//! cache state from its mounts' (`cache_state`) and whether it changed enough to report
//! (`cache_changed`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::control::{Status, Switch};
use api::fleet::{CacheState, DesiredMount, EventKind, Source};
use api::rollouts::RolloutId;

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
    /// A writable layer and its drift policy.
    pub writable: Option<api::fleet::WritableMount>,
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
            writable: m.mount.writable.clone(),
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
    /// The last `update` or `switch_to` sent: for which generation, when.
    pub last_update: Option<(String, Instant)>,
    /// The generation before the current one, the rollback target (from its last status).
    pub previous: Option<String>,
    /// The generation a `switch_to` holds it on (from its last status).
    pub held: Option<String>,
}

impl Running {
    /// A mount as its status shows it.
    pub fn of_status(spec: Spec, st: &Status) -> Running {
        Running {
            spec,
            state: RunState::Up { current: st.current.generation.clone() },
            last_update: None,
            previous: st.previous.as_ref().map(|p| p.generation.clone()),
            held: st.held.clone(),
        }
    }

    /// A mount that is down until `retry_at`.
    pub fn down(spec: Spec, retry_at: Instant) -> Running {
        Running { spec, state: RunState::Down { retry_at }, last_update: None, previous: None, held: None }
    }
}

/// A generation offered to a mount, and the rollout that offered it (none: its channel or pin).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Offer {
    /// `IMAGE@N`.
    pub generation: String,
    /// The rollout, if one set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutId>,
}

/// What the agent remembers of one mount across check-ins and restarts (`STATE/rollouts.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Memo {
    /// An offer this mount failed on (its health probe): not tried again while the desired
    /// state makes the same offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Offer>,
    /// The generation staged for the next start of the mount (a `reboot` activation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reboot: Option<String>,
    /// A withdrawn generation the mount cannot leave (no previous generation, or a withdrawn
    /// one), reported once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_on: Option<String>,
    /// A generation offered and held back (window, deferral) and when it was first offered:
    /// a user's deferral cannot push the switch past the policy's deadline, restarts or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered: Option<(String, i64)>,
    /// Events of the mount's writable layer reported to the server (lines of its log).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift_reported: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Memo {
    /// Whether there is nothing to remember.
    pub fn is_empty(&self) -> bool {
        *self == Memo::default()
    }
}

/// How a generation becomes active, from its change record (`DesiredMount.activation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Switch the mount (also when absent).
    Live,
    /// Switch, then restart these units.
    Restart(Vec<String>),
    /// Never switched live: staged for the next boot.
    Reboot,
}

impl Activation {
    /// Parses `live`, `reboot`, `restart:UNIT,UNIT` (absent: live). Anything else, or a unit
    /// name outside `[A-Za-z0-9@._:-]`, is taken as `reboot`: the one activation that never
    /// half-applies a generation.
    pub fn of(text: Option<&str>) -> Activation {
        match text {
            None | Some("live") => Activation::Live,
            Some("reboot") => Activation::Reboot,
            Some(t) => {
                let unit_ok =
                    |u: &str| !u.is_empty() && u.len() <= 256 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._:-".contains(&b));
                match t.strip_prefix("restart:") {
                    Some(units) if units.split(',').all(unit_ok) => Activation::Restart(units.split(',').map(String::from).collect()),
                    _ => Activation::Reboot,
                }
            }
        }
    }

    /// The units to restart after a switch.
    pub fn units(&self) -> &[String] {
        match self {
            Activation::Restart(u) => u,
            _ => &[],
        }
    }
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
    /// or, pinned, to go back to its pin. This also ends a hold.
    Update {
        /// Namespace path.
        path: String,
        /// The generation expected, `IMAGE@N`.
        hint: String,
    },
    /// A rollout put this mount on `generation`: switch to it (verified by its family's
    /// signature) and hold it there.
    SwitchTo {
        /// Namespace path.
        path: String,
        /// `IMAGE@N`.
        generation: String,
    },
    /// The mount runs a withdrawn generation: roll back at once.
    Withdraw {
        /// Namespace path.
        path: String,
        /// The withdrawn generation it runs.
        from: String,
    },
    /// The mount runs a withdrawn generation and has none to go back to: report it once and
    /// keep serving.
    Stuck {
        /// Namespace path.
        path: String,
        /// The withdrawn generation it runs.
        generation: String,
        /// Its previous generation, withdrawn too (none: it has none).
        previous: Option<String>,
    },
    /// The generation offered activates at reboot: record it for the mount's next start, hold
    /// the mount where it is, report `waiting` (`pending_reboot`).
    StageReboot {
        /// Namespace path.
        path: String,
        /// `IMAGE@N`.
        generation: String,
    },
    /// A staged generation no longer offered (the mount runs what is desired, or it was
    /// withdrawn): forget it.
    Unstage {
        /// Namespace path.
        path: String,
    },
}

/// The generation a mount that is not running starts on: the one staged for its next start,
/// unless it was withdrawn since.
pub fn boot_generation(memo: Option<&Memo>, withdrawn: &[String]) -> Option<String> {
    memo.and_then(|m| m.pending_reboot.clone()).filter(|g| !withdrawn.contains(g))
}

/// What to do to make `running` what `desired` says, at `now`, with no withdrawn generations
/// and nothing remembered: see `plan_with`.
pub fn plan(desired: &[DesiredMount], running: &BTreeMap<String, Running>, now: Instant) -> Vec<Action> {
    plan_with(desired, &[], &BTreeMap::new(), running, now)
}

/// What to do to make `running` what `desired` says, at `now`, given the `withdrawn`
/// generations and what is remembered of each mount (`memos`): stops first, then starts and
/// restarts (in the desired order), then, per mount that is up:
///
/// - on a withdrawn generation: `Withdraw` (back to its previous one) or, with no previous
///   generation that is not withdrawn, `Stuck` once;
/// - on the desired generation: `Unstage` a staged one, and release a hold the desired state no
///   longer asks for (`Update`, for a channel mount outside a rollout);
/// - else, unless the desired generation is withdrawn or the same offer failed here before:
///   `StageReboot` (activation `reboot`, once per generation), `SwitchTo` (a rollout's
///   generation) or `Update` (a channel that moved, a pin left), each at most every
///   `UPDATE_AGAIN` for the same generation.
pub fn plan_with(
    desired: &[DesiredMount],
    withdrawn: &[String],
    memos: &BTreeMap<String, Memo>,
    running: &BTreeMap<String, Running>,
    now: Instant,
) -> Vec<Action> {
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
                let memo = memos.get(&path);
                if let Some(a) = up_action(d, withdrawn, memo, r, current, now) {
                    updates.push(a);
                }
            }
        }
    }
    stops.into_iter().chain(starts).chain(updates).collect()
}

/// What to do with the mount at `d`'s path that is up and serves `current` (see `plan_with`).
fn up_action(d: &DesiredMount, withdrawn: &[String], memo: Option<&Memo>, r: &Running, current: &str, now: Instant) -> Option<Action> {
    let path = d.mount.path.clone();
    let is_withdrawn = |g: &str| withdrawn.iter().any(|w| w == g);
    if is_withdrawn(current) {
        return match &r.previous {
            Some(p) if !is_withdrawn(p) => Some(Action::Withdraw { path, from: current.to_string() }),
            previous => (memo.and_then(|m| m.stuck_on.as_deref()) != Some(current)).then(|| Action::Stuck {
                path,
                generation: current.to_string(),
                previous: previous.clone(),
            }),
        };
    }
    let target = target(d)?;
    let staged = memo.and_then(|m| m.pending_reboot.as_deref());
    if target == current {
        if staged.is_some() {
            return Some(Action::Unstage { path });
        }
        let release = d.rollout.is_none() && r.held.is_some() && matches!(d.mount.source, Source::Channel(_));
        return (release && !recently(r, &target, now)).then_some(Action::Update { path, hint: target });
    }
    if is_withdrawn(&target) {
        return staged.is_some_and(|s| s == target).then_some(Action::Unstage { path });
    }
    let offer = Offer { generation: target.clone(), rollout: d.rollout };
    if memo.and_then(|m| m.failed.as_ref()) == Some(&offer) {
        return None;
    }
    if Activation::of(d.activation.as_deref()) == Activation::Reboot {
        return (staged != Some(target.as_str())).then_some(Action::StageReboot { path, generation: target });
    }
    if recently(r, &target, now) {
        return None;
    }
    Some(match d.rollout {
        Some(_) => Action::SwitchTo { path, generation: target },
        None => Action::Update { path, hint: target },
    })
}

/// The generation the desired state offers the mount at `d`'s path: a rollout's, else its pin,
/// else the generation its channel names now.
pub fn target(d: &DesiredMount) -> Option<String> {
    match (&d.rollout, &d.mount.source) {
        (None, Source::Pinned(g)) => Some(g.clone()),
        _ => d.generation.clone(),
    }
}

/// Forgets what no longer applies: a failed offer the desired state no longer makes, a stuck
/// generation no longer withdrawn, mounts no longer desired. Whether anything changed.
pub fn forget_stale(memos: &mut BTreeMap<String, Memo>, desired: &[DesiredMount], withdrawn: &[String]) -> bool {
    let before = memos.clone();
    memos.retain(|path, _| desired.iter().any(|d| &d.mount.path == path));
    for d in desired {
        let Some(m) = memos.get_mut(&d.mount.path) else { continue };
        let offer = target(d).map(|generation| Offer { generation, rollout: d.rollout });
        if m.failed.is_some() && m.failed != offer {
            m.failed = None;
        }
        if m.stuck_on.as_ref().is_some_and(|g| !withdrawn.contains(g)) {
            m.stuck_on = None;
        }
        if m.offered.as_ref().is_some_and(|(g, _)| target(d).as_ref() != Some(g)) {
            m.offered = None;
        }
    }
    memos.retain(|_, m| !m.is_empty());
    *memos != before
}

/// Whether the mount was sent `update` or `switch_to` for `generation` less than
/// `UPDATE_AGAIN` ago.
fn recently(r: &Running, generation: &str, now: Instant) -> bool {
    r.last_update.as_ref().is_some_and(|(h, t)| h == generation && now.saturating_duration_since(*t) < UPDATE_AGAIN)
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
        let error = st
            .servers
            .iter()
            .filter_map(|s| s.last_error.clone())
            .last()
            .unwrap_or_else(|| "every server is resting after failures".into());
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
    old.pins != new.pins
        || old.generations != new.generations
        || moved(old.used_bytes, new.used_bytes)
        || moved(old.free_bytes, new.free_bytes)
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
