//! imaged's rules on top of TUF: the target paths of generations and channels, what their
//! `custom` records carry, and which generation an endpoint of a given image family and
//! architecture accepts: one the family's offline role signed, named by a channel record of
//! the online `channels` role, with a security epoch at least the floor.

use serde::{Deserialize, Serialize};

use crate::client::Trusted;
use crate::metadata::TargetFile;

/// The delegated role that signs channel records (online keys, on the server).
pub const CHANNELS_ROLE: &str = "channels";

/// The target path of generation `n` of image family `image`.
pub fn generation_path(image: &str, n: u64) -> String {
    format!("images/{image}/{n}")
}

/// Most `/`-separated segments in a channel name the signed metadata covers.
pub const MAX_CHANNEL_DEPTH: usize = 8;

/// The path patterns `targets` delegates to the channels role: `channels/*`,
/// `channels/*/*`, … (a `*` never matches a `/`), one per depth up to `MAX_CHANNEL_DEPTH`.
pub fn channel_patterns() -> Vec<String> {
    (1..=MAX_CHANNEL_DEPTH).map(|d| format!("channels{}", "/*".repeat(d))).collect()
}

/// The target path of channel `channel`.
pub fn channel_path(channel: &str) -> String {
    format!("channels/{channel}")
}

/// The delegated role that signs image family `image`'s generations (offline keys).
pub fn family_role(image: &str) -> String {
    format!("images/{image}")
}

/// `custom` of a generation target, signed by the family's offline keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// Image family.
    pub image: String,
    /// Generation number.
    pub generation: u64,
    /// Architecture it runs on (`amd64`, `arm64`, …).
    pub arch: String,
    /// Security epoch.
    pub epoch: u64,
    /// The manifest's BLAKE3 digest (hex): the object endpoints fetch. Generations signed
    /// before it existed carry it as a `blake3` entry of the target's `hashes` instead, which
    /// other TUF clients cannot check (python-tuf refuses hashes it does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// A read trace attached to the generation (`imgctl trace add`): the BLAKE3 digest (hex)
    /// of the trace object, whose data endpoints fetch first on mount and switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The manifest digest (BLAKE3 hex) generation target `file` names: its record's
/// `manifest`, else (older repositories) a `blake3` entry of its hashes.
pub fn manifest_of<'a>(file: &'a TargetFile, record: &'a GenerationRecord) -> Option<&'a str> {
    record.manifest.as_deref().or_else(|| file.hashes.get("blake3").map(String::as_str))
}

/// `custom` of a channel target (and the target file's content), signed by the online
/// `channels` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The channel.
    pub channel: String,
    /// The channel's version (every move is a new one).
    pub version: u64,
    /// The generation's target path, `images/FAMILY/N`.
    pub target: String,
    /// The generation's security epoch.
    pub epoch: u64,
    /// How often endpoints should check, seconds.
    #[serde(default)]
    pub poll_seconds: Option<u64>,
}

/// `custom` of an image family's role: generations below `min_epoch` are withdrawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    /// The lowest security epoch an endpoint may run.
    #[serde(default)]
    pub min_epoch: u64,
}

/// `custom` of the online `channels` role: generations withdrawn fleet-wide (`IMAGE@N`),
/// which an endpoint refuses to switch to, as it refuses one below its family's floor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsRecord {
    /// Withdrawn generations.
    #[serde(default)]
    pub withdrawn: Vec<String>,
}

/// The generations the trusted `channels` role lists as withdrawn.
pub fn withdrawn(t: &Trusted) -> Vec<String> {
    t.targets(CHANNELS_ROLE)
        .and_then(|r| r.custom.clone())
        .and_then(|c| serde_json::from_value::<ChannelsRecord>(c).ok())
        .map_or_else(Vec::new, |c| c.withdrawn)
}

/// Refuses `accepted` if the trusted metadata lists it as withdrawn.
pub fn check_not_withdrawn(t: &Trusted, accepted: Accepted) -> Result<Accepted, PolicyError> {
    let label = format!("{}@{}", accepted.record.image, accepted.record.generation);
    if withdrawn(t).contains(&label) {
        return Err(PolicyError::Withdrawn { path: accepted.path });
    }
    Ok(accepted)
}

/// A generation an endpoint may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its target path.
    pub path: String,
    /// What its family signed of it.
    pub record: GenerationRecord,
    /// The manifest's blake3 digest, hex (its object id).
    pub manifest: String,
    /// The manifest's length in bytes.
    pub length: u64,
}

/// Why a channel or generation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The path is listed by a role that may not sign it.
    #[error("{path} is signed by role {role}, not by {want}")]
    WrongRole {
        /// The target path.
        path: String,
        /// The role that listed it.
        role: String,
        /// The role that must.
        want: String,
    },
    /// The signed record is not what imaged writes.
    #[error("{path}: malformed record: {why}")]
    Malformed {
        /// The target path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A channel names a generation of another image family.
    #[error("{channel} names {target}, outside image family {family} that this endpoint runs")]
    WrongFamily {
        /// The channel.
        channel: String,
        /// What it names.
        target: String,
        /// This endpoint's family.
        family: String,
    },
    /// No role trusted for the path lists it.
    #[error("{path} is not signed by its image family's keys")]
    NotSigned {
        /// The target path.
        path: String,
    },
    /// Built for another architecture.
    #[error("{path} is for {arch}, this endpoint runs {want}")]
    WrongArch {
        /// The target path.
        path: String,
        /// Its architecture.
        arch: String,
        /// The endpoint's.
        want: String,
    },
    /// Withdrawn fleet-wide by the signed `channels` role.
    #[error("{path} was withdrawn (the signed channels role lists it)")]
    Withdrawn {
        /// The target path.
        path: String,
    },
    /// Below the security epoch floor.
    #[error("{path} has security epoch {epoch}, below the floor {floor}")]
    BelowFloor {
        /// The target path.
        path: String,
        /// Its epoch.
        epoch: u64,
        /// The floor.
        floor: u64,
    },
    /// The channel record's epoch is not the generation's signed one.
    #[error("{channel} claims epoch {claimed} for {target}, its family signed epoch {signed}")]
    EpochMismatch {
        /// The channel.
        channel: String,
        /// The target.
        target: String,
        /// What the channel record says.
        claimed: u64,
        /// What the family signed.
        signed: u64,
    },
}

fn malformed(path: &str, why: impl ToString) -> PolicyError {
    PolicyError::Malformed { path: path.into(), why: why.to_string() }
}

/// Reads the channel record of `channel` from its target, found in role `role`.
pub fn channel_record(channel: &str, file: &TargetFile, role: &str) -> Result<ChannelRecord, PolicyError> {
    let path = channel_path(channel);
    if role != CHANNELS_ROLE {
        return Err(PolicyError::WrongRole { path, role: role.into(), want: CHANNELS_ROLE.into() });
    }
    let custom = file.custom.clone().ok_or_else(|| malformed(&path, "no custom record"))?;
    let rec: ChannelRecord = serde_json::from_value(custom).map_err(|e| malformed(&path, e))?;
    if rec.channel != channel {
        return Err(malformed(&path, format!("the record is for channel {:?}", rec.channel)));
    }
    Ok(rec)
}

/// The target path a channel record may name for an endpoint of `family`.
pub fn check_family(rec: &ChannelRecord, family: &str) -> Result<(), PolicyError> {
    let rest = rec.target.strip_prefix(&format!("images/{family}/"));
    if rest.is_none_or(|n| n.parse::<u64>().is_err()) {
        return Err(PolicyError::WrongFamily { channel: rec.channel.clone(), target: rec.target.clone(), family: family.into() });
    }
    Ok(())
}

/// The security epoch floor of `family`: the highest of what the endpoint stored and what
/// the family's trusted role says now.
pub fn floor(t: &Trusted, family: &str, stored: u64) -> u64 {
    let signed = t
        .targets(&family_role(family))
        .and_then(|r| r.custom.clone())
        .and_then(|c| serde_json::from_value::<FamilyRecord>(c).ok())
        .map_or(0, |f| f.min_epoch);
    stored.max(signed)
}

/// Checks generation target `path` (found in role `role`) for an endpoint of `family` and
/// `arch` whose epoch floor is `floor`.
pub fn check_generation(path: &str, file: &TargetFile, role: &str, family: &str, arch: &str, floor: u64) -> Result<Accepted, PolicyError> {
    let want = family_role(family);
    if role != want {
        return Err(PolicyError::WrongRole { path: path.into(), role: role.into(), want });
    }
    let custom = file.custom.clone().ok_or_else(|| malformed(path, "no custom record"))?;
    let record: GenerationRecord = serde_json::from_value(custom).map_err(|e| malformed(path, e))?;
    if generation_path(&record.image, record.generation) != path {
        return Err(malformed(path, format!("the record is for {}@{}", record.image, record.generation)));
    }
    if record.arch != arch {
        return Err(PolicyError::WrongArch { path: path.into(), arch: record.arch, want: arch.into() });
    }
    if record.epoch < floor {
        return Err(PolicyError::BelowFloor { path: path.into(), epoch: record.epoch, floor });
    }
    let manifest = manifest_of(file, &record).ok_or_else(|| malformed(path, "no manifest digest"))?;
    if manifest.len() != 64 || !manifest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(path, "the manifest digest is not 64 hex digits"));
    }
    let manifest = manifest.to_ascii_lowercase();
    Ok(Accepted { path: path.into(), manifest, length: file.length, record })
}

/// The architecture name of the machine this is built for, as generations record it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        other => other,
    }
}
