//! Errors of the store, one enum per operation, each naming the object and path involved.

use std::io;
use std::path::PathBuf;

use format::Digest;

/// Opening (or creating) a store failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot open store at {path}")]
pub struct OpenError {
    /// The directory that failed.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Writing an object failed; nothing of it is visible.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The bytes offered are not the object they claim to be.
    #[error("refused object {digest}: {source}")]
    Invalid {
        /// The claimed digest.
        digest: Digest,
        /// Why it failed verification.
        #[source]
        source: format::object::ObjectError,
    },
    /// The disk said no (full, read-only, permissions).
    #[error("cannot write object {digest} at {path}")]
    Io {
        /// The object.
        digest: Digest,
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Reading an object failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The store does not hold it.
    #[error("object {0} is not in the store")]
    NotFound(Digest),
    /// The object was compressed with a zstd dictionary the store does not hold (intact).
    #[error("object {digest} needs dictionary {dictionary}, which the store lacks")]
    MissingDictionary {
        /// The object.
        digest: Digest,
        /// The dictionary object.
        dictionary: Digest,
    },
    /// The stored bytes do not verify.
    #[error("object {digest} at {path} is corrupt")]
    Corrupt {
        /// The object.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// What verification found.
        #[source]
        source: format::object::ObjectError,
    },
    /// The file could not be read.
    #[error("cannot read object {digest} at {path}")]
    Io {
        /// The object.
        digest: Digest,
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
