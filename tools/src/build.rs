//! Turning a scanned tree, whose file contents are stored, into tree objects: bottom-up, with
//! hard-link groups numbered in depth-first name order so the result is deterministic.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use format::{Digest, EntryKind, Extent, Stats, Tree};

use crate::ingest::Storing;
use crate::scan::{Node, NodeKind};
use crate::ImportError;

/// The root digest and counts of a built tree.
pub struct Built {
    /// Root tree digest.
    pub root: Digest,
    /// Counts (new_objects and new_bytes come from the shared counters).
    pub stats: Stats,
}

/// Builds and stores every tree object under `root`. `contents[i]` is file `i`'s size and extents.
pub fn build_trees(root: &Node, contents: &[(u64, Vec<Extent>)], storing: &Storing<'_>) -> Result<Built, ImportError> {
    let mut link_counts = vec![0u32; contents.len()];
    count_links(root, &mut link_counts);
    let mut b = Builder {
        contents,
        storing,
        link_counts,
        groups: vec![0; contents.len()],
        next_group: 1,
        objects: HashSet::new(),
        stats: Stats::default(),
    };
    let NodeKind::Dir(_) = &root.kind else { unreachable!("root is a directory") };
    let digest = b.dir(root)?;
    b.stats.directories += 1;
    b.stats.objects = b.objects.len() as u64;
    b.stats.new_objects = storing.counters.new_objects.load(Ordering::Relaxed);
    b.stats.new_bytes = storing.counters.new_bytes.load(Ordering::Relaxed);
    Ok(Built { root: digest, stats: b.stats })
}

fn count_links(node: &Node, counts: &mut [u32]) {
    match &node.kind {
        NodeKind::Dir(children) => children.values().for_each(|c| count_links(c, counts)),
        NodeKind::File(i) => counts[*i] += 1,
        _ => {}
    }
}

struct Builder<'a> {
    contents: &'a [(u64, Vec<Extent>)],
    storing: &'a Storing<'a>,
    link_counts: Vec<u32>,
    groups: Vec<u32>,
    next_group: u32,
    objects: HashSet<Digest>,
    stats: Stats,
}

impl Builder<'_> {
    fn dir(&mut self, node: &Node) -> Result<Digest, ImportError> {
        let NodeKind::Dir(children) = &node.kind else { unreachable!() };
        let mut tree = Tree { entries: Vec::with_capacity(children.len()) };
        for (name, child) in children {
            let (mut link_group, mut link_count) = (0, 1);
            let kind = match &child.kind {
                NodeKind::Dir(_) => {
                    self.stats.directories += 1;
                    EntryKind::Directory { tree: self.dir(child)? }
                }
                NodeKind::File(i) => {
                    let (size, extents) = &self.contents[*i];
                    self.stats.files += 1;
                    self.stats.bytes += size;
                    self.objects.extend(extents.iter().map(|x| x.digest));
                    if self.link_counts[*i] > 1 {
                        if self.groups[*i] == 0 {
                            self.groups[*i] = self.next_group;
                            self.next_group += 1;
                        }
                        link_group = self.groups[*i];
                        link_count = self.link_counts[*i];
                    }
                    EntryKind::Regular { size: *size, extents: extents.clone() }
                }
                NodeKind::Symlink(target) => {
                    self.stats.symlinks += 1;
                    EntryKind::Symlink { target: target.clone() }
                }
                leaf => leaf.leaf_kind().expect("directories and files are handled above"),
            };
            if matches!(kind, EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } | EntryKind::Fifo | EntryKind::Socket) {
                self.stats.other += 1;
            }
            tree.entries.push(crate::scan::entry(name, &child.meta, link_group, link_count, kind));
        }
        let bytes = tree.encode().map_err(|source| ImportError::Tree {
            path: PathBuf::from(String::from_utf8_lossy(&tree.entries.first().map(|e| e.name.clone()).unwrap_or_default()).into_owned()),
            source,
        })?;
        let ins = self
            .storing
            .store
            .insert(&bytes, self.storing.level)
            .map_err(|source| ImportError::Store { path: PathBuf::from("(tree object)"), source })?;
        if ins.new {
            self.storing.counters.new_objects.fetch_add(1, Ordering::Relaxed);
            self.storing.counters.new_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            self.storing.counters.stored_bytes.fetch_add(ins.stored_len, Ordering::Relaxed);
        }
        self.objects.insert(ins.digest);
        Ok(ins.digest)
    }
}
