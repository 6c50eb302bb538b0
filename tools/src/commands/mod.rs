//! What each `imgctl` subcommand does, behind the command line: the binary validates its
//! arguments into typed values, calls one function here, and prints the typed output it gets
//! back (as text, or as JSON with `--json`: every output here is `Serialize`).

use std::path::PathBuf;

use crate::browse::ReadError;
use crate::export::ExportError;
use crate::push::PushError;
use crate::remote::RemoteError;
use crate::signing::SignError;
use crate::verify::VerifyError;
use crate::{ImportError, RepoError};

pub mod audit;
pub mod fleet;
pub mod gate;
pub mod keys;
pub mod local;
pub mod rollouts;
pub mod server;

/// Why a subcommand failed; each variant says what was being done, the cause is its source.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The local repository failed (a generation not found, say).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Reading a generation failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An import failed.
    #[error("importing {src}")]
    Import {
        /// The source.
        src: PathBuf,
        /// The cause.
        #[source]
        source: ImportError,
    },
    /// An export failed.
    #[error("exporting {generation} to {dest}")]
    Export {
        /// `IMAGE@N`.
        generation: String,
        /// The destination.
        dest: PathBuf,
        /// The cause.
        #[source]
        source: ExportError,
    },
    /// Verification could not run.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Uploading or publishing a generation failed.
    #[error("pushing {generation}")]
    Push {
        /// `IMAGE@N`.
        generation: String,
        /// The cause.
        #[source]
        source: PushError,
    },
    /// A signing operation failed; `doing` says which.
    #[error("{doing}")]
    Sign {
        /// What was being done (`signing os@3`, `rotating the keys of targets`).
        doing: String,
        /// The cause.
        #[source]
        source: SignError,
    },
    /// A key file, or the server's keys, could not be used.
    #[error(transparent)]
    Key(#[from] SignError),
    /// A request to the server failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A test command could not be run at all (not: it ran and failed).
    #[error("running {command:?} in {generation}")]
    Run {
        /// `IMAGE@N`.
        generation: String,
        /// The command.
        command: String,
        /// The runner's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server's audit log does not verify: an entry was altered, removed or inserted.
    #[error(transparent)]
    AuditBroken(#[from] api::audit::ChainBreak),
    /// A file could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An input the command was given does not parse.
    #[error("{what} is not valid: {why}")]
    Invalid {
        /// What was given.
        what: String,
        /// Why it is refused.
        why: String,
    },
}

impl CommandError {
    /// The server error inside, if the command failed on a request.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            CommandError::Remote(e) | CommandError::Push { source: PushError::Remote(e), .. } => Some(e),
            CommandError::Sign { source: SignError::Remote(e), .. } | CommandError::Key(SignError::Remote(e)) => Some(e),
            _ => None,
        }
    }
}
