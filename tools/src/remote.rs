//! The HTTP client side of imaged's API, as `imgctl` uses it: every request has a deadline,
//! every body sent and read is a type of the `api` crate, and a failure is a `RemoteError`
//! callers branch on by variant and error code, never by text.

use std::time::Duration;

use api::channels::{Channel, History, Promote, Rollback, SetChannel};
use api::gate::{Approval, ChannelPolicy, Evidence, GateReport, Recorded, SetPolicy};
use api::generations::{Generation, Kept};
use api::objects::{DigestList, Missing, Uploaded};
use api::tuf::{NewKey, RoleUploaded, TufStatus};
use api::{ChannelName, ErrorBody, ErrorCode};
use format::Digest;
use serde::de::DeserializeOwned;

pub mod fleet;
pub mod rollouts;

/// How much of an answer that is not the server's JSON an error quotes.
const QUOTED_BYTES: usize = 200;

/// A request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error status and its JSON error body.
    #[error("{url}: {status} {code}: {}", body.message)]
    Http {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's error code (`missing_objects`, `bad_token`, …).
        code: ErrorCode,
        /// The whole error body (with `missing_objects`, the missing list).
        body: ErrorBody,
    },
    /// The server, or a proxy in front of it, refused the request body as too large (HTTP
    /// 413, whether the server's `body_too_large` or a proxy's own page).
    #[error(
        "{url}: the server or a proxy in front of it refused a request body of {bytes} bytes as too large (HTTP 413: {said}); \
         raise the proxy's body limit above that (nginx: client_max_body_size) or the server's max_object_bytes"
    )]
    TooLarge {
        /// The request URL.
        url: String,
        /// Bytes of the refused body.
        bytes: u64,
        /// What the answer said: the server's message, or the start of the proxy's page.
        said: String,
    },
    /// An answer that is not the server's JSON: an error page of a proxy, or a body that does
    /// not parse as the route's answer.
    #[error("{url}: HTTP {status}, not an answer of imaged: {quoted:?}")]
    NotServerJson {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        quoted: String,
    },
    /// No usable answer: refused, timed out, cut off.
    #[error("{url}: {source}")]
    Transport {
        /// The request URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
}

impl RemoteError {
    /// The HTTP status of an answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Http { status, .. } | RemoteError::NotServerJson { status, .. } => Some(*status),
            RemoteError::TooLarge { .. } => Some(413),
            RemoteError::Transport { .. } => None,
        }
    }

    /// The server's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RemoteError::Http { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BYTES)]);
    text.trim().to_string()
}

/// A server and the token to use with it.
pub struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::blocking::Client,
    /// Where the root imgctl trusts for each server is kept (`None`: trust on first use,
    /// nothing kept).
    root_pins: Option<std::path::PathBuf>,
}

/// A request body and its size, for the error when it is refused as too large.
enum Body {
    None,
    Json(Vec<u8>),
    Bytes(Vec<u8>),
}

impl Body {
    fn json(value: &impl serde::Serialize) -> Body {
        Body::Json(serde_json::to_vec(value).expect("api types serialise"))
    }

    fn len(&self) -> u64 {
        match self {
            Body::None => 0,
            Body::Json(b) | Body::Bytes(b) => b.len() as u64,
        }
    }
}

impl Remote {
    /// A client for `url` (e.g. `http://127.0.0.1:4640`).
    pub fn new(url: &str, token: Option<String>) -> Result<Remote, RemoteError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|source| RemoteError::Transport { url: url.to_string(), source })?;
        Ok(Remote { base: url.trim_end_matches('/').to_string(), token, client, root_pins: None })
    }

    /// Keeps the root imgctl trusts for this server under `dir` (see `root_pin`).
    pub fn with_root_pins(mut self, dir: std::path::PathBuf) -> Remote {
        self.root_pins = Some(dir);
        self
    }

    /// The file holding the root imgctl trusts for this server: `DIR/HOST_PORT_PATH.root.json`
    /// (every byte of the URL after the scheme outside `[A-Za-z0-9.-]` made `_`).
    pub fn root_pin(&self) -> Option<std::path::PathBuf> {
        let name: String = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, rest)| rest)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        self.root_pins.as_ref().map(|d| d.join(format!("{name}.root.json")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; the raw answer if it succeeded, else the error it carries.
    fn send_raw(&self, method: reqwest::Method, url: &str, body: Body) -> Result<(u16, Vec<u8>), RemoteError> {
        let bytes = body.len();
        let mut req = self.client.request(method, url);
        req = match body {
            Body::None => req,
            Body::Json(b) => req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b),
            Body::Bytes(b) => req.body(b),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let transport = |source| RemoteError::Transport { url: url.to_string(), source };
        let resp = req.send().map_err(transport)?;
        let status = resp.status().as_u16();
        let answer = resp.bytes().map_err(transport)?.to_vec();
        if (200..300).contains(&status) {
            return Ok((status, answer));
        }
        Err(error_of(url, status, bytes, &answer))
    }

    /// Sends a request and reads its answer as `T`.
    fn send<T: DeserializeOwned>(&self, method: reqwest::Method, url: &str, body: Body) -> Result<T, RemoteError> {
        let (status, answer) = self.send_raw(method, url, body)?;
        serde_json::from_slice(&answer).map_err(|_| RemoteError::NotServerJson { url: url.to_string(), status, quoted: quote(&answer) })
    }

    /// Which of `digests` the server lacks.
    pub fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, RemoteError> {
        let url = self.url("/v1/objects/missing");
        let m: Missing = self.send(reqwest::Method::POST, &url, Body::json(&DigestList { digests: digests.to_vec() }))?;
        Ok(m.missing)
    }

    /// Uploads one framed object.
    pub fn put_object(&self, digest: &Digest, framed: Vec<u8>) -> Result<(), RemoteError> {
        let url = self.url(&format!("/v1/objects/{digest}"));
        self.send_raw(reqwest::Method::PUT, &url, Body::Bytes(framed)).map(|_| ())
    }

    /// Uploads many framed objects in one request: records of digest, u32 LE length, bytes.
    pub fn upload(&self, records: Vec<u8>) -> Result<Uploaded, RemoteError> {
        let url = self.url("/v1/objects/upload");
        self.send(reqwest::Method::POST, &url, Body::Bytes(records))
    }

    /// Marks (or unmarks) a generation `IMAGE@N` as kept by the server's garbage collection.
    pub fn keep(&self, image: &format::ImageName, number: u64, keep: bool) -> Result<Kept, RemoteError> {
        let url = self.url(&format!("/v1/generations/{image}/{number}/keep"));
        self.send(if keep { reqwest::Method::PUT } else { reqwest::Method::DELETE }, &url, Body::None)
    }

    /// Publishes a generation from its manifest bytes.
    pub fn publish(&self, manifest: Vec<u8>) -> Result<Generation, RemoteError> {
        let url = self.url("/v1/generations");
        self.send(reqwest::Method::POST, &url, Body::Bytes(manifest))
    }

    /// Points `channel` at `generation` (`IMAGE@N`, `IMAGE@latest` or a manifest digest);
    /// `reason` goes to the audit log.
    pub fn channel_set(&self, channel: &ChannelName, generation: &str, reason: Option<&str>) -> Result<Channel, RemoteError> {
        let url = self.url(&format!("/v1/channels/{channel}"));
        let body = SetChannel { generation: generation.to_string(), reason: reason.map(String::from) };
        self.send(reqwest::Method::PUT, &url, Body::json(&body))
    }

    /// The channel's current version.
    pub fn channel_get(&self, channel: &ChannelName) -> Result<Channel, RemoteError> {
        let url = self.url(&format!("/v1/channels/{channel}"));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// Points `to` at `from`'s generation; `reason` goes to the audit log.
    pub fn promote(&self, from: &ChannelName, to: &ChannelName, reason: Option<&str>) -> Result<Channel, RemoteError> {
        let url = self.url("/v1/promote");
        let body = Promote { from: from.clone(), to: to.clone(), reason: reason.map(String::from) };
        self.send(reqwest::Method::POST, &url, Body::json(&body))
    }

    /// A new version of `channel` naming `to`, or its previous generation; `reason` goes to
    /// the audit log.
    pub fn rollback(&self, channel: &ChannelName, to: Option<&str>, reason: Option<&str>) -> Result<Channel, RemoteError> {
        let url = self.url("/v1/rollback");
        let body = Rollback { channel: channel.clone(), to: to.map(String::from), reason: reason.map(String::from) };
        self.send(reqwest::Method::POST, &url, Body::json(&body))
    }

    /// Every version of `channel`.
    pub fn history(&self, channel: &ChannelName) -> Result<History, RemoteError> {
        let url = self.url(&format!("/v1/history/{channel}"));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// The published generation `image@number`.
    pub fn generation(&self, image: &format::ImageName, number: u64) -> Result<Generation, RemoteError> {
        let url = self.url(&format!("/v1/generations/{image}/{number}"));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// The audit log (`GET /v1/audit`), the entries `query` selects (the default: all).
    pub fn audit(&self, query: &api::audit::AuditQuery) -> Result<api::audit::AuditLog, RemoteError> {
        let pairs = [("since", query.since.map(|t| t.to_string())), ("actor", query.actor.clone()), ("limit", query.limit.map(|n| n.to_string()))];
        let pairs: Vec<(&str, String)> = pairs.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        self.send(reqwest::Method::GET, &format!("{}{}", self.url("/v1/audit"), self::query(&pairs)), Body::None)
    }

    /// The published generations that carry a package or a path (`GET /v1/affected`).
    pub fn affected(&self, query: &api::affected::AffectedQuery) -> Result<api::affected::Affected, RemoteError> {
        let pairs = [("package", query.package.clone()), ("source", query.source.clone()), ("path", query.path.clone()), ("digest", query.digest.map(|d| d.to_hex()))];
        let pairs: Vec<(&str, String)> = pairs.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let url = format!("{}{}", self.url("/v1/affected"), self::query(&pairs));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// Sets `channel`'s promotion gate policy.
    pub fn put_policy(&self, channel: &ChannelName, policy: &SetPolicy) -> Result<ChannelPolicy, RemoteError> {
        let url = self.url(&format!("/v1/policies/{channel}"));
        self.send(reqwest::Method::PUT, &url, Body::json(policy))
    }

    /// `channel`'s promotion gate policy.
    pub fn policy(&self, channel: &ChannelName) -> Result<ChannelPolicy, RemoteError> {
        let url = self.url(&format!("/v1/policies/{channel}"));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// Records signed test evidence about `image@number`.
    pub fn post_evidence(&self, image: &format::ImageName, number: u64, evidence: &Evidence) -> Result<Recorded, RemoteError> {
        let url = self.url(&format!("/v1/generations/{image}/{number}/evidence"));
        self.send(reqwest::Method::POST, &url, Body::json(evidence))
    }

    /// Records a signed approval of `image@number`.
    pub fn post_approval(&self, image: &format::ImageName, number: u64, approval: &Approval) -> Result<Recorded, RemoteError> {
        let url = self.url(&format!("/v1/generations/{image}/{number}/approvals"));
        self.send(reqwest::Method::POST, &url, Body::json(approval))
    }

    /// Adds a user; the answer carries its token, shown this once.
    pub fn add_user(&self, user: &api::users::AddUser) -> Result<api::users::NewUser, RemoteError> {
        self.send(reqwest::Method::POST, &self.url("/v1/users"), Body::json(user))
    }

    /// Every user of the server.
    pub fn users(&self) -> Result<api::users::Users, RemoteError> {
        self.send(reqwest::Method::GET, &self.url("/v1/users"), Body::None)
    }

    /// Revokes a user's token.
    pub fn revoke_user(&self, name: &api::users::UserName) -> Result<api::users::User, RemoteError> {
        self.send(reqwest::Method::DELETE, &self.url(&format!("/v1/users/{name}")), Body::None)
    }

    /// The evidence, approvals and every channel's verdict on `image@number`.
    pub fn gate_report(&self, image: &format::ImageName, number: u64) -> Result<GateReport, RemoteError> {
        let url = self.url(&format!("/v1/generations/{image}/{number}/gate"));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// The signed metadata's state and the server's online keys (`GET /v1/tuf`).
    pub fn tuf_status(&self) -> Result<TufStatus, RemoteError> {
        let url = self.url("/v1/tuf");
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// A metadata file as the server publishes it (`ROLE.json`, `N.ROLE.json`; the role
    /// name encoded); `None` if it has none.
    pub fn tuf_file(&self, name: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let url = self.url(&format!("/tuf/{name}"));
        match self.send_raw(reqwest::Method::GET, &url, Body::None) {
            Ok((_, bytes)) => Ok(Some(bytes)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads a root signed offline.
    pub fn put_root(&self, bytes: Vec<u8>) -> Result<RoleUploaded, RemoteError> {
        let url = self.url("/v1/tuf/root");
        self.send(reqwest::Method::PUT, &url, Body::Bytes(bytes))
    }

    /// Uploads `targets` or an image family's role, signed offline.
    pub fn put_role(&self, role: &str, bytes: Vec<u8>) -> Result<RoleUploaded, RemoteError> {
        let url = self.url(&format!("/v1/tuf/roles/{role}"));
        self.send(reqwest::Method::PUT, &url, Body::Bytes(bytes))
    }

    /// Has the server make a new key for online role `role`.
    pub fn add_online_key(&self, role: &str) -> Result<NewKey, RemoteError> {
        let url = self.url(&format!("/v1/tuf/keys/{role}"));
        self.send(reqwest::Method::POST, &url, Body::None)
    }
}

/// The error an answer with a failure `status` carries: the server's JSON error body, a
/// refusal of the body as too large, or something that is not the server's.
pub(crate) fn error_of(url: &str, status: u16, sent: u64, answer: &[u8]) -> RemoteError {
    let url = url.to_string();
    match serde_json::from_slice::<ErrorBody>(answer) {
        Ok(body) if status == 413 && body.error == ErrorCode::BodyTooLarge => {
            RemoteError::TooLarge { url, bytes: sent, said: body.message }
        }
        Ok(body) => RemoteError::Http { url, status, code: body.error, body },
        Err(_) if status == 413 => RemoteError::TooLarge { url, bytes: sent, said: quote(answer) },
        Err(_) => RemoteError::NotServerJson { url, status, quoted: quote(answer) },
    }
}

/// `value` percent-encoded for a query string (RFC 3986 unreserved characters kept).
/// `?k=v&k=v`, values percent-encoded; empty for no pairs.
fn query(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        out.extend(percent_encode(value));
    }
    out
}

fn percent_encode(value: &str) -> impl Iterator<Item = char> + '_ {
    value.bytes().flat_map(|b| {
        let keep = b.is_ascii_alphanumeric() || b"-._~/".contains(&b);
        let text: Vec<char> = if keep { vec![b as char] } else { format!("%{b:02X}").chars().collect() };
        text.into_iter()
    })
}
