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

/// The name of a channel, e.g. `os/stable`: 1-128 bytes of `/`-separated segments, each
/// `[a-z0-9][a-z0-9._-]*` without `..`. Validated here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

/// A channel name that breaks the naming rule; the field says which part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name {name:?}: {why}")]
pub struct ChannelNameError {
    /// The refused name.
    pub name: String,
    /// Which rule it breaks.
    pub why: &'static str,
}

impl ChannelName {
    /// Validates and wraps a name.
    pub fn new(s: &str) -> Result<ChannelName, ChannelNameError> {
        let bad = |why| Err(ChannelNameError { name: s.to_string(), why });
        if s.is_empty() || s.len() > 128 {
            return bad("length must be 1-128");
        }
        for seg in s.split('/') {
            let ok = seg.as_bytes().first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-')
                && !seg.contains("..");
            if !ok {
                return bad("segments are [a-z0-9][a-z0-9._-]*, separated by /");
            }
        }
        Ok(ChannelName(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ChannelName {
    type Err = ChannelNameError;
    fn from_str(s: &str) -> Result<ChannelName, ChannelNameError> {
        ChannelName::new(s)
    }
}

impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ChannelName, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ChannelName::new(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ImageName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ImageName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ImageName, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ImageName::new(&s).map_err(serde::de::Error::custom)
    }
}
