//! Image names and the ways a generation is addressed: `NAME@NUMBER`, `NAME@latest`, or a digest.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The name of an image family, e.g. `debian` or `office-apps`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName(String);

/// A name or generation address that is not well formed.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The image name breaks the naming rule.
    #[error("invalid image name {0:?}: use 1-64 of [A-Za-z0-9._-], starting with a letter or digit")]
    BadImage(String),
    /// The generation address is neither `NAME@N`, `NAME@latest` nor a digest.
    #[error("invalid generation {0:?}: expected NAME@NUMBER, NAME@latest or a 64-hex digest")]
    BadGeneration(String),
}

impl ImageName {
    /// Validates and wraps a name.
    pub fn new(s: &str) -> Result<ImageName, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(ImageName(s.to_string()))
        } else {
            Err(NameError::BadImage(s.to_string()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a user names a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenSpec {
    /// `NAME@NUMBER`.
    Number(ImageName, u64),
    /// `NAME@latest`, or a bare `NAME`.
    Latest(ImageName),
    /// The digest of a manifest.
    Digest(Digest),
}

impl FromStr for GenSpec {
    type Err = NameError;
    fn from_str(s: &str) -> Result<GenSpec, NameError> {
        if s.len() == 64 && !s.contains('@') {
            if let Ok(d) = s.parse() {
                return Ok(GenSpec::Digest(d));
            }
        }
        let bad = || NameError::BadGeneration(s.to_string());
        match s.split_once('@') {
            None => Ok(GenSpec::Latest(ImageName::new(s).map_err(|_| bad())?)),
            Some((name, "latest")) => Ok(GenSpec::Latest(ImageName::new(name).map_err(|_| bad())?)),
            Some((name, n)) => {
                let n: u64 = n.parse().map_err(|_| bad())?;
                if n == 0 {
                    return Err(bad());
                }
                Ok(GenSpec::Number(ImageName::new(name).map_err(|_| bad())?, n))
            }
        }
    }
}

impl fmt::Display for GenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenSpec::Number(n, g) => write!(f, "{n}@{g}"),
            GenSpec::Latest(n) => write!(f, "{n}@latest"),
            GenSpec::Digest(d) => write!(f, "{d}"),
        }
    }
}
