//! The library behind `imgctl`: import a tree into a local repository, read generations back
//! (ls, cat, export), compare them, and verify the store.
#![warn(missing_docs)]

use std::io;
use std::path::PathBuf;

pub mod analysis;
pub use cache::browse;
pub mod commit;
mod build;
pub mod commands;
pub mod dictionary;
pub mod diff;
pub mod export;
pub mod gate;
pub mod import;
mod index;
mod ingest;
pub mod push;
pub mod remote;
pub mod patch;
pub mod repo;
pub mod sandbox;
mod scan;
pub mod signer;
pub mod signing;
mod tar_scan;
pub mod verify;

pub use repo::{Generation, Repo, RepoError};

/// Why an import failed. Nothing is published when it does: no ref names a partial generation.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A source file or directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The source holds something imaged cannot represent.
    #[error("{path}: {what}")]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// What.
        what: String,
    },
    /// An archive entry would land outside the image root.
    #[error("{archive}: refused entry {entry:?}: {why}")]
    UnsafePath {
        /// The archive.
        archive: PathBuf,
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it is unsafe.
        why: String,
    },
    /// The archive is truncated or corrupt.
    #[error("{archive}: corrupt or truncated archive at entry {entry}")]
    Archive {
        /// The archive.
        archive: PathBuf,
        /// The entry being read.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing to the store failed (a full disk, say).
    #[error("storing content of {path}")]
    Store {
        /// The file whose content was being stored.
        path: PathBuf,
        /// The cause.
        #[source]
        source: cache::InsertError,
    },
    /// A directory could not be encoded (a name or attribute the format forbids).
    #[error("directory containing {path} cannot be encoded")]
    Tree {
        /// A path in the offending directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: format::DecodeError,
    },
    /// Making the new objects durable and visible failed (a full disk, say).
    #[error("cannot commit new objects to the store at {path}")]
    Commit {
        /// The store.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The base generation of a patch could not be read.
    #[error("reading the base generation")]
    Base(#[source] browse::ReadError),
    /// The generation's package list could not be made.
    #[error("indexing the installed packages")]
    Packages(#[from] diff::IndexError),
}

#[cfg(test)]
mod tests;
