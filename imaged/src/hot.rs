//! In-memory caches in front of the disk: small framed objects that are asked for again and
//! again (every endpoint of a fleet fetches the same patch), and the current version of each
//! channel (polled by every endpoint). Hits are answered on the async runtime without a trip
//! to the blocking pool; misses fill them.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use format::Digest;

use crate::meta::ChannelVersion;

/// Largest object kept in memory.
pub const MAX_HOT_OBJECT: usize = 1 << 20;

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<Digest, Bytes> for ByLength {
    fn weight(&self, _: &Digest, framed: &Bytes) -> u64 {
        framed.len() as u64 + 64
    }
}

/// Framed objects by digest, least recently used out first, within a byte budget.
pub struct HotObjects {
    cache: Option<quick_cache::sync::Cache<Digest, Bytes, ByLength>>,
}

impl HotObjects {
    /// A cache of at most `bytes` (0 turns it off).
    pub fn new(bytes: u64) -> HotObjects {
        let cache = (bytes > 0).then(|| quick_cache::sync::Cache::with_weighter((bytes / 4096).max(16) as usize, bytes, ByLength));
        HotObjects { cache }
    }

    /// The framed bytes, if held.
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.cache.as_ref()?.get(digest)
    }

    /// Keeps `framed` if it is small enough.
    pub fn put(&self, digest: Digest, framed: Bytes) {
        if let Some(c) = &self.cache {
            if framed.len() <= MAX_HOT_OBJECT {
                c.insert(digest, framed);
            }
        }
    }

    /// Forgets objects (garbage collection deleted them).
    pub fn forget(&self, digests: &[Digest]) {
        if let Some(c) = &self.cache {
            for d in digests {
                c.remove(d);
            }
        }
    }
}

/// The current version of every channel read or written since the start. Only this process
/// writes channels, and it updates this map under the channel write lock after each write.
#[derive(Default)]
pub struct HotChannels {
    current: RwLock<HashMap<String, ChannelVersion>>,
}

impl HotChannels {
    /// The cached current version.
    pub fn get(&self, channel: &str) -> Option<ChannelVersion> {
        self.current.read().unwrap().get(channel).cloned()
    }

    /// Records a version read or written, unless a newer one is known already (a reader that
    /// raced a writer must not put back what it read before the write).
    pub fn put(&self, cv: &ChannelVersion) {
        let mut map = self.current.write().unwrap();
        match map.get(cv.channel.as_str()) {
            Some(known) if known.version >= cv.version => {}
            _ => {
                map.insert(cv.channel.to_string(), cv.clone());
            }
        }
    }
}
