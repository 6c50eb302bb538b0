//! `push`: send a generation to a server. Only the objects the server lacks are uploaded, in
//! parallel; an interrupted push resumes by asking again, so nothing that arrived is re-sent.
//! The manifest is published last, and the server refuses it unless every object is there.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use format::{Digest, EntryKind};
use rayon::prelude::*;

use crate::browse::{load_tree, ReadError};
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
    pub published: serde_json::Value,
}

/// Upload requests in flight at once.
const PARALLEL_UPLOADS: usize = 8;
/// Digests per missing-objects query.
const QUERY_BATCH: usize = 20_000;

/// Every object a generation reaches except its manifest: dictionary, trees, file data.
pub fn reachable(store: &cache::Store, gen: &Generation) -> Result<Vec<Digest>, ReadError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if let Some(d) = gen.manifest.dictionary() {
        seen.insert(d);
        out.push(d);
    }
    let mut stack = vec![gen.manifest.root];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        out.push(t);
        for e in load_tree(store, &t)?.entries {
            match e.kind {
                EntryKind::Directory { tree } => stack.push(tree),
                EntryKind::Regular { extents, .. } => out.extend(extents.into_iter().map(|x| x.digest).filter(|d| seen.insert(*d))),
                _ => {}
            }
        }
    }
    Ok(out)
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
    // The server verifies every object as it arrives, and objects compressed with the image's
    // dictionary cannot be verified without it: the dictionary goes first, alone.
    if let Some(dict) = gen.manifest.dictionary().filter(|d| missing.contains(d)) {
        let framed = store.get_framed(&dict).map_err(ReadError::from)?;
        bytes.fetch_add(framed.len() as u64, Ordering::Relaxed);
        remote.put_object(&dict, framed)?;
        missing.retain(|d| *d != dict);
        uploaded_first += 1;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(PARALLEL_UPLOADS).build().expect("thread pool");
    pool.install(|| {
        missing.par_iter().try_for_each(|d| -> Result<(), PushError> {
            let framed = store.get_framed(d).map_err(ReadError::from)?;
            bytes.fetch_add(framed.len() as u64, Ordering::Relaxed);
            remote.put_object(d, framed)?;
            Ok(())
        })
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
