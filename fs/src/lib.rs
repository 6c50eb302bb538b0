//! imgfs, the endpoint: mounts an image channel through FUSE over the verified cache/ store.
//! The core (`image`: a generation as inodes, attributes and extents) is pure and tested
//! without FUSE; the FUSE adapter, the fetcher and the control socket are thin layers on it.
#![warn(missing_docs)]

pub mod agent;
pub mod control;
pub mod endpoint;
pub mod exit_codes;
pub mod fetch;
pub mod fuse;
pub mod image;
pub mod invalidate;
pub mod keeper;
pub mod kernel_mount;
pub mod local;
pub mod materialise;
pub mod mount_helper;
pub mod prefetch;
pub mod read;
pub mod report;
pub mod resume;
pub mod startup;
pub mod state;
pub mod supervise;
pub mod trace;
pub mod trusted;
pub mod writable;

#[cfg(test)]
mod tests;
