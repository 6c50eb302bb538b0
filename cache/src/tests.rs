//! Unit tests of the disk store: verified inserts, corruption detection, no visible leftovers.

use format::Digest;

use crate::{GetError, InsertError, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    (dir, store)
}

#[test]
fn insert_then_get_round_trips_and_dedups() {
    let (_d, s) = store();
    let a = s.insert(b"some content some content some content some content some content", 3).unwrap();
    assert!(a.new);
    assert_eq!(a.digest, Digest::of(b"some content some content some content some content some content"));
    let again = s.insert(b"some content some content some content some content some content", 3).unwrap();
    assert!(!again.new);
    assert_eq!(s.get(&a.digest).unwrap(), b"some content some content some content some content some content");
    assert_eq!(s.list().unwrap(), vec![a.digest]);
}

#[test]
fn corrupt_object_is_reported_with_its_path() {
    let (_d, s) = store();
    let a = s.insert(b"payload that will be damaged", 0).unwrap();
    let path = s.object_path(&a.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&path, bytes).unwrap();
    match s.get(&a.digest) {
        Err(GetError::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[test]
fn framed_insert_with_wrong_digest_stores_nothing() {
    let (_d, s) = store();
    let framed = format::object::encode(b"real", 3);
    let claimed = Digest::of(b"claimed");
    let err = s.insert_framed(&claimed, &framed, 1 << 20).unwrap_err();
    assert!(matches!(err, InsertError::Invalid { .. }), "{err}");
    assert!(!s.contains(&claimed));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(s.clean_tmp().unwrap(), 0, "no temporary file may remain");
}

#[test]
fn missing_object_is_not_found() {
    let (_d, s) = store();
    assert!(matches!(s.get(&Digest::of(b"nope")), Err(GetError::NotFound(_))));
}

#[test]
fn dictionary_compressed_objects_need_and_use_their_dictionary() {
    let (_d, s) = store();
    let samples: Vec<Vec<u8>> =
        (0..300).map(|i| format!("<div class=\"item\">entry number {i} in the index of the docs</div>").into_bytes()).collect();
    let dict = zstd::dict::from_samples(&samples, 2048).unwrap();
    let data: Vec<u8> =
        (0..6).flat_map(|i| format!("<div class=\"item\">entry number {} in the index of the docs</div>", 7919 * i).into_bytes()).collect();
    let dict_digest = Digest::of(&dict);
    let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
    let ins = s.insert_with(&data, |d| format::object::encode_with_dict(d, &mut c, &dict_digest)).unwrap();
    assert_eq!(format::object::parse_header(&s.get_framed(&ins.digest).unwrap()).unwrap().dict, Some(dict_digest));
    // Without the dictionary object the store says exactly what is missing.
    match s.get(&ins.digest) {
        Err(GetError::MissingDictionary { dictionary, .. }) => assert_eq!(dictionary, dict_digest),
        other => panic!("expected a missing dictionary, got {other:?}"),
    }
    s.insert(&dict, 3).unwrap();
    assert_eq!(s.get(&ins.digest).unwrap(), data);
    assert_eq!(s.get(&ins.digest).unwrap(), data, "a pooled decompressor decodes again");
}

fn entries_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn packed_objects_are_visible_only_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let s = Store::open(&root).unwrap();
    s.start_pack().unwrap();
    let a = s.insert(b"first object in a pack, long enough to be compressed maybe", 3).unwrap();
    let b = s.insert(b"second object", 3).unwrap();
    assert!(!s.insert(b"second object", 3).unwrap().new, "dedup within the open pack");
    // Readable by this store at once, invisible to any other until synced.
    assert_eq!(s.get(&b.digest).unwrap(), b"second object");
    assert!(!Store::open(&root).unwrap().contains(&a.digest));
    s.sync().unwrap();
    let other = Store::open(&root).unwrap();
    assert_eq!(other.get(&a.digest).unwrap(), b"first object in a pack, long enough to be compressed maybe");
    assert_eq!(other.list().unwrap().len(), 2);
    assert_eq!(entries_in(&root.join("objects")), 0, "no loose files were written (nor the directories they would go in)");
    assert_eq!(entries_in(&root.join("tmp")), 0);
}

#[test]
fn unsynced_pack_is_discarded_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    {
        let s = Store::open(&root).unwrap();
        s.start_pack().unwrap();
        s.insert(b"never committed", 3).unwrap();
    }
    let s = Store::open(&root).unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_eq!(entries_in(&root.join("tmp")), 0);
    assert_eq!(entries_in(&root.join("packs")), 0);
}

#[test]
fn removing_a_packed_object_rewrites_its_pack() {
    let (_d, s) = store();
    s.start_pack().unwrap();
    let keep = s.insert(b"keep me", 3).unwrap().digest;
    let drop_ = s.insert(b"drop me", 3).unwrap().digest;
    s.sync().unwrap();
    s.remove(&[drop_]).unwrap();
    assert!(!s.contains(&drop_));
    assert_eq!(s.get(&keep).unwrap(), b"keep me");
    let reopened = Store::open(s.root()).unwrap();
    assert_eq!(reopened.list().unwrap(), vec![keep]);
    assert_eq!(entries_in(&s.root().join("packs")), 2, "one pack and its index remain");
}

#[test]
fn pack_with_a_lost_index_is_reported_and_rebuilt() {
    let (_d, s) = store();
    s.start_pack().unwrap();
    let a = s.insert(b"object one", 3).unwrap().digest;
    let b = s.insert(b"object two", 3).unwrap().digest;
    s.sync().unwrap();
    let idx =
        std::fs::read_dir(s.root().join("packs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().unwrap() == "idx").unwrap();
    std::fs::write(&idx, b"torn").unwrap();
    let reopened = Store::open(s.root()).unwrap();
    assert_eq!(reopened.broken_packs().len(), 1);
    assert!(!reopened.contains(&a));
    assert_eq!(reopened.repair_packs().unwrap(), 2);
    assert!(reopened.broken_packs().is_empty());
    assert_eq!(reopened.get(&b).unwrap(), b"object two");
}

#[test]
fn concurrent_bulk_writers_lose_nothing_and_sync_means_visible() {
    // Several writers share the store's pack and commit it at different moments (as batch
    // uploads to the server do); each must find its own objects the moment its sync returns.
    let (_d, s) = store();
    let s = std::sync::Arc::new(s);
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for round in 0..20u32 {
                    s.start_pack().unwrap();
                    let mut mine = Vec::new();
                    for i in 0..25u32 {
                        let content = format!("writer {t} round {round} object {i}");
                        mine.push(s.insert(content.as_bytes(), 1).unwrap().digest);
                    }
                    s.sync().unwrap();
                    for d in &mine {
                        assert!(s.contains(d), "object {d} of writer {t} is invisible after its sync");
                        s.get(d).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.list().unwrap().len(), 8 * 20 * 25);
    let reopened = Store::open(s.root()).unwrap();
    assert_eq!(reopened.list().unwrap().len(), 8 * 20 * 25, "everything is durable and indexed on disk");
}

#[test]
fn sizes_parse_and_apply_to_a_partition() {
    use crate::quota::Size;
    assert_eq!("25%".parse::<Size>().unwrap(), Size::Percent(25));
    assert_eq!("10G".parse::<Size>().unwrap(), Size::Bytes(10 << 30));
    assert_eq!("512MiB".parse::<Size>().unwrap(), Size::Bytes(512 << 20));
    assert_eq!("4096".parse::<Size>().unwrap(), Size::Bytes(4096));
    assert!("101%".parse::<Size>().is_err());
    assert!("ten".parse::<Size>().is_err());
    assert!("99999999999T".parse::<Size>().is_err(), "overflow is refused, not wrapped");
    assert_eq!(Size::Percent(25).of(1000), 250);
}

#[test]
fn allowance_is_the_limit_lowered_to_keep_free_space() {
    use crate::quota::{Disk, Quota, Size};
    let q = Quota { limit: Size::Bytes(1000), min_free: Size::Percent(10) };
    let roomy = Disk { total: 100_000, available: 50_000 };
    assert_eq!(q.allowance(400, roomy), 1000);
    assert_eq!(q.shrink_to(400, roomy), None);
    assert_eq!(q.shrink_to(1200, roomy), Some(900), "over the limit: shrink to 90 % of it");
    // 9,500 bytes free of 100,000 with 10 % to keep: 500 bytes must go from the 800 held.
    let tight = Disk { total: 100_000, available: 9_500 };
    assert_eq!(q.allowance(800, tight), 300);
    assert_eq!(q.shrink_to(800, tight), Some(270));
}

#[test]
fn eviction_takes_least_recently_used_first_and_spares_pins() {
    let (_d, s) = store();
    s.track_use().unwrap();
    let objs: Vec<Digest> = (0..6u8).map(|i| s.insert(&[i; 4000], 0).unwrap().digest).collect();
    let each = s.stored_len(&objs[0]).unwrap();
    assert_eq!(s.usage().unwrap().bytes, 6 * each);
    // Use 0 and 1 last, so 2..6 are the oldest; pin 2.
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.get(&objs[0]).unwrap();
    s.get(&objs[1]).unwrap();
    let pinned: std::collections::HashSet<Digest> = [objs[2]].into_iter().collect();
    let done = s.evict(3 * each, &pinned).unwrap();
    assert_eq!(done.objects, 3);
    assert_eq!(done.remaining, 3 * each);
    for (i, d) in objs.iter().enumerate() {
        assert_eq!(s.contains(d), [0, 1, 2].contains(&i), "object {i}");
    }
    // Only pinned objects left: eviction stops there, over target.
    let all: std::collections::HashSet<Digest> = objs[..2].iter().copied().collect();
    let done = s.evict(0, &all).unwrap();
    assert_eq!((done.objects, done.remaining), (1, 2 * each));
    assert_eq!(s.usage().unwrap().evicted_objects, 4);
    // A reopened store finds the same use from the files.
    let reopened = Store::open(s.root()).unwrap();
    reopened.track_use().unwrap();
    assert_eq!(reopened.usage().unwrap().bytes, 2 * each);
}

/// A store with one pack of `n` objects, each ~4 KB, and the pack's path.
fn store_with_pack(n: u8) -> (tempfile::TempDir, Store, Vec<Digest>, std::path::PathBuf) {
    let (d, s) = store();
    s.start_pack().unwrap();
    let objs: Vec<Digest> = (0..n).map(|i| s.insert(&[i; 4000], 0).unwrap().digest).collect();
    s.sync().unwrap();
    let pack =
        std::fs::read_dir(s.root().join("packs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().unwrap() == "pack").unwrap();
    (d, s, objs, pack)
}

#[test]
fn pack_shorter_than_its_index_gives_errors_naming_the_pack_not_panics() {
    let (_d, s, objs, pack) = store_with_pack(4);
    let len = std::fs::metadata(&pack).unwrap().len();
    // Cut inside the third object: the first two stay whole.
    let cut = len - s.stored_len(&objs[3]).unwrap() - 36 - 10;
    std::fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(cut).unwrap();
    for store in [&s, &Store::open(s.root()).unwrap()] {
        assert_eq!(store.get(&objs[0]).unwrap(), vec![0u8; 4000]);
        for lost in &objs[2..] {
            match store.get(lost) {
                Err(e @ GetError::Truncated { .. }) => {
                    let GetError::Truncated { digest, source } = &e else { unreachable!() };
                    assert_eq!(digest, lost);
                    assert_eq!(source.pack, pack);
                    assert_eq!(source.pack_len, cut);
                    assert!(source.offset + u64::from(source.len) > cut);
                    assert!(e.to_string().contains(&pack.display().to_string()), "{e}");
                }
                other => panic!("expected a truncated pack, got {other:?}"),
            }
            assert_eq!(store.dictionary_of(lost), None);
        }
    }
    // Garbage collection: removing an object while others are lost refuses the rewrite and
    // names the pack; nothing is lost by trying.
    let err = s.remove(&[objs[1]]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<crate::TruncatedPack>()).expect("a TruncatedPack");
    assert_eq!(inner.pack, pack);
    assert_eq!(s.get(&objs[1]).unwrap(), vec![1u8; 4000]);
    assert_eq!(entries_in(&s.root().join("tmp")), 0, "no half-written pack is left");
    // Removing exactly the lost objects goes through and keeps the rest.
    s.remove(&objs[2..]).unwrap();
    assert_eq!(s.get(&objs[0]).unwrap(), vec![0u8; 4000]);
    assert_eq!(s.get(&objs[1]).unwrap(), vec![1u8; 4000]);
    assert!(!s.contains(&objs[2]));
}

#[test]
fn eviction_and_reachability_over_a_truncated_pack_do_not_panic() {
    use format::{EntryKind, Extent, Manifest, Meta, Tree};
    let (_d, s) = store();
    s.track_use().unwrap();
    let loose = s.insert(b"a loose object, tracked for eviction", 0).unwrap().digest;
    s.start_pack().unwrap();
    let chunk = s.insert(&[9u8; 4000], 0).unwrap().digest;
    let meta = Meta { mode: 0o644, uid: 0, gid: 0, mtime_sec: 0, mtime_nsec: 0, xattrs: vec![] };
    let entry = format::Entry {
        name: b"f".to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        link_group: 0,
        link_count: 1,
        xattrs: vec![],
        kind: EntryKind::Regular { size: 4000, extents: vec![Extent { offset: 0, len: 4000, digest: chunk }] },
    };
    let tree = s.insert(&Tree { entries: vec![entry] }.encode().unwrap(), 0).unwrap().digest;
    s.sync().unwrap();
    let pack =
        std::fs::read_dir(s.root().join("packs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().unwrap() == "pack").unwrap();
    std::fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(20).unwrap();
    let manifest = Manifest {
        image: format::ImageName::new("img").unwrap(),
        generation: 1,
        root: tree,
        root_meta: meta,
        parent: None,
        created: 0,
        message: String::new(),
        chunking: Default::default(),
        stats: Default::default(),
        extensions: vec![],
    };
    match crate::reachable(&s, &manifest) {
        Err(crate::ReachError::Object(GetError::Truncated { digest, .. })) => assert_eq!(digest, tree),
        other => panic!("expected a truncated pack, got {other:?}"),
    }
    // What garbage collection keeps: the unreadable tree is skipped, not followed.
    let mut keep = std::collections::HashSet::new();
    crate::to_keep(&s, &manifest, true, &mut keep);
    assert!(!keep.contains(&chunk));
    // Eviction runs: the loose object goes, and the damaged pack whole (two objects).
    let done = s.evict(0, &Default::default()).unwrap();
    assert_eq!(done.objects, 3);
    assert!(!s.contains(&loose) && !s.contains(&chunk) && !pack.exists());
}

#[test]
fn a_cache_keeps_what_one_answer_brought_in_one_pack_evicted_whole() {
    let (_d, s) = store();
    s.track_use().unwrap();
    let framed: Vec<(Digest, Vec<u8>)> = (0..8u8)
        .map(|i| {
            let data = vec![i; 3000];
            (Digest::of(&data), format::object::encode(&data, 3))
        })
        .collect();
    let verified: Vec<crate::Verified<'_>> = framed.iter().map(|(d, f)| s.verify(d, f, 1 << 20).unwrap()).collect();
    let loose = s.insert(b"one loose object", 0).unwrap().digest;
    // Two packs of four: the first used later than the second.
    let first = s.insert_pack(&verified[..4], false).unwrap();
    assert!(first.iter().all(|i| i.new));
    assert!(s.insert_pack(&verified[..2], false).unwrap().iter().all(|i| !i.new), "held already: no second copy");
    s.insert_pack(&verified[4..], false).unwrap();
    let packs = || std::fs::read_dir(s.root().join("packs")).unwrap().filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "pack").count();
    assert_eq!(packs(), 2);
    assert_eq!(entries_in(&s.root().join("objects")), 1, "the packed objects wrote no loose files");
    assert_eq!(s.usage().unwrap().objects, 9);
    for (d, _) in &framed {
        assert_eq!(s.get(d).unwrap(), vec![framed.iter().position(|(x, _)| x == d).unwrap() as u8; 3000]);
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.get(&framed[0].0).unwrap();
    s.get(&loose).unwrap();
    // The least recently used unit is the second pack: it goes whole.
    let held = s.usage().unwrap().bytes;
    let done = s.evict(held - 1, &Default::default()).unwrap();
    assert_eq!(done.objects, 4);
    assert!(framed[4..].iter().all(|(d, _)| !s.contains(d)) && framed[..4].iter().all(|(d, _)| s.contains(d)));
    assert_eq!(packs(), 1);
    // A pinned object keeps its whole pack; the loose one goes.
    let pinned: std::collections::HashSet<Digest> = [framed[3].0].into_iter().collect();
    let done = s.evict(0, &pinned).unwrap();
    assert_eq!(done.objects, 1);
    assert!(!s.contains(&loose) && framed[..4].iter().all(|(d, _)| s.contains(d)));
    // A reopened store tracks the pack from its file.
    let reopened = Store::open(s.root()).unwrap();
    reopened.track_use().unwrap();
    assert_eq!(reopened.usage().unwrap().objects, 4);
    assert_eq!(reopened.usage().unwrap().bytes, s.usage().unwrap().bytes);
    assert_eq!(reopened.evict(0, &Default::default()).unwrap().objects, 4);
    assert_eq!(packs(), 0);
}

#[test]
fn atomic_write_replaces_whole_files_and_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    crate::atomic::write(&path, b"old").unwrap();
    crate::atomic::write_with(&path, b"new", crate::atomic::Options::new().mode(0o600)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // A fill that fails leaves the old file and no temporary one.
    let failed: Result<(), crate::atomic::WriteError> = crate::atomic::write_from(&path, Default::default(), |f, tmp| {
        std::io::Write::write_all(f, b"half").unwrap();
        Err(crate::atomic::WriteError { path: tmp.to_path_buf(), source: std::io::ErrorKind::Other.into() })
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(entries_in(dir.path()), 1);
    // The temporary file may live elsewhere on the same filesystem.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    crate::atomic::write_with(&path, b"newer", crate::atomic::Options::new().tmp_in(&tmp).not_durable()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"newer");
    assert_eq!(entries_in(&tmp), 0);
}

#[test]
fn fault_specs_name_a_kind_and_a_point_counted_from_one() {
    use crate::fault::{Fault, Kind};
    assert_eq!("sync:7".parse(), Ok(Fault { kind: Kind::Sync, at: 7 }));
    assert_eq!("write:1".parse(), Ok(Fault { kind: Kind::Write, at: 1 }));
    for bad in ["", "sync", "sync:0", "sync:-1", "fsync:3", "write:x", "write:1:2"] {
        assert!(bad.parse::<Fault>().is_err(), "{bad}");
    }
    // Unarmed (the test process has no IMAGED_FAULT), a point does nothing.
    crate::fault::point(Kind::Sync);
}
