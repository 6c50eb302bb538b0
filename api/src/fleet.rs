//! The fleet: endpoints that enroll with their own key, check in for their desired state,
//! report what they run, and the groups, namespaces and compliance answers built on that.
//! Routes under `/v1/fleet/` (docs/fleet.md has the model, docs/api.md every route).

use std::collections::BTreeMap;

/// The text an endpoint signs to prove it holds its key at enrollment:
/// `imaged-enroll-v1\n{enroll token}\n{public key hex}`.
pub fn enroll_message(token: &str, public_key: &str) -> Vec<u8> {
    format!("imaged-enroll-v1\n{token}\n{public_key}").into_bytes()
}

/// The text an endpoint signs to open a session: `imaged-session-v1\n{endpoint}\n{time}`.
pub fn session_message(endpoint: &EndpointId, time: i64) -> Vec<u8> {
    format!("imaged-session-v1\n{endpoint}\n{time}").into_bytes()
}

/// Most events in one report batch.
pub const MAX_EVENTS: usize = 1000;
/// Most bytes of any one string an endpoint sends (a fact, a label, an error).
pub const MAX_TEXT: usize = 1024;
/// Most labels on one endpoint.
pub const MAX_LABELS: usize = 64;
/// The header a check-in carries the generation of each mount in:
/// `MOUNTPATH=IMAGE@N` pairs separated by spaces (`-` for a mount not up).
pub const ACTUAL_HEADER: &str = "x-imaged-actual";

/// An endpoint's id: `ep-` and 16 hex digits of the BLAKE3 of its public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct EndpointId(String);

/// Text that is not a valid identifier of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId {
    /// Which kind.
    pub what: &'static str,
    /// The text.
    pub text: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl std::fmt::Display for BadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.text, self.rule)
    }
}

impl std::error::Error for BadId {}

impl EndpointId {
    /// The id of the endpoint holding the ed25519 public key `key`.
    pub fn of_key(key: &[u8; 32]) -> EndpointId {
        let d = format::Digest::of(key).to_hex();
        EndpointId(format!("ep-{}", &d[..16]))
    }

    /// Validates and wraps an id.
    pub fn new(s: &str) -> Result<EndpointId, BadId> {
        let ok = s.len() == 19 && s.starts_with("ep-") && s[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(EndpointId(s.to_string()))
        } else {
            Err(BadId { what: "endpoint id", text: s.chars().take(64).collect(), rule: "`ep-` and 16 lowercase hex digits" })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group's name: 1-64 of `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct GroupName(String);

impl GroupName {
    /// Validates and wraps a name.
    pub fn new(s: &str) -> Result<GroupName, BadId> {
        if plain_name(s) {
            Ok(GroupName(s.to_string()))
        } else {
            Err(BadId { what: "group name", text: s.chars().take(64).collect(), rule: "1-64 of [a-z0-9._-], starting with a letter or digit" })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-')
}

macro_rules! text_id {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = BadId;
            fn from_str(s: &str) -> Result<$t, BadId> {
                $t::new(s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = String::deserialize(d)?;
                $t::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
text_id!(EndpointId);
text_id!(GroupName);

/// A duration as people write one: `90s`, `30m`, `4h`, `1d` or a number of seconds; None if
/// it is not one or is zero.
pub fn parse_duration(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale).filter(|s| *s > 0)
}

/// Whether `s` is text an endpoint may send: at most `MAX_TEXT` bytes, no control characters
/// (a newline or a tab is allowed in long texts such as errors when `multiline`).
pub fn clean_text(s: &str, multiline: bool) -> bool {
    s.len() <= MAX_TEXT && s.chars().all(|c| !c.is_control() || (multiline && (c == '\n' || c == '\t')))
}

/// Whether `k` is a label key: 1-63 of `[a-zA-Z0-9._/-]`. Values: at most 63 of the same and
/// may be empty.
pub fn label_key_ok(k: &str) -> bool {
    !k.is_empty() && label_value_ok(k)
}

/// Whether `v` is a label value (see `label_key_ok`).
pub fn label_value_ok(v: &str) -> bool {
    v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
}

/// Labels: key to value.
pub type Labels = BTreeMap<String, String>;

/// What an endpoint is: reported at enrollment and whenever it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Host name.
    pub hostname: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_release: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// CPUs online.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Size of the cache's partition in bytes.
    pub cache_disk_bytes: u64,
    /// Free bytes on the cache's partition.
    pub cache_free_bytes: u64,
    /// Addresses of the endpoint's interfaces, loopback left out.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl Facts {
    /// The first field that is not clean text, if any.
    pub fn bad_field(&self) -> Option<&'static str> {
        let texts = [
            ("hostname", &self.hostname),
            ("machine_id", &self.machine_id),
            ("arch", &self.arch),
            ("os_release", &self.os_release),
            ("kernel", &self.kernel),
        ];
        if let Some((name, _)) = texts.iter().find(|(_, v)| !clean_text(v, false)) {
            return Some(name);
        }
        if self.addresses.len() > 64 || self.addresses.iter().any(|a| !clean_text(a, false)) {
            return Some("addresses");
        }
        None
    }
}

/// Body of `POST /v1/fleet/enroll-tokens` (admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollToken {
    /// How many endpoints may enroll with it (unlimited if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Seconds it stays valid (forever if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_seconds: Option<u64>,
    /// Labels every endpoint enrolled with it gets.
    #[serde(default)]
    pub labels: Labels,
}

/// An enrollment token as the server lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollToken {
    /// Short id: the first 12 hex digits of the token's hash.
    pub id: String,
    /// Uses left (unlimited if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// Seconds since the epoch after which it is refused (never if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Labels it gives.
    pub labels: Labels,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created: i64,
}

/// Answer of `POST /v1/fleet/enroll-tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CreatedEnrollToken {
    /// The listing.
    pub info: EnrollToken,
    /// The secret to give `imgfs enroll --enroll-token`.
    pub token: String,
}

/// Answer of `GET /v1/fleet/enroll-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollTokens {
    /// Every token, oldest first.
    pub tokens: Vec<EnrollToken>,
}

/// Body of `POST /v1/fleet/enroll` (no bearer token: the enrollment token is the credential).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    /// The enrollment token.
    pub token: String,
    /// The endpoint's ed25519 public key, hex.
    pub public_key: String,
    /// Signature by that key of `enroll_message(token, public_key)`, hex.
    pub signature: String,
    /// The endpoint's facts.
    pub facts: Facts,
    /// Labels from the endpoint's configuration.
    #[serde(default)]
    pub labels: Labels,
}

/// Answer of `POST /v1/fleet/enroll`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enrolled {
    /// The endpoint's id (from its key: enrolling the same key again answers the same id).
    pub endpoint: EndpointId,
}

/// Body of `POST /v1/fleet/session`: proof that the caller holds the endpoint's key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// Who.
    pub endpoint: EndpointId,
    /// Seconds since the epoch, within five minutes of the server's clock.
    pub time: i64,
    /// Signature of `session_message(endpoint, time)`, hex.
    pub signature: String,
}

/// Answer of `POST /v1/fleet/session`: a bearer token for the endpoint's other requests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// `Authorization: Bearer` value.
    pub token: String,
    /// Seconds since the epoch when it stops working (the endpoint opens a new one before).
    pub expires: i64,
}

/// Where a mount's generation comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// Follow a channel.
    Channel(format::ChannelName),
    /// Stay on one generation, `IMAGE@N`.
    Pinned(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Channel(c) => write!(f, "channel {c}"),
            Source::Pinned(g) => write!(f, "pinned {g}"),
        }
    }
}

/// One mount of a namespace. (Unknown fields cannot be refused here: serde does not combine
/// that with the flattened source.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceMount {
    /// Absolute mount path (the agent may put its `mount_prefix` in front).
    pub path: String,
    /// Channel followed, or generation pinned.
    #[serde(flatten)]
    pub source: Source,
    /// Share of the cache partition this mount's cache may use, in percent (default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_share: Option<u8>,
    /// FUSE passthrough of fully cached files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passthrough: bool,
    /// The health probe run after a switch (else the agent's own, if its config has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Probe>,
    /// A writable layer kept on the endpoint's disk, with its drift policy (else the mount
    /// is read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable: Option<WritableMount>,
}

/// A mount's writable layer, as a namespace asks for it (`[mount.writable]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritableMount {
    /// Protected paths, globs from the mount's root (`etc/ssh/**`): a local change of one is
    /// undone and reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    /// How often the whole layer is checked against them (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_interval_seconds: Option<u64>,
}

/// A health probe: a command (exit 0 is healthy) or an HTTP URL (2xx is healthy), with a
/// deadline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Run with `/bin/sh -c`; the mount's local path in `IMGFS_MOUNT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Fetched with GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds before the probe counts as failed.
    #[serde(default = "probe_timeout")]
    pub timeout_seconds: u64,
}

fn probe_timeout() -> u64 {
    30
}

/// A maintenance window: when endpoints of a group may switch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Cron expression of the window's starts (`0 2 * * *`: 5 fields, minute first).
    pub cron: String,
    /// Seconds each window lasts.
    pub duration_seconds: u64,
    /// IANA time zone of the expression (default UTC).
    #[serde(default = "utc")]
    pub timezone: String,
    /// Most seconds a user may defer a switch (`imgfs defer`); 0 forbids it.
    #[serde(default)]
    pub max_defer_seconds: u64,
}

fn utc() -> String {
    "UTC".into()
}

/// A namespace: the mounts a group's endpoints run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Mounts, each at its own path.
    #[serde(default)]
    pub mounts: Vec<NamespaceMount>,
}

impl Namespace {
    /// Why the namespace is not valid: a path that is not absolute or clean, two mounts on one
    /// path, a share out of 1..=100, a pinned generation that is not `IMAGE@N`, a writable
    /// layer's interval of 0 or a protected pattern that is empty or has control characters.
    pub fn problem(&self) -> Option<String> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.mounts {
            let clean = m.path.starts_with('/')
                && m.path.len() > 1
                && m.path.len() <= 255
                && !m.path.ends_with('/')
                && m.path.split('/').skip(1).all(|c| !c.is_empty() && c != "." && c != "..")
                && m.path.bytes().all(|b| b.is_ascii_graphic() && b != b'=');
            if !clean {
                return Some(format!("mount path {:?} must be absolute, without `.`, `..`, `=`, spaces or a trailing /", m.path));
            }
            if !seen.insert(&m.path) {
                return Some(format!("two mounts on {}", m.path));
            }
            if m.cache_share.is_some_and(|s| s == 0 || s > 100) {
                return Some(format!("cache_share of {} must be 1-100 (percent)", m.path));
            }
            if let Source::Pinned(g) = &m.source {
                if parse_generation(g).is_none() {
                    return Some(format!("pinned generation {g:?} of {} must be IMAGE@N", m.path));
                }
            }
            if let Some(w) = &m.writable {
                if w.drift_interval_seconds == Some(0) {
                    return Some(format!("drift_interval_seconds of {} must be at least 1", m.path));
                }
                if w.protect.len() > 1000 {
                    return Some(format!("{} protects more than 1000 patterns", m.path));
                }
                if let Some(p) = w.protect.iter().find(|p| p.trim().is_empty() || p.len() > 4096 || p.chars().any(char::is_control)) {
                    return Some(format!("protected pattern {p:?} of {} must be a glob without control characters", m.path));
                }
            }
        }
        None
    }
}

/// `IMAGE@N` split, if it is one.
pub fn parse_generation(s: &str) -> Option<(format::ImageName, u64)> {
    let (image, n) = s.rsplit_once('@')?;
    Some((format::ImageName::new(image).ok()?, n.parse().ok()?))
}

/// A group: static members and/or a label selector, a priority and a namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name.
    pub name: GroupName,
    /// Endpoints named one by one.
    #[serde(default)]
    pub members: Vec<EndpointId>,
    /// Label selector (`site=paris,role=kiosk`); endpoints matching it are members too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// On a mount path two groups of one endpoint both name, the higher priority wins (then
    /// the group name that sorts first).
    #[serde(default)]
    pub priority: i32,
    /// The mounts its endpoints run.
    #[serde(default)]
    pub namespace: Namespace,
    /// When its endpoints may switch (absent: any time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// An operator's pin, `IMAGE@N`: its endpoints' mounts of that image stay on it, whatever
    /// channels and rollouts say (an endpoint's own pin comes first, then the pins of its
    /// groups by priority). Set and removed only through `PUT`/`DELETE
    /// /v1/fleet/groups/{name}/pin`: creating or replacing a group keeps the pin it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// Answer of `GET /v1/fleet/groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Groups {
    /// Every group with how many endpoints it has now.
    pub groups: Vec<GroupSummary>,
}

/// A group and its current size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupSummary {
    /// The group.
    pub group: Group,
    /// Endpoints in it now (static members and those whose labels match), revoked left out.
    pub endpoints: Vec<EndpointId>,
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `k=v`.
    Equals(String, String),
    /// `k!=v` (also true when `k` is absent).
    NotEquals(String, String),
    /// `k`: present.
    Has(String),
    /// `!k`: absent.
    HasNot(String),
}

/// A parsed label selector: every term must hold. `site=paris,role=kiosk`, `tier!=test`,
/// `gpu`, `!legacy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(pub Vec<Term>);

/// A selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSelector {
    /// The selector.
    pub text: String,
    /// Why.
    pub why: String,
}

impl std::fmt::Display for BadSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "label selector {:?} does not parse: {}", self.text, self.why)
    }
}

impl std::error::Error for BadSelector {}

impl Selector {
    /// Parses comma-separated terms.
    pub fn parse(text: &str) -> Result<Selector, BadSelector> {
        let bad = |why: String| BadSelector { text: text.chars().take(200).collect(), why };
        if text.trim().is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut terms = Vec::new();
        for t in text.split(',') {
            let t = t.trim();
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = t.strip_prefix('!') {
                Term::HasNot(k.trim().into())
            } else {
                Term::Has(t.into())
            };
            let (k, v) = match &term {
                Term::Equals(k, v) | Term::NotEquals(k, v) => (k, Some(v)),
                Term::Has(k) | Term::HasNot(k) => (k, None),
            };
            if !label_key_ok(k) {
                return Err(bad(format!("{t:?}: a key is 1-63 of [a-zA-Z0-9._/-]")));
            }
            if v.is_some_and(|v| !label_value_ok(v) || v.contains('=')) {
                return Err(bad(format!("{t:?}: a value is at most 63 of [a-zA-Z0-9._/-]")));
            }
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|t| match t {
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::NotEquals(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
            Term::HasNot(k) => !labels.contains_key(k),
        })
    }
}

/// One mount of an endpoint's desired state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DesiredMount {
    /// The namespace's mount.
    #[serde(flatten)]
    pub mount: NamespaceMount,
    /// The group it comes from.
    pub group: GroupName,
    /// For a channel: the generation it names now, `IMAGE@N` (a hint: the endpoint verifies
    /// the channel's signed metadata itself). For a pin: the pinned generation. During a
    /// rollout that reached this endpoint: the rollout's generation, which the endpoint
    /// verifies by its family's signature (as a pinned mount does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// The rollout that set `generation`, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollouts::RolloutId>,
    /// Seconds to stay healthy after a switch before reporting `healthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
    /// Switch now, whatever the window or a deferral say (an emergency plan, a withdrawal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_windows: bool,
    /// The group's maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The generation's activation policy from its change record (`live`, `reboot`,
    /// `restart:UNIT,UNIT`); absent means live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
}

/// A mount path two of an endpoint's groups both name: who won.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// The path.
    pub path: String,
    /// The group whose mount the endpoint runs.
    pub winner: GroupName,
    /// The groups whose mount on that path was left out.
    pub losers: Vec<GroupName>,
}

/// Answer of `GET /v1/fleet/desired`: what the endpoint should run. Sent with an `ETag`; the
/// same `If-None-Match` gets 304 while nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Desired {
    /// Who.
    pub endpoint: EndpointId,
    /// Its groups now.
    pub groups: Vec<GroupName>,
    /// Its mounts: the union of its groups' namespaces.
    pub mounts: Vec<DesiredMount>,
    /// Paths several groups name.
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    /// Seconds between check-ins (the agent adds up to 10% jitter).
    pub interval_seconds: u64,
    /// Withdrawn generations, `IMAGE@N`: a mount running one goes back to its previous
    /// generation at once and never takes it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<String>,
    /// The endpoint's labels now (its own, its enrollment token's and the operators'), which
    /// its command health probes see as `IMGFS_LABELS`.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// What one mount runs, as a check-in or a report says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountState {
    /// Mount path (as in the namespace).
    pub path: String,
    /// Generation served, `IMAGE@N` (absent while the mount is not up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The one before, the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// Parses the `x-imaged-actual` header: `PATH=IMAGE@N` (or `PATH=-`) pairs separated by
/// spaces. None if it does not parse.
pub fn parse_actual(header: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for pair in header.split_ascii_whitespace() {
        let (path, g) = pair.split_once('=')?;
        if !path.starts_with('/') || path.len() > 255 {
            return None;
        }
        let g = match g {
            "-" => None,
            g => {
                parse_generation(g)?;
                Some(g.to_string())
            }
        };
        out.push((path.to_string(), g));
    }
    (out.len() <= 64).then_some(out)
}

/// Formats the `x-imaged-actual` header.
pub fn format_actual(mounts: &[(String, Option<String>)]) -> String {
    let parts: Vec<String> = mounts.iter().map(|(p, g)| format!("{p}={}", g.as_deref().unwrap_or("-"))).collect();
    parts.join(" ")
}

/// The cache of an endpoint (all its mounts' caches together).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheState {
    /// Bytes used.
    pub used_bytes: u64,
    /// Free bytes on the partition.
    pub free_bytes: u64,
    /// Generations pinned, `IMAGE@N`.
    #[serde(default)]
    pub pins: Vec<String>,
    /// Generations it holds (current, previous, pinned and prefetched), `IMAGE@N`.
    #[serde(default)]
    pub generations: Vec<String>,
}

/// What happened on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// It enrolled.
    Enrolled,
    /// Its facts changed (or it started).
    Facts {
        /// The facts now.
        facts: Facts,
    },
    /// A mount came up.
    Mounted {
        /// Mount path.
        path: String,
        /// Generation served.
        generation: String,
    },
    /// A mount went away (no longer in the namespace).
    Unmounted {
        /// Mount path.
        path: String,
    },
    /// A mount moved to another generation.
    Switched {
        /// Mount path.
        path: String,
        /// Generation before.
        from: String,
        /// Generation now.
        to: String,
        /// Milliseconds the switch took.
        millis: u64,
    },
    /// A mount went back to its previous generation.
    RolledBack {
        /// Mount path.
        path: String,
        /// Generation left.
        from: String,
        /// Generation now.
        to: String,
        /// Why.
        why: String,
    },
    /// A mount could not mount or switch: the error.
    Failed {
        /// Mount path.
        path: String,
        /// The generation it tried to reach, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<String>,
        /// The error.
        error: String,
    },
    /// A mount's signed metadata could not be refreshed (it runs on what it had).
    MetadataStale {
        /// Mount path.
        path: String,
        /// Why.
        error: String,
    },
    /// Objects could not be fetched.
    FetchFailed {
        /// Mount path.
        path: String,
        /// Why.
        error: String,
    },
    /// The cache now.
    Cache {
        /// Its state.
        cache: CacheState,
    },
    /// A mount stayed healthy for the soak time after switching to `generation`.
    Healthy {
        /// Mount path.
        path: String,
        /// Generation.
        generation: String,
    },
    /// A mount was offered `generation` and waits before switching.
    Waiting {
        /// Mount path.
        path: String,
        /// Generation offered.
        generation: String,
        /// `window` (until its next opening), `deferred` (until a user's deferral ends),
        /// `prefetching`, `pending_reboot`.
        why: String,
        /// Until when, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
    },
    /// A mount fetched everything of an offered generation ahead of its switch.
    Prefetched {
        /// Mount path.
        path: String,
        /// Generation.
        generation: String,
        /// Bytes fetched.
        bytes: u64,
    },
    /// A mount's writable layer restored a protected path, kept a conflicting local edit at a
    /// switch, or dropped local changes on `imgfs reset` (a line of its `events.jsonl`).
    Drift {
        /// Mount path.
        path: String,
        /// The file, from the mount's root (escaped as in a trace).
        file: String,
        /// What happened.
        drift: crate::control::DriftKind,
        /// The generation served then.
        generation: String,
        /// The digest of the image's version, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<format::Digest>,
        /// The digest of the local version, if there was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local: Option<format::Digest>,
    },
}

impl EventKind {
    /// The event's name (`switched`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Enrolled => "enrolled",
            EventKind::Facts { .. } => "facts",
            EventKind::Mounted { .. } => "mounted",
            EventKind::Unmounted { .. } => "unmounted",
            EventKind::Switched { .. } => "switched",
            EventKind::RolledBack { .. } => "rolled_back",
            EventKind::Failed { .. } => "failed",
            EventKind::MetadataStale { .. } => "metadata_stale",
            EventKind::FetchFailed { .. } => "fetch_failed",
            EventKind::Cache { .. } => "cache",
            EventKind::Healthy { .. } => "healthy",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Prefetched { .. } => "prefetched",
            EventKind::Drift { .. } => "drift",
        }
    }

    /// The first text that is not clean, if any.
    pub fn problem(&self) -> Option<String> {
        let (texts, multi): (Vec<&str>, Vec<&str>) = match self {
            EventKind::Enrolled => (vec![], vec![]),
            EventKind::Facts { facts } => return facts.bad_field().map(|f| format!("fact {f} has control characters or is too long")),
            EventKind::Mounted { path, generation } => (vec![path, generation], vec![]),
            EventKind::Unmounted { path } => (vec![path], vec![]),
            EventKind::Switched { path, from, to, .. } => (vec![path, from, to], vec![]),
            EventKind::RolledBack { path, from, to, why } => (vec![path, from, to], vec![why]),
            EventKind::Failed { path, generation, error } => (vec![path, generation.as_deref().unwrap_or("")], vec![error]),
            EventKind::MetadataStale { path, error } | EventKind::FetchFailed { path, error } => (vec![path], vec![error]),
            EventKind::Healthy { path, generation } | EventKind::Prefetched { path, generation, .. } => (vec![path, generation], vec![]),
            EventKind::Drift { path, file, generation, .. } => (vec![path, file, generation], vec![]),
            EventKind::Waiting { path, generation, why, .. } => (vec![path, generation, why], vec![]),
            EventKind::Cache { cache } => {
                if cache.pins.len() + cache.generations.len() > 1000 {
                    return Some("a cache event lists more than 1000 generations".into());
                }
                (cache.pins.iter().chain(&cache.generations).map(String::as_str).collect(), vec![])
            }
        };
        if let Some(t) = texts.iter().find(|t| !clean_text(t, false)) {
            return Some(format!("{} event: {:?} has control characters or is too long", self.name(), t.chars().take(40).collect::<String>()));
        }
        if multi.iter().any(|t| !clean_text(t, true)) {
            return Some(format!("{} event: its text has control characters or is too long", self.name()));
        }
        None
    }
}

/// One event with the endpoint's sequence number (from 1, increasing; gaps allowed when the
/// endpoint's queue dropped events).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Sequence number.
    pub seq: u64,
    /// Seconds since the epoch, by the endpoint's clock.
    pub time: i64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Body of `POST /v1/fleet/reports`: events in increasing `seq`, and the mounts now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// Events, at most `MAX_EVENTS`.
    pub events: Vec<Event>,
    /// What each mount runs now.
    #[serde(default)]
    pub mounts: Vec<MountState>,
}

/// Answer of `POST /v1/fleet/reports`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportAck {
    /// The highest sequence number the server holds: everything up to it may be dropped from
    /// the endpoint's queue.
    pub acked: u64,
    /// Events stored by this batch.
    pub stored: u32,
    /// Events ignored as already stored.
    pub duplicates: u32,
}

/// Body of `PUT /v1/fleet/endpoints/{id}/labels` (operators' labels).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelChange {
    /// Labels to set.
    #[serde(default)]
    pub set: Labels,
    /// Label keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// An endpoint in a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointSummary {
    /// Id.
    pub id: EndpointId,
    /// Host name.
    pub hostname: String,
    /// All labels (the endpoint's, the enrollment token's, then the operators', which win).
    pub labels: Labels,
    /// Groups now.
    pub groups: Vec<GroupName>,
    /// Its mounts as last reported.
    pub mounts: Vec<MountState>,
    /// Last check-in or report, seconds since the epoch (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Not heard from for three check-in intervals.
    pub offline: bool,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

/// Answer of `GET /v1/fleet/endpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// Matching endpoints by id.
    pub endpoints: Vec<EndpointSummary>,
}

/// A mount's desired and actual state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountView {
    /// Path.
    pub path: String,
    /// What it should run (absent: no group names this path any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredMount>,
    /// What it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<MountState>,
}

/// Answer of `GET /v1/fleet/endpoints/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointDetail {
    /// The summary.
    pub summary: EndpointSummary,
    /// Facts.
    pub facts: Facts,
    /// Labels from the endpoint's configuration.
    pub own_labels: Labels,
    /// Labels operators set.
    pub operator_labels: Labels,
    /// Desired vs actual, per mount path.
    pub mounts: Vec<MountView>,
    /// Conflicts among its groups.
    pub conflicts: Vec<Conflict>,
    /// The cache as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheState>,
    /// When it enrolled.
    pub enrolled: i64,
    /// The last events, oldest first.
    pub events: Vec<Event>,
}

/// Why an endpoint is not on the target, from what it reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Enrolled but never checked in.
    NeverCheckedIn,
    /// Not heard from since.
    Offline {
        /// Last check-in or report.
        since: i64,
    },
    /// Its last try to reach the target failed.
    Failed {
        /// The error.
        error: String,
        /// When.
        time: i64,
    },
    /// It rolled back.
    RolledBack {
        /// Why.
        why: String,
        /// When.
        time: i64,
    },
    /// Its signed metadata could not be refreshed.
    MetadataStale {
        /// Why.
        error: String,
        /// When.
        time: i64,
    },
    /// A namespace pins its mount to another generation.
    Pinned {
        /// The pin.
        generation: String,
    },
    /// None of its groups gets the target.
    NotInGroup,
    /// It was offered the target and waits: for its window, a user's deferral, a prefetch,
    /// a reboot.
    Waiting {
        /// `window`, `deferred`, `prefetching`, `pending_reboot`.
        why: String,
        /// Until when, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
    },
    /// An operator holds it where it is.
    Held {
        /// Why.
        why: String,
    },
    /// The rollout to the target has not reached it yet.
    NotYetOffered,
    /// It was offered the target and has not reported reaching it yet.
    Pending {
        /// Its last check-in.
        since: i64,
    },
}

impl Reason {
    /// The reason's name (`offline`).
    pub fn name(&self) -> &'static str {
        match self {
            Reason::NeverCheckedIn => "never_checked_in",
            Reason::Offline { .. } => "offline",
            Reason::Failed { .. } => "failed",
            Reason::RolledBack { .. } => "rolled_back",
            Reason::MetadataStale { .. } => "metadata_stale",
            Reason::Pinned { .. } => "pinned",
            Reason::NotInGroup => "not_in_group",
            Reason::Waiting { .. } => "waiting",
            Reason::Held { .. } => "held",
            Reason::NotYetOffered => "not_yet_offered",
            Reason::Pending { .. } => "pending",
        }
    }
}

/// One endpoint not on the target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Straggler {
    /// Who.
    pub endpoint: EndpointId,
    /// Host name.
    pub hostname: String,
    /// What it runs, as last reported, `IMAGE@N` per mount path.
    pub running: Vec<MountState>,
    /// Why.
    #[serde(flatten)]
    pub reason: Reason,
}

/// Answer of `GET /v1/fleet/compliance?target=CHANNEL|IMAGE@N`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compliance {
    /// The target as asked.
    pub target: String,
    /// The generation compared against (`IMAGE@N`; for a channel, the one it names now).
    pub generation: String,
    /// Endpoints counted (enrolled, not revoked).
    pub total: u64,
    /// Endpoints a mount of which reports running the generation.
    pub on: u64,
    /// How many not on it, per reason.
    pub counts: BTreeMap<String, u64>,
    /// Each endpoint not on it.
    pub stragglers: Vec<Straggler>,
}

/// An endpoint that runs or holds a generation (for `GET /v1/affected` and gc).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// Who.
    pub endpoint: EndpointId,
    /// Host name.
    pub hostname: String,
    /// `running` (a mount's current), `previous` (its rollback target) or `cached`.
    pub how: String,
}
