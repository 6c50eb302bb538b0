//! What a diff between two generations means: the activation policy it calls for (`activation`)
//! and what it changes for security (`security`). Both read the generations through the store
//! only, and only the files they need (unit files, ELF headers of unit programs and their
//! libraries); paths are resolved inside the image, through the image's own symlinks, never on
//! the host.

use std::collections::HashMap;
use std::rc::Rc;

use cache::Store;
use format::{Digest, Entry, EntryKind, Manifest, Tree};

use crate::browse::{self, display_bytes, load_tree, ReadError};
use crate::diff::{self, Delta};

mod activation;
mod elf;
mod security;
mod units;

pub use activation::derive_activation;
pub use elf::{parse_elf, ElfInfo};
pub use security::{security_summary, CapabilityChange, ListenChange, SecuritySummary, SetidChange, UnitChange, WorldWritable};
pub use units::{unit_of_path, UnitFile};

/// Symlinks followed while resolving one path before giving up (the kernel's limit is 40).
const MAX_SYMLINKS: usize = 40;

/// One generation opened for reading paths: trees are loaded once and kept.
pub(crate) struct Image<'a> {
    store: &'a Store,
    root: Digest,
    trees: HashMap<Digest, Rc<Tree>>,
}

/// A path resolved inside an image.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The real path (no symlinks in it), components joined by `/`; empty for the root.
    pub path: String,
    /// The entry it names; None for the root.
    pub entry: Option<Entry>,
    /// The paths of the symlinks followed on the way, as they are stored in the tree.
    pub via: Vec<String>,
}

impl<'a> Image<'a> {
    pub(crate) fn new(store: &'a Store, manifest: &Manifest) -> Image<'a> {
        Image { store, root: manifest.root, trees: HashMap::new() }
    }

    pub(crate) fn store(&self) -> &'a Store {
        self.store
    }

    fn tree(&mut self, digest: &Digest) -> Result<Rc<Tree>, ReadError> {
        if let Some(t) = self.trees.get(digest) {
            return Ok(t.clone());
        }
        let t = Rc::new(load_tree(self.store, digest)?);
        self.trees.insert(*digest, t.clone());
        Ok(t)
    }

    /// Resolves `path` (absolute or relative to the root: both mean the same inside an image)
    /// through the image's symlinks, the last component's too when `follow_last`. None when a
    /// component is missing, is not a directory, or the links loop.
    pub(crate) fn resolve(&mut self, path: &str, follow_last: bool) -> Result<Option<Resolved>, ReadError> {
        // Components still to walk, in reverse so the next one is at the end.
        let mut todo: Vec<String> = path.split('/').rev().filter(|c| !c.is_empty() && *c != ".").map(String::from).collect();
        // The directories walked so far, with their trees.
        let mut dirs: Vec<(String, Digest)> = Vec::new();
        let mut via = Vec::new();
        let mut last: Option<Entry> = None;
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            if let Some(e) = last.take() {
                let EntryKind::Directory { tree } = e.kind else { return Ok(None) };
                let name = display_bytes(&e.name);
                dirs.push((name, tree));
            }
            if part == ".." {
                dirs.pop();
                continue;
            }
            let here = dirs.last().map_or(self.root, |d| d.1);
            let tree = self.tree(&here)?;
            let Some(entry) = tree.get(part.as_bytes()).cloned() else { return Ok(None) };
            if let EntryKind::Symlink { target } = &entry.kind {
                if follow_last || !todo.is_empty() {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Ok(None);
                    }
                    via.push(join_names(&dirs, &part));
                    let target = String::from_utf8_lossy(target).into_owned();
                    if target.starts_with('/') {
                        dirs.clear();
                    }
                    todo.extend(target.split('/').rev().filter(|c| !c.is_empty() && *c != ".").map(String::from));
                    continue;
                }
            }
            last = Some(entry);
        }
        let path = match &last {
            Some(e) => join_names(&dirs, &display_bytes(&e.name)),
            None => dirs.iter().map(|d| d.0.as_str()).collect::<Vec<_>>().join("/"),
        };
        if last.is_none() && !dirs.is_empty() {
            // The path ended on a directory reached through `..` or a link: name it as an entry.
            let (name, _) = dirs.pop().unwrap();
            let parent = dirs.last().map_or(self.root, |d| d.1);
            let entry = self.tree(&parent)?.get(name.as_bytes()).cloned();
            return Ok(Some(Resolved { path, entry, via }));
        }
        Ok(Some(Resolved { path, entry: last, via }))
    }

    /// The entries of the directory at `path` (symlinks followed), or None if there is none.
    pub(crate) fn list(&mut self, path: &str) -> Result<Option<(String, Rc<Tree>)>, ReadError> {
        let Some(r) = self.resolve(path, true)? else { return Ok(None) };
        let digest = match &r.entry {
            None => self.root,
            Some(Entry { kind: EntryKind::Directory { tree }, .. }) => *tree,
            Some(_) => return Ok(None),
        };
        Ok(Some((r.path, self.tree(&digest)?)))
    }

    /// The whole content of the regular file at `path` (symlinks followed), if it is one.
    pub(crate) fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let Some(Resolved { entry: Some(e), .. }) = self.resolve(path, true)? else { return Ok(None) };
        if !matches!(e.kind, EntryKind::Regular { .. }) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        browse::write_content(self.store, &e, &mut bytes)?;
        Ok(Some(bytes))
    }
}

fn join_names(dirs: &[(String, Digest)], name: &str) -> String {
    let mut p: Vec<&str> = dirs.iter().map(|d| d.0.as_str()).collect();
    p.push(name);
    p.join("/")
}

/// Reads byte ranges of a regular file, fetching only the chunks that cover them.
pub(crate) struct RangeReader<'a> {
    store: &'a Store,
    size: u64,
    extents: &'a [format::Extent],
    chunks: HashMap<Digest, Rc<Vec<u8>>>,
}

impl<'a> RangeReader<'a> {
    /// A reader of `entry`, or None if it is not a regular file.
    pub(crate) fn new(store: &'a Store, entry: &'a Entry) -> Option<RangeReader<'a>> {
        let EntryKind::Regular { size, extents } = &entry.kind else { return None };
        Some(RangeReader { store, size: *size, extents, chunks: HashMap::new() })
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file; holes read as zeros).
    pub(crate) fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = vec![0u8; (end - offset) as usize];
        for x in self.extents {
            let (xs, xe) = (x.offset, x.offset + u64::from(x.len));
            if xe <= offset || xs >= end {
                continue;
            }
            let data = match self.chunks.get(&x.digest) {
                Some(d) => d.clone(),
                None => {
                    let d = Rc::new(self.store.get(&x.digest)?.to_vec());
                    self.chunks.insert(x.digest, d.clone());
                    d
                }
            };
            let (from, to) = (offset.max(xs), end.min(xe));
            out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(&data[(from - xs) as usize..(to - xs) as usize]);
        }
        Ok(out)
    }
}

/// A change that counts for the analyses: touch-only changes (mtime, link count) do not.
pub(crate) fn counts(d: &Delta<'_>) -> bool {
    d.old.is_none() || d.new.is_none() || d.what.iter().any(|w| !matches!(*w, "mtime" | "links"))
}

/// `added`, `removed` or `changed`.
pub(crate) fn verb(d: &Delta<'_>) -> &'static str {
    match (d.old, d.new) {
        (None, _) => "added",
        (_, None) => "removed",
        _ => "changed",
    }
}

/// Collects the walk's differences from `a` to `b` that count, as (path, old, new).
pub(crate) fn changes(store: &Store, a: &Manifest, b: &Manifest) -> Result<Vec<Changed>, ReadError> {
    let mut out = Vec::new();
    diff::walk_changes(store, &a.root, &b.root, &mut |d| {
        if counts(&d) {
            out.push(Changed { path: display_bytes(d.path), old: d.old.cloned(), new: d.new.cloned(), verb: verb(&d) });
        }
        Ok(())
    })?;
    Ok(out)
}

/// An owned difference that counts.
#[derive(Debug, Clone)]
pub(crate) struct Changed {
    pub path: String,
    pub old: Option<Entry>,
    pub new: Option<Entry>,
    pub verb: &'static str,
}

#[cfg(test)]
mod tests;
