//! Channel routes: `GET|PUT /v1/channels/{name}`, `GET /v1/history/{name}`, `POST
//! /v1/promote`, `POST /v1/rollback`.

use format::{ChannelName, Digest};

/// How a channel version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelAction {
    /// `channel set`.
    Set,
    /// `channel promote`: another channel's generation.
    Promote,
    /// `channel rollback`: an earlier generation.
    Rollback,
    /// A rollout completed (`imgctl rollout`).
    Rollout,
    /// A withdrawal moved the channel off a withdrawn generation (`imgctl withdraw`).
    Withdraw,
}

impl ChannelAction {
    /// The action as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelAction::Set => "set",
            ChannelAction::Promote => "promote",
            ChannelAction::Rollback => "rollback",
            ChannelAction::Rollout => "rollout",
            ChannelAction::Withdraw => "withdraw",
        }
    }
}

/// One version of a channel, as recorded (also the server's stored record, docs/format.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelVersion {
    /// Channel name.
    pub channel: ChannelName,
    /// Version number, from 1, never reused.
    pub version: u64,
    /// `IMAGE@N`.
    pub generation: String,
    /// The generation's manifest digest.
    pub manifest: Digest,
    /// Seconds since the epoch.
    pub created: i64,
    /// What made it.
    pub action: ChannelAction,
}

/// Answer of `GET /v1/channels/{name}` and of every channel move.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Channel {
    /// Channel name.
    pub channel: ChannelName,
    /// Current version.
    pub version: u64,
    /// `IMAGE@N`.
    pub generation: String,
    /// The generation's manifest digest.
    pub manifest: Digest,
    /// When this version was made, seconds since the epoch.
    pub updated: i64,
    /// What made it.
    pub action: ChannelAction,
    /// How often endpoints should poll, in seconds.
    pub poll_seconds: u32,
}

/// Body of `PUT /v1/channels/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetChannel {
    /// `IMAGE@N`, `IMAGE@latest` or a manifest digest.
    pub generation: String,
    /// Why, recorded in the audit log with the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /v1/promote`: `to` gets `from`'s generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Promote {
    /// The channel whose generation moves.
    pub from: ChannelName,
    /// The channel that moves.
    pub to: ChannelName,
    /// Why, recorded in the audit log with the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /v1/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollback {
    /// The channel that moves.
    pub channel: ChannelName,
    /// The generation to go back to; else the newest earlier one still published.
    #[serde(default)]
    pub to: Option<String>,
    /// Why, recorded in the audit log with the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Answer of `GET /v1/history/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// Channel name.
    pub channel: ChannelName,
    /// Every version, oldest first.
    pub versions: Vec<ChannelVersion>,
}
