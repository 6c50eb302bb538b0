//! imaged's exit codes, for scripts and service managers (documented in docs/api.md).

use crate::config::ConfigError;
use crate::maintenance::CollectError;
use crate::OpenError;

/// Success.
pub const OK: u8 = 0;
/// Any other failure (IO, the store, the metadata database, binding the address).
pub const FAILURE: u8 = 1;
/// Bad arguments (clap's own code) or a configuration file that cannot be read or parsed.
pub const USAGE: u8 = 2;
/// `imaged serve`: another imaged holds the data directory.
pub const IN_USE: u8 = 3;
/// `imaged gc`: the server holding the data directory could not be reached, or refused.
pub const SERVER: u8 = 4;

/// The exit code for a failure, from the typed errors in its chain.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return USAGE;
        }
        if let Some(OpenError::Locked { .. }) = cause.downcast_ref::<OpenError>() {
            return IN_USE;
        }
        if let Some(CollectError::Transport { .. } | CollectError::Refused { .. } | CollectError::Token { .. }) = cause.downcast_ref::<CollectError>() {
            return SERVER;
        }
    }
    FAILURE
}
