//! The messages imaged, imgctl and imgfs exchange, as typed structs: every HTTP request and
//! response body, every error code the server sends, and the messages of imgfs's control
//! socket. Pure: serde only, no IO. Both sides of a seam use the same type, so a field
//! renamed on one side fails to compile on the other.
#![warn(missing_docs)]

pub mod affected;
pub mod audit;
pub mod channels;
pub mod control;
pub mod error;
pub mod fleet;
pub mod gate;
pub mod generations;
pub mod objects;
pub mod rollouts;
pub mod server;
pub mod tuf;
pub mod users;
pub mod window;

pub use error::{ErrorBody, ErrorCode};
pub use format::{ChannelName, Digest, ImageName};

#[cfg(test)]
mod tests;
