//! What a generation reaches: its dictionary, every tree and every data chunk, each once.
//! Push, garbage collection and the endpoint's prefetch all ask this question.

use std::collections::HashSet;

use format::{Digest, EntryKind, Manifest, Tree};

use crate::{GetError, Store};

/// Why the objects of a generation could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// A tree (or the dictionary) is missing or corrupt.
    #[error(transparent)]
    Object(#[from] GetError),
    /// A tree object does not parse.
    #[error("tree object {digest} is malformed")]
    BadTree {
        /// The tree.
        digest: Digest,
        /// Why.
        #[source]
        source: format::DecodeError,
    },
}

/// Every object `manifest` reaches except the manifest itself: the dictionary, then trees
/// depth-first with the chunks of each tree's files after it, then any other dictionary a
/// chunk present here was compressed with (a chunk is stored once, by whichever image stored
/// it first, and keeps that image's dictionary). Trees are read and verified; of chunks only
/// the frame header is read.
pub fn reachable(store: &Store, manifest: &Manifest) -> Result<Vec<Digest>, ReachError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    reachable_into(store, manifest, &mut seen, &mut out)?;
    Ok(out)
}

/// Like `reachable`, but adds to `seen` (skipping what it already holds) so many generations
/// can be walked sharing their common trees once.
pub fn reachable_into(store: &Store, manifest: &Manifest, seen: &mut HashSet<Digest>, out: &mut Vec<Digest>) -> Result<(), ReachError> {
    walk(store, manifest, seen, out, None)
}

/// What `reachable_into` adds, split as an endpoint reads a generation: the side objects and
/// every tree (what a mount needs before its first read), then the data chunks and their
/// dictionaries. How the server lays a generation out in its serving packs.
pub fn metadata_and_data(store: &Store, manifest: &Manifest, seen: &mut HashSet<Digest>) -> Result<(Vec<Digest>, Vec<Digest>), ReachError> {
    let mut data = Vec::new();
    let mut metadata = Vec::new();
    walk(store, manifest, seen, &mut data, Some(&mut metadata))?;
    Ok((metadata, data))
}

/// The walk behind both: side objects and trees go to `metadata` when given, else to `out`
/// with the chunks.
fn walk(store: &Store, manifest: &Manifest, seen: &mut HashSet<Digest>, out: &mut Vec<Digest>, mut metadata: Option<&mut Vec<Digest>>) -> Result<(), ReachError> {
    let start = out.len();
    let mut meta_out = |d: Digest, out: &mut Vec<Digest>| match metadata.as_deref_mut() {
        Some(m) => m.push(d),
        None => out.push(d),
    };
    for d in manifest.side_objects() {
        if seen.insert(d) {
            meta_out(d, out);
        }
    }
    let mut stack = vec![manifest.root];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        meta_out(t, out);
        let bytes = store.get(&t)?;
        let tree = Tree::decode(&bytes).map_err(|source| ReachError::BadTree { digest: t, source })?;
        for e in tree.entries {
            match e.kind {
                EntryKind::Directory { tree } => stack.push(tree),
                EntryKind::Regular { extents, .. } => out.extend(extents.into_iter().map(|x| x.digest).filter(|d| seen.insert(*d))),
                _ => {}
            }
        }
    }
    let mut dictionaries: Vec<Digest> = out[start..].iter().filter_map(|d| store.dictionary_of(d)).filter(|d| !seen.contains(d)).collect();
    dictionaries.sort();
    dictionaries.dedup();
    for d in dictionaries {
        seen.insert(d);
        out.push(d);
    }
    Ok(())
}

/// What of a generation to keep through eviction: its dictionary and every tree reachable
/// through trees present, and with `chunks` also every data chunk those trees name (present
/// or not, so a chunk that arrives later is kept too) and the dictionaries named by the chunks
/// present. Unlike `reachable` it never fails: absent or unreadable trees are skipped with
/// what is below them. Adds to `seen`.
pub fn to_keep(store: &Store, manifest: &Manifest, chunks: bool, seen: &mut HashSet<Digest>) {
    if let Some(d) = manifest.dictionary() {
        seen.insert(d);
    }
    let mut stack = vec![manifest.root];
    let mut data = Vec::new();
    // Trees already in `seen` may have been walked without their chunks: walk them again.
    let mut walked = HashSet::new();
    while let Some(t) = stack.pop() {
        if !walked.insert(t) {
            continue;
        }
        let Some(tree) = store.get(&t).ok().and_then(|b| Tree::decode(&b).ok()) else { continue };
        seen.insert(t);
        for e in tree.entries {
            match e.kind {
                EntryKind::Directory { tree } => stack.push(tree),
                EntryKind::Regular { extents, .. } if chunks => {
                    data.extend(extents.into_iter().map(|x| x.digest).filter(|d| !seen.contains(d)))
                }
                _ => {}
            }
        }
    }
    data.sort();
    data.dedup();
    for d in &data {
        if let Some(dict) = store.dictionary_of(d) {
            seen.insert(dict);
        }
    }
    seen.extend(data);
}
