//! The promotion gate, engineer's side: sign and upload test evidence and approvals of a
//! generation, and the `Runner` seam through which `imgctl test` runs a command inside the
//! generation (the sandbox plugs in there). Secret keys stay here; the server receives the
//! statement, the public key and the signature.

use std::time::Duration;

use api::gate::{ApprovalStatement, EvidenceStatement, Outcome, Recorded, Signed, TestName};
use api::tuf::TufKey;
use format::{Digest, ImageName};
use trust::sign::Signer;

use crate::signing::SignError;

use crate::remote::Remote;

/// The most log a run keeps (the end of it): a log is one object, under the server's
/// object size limit.
pub const MAX_LOG_BYTES: usize = 16 << 20;

/// How a command ran: what a `Runner` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// Exit status; -N when killed by signal N.
    pub exit: i32,
    /// Killed because it ran past its timeout.
    pub timed_out: bool,
    /// How long it ran.
    pub duration: Duration,
    /// Its standard output and error, interleaved.
    pub log: Vec<u8>,
}

impl TestRun {
    /// Passed, failed or timed out.
    pub fn outcome(&self) -> Outcome {
        match (self.timed_out, self.exit) {
            (true, _) => Outcome::TimedOut,
            (false, 0) => Outcome::Passed,
            (false, _) => Outcome::Failed,
        }
    }
}

/// Runs a test command inside a generation, killing it at `timeout` (and then reporting
/// `timed_out`). `imgctl test` takes any runner; the sandbox is the real one.
pub trait Runner {
    /// Why a command could not be run at all (not: it ran and failed).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs `command` in `generation` of the local store.
    fn run(&self, generation: &crate::Generation, command: &str, timeout: Duration) -> Result<TestRun, Self::Error>;
}

/// A public key as the API carries keys.
pub fn api_key(key: &trust::keys::PublicKey) -> TufKey {
    serde_json::from_value(key.to_value()).expect("a key object is a TufKey")
}

/// Signs `statement` (whose signed bytes are `bytes`) with `key` (a key file's, or an
/// external signer's).
pub fn sign<S>(statement: S, bytes: &[u8], key: &dyn Signer) -> Result<Signed<S>, SignError> {
    let signature = key.sign_message(bytes).map_err(|why| SignError::Refused(format!("signing the statement: {why}")))?;
    Ok(Signed { signature, key: api_key(&key.public()), statement })
}

/// The signed statement of a run of `test` on the generation `manifest` whose log is the
/// object `log`, made at `time`.
pub fn evidence_statement(manifest: Digest, test: TestName, run: &TestRun, log: Digest, time: i64) -> EvidenceStatement {
    EvidenceStatement {
        manifest,
        test,
        outcome: run.outcome(),
        exit: run.exit,
        duration_ms: run.duration.as_millis() as u64,
        log,
        log_len: run.log.len() as u64,
        time,
    }
}

/// The end of `log`, at most `MAX_LOG_BYTES`, with a first line saying what was cut.
fn capped(log: &[u8]) -> Vec<u8> {
    if log.len() <= MAX_LOG_BYTES {
        return log.to_vec();
    }
    let mut out = format!("[imgctl: the first {} bytes of the log were dropped]\n", log.len() - MAX_LOG_BYTES).into_bytes();
    out.extend_from_slice(&log[log.len() - MAX_LOG_BYTES..]);
    out
}

/// Uploads the run's log as an object, signs the statement of the run with `key` and
/// records it on the server as evidence about `image@number` (manifest `manifest`).
pub fn submit_evidence(
    remote: &Remote,
    key: &dyn Signer,
    image: &ImageName,
    number: u64,
    manifest: Digest,
    test: TestName,
    run: &TestRun,
) -> Result<(Signed<EvidenceStatement>, Recorded), SignError> {
    let log = capped(&run.log);
    let digest = Digest::of(&log);
    remote.put_object(&digest, format::object::encode(&log, 9))?;
    let run = TestRun { log, ..run.clone() };
    let statement = evidence_statement(manifest, test, &run, digest, cache::clock::now());
    let bytes = statement.signed_bytes();
    let evidence = sign(statement, &bytes, key)?;
    let recorded = remote.post_evidence(image, number, &evidence)?;
    Ok((evidence, recorded))
}

/// Signs an approval of `image@number` (its manifest as the server has it) with `key` and
/// records it on the server.
pub fn approve(remote: &Remote, key: &dyn Signer, image: &ImageName, number: u64, comment: &str) -> Result<Recorded, SignError> {
    let manifest = remote.generation(image, number)?.manifest;
    let statement = ApprovalStatement { manifest, comment: comment.to_string(), time: cache::clock::now() };
    let bytes = statement.signed_bytes();
    Ok(remote.post_approval(image, number, &sign(statement, &bytes, key)?)?)
}

/// Runs a test command inside the generation: the base mounted read-only under an overlay
/// that is thrown away, in the same sandbox as `imgctl patch`'s steps (own mount, PID, UTS,
/// IPC and, with the network off, network namespaces; Debian's `policy-rc.d`). The command
/// cannot change the generation. Call [`crate::sandbox::private_mounts`] first.
pub struct InSandbox<'a> {
    /// The local store holding the generation.
    pub repo: &'a crate::Repo,
    /// Give the command the host's network.
    pub network: bool,
}

impl Runner for InSandbox<'_> {
    type Error = crate::patch::PatchError;

    fn run(&self, generation: &crate::Generation, command: &str, timeout: Duration) -> Result<TestRun, Self::Error> {
        let mut sandbox = crate::patch::Sandboxed::open(self.repo, generation, "test", self.network)?;
        let outcome = sandbox.run(command, self.network, Some(timeout), None, false)?;
        sandbox.unmount();
        let log = std::fs::read(sandbox.log_path())
            .map_err(|source| crate::patch::PatchError::Work { path: sandbox.log_path(), source })?;
        Ok(TestRun { exit: outcome.exit, timed_out: outcome.timed_out, duration: outcome.duration, log })
    }
}
