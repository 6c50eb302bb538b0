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

/// A tree three levels deep with two sibling directories, numbered in whatever order they
/// are first read.
fn deep_sample() -> (Mem, Manifest) {
    let mut mem = Mem::default();
    let leaf = mem.add(vec![entry("f", EntryKind::Regular { size: 1, extents: vec![] })]);
    let x = mem.add(vec![entry("in", EntryKind::Directory { tree: leaf }), entry("x1", EntryKind::Fifo)]);
    let y = mem.add(vec![entry("y1", EntryKind::Fifo), entry("y2", EntryKind::Fifo)]);
    let root = mem.add(vec![entry("x", EntryKind::Directory { tree: x }), entry("y", EntryKind::Directory { tree: y })]);
    (mem, manifest(root))
}

/// The inode number of `path` (names separated by `/`) in `img`.
fn ino_of(mem: &Mem, img: &Image, path: &str) -> u64 {
    path.split('/').fold(img.root_ino(), |dir, name| img.lookup(mem, dir, name.as_bytes()).unwrap().unwrap().ino)
}

#[test]
fn every_inode_given_names_its_path_and_hard_links_their_first_name() {
    let (mem, m) = deep_sample();
    let img = Image::new(2, Digest::of(b"m"), m);
    for p in ["y/y2", "x/in/f", "x", "x/x1", "y"] {
        assert_eq!(img.path_of(ino_of(&mem, &img, p)).unwrap(), p.as_bytes(), "{p}");
    }
    assert_eq!(img.path_of(img.root_ino()).unwrap(), b"");
    let (mem, img) = sample();
    let b = img.lookup(&mem, img.root_ino(), b"b").unwrap().unwrap();
    assert_eq!(img.path_of(b.ino).unwrap(), b"a", "a hard link is named by its group's first entry");
    assert_eq!(img.path_of(img.root_ino() + 999), None, "a number never given has no path");
    assert_eq!(img.path_of(9 << crate::image::SLOT_SHIFT), None, "another slot's number has none here");
}

#[test]
fn a_journal_replayed_gives_every_inode_its_number_again_whatever_the_order_read() {
    let (mem, m) = deep_sample();
    let paths = ["y/y2", "x/in/f", "x/x1", "y/y1", "x", "y"];
    let cache = tempfile::tempdir().unwrap();
    let session = crate::resume::Session {
        version: crate::resume::SESSION_VERSION,
        init: None,
        slots: vec![crate::resume::Slot { slot: 5, manifest: Digest::of(b"m"), generation: "img@1".into() }],
        current: 5,
        previous: None,
        next_slot: 6,
        epoch: 0,
    };
    // Read in an order unlike the tree's: numbers depend on it.
    let journal = crate::resume::Journal::fresh(cache.path(), session).unwrap();
    let first = Image::new(5, Digest::of(b"m"), m.clone());
    first.set_log(journal.log(5, true).unwrap());
    let before: Vec<u64> = paths.iter().map(|p| ino_of(&mem, &first, p)).collect();
    let fresh = Image::new(5, Digest::of(b"m"), m.clone());
    let in_tree_order: Vec<u64> = ["x", "x/in/f", "x/x1", "y", "y/y1", "y/y2"].iter().map(|p| ino_of(&mem, &fresh, p)).collect();
    assert_ne!(
        {
            let mut b = before.clone();
            b.sort();
            b
        },
        in_tree_order,
        "the sample must number differently by order, or the test proves nothing"
    );
    drop(journal);

    // A new process: the journal, resumed, replays the order; every number means the same.
    let (journal, dirs) = crate::resume::Journal::resume(cache.path()).unwrap();
    assert_eq!(journal.session().epoch, 1);
    let again = Image::new(5, Digest::of(b"m"), m.clone());
    again.replay(&mem, &dirs[&5]).unwrap();
    for (p, ino) in paths.iter().zip(&before) {
        let attr = again.attr(&mem, *ino).unwrap();
        assert_eq!(attr.ino, *ino, "{p}");
        assert_eq!(ino_of(&mem, &again, p), *ino, "{p} looks up to its old number");
    }

    // A torn last record (killed inside the write) is dropped and appends stay aligned.
    let log = crate::resume::dir(cache.path()).join("slot-5.dirs");
    let mut bytes = std::fs::read(&log).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&log, &bytes).unwrap();
    let (journal, dirs) = crate::resume::Journal::resume(cache.path()).unwrap();
    assert_eq!(dirs[&5].len() * 8, whole);
    assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, whole);
    assert_eq!(journal.session().epoch, 2);
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

mod fetching {
    //! The fetcher against small HTTP servers on 127.0.0.1 that answer the batch endpoint
    //! well, with a wrong object, slowly, or not at all.

    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use format::Digest;

    use crate::fetch::{FetchError, Fetcher, Limits};

    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        Good,
        /// Sends another object's bytes under the asked digest.
        Corrupt,
        /// Sends the head, then a byte every 100 ms.
        Drip,
    }

    /// Serves `objects` (digest → framed) on a free port; returns its URL.
    fn serve(objects: Arc<HashMap<Digest, Vec<u8>>>, how: Behaviour) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let objects = objects.clone();
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    let body_at = loop {
                        let n = conn.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&req[..body_at]).to_lowercase();
                    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
                    while req.len() < body_at + len {
                        let n = conn.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    }
                    let v: serde_json::Value = serde_json::from_slice(&req[body_at..]).unwrap();
                    let mut out = Vec::new();
                    for hex in v["digests"].as_array().unwrap() {
                        let d: Digest = hex.as_str().unwrap().parse().unwrap();
                        let Some(framed) = objects.get(&d) else { continue };
                        let framed = if how == Behaviour::Corrupt { objects.values().find(|f| *f != framed).unwrap() } else { framed };
                        format::record::encode_into(&mut out, &d, framed);
                    }
                    let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", out.len());
                    if how == Behaviour::Drip {
                        for b in out {
                            if conn.write_all(&[b]).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    } else {
                        let _ = conn.write_all(&out);
                    }
                });
            }
        });
        url
    }

    fn objects() -> Arc<HashMap<Digest, Vec<u8>>> {
        Arc::new(
            (0..20u32)
                .map(|i| {
                    let content = format!("object number {i} ").repeat(50).into_bytes();
                    (Digest::of(&content), format::object::encode(&content, 3))
                })
                .collect(),
        )
    }

    fn limits() -> Limits {
        Limits {
            connect: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            min_rate: 10_000,
            rate_grace: Duration::from_millis(300),
            rest: Duration::from_secs(60),
        }
    }

    fn store() -> (tempfile::TempDir, Arc<cache::Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(cache::Store::open(dir.path().join("cache")).unwrap());
        (dir, s)
    }

    #[test]
    fn a_wrong_object_is_refused_and_taken_from_the_next_server() {
        let objs = objects();
        let bad = serve(objs.clone(), Behaviour::Corrupt);
        let good = serve(objs.clone(), Behaviour::Good);
        let (_d, store) = store();
        let f = Fetcher::new(&[bad.clone(), good.clone()], store.clone(), limits());
        let want: Vec<Digest> = objs.keys().copied().collect();
        f.fetch(&want).unwrap();
        for d in &want {
            assert_eq!(store.get_framed(d).unwrap(), objs[d], "the cache holds the right bytes for {d}");
            store.get(d).unwrap();
        }
        let health = f.health();
        assert_eq!((health[0].failed, health[1].ok), (1, 1), "{health:?}");
        assert!(health[0].last_error.as_deref().unwrap().contains("does not verify"), "{health:?}");
        assert_eq!(f.traffic().requests, 2, "one batch request per server, not one per object");
        assert!(!f.offline());
    }

    #[test]
    fn dead_and_dripping_servers_fail_within_the_deadline() {
        let objs = objects();
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let u = format!("http://{}", l.local_addr().unwrap());
            drop(l);
            u
        };
        let drip = serve(objs.clone(), Behaviour::Drip);
        let (_d, store) = store();
        let f = Fetcher::new(&[dead, drip], store.clone(), limits());
        let start = Instant::now();
        let want: Vec<Digest> = objs.keys().copied().take(3).collect();
        let err = f.fetch(&want).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "gave up in {:?}", start.elapsed());
        let FetchError::Unavailable { missing, tried } = err else { panic!("{err}") };
        assert_eq!(missing, 3);
        assert!(tried.contains("minimum rate"), "{tried}");
        assert!(f.offline(), "every server failed");
        assert!(want.iter().all(|d| !store.contains(d)), "nothing half-fetched is visible");
    }
}

#[test]
fn mount_helper_form_is_recognised_and_its_options_mapped() {
    use crate::mount_helper::parse;
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let parse = |a: &[String]| parse(a, &["status", "mount"]);
    assert!(parse(&args(&["status", "/mnt"])).is_none(), "a subcommand is not the helper form");
    assert!(parse(&args(&["--help"])).is_none());
    let h = parse(&args(&[
        "os/stable",
        "/srv/os",
        "-o",
        "rw,server=http://a:1,server=http://b:2,cache=/c,_netdev,dev,suid,x-systemd.automount",
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((h.channel.as_str(), h.mountpoint.as_str(), h.foreground), ("os/stable", "/srv/os", false));
    let opts: Vec<(&str, Option<&str>)> = h.options.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
    assert_eq!(opts, [("server", Some("http://a:1")), ("server", Some("http://b:2")), ("cache", Some("/c"))]);
    assert!(parse(&args(&["os/stable", "/srv/os", "-o", "cache=/c,foreground"])).unwrap().unwrap().foreground);
    let h = parse(&args(&["os/stable", "/srv/os", "-o", "cache=/c,passthrough"])).unwrap().unwrap();
    assert_eq!(h.options.last(), Some(&("passthrough".to_string(), None)), "a flag option");
    assert!(parse(&args(&["os/stable", "/srv/os", "-o", "passthrough=1"])).unwrap().is_err(), "a flag takes no value");
    let err = parse(&args(&["os/stable", "/srv/os", "-o", "cache=/c,bogus=1"])).unwrap().unwrap_err();
    assert!(err.to_string().contains("bogus=1"), "{err}");
    assert!(parse(&args(&["os/stable", "/srv/os", "-o", "cache"])).unwrap().is_err(), "an option without its value");
    assert!(parse(&args(&["os/stable", "/srv/os", "extra"])).unwrap().is_err());
}

mod seams {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::Path;
    use std::sync::Arc;

    use api::control::*;
    use format::{ChannelName, Digest};

    use crate::exit_codes::{ExitCode, HELP};
    use crate::fetch::{Fetcher, Limits, RemoteError};
    use crate::state::{Follow, Served, State, STATE_VERSION};
    use crate::trusted::TrustError;

    fn fixed_status() -> Status {
        let d = |s: &[u8]| Digest::of(s);
        Status {
            channel: Some(ChannelName::new("os/stable").unwrap()),
            at: None,
            channel_version: 3,
            held: None,
            current: GenerationRef { generation: "os@2".into(), manifest: d(b"2") },
            previous: Some(GenerationRef { generation: "os@1".into(), manifest: d(b"1") }),
            cache: CacheReport {
                dir: "/var/cache/imgfs/store".into(),
                used_bytes: 1288490189,
                objects: 1234,
                object_bytes: 1288490189,
                plain_copies: 0,
                plain_copy_bytes: 0,
                limit: "25%".into(),
                min_free: "5%".into(),
                allowance_bytes: Some(4 << 30),
                disk_available_bytes: Some(10 << 30),
                evicted_objects: 0,
                evicted_bytes: 0,
                keeper_rounds: 4,
                last_eviction: None,
            },
            pins: vec![GenerationRef { generation: "os@1".into(), manifest: d(b"1") }],
            prefetching: vec![],
            servers: vec![
                ServerHealth { url: "http://a:4640".into(), ok: 12, failed: 0, last_error: None, resting_for: 0 },
                ServerHealth {
                    url: "http://b:4640".into(),
                    ok: 3,
                    failed: 2,
                    last_error: Some("request failed: connection refused".into()),
                    resting_for: 25,
                },
            ],
            offline: false,
            traffic: Traffic { requests: 40, bytes: 1 << 20 },
            opens: Opens { mode: OpenMode::Kernel, fuse: 0, passthrough: 0 },
            trust: TrustSummary {
                fresh: true,
                stale_since: None,
                valid_until: Some("2030-01-01T00:00:00Z".into()),
                last_check: Some(TrustCheck { at: "2029-12-31T23:00:00Z".into(), error: None }),
                versions: Default::default(),
                min_epoch: 0,
                family: Some("os".into()),
                arch: "x86_64".into(),
                clock_high_water: "2029-12-31T23:00:00Z".into(),
            },
            last_check: Some(LastCheck {
                seconds_ago: 42,
                result: Switch::Switched { from: "os@1".into(), to: "os@2".into(), channel_version: 3, millis: 9 },
            }),
            writable: None,
            trace_fetch: None,
        }
    }

    #[test]
    fn status_for_people_is_a_short_summary_in_human_sizes() {
        let st = fixed_status();
        let (two, one) = (st.current.manifest.to_hex(), st.previous.as_ref().unwrap().manifest.to_hex());
        let expected = [
            "channel:     os/stable, version 3".to_string(),
            format!("current:     os@2 (manifest {})", &two[..12]),
            format!("previous:    os@1 (manifest {})", &one[..12]),
            "checked:     42 s ago: switched from os@1 to os@2 (channel version 3) in 9 ms".into(),
            "metadata:    fresh, valid until 2030-01-01T00:00:00Z".into(),
            "cache:       1.2 GiB of 4.0 GiB (limit 25%, min free 5%), 1234 objects".into(),
            "servers:     http://a:4640 ok (12 ok, 0 failed)".into(),
            "             http://b:4640 resting 25 s after: request failed: connection refused (3 ok, 2 failed)".into(),
            "offline:     no".into(),
            "pins:        os@1".into(),
            "opens:       by the kernel".into(),
        ];
        assert_eq!(crate::report::status(&st).lines().collect::<Vec<_>>(), expected);

        let mut stale = st;
        stale.trust.fresh = false;
        stale.trust.stale_since = Some("2029-12-30T00:00:00Z".into());
        stale.trust.last_check = Some(TrustCheck { at: "x".into(), error: Some("metadata refused: timestamp: expired".into()) });
        stale.previous = None;
        stale.last_check = None;
        let digest = |b: &[u8]| format::Digest::of(b);
        stale.writable = Some(api::control::WritableReport {
            dir: "/var/lib/imgfs/writable/os".into(),
            protected: vec!["etc/ssh/**".into(), "usr/**".into()],
            changes: 4,
            events: 9,
            recent: vec![api::control::DriftEvent {
                at: "2029-12-31T22:00:00Z".into(),
                kind: api::control::DriftKind::Restored,
                path: "etc/ssh/sshd_config".into(),
                generation: "os@2".into(),
                image: Some(digest(b"a")),
                local: None,
                base: None,
            }],
        });
        let text = crate::report::status(&stale);
        let restored = format!(
            "             2029-12-31T22:00:00Z restored etc/ssh/sshd_config (image {}, local -) on os@2",
            &digest(b"a").to_hex()[..12]
        );
        for line in [
            "writable:    /var/lib/imgfs/writable/os: 4 local changes, 9 events",
            "protected:   etc/ssh/** usr/**",
            restored.as_str(),
            "metadata:    stale since 2029-12-30T00:00:00Z",
            "last error:  metadata refused: timestamp: expired",
            "previous:    none: rollback has no target",
            "checked:     not since the mount started",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn sizes_read_in_binary_units() {
        use crate::report::bytes;
        assert_eq!(
            [bytes(0), bytes(1023), bytes(1536), bytes(5 << 20), bytes(3 << 40)],
            ["0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 TiB"]
        );
    }

    #[test]
    fn exit_codes_follow_the_outcome_and_are_all_documented() {
        let refused = |reason| Switch::Refused { reason, error: String::new() };
        assert_eq!(ExitCode::of_switch(&Switch::AlreadyCurrent { generation: "a@1".into(), channel_version: 1 }), ExitCode::Ok);
        assert_eq!(ExitCode::of_switch(&refused(Refusal::MetadataRefused)), ExitCode::Refused);
        assert_eq!(ExitCode::of_switch(&refused(Refusal::ClockBack)), ExitCode::Refused);
        assert_eq!(ExitCode::of_switch(&refused(Refusal::Unreachable)), ExitCode::Unreachable);
        assert_eq!(ExitCode::of_switch(&Switch::NothingToRollBackTo), ExitCode::NotFound);
        assert_eq!(ExitCode::of_failure(FailureKind::NotFound), ExitCode::NotFound);
        for (i, code) in ExitCode::ALL.iter().enumerate() {
            assert_eq!(code.code(), i as i32);
            assert!(HELP.lines().any(|l| l.starts_with(&format!("  {i}  "))), "exit code {i} is not in --help");
        }
    }

    #[test]
    fn a_mount_offline_starts_on_the_last_verified_generation_of_its_channel_only() {
        let channel = ChannelName::new("os/stable").unwrap();
        let served = Served { generation: "os@4".into(), manifest: Digest::of(b"4"), channel_version: 9 };
        let state = State {
            version: STATE_VERSION,
            channel: Some(channel.clone()),
            at: None,
            held: None,
            current: served,
            previous: None,
            pins: vec![],
            prefetching: vec![],
        };
        let offline = || Err(TrustError::Unreachable("http://a: request failed".into()));
        let follow = Follow::Channel(channel.clone());
        let start = crate::startup::choose_start(offline(), Some(&state), &follow, Path::new("/c")).unwrap();
        assert_eq!((start.label.as_str(), start.digest, start.channel_version, start.from_cache), ("os@4", Digest::of(b"4"), 9, true));
        let other = Follow::Channel(ChannelName::new("os/pilot").unwrap());
        let err = crate::startup::choose_start(offline(), Some(&state), &other, Path::new("/c")).unwrap_err();
        assert!(err.to_string().contains("holds no verified generation of os/pilot"), "{err}");
        // A pinned mount starts offline only from the state of the same pin.
        let pinned = Follow::At { image: format::ImageName::new("os").unwrap(), n: 4 };
        let err = crate::startup::choose_start(offline(), Some(&state), &pinned, Path::new("/c")).unwrap_err();
        assert!(matches!(err, crate::startup::MountError::NothingVerified { .. }), "{err}");
        let pinned_state = State { channel: None, at: Some("os@4".into()), ..state.clone() };
        let start = crate::startup::choose_start(offline(), Some(&pinned_state), &pinned, Path::new("/c")).unwrap();
        assert_eq!((start.label.as_str(), start.from_cache), ("os@4", true));
        assert!(crate::startup::choose_start(offline(), Some(&pinned_state), &follow, Path::new("/c")).is_err());
        // The state file keeps digests and channel names as plain strings.
        let text = serde_json::to_value(&state).unwrap();
        assert_eq!(
            (text["channel"].as_str(), text["current"]["manifest"].as_str()),
            (Some("os/stable"), Some(&*Digest::of(b"4").to_hex()))
        );
    }

    #[test]
    fn the_hold_is_kept_in_the_state_file_and_files_without_it_are_not_held() {
        let served = Served { generation: "os@2".into(), manifest: Digest::of(b"2"), channel_version: 0 };
        let old = format!(
            r#"{{"version": 1, "channel": "os/stable", "current": {{"generation": "os@1", "manifest": "{}", "channel_version": 3}}, "previous": null}}"#,
            Digest::of(b"1").to_hex()
        );
        let st: State = serde_json::from_str(&old).unwrap();
        assert_eq!(st.held, None);
        assert!(!serde_json::to_string(&st).unwrap().contains("held"), "an unheld state writes no field");
        let held = State { held: Some("os@2".into()), current: served, ..st };
        let back: State = serde_json::from_str(&serde_json::to_string(&held).unwrap()).unwrap();
        assert_eq!(back.held.as_deref(), Some("os@2"));
        assert!(back.follows(&Follow::Channel(ChannelName::new("os/stable").unwrap())), "a hold does not change what the mount follows");
    }

    /// A server answering every request once with `status` and `body`.
    fn answer_once(status: &str, body: &str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    return;
                }
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(reply.as_bytes()).unwrap();
        });
        url
    }

    #[test]
    fn remote_failures_are_typed_transport_status_with_code_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(cache::Store::open(dir.path().join("cache")).unwrap());
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let refusing = answer_once("403 Forbidden", r#"{"error":"bad_token","message":"no"}"#);
        let proxy = answer_once("502 Bad Gateway", "<html>bad gateway</html>");
        let big = answer_once("200 OK", &"x".repeat(100));
        let f = Fetcher::new(&[dead, refusing, proxy, big], store, Limits::default());
        let err = f.get_file(0, "/tuf/timestamp.json", 1000).unwrap_err();
        assert!(matches!(err, RemoteError::Transport { .. }) && err.to_string().contains("request failed"), "{err}");
        let err = f.get_file(1, "/tuf/timestamp.json", 1000).unwrap_err();
        assert!(matches!(err, RemoteError::Http { status: 403, code: api::ErrorCode::BadToken, .. }), "{err}");
        assert!(err.to_string().ends_with("answered 403 Forbidden"), "{err}");
        let err = f.get_file(2, "/tuf/timestamp.json", 1000).unwrap_err();
        assert!(matches!(err, RemoteError::Http { status: 502, code: api::ErrorCode::Unknown, .. }), "{err}");
        let err = f.get_file(3, "/tuf/timestamp.json", 10).unwrap_err();
        assert!(matches!(err, RemoteError::TooLarge { max: 10, announced: Some(100), .. }), "{err}");
    }
}
