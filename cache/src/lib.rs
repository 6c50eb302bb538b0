//! The content-addressed object store on local disk, shared by the server and the endpoint.
//!
//! Objects are framed by `format::object` and named by the digest of their uncompressed content.
//! Every insert is verified (the digest is computed here, or checked against the caller's), and
//! written to `tmp/` then renamed into place, so a killed process never leaves a half-written
//! object visible. Renames are not fsynced one by one; `Store::sync` is the durability barrier
//! that callers pass before they publish anything that refers to the objects.
#![warn(missing_docs)]

pub mod atomic;
pub mod browse;
#[cfg(feature = "cli-docs")]
pub mod cli_docs;
pub mod clock;
mod error;
pub mod fault;
pub mod pack;
pub mod plain;
pub mod quota;
pub mod seams;
mod reach;
pub mod record_reader;
mod store;
pub mod trusted_dir;
mod usage;

pub use error::{GetError, InsertError, OpenError, TruncatedPack};
pub use reach::{metadata_and_data, reachable, reachable_into, to_keep, ReachError};
pub use store::{CachePack, Inserted, Store, Verified, MAX_DICTIONARY, MAX_OBJECT};
pub use usage::{Evicted, UsageReport};

#[cfg(test)]
mod tests;
