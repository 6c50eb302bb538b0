//! The subcommands that talk to a server: push (upload, publish, sign), keep and channel.

use api::channels::{Channel, History};
use api::generations::Kept;
use api::ChannelName;
use format::{GenSpec, ImageName};
use crate::signer::Holder;
use trust::policy::GenerationRecord;

use super::CommandError;
use crate::push::PushReport;
use crate::remote::Remote;
use crate::{signing, Repo};

/// What `push` is asked to do.
pub struct PushPlan {
    /// The generation.
    pub generation: GenSpec,
    /// The family's keys; none publishes the generation unsigned.
    pub keys: Vec<Holder>,
    /// Architecture it runs on (default: this machine's).
    pub arch: Option<String>,
    /// Security epoch (default: the family's `min_epoch`).
    pub epoch: Option<u64>,
    /// Days until the family's signed metadata expires.
    pub expires_days: i64,
}

/// What `push` did (`imgctl push --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushOutput {
    /// `IMAGE@N`.
    #[serde(skip)]
    pub generation: String,
    /// Uploads and the server's description of the published generation.
    #[serde(flatten)]
    pub report: PushReport,
    /// The signed record, if keys were given.
    pub signed: Option<GenerationRecord>,
    /// How long it took.
    #[serde(skip)]
    pub seconds: f64,
}

/// Uploads the objects of `plan.generation` the server lacks, publishes it and, with keys,
/// signs it as a target of its family's role.
pub fn push(repo: &Repo, remote: &Remote, plan: PushPlan) -> Result<PushOutput, CommandError> {
    let g = repo.resolve(&plan.generation)?;
    let start = std::time::Instant::now();
    let report = crate::push::push(&repo.store, &g, remote).map_err(|source| CommandError::Push { generation: g.label(), source })?;
    let signed = if plan.keys.is_empty() {
        None
    } else {
        let manifest = repo.store.get(&g.digest).map_err(crate::browse::ReadError::from)?;
        let arch = plan.arch.unwrap_or_else(|| trust::policy::host_arch().to_string());
        let to_sign = signing::GenerationToSign {
            image: g.manifest.image.as_str(),
            generation: g.manifest.generation,
            manifest: &manifest,
            arch: &arch,
            epoch: plan.epoch,
        };
        Some(
            signing::sign_generation(remote, &plan.keys, &to_sign, plan.expires_days)
                .map_err(|source| CommandError::Sign { doing: format!("signing {}", g.label()), source })?,
        )
    };
    Ok(PushOutput { generation: g.label(), report, signed, seconds: start.elapsed().as_secs_f64() })
}

/// Marks (or with `keep` false, unmarks) `IMAGE@N` as kept by the server's garbage collection.
pub fn keep(remote: &Remote, image: &ImageName, number: u64, keep: bool) -> Result<Kept, CommandError> {
    Ok(remote.keep(image, number, keep)?)
}

/// A channel operation, its names checked.
pub enum ChannelPlan {
    /// Point the channel at a generation (`IMAGE@N`, `IMAGE@latest` or a manifest digest).
    Set {
        /// The channel.
        channel: ChannelName,
        /// The generation.
        generation: String,
        /// Why (the audit log records it).
        reason: Option<String>,
    },
    /// Point `to` at `from`'s generation.
    Promote {
        /// Source.
        from: ChannelName,
        /// Target.
        to: ChannelName,
        /// Why (the audit log records it).
        reason: Option<String>,
    },
    /// A new version naming an older generation (the previous one by default).
    Rollback {
        /// The channel.
        channel: ChannelName,
        /// The generation to go back to.
        to: Option<String>,
        /// Why (the audit log records it).
        reason: Option<String>,
    },
    /// Every version.
    History(ChannelName),
    /// The current version.
    Get(ChannelName),
}

/// The server's answer to a channel operation.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum ChannelOutput {
    /// The channel's (new) current version.
    Channel(Channel),
    /// Every version of it.
    History(History),
}

/// Runs a channel operation on the server.
pub fn channel(remote: &Remote, plan: &ChannelPlan) -> Result<ChannelOutput, CommandError> {
    Ok(match plan {
        ChannelPlan::Set { channel, generation, reason } => ChannelOutput::Channel(remote.channel_set(channel, generation, reason.as_deref())?),
        ChannelPlan::Promote { from, to, reason } => ChannelOutput::Channel(remote.promote(from, to, reason.as_deref())?),
        ChannelPlan::Rollback { channel, to, reason } => ChannelOutput::Channel(remote.rollback(channel, to.as_deref(), reason.as_deref())?),
        ChannelPlan::History(channel) => ChannelOutput::History(remote.history(channel)?),
        ChannelPlan::Get(channel) => ChannelOutput::Channel(remote.channel_get(channel)?),
    })
}
