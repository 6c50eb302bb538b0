//! The rollout routes of imaged's API (`/v1/rollouts`, `/v1/withdraw`, endpoint pins and
//! holds; docs/rollouts.md) as typed methods of `Remote`.

use api::fleet::{EndpointId, EndpointSummary, GroupName, GroupSummary};
use api::rollouts::{Abort, Hold, Pin, Rollout, RolloutId, Rollouts, StartRollout, Withdraw, Withdrawn};

use super::{Body, Remote, RemoteError};

/// What a person does to a rollout (`POST /v1/rollouts/{id}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    /// Stop advancing; endpoints stay where they are.
    Pause,
    /// Go on (after a pause, or after the brake: acknowledging the failures it saw).
    Resume,
    /// Start a rollout that waited for the channel's policy, once it is met.
    Approve,
    /// Stop for good; with `revert`, endpoints go back to what the channel named before.
    Abort {
        /// Send endpoints back.
        revert: bool,
    },
}

impl RolloutAction {
    /// The route's last segment.
    pub fn name(self) -> &'static str {
        match self {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Approve => "approve",
            RolloutAction::Abort { .. } => "abort",
        }
    }
}

impl Remote {
    /// Starts a rollout (publish): running, or awaiting approval when the channel's policy is
    /// not met yet.
    pub fn start_rollout(&self, start: &StartRollout) -> Result<Rollout, RemoteError> {
        self.send(reqwest::Method::POST, &self.url("/v1/rollouts"), Body::json(start))
    }

    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Result<Rollouts, RemoteError> {
        self.send(reqwest::Method::GET, &self.url("/v1/rollouts"), Body::None)
    }

    /// One rollout: plan, state, stage, counts, decisions.
    pub fn rollout(&self, id: RolloutId) -> Result<Rollout, RemoteError> {
        self.send(reqwest::Method::GET, &self.url(&format!("/v1/rollouts/{id}")), Body::None)
    }

    /// Pauses, resumes, approves or aborts a rollout (publish); the rollout as it is now.
    pub fn rollout_action(&self, id: RolloutId, action: RolloutAction) -> Result<Rollout, RemoteError> {
        let url = self.url(&format!("/v1/rollouts/{id}/{}", action.name()));
        let body = match action {
            RolloutAction::Abort { revert } => Body::json(&Abort { revert }),
            _ => Body::None,
        };
        self.send(reqwest::Method::POST, &url, body)
    }

    /// Withdraws a generation (publish): channels naming it move back, rollouts to it abort,
    /// it is never offered again.
    pub fn withdraw(&self, withdraw: &Withdraw) -> Result<Withdrawn, RemoteError> {
        self.send(reqwest::Method::POST, &self.url("/v1/withdraw"), Body::json(withdraw))
    }

    /// Pins an endpoint's mounts of an image to one generation, or (`None`) removes its pin.
    pub fn pin_endpoint(&self, id: &EndpointId, pin: Option<&Pin>) -> Result<EndpointSummary, RemoteError> {
        let url = self.url(&format!("/v1/fleet/endpoints/{id}/pin"));
        match pin {
            Some(p) => self.send(reqwest::Method::PUT, &url, Body::json(p)),
            None => self.send(reqwest::Method::DELETE, &url, Body::None),
        }
    }

    /// Pins a group's endpoints' mounts of an image to a generation, or (`None`) unpins them.
    pub fn pin_group(&self, name: &GroupName, pin: Option<&Pin>) -> Result<GroupSummary, RemoteError> {
        let url = self.url(&format!("/v1/fleet/groups/{name}/pin"));
        match pin {
            Some(p) => self.send(reqwest::Method::PUT, &url, Body::json(p)),
            None => self.send(reqwest::Method::DELETE, &url, Body::None),
        }
    }

    /// Holds an endpoint where it is, or (`None`) releases it.
    pub fn hold_endpoint(&self, id: &EndpointId, hold: Option<&Hold>) -> Result<EndpointSummary, RemoteError> {
        let url = self.url(&format!("/v1/fleet/endpoints/{id}/hold"));
        match hold {
            Some(h) => self.send(reqwest::Method::PUT, &url, Body::json(h)),
            None => self.send(reqwest::Method::DELETE, &url, Body::None),
        }
    }
}
