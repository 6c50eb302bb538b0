//! The cache keeper: holds the endpoint's cache within its quota (a size limit and a floor of
//! free space on the partition) by evicting the least recently used objects, except the pinned
//! sets: the current generation's metadata, everything of the previous generation that is
//! cached (so a rollback works offline), and the generations the user pinned.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use api::control::{CacheReport, Eviction};
use cache::quota::{self, Quota};
use cache::Evicted;
use format::{Digest, Manifest};

use crate::endpoint::Endpoint;

/// How often the keeper looks at the cache and the partition when nothing wakes it.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Rounds between two `malloc_trim`s (half a minute).
const TRIM_EVERY_ROUNDS: u64 = 15;

/// A generation the user pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// `IMAGE@N`.
    pub generation: String,
    /// Its manifest.
    pub manifest: Digest,
}

/// Keeps the cache within its quota.
pub struct Keeper {
    ep: Arc<Endpoint>,
    quota: Quota,
    pins: Mutex<Vec<Pin>>,
    wake: (Mutex<bool>, Condvar),
    /// Serialises eviction rounds.
    round: Mutex<Option<Evicted>>,
    /// Rounds the keeper thread has finished (tests wait on it rather than on the time).
    rounds: AtomicU64,
}

impl Keeper {
    /// A keeper for `ep`'s store (which it switches to use tracking), with user pins `pins`.
    pub fn new(ep: Arc<Endpoint>, quota: Quota, pins: Vec<Pin>) -> std::io::Result<Arc<Keeper>> {
        ep.store().track_use()?;
        let keeper = Arc::new(Keeper {
            ep,
            quota,
            pins: Mutex::new(pins),
            wake: (Mutex::new(false), Condvar::new()),
            round: Mutex::new(None),
            rounds: AtomicU64::new(0),
        });
        let k = keeper.clone();
        keeper.ep.fetcher().on_disk_full(move || k.check().is_some_and(|e| e.objects > 0));
        Ok(keeper)
    }

    /// The user's pins.
    pub fn pins(&self) -> Vec<Pin> {
        self.pins.lock().unwrap().clone()
    }

    /// Pins a generation; false if it already was.
    pub fn pin(&self, pin: Pin) -> bool {
        let mut pins = self.pins.lock().unwrap();
        if pins.iter().any(|p| p.manifest == pin.manifest) {
            return false;
        }
        pins.push(pin);
        true
    }

    /// Unpins a generation (by label or manifest); what was removed, if anything.
    pub fn unpin(&self, generation: &str) -> Option<Pin> {
        let mut pins = self.pins.lock().unwrap();
        let i = pins.iter().position(|p| p.generation == generation || p.manifest.to_hex() == generation)?;
        let gone = pins.remove(i);
        drop(pins);
        self.kick();
        Some(gone)
    }

    /// Every object eviction must spare now.
    pub fn pinned(&self) -> HashSet<Digest> {
        let store = self.ep.store();
        let mut keep = HashSet::new();
        let current = self.ep.current();
        keep.insert(current.manifest_digest());
        cache::to_keep(store, current.manifest(), false, &mut keep);
        if let Some(p) = self.ep.previous() {
            keep.insert(p.manifest_digest());
            cache::to_keep(store, p.manifest(), true, &mut keep);
        }
        for pin in self.pins() {
            keep.insert(pin.manifest);
            if let Some(m) = store.get(&pin.manifest).ok().and_then(|b| Manifest::decode(&b).ok()) {
                cache::to_keep(store, &m, true, &mut keep);
            }
        }
        keep
    }

    /// Evicts if the cache is over its allowance; what the round did, if one ran. Plain
    /// copies go first (they are rebuilt from the objects), then objects, least recently
    /// used first, sparing the pinned sets.
    pub fn check(&self) -> Option<Evicted> {
        let mut last = self.round.lock().unwrap();
        let store = self.ep.store();
        let objects = store.usage()?.bytes;
        let copies = self.ep.plain().map_or(0, |p| p.usage().bytes);
        let disk = quota::disk(store.root()).ok()?;
        let target = self.quota.shrink_to(objects + copies, disk)?;
        let mut done = Evicted::default();
        let mut copies_left = copies;
        if let Some(plain) = self.ep.plain() {
            match plain.evict(target.saturating_sub(objects)) {
                Ok(e) => {
                    (done.objects, done.bytes, copies_left) = (e.objects, e.bytes, e.remaining);
                }
                Err(e) => tracing::warn!(error = %e, "evicting plain copies failed"),
            }
        }
        if objects + copies_left > target {
            let pinned = self.pinned();
            match store.evict(target.saturating_sub(copies_left), &pinned) {
                Ok(e) => {
                    self.ep.retain_complete(&pinned);
                    done.objects += e.objects;
                    done.bytes += e.bytes;
                }
                Err(e) => tracing::warn!(error = %e, "eviction failed"),
            }
        }
        done.remaining = store.usage()?.bytes + copies_left;
        if done.remaining > target {
            tracing::warn!(held = done.remaining, target, "pinned generations alone exceed the cache's allowance");
        }
        tracing::info!(objects = done.objects, bytes = done.bytes, remaining = done.remaining, "evicted from the cache");
        *last = Some(done);
        Some(done)
    }

    /// Asks the keeper thread to look now.
    pub fn kick(&self) {
        *self.wake.0.lock().unwrap() = true;
        self.wake.1.notify_one();
    }

    /// Checks every `CHECK_EVERY` or when kicked, until the process ends.
    pub fn run(self: &Arc<Self>) {
        let me = self.clone();
        std::thread::spawn(move || loop {
            {
                let woken = me.wake.0.lock().unwrap();
                let mut woken = me.wake.1.wait_timeout_while(woken, CHECK_EVERY, |w| !*w).unwrap().0;
                *woken = false;
            }
            me.check();
            // Every half minute, gives back to the system what the allocator holds free
            // (buffers of fetches and decodes that came and went), which it otherwise keeps
            // inside its arenas: 104 MiB resident against 86 after the rust tree was read.
            if me.rounds.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY_ROUNDS == 0 {
                // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
                unsafe { libc::malloc_trim(0) };
            }
        });
    }

    /// The cache's use and limits, for `imgfs status`.
    pub fn report(&self) -> CacheReport {
        let store = self.ep.store();
        let usage = store.usage().unwrap_or_default();
        let copies = self.ep.plain().map(|p| p.usage()).unwrap_or_default();
        let used = usage.bytes + copies.bytes;
        let disk = quota::disk(store.root()).ok();
        CacheReport {
            dir: store.root().to_path_buf(),
            used_bytes: used,
            objects: usage.objects,
            object_bytes: usage.bytes,
            plain_copies: copies.objects,
            plain_copy_bytes: copies.bytes,
            limit: self.quota.limit.to_string(),
            min_free: self.quota.min_free.to_string(),
            allowance_bytes: disk.map(|d| self.quota.allowance(used, d)),
            disk_available_bytes: disk.map(|d| d.available),
            evicted_objects: usage.evicted_objects + copies.evicted_objects,
            evicted_bytes: usage.evicted_bytes + copies.evicted_bytes,
            keeper_rounds: self.rounds.load(Ordering::Relaxed),
            last_eviction: self.round.lock().unwrap().map(|e| Eviction { objects: e.objects, bytes: e.bytes, remaining: e.remaining }),
        }
    }
}
