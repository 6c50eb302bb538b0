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
    /// The object's pack is shorter than its index says (damaged or cut short on disk).
    #[error("object {digest} lies past the end of pack {}", source.pack.display())]
    Truncated {
        /// The object.
        digest: Digest,
        /// Where it should have been.
        #[source]
        source: TruncatedPack,
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

/// A pack file shorter than its index says: the record at `offset`, `len` bytes long, does
/// not fit in the pack's `pack_len` bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pack {pack} is {pack_len} bytes, shorter than its index says: an object lies at offset {offset}, {len} bytes long")]
pub struct TruncatedPack {
    /// The pack file.
    pub pack: PathBuf,
    /// Where the object's framed bytes start, by the index.
    pub offset: u64,
    /// Their length, by the index.
    pub len: u32,
    /// The pack's actual length.
    pub pack_len: u64,
}

impl TruncatedPack {
    /// Checks that the record at `offset`, `len` bytes long, fits in a pack of `pack_len` bytes.
    pub fn check(pack: &std::path::Path, offset: u64, len: u32, pack_len: u64) -> Result<(), TruncatedPack> {
        match offset.checked_add(u64::from(len)) {
            Some(end) if end <= pack_len => Ok(()),
            _ => Err(TruncatedPack { pack: pack.to_path_buf(), offset, len, pack_len }),
        }
    }
}
