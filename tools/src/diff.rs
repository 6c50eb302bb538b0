//! `diff`: what changed between two generations, path by path, skipping identical subtrees by
//! digest; for Debian-based trees also the package changes read from `var/lib/dpkg/status`.

use std::collections::BTreeMap;

use cache::Store;
use format::{Digest, Entry, EntryKind, Manifest, PackageList};

use crate::browse::{self, display_bytes, load_tree, ReadError};

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    /// Only in the newer generation.
    Added {
        /// Path.
        path: String,
        /// Size in the newer generation.
        size: u64,
    },
    /// Only in the older generation.
    Removed {
        /// Path.
        path: String,
        /// Size in the older generation.
        size: u64,
    },
    /// In both, different.
    Modified {
        /// Path.
        path: String,
        /// Old size.
        old_size: u64,
        /// New size.
        new_size: u64,
        /// Which aspects changed: type, content, mode, owner, mtime, xattrs, target, device, links.
        what: Vec<&'static str>,
    },
}

/// A package change between two dpkg status files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageChange {
    /// Package name (with `:arch` for foreign architectures).
    pub package: String,
    /// Version before, if installed.
    pub old: Option<String>,
    /// Version after, if installed.
    pub new: Option<String>,
}

/// Path changes from `a` to `b`, in path order.
pub fn diff(store: &Store, a: &Manifest, b: &Manifest) -> Result<Vec<Change>, ReadError> {
    let mut out = Vec::new();
    if a.root_meta != b.root_meta {
        out.push(Change::Modified { path: "/".into(), old_size: 0, new_size: 0, what: vec!["metadata"] });
    }
    walk_changes(store, &a.root, &b.root, &mut |d| {
        let path = display_bytes(d.path);
        out.push(match (d.old, d.new) {
            (Some(x), Some(y)) => Change::Modified { path, old_size: x.size(), new_size: y.size(), what: d.what.to_vec() },
            (Some(x), None) => Change::Removed { path, size: x.size() },
            (None, Some(y)) => Change::Added { path, size: y.size() },
            (None, None) => unreachable!("the walk reports an entry on at least one side"),
        });
        Ok(())
    })?;
    Ok(out)
}

/// One difference found by [`walk_changes`]: a path below the root with its entries on either
/// side. An entry only in the older tree is a removal, only in the newer one an addition; in
/// both, `what` says which aspects differ (never empty). A path whose type changed is reported
/// as a removal (with everything below the old entry) followed by an addition (with everything
/// below the new one).
#[derive(Debug, Clone, Copy)]
pub struct Delta<'a> {
    /// Path relative to the root, components joined by `/`.
    pub path: &'a [u8],
    /// The entry in the older tree.
    pub old: Option<&'a Entry>,
    /// The entry in the newer tree.
    pub new: Option<&'a Entry>,
    /// For an entry on both sides: type, content, mode, owner, mtime, xattrs, target, device, links.
    pub what: &'a [&'static str],
}

/// Walks the differences between the trees `a` and `b` in path order, skipping subtrees whose
/// digests are equal: the one walk behind `diff` and the analyses of a diff.
pub fn walk_changes(
    store: &Store,
    a: &Digest,
    b: &Digest,
    visit: &mut dyn FnMut(Delta<'_>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    diff_trees(store, a, b, &[], visit)
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn diff_trees(
    store: &Store,
    a: &Digest,
    b: &Digest,
    prefix: &[u8],
    visit: &mut dyn FnMut(Delta<'_>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (load_tree(store, a)?, load_tree(store, b)?);
    let mut ia = ta.entries.iter().peekable();
    let mut ib = tb.entries.iter().peekable();
    loop {
        let order = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        match order {
            std::cmp::Ordering::Less => {
                let e = ia.next().unwrap();
                every(store, &join(prefix, &e.name), e, Side::Old, visit)?;
            }
            std::cmp::Ordering::Greater => {
                let e = ib.next().unwrap();
                every(store, &join(prefix, &e.name), e, Side::New, visit)?;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (ia.next().unwrap(), ib.next().unwrap());
                let path = join(prefix, &x.name);
                let what = differences(x, y);
                if let (EntryKind::Directory { tree: da }, EntryKind::Directory { tree: db }) = (&x.kind, &y.kind) {
                    if !what.is_empty() {
                        visit(Delta { path: &path, old: Some(x), new: Some(y), what: &what })?;
                    }
                    diff_trees(store, da, db, &path, visit)?;
                } else if what.contains(&"type") {
                    every(store, &path, x, Side::Old, visit)?;
                    every(store, &path, y, Side::New, visit)?;
                } else if !what.is_empty() {
                    visit(Delta { path: &path, old: Some(x), new: Some(y), what: &what })?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

/// Reports an entry and, for a directory, everything below it, as present on one side only.
fn every(
    store: &Store,
    path: &[u8],
    e: &Entry,
    side: Side,
    visit: &mut dyn FnMut(Delta<'_>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let one = |path: &[u8], e: &Entry, visit: &mut dyn FnMut(Delta<'_>) -> Result<(), ReadError>| {
        let (old, new) = match side {
            Side::Old => (Some(e), None),
            Side::New => (None, Some(e)),
        };
        visit(Delta { path, old, new, what: &[] })
    };
    one(path, e, visit)?;
    if let EntryKind::Directory { tree } = &e.kind {
        browse::walk(store, tree, &mut |rel, child| one(&join(path, rel), child, visit))?;
    }
    Ok(())
}

fn differences(x: &Entry, y: &Entry) -> Vec<&'static str> {
    let mut what = Vec::new();
    if std::mem::discriminant(&x.kind) != std::mem::discriminant(&y.kind) {
        return vec!["type"];
    }
    match (&x.kind, &y.kind) {
        (EntryKind::Regular { size: sa, extents: ea }, EntryKind::Regular { size: sb, extents: eb }) if sa != sb || ea != eb => {
            what.push("content")
        }
        (EntryKind::Symlink { target: a }, EntryKind::Symlink { target: b }) if a != b => what.push("target"),
        (EntryKind::CharDevice { major: a, minor: b }, EntryKind::CharDevice { major: c, minor: d })
        | (EntryKind::BlockDevice { major: a, minor: b }, EntryKind::BlockDevice { major: c, minor: d })
            if (a, b) != (c, d) =>
        {
            what.push("device")
        }
        _ => {}
    }
    if x.mode != y.mode {
        what.push("mode");
    }
    if (x.uid, x.gid) != (y.uid, y.gid) {
        what.push("owner");
    }
    if (x.mtime_sec, x.mtime_nsec) != (y.mtime_sec, y.mtime_nsec) {
        what.push("mtime");
    }
    if x.xattrs != y.xattrs {
        what.push("xattrs");
    }
    if x.link_count != y.link_count {
        what.push("links");
    }
    what
}

/// Indexes the generation's packages: stores its package list as an object and names it in
/// the manifest (extension `packages`). Nothing when the generation has no dpkg status file.
pub fn index_packages(store: &Store, m: &mut Manifest, level: i32) -> Result<Option<PackageList>, IndexError> {
    m.extensions.retain(|(k, _)| k != format::packages::PACKAGES_EXTENSION);
    let Some(list) = browse::package_list(store, m)? else { return Ok(None) };
    let ins = store.insert(&list.encode(), level)?;
    m.set_extension(format::packages::PACKAGES_EXTENSION, ins.digest.0.to_vec());
    m.stats.objects += u64::from(ins.new);
    Ok(Some(list))
}

/// Why a generation's packages could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading the dpkg status file.
    #[error("reading the package database")]
    Read(#[from] ReadError),
    /// Storing the list.
    #[error("storing the package list")]
    Store(#[from] cache::InsertError),
}

/// Installed packages (name → version) of a generation; None if it has no dpkg database.
/// A package installed for several architectures appears as `name` and `name:arch`.
pub fn installed_packages(store: &Store, m: &Manifest) -> Result<Option<BTreeMap<String, String>>, ReadError> {
    Ok(browse::package_list(store, m)?.map(|l| by_name(&l)))
}

fn by_name(list: &PackageList) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &list.0 {
        let key = if p.arch != "all" && out.contains_key(&p.name) { format!("{}:{}", p.name, p.arch) } else { p.name.clone() };
        out.insert(key, p.version.clone());
    }
    out
}

/// Parses a dpkg status file into installed package → version.
pub fn parse_dpkg_status(text: &str) -> BTreeMap<String, String> {
    by_name(&PackageList::from_dpkg_status(text))
}

/// Package changes from `a` to `b`.
pub fn package_changes(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<PackageChange> {
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| PackageChange { package: n.clone(), old: a.get(n).cloned(), new: b.get(n).cloned() })
        .collect()
}
