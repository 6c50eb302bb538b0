//! The promotion gate's subcommands: `test` (run a command in a generation, record signed
//! evidence), `approve`, `channel policy`, and `show` (a generation's change and patch
//! records and, from a server, its evidence, approvals and gate verdicts).

use std::time::Duration;

use api::gate::{ChannelPolicy, GateReport, Outcome, SetPolicy, TestName};
use api::ChannelName;
use format::{ChangeRecord, Digest, GenSpec, ImageName, PatchRecord, Stats};

use super::CommandError;
use crate::gate::Runner;
use crate::remote::Remote;
use crate::Repo;

/// What `test` is asked to do.
pub struct TestPlan {
    /// The generation (in the local store, published on the server).
    pub generation: GenSpec,
    /// The test's name.
    pub name: TestName,
    /// The command line.
    pub command: String,
    /// When to kill it.
    pub timeout: Duration,
    /// The tester's key.
    pub key: crate::signer::Holder,
}

/// What `test` did (`imgctl test --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutput {
    /// `IMAGE@N`.
    pub generation: String,
    /// The test.
    pub test: TestName,
    /// Passed, failed or timed out.
    pub outcome: Outcome,
    /// Exit status; -N when killed by signal N.
    pub exit: i32,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
    /// The log object on the server.
    pub log: Digest,
    /// The log's length.
    pub log_len: u64,
    /// The tester's key id.
    pub keyid: String,
}

/// Runs `plan.command` in the generation through `runner` and records the signed outcome
/// on the server, whatever it is (a failure is evidence too).
pub fn test<R: Runner>(repo: &Repo, remote: &Remote, runner: &R, plan: TestPlan) -> Result<TestOutput, CommandError> {
    let g = repo.resolve(&plan.generation)?;
    let run = runner.run(&g, &plan.command, plan.timeout).map_err(|source| CommandError::Run {
        generation: g.label(),
        command: plan.command.clone(),
        source: Box::new(source),
    })?;
    let (evidence, recorded) =
        crate::gate::submit_evidence(remote, &plan.key, &g.manifest.image, g.manifest.generation, g.digest, plan.name, &run)?;
    let s = evidence.statement;
    Ok(TestOutput {
        generation: g.label(),
        test: s.test,
        outcome: s.outcome,
        exit: s.exit,
        duration_ms: s.duration_ms,
        log: s.log,
        log_len: s.log_len,
        keyid: recorded.keyid,
    })
}

/// What `approve` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Approved {
    /// `IMAGE@N`.
    pub generation: String,
    /// The approver's key id.
    pub keyid: String,
}

/// Signs and records an approval of `image@number`.
pub fn approve(remote: &Remote, key: &crate::signer::Holder, image: &ImageName, number: u64, comment: &str) -> Result<Approved, CommandError> {
    let r = crate::gate::approve(remote, key, image, number, comment)?;
    Ok(Approved { generation: r.generation, keyid: r.keyid })
}

/// Sets `channel`'s policy, or with `None` reads it.
pub fn policy(remote: &Remote, channel: &ChannelName, set: Option<&SetPolicy>) -> Result<ChannelPolicy, CommandError> {
    Ok(match set {
        Some(p) => remote.put_policy(channel, p)?,
        None => remote.policy(channel)?,
    })
}

/// What `show` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShowOutput {
    /// `IMAGE@N`.
    pub generation: String,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The root tree.
    pub root: Digest,
    /// The previous generation's manifest.
    pub parent: Option<Digest>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The engineer's message.
    pub message: String,
    /// Counts taken at import.
    pub stats: Stats,
    /// The change record, if any.
    pub change: Option<ChangeRecord>,
    /// The patch record, if any.
    pub patch: Option<PatchRecord>,
    /// A change or patch record that does not decode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// With a server: its evidence, approvals and gate verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<GateReport>,
}

/// A generation of the local store with its records and, given a server, its gate.
pub fn show(repo: &Repo, remote: Option<&Remote>, spec: &GenSpec) -> Result<ShowOutput, CommandError> {
    let g = repo.resolve(spec)?;
    let m = &g.manifest;
    let mut unreadable = Vec::new();
    let change = match m.change() {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            unreadable.push(format!("change record: {e}"));
            None
        }
        None => None,
    };
    let patch = match m.patch() {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            unreadable.push(format!("patch record: {e}"));
            None
        }
        None => None,
    };
    let server = match remote {
        Some(r) => Some(r.gate_report(&m.image, m.generation)?),
        None => None,
    };
    Ok(ShowOutput {
        generation: g.label(),
        manifest: g.digest,
        root: m.root,
        parent: m.parent,
        created: m.created,
        message: m.message.clone(),
        stats: m.stats,
        change,
        patch,
        unreadable,
        server,
    })
}

/// The one-word summary of a change record `log` prints: classification and activation
/// (`emergency restart:cron.service`), `-` without one.
pub fn change_summary(m: &format::Manifest) -> String {
    match m.change() {
        Some(Ok(c)) => format!("{} {}", c.classification.as_str(), c.activation.to_arg()),
        Some(Err(_)) => "unreadable".into(),
        None => "-".into(),
    }
}
