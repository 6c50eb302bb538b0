//! Importing from a tar archive (plain, gzip or zstd): entries are checked for paths that escape
//! the root and stored as they stream by, since an archive can be read only once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use format::{Meta, Xattr};

use crate::ingest::Storing;
use crate::scan::{FileSource, Node, NodeKind, Scan};
use crate::ImportError;

/// Opens `path` and returns a reader of the tar stream inside, undoing gzip or zstd.
pub fn open_archive(path: &Path) -> Result<Box<dyn Read>, ImportError> {
    let read_err = |source: io::Error| ImportError::Read { path: path.to_path_buf(), source };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(read_err)?);
    let head = reader.fill_buf().map_err(read_err)?.to_vec();
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(read_err)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Splits an archive path into safe components, refusing absolute paths and `..`.
pub(crate) fn components(raw: &[u8], archive: &Path) -> Result<Vec<Vec<u8>>, ImportError> {
    let unsafe_path = |why: &str| ImportError::UnsafePath {
        archive: archive.to_path_buf(),
        entry: String::from_utf8_lossy(raw).into_owned(),
        why: why.to_string(),
    };
    if raw.first() == Some(&b'/') {
        return Err(unsafe_path("absolute path"));
    }
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(unsafe_path("'..' component")),
            p => {
                format::tree::check_name(p).map_err(|e| unsafe_path(&e))?;
                out.push(p.to_vec());
            }
        }
    }
    Ok(out)
}

fn default_dir_meta() -> Meta {
    Meta { mode: 0o755, ..Meta::default() }
}

/// Walks to the directory holding the last component, creating missing directories. A parent
/// that exists but is not a directory (a symlink, say) is refused: following it could escape.
fn parent_dir<'a>(
    root: &'a mut Node,
    parts: &[Vec<u8>],
    archive: &Path,
    raw: &[u8],
) -> Result<&'a mut BTreeMap<Vec<u8>, Node>, ImportError> {
    let mut node = root;
    for part in parts {
        let NodeKind::Dir(children) = &mut node.kind else { unreachable!("walk only enters directories") };
        node = children.entry(part.clone()).or_insert_with(|| Node { meta: default_dir_meta(), kind: NodeKind::Dir(BTreeMap::new()) });
        if !matches!(node.kind, NodeKind::Dir(_)) {
            return Err(ImportError::UnsafePath {
                archive: archive.to_path_buf(),
                entry: String::from_utf8_lossy(raw).into_owned(),
                why: format!("parent {:?} is not a directory", String::from_utf8_lossy(part)),
            });
        }
    }
    let NodeKind::Dir(children) = &mut node.kind else { unreachable!() };
    Ok(children)
}

fn lookup<'a>(root: &'a Node, parts: &[Vec<u8>]) -> Option<&'a Node> {
    let mut node = root;
    for part in parts {
        let NodeKind::Dir(children) = &node.kind else {
            return None;
        };
        node = children.get(part)?;
    }
    Some(node)
}

/// Extended header fields that apply to the next entry (PAX `x` records, GNU long names).
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) path: Option<Vec<u8>>,
    pub(crate) link: Option<Vec<u8>>,
    pub(crate) mtime: Option<(i64, u32)>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) sparse: bool,
    pub(crate) xattrs: Vec<Xattr>,
}

/// Parses PAX records (`LEN KEY=VALUE\n`) by their length prefix. Values may hold any byte,
/// newlines included (ACL text, binary capabilities), which a line-based reader gets wrong.
pub(crate) fn parse_pax(mut data: &[u8], pending: &mut Pending) -> Result<(), String> {
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').ok_or("record without length")?;
        let len: usize = std::str::from_utf8(&data[..space]).ok().and_then(|s| s.parse().ok()).ok_or("bad record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("record length {len} does not fit"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or("record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let num = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok());
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"linkpath" => pending.link = Some(value.to_vec()),
            b"mtime" => pending.mtime = parse_pax_time(value),
            b"uid" => pending.uid = num(value).map(|v| v as u32),
            b"gid" => pending.gid = num(value).map(|v| v as u32),
            b"size" => pending.size = num(value),
            k if k.starts_with(b"GNU.sparse.") => pending.sparse = true,
            k => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    pending.xattrs.push(Xattr { name: name.to_vec(), value: value.to_vec() });
                }
            }
        }
        data = &data[len..];
    }
    Ok(())
}

fn read_all(entry: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    entry.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads the archive at `path` into a scan, storing file content as it goes. Extended headers
/// are interpreted here (the archive is read raw) so that binary PAX values survive.
pub fn scan_tar(path: &Path, storing: &Storing<'_>, progress: &dyn Fn(u64)) -> Result<Scan, ImportError> {
    let mut archive = tar::Archive::new(open_archive(path)?);
    let mut root = Node { meta: default_dir_meta(), kind: NodeKind::Dir(BTreeMap::new()) };
    let mut files = Vec::new();
    let mut pending = Pending::default();
    let entries =
        archive.entries().map_err(|source| ImportError::Archive { archive: path.to_path_buf(), entry: "(start)".into(), source })?;
    for (n, entry) in entries.raw(true).enumerate() {
        let mut entry = entry.map_err(|source| ImportError::Archive { archive: path.to_path_buf(), entry: format!("#{n}"), source })?;
        let header = entry.header().clone();
        let et = header.entry_type();
        let ext_err =
            |source: io::Error| ImportError::Archive { archive: path.to_path_buf(), entry: format!("#{n} (extended header)"), source };
        match et {
            tar::EntryType::XHeader => {
                let data = read_all(&mut entry).map_err(ext_err)?;
                parse_pax(&data, &mut pending)
                    .map_err(|why| ext_err(io::Error::new(io::ErrorKind::InvalidData, format!("malformed PAX header: {why}"))))?;
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                read_all(&mut entry).map_err(ext_err)?;
                continue;
            }
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                let mut data = read_all(&mut entry).map_err(ext_err)?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                if et == tar::EntryType::GNULongName {
                    pending.path = Some(data);
                } else {
                    pending.link = Some(data);
                }
                continue;
            }
            _ => {}
        }
        let ext = std::mem::take(&mut pending);
        let raw = ext.path.clone().unwrap_or_else(|| header.path_bytes().into_owned());
        let name = String::from_utf8_lossy(&raw).into_owned();
        let arch_err = |source: io::Error| ImportError::Archive { archive: path.to_path_buf(), entry: name.clone(), source };
        let unsupported = |what: &str| ImportError::Unsupported { path: path.to_path_buf(), what: format!("entry {name:?}: {what}") };
        if ext.sparse || et == tar::EntryType::GNUSparse {
            return Err(unsupported("GNU sparse entries are not supported; import the directory itself, or archive it without --sparse"));
        }
        if ext.size.is_some_and(|s| s != entry.size()) {
            return Err(unsupported("size given only in a PAX header (over 8 GiB) is not supported"));
        }
        let parts = components(&raw, path)?;
        let (mtime_sec, mtime_nsec) = match ext.mtime {
            Some(t) => t,
            None => (header.mtime().map_err(arch_err)? as i64, 0),
        };
        let mut xattrs = ext.xattrs;
        xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        let meta = Meta {
            mode: (header.mode().map_err(arch_err)? & 0o7777) as u16,
            uid: match ext.uid {
                Some(u) => u,
                None => header.uid().map_err(arch_err)? as u32,
            },
            gid: match ext.gid {
                Some(g) => g,
                None => header.gid().map_err(arch_err)? as u32,
            },
            mtime_sec,
            mtime_nsec,
            xattrs,
        };
        let link_name = || ext.link.clone().or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let Some((last, parents)) = parts.split_last() else {
            // The archive's root directory itself ("./").
            if et.is_dir() {
                root.meta = meta;
            }
            continue;
        };
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let mut extents = Vec::new();
                storing.ingest_stream(&mut entry, 0, size, Path::new(&name), &mut extents).map_err(|e| match e {
                    ImportError::Read { source, .. } => arch_err(source),
                    other => other,
                })?;
                progress(size);
                files.push(FileSource::Ready { size, extents });
                NodeKind::File(files.len() - 1)
            }
            tar::EntryType::Directory => {
                let children = parent_dir(&mut root, parents, path, &raw)?;
                match children.get_mut(last) {
                    Some(existing @ Node { kind: NodeKind::Dir(_), .. }) => existing.meta = meta,
                    _ => {
                        children.insert(last.clone(), Node { meta, kind: NodeKind::Dir(BTreeMap::new()) });
                    }
                }
                continue;
            }
            tar::EntryType::Symlink => NodeKind::Symlink(link_name().ok_or_else(|| arch_err(io::Error::other("symlink without target")))?),
            tar::EntryType::Link => {
                let target = link_name().ok_or_else(|| arch_err(io::Error::other("hard link without target")))?;
                let target_parts = components(&target, path)?;
                let (shared, i) = match lookup(&root, &target_parts) {
                    Some(Node { kind: NodeKind::File(i), meta }) => (meta.clone(), *i),
                    _ => {
                        return Err(ImportError::UnsafePath {
                            archive: path.to_path_buf(),
                            entry: name,
                            why: format!(
                                "hard link to {:?}, which is not a regular file earlier in the archive",
                                String::from_utf8_lossy(&target)
                            ),
                        })
                    }
                };
                // A hard link shares its target's inode, and so its metadata.
                let children = parent_dir(&mut root, parents, path, &raw)?;
                children.insert(last.clone(), Node { meta: shared, kind: NodeKind::File(i) });
                continue;
            }
            tar::EntryType::Char => {
                NodeKind::Char(header.device_major().map_err(arch_err)?.unwrap_or(0), header.device_minor().map_err(arch_err)?.unwrap_or(0))
            }
            tar::EntryType::Block => NodeKind::Block(
                header.device_major().map_err(arch_err)?.unwrap_or(0),
                header.device_minor().map_err(arch_err)?.unwrap_or(0),
            ),
            tar::EntryType::Fifo => NodeKind::Fifo,
            other => return Err(unsupported(&format!("unsupported tar entry type {other:?}"))),
        };
        let children = parent_dir(&mut root, parents, path, &raw)?;
        children.insert(last.clone(), Node { meta, kind });
    }
    Ok(Scan { root, files })
}

/// Parses a PAX time such as `1700000000.123456789`.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((sec, digits.parse().ok()?))
}
