//! The server's error answers: a stable machine code (`ErrorCode`), a message for people, and
//! for some codes details such as the missing objects.

use format::Digest;

/// Every error code imaged sends, as `{"error": CODE, "message": TEXT}`. Scripts and clients
/// branch on the code, never on the message. Each code has one HTTP status (`http_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a request the server could not read (bad JSON, bad path parameter).
    BadRequest,
    /// 400: a digest that is not 64 hex characters.
    BadDigest,
    /// 400: an image name that breaks the naming rule.
    BadName,
    /// 400: a channel name that breaks the naming rule (or is percent-encoded).
    BadChannelName,
    /// 400: a generation that is neither `IMAGE@N`, `IMAGE@latest` nor a manifest digest.
    BadGeneration,
    /// 400: a body that is not a generation manifest.
    BadManifest,
    /// 400: an object whose bytes do not decode to its digest, or too large.
    BadObject,
    /// 400: an upload body that does not end on a record boundary.
    BadRecords,
    /// 400: signed metadata refused (signatures, thresholds, expiry, content).
    MetadataRefused,
    /// 400: a test statement or approval whose signature does not verify, or that is about
    /// another generation than the route names.
    BadSignature,
    /// 401: the request needs a bearer token.
    TokenRequired,
    /// 403: the bearer token is wrong (or revoked).
    BadToken,
    /// 403: the token is right but its user's role does not allow this request.
    Forbidden,
    /// 403: evidence or an approval signed by a key no channel policy lists as a tester or
    /// approver.
    SignerNotListed,
    /// 404: no such object, generation, channel, file or route.
    NotFound,
    /// 404: the generation a request names is not published.
    UnknownGeneration,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: the generation number is already published with another manifest.
    GenerationExists,
    /// 409: a publish names objects the server lacks (`missing`, `missing_count`).
    MissingObjects,
    /// 409: a channel rollback with no earlier generation still published.
    NothingToRollBackTo,
    /// 409: a channel may name only generations their family signed.
    UnsignedGeneration,
    /// 409: the repository has no root yet.
    TrustNotInitialised,
    /// 409: the server holds no key the repository lists for an online role.
    NoOnlineKey,
    /// 409: signed metadata whose version is not newer than the server's: someone else
    /// uploaded a version first; fetch, merge and sign again.
    VersionNotNewer,
    /// 409: a channel's promotion gate is not met: tests or approvals are missing (`gate`).
    GateNotMet,
    /// 409: a user of that name exists already (revoked users keep their name).
    UserExists,
    /// 409: a group of that name exists already.
    GroupExists,
    /// 400: a label selector that does not parse.
    BadSelector,
    /// 400: a report, facts or labels an endpoint sent that break the rules (control
    /// characters, too long, sequence numbers not increasing).
    BadReport,
    /// 401: an endpoint's session token has expired: open a new session.
    SessionExpired,
    /// 403: the enrollment token is unknown, used up or expired.
    BadEnrollToken,
    /// 403: no endpoint has that id or key.
    UnknownEndpoint,
    /// 403: the endpoint was revoked.
    EndpointRevoked,
    /// 413: more events in one report batch than the server takes.
    TooManyEvents,
    /// 409: a rollout of that channel is under way (pause, abort or finish it first).
    RolloutActive,
    /// 409: the rollout is not in a state that allows this (resume a completed one).
    RolloutState,
    /// 409: the generation was withdrawn: it is never offered again.
    Withdrawn,
    /// 400: a rollout plan that cannot run.
    BadPlan,
    /// 413: a body over the server's limit.
    BodyTooLarge,
    /// 413: more digests in one request than the server takes.
    TooManyDigests,
    /// 415: the body's content type is not the one the route takes.
    BadContentType,
    /// 500: something failed on the server; its log has the details.
    Internal,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the server answers this code with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest | BadDigest | BadName | BadChannelName | BadGeneration | BadManifest | BadObject | BadRecords
            | MetadataRefused | BadSignature | BadSelector | BadReport | BadPlan => 400,
            TokenRequired | SessionExpired => 401,
            BadToken | Forbidden | SignerNotListed | BadEnrollToken | UnknownEndpoint | EndpointRevoked => 403,
            NotFound | UnknownGeneration => 404,
            MethodNotAllowed => 405,
            GenerationExists | MissingObjects | NothingToRollBackTo | UnsignedGeneration | TrustNotInitialised | NoOnlineKey
            | VersionNotNewer | GateNotMet | UserExists | GroupExists | RolloutActive | RolloutState | Withdrawn => 409,
            BodyTooLarge | TooManyDigests | TooManyEvents => 413,
            BadContentType => 415,
            Internal | Unknown => 500,
        }
    }

    /// The code as it appears on the wire (`missing_objects`).
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            BadDigest => "bad_digest",
            BadName => "bad_name",
            BadChannelName => "bad_channel_name",
            BadGeneration => "bad_generation",
            BadManifest => "bad_manifest",
            BadObject => "bad_object",
            BadRecords => "bad_records",
            MetadataRefused => "metadata_refused",
            BadSignature => "bad_signature",
            TokenRequired => "token_required",
            BadToken => "bad_token",
            Forbidden => "forbidden",
            SignerNotListed => "signer_not_listed",
            NotFound => "not_found",
            UnknownGeneration => "unknown_generation",
            MethodNotAllowed => "method_not_allowed",
            GenerationExists => "generation_exists",
            MissingObjects => "missing_objects",
            NothingToRollBackTo => "nothing_to_roll_back_to",
            UnsignedGeneration => "unsigned_generation",
            TrustNotInitialised => "trust_not_initialised",
            NoOnlineKey => "no_online_key",
            VersionNotNewer => "version_not_newer",
            GateNotMet => "gate_not_met",
            UserExists => "user_exists",
            GroupExists => "group_exists",
            BadSelector => "bad_selector",
            BadReport => "bad_report",
            SessionExpired => "session_expired",
            BadEnrollToken => "bad_enroll_token",
            UnknownEndpoint => "unknown_endpoint",
            EndpointRevoked => "endpoint_revoked",
            TooManyEvents => "too_many_events",
            RolloutActive => "rollout_active",
            RolloutState => "rollout_state",
            Withdrawn => "withdrawn",
            BadPlan => "bad_plan",
            BodyTooLarge => "body_too_large",
            TooManyDigests => "too_many_digests",
            BadContentType => "bad_content_type",
            Internal => "internal",
            Unknown => "unknown",
        }
    }

    /// Every code the server sends (not `Unknown`), for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::BadDigest,
        ErrorCode::BadName,
        ErrorCode::BadChannelName,
        ErrorCode::BadGeneration,
        ErrorCode::BadManifest,
        ErrorCode::BadObject,
        ErrorCode::BadRecords,
        ErrorCode::MetadataRefused,
        ErrorCode::BadSignature,
        ErrorCode::TokenRequired,
        ErrorCode::BadToken,
        ErrorCode::Forbidden,
        ErrorCode::SignerNotListed,
        ErrorCode::NotFound,
        ErrorCode::UnknownGeneration,
        ErrorCode::MethodNotAllowed,
        ErrorCode::GenerationExists,
        ErrorCode::MissingObjects,
        ErrorCode::NothingToRollBackTo,
        ErrorCode::UnsignedGeneration,
        ErrorCode::TrustNotInitialised,
        ErrorCode::NoOnlineKey,
        ErrorCode::VersionNotNewer,
        ErrorCode::GateNotMet,
        ErrorCode::UserExists,
        ErrorCode::GroupExists,
        ErrorCode::BadSelector,
        ErrorCode::BadReport,
        ErrorCode::SessionExpired,
        ErrorCode::BadEnrollToken,
        ErrorCode::UnknownEndpoint,
        ErrorCode::EndpointRevoked,
        ErrorCode::TooManyEvents,
        ErrorCode::RolloutActive,
        ErrorCode::RolloutState,
        ErrorCode::Withdrawn,
        ErrorCode::BadPlan,
        ErrorCode::BodyTooLarge,
        ErrorCode::TooManyDigests,
        ErrorCode::BadContentType,
        ErrorCode::Internal,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The machine code.
    pub error: ErrorCode,
    /// What went wrong, for people.
    #[serde(default)]
    pub message: String,
    /// With `missing_objects`: how many objects the server lacks in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_count: Option<u64>,
    /// With `missing_objects`: the first of them (up to the server's listing cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<Digest>>,
    /// With `gate_not_met`: the channel, the generation and what it lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateRefusal>,
}

impl ErrorBody {
    /// A body with a code and message only.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error, message: message.into(), missing_count: None, missing: None, gate: None }
    }
}
