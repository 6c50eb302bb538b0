//! Committing an overlayfs upper layer on top of a base generation: the tree of `imgctl patch`.
//!
//! Only the upper layer is read. A directory the layer does not mention keeps its base tree
//! digest without being opened; a directory it mentions is the base's listing with the layer's
//! entries laid over it: a whiteout (0/0 character device) deletes, an opaque directory
//! (`trusted.overlay.opaque=y`) replaces the base's listing, anything else replaces or adds the
//! entry (metadata-only changes included: overlayfs copies the file up). Overlay's own
//! `trusted.overlay.*` attributes never reach the image.
//!
//! Hard links: files linked inside the layer form new link groups, numbered after the base's
//! highest. A base group that lost names (deleted or replaced) has its remaining names' counts
//! rewritten, which rewrites the trees on their paths. (Overlayfs without its index breaks a
//! lower hard link on copy-up: the copied name leaves the group, the others stay linked.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;

use format::{Digest, Entry, EntryKind, Extent, Manifest, Meta, Stats, Tree};
use rayon::prelude::*;

use crate::browse::{display_bytes, load_tree, ReadError};
use crate::ingest::Storing;
use crate::scan::{scan_dir, FileSource, Node, NodeKind};
use crate::ImportError;

/// Which paths of the layer are left out of the commit (the base's version stays).
pub struct Exclude {
    set: globset::GlobSet,
    /// Paths left out however they look (mount points the sandbox created).
    exact: HashSet<Vec<u8>>,
}

impl Exclude {
    /// `globs` match paths relative to the image root (`var/lib/apt/lists/*`); `exact` are
    /// paths left out whatever they hold.
    pub fn new(globs: &[String], exact: &[String]) -> Result<Exclude, globset::Error> {
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            b.add(globset::GlobBuilder::new(g.trim_start_matches('/')).literal_separator(true).build()?);
        }
        Ok(Exclude { set: b.build()?, exact: exact.iter().map(|s| s.as_bytes().to_vec()).collect() })
    }

    fn matches(&self, rel: &[u8]) -> bool {
        self.exact.contains(rel) || self.set.is_match(Path::new(std::ffi::OsStr::from_bytes(rel)))
    }
}

use std::os::unix::ffi::OsStrExt;

/// The committed tree and what it took.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Root tree digest of the new generation.
    pub root: Digest,
    /// The root directory's metadata (the upper layer's root).
    pub root_meta: Meta,
    /// Counts of the whole new generation (new objects from the storing counters).
    pub stats: Stats,
    /// Regular files of the layer whose content was read.
    pub files_read: u64,
    /// Paths of the layer left out, sorted.
    pub excluded: Vec<String>,
    /// Paths the layer added, changed or deleted (whiteouts), sorted; excluded ones are not.
    pub touched: Vec<String>,
}

const OVERLAY_XATTR: &[u8] = b"trusted.overlay.";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Builds the generation `base` + the overlay upper layer at `upper`, storing new objects
/// through `storing`.
pub fn commit_upper(base: &Manifest, upper: &Path, exclude: &Exclude, storing: &Storing<'_>) -> Result<Committed, ImportError> {
    let mut scan = scan_dir(upper)?;
    let mut excluded = Vec::new();
    let mut opaque = HashSet::new();
    prune(&mut scan.root, &mut Vec::new(), exclude, &mut excluded, &mut opaque);
    strip_overlay_xattrs(&mut scan.root.meta);

    // Which file slots are still named, and by how many names.
    let mut names = vec![0u32; scan.files.len()];
    count_names(&scan.root, &mut names);
    let wanted: Vec<usize> = (0..scan.files.len()).filter(|&i| names[i] > 0).collect();
    let read: Vec<(usize, Result<(u64, Vec<Extent>), ImportError>)> = wanted
        .par_iter()
        .map(|&i| {
            let FileSource::Path { path, .. } = &scan.files[i] else { unreachable!("a directory scan yields paths") };
            (i, storing.ingest_file(path))
        })
        .collect();
    let mut contents: Vec<Option<(u64, Vec<Extent>)>> = (0..scan.files.len()).map(|_| None).collect();
    for (i, r) in read {
        contents[i] = Some(r?);
    }

    let mut m = Merger {
        storing,
        contents: &contents,
        names: &names,
        groups: HashMap::new(),
        next_group: None,
        base_root: base.root,
        opaque: &opaque,
        lost: HashMap::new(),
        touched: Vec::new(),
    };
    let NodeKind::Dir(children) = &scan.root.kind else { unreachable!("the layer's root is a directory") };
    let mut root = m.merge(Some(base.root), children, &[], false)?;
    if !m.lost.is_empty() {
        let lost = std::mem::take(&mut m.lost);
        root = m.relink(root, &lost)?;
    }
    let touched = std::mem::take(&mut m.touched);
    let mut stats = count(storing.store, &root)?;
    stats.directories += 1;
    if let Some(d) = base.dictionary() {
        stats.objects += 1;
        let _ = d;
    }
    stats.new_objects = storing.counters.new_objects.load(Ordering::Relaxed);
    stats.new_bytes = storing.counters.new_bytes.load(Ordering::Relaxed);
    excluded.sort();
    Ok(Committed { root, root_meta: scan.root.meta, stats, files_read: wanted.len() as u64, excluded, touched })
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn strip_overlay_xattrs(meta: &mut Meta) {
    meta.xattrs.retain(|x| !x.name.starts_with(OVERLAY_XATTR));
}

/// Drops excluded paths from the scanned layer, strips overlay's attributes and notes opaque
/// directories.
fn prune(node: &mut Node, rel: &mut Vec<u8>, exclude: &Exclude, excluded: &mut Vec<String>, opaque: &mut HashSet<Vec<u8>>) {
    let NodeKind::Dir(children) = &mut node.kind else { return };
    children.retain(|name, _| {
        let path = join(rel, name);
        if exclude.exact.contains(&path) {
            return false; // the sandbox's own mount point or file: not worth reporting
        }
        if exclude.matches(&path) {
            excluded.push(display_bytes(&path));
            return false;
        }
        true
    });
    for (name, child) in children.iter_mut() {
        let path = join(rel, name);
        if child.meta.xattrs.iter().any(|x| x.name == OPAQUE_XATTR && x.value == b"y") {
            opaque.insert(path.clone());
        }
        strip_overlay_xattrs(&mut child.meta);
        let mut path = path;
        prune(child, &mut path, exclude, excluded, opaque);
    }
}

fn count_names(node: &Node, names: &mut [u32]) {
    match &node.kind {
        NodeKind::Dir(c) => c.values().for_each(|n| count_names(n, names)),
        NodeKind::File(i) => names[*i] += 1,
        _ => {}
    }
}

fn is_whiteout(node: &Node) -> bool {
    matches!(node.kind, NodeKind::Char(0, 0))
}

struct Merger<'a> {
    storing: &'a Storing<'a>,
    contents: &'a [Option<(u64, Vec<Extent>)>],
    names: &'a [u32],
    /// Link group of each linked file slot of the layer.
    groups: HashMap<usize, u32>,
    /// The next free group number, found from the base on the first linked file of the layer.
    next_group: Option<u32>,
    base_root: Digest,
    opaque: &'a HashSet<Vec<u8>>,
    /// Base link groups that lost names: group → names lost.
    lost: HashMap<u32, u32>,
    touched: Vec<String>,
}

impl Merger<'_> {
    fn store_tree(&self, entries: Vec<Entry>, path: &[u8]) -> Result<Digest, ImportError> {
        let tree = Tree { entries };
        let bytes = tree.encode().map_err(|source| ImportError::Tree { path: display_bytes(path).into(), source })?;
        let ins = self
            .storing
            .store
            .insert(&bytes, self.storing.level)
            .map_err(|source| ImportError::Store { path: "(tree object)".into(), source })?;
        if ins.new {
            let c = self.storing.counters;
            c.new_objects.fetch_add(1, Ordering::Relaxed);
            c.new_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            c.stored_bytes.fetch_add(ins.stored_len, Ordering::Relaxed);
        }
        Ok(ins.digest)
    }

    fn load(&self, digest: &Digest) -> Result<Tree, ImportError> {
        load_tree(self.storing.store, digest).map_err(read_error)
    }

    /// Notes that a base entry leaves the image: its link group, or those of everything below it.
    fn removed(&mut self, e: &Entry) -> Result<(), ImportError> {
        match &e.kind {
            EntryKind::Regular { .. } if e.link_group != 0 => *self.lost.entry(e.link_group).or_default() += 1,
            EntryKind::Directory { tree } => {
                for child in self.load(tree)?.entries {
                    self.removed(&child)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn new_group(&mut self) -> Result<u32, ImportError> {
        let next = match self.next_group {
            Some(n) => n,
            None => max_group(self.storing.store, &self.base_root)? + 1,
        };
        self.next_group = Some(next + 1);
        Ok(next)
    }

    fn merge(&mut self, base: Option<Digest>, layer: &BTreeMap<Vec<u8>, Node>, rel: &[u8], opaque: bool) -> Result<Digest, ImportError> {
        let mut entries: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        if let Some(d) = base {
            for e in self.load(&d)?.entries {
                if opaque {
                    self.removed(&e)?;
                } else {
                    entries.insert(e.name.clone(), e);
                }
            }
        }
        for (name, node) in layer {
            let path = join(rel, name);
            let old = entries.remove(name);
            if is_whiteout(node) {
                if let Some(o) = &old {
                    self.removed(o)?;
                    self.touched.push(display_bytes(&path));
                }
                continue;
            }
            self.touched.push(display_bytes(&path));
            let (mut link_group, mut link_count) = (0, 1);
            let kind = match &node.kind {
                NodeKind::Dir(children) => {
                    let child_opaque = self.opaque.contains(&path);
                    let base_tree = match &old {
                        Some(Entry { kind: EntryKind::Directory { tree }, .. }) => Some(*tree),
                        _ => None,
                    };
                    if let Some(o) = &old {
                        if base_tree.is_none() {
                            self.removed(o)?;
                        }
                    }
                    // An opaque directory's merge notes the base's entries as removed itself.
                    EntryKind::Directory { tree: self.merge(base_tree, children, &path, child_opaque)? }
                }
                other => {
                    if let Some(o) = &old {
                        self.removed(o)?;
                    }
                    match other {
                        NodeKind::File(i) => {
                            let (size, extents) = self.contents[*i].clone().expect("every named file was read");
                            if self.names[*i] > 1 {
                                link_group = match self.groups.get(i) {
                                    Some(g) => *g,
                                    None => {
                                        let g = self.new_group()?;
                                        self.groups.insert(*i, g);
                                        g
                                    }
                                };
                                link_count = self.names[*i];
                            }
                            EntryKind::Regular { size, extents }
                        }
                        leaf => leaf.leaf_kind().expect("directories are handled above"),
                    }
                }
            };
            entries.insert(name.clone(), crate::scan::entry(name, &node.meta, link_group, link_count, kind));
        }
        self.store_tree(entries.into_values().collect(), rel)
    }

    /// Rewrites the remaining names of base link groups that lost some: their counts drop, and
    /// a group left with one name is no group. Returns the new digest of `tree`.
    fn relink(&mut self, root: Digest, lost: &HashMap<u32, u32>) -> Result<Digest, ImportError> {
        // First the names each group still has, then the rewrite.
        let mut remaining: HashMap<u32, u32> = HashMap::new();
        let mut seen = HashSet::new();
        self.count_members(&root, lost, &mut remaining, &mut seen)?;
        let mut memo = HashMap::new();
        self.rewrite(&root, &remaining, &mut memo, &[])
    }

    fn count_members(
        &self,
        tree: &Digest,
        lost: &HashMap<u32, u32>,
        remaining: &mut HashMap<u32, u32>,
        seen: &mut HashSet<Digest>,
    ) -> Result<(), ImportError> {
        // Link groups are unique within an image, so a subtree appears at most once where it
        // holds linked files; a subtree seen twice (identical directories) holds none of them.
        if !seen.insert(*tree) {
            return Ok(());
        }
        for e in self.load(tree)?.entries {
            match &e.kind {
                EntryKind::Directory { tree } => self.count_members(tree, lost, remaining, seen)?,
                EntryKind::Regular { .. } if lost.contains_key(&e.link_group) => *remaining.entry(e.link_group).or_default() += 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn rewrite(&mut self, tree: &Digest, remaining: &HashMap<u32, u32>, memo: &mut HashMap<Digest, Digest>, rel: &[u8]) -> Result<Digest, ImportError> {
        if let Some(d) = memo.get(tree) {
            return Ok(*d);
        }
        let mut t = self.load(tree)?;
        let mut changed = false;
        for e in &mut t.entries {
            match &mut e.kind {
                EntryKind::Directory { tree: child } => {
                    let path = join(rel, &e.name);
                    let new = self.rewrite(child, remaining, memo, &path)?;
                    if new != *child {
                        *child = new;
                        changed = true;
                    }
                }
                EntryKind::Regular { .. } => {
                    if let Some(&n) = remaining.get(&e.link_group) {
                        let (group, count) = if n > 1 { (e.link_group, n) } else { (0, 1) };
                        if (group, count) != (e.link_group, e.link_count) {
                            e.link_group = group;
                            e.link_count = count;
                            changed = true;
                        }
                    }
                }
                _ => {}
            }
        }
        let out = if changed { self.store_tree(t.entries, rel)? } else { *tree };
        memo.insert(*tree, out);
        Ok(out)
    }
}

fn read_error(e: ReadError) -> ImportError {
    ImportError::Base(e)
}

/// The highest link group number of the image under `root`.
fn max_group(store: &cache::Store, root: &Digest) -> Result<u32, ImportError> {
    let mut max = 0;
    crate::browse::walk(store, root, &mut |_, e| {
        max = max.max(e.link_group);
        Ok(())
    })
    .map_err(read_error)?;
    Ok(max)
}

/// Counts of the image under `root` (the root directory itself not included).
fn count(store: &cache::Store, root: &Digest) -> Result<Stats, ImportError> {
    let mut s = Stats::default();
    let mut objects: HashSet<Digest> = HashSet::from([*root]);
    crate::browse::walk(store, root, &mut |_, e| {
        match &e.kind {
            EntryKind::Regular { size, extents } => {
                s.files += 1;
                s.bytes += size;
                objects.extend(extents.iter().map(|x| x.digest));
            }
            EntryKind::Directory { tree } => {
                s.directories += 1;
                objects.insert(*tree);
            }
            EntryKind::Symlink { .. } => s.symlinks += 1,
            _ => s.other += 1,
        }
        Ok(())
    })
    .map_err(read_error)?;
    s.objects = objects.len() as u64;
    Ok(s)
}
