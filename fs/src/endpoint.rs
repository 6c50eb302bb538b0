//! The endpoint's state behind the mount: the store, the fetcher, the generations loaded
//! (current, previous, and any still open), and the switch between them. It is where trees
//! and chunks come from for `image` and `read`: the store first, the servers for what it
//! lacks, with a small memory cache of decompressed chunks in front.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use cache::Store;
use format::{Digest, EntryKind, Manifest, Tree};

use crate::fetch::{FetchError, Fetcher};
use crate::image::{Image, ImageError, Trees};
use crate::read::{ChunkError, Chunks};

/// Why a generation could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Its objects could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// An object is missing or corrupt in the store.
    #[error(transparent)]
    Object(#[from] cache::GetError),
    /// The manifest does not parse.
    #[error("manifest {digest} is malformed: {source}")]
    BadManifest {
        /// The manifest.
        digest: Digest,
        /// Why.
        #[source]
        source: format::DecodeError,
    },
    /// A tree does not parse.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The manifest is not the length its signed target gives.
    #[error("manifest {digest} is {got} bytes, its signed target says {signed}")]
    Length {
        /// The manifest.
        digest: Digest,
        /// Its length.
        got: u64,
        /// The signed length.
        signed: u64,
    },
    /// More objects or entries than an endpoint accepts.
    #[error("manifest {digest} {what}, more than the {limit} an endpoint accepts")]
    TooLarge {
        /// The manifest.
        digest: Digest,
        /// What was counted.
        what: String,
        /// The limit.
        limit: u64,
    },
}

/// Most objects a generation may claim, and most tree entries a load may walk: an image
/// ten times the largest distribution trees fits; a manifest claiming a billion objects
/// stops before anything below it is fetched.
pub const MAX_OBJECTS: u64 = 20_000_000;

#[derive(Clone)]
struct Decoded;

/// Decompressed, verified chunks in memory, weighed by their size.
type ChunkCache = quick_cache::sync::Cache<Digest, Arc<Vec<u8>>, Decoded>;

fn chunk_cache(bytes: u64) -> Arc<ChunkCache> {
    let bytes = bytes.max(1 << 20);
    // Estimated items: chunks average 64 KiB.
    Arc::new(quick_cache::sync::Cache::with_weighter((bytes / (64 << 10)).max(16) as usize, bytes, Decoded))
}

/// How many chunks after the one a read needs are decoded ahead of it.
pub const DECODE_AHEAD: usize = 16;

/// How many small files after one read from its start a miss fetches with it.
pub const FETCH_NEXT_FILES: usize = 64;

/// Threads decoding ahead: mostly waiting for the disk (a chunk is a file of the cache), so
/// more than the cores: a tree read after the page cache was dropped is bound by how many
/// reads of the cache are outstanding. They share one queue under a condvar, and a reader
/// wakes only as many as it gave work (a locked channel woke them all in turn).
const AHEAD_WORKERS: usize = 8;

/// Most chunks waiting to be decoded ahead; more are dropped (readers decode them).
const AHEAD_QUEUE: usize = 4 * DECODE_AHEAD * AHEAD_WORKERS;

/// Worker threads that read and decode, from the local store only, chunks a reader will want
/// next (the rest of a file, the next files of a directory), so that a sequential reader finds
/// them decoded: a file read after its pages were dropped waits for the disk and decodes on
/// every core at once instead of one chunk after another.
struct Ahead {
    queue: Arc<AheadQueue>,
}

#[derive(Default)]
struct AheadQueue {
    /// Waiting, in order, and the same as a set: a chunk is never queued twice.
    state: std::sync::Mutex<(std::collections::VecDeque<Digest>, HashSet<Digest>, bool)>,
    ready: std::sync::Condvar,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // The workers end.
        self.queue.state.lock().unwrap().2 = true;
        self.queue.ready.notify_all();
    }
}

impl Ahead {
    fn start(store: Arc<Store>, chunks: Arc<ChunkCache>) -> Option<Ahead> {
        let queue = Arc::new(AheadQueue::default());
        for i in 0..AHEAD_WORKERS {
            let (queue, store, chunks) = (queue.clone(), store.clone(), chunks.clone());
            let spawned = std::thread::Builder::new().name(format!("imgfs-ahead-{i}")).spawn(move || loop {
                let d = {
                    let mut st = queue.state.lock().unwrap();
                    loop {
                        if st.2 {
                            return;
                        }
                        if let Some(d) = st.0.pop_front() {
                            st.1.remove(&d);
                            break d;
                        }
                        st = queue.ready.wait(st).unwrap();
                    }
                };
                // Only what the cache holds: fetching is the reader's business.
                if chunks.contains_key(&d) || !store.contains(&d) {
                    continue;
                }
                // A reader asking for it meanwhile waits for this decode instead of repeating it.
                let _ = chunks.get_or_insert_with(&d, || store.get(&d).map(Arc::new));
            });
            if spawned.is_err() {
                return None;
            }
        }
        Some(Ahead { queue })
    }

    /// Queues the first `DECODE_AHEAD` of `then` not decoded or queued yet (dropped when the
    /// queue is full), waking as many workers as there is work. Costs the reader no disk
    /// access.
    fn want(&self, chunks: &ChunkCache, then: &[Digest]) {
        let mut added = 0;
        {
            let mut st = self.queue.state.lock().unwrap();
            for d in then.iter().take(DECODE_AHEAD) {
                if st.0.len() >= AHEAD_QUEUE || st.1.contains(d) || chunks.contains_key(d) {
                    continue;
                }
                st.0.push_back(*d);
                st.1.insert(*d);
                added += 1;
            }
        }
        for _ in 0..added.min(AHEAD_WORKERS) {
            self.queue.ready.notify_one();
        }
    }
}

impl quick_cache::Weighter<Digest, Arc<Vec<u8>>> for Decoded {
    fn weight(&self, _: &Digest, v: &Arc<Vec<u8>>) -> u64 {
        v.len() as u64 + 64
    }
}

/// A read waiting for the servers, while it lives.
struct Miss<'a>(&'a Endpoint);

impl<'a> Miss<'a> {
    fn start(ep: &'a Endpoint) -> Miss<'a> {
        ep.misses.fetch_add(1, Ordering::Relaxed);
        Miss(ep)
    }
}

impl Drop for Miss<'_> {
    fn drop(&mut self) {
        let ep = self.0;
        ep.last_miss.store(ep.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        ep.misses.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Generations being served and where their objects come from.
pub struct Endpoint {
    store: Arc<Store>,
    fetcher: Arc<Fetcher>,
    images: RwLock<HashMap<u64, Arc<Image>>>,
    current: RwLock<Arc<Image>>,
    previous: RwLock<Option<Arc<Image>>>,
    next_slot: AtomicU64,
    chunks: Arc<ChunkCache>,
    /// Decodes the chunks a read will want next, on other cores (`None`: one core).
    ahead: Option<Ahead>,
    /// Trees known to be present with everything below them.
    complete: std::sync::Mutex<HashSet<Digest>>,
    /// Plain copies of cached files, for passthrough (when enabled).
    plain: std::sync::OnceLock<cache::plain::Plain>,
    /// Whether opens are taken and plain copies passed through (`--passthrough`); else
    /// plain copies serve READs.
    pub passthrough: std::sync::atomic::AtomicBool,
    /// Reads waiting for objects from the servers now, and when the last one ended
    /// (milliseconds after `born`): a background fill yields to them.
    misses: std::sync::atomic::AtomicUsize,
    last_miss: AtomicU64,
    born: std::time::Instant,
    /// File opens so far in passthrough mode: read through imgfs, and handed to the kernel
    /// (in the default mode the kernel opens files without asking imgfs).
    pub opens: [AtomicU64; 2],
    /// Where slots and numbering are recorded for a restart (mounts only).
    journal: std::sync::OnceLock<Arc<crate::resume::Journal>>,
    /// Records READs while `imgfs trace` runs.
    pub tracer: crate::trace::Tracer,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("current", &self.current().label()).finish_non_exhaustive()
    }
}

/// Fetches and decodes a manifest, its dictionary and every tree it reaches, level by level in
/// one batch request per level, so a mount needs only metadata and few requests. Trees in
/// `complete` (every tree below them is present and was read) are not descended into, so
/// loading a patch of a loaded generation costs what changed, not the image's size; the
/// trees walked are added to `complete`.
pub fn load_metadata(fetcher: &Fetcher, manifest_digest: Digest, complete: &mut HashSet<Digest>) -> Result<Manifest, LoadError> {
    let store = fetcher.store();
    // With the generation's layout, its metadata comes as a range or two of the server's
    // serving packs (the manifest first in its own); without, one batch request per level.
    fetcher.note_generation(&manifest_digest);
    if !store.contains(&manifest_digest) && fetcher.use_layout(&manifest_digest) {
        fetcher.prefetch_metadata(&manifest_digest);
    }
    fetcher.fetch(&[manifest_digest])?;
    let bytes = store.get(&manifest_digest)?;
    let manifest = Manifest::decode(&bytes).map_err(|source| LoadError::BadManifest { digest: manifest_digest, source })?;
    let counts =
        [manifest.stats.objects, manifest.stats.files + manifest.stats.directories + manifest.stats.symlinks + manifest.stats.other];
    if let Some(n) = counts.into_iter().find(|n| *n > MAX_OBJECTS) {
        return Err(LoadError::TooLarge { digest: manifest_digest, what: format!("claims {n} objects"), limit: MAX_OBJECTS });
    }
    let mut entries = 0u64;
    let mut walked = Vec::new();
    let mut level: Vec<Digest> = vec![manifest.root];
    level.retain(|d| !complete.contains(d));
    // The dictionary (which no tree needs) comes with the first level: one request less.
    let mut dictionary = manifest.dictionary();
    if level.is_empty() {
        if let Some(dict) = dictionary {
            fetcher.fetch(&[dict])?;
        }
    }
    while !level.is_empty() {
        let mut decoded = fetcher.fetch_decoded(&[level.as_slice(), dictionary.take().as_slice()].concat())?;
        let mut next = Vec::new();
        for d in &level {
            let bytes = match decoded.remove(d) {
                Some(bytes) => bytes,
                None => store.get(d)?,
            };
            let tree = Tree::decode(&bytes).map_err(|e| ImageError::TreeUnavailable { digest: *d, why: e.to_string() })?;
            entries += tree.entries.len() as u64;
            if entries > MAX_OBJECTS {
                return Err(LoadError::TooLarge {
                    digest: manifest_digest,
                    what: format!("reaches over {entries} entries"),
                    limit: MAX_OBJECTS,
                });
            }
            next.extend(tree.entries.iter().filter_map(|e| match e.kind {
                EntryKind::Directory { tree } if !complete.contains(&tree) => Some(tree),
                _ => None,
            }));
        }
        walked.extend_from_slice(&level);
        next.sort();
        next.dedup();
        level = next;
    }
    // Only now is everything below each walked tree known to be present.
    complete.extend(walked);
    Ok(manifest)
}

impl Endpoint {
    /// Serves `manifest` (already loaded with `load_metadata`, which filled `complete`) as the
    /// current generation.
    pub fn new(
        fetcher: Arc<Fetcher>,
        manifest_digest: Digest,
        manifest: Manifest,
        complete: HashSet<Digest>,
        chunk_cache_bytes: u64,
    ) -> Endpoint {
        let image = Arc::new(Image::new(1, manifest_digest, manifest));
        let images = [(1, image.clone())].into_iter().collect();
        Endpoint::serving(fetcher, images, image, None, 2, complete, chunk_cache_bytes)
    }

    /// An endpoint serving `images`, `current` and `previous` among them.
    fn serving(
        fetcher: Arc<Fetcher>,
        images: HashMap<u64, Arc<Image>>,
        current: Arc<Image>,
        previous: Option<Arc<Image>>,
        next_slot: u64,
        complete: HashSet<Digest>,
        chunk_cache_bytes: u64,
    ) -> Endpoint {
        let chunks = chunk_cache(chunk_cache_bytes);
        Endpoint {
            ahead: Ahead::start(fetcher.store().clone(), chunks.clone()),
            chunks,
            store: fetcher.store().clone(),
            fetcher,
            images: RwLock::new(images),
            current: RwLock::new(current),
            previous: RwLock::new(previous),
            next_slot: AtomicU64::new(next_slot),
            complete: std::sync::Mutex::new(complete),
            plain: std::sync::OnceLock::new(),
            passthrough: std::sync::atomic::AtomicBool::new(false),
            misses: std::sync::atomic::AtomicUsize::new(0),
            last_miss: AtomicU64::new(0),
            born: std::time::Instant::now(),
            opens: Default::default(),
            journal: Default::default(),
            tracer: Default::default(),
        }
    }

    /// Serves the generations a previous process of this mount served, under the same slots,
    /// each numbered as it was (`dirs`: each slot's directories in numbering order). Every
    /// restored generation counts as known to the kernel until the mount ends.
    pub fn resume(
        fetcher: Arc<Fetcher>,
        session: &crate::resume::Session,
        mut dirs: HashMap<u64, Vec<u64>>,
        chunk_cache_bytes: u64,
    ) -> Result<Endpoint, LoadError> {
        let mut complete = HashSet::new();
        let mut images = HashMap::new();
        for s in &session.slots {
            let manifest = load_metadata(&fetcher, s.manifest, &mut complete)?;
            let image = Arc::new(Image::new(s.slot, s.manifest, manifest));
            images.insert(s.slot, image);
        }
        let current = images.get(&session.current).cloned().ok_or(ImageError::NoInode(session.current << crate::image::SLOT_SHIFT))?;
        let previous = session.previous.and_then(|p| images.get(&p).cloned());
        let ep = Endpoint::serving(fetcher, images.clone(), current, previous, session.next_slot, complete, chunk_cache_bytes);
        for (slot, image) in &images {
            image.replay(&ep, &dirs.remove(slot).unwrap_or_default())?;
            image.pin_for_kernel();
        }
        Ok(ep)
    }

    /// Records slots and numbering in `journal` from now on (the slots served now first).
    pub fn set_journal(&self, journal: Arc<crate::resume::Journal>, fresh: bool) -> Result<(), crate::resume::ResumeError> {
        let images: Vec<Arc<Image>> = self.images.read().unwrap().values().cloned().collect();
        for img in images {
            img.set_log(journal.log(img.slot(), fresh)?);
        }
        let _ = self.journal.set(journal);
        self.save_slots(self.current().slot(), self.previous().map(|p| p.slot()));
        Ok(())
    }

    /// Writes the slots to the journal as they will be once `current` and `previous` serve.
    fn save_slots(&self, current: u64, previous: Option<u64>) {
        let Some(j) = self.journal.get() else { return };
        let mut slots: Vec<crate::resume::Slot> = self
            .images
            .read()
            .unwrap()
            .values()
            .map(|i| crate::resume::Slot { slot: i.slot(), manifest: i.manifest_digest(), generation: i.label() })
            .collect();
        slots.sort_by_key(|s| s.slot);
        if let Err(e) = j.set_slots(slots, current, previous, self.next_slot.load(Ordering::Relaxed)) {
            tracing::error!(error = %e, "cannot record the generations served; a restart will not be able to resume this mount");
        }
    }

    /// A new generation under a new slot, recorded in the journal before anyone sees it.
    fn new_image(&self, manifest_digest: Digest, manifest: Manifest) -> Arc<Image> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let image = Arc::new(Image::new(slot, manifest_digest, manifest));
        if let Some(j) = self.journal.get() {
            match j.log(slot, true) {
                Ok(log) => image.set_log(log),
                Err(e) => tracing::error!(error = %e, "cannot record inode numbers; a restart will not be able to resume this mount"),
            }
        }
        self.images.write().unwrap().insert(slot, image.clone());
        image
    }

    /// `manifest` as an image that is not served (no inode of it reaches the kernel): what
    /// a switch reads before it happens, such as the paths of the new generation's trace.
    pub fn staged(&self, manifest_digest: Digest, manifest: Manifest) -> Arc<Image> {
        Arc::new(Image::new(self.next_slot.fetch_add(1, Ordering::Relaxed), manifest_digest, manifest))
    }

    /// The journal, if the mount keeps one.
    pub fn journal(&self) -> Option<&Arc<crate::resume::Journal>> {
        self.journal.get()
    }

    /// Loads a generation's metadata (see `load_metadata`), skipping trees already walked.
    pub fn load(&self, manifest_digest: Digest) -> Result<Manifest, LoadError> {
        let mut complete = std::mem::take(&mut *self.complete.lock().unwrap());
        let result = load_metadata(&self.fetcher, manifest_digest, &mut complete);
        self.complete.lock().unwrap().extend(complete);
        result
    }

    /// The fetcher.
    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    /// The generation new opens see.
    pub fn current(&self) -> Arc<Image> {
        self.current.read().unwrap().clone()
    }

    /// The generation before the current one, if any.
    pub fn previous(&self) -> Option<Arc<Image>> {
        self.previous.read().unwrap().clone()
    }

    /// The generation an inode number belongs to.
    pub fn image_of(&self, ino: u64) -> Option<Arc<Image>> {
        self.images.read().unwrap().get(&Image::slot_of(ino)).cloned()
    }

    /// Makes `manifest` the current generation; the old current becomes the previous one.
    /// Inodes of both stay valid. Returns the generation switched away from.
    pub fn switch_to(&self, manifest_digest: Digest, manifest: Manifest) -> Arc<Image> {
        if let Some(p) = self.previous().filter(|p| p.manifest_digest() == manifest_digest) {
            return self.swap(p);
        }
        let image = self.new_image(manifest_digest, manifest);
        self.swap(image)
    }

    /// Registers the generation served before this process started (from the state file), so
    /// a rollback needs no network.
    pub fn set_previous(&self, manifest_digest: Digest, manifest: Manifest) {
        let image = self.new_image(manifest_digest, manifest);
        self.save_slots(self.current().slot(), Some(image.slot()));
        *self.previous.write().unwrap() = Some(image);
    }

    /// Switches back to the previous generation; `None` if there is none.
    pub fn rollback(&self) -> Option<Arc<Image>> {
        let previous = self.previous()?;
        Some(self.swap(previous))
    }

    fn swap(&self, next: Arc<Image>) -> Arc<Image> {
        // Recorded first: a restart right after the swap must serve what the kernel saw.
        self.save_slots(next.slot(), Some(self.current().slot()));
        let old = std::mem::replace(&mut *self.current.write().unwrap(), next.clone());
        *self.previous.write().unwrap() = Some(old.clone());
        // Generations neither current nor previous stay while the kernel may still use their
        // inodes (it holds lookups of them, or a file of theirs is open); they go at the
        // first switch after that.
        let keep = [next.slot(), old.slot()];
        self.images.write().unwrap().retain(|slot, img| keep.contains(slot) || img.known_to_kernel() || Arc::strong_count(img) > 1);
        self.save_slots(next.slot(), Some(old.slot()));
        old
    }
}

impl Trees for Endpoint {
    fn tree(&self, digest: &Digest) -> Result<Arc<Tree>, ImageError> {
        let unavailable = |why: String| ImageError::TreeUnavailable { digest: *digest, why };
        let bytes = self.object(digest, &[]).map_err(unavailable)?;
        Tree::decode(&bytes).map(Arc::new).map_err(|e| unavailable(e.to_string()))
    }
}

impl Chunks for Endpoint {
    fn chunk(&self, digest: &Digest, then: &[Digest]) -> Result<Arc<Vec<u8>>, ChunkError> {
        self.decode_ahead(then);
        // A decode of it under way (ahead, or another reader's) is waited for, not repeated.
        self.chunks.get_or_insert_with(digest, || self.object(digest, then).map(Arc::new)).map_err(|why| ChunkError { digest: *digest, why })
    }
}

impl Endpoint {
    /// An object from the store, fetched first if absent (with `then`, objects likely wanted
    /// next, in the same request), and the dictionary it names if the store lacks it.
    fn object(&self, digest: &Digest, then: &[Digest]) -> Result<Vec<u8>, String> {
        // Two rounds: the cache may evict the object between the fetch and the read.
        for round in 0..2 {
            if !self.store.contains(digest) {
                let mut want = vec![*digest];
                want.extend(then.iter().filter(|d| !self.store.contains(d)));
                let _waiting = Miss::start(self);
                // The objects after it are a bonus: only the one asked for must arrive.
                if let Err(e) = self.fetcher.fetch(&want) {
                    if !self.store.contains(digest) {
                        return Err(e.to_string());
                    }
                }
            }
            match self.store.get(digest) {
                Ok(d) => return Ok(d),
                Err(cache::GetError::NotFound(_)) if round == 0 => continue,
                // Compressed with a dictionary this cache lacks (the chunk was first stored by
                // another image): the frame names it; fetch it (verified like any object), retry.
                Err(cache::GetError::MissingDictionary { dictionary, .. }) => {
                    self.fetcher.fetch(&[dictionary]).map_err(|e| e.to_string())?;
                    return self.store.get(digest).map_err(|e| e.to_string());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("object {digest} was evicted twice while being read"))
    }

    /// Whether a read is waiting for the servers now, or was within `quiet`.
    pub fn reads_missing(&self, quiet: std::time::Duration) -> bool {
        self.misses.load(Ordering::Relaxed) > 0
            || self.born.elapsed().as_millis() as u64 <= self.last_miss.load(Ordering::Relaxed) + quiet.as_millis() as u64
                && self.last_miss.load(Ordering::Relaxed) > 0
    }

    /// Before a read from the start of a file whose chunks are `extents`: if its first chunk
    /// is missing, fetches it with the rest of the file (up to the read-ahead) and the
    /// missing chunks `next` lists (the small files after it in its directory) in one request,
    /// so a walk of a cold tree asks once per stretch of a directory rather than once per file,
    /// and what it brings lands together (one pack) in the order it will be read again. A
    /// failure is left to the read, which fetches what it needs itself.
    pub fn fetch_with_next(&self, extents: &[format::Extent], next: impl FnOnce() -> Vec<Digest>) {
        let Some(first) = extents.first() else { return };
        if self.store.contains(&first.digest) {
            return;
        }
        let mut want: Vec<Digest> = extents.iter().take(1 + crate::read::READ_AHEAD_CHUNKS).map(|x| x.digest).collect();
        want.extend(next().into_iter().filter(|d| !self.store.contains(d)));
        let _waiting = Miss::start(self);
        if let Err(e) = self.fetcher.fetch(&want) {
            tracing::debug!(error = %e, "fetching a file with the next ones failed; the read fetches its own");
        }
    }

    /// Has `digests` (chunks a reader will want soon) decoded in the background if the cache
    /// holds them.
    pub fn decode_ahead(&self, digests: &[Digest]) {
        if let Some(a) = &self.ahead {
            a.want(&self.chunks, digests);
        }
    }

    /// Forgets which trees are complete except those in `kept` (after an eviction, which
    /// spares every tree of the generations kept, so only those are known to be whole).
    pub fn retain_complete(&self, kept: &HashSet<Digest>) {
        self.complete.lock().unwrap().retain(|d| kept.contains(d));
    }

    /// Keeps plain copies of cached files in `plain` (see `materialise`).
    pub fn enable_plain(&self, plain: cache::plain::Plain) {
        let _ = self.plain.set(plain);
    }

    /// The plain copies, if enabled.
    pub fn plain(&self) -> Option<&cache::plain::Plain> {
        self.plain.get()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// Checks that the manifest `digest` (in the store) is `length` bytes long, as its signed
/// target says.
pub fn check_length(fetcher: &Fetcher, digest: Digest, length: u64) -> Result<(), LoadError> {
    let bytes = fetcher.store().get(&digest)?;
    if bytes.len() as u64 != length {
        return Err(LoadError::Length { digest, got: bytes.len() as u64, signed: length });
    }
    Ok(())
}
