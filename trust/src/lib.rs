//! The TUF verification core (The Update Framework 1.0): canonical JSON, keys and signatures
//! of the types python-tuf writes (ed25519, ECDSA P-256, RSA PSS and PKCS #1 v1.5) with
//! thresholds, the metadata of each role, and the client's update rules (section 5 of the
//! specification). Pure: callers pass the bytes they received and the one "now" of an update;
//! nothing here reads a file, the network or the clock.
#![warn(missing_docs)]

pub mod canonical;
pub mod client;
pub mod keys;
pub mod metadata;
pub use rand_core_06::OsRng;
pub mod policy;
pub mod sign;
pub mod time;
pub mod update;

#[cfg(test)]
mod tests;
