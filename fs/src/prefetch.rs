//! Prefetch: makes a whole generation present in the cache for offline use. Loads its
//! metadata, lists the data chunks the cache lacks and fetches them in batches, a few at once,
//! optionally under a bandwidth cap. Interrupted, it resumes where it stopped: what arrived is
//! in the cache and is not asked for again. A read trace (`trace.rs`) is prefetched the same
//! way, its chunks in the order the trace read them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use format::{Digest, EntryKind, Tree};

use api::control::Trace;

use crate::endpoint::{Endpoint, LoadError};
use crate::image::Image;
use crate::fetch::FetchError;

/// Decoded bytes per batch request without a bandwidth cap.
const BATCH_BYTES: u64 = 8 << 20;
/// Objects per batch request at most.
const BATCH_OBJECTS: usize = 2048;
/// Batches in flight without a bandwidth cap.
const PARALLEL: usize = 4;

/// Why a prefetch stopped.
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    /// The generation's metadata could not be loaded.
    #[error("loading the generation's metadata: {0}")]
    Load(#[from] LoadError),
    /// Data could not be fetched.
    #[error("fetching data: {0}")]
    Fetch(#[from] FetchError),
}

/// How far a prefetch got (a control-socket message).
pub use api::control::Progress;

/// Fetches everything of generation `manifest_digest` the cache lacks. `max_rate` caps the
/// bytes received per second. `report` is called after the listing and after each batch.
pub fn prefetch(
    ep: &Endpoint,
    manifest_digest: Digest,
    max_rate: Option<u64>,
    report: &(dyn Fn(&Progress) + Sync),
) -> Result<Progress, PrefetchError> {
    prefetch_paced(ep, manifest_digest, Pace { max_rate, yield_to_reads: false }, report)
}

/// How a prefetch shares the network.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace {
    /// Most bytes received per second.
    pub max_rate: Option<u64>,
    /// Wait while reads of the mount wait for the servers (and a moment after): a background
    /// fill never slows a program down.
    pub yield_to_reads: bool,
}

/// How long after a read's miss a yielding prefetch waits before its next batch.
const QUIET: Duration = Duration::from_millis(200);

/// `prefetch`, paced by `pace`.
pub fn prefetch_paced(
    ep: &Endpoint,
    manifest_digest: Digest,
    pace: Pace,
    report: &(dyn Fn(&Progress) + Sync),
) -> Result<Progress, PrefetchError> {
    let manifest = ep.load(manifest_digest)?;
    let store = ep.store();
    // Every tree is present now (load fetched them); list the chunks.
    let mut seen = HashSet::new();
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    let mut chunks = 0u64;
    let mut stack = vec![manifest.root];
    let mut trees = HashSet::new();
    while let Some(t) = stack.pop() {
        if !trees.insert(t) {
            continue;
        }
        let tree = Tree::decode(&store.get(&t).map_err(LoadError::from)?)
            .map_err(|e| LoadError::Image(crate::image::ImageError::TreeUnavailable { digest: t, why: e.to_string() }))?;
        for e in tree.entries {
            match e.kind {
                EntryKind::Directory { tree } => stack.push(tree),
                EntryKind::Regular { extents, .. } => {
                    for x in extents {
                        if seen.insert(x.digest) {
                            chunks += 1;
                            if !store.contains(&x.digest) {
                                wanted.push((x.digest, x.len as u64));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    fetch_wanted(ep, chunks, wanted, pace, report)
}

/// The chunks the reads of `trace` need in `image`, in the trace's order, each once, with
/// their sizes; and how many reads name no regular file of `image` (a trace recorded on
/// another generation: its other paths still count).
pub fn trace_chunks(ep: &Endpoint, image: &Image, trace: &Trace) -> (Vec<(Digest, u64)>, u64) {
    let mut inos: HashMap<String, Option<u64>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut skipped = 0;
    for r in &trace.reads {
        let ino = *inos.entry(r.path.clone()).or_insert_with(|| {
            let path = api::control::unescape_path(&r.path)?;
            path.split(|b| *b == b'/').filter(|n| !n.is_empty()).try_fold(image.root_ino(), |dir, name| {
                image.lookup(ep, dir, name).ok().flatten().map(|a| a.ino)
            })
        });
        let extents = ino.and_then(|i| image.file(i).ok().flatten());
        let Some((_, extents)) = extents else {
            skipped += 1;
            continue;
        };
        let end = r.offset.saturating_add(r.len);
        let first = extents.partition_point(|x| x.offset + x.len as u64 <= r.offset);
        for x in extents[first..].iter().take_while(|x| x.offset < end) {
            if seen.insert(x.digest) {
                out.push((x.digest, x.len as u64));
            }
        }
    }
    (out, skipped)
}

/// Fetches, in the trace's order and in batches, what the cache lacks of the data `trace`
/// reads in `image` (the current generation, on mount or switch: the data a boot or an
/// application start reads first).
pub fn prefetch_trace(
    ep: &Endpoint,
    image: &Image,
    trace: &Trace,
    max_rate: Option<u64>,
    report: &(dyn Fn(&Progress) + Sync),
) -> Result<Progress, PrefetchError> {
    let (chunks, skipped) = trace_chunks(ep, image, trace);
    if skipped > 0 {
        tracing::info!(skipped, generation = %image.label(), "trace reads of files this generation lacks were skipped");
    }
    let store = ep.store();
    let total = chunks.len() as u64;
    let wanted: Vec<(Digest, u64)> = chunks.into_iter().filter(|(d, _)| !store.contains(d)).collect();
    fetch_wanted(ep, total, wanted, Pace { max_rate, yield_to_reads: false }, report)
}

/// Fetches `wanted` (of `chunks` listed) in batches, in order, a few at once unless capped.
fn fetch_wanted(
    ep: &Endpoint,
    chunks: u64,
    wanted: Vec<(Digest, u64)>,
    pace: Pace,
    report: &(dyn Fn(&Progress) + Sync),
) -> Result<Progress, PrefetchError> {
    let max_rate = pace.max_rate;
    let progress = Mutex::new(Progress {
        chunks,
        cached_before: chunks - wanted.len() as u64,
        objects_total: wanted.len() as u64,
        bytes_total: wanted.iter().map(|w| w.1).sum(),
        ..Progress::default()
    });
    report(&progress.lock().unwrap());
    let batch_bytes = max_rate.map_or(BATCH_BYTES, |r| (r / 2).clamp(64 << 10, BATCH_BYTES));
    let mut batches: Vec<Vec<(Digest, u64)>> = Vec::new();
    let mut cur: Vec<(Digest, u64)> = Vec::new();
    let mut cur_bytes = 0;
    for w in wanted {
        if !cur.is_empty() && (cur_bytes + w.1 > batch_bytes || cur.len() >= BATCH_OBJECTS) {
            batches.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur_bytes += w.1;
        cur.push(w);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    let start = Instant::now();
    let received_before = ep.fetcher().traffic().bytes;
    let next = AtomicU64::new(0);
    let failure: Mutex<Option<FetchError>> = Mutex::new(None);
    let workers = if max_rate.is_some() { 1 } else { PARALLEL };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= batches.len() || failure.lock().unwrap().is_some() {
                    return;
                }
                let batch = &batches[i];
                while pace.yield_to_reads && ep.reads_missing(QUIET) {
                    std::thread::sleep(QUIET / 4);
                }
                let digests: Vec<Digest> = batch.iter().map(|b| b.0).collect();
                if let Err(e) = ep.fetcher().fetch(&digests) {
                    *failure.lock().unwrap() = Some(e);
                    return;
                }
                let received = ep.fetcher().traffic().bytes - received_before;
                {
                    let mut p = progress.lock().unwrap();
                    p.objects_done += batch.len() as u64;
                    p.bytes_done += batch.iter().map(|b| b.1).sum::<u64>();
                    p.transferred = received;
                    report(&p);
                }
                if let Some(rate) = max_rate {
                    // Wait until the bytes received so far fit under the cap.
                    let due = Duration::from_secs_f64(received as f64 / rate.max(1) as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e.into());
    }
    let done = *progress.lock().unwrap();
    Ok(done)
}
