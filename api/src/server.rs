//! Server-wide routes: `GET /healthz` (plain `ok`), `GET /metrics` (Prometheus text) and
//! `POST /v1/gc`.

/// Body of `POST /v1/gc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcRequest {
    /// Report without deleting.
    pub dry_run: bool,
}

/// What a collection found and (unless a dry run) did: the answer of `POST /v1/gc` and the
/// output of `imaged gc --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Generations kept, as `IMAGE@N`.
    pub generations_kept: Vec<String>,
    /// Generations forgotten (their objects go unless a kept one shares them).
    pub generations_removed: Vec<String>,
    /// Objects kept.
    pub objects_kept: u64,
    /// Objects kept only because a push in progress uploaded them or was told they exist.
    pub objects_pinned: u64,
    /// Objects deleted (or that would be, in a dry run).
    pub objects_removed: u64,
    /// Bytes those objects took in the store.
    pub bytes_freed: u64,
    /// Milliseconds the collection took.
    pub millis: u64,
    /// Generations kept because endpoints seen within `fleet_keep_seconds` run them or would
    /// roll back to them, with those endpoints.
    #[serde(default)]
    pub kept_for_endpoints: Vec<KeptForEndpoints>,
}

/// A generation garbage collection kept for the endpoints that run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptForEndpoints {
    /// `IMAGE@N`.
    pub generation: String,
    /// The endpoints running it (current or previous generation of a mount).
    pub endpoints: Vec<crate::fleet::EndpointId>,
}
