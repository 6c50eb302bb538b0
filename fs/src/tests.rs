//! Unit tests of the pure core: inode numbering, attributes, lookups, listings, hard links,
//! and range reads over extents with holes, with trees and chunks held in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use format::{Digest, Entry, EntryKind, Extent, Manifest, Meta, Tree};

use crate::image::{Image, ImageError, Kind, Trees};
use crate::read::{read_range, ChunkError, Chunks};

#[derive(Default)]
struct Mem {
    trees: HashMap<Digest, Arc<Tree>>,
    loads: Mutex<u32>,
}

impl Trees for Mem {
    fn tree(&self, digest: &Digest) -> Result<Arc<Tree>, ImageError> {
        *self.loads.lock().unwrap() += 1;
        self.trees.get(digest).cloned().ok_or(ImageError::TreeUnavailable { digest: *digest, why: "absent".into() })
    }
}

impl Mem {
    fn add(&mut self, mut entries: Vec<Entry>) -> Digest {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let tree = Tree { entries };
        let d = Digest::of(&tree.encode().unwrap());
        self.trees.insert(d, Arc::new(tree));
        d
    }
}

fn entry(name: &str, kind: EntryKind) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        uid: 1000,
        gid: 100,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 5,
        link_group: 0,
        link_count: 1,
        xattrs: vec![],
        kind,
    }
}

fn manifest(root: Digest) -> Manifest {
    Manifest {
        image: format::ImageName::new("img").unwrap(),
        generation: 1,
        root,
        root_meta: Meta { mode: 0o755, ..Meta::default() },
        parent: None,
        created: 0,
        message: String::new(),
        chunking: format::ChunkParams::default(),
        stats: format::Stats::default(),
        extensions: vec![],
    }
}

fn sample() -> (Mem, Image) {
    let mut mem = Mem::default();
    let sub = mem.add(vec![entry("deep", EntryKind::Regular { size: 3, extents: vec![] })]);
    let mut a = entry("a", EntryKind::Regular { size: 10, extents: vec![] });
    a.link_group = 1;
    a.link_count = 2;
    let mut b = a.clone();
    b.name = b"b".to_vec();
    let root = mem.add(vec![
        a,
        b,
        entry("dir", EntryKind::Directory { tree: sub }),
        entry("link", EntryKind::Symlink { target: b"dir/deep".to_vec() }),
        entry("null", EntryKind::CharDevice { major: 1, minor: 3 }),
    ]);
    (mem, Image::new(3, Digest::of(b"manifest"), manifest(root)))
}

#[test]
fn inodes_carry_the_slot_and_hard_links_share_one() {
    let (mem, img) = sample();
    let root = img.root_ino();
    assert_eq!(Image::slot_of(root), 3);
    let a = img.lookup(&mem, root, b"a").unwrap().unwrap();
    let b = img.lookup(&mem, root, b"b").unwrap().unwrap();
    assert_eq!(a.ino, b.ino, "hard links are one inode");
    assert_eq!(a.nlink, 2);
    let dir = img.lookup(&mem, root, b"dir").unwrap().unwrap();
    assert_ne!(dir.ino, a.ino);
    assert_eq!((dir.kind, dir.nlink), (Kind::Directory, 2));
    assert_eq!(img.attr(&mem, root).unwrap().nlink, 3, "root: 2 + one subdirectory");
    assert!(img.lookup(&mem, root, b"nope").unwrap().is_none());
    let deep = img.lookup(&mem, dir.ino, b"deep").unwrap().unwrap();
    assert_eq!(img.attr(&mem, deep.ino).unwrap(), deep, "getattr agrees with lookup");
    // Another generation's numbers are refused, not misread.
    let other = Image::new(4, Digest::of(b"m2"), img.manifest().clone());
    assert!(matches!(other.attr(&mem, deep.ino), Err(ImageError::NoInode(_))));
}

#[test]
fn listings_links_devices_and_trees_read_once() {
    let (mem, img) = sample();
    let root = img.root_ino();
    let names: Vec<String> = img.readdir(&mem, root).unwrap().iter().map(|e| String::from_utf8(e.name.clone()).unwrap()).collect();
    assert_eq!(names, ["a", "b", "dir", "link", "null"]);
    let listed = img.readdir(&mem, root).unwrap();
    for e in &listed {
        assert_eq!(img.lookup(&mem, root, &e.name).unwrap().unwrap().ino, e.ino, "readdir and lookup agree on {:?}", e.name);
    }
    let link = img.lookup(&mem, root, b"link").unwrap().unwrap();
    assert_eq!((link.kind, link.size), (Kind::Symlink, 8));
    assert_eq!(img.readlink(link.ino).unwrap().unwrap(), b"dir/deep");
    let null = img.lookup(&mem, root, b"null").unwrap().unwrap();
    assert_eq!(null.rdev, (1 << 8) | 3);
    let loads = *mem.loads.lock().unwrap();
    img.readdir(&mem, root).unwrap();
    img.lookup(&mem, root, b"a").unwrap();
    assert_eq!(*mem.loads.lock().unwrap(), loads, "a directory's tree is read once");
    assert!(matches!(img.readdir(&mem, link.ino), Err(ImageError::NotADirectory(_))));
}

struct MemChunks(HashMap<Digest, Arc<Vec<u8>>>, Mutex<Vec<(Digest, usize)>>);

impl Chunks for MemChunks {
    fn chunk(&self, digest: &Digest, then: &[Digest]) -> Result<Arc<Vec<u8>>, ChunkError> {
        self.1.lock().unwrap().push((*digest, then.len()));
        self.0.get(digest).cloned().ok_or(ChunkError { digest: *digest, why: "absent".into() })
    }
}

#[test]
fn range_reads_cross_chunks_and_holes() {
    let one: Vec<u8> = (0..100u8).collect();
    let two: Vec<u8> = (100..200u8).collect();
    let (d1, d2) = (Digest::of(&one), Digest::of(&two));
    let chunks = MemChunks([(d1, Arc::new(one.clone())), (d2, Arc::new(two.clone()))].into_iter().collect(), Mutex::default());
    // 0..100 data, 100..150 hole, 150..250 data, 250..300 hole at the end.
    let extents = [Extent { offset: 0, len: 100, digest: d1 }, Extent { offset: 150, len: 100, digest: d2 }];
    let mut whole = one.clone();
    whole.extend(std::iter::repeat(0).take(50));
    whole.extend(&two);
    whole.extend(std::iter::repeat(0).take(50));
    assert_eq!(read_range(300, &extents, 0, 4096, &chunks).unwrap(), whole);
    for (off, len) in [(0u64, 10u32), (95, 10), (120, 40), (149, 3), (260, 100), (299, 1)] {
        let got = read_range(300, &extents, off, len, &chunks).unwrap();
        let end = (off + len as u64).min(300) as usize;
        assert_eq!(got, whole[off as usize..end], "range {off}+{len}");
    }
    assert!(read_range(300, &extents, 300, 10, &chunks).unwrap().is_empty());
    chunks.1.lock().unwrap().clear();
    read_range(300, &extents, 0, 10, &chunks).unwrap();
    assert_eq!(*chunks.1.lock().unwrap(), vec![(d1, 1)], "a read names the chunks after it");
    // A chunk of the wrong length is an error, not a short or padded read.
    let bad = [Extent { offset: 0, len: 99, digest: d1 }];
    assert!(read_range(99, &bad, 0, 10, &chunks).is_err());
}
