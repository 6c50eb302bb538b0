//! Rollouts and withdrawals on the server: which endpoints a rollout has reached (stable
//! buckets, groups, stages), what each of them reported (switched, healthy, failed, lost,
//! waiting), when a stage passes or the brake halts it, and the generations withdrawn. The
//! decisions are pure functions over the endpoints' reported state; `Engine` keeps the
//! rollouts and withdrawals in memory over `rollout/` and `withdrawn/` records and writes
//! every transition with its audit entry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use api::fleet::{Desired, EndpointId, GroupName, Source};
pub use api::rollouts::bucket;
use api::rollouts::{Decision, Rollout, RolloutId, RolloutState, StageCounts, StageTarget};
use format::ChannelName;

use crate::fleet::Record;
use crate::meta::{AuditEntry, Meta, MetaError};

/// A withdrawn generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WithdrawnRecord {
    /// `IMAGE@N`.
    pub generation: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// When.
    pub time: i64,
}

/// The first stage of `r`'s plan that takes the endpoint, if any.
pub fn entry_stage(r: &Rollout, endpoint: &EndpointId, groups: &[GroupName]) -> Option<usize> {
    let b = bucket(endpoint, r.id);
    r.plan.stages.iter().position(|s| match &s.target {
        StageTarget::Group(g) => groups.contains(g),
        StageTarget::Percent(p) => b < u32::from(*p) * 100,
    })
}

/// Whether a rollout in this state still puts the endpoints it reached on its generation.
pub fn holds_endpoints(state: &RolloutState) -> bool {
    matches!(state, RolloutState::Running | RolloutState::Paused { .. } | RolloutState::Halted { .. } | RolloutState::Aborted { revert: false, .. })
}

/// Whether the rollout is under way (another of the same channel cannot start).
pub fn active(state: &RolloutState) -> bool {
    matches!(state, RolloutState::AwaitingApproval | RolloutState::Running | RolloutState::Paused { .. } | RolloutState::Halted { .. })
}

/// The rollouts of the endpoint's channels and its pin or hold applied to its desired state:
/// a mount following a channel whose rollout reached the endpoint gets the rollout's
/// generation; a pin holds mounts of its image on one generation; a hold keeps every mount on
/// what it runs.
pub fn overlay(d: &mut Desired, record: &Record, rollouts: &[&Rollout], withdrawn: &BTreeMap<String, WithdrawnRecord>) {
    d.withdrawn = withdrawn.keys().cloned().collect();
    for m in &mut d.mounts {
        if let Some(pin) = record.pin.as_ref().filter(|p| crate::fleet::same_image(p, m)) {
            m.mount.source = Source::Pinned(pin.clone());
            m.generation = Some(pin.clone());
            continue;
        }
        if record.hold.is_some() {
            if let Some(current) = record.mounts.iter().find(|a| a.path == m.mount.path).and_then(|a| a.current.clone()) {
                m.generation = Some(current);
            }
            continue;
        }
        let Source::Channel(c) = &m.mount.source else { continue };
        let Some(r) = rollouts.iter().find(|r| &r.channel == c && holds_endpoints(&r.state)) else { continue };
        let Some(entry) = entry_stage(r, &d.endpoint, &d.groups) else { continue };
        if entry > r.stage {
            continue;
        }
        let stage = &r.plan.stages[entry.min(r.plan.stages.len() - 1)];
        m.generation = Some(r.generation.clone());
        m.rollout = Some(r.id);
        m.soak_seconds = Some(stage.soak_seconds);
        m.ignore_windows = r.plan.ignore_windows;
        m.activation = r.activation.clone();
    }
}

/// What one endpoint reached by a rollout reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Who.
    pub id: EndpointId,
    /// The first stage that took it.
    pub entry: usize,
    /// Its mount runs the rollout's generation.
    pub switched: bool,
    /// It reported healthy on it after the soak.
    pub healthy: bool,
    /// It reported failing to reach it, or rolling back from it.
    pub failed: bool,
    /// It waits (window, deferral, prefetch, reboot).
    pub waiting: bool,
    /// Last check-in or report.
    pub seen: Option<i64>,
}

/// The member view of an endpoint for rollout `r`, if the rollout's channel is in its desired
/// state and a stage takes it.
pub fn member(r: &Rollout, record: &Record, seen: Option<i64>, desired: &Desired) -> Option<Member> {
    let mount = desired.mounts.iter().find(|m| matches!(&m.mount.source, Source::Channel(c) if *c == r.channel))?;
    let entry = entry_stage(r, &record.id, &desired.groups)?;
    let path = &mount.mount.path;
    let current = record.mounts.iter().find(|m| &m.path == path).and_then(|m| m.current.as_deref());
    let problem = record.problems.get(path);
    let failed = problem.is_some_and(|p| matches!(p.kind.as_str(), "failed" | "rolled_back") && p.generation.as_deref() == Some(r.generation.as_str()));
    Some(Member {
        id: record.id.clone(),
        entry,
        switched: current == Some(r.generation.as_str()),
        healthy: current == Some(r.generation.as_str()) && record.healthy.get(path) == Some(&r.generation),
        failed,
        waiting: problem.is_some_and(|p| p.kind == "waiting"),
        seen,
    })
}

/// What a tick decides for a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Stay,
    /// The current stage passed: go on to the next (or complete, if it was the last).
    Advance(String),
    /// The brake: the rule that tripped and who failed.
    Halt(String, Vec<EndpointId>),
}

/// The counts of the current stage (its members: every endpoint whose entry stage is at or
/// before it) and the step to take, at `now`.
pub fn evaluate(r: &Rollout, members: &[Member], now: i64) -> (StageCounts, Step) {
    let Some(stage) = r.plan.stages.get(r.stage) else { return (StageCounts::default(), Step::Stay) };
    let lost_after = r.plan.lost_after_seconds as i64;
    let acknowledged: BTreeSet<&EndpointId> = r.acknowledged.iter().collect();
    let mut c = StageCounts { stage: r.stage, ..StageCounts::default() };
    let mut failed = Vec::new();
    // Endpoints whose failure a resume acknowledged no longer count for the gate either.
    let mut excused = 0u64;
    for m in members.iter().filter(|m| m.entry <= r.stage) {
        c.targeted += 1;
        excused += u64::from(acknowledged.contains(&m.id) && !m.healthy);
        c.switched += u64::from(m.switched);
        c.healthy += u64::from(m.healthy);
        c.waiting += u64::from(m.waiting && !m.switched);
        let told = r.stage_times.get(m.entry).copied().unwrap_or(r.stage_started);
        let lost = !m.healthy && !m.failed && now - told > lost_after && m.seen.is_none_or(|s| now - s > lost_after);
        c.failed += u64::from(m.failed);
        c.lost += u64::from(lost);
        if (m.failed || lost) && !acknowledged.contains(&m.id) {
            failed.push(m.id.clone());
        }
    }
    let n = r.stage + 1;
    if failed.len() as u64 > u64::from(stage.failure_budget) {
        let rule = format!("stage {n}: {} failed or lost, budget {}", failed.len(), stage.failure_budget);
        return (c, Step::Halt(rule, failed));
    }
    let counted = c.targeted - excused;
    let need = u64::from(stage.min_sample).min(counted);
    let ratio_ok = c.healthy * 100 >= u64::from(stage.success_percent) * counted;
    let soaked = now - r.stage_started >= stage.soak_seconds as i64 || counted == 0;
    if c.healthy >= need && ratio_ok && soaked {
        return (c.clone(), Step::Advance(format!("stage {n} passed: {} healthy of {}", c.healthy, c.targeted)));
    }
    (c, Step::Stay)
}

/// Rollouts and withdrawals.
pub struct Engine {
    meta: Arc<Meta>,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    rollouts: BTreeMap<RolloutId, Rollout>,
    withdrawn: BTreeMap<String, WithdrawnRecord>,
}

fn rollout_key(id: RolloutId) -> String {
    format!("rollout/{:020}", id.0)
}

/// Why the rollouts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A stored record does not parse.
    #[error("rollout record {key} is damaged: {why}")]
    Damaged {
        /// Its key.
        key: String,
        /// Why.
        why: String,
    },
}

impl Engine {
    /// Loads every rollout and withdrawal.
    pub fn load(meta: Arc<Meta>) -> Result<Engine, LoadError> {
        let mut inner = Inner::default();
        let damaged = |key: &str, e: serde_json::Error| LoadError::Damaged { key: key.to_string(), why: e.to_string() };
        for (k, v) in meta.records("rollout/")? {
            let r: Rollout = serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?;
            inner.rollouts.insert(r.id, r);
        }
        for (k, v) in meta.records("withdrawn/")? {
            let w: WithdrawnRecord = serde_json::from_slice(&v).map_err(|e| damaged(&k, e))?;
            inner.withdrawn.insert(w.generation.clone(), w);
        }
        Ok(Engine { meta, inner: RwLock::new(inner) })
    }

    /// Every rollout, newest first.
    pub fn list(&self) -> Vec<Rollout> {
        self.inner.read().unwrap().rollouts.values().rev().cloned().collect()
    }

    /// One rollout.
    pub fn get(&self, id: RolloutId) -> Option<Rollout> {
        self.inner.read().unwrap().rollouts.get(&id).cloned()
    }

    /// The rollouts that hold endpoints now (for desired states): of each channel only the
    /// newest counts, so a rollout aborted where it stood stops holding its endpoints once a
    /// later rollout of its channel starts.
    pub fn holding(&self) -> Vec<Rollout> {
        let inner = self.inner.read().unwrap();
        let mut seen = BTreeSet::new();
        inner.rollouts.values().rev().filter(|r| seen.insert(r.channel.clone())).filter(|r| holds_endpoints(&r.state)).cloned().collect()
    }

    /// The active rollout of a channel, if any.
    pub fn active_on(&self, channel: &ChannelName) -> Option<Rollout> {
        self.inner.read().unwrap().rollouts.values().find(|r| &r.channel == channel && active(&r.state)).cloned()
    }

    /// The next id.
    pub fn next_id(&self) -> RolloutId {
        RolloutId(self.inner.read().unwrap().rollouts.keys().next_back().map_or(1, |k| k.0 + 1))
    }

    /// Writes a rollout (new or changed) with its audit entry, then keeps it in memory.
    pub fn put(&self, r: Rollout, audit: AuditEntry) -> Result<(), MetaError> {
        self.meta.write_records(&[(rollout_key(r.id), crate::fleet::json(&r))], &[], Some(audit), true)?;
        self.inner.write().unwrap().rollouts.insert(r.id, r);
        Ok(())
    }

    /// Updates the counts of a rollout in memory only (they are derived, never accumulated).
    pub fn set_counts(&self, id: RolloutId, counts: StageCounts) {
        if let Some(r) = self.inner.write().unwrap().rollouts.get_mut(&id) {
            r.counts = counts;
        }
    }

    /// Whether a generation was withdrawn, and how.
    pub fn withdrawn(&self, generation: &str) -> Option<WithdrawnRecord> {
        self.inner.read().unwrap().withdrawn.get(generation).cloned()
    }

    /// Every withdrawn generation.
    pub fn all_withdrawn(&self) -> BTreeMap<String, WithdrawnRecord> {
        self.inner.read().unwrap().withdrawn.clone()
    }

    /// Records a withdrawal with its audit entry.
    pub fn put_withdrawn(&self, w: WithdrawnRecord, audit: AuditEntry) -> Result<(), MetaError> {
        self.meta.write_records(&[(format!("withdrawn/{}", w.generation), crate::fleet::json(&w))], &[], Some(audit), true)?;
        self.inner.write().unwrap().withdrawn.insert(w.generation.clone(), w);
        Ok(())
    }
}

/// A decision by `actor` now.
pub fn decision(actor: &str, text: impl Into<String>) -> Decision {
    Decision { time: cache::clock::now(), actor: actor.into(), text: text.into() }
}
