//! The image model every side of imaged agrees on: digests, object framing, chunking, trees and
//! generation manifests. This crate does no IO; callers hand it bytes and get bytes back.
#![warn(missing_docs)]

pub mod change;
pub mod chunking;
mod codec;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod name;
pub mod object;
pub mod packages;
pub mod record;
pub mod tree;

pub use change::{Activation, ActivationSource, ChangeRecord, Classification, PatchRecord, Step, StepKind};
pub use chunking::ChunkParams;
pub use codec::DecodeError;
pub use digest::Digest;
pub use manifest::{Manifest, Stats};
pub use packages::{Package, PackageList};
pub use name::{ChannelName, ChannelNameError, GenSpec, ImageName, NameError};
pub use tree::{Entry, EntryKind, Extent, Meta, Tree, Xattr};

#[cfg(test)]
mod tests;
