//! Writes plain copies of fully cached files in the background (`cache::plain`): READs of
//! them read the copy instead of decoding objects (in the default mode), or, with
//! `--passthrough`, their next opens go through FUSE passthrough. A file is offered when a
//! read reaches its end (default mode) or a handle on it is released (passthrough); it is
//! copied only if every chunk is in the cache (never fetched for this), it is big enough to
//! pay, and no copy exists or is queued.

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use format::{Digest, Extent};

use crate::endpoint::Endpoint;

/// Files smaller than this get no copy: a few objects answer them, and a copy would cost an
/// inode and a block for little.
pub const MIN_SIZE: u64 = 32 << 10;

/// Files waiting at most; offers beyond are dropped (they come again at the next release).
const QUEUE: usize = 1024;

/// The background writer of plain copies.
pub struct Materialiser {
    tx: SyncSender<(Digest, u64, Vec<Extent>)>,
    queued: Arc<Mutex<HashSet<Digest>>>,
    ep: Arc<Endpoint>,
}

impl Materialiser {
    /// Starts the writer thread for `ep`, which must have plain copies enabled.
    pub fn start(ep: Arc<Endpoint>) -> Materialiser {
        let (tx, rx) = sync_channel::<(Digest, u64, Vec<Extent>)>(QUEUE);
        let queued = Arc::new(Mutex::new(HashSet::new()));
        let (q, e) = (queued.clone(), ep.clone());
        std::thread::Builder::new()
            .name("materialise".into())
            .spawn(move || {
                for (key, size, extents) in rx {
                    if let Some(plain) = e.plain() {
                        if let Err(err) = plain.write(e.store(), size, &extents) {
                            tracing::debug!(file = %key, error = %err, "no plain copy");
                        }
                    }
                    q.lock().unwrap().remove(&key);
                }
            })
            .expect("a thread starts");
        Materialiser { tx, queued, ep }
    }

    /// Queues a plain copy of a file if it qualifies (see the module's text).
    pub fn offer(&self, size: u64, extents: &[Extent]) {
        let Some(plain) = self.ep.plain() else { return };
        if size < MIN_SIZE {
            return;
        }
        let key = cache::plain::Plain::key(size, extents);
        if plain.contains(&key) || !extents.iter().all(|x| self.ep.store().contains(&x.digest)) {
            return;
        }
        if !self.queued.lock().unwrap().insert(key) {
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send((key, size, extents.to_vec())) {
            self.queued.lock().unwrap().remove(&key);
        }
    }
}
