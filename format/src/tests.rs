//! Unit tests for the codecs: round trips, canonical bytes, and rejection of malformed input.

use crate::object::{self, ObjectError};
use crate::*;

/// Pseudo-random bytes (blake3 in XOF mode), incompressible and without period.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut out);
    out
}

fn entry(name: &str, kind: EntryKind) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 123,
        link_group: 0,
        link_count: 1,
        xattrs: vec![],
        kind,
    }
}

fn sample_tree() -> Tree {
    let d = Digest::of(b"x");
    let mut setuid = entry("su", EntryKind::Regular { size: 10, extents: vec![Extent { offset: 0, len: 10, digest: d }] });
    setuid.mode = 0o4755;
    setuid.xattrs = vec![
        Xattr { name: b"user.b".to_vec(), value: b"2".to_vec() },
        Xattr { name: b"security.capability".to_vec(), value: vec![1, 0, 0, 2] },
    ];
    let mut linked = entry("hl", EntryKind::Regular { size: 0, extents: vec![] });
    linked.link_group = 1;
    linked.link_count = 2;
    let mut t = Tree {
        entries: vec![
            setuid,
            entry("dir", EntryKind::Directory { tree: d }),
            entry("link", EntryKind::Symlink { target: b"../x".to_vec() }),
            entry("null", EntryKind::CharDevice { major: 1, minor: 3 }),
            entry("sda", EntryKind::BlockDevice { major: 8, minor: 0 }),
            entry("fifo", EntryKind::Fifo),
            entry("sock", EntryKind::Socket),
            Entry { name: vec![0xff, 0xfe], ..entry("", EntryKind::Fifo) },
            linked,
            entry(
                "sparse",
                EntryKind::Regular {
                    size: 100 << 20,
                    extents: vec![Extent { offset: 4096, len: 5, digest: d }, Extent { offset: 50 << 20, len: 7, digest: d }],
                },
            ),
        ],
    };
    t.canonicalize();
    t
}

#[test]
fn tree_round_trips_every_kind() {
    let t = sample_tree();
    let bytes = t.encode().unwrap();
    assert_eq!(Tree::decode(&bytes).unwrap(), t);
}

#[test]
fn tree_encoding_is_canonical_whatever_the_build_order() {
    let t = sample_tree();
    let mut shuffled = t.clone();
    shuffled.entries.reverse();
    for e in &mut shuffled.entries {
        e.xattrs.reverse();
    }
    shuffled.canonicalize();
    assert_eq!(Digest::of(&shuffled.encode().unwrap()), Digest::of(&t.encode().unwrap()));
}

#[test]
fn every_truncation_of_a_tree_is_an_error() {
    let bytes = sample_tree().encode().unwrap();
    for n in 0..bytes.len() {
        assert!(Tree::decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(Tree::decode(&longer), Err(DecodeError::Trailing(1)));
}

fn check_invalid(mutate: impl FnOnce(&mut Tree), what: &str) {
    let mut t = sample_tree();
    mutate(&mut t);
    match t.encode() {
        Err(DecodeError::Invalid { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected invalid {what}, got {other:?}"),
    }
}

#[test]
fn invalid_trees_are_refused() {
    check_invalid(|t| t.entries[0].name = b"..".to_vec(), "entry name");
    check_invalid(|t| t.entries[0].name = b"a/b".to_vec(), "entry name");
    check_invalid(|t| t.entries.swap(0, 1), "entry order");
    check_invalid(|t| t.entries[0].mode = 0o100644, "mode");
    check_invalid(|t| t.entries[0].mtime_nsec = 1_000_000_000, "mtime nsec");
    check_invalid(
        |t| {
            let e = t.entries.iter_mut().find(|e| e.name == b"sparse").unwrap();
            e.kind = EntryKind::Regular { size: 3, extents: vec![Extent { offset: 0, len: 5, digest: Digest::of(b"") }] };
        },
        "extent",
    );
    check_invalid(
        |t| {
            let e = t.entries.iter_mut().find(|e| e.name == b"link").unwrap();
            e.kind = EntryKind::Symlink { target: vec![] };
        },
        "symlink target",
    );
}

#[test]
fn huge_declared_entry_count_is_refused_without_allocating() {
    let mut bytes = b"IMGT\x01".to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Tree::decode(&bytes), Err(DecodeError::Invalid { what: "entry count", .. })));
}

fn sample_manifest() -> Manifest {
    Manifest {
        image: ImageName::new("debian").unwrap(),
        generation: 2,
        root: Digest::of(b"root"),
        root_meta: Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_sec: 5,
            mtime_nsec: 6,
            xattrs: vec![Xattr { name: b"user.a".to_vec(), value: b"1".to_vec() }],
        },
        parent: Some(Digest::of(b"parent")),
        created: 1_700_000_000,
        message: "patch: openssl".into(),
        chunking: ChunkParams::default(),
        stats: Stats { files: 5, directories: 2, symlinks: 1, other: 0, bytes: 100, objects: 7, new_objects: 3, new_bytes: 40 },
        extensions: vec![("arch".into(), b"amd64".to_vec())],
    }
}

#[test]
fn manifest_round_trips() {
    let m = sample_manifest();
    let bytes = m.encode();
    assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    for n in 0..bytes.len() {
        assert!(Manifest::decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
    }
}

#[test]
fn manifest_with_bad_chunking_is_refused() {
    let mut m = sample_manifest();
    m.chunking = ChunkParams { min: 10, avg: 5, max: 1 };
    assert!(matches!(Manifest::decode(&m.encode()), Err(DecodeError::Invalid { what: "chunking", .. })));
}

#[test]
fn object_round_trips_compressed_and_raw() {
    let text = b"hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
    let framed = object::encode(&text, 3);
    assert_eq!(object::parse_header(&framed).unwrap().codec, object::Codec::Zstd);
    assert!(framed.len() < text.len());
    assert_eq!(object::decode(&framed, &Digest::of(&text), 1 << 20).unwrap(), text);

    let noise = noise(4096, 1);
    let framed = object::encode(&noise, 3);
    assert_eq!(object::parse_header(&framed).unwrap().codec, object::Codec::Raw);
    assert_eq!(object::decode(&framed, &Digest::of(&noise), 1 << 20).unwrap(), noise);
}

#[test]
fn object_with_wrong_digest_is_refused() {
    let framed = object::encode(b"good bytes", 3);
    let err = object::decode(&framed, &Digest::of(b"other"), 1 << 20).unwrap_err();
    assert!(matches!(err, ObjectError::DigestMismatch { .. }), "{err}");
}

#[test]
fn zstd_bomb_stops_at_declared_length() {
    // A real zstd frame of 64 MiB of zeros, declared as 1 KiB: decoding must fail, not inflate.
    let zeros = vec![0u8; 64 << 20];
    let mut framed = object::encode(&zeros, 3);
    framed[8..16].copy_from_slice(&1024u64.to_le_bytes());
    let err = object::decode(&framed, &Digest::of(&zeros), 1 << 30).unwrap_err();
    assert!(matches!(err, ObjectError::Decompress { declared: 1024, .. }), "{err}");
    // And a declared length over the caller's cap is refused before decoding.
    let framed = object::encode(&zeros, 3);
    let err = object::decode(&framed, &Digest::of(&zeros), 1 << 20).unwrap_err();
    assert!(matches!(err, ObjectError::TooLarge { .. }), "{err}");
}

#[test]
fn chunking_is_deterministic_and_bounded() {
    let p = ChunkParams::default();
    let data = noise(3_000_000, 2);
    let a = p.split(&data);
    assert_eq!(a, p.split(&data));
    assert_eq!(a.iter().sum::<usize>(), data.len());
    assert!(a.len() > 10);
    for (i, len) in a.iter().enumerate() {
        assert!(*len <= p.max as usize);
        if i + 1 < a.len() {
            assert!(*len >= p.min as usize);
        }
    }
    // An insertion near the front leaves most later chunks unchanged (content-defined).
    let mut edited = data.clone();
    edited.splice(1000..1000, b"inserted".iter().copied());
    let b = p.split(&edited);
    let tail = |v: &[usize]| v[v.len() / 2..].to_vec();
    assert_eq!(tail(&a), tail(&b));
    assert_eq!(p.split(&data[..100]), vec![100]);
    assert!(p.split(&[]).is_empty());
}

#[test]
fn chunk_params_are_validated() {
    assert!(ChunkParams::default().validate().is_ok());
    assert_eq!(ChunkParams::default(), ChunkParams { min: 16384, avg: 65536, max: 262144 });
    assert!(ChunkParams { min: 1, avg: 2, max: 3 }.validate().is_err());
    assert!(ChunkParams { min: 4096, avg: 1024, max: 8192 }.validate().is_err());
}

fn check_spec(s: &str, expect: Option<&str>) {
    match (s.parse::<GenSpec>(), expect) {
        (Ok(spec), Some(e)) => assert_eq!(spec.to_string(), e),
        (Err(_), None) => {}
        (got, want) => panic!("{s}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn generation_addresses_parse() {
    check_spec("debian@3", Some("debian@3"));
    check_spec("debian@latest", Some("debian@latest"));
    check_spec("debian", Some("debian@latest"));
    let d = Digest::of(b"m").to_hex();
    check_spec(&d, Some(&d));
    check_spec("debian@0", None);
    check_spec("debian@x", None);
    check_spec("../etc@1", None);
    check_spec("", None);
    check_spec("-x@1", None);
}

#[test]
fn dictionary_objects_round_trip_and_need_their_dictionary() {
    let samples: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            format!("<html><head><title>page {i}</title></head><body class=\"docblock\">item {i} of the standard library</body></html>")
                .into_bytes()
        })
        .collect();
    let dict = zstd::dict::from_samples(&samples, 4096).unwrap();
    let dict_digest = Digest::of(&dict);
    let data =
        b"<html><head><title>page 9999</title></head><body class=\"docblock\">item 9999 of the standard library</body></html>".to_vec();
    let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
    let framed = object::encode_with_dict(&data, &mut c, &dict_digest);
    let h = object::parse_header(&framed).unwrap();
    assert_eq!((h.codec, h.dict), (object::Codec::ZstdDict, Some(dict_digest)));
    assert!(framed.len() < object::encode(&data, 3).len(), "the dictionary did not help");
    assert!(matches!(object::decode(&framed, &Digest::of(&data), 1 << 20), Err(ObjectError::NeedsDictionary(d)) if d == dict_digest));
    let mut d = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap();
    assert_eq!(object::decode_with_dict(&framed, &Digest::of(&data), 1 << 20, &mut d).unwrap(), data);
    // A truncated dictionary digest is a header error, not a panic.
    assert!(object::parse_header(&framed[..20]).is_err());
}

#[test]
fn records_round_trip_and_report_their_offsets() {
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let mut body = crate::record::encode(&a, b"first");
    crate::record::encode_into(&mut body, &b, b"");
    let got = crate::record::decode_all(&body).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].digest, got[0].offset, got[0].framed), (a, 36, &b"first"[..]));
    assert_eq!((got[1].digest, got[1].offset, got[1].framed), (b, 36 + 5 + 36, &b""[..]));
    assert_eq!(crate::record::decode_all(&[]).unwrap(), vec![]);
}

#[test]
fn records_refuse_a_body_that_does_not_end_on_a_record_boundary() {
    use crate::record::{decode_all, records, RecordError};
    let d = Digest::of(b"x");
    let mut body = crate::record::encode(&d, b"framed");
    body.extend_from_slice(&crate::record::encode(&d, b"second")[..20]);
    assert_eq!(decode_all(&body), Err(RecordError::Truncated { index: 1, at: 42 }));
    // A header announcing more than remains.
    let short = &crate::record::encode(&d, b"framed")[..40];
    assert_eq!(decode_all(short), Err(RecordError::Truncated { index: 0, at: 0 }));
    // The valid prefix is still yielded, then the error, then nothing.
    let mut it = records(&body);
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
    assert_eq!(it.position(), 42);
}

#[test]
fn records_refuse_an_oversized_record_before_reading_it() {
    use crate::record::{records, Header, RecordError, HEADER_LEN};
    let d = Digest::of(b"x");
    let body = crate::record::encode(&d, &[7u8; 100]);
    let err = records(&body).with_limit(99).next().unwrap().unwrap_err();
    assert_eq!(err, RecordError::Oversized { digest: d, len: 100, max: 99 });
    let head: [u8; HEADER_LEN] = body[..HEADER_LEN].try_into().unwrap();
    assert_eq!(Header::decode(&head), Header { digest: d, len: 100 });
    assert!(Header::decode(&head).check(100).is_ok());
}

fn sample_layout() -> crate::layout::Layout {
    use crate::layout::{prefix, Layout, PackRef, Placed};
    let a = PackRef { digest: Digest::of(b"pack a"), len: 8 + 100 + 50 + 1000, meta_end: 108, origin: Digest::of(b"manifest") };
    let b = PackRef { digest: Digest::of(b"pack b"), len: 8 + 40, meta_end: 8, origin: Digest::of(b"older") };
    let e = |name: &[u8], pack, offset, len| Placed { prefix: prefix(&Digest::of(name)), pack, offset, len, inner: None };
    Layout {
        manifest: Digest::of(b"manifest"),
        packs: vec![a, b],
        // Out of order on purpose; the third record of pack 0 follows a gap of 50 bytes.
        entries: vec![e(b"z", 1, 8, 40), e(b"y", 0, 8 + 150, 1000), e(b"x", 0, 8, 100)],
    }
}

#[test]
fn a_layout_reads_back_sorted_by_pack_and_offset() {
    let l = sample_layout();
    let back = crate::layout::Layout::decode(&l.encode().unwrap()).unwrap();
    assert_eq!(back.manifest, l.manifest);
    assert_eq!(back.packs, l.packs);
    let offsets: Vec<(u32, u64, u64)> = back.entries.iter().map(|e| (e.pack, e.offset, e.len)).collect();
    assert_eq!(offsets, vec![(0, 8, 100), (0, 158, 1000), (1, 8, 40)]);
    assert_eq!(back.entries[0].prefix, crate::layout::prefix(&Digest::of(b"x")));
}

#[test]
fn a_layout_that_does_not_fit_its_packs_is_refused() {
    use crate::layout::{Layout, LayoutError};
    let mut l = sample_layout();
    l.entries[1].len = 1001; // past pack 0's end
    assert!(matches!(l.encode(), Err(LayoutError::OutOfPack { .. })));
    let mut l = sample_layout();
    l.entries[1].offset = 50; // overlaps the record at 8..108
    assert!(matches!(l.encode(), Err(LayoutError::Order { .. })));
    let mut l = sample_layout();
    l.packs[1].meta_end = 49; // a metadata region past the pack's end
    assert_eq!(l.encode(), Err(LayoutError::OutOfPack { index: 0, pack: 1 }));
    // Decoding checks the same: a pack shortened after encoding.
    let l = sample_layout();
    let bytes = l.encode().unwrap();
    assert!(Layout::decode(&bytes).is_ok());
    // The body re-encoded by hand with pack 0 shortened to its first record.
    let good = Layout::decode(&bytes).unwrap();
    let body_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let mut body = zstd::bulk::decompress(&bytes[12..], body_len).unwrap();
    body[32 + 4 + 32..32 + 4 + 40].copy_from_slice(&(8u64 + 100).to_le_bytes());
    // (its metadata region, 8..108, still fits)
    let mut forged = bytes[..12].to_vec();
    forged.extend(zstd::bulk::compress(&body, 1).unwrap());
    assert_eq!(Layout::decode(&forged), Err(LayoutError::OutOfPack { index: 1, pack: 0 }));
    assert_eq!(good.packs[0].len, 8 + 100 + 50 + 1000);
    // Truncation, trailing bytes and a wrong magic.
    let mut short = body.clone();
    short.pop();
    let mut f = bytes[..8].to_vec();
    f.extend((short.len() as u32).to_le_bytes());
    f.extend(zstd::bulk::compress(&short, 1).unwrap());
    assert!(Layout::decode(&f).is_err());
    assert_eq!(Layout::decode(b"IMGX\x01\0\0\0\0\0\0\0"), Err(LayoutError::Magic));
    // A count the body cannot hold is refused before allocating.
    let mut huge = body.clone();
    huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut f = bytes[..12].to_vec();
    f.extend(zstd::bulk::compress(&huge, 1).unwrap());
    assert!(matches!(Layout::decode(&f), Err(LayoutError::TooLarge { .. })));
}

#[test]
fn a_layout_with_a_group_record_is_version_2_and_places_each_member_inside_it() {
    use crate::layout::{prefix, Inner, Layout, LayoutError, Placed, MAGIC, MAGIC_V2};
    let mut l = sample_layout();
    // The record y (pack 0, 158..1158) is a group of three members.
    let member = |name: &[u8], offset, len| Placed { prefix: prefix(&Digest::of(name)), pack: 0, offset: 158, len: 1000, inner: Some(Inner { offset, len }) };
    l.entries.extend([member(b"m2", 700, 300), member(b"m0", 0, 200), member(b"m1", 200, 500)]);
    let bytes = l.encode().unwrap();
    assert_eq!(&bytes[..8], MAGIC_V2);
    assert_eq!(&sample_layout().encode().unwrap()[..8], MAGIC, "no group: still version 1");
    let back = Layout::decode(&bytes).unwrap();
    let got: Vec<(u64, u64, Option<Inner>)> = back.entries.iter().map(|e| (e.prefix, e.offset, e.inner)).collect();
    let p = |n: &[u8]| prefix(&Digest::of(n));
    assert_eq!(
        got,
        vec![
            (p(b"x"), 8, None),
            (p(b"y"), 158, None),
            (p(b"m0"), 158, Some(Inner { offset: 0, len: 200 })),
            (p(b"m1"), 158, Some(Inner { offset: 200, len: 500 })),
            (p(b"m2"), 158, Some(Inner { offset: 700, len: 300 })),
            (p(b"z"), 8, None),
        ]
    );
    assert!(back.entries.iter().all(|e| e.inner.is_none() || (e.len == 1000 && e.pack == 0)));
    // A member with no group at its place, or two members overlapping, is refused.
    let mut orphan = sample_layout();
    orphan.entries.push(Placed { prefix: 1, pack: 0, offset: 9, len: 50, inner: Some(Inner { offset: 0, len: 5 }) });
    assert!(matches!(orphan.encode(), Err(LayoutError::Member { .. } | LayoutError::Order { .. })));
    let mut overlap = sample_layout();
    overlap.entries.extend([member(b"a", 0, 200), member(b"b", 100, 200)]);
    assert!(matches!(overlap.encode(), Err(LayoutError::Member { .. })));
}

#[test]
fn planned_ranges_merge_close_records_and_respect_the_maximum() {
    use crate::layout::{plan, Placed, Range};
    let (p, q) = (Digest::of(b"p"), Digest::of(b"q"));
    let at = |pack, offset, len| (pack, Placed { prefix: 0, pack: 0, offset, len, inner: None });
    let wanted = [at(p, 1000, 100), at(p, 8, 100), at(p, 120, 100), at(q, 8, 50)];
    // Gap 20 joins 8..108 and 120..220; 1000 is too far.
    assert_eq!(
        plan(&wanted, 20, 1 << 20),
        vec![Range { pack: p, start: 8, end: 220 }, Range { pack: p, start: 1000, end: 1100 }, Range { pack: q, start: 8, end: 58 }]
    );
    // A gap of 1000 joins all of p's, unless the maximum forbids it.
    assert_eq!(plan(&wanted, 1000, 1 << 20)[0], Range { pack: p, start: 8, end: 1100 });
    assert_eq!(plan(&wanted, 1000, 300).len(), 3);
    // The same record twice is fetched once.
    assert_eq!(plan(&[at(p, 8, 100), at(p, 8, 100)], 0, 1000), vec![Range { pack: p, start: 8, end: 108 }]);
}
