//! The promotion gate's messages: signed test evidence and approvals of a generation
//! (`POST /v1/generations/{image}/{number}/evidence|approvals`), a channel's policy
//! (`GET|PUT /v1/policies/{channel}`) and a generation's gate report
//! (`GET /v1/generations/{image}/{number}/gate`).
//!
//! A statement is signed as the bytes of `signed_bytes()`: one `key value` line per field in a
//! fixed order, text fields JSON-quoted, so one statement has exactly one byte string and a
//! newline in a comment cannot forge a field.

use format::{ChannelName, Classification, Digest};

use crate::tuf::TufKey;

/// The first line of a signed test statement; the version of its layout.
pub const EVIDENCE_MAGIC: &str = "imaged-evidence-v1";
/// The first line of a signed approval statement.
pub const APPROVAL_MAGIC: &str = "imaged-approval-v1";
/// The longest test name.
pub const MAX_TEST_NAME: usize = 64;

/// A test's name (`boot`, `smoke.net`): 1-64 bytes of `[a-z0-9][a-z0-9._-]*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TestName(String);

/// A test name that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTestName(pub String);

impl std::fmt::Display for BadTestName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not a test name (1-{MAX_TEST_NAME} bytes of [a-z0-9][a-z0-9._-]*)", self.0)
    }
}

impl std::error::Error for BadTestName {}

impl TestName {
    /// Checks `s` against the rule.
    pub fn new(s: &str) -> Result<TestName, BadTestName> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TEST_NAME
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(TestName(s.to_string()))
        } else {
            Err(BadTestName(s.to_string()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TestName {
    type Error = BadTestName;
    fn try_from(s: String) -> Result<TestName, BadTestName> {
        TestName::new(&s)
    }
}

impl From<TestName> for String {
    fn from(t: TestName) -> String {
        t.0
    }
}

impl std::str::FromStr for TestName {
    type Err = BadTestName;
    fn from_str(s: &str) -> Result<TestName, BadTestName> {
        TestName::new(s)
    }
}

impl std::fmt::Display for TestName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a test run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command exited 0.
    Passed,
    /// The command exited with another status or was killed.
    Failed,
    /// The command ran past its timeout and was killed: a failure.
    TimedOut,
}

impl Outcome {
    /// `passed`, `failed`, `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
        }
    }

    /// Whether the test passed.
    pub fn passed(self) -> bool {
        self == Outcome::Passed
    }
}

/// What a tester signs about one run of a test on one generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvidenceStatement {
    /// The generation's manifest digest: the statement is about exactly these bytes.
    pub manifest: Digest,
    /// The test.
    pub test: TestName,
    /// How it ended.
    pub outcome: Outcome,
    /// Exit status; -N when killed by signal N.
    pub exit: i32,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
    /// The object holding its output (stdout and stderr, interleaved), uploaded before.
    pub log: Digest,
    /// The log's length in bytes.
    pub log_len: u64,
    /// When it ran, seconds since the epoch.
    pub time: i64,
}

impl EvidenceStatement {
    /// The bytes the tester signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "{EVIDENCE_MAGIC}\nmanifest {}\ntest {}\noutcome {}\nexit {}\nduration_ms {}\nlog {}\nlog_len {}\ntime {}\n",
            self.manifest,
            self.test,
            self.outcome.as_str(),
            self.exit,
            self.duration_ms,
            self.log,
            self.log_len,
            self.time
        )
        .into_bytes()
    }
}

/// What an approver signs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalStatement {
    /// The generation's manifest digest.
    pub manifest: Digest,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// When, seconds since the epoch.
    pub time: i64,
}

impl ApprovalStatement {
    /// The bytes the approver signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let comment = serde_json::to_string(&self.comment).expect("a string serialises");
        format!("{APPROVAL_MAGIC}\nmanifest {}\napprove\ncomment {comment}\ntime {}\n", self.manifest, self.time).into_bytes()
    }
}

/// A statement, the key that signed it and the signature (hex ed25519 over `signed_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signed<S> {
    /// What is signed.
    pub statement: S,
    /// The signer's public key.
    pub key: TufKey,
    /// The signature, hex.
    pub signature: String,
}

/// Body of `POST .../evidence`, and how the server stores and lists it.
pub type Evidence = Signed<EvidenceStatement>;
/// Body of `POST .../approvals`, and how the server stores and lists it.
pub type Approval = Signed<ApprovalStatement>;

/// Answer of a stored evidence or approval: the generation, the signer's key id, and when
/// the server received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// `IMAGE@N`.
    pub generation: String,
    /// The signer's TUF key id.
    pub keyid: String,
    /// When the server recorded it, seconds since the epoch.
    pub received: i64,
}

/// What one class of generation needs on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    /// Tests whose newest run by a listed tester must have passed.
    pub tests: Vec<TestName>,
    /// Distinct listed approvers needed.
    pub approvals: u32,
}

/// Body of `PUT /v1/policies/{channel}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetPolicy {
    /// For normal generations (and those without a change record).
    pub normal: Rule,
    /// For emergency generations; absent: the normal tests and `min(1, normal approvals)`.
    #[serde(default)]
    pub emergency: Option<Rule>,
    /// Keys whose approvals count.
    pub approvers: Vec<TufKey>,
    /// Keys whose test evidence counts.
    pub testers: Vec<TufKey>,
}

/// A channel's policy as the server keeps it (answer of `GET|PUT /v1/policies/{channel}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelPolicy {
    /// The channel.
    pub channel: ChannelName,
    /// For normal generations.
    pub normal: Rule,
    /// For emergency generations (the default filled in).
    pub emergency: Rule,
    /// Keys whose approvals count.
    pub approvers: Vec<TufKey>,
    /// Keys whose test evidence counts.
    pub testers: Vec<TufKey>,
    /// When it was set, seconds since the epoch.
    pub updated: i64,
}

impl ChannelPolicy {
    /// The rule for a generation of `class`.
    pub fn rule(&self, class: Classification) -> &Rule {
        match class {
            Classification::Normal => &self.normal,
            Classification::Emergency => &self.emergency,
        }
    }
}

/// The emergency rule a policy gets when none is given: the normal tests and one approval
/// (none if the normal rule needs none). An emergency moves faster, it is not a bypass.
pub fn default_emergency(normal: &Rule) -> Rule {
    Rule { tests: normal.tests.clone(), approvals: normal.approvals.min(1) }
}

/// What a generation still lacks on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Missing {
    /// Required tests without a passing newest run by a listed tester.
    pub tests: Vec<TestName>,
    /// How many more distinct listed approvers are needed.
    pub approvals: u32,
}

impl Missing {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty() && self.approvals == 0
    }
}

/// The details of a `gate_not_met` error: which channel refused which generation, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GateRefusal {
    /// The channel whose policy refused.
    pub channel: ChannelName,
    /// `IMAGE@N`.
    pub generation: String,
    /// Which of the policy's rules applied.
    pub classification: Classification,
    /// What is missing.
    pub missing: Missing,
}

/// One channel's verdict on a generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelGate {
    /// The channel.
    pub channel: ChannelName,
    /// The rule that applies (by the generation's classification).
    pub rule: Rule,
    /// Whether the channel may name the generation.
    pub met: bool,
    /// What is missing (empty when met).
    pub missing: Missing,
}

/// Answer of `GET /v1/generations/{image}/{number}/gate`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GateReport {
    /// `IMAGE@N`.
    pub generation: String,
    /// The manifest digest.
    pub manifest: Digest,
    /// From the change record; `normal` without one.
    pub classification: Classification,
    /// Every test run recorded, oldest first.
    pub evidence: Vec<Evidence>,
    /// Every approval recorded (one per key, the newest), oldest first.
    pub approvals: Vec<Approval>,
    /// Every channel with a policy, and whether the generation meets it.
    pub channels: Vec<ChannelGate>,
}
