//! `push`: send a generation to a server. Only the objects the server lacks are uploaded, in
//! parallel; an interrupted push resumes by asking again, so nothing that arrived is re-sent.
//! The manifest is published last, and the server refuses it unless every object is there.

use std::sync::atomic::{AtomicU64, Ordering};

use format::Digest;
use rayon::prelude::*;

use crate::browse::ReadError;
use crate::remote::{Remote, RemoteError};
use crate::repo::Generation;

/// Why a push failed. What was uploaded stays on the server; pushing again resumes.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The local generation could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The server refused or could not be reached.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// Objects the generation reaches (manifest excluded).
    pub objects: u64,
    /// Objects the server lacked and received.
    pub uploaded: u64,
    /// Framed bytes sent.
    pub uploaded_bytes: u64,
    /// The server's description of the published generation.
    pub published: api::generations::Generation,
}

/// Upload requests in flight at once.
const PARALLEL_UPLOADS: usize = 4;
/// Digests per missing-objects query.
const QUERY_BATCH: usize = 20_000;
/// Framed bytes per upload request; an object larger than this goes alone. A batch the server
/// or a proxy refuses as too large is split in halves, down to single objects.
const UPLOAD_BATCH_BYTES: u64 = 4 << 20;
/// Objects per upload request.
const UPLOAD_BATCH_OBJECTS: usize = 1024;

/// Every object a generation reaches except its manifest: dictionary, trees, file data.
pub fn reachable(store: &cache::Store, gen: &Generation) -> Result<Vec<Digest>, ReadError> {
    cache::reachable(store, &gen.manifest).map_err(|e| match e {
        cache::ReachError::Object(e) => ReadError::Object(e),
        cache::ReachError::BadTree { digest, source } => ReadError::Decode { digest, source },
    })
}

/// Groups objects into upload batches of at most `UPLOAD_BATCH_BYTES` (by stored size) and
/// `UPLOAD_BATCH_OBJECTS`.
fn batches(store: &cache::Store, digests: &[Digest]) -> Vec<Vec<Digest>> {
    let mut out: Vec<Vec<Digest>> = Vec::new();
    let mut size = u64::MAX;
    for d in digests {
        let len = store.stored_len(d).unwrap_or(0);
        if size.saturating_add(len) > UPLOAD_BATCH_BYTES || out.last().is_some_and(|b| b.len() >= UPLOAD_BATCH_OBJECTS) {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("pushed above").push(*d);
    }
    out
}

/// Pushes `gen` from `store` to `remote`.
pub fn push(store: &cache::Store, gen: &Generation, remote: &Remote) -> Result<PushReport, PushError> {
    let all = reachable(store, gen)?;
    let mut missing = Vec::new();
    let mut uploaded_first = 0u64;
    for batch in all.chunks(QUERY_BATCH) {
        missing.extend(remote.missing(batch)?);
    }
    let bytes = AtomicU64::new(0);
    // The server verifies every object as it arrives, and objects compressed with a
    // dictionary cannot be verified without it: dictionaries go first, alone. Usually that is
    // the image's own; a chunk first stored by another image keeps that image's dictionary.
    let mut dictionaries: Vec<Digest> = gen.manifest.dictionary().into_iter().collect();
    dictionaries.extend(missing.iter().filter_map(|d| store.dictionary_of(d)));
    dictionaries.sort();
    dictionaries.dedup();
    dictionaries.retain(|d| missing.contains(d));
    for dict in dictionaries {
        let framed = store.get_framed(&dict).map_err(ReadError::from)?;
        bytes.fetch_add(framed.len() as u64, Ordering::Relaxed);
        remote.put_object(&dict, framed)?;
        missing.retain(|d| *d != dict);
        uploaded_first += 1;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(PARALLEL_UPLOADS).build().expect("thread pool");
    let refused = AtomicU64::new(u64::MAX);
    pool.install(|| {
        let encode = |batch: &[Digest]| -> Result<Vec<u8>, PushError> {
            let mut records = Vec::new();
            for d in batch {
                let framed = store.get_framed(d).map_err(ReadError::from)?;
                format::record::encode_into(&mut records, d, &framed);
            }
            Ok(records)
        };
        batches(store, &missing).par_iter().try_for_each(|batch| upload_fitting(store, remote, batch, &encode, &refused, &bytes))
    })?;
    let manifest = store.get(&gen.digest).map_err(ReadError::from)?;
    let published = remote.publish(manifest)?;
    Ok(PushReport {
        objects: all.len() as u64,
        uploaded: missing.len() as u64 + uploaded_first,
        uploaded_bytes: bytes.into_inner(),
        published,
    })
}

/// Uploads `batch`, split in halves (and those again) while the server or a proxy in front of
/// it refuses the request body as too large; only a single object refused fails the push.
/// `refused` is the smallest body refused so far: a batch whose objects alone take that much
/// is split before it is sent. `sent` counts the bytes accepted.
fn upload_fitting(
    store: &cache::Store,
    remote: &Remote,
    batch: &[Digest],
    encode: &(dyn Fn(&[Digest]) -> Result<Vec<u8>, PushError> + Sync),
    refused: &AtomicU64,
    sent: &AtomicU64,
) -> Result<(), PushError> {
    let halves = |batch: &[Digest]| -> Result<(), PushError> {
        let (a, b) = batch.split_at(batch.len() / 2);
        upload_fitting(store, remote, a, encode, refused, sent)?;
        upload_fitting(store, remote, b, encode, refused, sent)
    };
    let at_least: u64 = batch.iter().map(|d| store.stored_len(d).unwrap_or(0)).sum();
    if batch.len() > 1 && at_least >= refused.load(Ordering::Relaxed) {
        return halves(batch);
    }
    let records = encode(batch)?;
    let len = records.len() as u64;
    match remote.upload(records) {
        Ok(_) => {
            sent.fetch_add(len, Ordering::Relaxed);
            Ok(())
        }
        Err(RemoteError::TooLarge { .. }) if batch.len() > 1 => {
            refused.fetch_min(len, Ordering::Relaxed);
            halves(batch)
        }
        Err(e) => Err(e.into()),
    }
}
