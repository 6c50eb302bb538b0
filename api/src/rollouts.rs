//! Rollouts: the one way a channel moves for a fleet. A plan of stages (a group, or a
//! cumulative share of the targeted endpoints), each passing when enough of its endpoints
//! report healthy after a soak, halting by itself when failures exceed its budget; withdrawal
//! of a bad generation; pins and holds. Routes under `/v1/rollouts` and `/v1/withdraw`
//! (docs/rollouts.md has the model, docs/api.md every route).

use crate::fleet::{EndpointId, GroupName};
use format::ChannelName;

/// A rollout's id: `r` and a number from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RolloutId(pub u64);

impl std::fmt::Display for RolloutId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl std::str::FromStr for RolloutId {
    type Err = crate::fleet::BadId;
    fn from_str(s: &str) -> Result<RolloutId, Self::Err> {
        s.strip_prefix('r')
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .map(RolloutId)
            .ok_or_else(|| crate::fleet::BadId { what: "rollout id", text: s.chars().take(40).collect(), rule: "`r` and a number from 1" })
    }
}

impl serde::Serialize for RolloutId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RolloutId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RolloutId, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Which endpoints a stage adds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StageTarget {
    /// The targeted endpoints in this group.
    Group(GroupName),
    /// This percentage (1-100, cumulative) of the targeted endpoints, by stable bucket.
    Percent(u8),
}

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Which endpoints it adds.
    #[serde(flatten)]
    pub target: StageTarget,
    /// Healthy endpoints needed before it can pass (capped at the stage's size).
    #[serde(default = "one")]
    pub min_sample: u32,
    /// Seconds an endpoint must stay healthy after its switch before it counts as healthy.
    #[serde(default)]
    pub soak_seconds: u64,
    /// Percentage of the stage's endpoints that must be healthy for it to pass.
    #[serde(default = "hundred")]
    pub success_percent: u8,
    /// Failed (or lost) endpoints the stage tolerates; one more halts the rollout.
    #[serde(default)]
    pub failure_budget: u32,
}

fn one() -> u32 {
    1
}

fn hundred() -> u8 {
    100
}

/// A plan: ordered stages and whether endpoints wait for their maintenance windows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Name (`normal`, `emergency`, or the file's).
    pub name: String,
    /// Stages in order; the last one should reach 100%.
    pub stages: Vec<Stage>,
    /// Switch at once, ignoring maintenance windows and deferrals (never the brake).
    #[serde(default)]
    pub ignore_windows: bool,
    /// Seconds an endpoint told to switch may stay silent before it counts as lost (failed).
    #[serde(default = "lost_after")]
    pub lost_after_seconds: u64,
}

fn lost_after() -> u64 {
    900
}

impl Plan {
    /// The built-in `normal` plan: the `pilot` group, then 1%, 10%, 50%, 100%.
    pub fn normal() -> Plan {
        let stage = |target, min_sample, soak_seconds, failure_budget| Stage { target, min_sample, soak_seconds, success_percent: 95, failure_budget };
        Plan {
            name: "normal".into(),
            stages: vec![
                stage(StageTarget::Group(GroupName::new("pilot").expect("a valid name")), 1, 600, 0),
                stage(StageTarget::Percent(1), 1, 600, 0),
                stage(StageTarget::Percent(10), 5, 1800, 1),
                stage(StageTarget::Percent(50), 20, 3600, 2),
                stage(StageTarget::Percent(100), 20, 3600, 5),
            ],
            ignore_windows: false,
            lost_after_seconds: 3600,
        }
    }

    /// The built-in `emergency` plan: 10% then 100%, short soaks, windows ignored, the same
    /// brake.
    pub fn emergency() -> Plan {
        let stage = |p, min_sample, soak_seconds| Stage { target: StageTarget::Percent(p), min_sample, soak_seconds, success_percent: 90, failure_budget: 1 };
        Plan { name: "emergency".into(), stages: vec![stage(10, 1, 60), stage(100, 1, 60)], ignore_windows: true, lost_after_seconds: 600 }
    }

    /// Why the plan cannot run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.stages.is_empty() || self.stages.len() > 20 {
            return Some("a plan has 1-20 stages".into());
        }
        let mut last = 0;
        for (i, s) in self.stages.iter().enumerate() {
            if s.success_percent == 0 || s.success_percent > 100 {
                return Some(format!("stage {}: success_percent is 1-100", i + 1));
            }
            if let StageTarget::Percent(p) = s.target {
                if p == 0 || p > 100 || p < last {
                    return Some(format!("stage {}: percent is 1-100 and never less than an earlier stage's", i + 1));
                }
                last = p;
            }
        }
        None
    }
}

/// How `POST /v1/rollouts` names its plan: built-in by name, or given whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum PlanSpec {
    /// `normal` or `emergency`.
    Named(String),
    /// A plan.
    Given(Plan),
}

/// Body of `POST /v1/rollouts` (publish).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The channel it moves.
    pub channel: ChannelName,
    /// Where to, `IMAGE@N`.
    pub generation: String,
    /// The plan (default `normal`).
    #[serde(default = "normal_spec")]
    pub plan: PlanSpec,
    /// Why (the audit log's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn normal_spec() -> PlanSpec {
    PlanSpec::Named("normal".into())
}

/// The stable bucket of an endpoint in a rollout, 0..10000: the first 8 bytes (big-endian)
/// of BLAKE3(`ENDPOINT\nROLLOUT`) modulo 10000, so stage membership can be reproduced by
/// anyone and differs between rollouts. A percent stage of P takes buckets below P × 100.
pub fn bucket(endpoint: &EndpointId, rollout: RolloutId) -> u32 {
    let d = format::Digest::of(format!("{endpoint}\n{rollout}").as_bytes());
    (u64::from_be_bytes(d.0[..8].try_into().expect("8 bytes")) % 10_000) as u32
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    /// Waiting for the approvals the channel's policy asks for.
    AwaitingApproval,
    /// Stages advancing.
    Running,
    /// Paused by a person.
    Paused {
        /// Who.
        by: String,
    },
    /// Stopped by the brake.
    Halted {
        /// Which rule tripped, in words (`stage 2: 2 failed, budget 1`).
        rule: String,
        /// The endpoints that failed or were lost in that stage.
        failed: Vec<EndpointId>,
    },
    /// Every stage passed; the channel names the generation.
    Completed,
    /// Stopped by a person: endpoints kept where they were, or sent back (`revert`).
    Aborted {
        /// Who.
        by: String,
        /// Whether endpoints went back.
        revert: bool,
    },
}

impl RolloutState {
    /// The state in a word or two: `running`, `awaiting approval`.
    pub fn name(&self) -> &'static str {
        match self {
            RolloutState::AwaitingApproval => "awaiting approval",
            RolloutState::Running => "running",
            RolloutState::Paused { .. } => "paused",
            RolloutState::Halted { .. } => "halted",
            RolloutState::Completed => "completed",
            RolloutState::Aborted { .. } => "aborted",
        }
    }
}

/// What one stage's endpoints reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageCounts {
    /// The stage (0-based) these counts are of: right after a stage passes, the counts shown
    /// are still the previous stage's until the next tick counts the new one.
    #[serde(default)]
    pub stage: usize,
    /// Endpoints in the stage (cumulative: earlier stages' included).
    pub targeted: u64,
    /// Reported running the generation.
    pub switched: u64,
    /// Reported healthy after the soak.
    pub healthy: u64,
    /// Reported failed (a probe, a refused switch) or rolled back.
    pub failed: u64,
    /// Told to switch and silent past `lost_after_seconds`.
    pub lost: u64,
    /// Waiting: for a window, deferred, prefetching, pending a reboot.
    pub waiting: u64,
}

/// A rollout as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    /// Id.
    pub id: RolloutId,
    /// The channel.
    pub channel: ChannelName,
    /// Where to.
    pub generation: String,
    /// What the channel named at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The plan.
    pub plan: Plan,
    /// State.
    #[serde(flatten)]
    pub state: RolloutState,
    /// The stage reached (0-based; `plan.stages.len()` once complete).
    pub stage: usize,
    /// When the current stage started.
    pub stage_started: i64,
    /// When each stage reached so far started.
    #[serde(default)]
    pub stage_times: Vec<i64>,
    /// Counts of the current stage.
    pub counts: StageCounts,
    /// Who started it, when, why.
    pub started_by: String,
    /// When.
    pub started: i64,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every decision, oldest first (`stage 1 passed: 1 healthy of 1`).
    pub log: Vec<Decision>,
    /// Endpoints whose failure a resume acknowledged: the brake no longer counts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<EndpointId>,
    /// The generation's activation policy (`live`, `reboot`, `restart:UNITS`), from its change
    /// record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
}

/// One decision of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// When.
    pub time: i64,
    /// Who (`rollout` for the server's own decisions).
    pub actor: String,
    /// What, in words.
    pub text: String,
}

/// Answer of `GET /v1/rollouts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollouts {
    /// Newest first.
    pub rollouts: Vec<Rollout>,
}

/// Body of `POST /v1/rollouts/{id}/abort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Send endpoints back to what the channel named before.
    #[serde(default)]
    pub revert: bool,
}

/// Body of `POST /v1/withdraw` (admin).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdraw {
    /// `IMAGE@N`.
    pub generation: String,
    /// Why (required).
    pub reason: String,
}

/// Answer of `POST /v1/withdraw`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Withdrawn {
    /// The generation.
    pub generation: String,
    /// Channels moved back, with the generation each names now.
    pub channels: Vec<(ChannelName, String)>,
    /// Rollouts aborted.
    pub rollouts: Vec<RolloutId>,
    /// Endpoints that reported running it when it was withdrawn.
    pub running: Vec<EndpointId>,
}

/// Body of `PUT /v1/fleet/endpoints/{id}/pin` (publish): hold the endpoint's mounts of this
/// image on one generation, whatever channels and rollouts say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// `IMAGE@N`.
    pub generation: String,
}

/// Body of `PUT /v1/fleet/endpoints/{id}/hold` (publish): keep the endpoint where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// Why.
    pub reason: String,
}
