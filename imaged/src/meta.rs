//! Server metadata in rocksdb: which generations are published and every version of every
//! channel. Calls block; handlers run them on the blocking pool.
//!
//! Keys (all in the default column family, big-endian numbers so keys sort numerically):
//! `g/IMAGE/\0` + u64 generation → 32-byte manifest digest;
//! `c/CHANNEL` → u64 current version;
//! `v/CHANNEL/\0` + u64 version → `ChannelVersion` as JSON.

use std::path::Path;

use format::{Digest, ImageName};
use rocksdb::{IteratorMode, Options, WriteBatch, DB};

/// Failures of the metadata database.
#[derive(Debug, thiserror::Error)]
#[error("metadata database: {0}")]
pub struct MetaError(#[from] rocksdb::Error);

/// A published generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Image name.
    pub image: String,
    /// Generation number.
    pub generation: u64,
    /// Manifest digest.
    pub manifest: Digest,
}

/// One version of a channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelVersion {
    /// Channel name.
    pub channel: String,
    /// Version number, from 1, never reused.
    pub version: u64,
    /// `IMAGE@N`.
    pub generation: String,
    /// Manifest digest (hex).
    pub manifest: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// `set`, `promote` or `rollback`.
    pub action: String,
}

/// The metadata database.
pub struct Meta {
    db: DB,
}

fn gen_key(image: &str, generation: u64) -> Vec<u8> {
    let mut k = format!("g/{image}/").into_bytes();
    k.push(0);
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

fn version_key(channel: &str, version: u64) -> Vec<u8> {
    let mut k = format!("v/{channel}/").into_bytes();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

impl Meta {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        Ok(Meta { db: DB::open(&opts, path)? })
    }

    /// Records a published generation (durably).
    pub fn put_generation(&self, image: &ImageName, generation: u64, manifest: &Digest) -> Result<(), MetaError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.put_opt(gen_key(image.as_str(), generation), manifest.0, &wo)?;
        Ok(())
    }

    /// The manifest of `image@generation`, if published.
    pub fn generation(&self, image: &str, generation: u64) -> Result<Option<Digest>, MetaError> {
        Ok(self.db.get(gen_key(image, generation))?.and_then(|v| v.try_into().ok().map(Digest)))
    }

    /// Every published generation, by image then number.
    pub fn generations(&self) -> Result<Vec<Published>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(b"g/") {
            let (k, v) = item?;
            if !k.starts_with(b"g/") {
                break;
            }
            let rest = &k[2..];
            let Some(split) = rest.iter().position(|&b| b == 0) else { continue };
            let (Ok(image), Ok(num), Ok(d)) =
                (std::str::from_utf8(&rest[..split - 1]), <[u8; 8]>::try_from(&rest[split + 1..]), <[u8; 32]>::try_from(&v[..]))
            else {
                continue;
            };
            out.push(Published { image: image.to_string(), generation: u64::from_be_bytes(num), manifest: Digest(d) });
        }
        Ok(out)
    }

    /// The current version of a channel.
    pub fn channel(&self, channel: &str) -> Result<Option<ChannelVersion>, MetaError> {
        let Some(v) = self.db.get(format!("c/{channel}"))? else { return Ok(None) };
        let Ok(n) = <[u8; 8]>::try_from(&v[..]) else { return Ok(None) };
        self.channel_version(channel, u64::from_be_bytes(n))
    }

    /// One version of a channel.
    pub fn channel_version(&self, channel: &str, version: u64) -> Result<Option<ChannelVersion>, MetaError> {
        Ok(self.db.get(version_key(channel, version))?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every version of a channel, oldest first.
    pub fn history(&self, channel: &str) -> Result<Vec<ChannelVersion>, MetaError> {
        let mut prefix = format!("v/{channel}/").into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&prefix, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Ok(cv) = serde_json::from_slice(&v) {
                out.push(cv);
            }
        }
        Ok(out)
    }

    /// Every channel name.
    pub fn channels(&self) -> Result<Vec<String>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(b"c/") {
            let (k, _) = item?;
            if !k.starts_with(b"c/") {
                break;
            }
            out.push(String::from_utf8_lossy(&k[2..]).into_owned());
        }
        Ok(out)
    }

    /// Appends a channel version and makes it current, atomically and durably. The caller
    /// serialises writers of one channel so versions stay dense and increasing.
    pub fn push_channel(&self, cv: &ChannelVersion) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        batch.put(version_key(&cv.channel, cv.version), serde_json::to_vec(cv).expect("serialisable"));
        batch.put(format!("c/{}", cv.channel), cv.version.to_be_bytes());
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }
}
