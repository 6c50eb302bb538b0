//! Keys that sign TUF metadata for `imgctl`: a secret key file read into memory, or an
//! external signer (`--signer COMMAND`) for a key that never leaves a hardware token or a KMS.
//!
//! The external signer protocol (docs/security.md): `imgctl` runs `sh -c COMMAND` with the
//! environment variable `IMGCTL_SIGNER` set to
//! - `public`: the command prints the key's public key object on standard output (the JSON of
//!   a `.pub` key file: `{"keytype", "scheme", "keyval": {"public"}}`);
//! - `sign`: the command reads the bytes to sign (the canonical JSON of a role's `signed`
//!   object) from standard input and prints the signature as hex on standard output, encoded
//!   as the key's scheme says (DER for ECDSA).
//!
//! It must exit 0 within 120 seconds (time for a touch on a token). Every signature it returns
//! is checked against its public key before it is used.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trust::keys::{PublicKey, SecretKey};
use trust::sign::Signer;

/// The environment variable that tells an external signer what to do.
pub const SIGNER_VAR: &str = "IMGCTL_SIGNER";

/// How long an external signer may take for one answer.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Why an external signer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The shell could not be started.
    #[error("signer {command:?}: cannot run it: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited with a failure.
    #[error("signer {command:?} ({op}) failed ({status}): {stderr}")]
    Failed {
        /// The command.
        command: String,
        /// `public` or `sign`.
        op: &'static str,
        /// How it ended.
        status: String,
        /// The end of what it wrote to standard error.
        stderr: String,
    },
    /// It took longer than `DEADLINE`.
    #[error("signer {command:?} ({op}) gave no answer within {} s: killed", DEADLINE.as_secs())]
    Timeout {
        /// The command.
        command: String,
        /// `public` or `sign`.
        op: &'static str,
    },
    /// What it printed for `public` is not a key object this implementation reads.
    #[error("signer {command:?} printed no usable public key: {why}")]
    BadPublic {
        /// The command.
        command: String,
        /// Why.
        why: String,
    },
}

/// A key held by a command.
pub struct ExternalSigner {
    command: String,
    public: PublicKey,
}

impl ExternalSigner {
    /// Asks `command` for its public key.
    pub fn new(command: &str) -> Result<ExternalSigner, SignerError> {
        let out = run(command, "public", &[])?;
        let bad = |why: String| SignerError::BadPublic { command: command.to_string(), why };
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| bad(format!("not JSON: {e}")))?;
        let public = PublicKey::from_value(&v).map_err(|e| bad(e.to_string()))?;
        Ok(ExternalSigner { command: command.to_string(), public })
    }
}

impl Signer for ExternalSigner {
    fn public(&self) -> PublicKey {
        self.public.clone()
    }

    fn sign_message(&self, message: &[u8]) -> Result<String, String> {
        let out = run(&self.command, "sign", message).map_err(|e| e.to_string())?;
        let sig = String::from_utf8_lossy(&out).trim().to_string();
        if !self.public.verifies(message, &sig) {
            return Err(format!("signer {:?} returned a signature that does not verify with its public key: {sig:.80}", self.command));
        }
        Ok(sig)
    }
}

/// Runs `command` for `op` with `input` on its standard input; its standard output.
fn run(command: &str, op: &'static str, input: &[u8]) -> Result<Vec<u8>, SignerError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env(SIGNER_VAR, op)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SignerError::Spawn { command: command.to_string(), source })?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    // Written and read on threads: a signer that reads nothing or writes much cannot block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read = |r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.take(1 << 20).read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped")));
    let stderr = read(Box::new(child.stderr.take().expect("piped")));
    let until = Instant::now() + DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SignerError::Timeout { command: command.to_string(), op });
            }
        }
    };
    let _ = writer.join();
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let tail: String = text.trim().lines().last().unwrap_or("").chars().take(300).collect();
        return Err(SignerError::Failed { command: command.to_string(), op, status: status.to_string(), stderr: tail });
    }
    Ok(out)
}

/// A key that signs: a secret key file's, or an external signer's.
pub enum Holder {
    /// A key read from a secret key file.
    Key(SecretKey),
    /// A key behind `--signer COMMAND`.
    Command(ExternalSigner),
}

impl Holder {
    /// The key it signs with.
    pub fn public(&self) -> PublicKey {
        Signer::public(self)
    }
}

impl Signer for Holder {
    fn public(&self) -> PublicKey {
        match self {
            Holder::Key(k) => k.public(),
            Holder::Command(c) => c.public(),
        }
    }

    fn sign_message(&self, message: &[u8]) -> Result<String, String> {
        match self {
            Holder::Key(k) => k.sign_message(message),
            Holder::Command(c) => c.sign_message(message),
        }
    }
}

/// The keys of secret key `files`, then the external `signers`, in that order.
pub fn holders(files: &[impl AsRef<Path>], signers: &[String]) -> Result<Vec<Holder>, anyhow::Error> {
    let mut out = Vec::new();
    for f in files {
        out.push(Holder::Key(crate::signing::read_secret(f.as_ref())?));
    }
    for s in signers {
        out.push(Holder::Command(ExternalSigner::new(s)?));
    }
    Ok(out)
}
