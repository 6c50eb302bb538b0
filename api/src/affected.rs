//! `GET /v1/affected`: which published generations carry a Debian package (by binary or
//! source name) or a path (with given content), and the channels that name them now.

use format::{ChannelName, Digest, Package};

/// The query string of `GET /v1/affected`: exactly one of `package`, `source` or `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffectedQuery {
    /// A binary package name (`libssl3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// A source package name (`openssl`): every binary package built from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A path inside the generations (`usr/lib/x86_64-linux-gnu/libssl.so.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// With `path`: only regular files whose content has this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// One generation that carries what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AffectedRow {
    /// `IMAGE@N`.
    pub generation: String,
    /// Its manifest digest.
    pub manifest: Digest,
    /// For a package query: the matching packages it carries (one per architecture, or every
    /// binary of a source package), with their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
    /// The channels whose current version names this generation.
    #[serde(default)]
    pub channels: Vec<ChannelName>,
    /// The endpoints that run it, would roll back to it, or hold it in their cache, as they
    /// last reported (server queries only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<crate::fleet::Holder>,
}

/// Answer of `GET /v1/affected`: the rows in image then generation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Affected {
    /// The generations that carry it.
    pub rows: Vec<AffectedRow>,
}
