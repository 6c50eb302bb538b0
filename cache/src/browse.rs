//! Reading a generation back: finding a path, listing a directory, reading a file, walking the
//! tree, and what a generation carries (a package, a file) for `imgctl affected` and the
//! server's `GET /v1/affected`. Every object is verified against its digest as it is read.

use std::io::{self, Write};

use crate::Store;
use format::packages::DPKG_STATUS;
use format::{Digest, Entry, EntryKind, Manifest, Meta, Package, PackageList, Tree};

/// Why reading a generation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An object is missing or corrupt.
    #[error(transparent)]
    Object(#[from] crate::GetError),
    /// A tree object does not parse.
    #[error("tree object {digest} is malformed")]
    Decode {
        /// The tree.
        digest: Digest,
        /// Why.
        #[source]
        source: format::DecodeError,
    },
    /// No such path in the generation.
    #[error("no such path: {0}")]
    NotFound(String),
    /// A path component is not a directory.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// The path is not a regular file.
    #[error("not a regular file: {0}")]
    NotAFile(String),
    /// Writing the output failed.
    #[error("cannot write output")]
    Write(#[source] io::Error),
}

/// Loads and parses a tree object.
pub fn load_tree(store: &Store, digest: &Digest) -> Result<Tree, ReadError> {
    let bytes = store.get(digest)?;
    Tree::decode(&bytes).map_err(|source| ReadError::Decode { digest: *digest, source })
}

/// What a path names.
#[derive(Debug, Clone)]
pub enum Located {
    /// The root directory.
    Root(Meta, Digest),
    /// An entry somewhere below it.
    Entry(Entry),
}

/// Splits a user path ("/usr/bin", "usr/bin/", "") into components.
pub fn split_path(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/').filter(|p| !p.is_empty() && *p != b".").collect()
}

/// Finds `path` in the generation.
pub fn locate(store: &Store, manifest: &Manifest, path: &[u8]) -> Result<Located, ReadError> {
    let parts = split_path(path);
    let shown = || display_bytes(path);
    let mut current: Option<Entry> = None;
    let mut tree_digest = manifest.root;
    for part in parts {
        if let Some(e) = &current {
            match e.kind {
                EntryKind::Directory { tree } => tree_digest = tree,
                _ => return Err(ReadError::NotADirectory(shown())),
            }
        }
        let tree = load_tree(store, &tree_digest)?;
        current = Some(tree.get(part).cloned().ok_or_else(|| ReadError::NotFound(shown()))?);
    }
    Ok(match current {
        None => Located::Root(manifest.root_meta.clone(), manifest.root),
        Some(e) => Located::Entry(e),
    })
}

/// Writes a regular file's content to `out`, holes as zeros.
pub fn write_content(store: &Store, entry: &Entry, out: &mut dyn Write) -> Result<(), ReadError> {
    let EntryKind::Regular { size, extents } = &entry.kind else {
        return Err(ReadError::NotAFile(display_bytes(&entry.name)));
    };
    let zeros = [0u8; 65536];
    let mut pos = 0u64;
    let fill = |out: &mut dyn Write, mut n: u64| -> io::Result<()> {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    };
    for x in extents {
        fill(out, x.offset - pos).map_err(ReadError::Write)?;
        let data = store.get(&x.digest)?;
        out.write_all(&data).map_err(ReadError::Write)?;
        pos = x.offset + u64::from(x.len);
    }
    fill(out, size - pos).map_err(ReadError::Write)
}

/// Visits every entry below `root` depth-first in name order, with its full path.
pub fn walk(store: &Store, root: &Digest, visit: &mut dyn FnMut(&[u8], &Entry) -> Result<(), ReadError>) -> Result<(), ReadError> {
    fn go(
        store: &Store,
        digest: &Digest,
        prefix: &mut Vec<u8>,
        visit: &mut dyn FnMut(&[u8], &Entry) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let tree = load_tree(store, digest)?;
        for e in &tree.entries {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(&e.name);
            visit(prefix, e)?;
            if let EntryKind::Directory { tree } = &e.kind {
                go(store, tree, prefix, visit)?;
            }
            prefix.truncate(len);
        }
        Ok(())
    }
    go(store, root, &mut Vec::new(), visit)
}

/// Shows path bytes as text, escaping bytes that are not UTF-8 as `\xNN`.
pub fn display_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// `rwxr-xr-x` with setuid, setgid and sticky shown as `ls` does.
pub fn mode_string(kind: char, mode: u16) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bits =
        [(0o400, 'r'), (0o200, 'w'), (0o100, 'x'), (0o040, 'r'), (0o020, 'w'), (0o010, 'x'), (0o004, 'r'), (0o002, 'w'), (0o001, 'x')];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 if mode & 0o4000 != 0 => Some(if set { 's' } else { 'S' }),
            5 if mode & 0o2000 != 0 => Some(if set { 's' } else { 'S' }),
            8 if mode & 0o1000 != 0 => Some(if set { 't' } else { 'T' }),
            _ => None,
        };
        s.push(special.unwrap_or(if set { *c } else { '-' }));
    }
    s
}

/// UTC `YYYY-MM-DD HH:MM:SS` for seconds since the epoch.
pub fn utc_string(secs: i64) -> String {
    let (y, m, d, h, mi, s) = trust::time::utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// The generation's installed Debian packages: its package-list object when it has one (every
/// import and patch since format log entry 9), else parsed from its dpkg status file; None
/// when it has neither.
pub fn package_list(store: &Store, m: &Manifest) -> Result<Option<PackageList>, ReadError> {
    if let Some(digest) = m.packages() {
        let bytes = store.get(&digest)?;
        return PackageList::decode(&bytes).map(Some).map_err(|source| ReadError::Decode { digest, source });
    }
    let entry = match locate(store, m, DPKG_STATUS.as_bytes()) {
        Ok(Located::Entry(e)) if matches!(e.kind, EntryKind::Regular { .. }) => e,
        Ok(_) | Err(ReadError::NotFound(_)) | Err(ReadError::NotADirectory(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    write_content(store, &entry, &mut bytes)?;
    Ok(Some(PackageList::from_dpkg_status(&String::from_utf8_lossy(&bytes))))
}

/// The packages of the generation named `name` (or built from the source package `name` when
/// `by_source`); empty when it carries none.
pub fn carried_packages(store: &Store, m: &Manifest, name: &str, by_source: bool) -> Result<Vec<Package>, ReadError> {
    let Some(list) = package_list(store, m)? else { return Ok(Vec::new()) };
    Ok(list.find(name, by_source).cloned().collect())
}

/// Whether the generation has something at `path` (a regular file whose content has the
/// digest `digest`, when given).
pub fn carries_path(store: &Store, m: &Manifest, path: &str, digest: Option<&Digest>) -> Result<bool, ReadError> {
    let entry = match locate(store, m, path.as_bytes()) {
        Ok(Located::Entry(e)) => e,
        Ok(Located::Root(..)) => return Ok(digest.is_none()),
        Err(ReadError::NotFound(_)) | Err(ReadError::NotADirectory(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some(want) = digest else { return Ok(true) };
    if !matches!(entry.kind, EntryKind::Regular { .. }) {
        return Ok(false);
    }
    let mut hasher = HashWriter(blake3::Hasher::new());
    write_content(store, &entry, &mut hasher)?;
    Ok(Digest(*hasher.0.finalize().as_bytes()) == *want)
}

/// What one generation carries of a query (exactly one of `package`, `source` or `path`, as
/// `imgctl affected` and `GET /v1/affected` take them): None when it carries nothing; else the
/// matching packages (empty for a path query).
pub fn carries(
    store: &Store,
    m: &Manifest,
    package: Option<&str>,
    source: Option<&str>,
    path: Option<&str>,
    digest: Option<&Digest>,
) -> Result<Option<Vec<Package>>, ReadError> {
    let packages = match (package, source, path) {
        (Some(name), _, _) => carried_packages(store, m, name, false)?,
        (_, Some(name), _) => carried_packages(store, m, name, true)?,
        (_, _, Some(path)) => return Ok(carries_path(store, m, path.trim_start_matches('/'), digest)?.then(Vec::new)),
        _ => return Ok(None),
    };
    Ok((!packages.is_empty()).then_some(packages))
}

struct HashWriter(blake3::Hasher);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
