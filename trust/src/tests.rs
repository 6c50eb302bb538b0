//! Unit tests of the verification core.

use std::collections::BTreeMap;

use serde_json::json;

use crate::keys::{check_threshold, KeyId, PublicKey, SecretKey};
use crate::{canonical, time};

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes(&[seed; 32])
}

#[test]
fn canonical_json_sorts_keys_and_escapes_only_quote_and_backslash() {
    let v = json!({"b": [1, true, null], "a": "q\"b\\s\né", "A": {"z": 0, "y": -3}});
    assert_eq!(canonical::encode(&v).unwrap(), "{\"A\":{\"y\":-3,\"z\":0},\"a\":\"q\\\"b\\\\s\né\",\"b\":[1,true,null]}".as_bytes());
    assert!(canonical::encode(&json!({"x": 1.5})).is_err(), "floats are refused");
}

#[test]
fn tuf_times_round_trip_and_bad_ones_are_refused() {
    assert_eq!(time::parse("1970-01-01T00:00:00Z").unwrap(), 0);
    assert_eq!(time::parse("2030-01-01T00:00:00Z").unwrap(), 1_893_456_000);
    assert_eq!(time::parse("2024-02-29T12:34:56Z").unwrap(), 1_709_210_096);
    for t in [0i64, 951_782_400, 1_709_210_096, 4_102_444_799] {
        assert_eq!(time::parse(&time::format(t)).unwrap(), t);
    }
    for bad in ["2023-02-29T00:00:00Z", "2030-01-01 00:00:00Z", "2030-01-01T00:00:00", "2030-13-01T00:00:00Z", "+030-01-01T00:00:00Z"] {
        assert!(time::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn key_ids_are_the_sha256_of_the_canonical_key_and_keys_round_trip() {
    let k = key(1).public();
    let again = PublicKey::from_value(&k.to_value()).unwrap();
    assert_eq!(again, k);
    assert_eq!(k.key_id().0.len(), 64);
    assert_ne!(k.key_id(), key(2).public().key_id());
    let rsa = json!({"keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": "x"}});
    assert!(matches!(PublicKey::from_value(&rsa), Err(crate::keys::KeyError::Malformed { .. })));
    let other = json!({"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp384", "keyval": {"public": ECDSA_PUB}});
    assert!(matches!(PublicKey::from_value(&other), Err(crate::keys::KeyError::Unsupported { .. })));
    assert!(PublicKey::from_value(&json!({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": "abcd"}})).is_err());
}

#[test]
fn a_threshold_counts_each_key_once_and_only_authorised_valid_signatures() {
    let (a, b, c) = (key(1), key(2), key(3));
    let msg = b"signed bytes";
    let keys: BTreeMap<KeyId, PublicKey> = [&a, &b, &c].iter().map(|k| (k.public().key_id(), k.public())).collect();
    let authorised = vec![a.public().key_id(), b.public().key_id()];
    let sig = |k: &SecretKey| (k.public().key_id(), k.sign(msg));
    assert!(check_threshold("root", msg, &[sig(&a), sig(&b)], &keys, &authorised, 2).is_ok());
    // One key's signature repeated does not make two.
    let e = check_threshold("root", msg, &[sig(&a), sig(&a)], &keys, &authorised, 2).unwrap_err();
    assert_eq!(e.valid, 1);
    // Nor does one key listed under a second id.
    let mut aliased = keys.clone();
    aliased.insert(KeyId("alias".into()), a.public());
    let two_ids = vec![a.public().key_id(), KeyId("alias".into())];
    let e = check_threshold("root", msg, &[sig(&a), (KeyId("alias".into()), a.sign(msg))], &aliased, &two_ids, 2).unwrap_err();
    assert_eq!(e.valid, 1);
    // A valid signature by a key the role does not list does not count.
    assert!(check_threshold("root", msg, &[sig(&a), sig(&c)], &keys, &authorised, 2).is_err());
    // A signature of other bytes does not count.
    assert!(check_threshold("root", msg, &[sig(&a), (b.public().key_id(), b.sign(b"other"))], &keys, &authorised, 2).is_err());
    // A threshold of zero is never met.
    assert!(check_threshold("root", msg, &[sig(&a)], &keys, &authorised, 0).is_err());
}

// A repository the tests sign for, role by role.
mod repo {
    use serde_json::{json, Value};
    use sha2::{Digest as _, Sha256};

    use crate::canonical;
    use crate::keys::SecretKey;

    pub const FAR: &str = "2100-01-01T00:00:00Z";

    pub fn sign(signed: &Value, keys: &[&SecretKey]) -> Vec<u8> {
        let msg = canonical::encode(signed).unwrap();
        let sigs: Vec<Value> = keys.iter().map(|k| json!({"keyid": k.public().key_id().0, "sig": k.sign(&msg)})).collect();
        serde_json::to_vec(&json!({"signed": signed, "signatures": sigs})).unwrap()
    }

    pub fn root(
        version: u64,
        expires: &str,
        root: &[&SecretKey],
        threshold: usize,
        ts: &SecretKey,
        snap: &SecretKey,
        targets: &SecretKey,
    ) -> Value {
        let mut keys = serde_json::Map::new();
        for k in root.iter().chain([&ts, &snap, &targets]) {
            keys.insert(k.public().key_id().0, k.public().to_value());
        }
        let ids = |ks: &[&SecretKey]| ks.iter().map(|k| k.public().key_id().0).collect::<Vec<_>>();
        json!({"_type": "root", "spec_version": "1.0.31", "version": version, "expires": expires, "consistent_snapshot": true,
               "keys": keys, "roles": {
                   "root": {"keyids": ids(root), "threshold": threshold},
                   "timestamp": {"keyids": ids(&[ts]), "threshold": 1},
                   "snapshot": {"keyids": ids(&[snap]), "threshold": 1},
                   "targets": {"keyids": ids(&[targets]), "threshold": 1}}})
    }

    pub fn meta(bytes: &[u8], version: u64) -> Value {
        json!({"version": version, "length": bytes.len(), "hashes": {"sha256": hex::encode(Sha256::digest(bytes))}})
    }

    pub fn timestamp(version: u64, expires: &str, snapshot: &[u8], snapshot_version: u64) -> Value {
        json!({"_type": "timestamp", "spec_version": "1.0.31", "version": version, "expires": expires,
               "meta": {"snapshot.json": meta(snapshot, snapshot_version)}})
    }

    pub fn snapshot(version: u64, expires: &str, files: &[(&str, &[u8], u64)]) -> Value {
        let m: serde_json::Map<String, Value> = files.iter().map(|(n, b, v)| (format!("{n}.json"), meta(b, *v))).collect();
        json!({"_type": "snapshot", "spec_version": "1.0.31", "version": version, "expires": expires, "meta": m})
    }
}

use crate::client::{Limits, Lookup, Trusted, UpdateError};
use repo::FAR;

const NOW: i64 = 1_900_000_000;

struct Keys {
    root: [SecretKey; 3],
    ts: SecretKey,
    snap: SecretKey,
    targets: SecretKey,
    family: SecretKey,
}

fn keys() -> Keys {
    Keys { root: [key(10), key(11), key(12)], ts: key(20), snap: key(21), targets: key(22), family: key(30) }
}

fn root_v(k: &Keys, version: u64, expires: &str) -> serde_json::Value {
    repo::root(version, expires, &[&k.root[0], &k.root[1], &k.root[2]], 2, &k.ts, &k.snap, &k.targets)
}

/// targets.json delegating images/debian/* to `family` (terminating), and its delegated role.
fn targets_pair(k: &Keys, tv: u64, dv: u64, manifest_len: u64) -> (Vec<u8>, Vec<u8>) {
    let t = json!({"_type": "targets", "spec_version": "1.0.31", "version": tv, "expires": FAR, "targets": {},
        "delegations": {"keys": {k.family.public().key_id().0: k.family.public().to_value()},
            "roles": [{"name": "images/debian", "keyids": [k.family.public().key_id().0], "threshold": 1,
                       "paths": ["images/debian/*"], "terminating": true}]}});
    let d = json!({"_type": "targets", "spec_version": "1.0.31", "version": dv, "expires": FAR,
        "targets": {"images/debian/7": {"length": manifest_len, "hashes": {"sha256": "00"}, "custom": {"generation": 7, "epoch": 3}}}});
    (repo::sign(&t, &[&k.targets]), repo::sign(&d, &[&k.family]))
}

/// A client that has taken a whole consistent repository at version `v` of each role.
fn client_at(k: &Keys, v: u64) -> (Trusted, Vec<u8>, Vec<u8>) {
    let root = repo::sign(&root_v(k, 1, FAR), &[&k.root[0], &k.root[1]]);
    let mut t = Trusted::new(&root, Limits::default()).unwrap();
    let (targets, family) = targets_pair(k, v, v, 100);
    let snap = repo::sign(&repo::snapshot(v, FAR, &[("targets", &targets, v), ("images/debian", &family, v)]), &[&k.snap]);
    let ts = repo::sign(&repo::timestamp(v, FAR, &snap, v), &[&k.ts]);
    assert!(t.update_timestamp(&ts, NOW).unwrap());
    t.update_snapshot(&snap, NOW).unwrap();
    t.update_targets("targets", "root", &targets, NOW).unwrap();
    (t, snap, ts)
}

#[test]
fn a_whole_update_finds_a_generation_through_its_family_delegation() {
    let k = keys();
    let (mut t, _, _) = client_at(&k, 1);
    assert_eq!(t.lookup("images/debian/7"), Lookup::Need { role: "images/debian".into(), delegator: "targets".into() });
    let (_, family) = targets_pair(&k, 1, 1, 100);
    t.update_targets("images/debian", "targets", &family, NOW).unwrap();
    match t.lookup("images/debian/7") {
        Lookup::Found(f, role) => {
            assert_eq!((f.length, role.as_str()), (100, "images/debian"));
            assert_eq!(f.custom.unwrap()["epoch"], 3);
        }
        other => panic!("{other:?}"),
    }
    // Terminating: nothing else is consulted for images/debian/*, and other paths are not found.
    assert_eq!(t.lookup("images/debian/8"), Lookup::NotFound);
    assert_eq!(t.lookup("images/alpine/1"), Lookup::NotFound);
    assert_eq!(t.files().len(), 5);
}

#[test]
fn a_delegated_role_signed_by_the_wrong_key_is_refused() {
    let k = keys();
    let (mut t, _, _) = client_at(&k, 1);
    let (_, family) = targets_pair(&k, 1, 1, 100);
    // Re-sign the family's metadata with the online targets key instead of the family key.
    let env: serde_json::Value = serde_json::from_slice(&family).unwrap();
    let forged = repo::sign(&env["signed"], &[&k.targets]);
    // The snapshot pins the genuine bytes: the forged file does not match them.
    let e = t.update_targets("images/debian", "targets", &forged, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Mismatch { .. }), "{e}");
    // With a snapshot that pins the forged bytes (a stolen snapshot key), the family's
    // signature threshold still refuses it.
    let (targets2, _) = targets_pair(&k, 2, 2, 100);
    let snap = repo::sign(&repo::snapshot(2, FAR, &[("targets", &targets2, 2), ("images/debian", &forged, 2)]), &[&k.snap]);
    t.update_timestamp(&repo::sign(&repo::timestamp(2, FAR, &snap, 2), &[&k.ts]), NOW).unwrap();
    t.update_snapshot(&snap, NOW).unwrap();
    t.update_targets("targets", "root", &targets2, NOW).unwrap();
    let e = t.update_targets("images/debian", "targets", &forged, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::WrongVersion { .. } | UpdateError::Threshold(_)), "{e}");
    let forged2 =
        repo::sign(&json!({"_type": "targets", "spec_version": "1.0.31", "version": 2, "expires": FAR, "targets": {}}), &[&k.targets]);
    let snap = repo::sign(&repo::snapshot(3, FAR, &[("targets", &targets2, 2), ("images/debian", &forged2, 2)]), &[&k.snap]);
    t.update_timestamp(&repo::sign(&repo::timestamp(3, FAR, &snap, 3), &[&k.ts]), NOW).unwrap();
    t.update_snapshot(&snap, NOW).unwrap();
    let e = t.update_targets("images/debian", "targets", &forged2, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(_)), "{e}");
    assert!(t.targets("images/debian").is_none(), "nothing was trusted");
}

#[test]
fn root_rotation_needs_old_and_new_keys_and_the_next_version() {
    let k = keys();
    let (mut t, _, _) = client_at(&k, 1);
    let k2 = Keys { root: [key(13), key(11), key(12)], ts: key(23), snap: key(21), targets: key(22), family: key(30) };
    let v2 = root_v(&k2, 2, FAR);
    // Only the new keys: refused (the old root's threshold is not met).
    let e = t.update_root(&repo::sign(&v2, &[&k2.root[0], &key(14)])).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(_)), "{e}");
    // One old key signing twice: refused as malformed (python-tuf's rule), not counted once.
    let e = t.update_root(&repo::sign(&v2, &[&k.root[1], &k.root[1]])).unwrap_err();
    assert!(matches!(e, UpdateError::Meta(crate::metadata::MetaError::Malformed { .. })), "{e}");
    assert!(e.to_string().contains(&format!("the signatures list key {} twice", k.root[1].public().key_id())), "{e}");
    // Skipping a version: refused.
    let v3 = root_v(&k2, 3, FAR);
    let e = t.update_root(&repo::sign(&v3, &[&k.root[0], &k.root[1], &k2.root[0]])).unwrap_err();
    assert!(matches!(e, UpdateError::WrongVersion { expected: 2, got: 3, .. }), "{e}");
    // Cross-signed by old and new thresholds: accepted; the rotated timestamp key discards
    // the trusted timestamp and snapshot (fast-forward recovery).
    t.update_root(&repo::sign(&v2, &[&k.root[0], &k.root[1], &k2.root[0]])).unwrap();
    assert_eq!(t.root().common.version, 2);
    assert!(t.timestamp().is_none() && t.snapshot().is_none());
}

#[test]
fn timestamp_rollback_freeze_and_snapshot_mix_and_match_are_refused() {
    let k = keys();
    let (mut t, _, _) = client_at(&k, 5);
    let (targets, family) = targets_pair(&k, 4, 4, 100);
    let old_snap = repo::sign(&repo::snapshot(4, FAR, &[("targets", &targets, 4), ("images/debian", &family, 4)]), &[&k.snap]);
    // An older timestamp.
    let e = t.update_timestamp(&repo::sign(&repo::timestamp(4, FAR, &old_snap, 4), &[&k.ts]), NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Rollback { trusted: 5, got: 4, .. }), "{e}");
    // A newer timestamp naming an older snapshot.
    let e = t.update_timestamp(&repo::sign(&repo::timestamp(6, FAR, &old_snap, 4), &[&k.ts]), NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Rollback { trusted: 5, got: 4, .. }), "{e}");
    // An expired timestamp (freeze).
    let e = t.update_timestamp(&repo::sign(&repo::timestamp(6, "2030-01-01T00:00:00Z", &old_snap, 6), &[&k.ts]), NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Expired { .. }), "{e}");
    // Unsigned by the timestamp key.
    let e = t.update_timestamp(&repo::sign(&repo::timestamp(6, FAR, &old_snap, 6), &[&k.snap]), NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(_)), "{e}");
    // A valid timestamp 6 naming snapshot 6; then a snapshot with other bytes (mix and match).
    let (t6, f6) = targets_pair(&k, 6, 6, 100);
    let snap6 = repo::sign(&repo::snapshot(6, FAR, &[("targets", &t6, 6), ("images/debian", &f6, 6)]), &[&k.snap]);
    t.update_timestamp(&repo::sign(&repo::timestamp(6, FAR, &snap6, 6), &[&k.ts]), NOW).unwrap();
    let other = repo::sign(&repo::snapshot(6, FAR, &[("targets", &t6, 6)]), &[&k.snap]);
    let e = t.update_snapshot(&other, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Mismatch { .. }), "{e}");
    t.update_snapshot(&snap6, NOW).unwrap();
    // The targets of version 5 are no longer current; version 5 bytes are refused now.
    assert!(t.targets("targets").is_none());
    let (t5, _) = targets_pair(&k, 5, 5, 100);
    assert!(t.update_targets("targets", "root", &t5, NOW).is_err());
    t.update_targets("targets", "root", &t6, NOW).unwrap();
}

#[test]
fn a_snapshot_may_not_roll_a_targets_role_back_or_drop_it() {
    let k = keys();
    let (mut t, _, _) = client_at(&k, 5);
    let (t6, f4) = (targets_pair(&k, 6, 6, 100).0, targets_pair(&k, 4, 4, 100).1);
    let snap = repo::sign(&repo::snapshot(6, FAR, &[("targets", &t6, 6), ("images/debian", &f4, 4)]), &[&k.snap]);
    t.update_timestamp(&repo::sign(&repo::timestamp(6, FAR, &snap, 6), &[&k.ts]), NOW).unwrap();
    let e = t.update_snapshot(&snap, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Rollback { trusted: 5, got: 4, .. }), "{e}");
    let dropped = repo::sign(&repo::snapshot(6, FAR, &[("targets", &t6, 6)]), &[&k.snap]);
    t.update_timestamp(&repo::sign(&repo::timestamp(7, FAR, &dropped, 6), &[&k.ts]), NOW).unwrap();
    let e = t.update_snapshot(&dropped, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Missing { .. }), "{e}");
}

#[test]
fn oversized_metadata_is_refused_before_parsing() {
    let k = keys();
    let root = repo::sign(&root_v(&k, 1, FAR), &[&k.root[0], &k.root[1]]);
    let mut t = Trusted::new(&root, Limits::default()).unwrap();
    let mut huge = b"{\"signed\":".to_vec();
    huge.extend(vec![b' '; 20 << 10]);
    let e = t.update_timestamp(&huge, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Meta(crate::metadata::MetaError::TooLong { .. })), "{e}");
    // An expired root is trusted to start from, but not for an update.
    let old = repo::sign(&root_v(&k, 1, "2030-01-01T00:00:00Z"), &[&k.root[0], &k.root[1]]);
    let t = Trusted::new(&old, Limits::default()).unwrap();
    assert!(matches!(t.check_root(NOW), Err(UpdateError::Expired { .. })));
}

#[test]
fn delegation_paths_match_within_segments() {
    use crate::metadata::path_matches;
    assert!(path_matches("images/debian/*", "images/debian/7"));
    assert!(!path_matches("images/debian/*", "images/debian/7/extra"));
    assert!(!path_matches("images/debian/*", "images/debianx/7"));
    assert!(path_matches("channels/*/*", "channels/os/stable"));
    assert!(path_matches("*", "anything"));
    assert!(!path_matches("*", "a/b"));
    // python-tuf's matching (segment by segment, `fnmatchcase` on each).
    for (pattern, path, want) in [
        ("targets/*.tgz", "targets/foo.tgz", true),
        ("targets/*.tgz", "targets/foo.tgz/bar", false),
        ("foo-version-?.tgz", "foo-version-2.tgz", true),
        ("foo-version-?.tgz", "foo-version-10.tgz", false),
        ("foo-version-?.tgz", "foo-version-.tgz", false),
        ("a/?", "a//", false),
        ("a/*", "a/", true),
        ("*/*", "a", false),
        ("*.tar.*", "x.tar.gz", true),
        ("*x*y", "axxbxy", true),
        ("[a-c]x", "bx", true),
        ("[a-c]x", "dx", false),
        ("[!a-c]x", "dx", true),
        ("[!a-c]x", "ax", false),
        ("[]]", "]", true),
        ("a[b", "a[b", true),
        ("A*", "a", false),
        ("images/debian/*", "images/debian/", true),
    ] {
        assert_eq!(path_matches(pattern, path), want, "{pattern:?} {path:?}");
    }
    // Hashed bins: the hex sha256 of the path ("images/debian/7" -> c535...).
    let bin = |prefixes: &[&str]| crate::metadata::Delegation {
        name: "bin".into(),
        keyids: vec![],
        threshold: 1,
        paths: vec!["nothing/*".into()],
        path_hash_prefixes: Some(prefixes.iter().map(|p| p.to_string()).collect()),
        terminating: false,
    };
    assert!(bin(&["c5", "00"]).covers("images/debian/7"));
    assert!(!bin(&["c6"]).covers("images/debian/7"));
    assert!(!bin(&["c6"]).covers("nothing/x"), "with prefixes, the paths are not consulted");
}

/// A repository as a map of file names to bytes, recording what was fetched.
struct MapRemote {
    files: std::collections::HashMap<String, Vec<u8>>,
    fetched: Vec<String>,
}

impl crate::update::Remote for MapRemote {
    fn fetch(&mut self, name: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        self.fetched.push(name.to_string());
        match self.files.get(name) {
            Some(b) if b.len() > max => Err(format!("{name}: over {max} bytes")),
            other => Ok(other.cloned()),
        }
    }
}

/// Version `v` of every role, under the names a consistent-snapshot repository uses.
fn repository(k: &Keys, v: u64, family_custom: serde_json::Value) -> MapRemote {
    let (targets, _) = targets_pair(k, v, v, 100);
    let d = json!({"_type": "targets", "spec_version": "1.0.31", "version": v, "expires": FAR, "custom": family_custom,
        "targets": {"images/debian/7": {"length": 100, "hashes": {"sha256": "00", "blake3": "ab".repeat(32)},
            "custom": {"image": "debian", "generation": 7, "arch": "amd64", "epoch": 3}}}});
    let family = repo::sign(&d, &[&k.family]);
    let snap = repo::sign(&repo::snapshot(v, FAR, &[("targets", &targets, v), ("images/debian", &family, v)]), &[&k.snap]);
    let ts = repo::sign(&repo::timestamp(v, FAR, &snap, v), &[&k.ts]);
    let files = [
        ("timestamp.json".to_string(), ts),
        (format!("{v}.snapshot.json"), snap),
        (format!("{v}.targets.json"), targets),
        (format!("{v}.images%2Fdebian.json"), family),
    ];
    MapRemote { files: files.into_iter().collect(), fetched: Vec::new() }
}

#[test]
fn the_workflow_fetches_only_what_changed_walks_delegations_and_reloads_from_its_files() {
    use crate::update::{find, load, refresh};
    let k = keys();
    let root = repo::sign(&root_v(&k, 1, FAR), &[&k.root[0], &k.root[1]]);
    let mut t = Trusted::new(&root, Limits::default()).unwrap();
    let mut r = repository(&k, 1, json!({}));
    refresh(&mut t, &mut r, NOW).unwrap();
    assert_eq!(r.fetched, ["2.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json"]);
    let (file, role) = find(&mut t, &mut r, "images/debian/7", NOW).unwrap().unwrap();
    assert_eq!((role.as_str(), file.length), ("images/debian", 100));
    assert_eq!(r.fetched.last().unwrap(), "1.images%2Fdebian.json");
    assert_eq!(find(&mut t, &mut r, "images/debian/8", NOW).unwrap(), None);
    // Nothing changed: only the next root and the timestamp are asked for.
    r.fetched.clear();
    refresh(&mut t, &mut r, NOW).unwrap();
    assert_eq!(r.fetched, ["2.root.json", "timestamp.json"]);
    // The exact bytes persisted rebuild the same state, even once expired.
    let files: Vec<(String, Vec<u8>)> = t.files().into_iter().map(|(n, b)| (n, b.to_vec())).collect();
    let again = load(&root, &files, Limits::default()).unwrap();
    assert_eq!(again.files().len(), 5);
    assert!(matches!(again.lookup("images/debian/7"), Lookup::Found(..)));
    // A timestamp the repository no longer refreshes expires: the update says so.
    let mut t = again;
    let e = refresh(&mut t, &mut r, 4_200_000_000).unwrap_err();
    assert!(matches!(e, crate::update::RefreshError::Stale(UpdateError::Expired { .. })), "{e}");
}

#[test]
fn the_policy_checks_role_family_architecture_epoch_floor_and_the_channel_record() {
    use crate::policy::{channel_record, check_family, check_generation, floor, PolicyError};
    use crate::update::{find, refresh};
    let k = keys();
    let root = repo::sign(&root_v(&k, 1, FAR), &[&k.root[0], &k.root[1]]);
    let mut t = Trusted::new(&root, Limits::default()).unwrap();
    let mut r = repository(&k, 1, json!({"min_epoch": 2}));
    refresh(&mut t, &mut r, NOW).unwrap();
    let (file, role) = find(&mut t, &mut r, "images/debian/7", NOW).unwrap().unwrap();
    assert_eq!(floor(&t, "debian", 0), 2, "the family's min_epoch raises the floor");
    assert_eq!(floor(&t, "debian", 5), 5, "a stored floor is never lowered");
    let ok = check_generation("images/debian/7", &file, &role, "debian", "amd64", 3).unwrap();
    assert_eq!((ok.record.epoch, ok.manifest.as_str()), (3, "ab".repeat(32).as_str()));
    let e = check_generation("images/debian/7", &file, &role, "debian", "arm64", 3).unwrap_err();
    assert!(matches!(e, PolicyError::WrongArch { .. }));
    let e = check_generation("images/debian/7", &file, &role, "debian", "amd64", 4).unwrap_err();
    assert!(matches!(e, PolicyError::BelowFloor { epoch: 3, floor: 4, .. }));
    let e = check_generation("images/debian/7", &file, "channels", "debian", "amd64", 0).unwrap_err();
    assert!(matches!(e, PolicyError::WrongRole { .. }));
    // Since version log entry 16 the manifest digest rides in the record (the repository above
    // has it in `hashes`, as older ones do); the record's wins; without either, refused.
    let mut moved = file.clone();
    moved.hashes.remove("blake3");
    let mut custom = moved.custom.clone().unwrap();
    custom["manifest"] = json!("cd".repeat(32));
    moved.custom = Some(custom.clone());
    assert_eq!(check_generation("images/debian/7", &moved, &role, "debian", "amd64", 3).unwrap().manifest, "cd".repeat(32));
    custom.as_object_mut().unwrap().remove("manifest");
    moved.custom = Some(custom);
    assert!(check_generation("images/debian/7", &moved, &role, "debian", "amd64", 3).is_err());
    // A channel record only from the channels role, for the channel asked, within the family.
    let rec = json!({"channel": "os/stable", "version": 4, "target": "images/debian/7", "epoch": 3});
    let tf = crate::metadata::TargetFile { length: 10, hashes: Default::default(), custom: Some(rec) };
    let r = channel_record("os/stable", &tf, "channels").unwrap();
    assert!(check_family(&r, "debian").is_ok());
    assert!(matches!(check_family(&r, "alpine"), Err(PolicyError::WrongFamily { .. })));
    assert!(channel_record("os/stable", &tf, "images/debian").is_err());
    assert!(channel_record("os/pilot", &tf, "channels").is_err());
    assert_eq!(crate::policy::channel_patterns()[1], "channels/*/*");
}

#[test]
fn key_files_round_trip_and_a_mismatched_pair_is_refused() {
    use crate::keys::{public_from_file, secret_from_file, secret_to_file};
    let k = key(9);
    let file = secret_to_file(&k);
    assert_eq!(secret_from_file(&file).unwrap().public(), k.public());
    assert_eq!(secret_from_file(&file).unwrap().sign(b"x"), k.sign(b"x"), "ed25519 signs deterministically");
    assert_eq!(public_from_file(&file).unwrap(), k.public());
    assert!(public_from_file(&file).unwrap().to_value()["keyval"].get("private").is_none(), "the public key leaves the private half");
    let mut v: serde_json::Value = serde_json::from_slice(&file).unwrap();
    v["keyval"]["public"] = json!(hex::encode(key(10).public().ed25519_bytes().unwrap()));
    assert!(secret_from_file(&serde_json::to_vec(&v).unwrap()).is_err());
    assert_eq!(crate::sign::role_of_file("images%2Fdebian.json").as_deref(), Some("images/debian"));
    assert_eq!(crate::sign::encode_role("images/debian"), "images%2Fdebian");
    assert_eq!(crate::sign::target_file("images/debian/7", "ff"), "images/debian/ff.7");
}

/// securesystemslib's test vectors (tests/test_signer.py, `test_key_verify_signature`):
/// signatures of `DATA` by its test keys.
const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMIIBojANBgkqhkiG9w0BAQEFAAOCAY8AMIIBigKCAYEAsDqUoiFJZX+5gm5pyI1l\nVc/N3yjJVOIl9GyiK0mRyzV3IzUQzhjq8nhk0eLfzXw2XwIAYOJC6dR/tGRG4JDx\nJkez5FFH4zLosr/XzT7CG5zxJ3kKICLD1v9rZQr5ZgARQDOpkxzPz46rGnE0sHd7\nMpnpPMScA1pMIzwM1RoPS4ntZipI1cl9M7HMQ6mkBp8/DNKCqaDWixJqaGgWrhhK\nhI/1mzBliMKriNxPKSCGVlOk/QpZft+y1fs42s0DMd5BOFBo+ZcoXLYRncg9S3A2\nxx/jT69Bt3ceiAZqnp7f6M+ZzoUifSelaoL7QIYg/GkEl+0oxTD0yRphGiCKwn9c\npSbn7NgnbjqSgIMeEtlf/5Coyrs26pyFf/9GbusddPSxxxwIJ/7IJuF7P1Yy0WpZ\nkMeY83h9n2IdnEYi+rpdbLJPQd7Fpu2xrdA3Fokj8AvCpcmxn8NIXZuK++r8/xsE\nAUL30HH7dgVn50AvdPaJnqAORT3OlabW0DK9prcwKnyzAgMBAAE=\n-----END PUBLIC KEY-----";
const ECDSA_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEsYJfSlYU3UlYbGOZfE/yOHkayWWq\nLPR/NeCa83szZmnJGc9wwCRPvJS87K+eDGIhhhKueTyrLqXQqmyHioQbOQ==\n-----END PUBLIC KEY-----\n";

#[test]
fn securesystemslib_signatures_of_every_supported_scheme_verify() {
    let vectors = [
        ("ed25519", "ed25519", "50a5768a7a577483c28e57a6742b4d2170b9be628a961355ef127c45f2aefdc5", "dbea1238620949daeb806b0347ffd9f28f8e481edc9ffb4dd8189715c0219f195f68f91ea72769fd8892d6b0af8884b4ad49ea09510201dae6ed0995075ea103"),
        ("rsa", "rsassa-pss-sha256", RSA_PUB, "2f3ed7aa4d18fdb2a677d7a772f3b1283947b09b834a6d523a66b734404552ce4966e1984d4f4a46bc20f5effbc509bbf953469feb6eda5230e5bbe3399839e0d5c601e853918427849f2d90939a843527193932aef4711b65db353bc4adf76d4ec67886d6cbb2e2b315148deee649be7489fb09439a0d22b1abf4b4faa118dd8682f7be173ea398ecf0905eb8eb7232909492ceed1a3134fb678c10b0307ac9f5924b73399d7ac6e729c8e91eca6a0e541dafd22d5fc774fa900c18e38b854884342864951d05b519abf7cee8afe761334c546491b9a09545a9eb5a4096ac5e4be35b794fb9cb8c5204ddbc5eb7d1fc92c2f221d99d49909a41cd747e7f436c07480efb7e94f52d8a8641f9a32d2fa9e2e7f862537b66fa07ba56f44ce7d1f2ad7637ebd8c454d904eea09121977633bcef5748ccc843bc4ebe720878ad9caca97c714aeafeffffd9d1c0cd92218e78691c3abab43958f2defd39381bde71ed73de23044bf44791f8717e1d2150bb5fe7fe0184d089042c284e9ca5779276fc"),
        // A maximum-length salt (securesystemslib 0.24.0).
        ("rsa", "rsassa-pss-sha256", RSA_PUB, "392c5017fd389863649fcda8ba054e1bb346c2ed5cc9959c897a731fc37cd3401c15d77ed17f040a70517c9256f2682181da9aedca08bf3c2aac26658d3064c7df73365da6b47b8f02cb18813cb899e26a101b82e45752cba556e9fa8ad224bb363efa1db9209873ec82ca74bcb7109facfc29f45e5521a6a856803b1a221609f711da2b93915a65d6bfb1f5635a5bc7bdb98510b824fad243c0eaa4ac6674e492d10c25a9e442e9ec6e72871b5d67dfc20b1d5a76ab5f357a6cba4ae9587009744a8023a71c9da38e7ed9c1264c649664c8b72593b79ecc4d0f76d9ad539ace51dd73e9bbf11535f17d6d4caae576f67d1b203a08d35a823eb7c2df99675d4b6651d647f29a6e179263e1a18eb03a6c9209d1daf40c465c19052d46e8e6f5bb480309b91b064e127ea20812e5c0b4fc7ddd98f401a1b920866543335ac31ea8cd650341ef321ce98c3ba48c2ea9172da3a614b8791f98ac7dffd6e2e8506694df100903d60dffa6cf4f6723724ba71aba462229d5f62b7e007553b8af54dabc"),
        ("rsa", "rsa-pkcs1v15-sha256", RSA_PUB, "0c8ec1336540b7e04a2cef460597c54a586766725c532cbd13b3c7071018179e666b75f3165f805c677c5a6169097b4c20175fbea8a0aa4879ecb465cebe2040f6b8db4caa0965b56a20e39bea0c5a8f3746284e41239cd0ab998c5d70b7a0a26f1f5c2909461ab74941f8dcde8faa4d360be710cc405664e5b7a62b54509b32a80ac58b4c494e54270a9d51f8861c7eeb984898414507365bf4bf2f07e4e0507c1f01ee6560dca6f27bef79abd2c9e18bc7cf8820d017f3ad51ce82f6d9bc57e7c3ffc1ca13a9c83a8163c1c0850a7145b577d1db99634435e7b74de6fb29ec68ee13a79e16e5c00eae0d9a15b6cb4e81770fd8d0c40a80f3df4c6d2b9c29c4b35645914263d0aa91d6700ae6f23a7c16d3ab6095c7b736b34ea6b971937f49fad55145e41c6a77e67fbabd2870c8707e0b36fc6bcb8eba9889231df7153951a03e81478eb9bacde6e77eaa683f2133186bb7987f670b602d3902068b8a4a50e1de8334eeb411530599fa35ee37d1f678bf5277bf46cd30ea7bfe79e5161560"),
        ("ecdsa", "ecdsa-sha2-nistp256", ECDSA_PUB, "3045022100b3db1e5ca53226ee27f93a3b2f5e1534f4a4c51f872aa1b6efd0b37be27f483602204f793f7ad7c25188ad55eb6a8a8d142f89b0b0090815de47d9a24389872b02e3"),
        // The legacy key type name.
        ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256", ECDSA_PUB, "304502207d0058b745b2259501204c2ba287ba3769ec2420e12463a325c59670c24df9b6022100836ca63a1b870f755c1596711a003a505e72e25cb0970e823a331e044adc63ec"),
    ];
    for (keytype, scheme, public, sig) in vectors {
        let k = PublicKey::from_value(&json!({"keytype": keytype, "scheme": scheme, "keyval": {"public": public}})).unwrap();
        assert!(k.verifies(b"DATA", sig), "{keytype} {scheme}");
        assert!(!k.verifies(b"NOT DATA", sig), "{keytype} {scheme}");
    }
    // The key id by securesystemslib's rule (sha256 of the canonical keytype, scheme and
    // keyval; the PEM's newlines raw), as an independent encoder computed it. (The vectors'
    // own ids are labels: python-tuf never checks an id against its key.)
    let id = |keytype: &str, scheme: &str, public: &str| {
        PublicKey::from_value(&json!({"keytype": keytype, "scheme": scheme, "keyval": {"public": public}})).unwrap().key_id().0
    };
    assert_eq!(id("ecdsa", "ecdsa-sha2-nistp256", ECDSA_PUB), "b6b78ae05a544be801b014b43578f77b910a4e8105f8ccb202e9ffaacb6a8976");
    // The PSS key under the PKCS #1 v1.5 scheme is another key: its signatures do not cross.
    let pss = PublicKey::from_value(&json!({"keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": RSA_PUB}})).unwrap();
    assert!(!pss.verifies(b"DATA", vectors[3].3));
    // Extra fields are kept, and left out of the key id.
    let with =
        json!({"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": ECDSA_PUB}, "x-tuf-on-ci-keyowner": "@alice"});
    let k = PublicKey::from_value(&with).unwrap();
    assert_eq!(k.to_value(), with);
    assert_eq!(k.key_id().0, "b6b78ae05a544be801b014b43578f77b910a4e8105f8ccb202e9ffaacb6a8976");
}

#[test]
fn every_key_type_signs_verifies_and_round_trips_through_its_key_file() {
    use crate::keys::{public_from_file, secret_from_file, secret_to_file, KeyType};
    for t in [KeyType::Ed25519, KeyType::Ecdsa, KeyType::Rsa] {
        let k = SecretKey::generate_type(t, &mut crate::OsRng);
        let sig = k.sign(b"message");
        assert!(k.public().verifies(b"message", &sig), "{t:?}");
        assert!(!k.public().verifies(b"other", &sig), "{t:?}");
        let file = secret_to_file(&k);
        let back = secret_from_file(&file).unwrap();
        assert_eq!(back.public(), k.public(), "{t:?}");
        assert!(k.public().verifies(b"again", &back.sign(b"again")), "{t:?}");
        let public = public_from_file(&file).unwrap();
        assert_eq!(PublicKey::from_value(&public.to_value()).unwrap(), public);
        assert_eq!(public.key_id(), k.public().key_id());
        // A signature of another type's key does not verify.
        let other = SecretKey::generate_type(if t == KeyType::Ecdsa { KeyType::Ed25519 } else { KeyType::Ecdsa }, &mut crate::OsRng);
        assert!(!k.public().verifies(b"message", &other.sign(b"message")), "{t:?}");
    }
    assert!("dsa".parse::<KeyType>().is_err());
}

#[test]
fn a_role_two_delegators_name_is_verified_against_the_one_each_search_goes_through() {
    let k = keys();
    let (ka, kb, kx1, kx2) = (key(40), key(41), key(42), key(43));
    let role = |name: &str, key: &SecretKey, paths: &[&str]| json!({"name": name, "keyids": [key.public().key_id().0], "threshold": 1, "paths": paths, "terminating": false});
    let keys_of = |ks: &[&SecretKey]| -> serde_json::Map<String, serde_json::Value> {
        ks.iter().map(|k| (k.public().key_id().0, k.public().to_value())).collect()
    };
    let targets_role = |targets: serde_json::Value, delegations: serde_json::Value| json!({"_type": "targets", "spec_version": "1.0.31", "version": 1, "expires": FAR, "targets": targets, "delegations": delegations});
    let file = json!({"length": 1, "hashes": {"sha256": "00"}});
    // targets -> a (p/a/*), b (p/b/*); a and b both delegate a role named x, with other keys.
    let t = repo::sign(
        &targets_role(json!({}), json!({"keys": keys_of(&[&ka, &kb]), "roles": [role("a", &ka, &["p/a/*"]), role("b", &kb, &["p/b/*"])]})),
        &[&k.targets],
    );
    let a = repo::sign(&targets_role(json!({}), json!({"keys": keys_of(&[&kx1]), "roles": [role("x", &kx1, &["p/a/*"])]})), &[&ka]);
    let b = repo::sign(&targets_role(json!({}), json!({"keys": keys_of(&[&kx2]), "roles": [role("x", &kx2, &["p/b/*"])]})), &[&kb]);
    // x is signed by a's key for it only, and lists a target under each prefix.
    let x = repo::sign(&targets_role(json!({"p/a/1": file, "p/b/1": file}), json!({"keys": {}, "roles": []})), &[&kx1]);
    let root = repo::sign(&root_v(&k, 1, FAR), &[&k.root[0], &k.root[1]]);
    let mut tr = Trusted::new(&root, Limits::default()).unwrap();
    let snap = repo::sign(&repo::snapshot(1, FAR, &[("targets", &t, 1), ("a", &a, 1), ("b", &b, 1), ("x", &x, 1)]), &[&k.snap]);
    tr.update_timestamp(&repo::sign(&repo::timestamp(1, FAR, &snap, 1), &[&k.ts]), NOW).unwrap();
    tr.update_snapshot(&snap, NOW).unwrap();
    tr.update_targets("targets", "root", &t, NOW).unwrap();
    tr.update_targets("a", "targets", &a, NOW).unwrap();
    assert_eq!(tr.lookup("p/a/1"), Lookup::Need { role: "x".into(), delegator: "a".into() });
    tr.update_targets("x", "a", &x, NOW).unwrap();
    assert!(matches!(tr.lookup("p/a/1"), Lookup::Found(_, ref r) if r == "x"));
    // Through b, the x that a's search loaded is not taken as it is: it needs b's keys.
    tr.update_targets("b", "targets", &b, NOW).unwrap();
    assert_eq!(tr.lookup("p/b/1"), Lookup::Need { role: "x".into(), delegator: "b".into() });
    let e = tr.update_targets("x", "b", &x, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(_)), "{e}");
    assert_eq!(tr.lookup("p/b/1"), Lookup::Need { role: "x".into(), delegator: "b".into() }, "still not trusted through b");
    assert!(matches!(tr.lookup("p/a/1"), Lookup::Found(..)), "still trusted through a");
}

#[test]
fn a_loaded_role_is_verified_again_when_its_delegator_changes_its_keys_but_not_the_role() {
    let k = keys();
    let (kf1, kf2) = (key(50), key(51));
    let keys_of = |ks: &[&SecretKey]| -> serde_json::Map<String, serde_json::Value> {
        ks.iter().map(|k| (k.public().key_id().0, k.public().to_value())).collect()
    };
    let targets_v = |version: u64, ks: &[&SecretKey], threshold: usize| {
        let ids: Vec<String> = ks.iter().map(|k| k.public().key_id().0).collect();
        let delegations = json!({"keys": keys_of(ks), "roles": [
            {"name": "f", "keyids": ids, "threshold": threshold, "paths": ["f/*"], "terminating": false}]});
        repo::sign(
            &json!({"_type": "targets", "spec_version": "1.0.31", "version": version, "expires": FAR, "targets": {},
                "delegations": delegations}),
            &[&k.targets],
        )
    };
    let file = json!({"length": 1, "hashes": {"sha256": "00"}});
    let f =
        repo::sign(&json!({"_type": "targets", "spec_version": "1.0.31", "version": 1, "expires": FAR, "targets": {"f/1": file}}), &[&kf1]);
    let root = repo::sign(&root_v(&k, 1, FAR), &[&k.root[0], &k.root[1]]);
    let mut tr = Trusted::new(&root, Limits::default()).unwrap();
    let step = |tr: &mut Trusted, v: u64, t: &[u8]| {
        let snap = repo::sign(&repo::snapshot(v, FAR, &[("targets", t, v), ("f", &f, 1)]), &[&k.snap]);
        tr.update_timestamp(&repo::sign(&repo::timestamp(v, FAR, &snap, v), &[&k.ts]), NOW).unwrap();
        tr.update_snapshot(&snap, NOW).unwrap();
        tr.update_targets("targets", "root", t, NOW).unwrap();
    };
    step(&mut tr, 1, &targets_v(1, &[&kf1], 1));
    tr.update_targets("f", "targets", &f, NOW).unwrap();
    assert!(matches!(tr.lookup("f/1"), Lookup::Found(..)));
    // Targets 2 asks for two keys of f; f itself is unchanged (still version 1, one
    // signature): it is no longer trusted, and the same bytes are refused when offered again.
    step(&mut tr, 2, &targets_v(2, &[&kf1, &kf2], 2));
    assert_eq!(tr.lookup("f/1"), Lookup::Need { role: "f".into(), delegator: "targets".into() });
    assert!(tr.files().iter().all(|(role, _)| role != "f"), "not persisted as trusted either");
    let e = tr.update_targets("f", "targets", &f, NOW).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(_)), "{e}");
    // A change of targets that keeps f's keys keeps f trusted.
    let mut tr = Trusted::new(&root, Limits::default()).unwrap();
    step(&mut tr, 1, &targets_v(1, &[&kf1], 1));
    tr.update_targets("f", "targets", &f, NOW).unwrap();
    step(&mut tr, 2, &targets_v(2, &[&kf1, &kf2], 1));
    assert!(matches!(tr.lookup("f/1"), Lookup::Found(..)), "one of two keys is enough");
}

#[test]
fn a_root_whose_key_ids_are_arbitrary_names_verifies_by_the_names_it_declares() {
    // python-tuf takes a key id as a name and never recomputes it; roots in the wild carry ids
    // computed other ways. Each signature is looked up by the id it names.
    let k = keys();
    let sign_as = |signed: &serde_json::Value, by: &[(&str, &SecretKey)]| {
        let msg = canonical::encode(signed).unwrap();
        let sigs: Vec<_> = by.iter().map(|(id, k)| json!({"keyid": id, "sig": k.sign(&msg)})).collect();
        serde_json::to_vec(&json!({"signed": signed, "signatures": sigs})).unwrap()
    };
    let root = json!({"_type": "root", "spec_version": "1.0.31", "version": 1, "expires": FAR, "consistent_snapshot": true,
        "keys": {"alice's token": k.root[0].public().to_value(), "bob": k.root[1].public().to_value(),
                 "ts": k.ts.public().to_value(), "snap": k.snap.public().to_value(), "t": k.targets.public().to_value()},
        "roles": {"root": {"keyids": ["alice's token", "bob"], "threshold": 2}, "timestamp": {"keyids": ["ts"], "threshold": 1},
                  "snapshot": {"keyids": ["snap"], "threshold": 1}, "targets": {"keyids": ["t"], "threshold": 1}}});
    let mut t = Trusted::new(&sign_as(&root, &[("alice's token", &k.root[0]), ("bob", &k.root[1])]), Limits::default()).unwrap();
    assert_eq!(t.root().common.version, 1);
    // Signatures under the computed ids name no declared key: they count for nothing.
    let computed = |s: &SecretKey| s.public().key_id().0;
    let e = Trusted::new(&sign_as(&root, &[(&computed(&k.root[0]), &k.root[0]), (&computed(&k.root[1]), &k.root[1])]), Limits::default())
        .unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(ref th) if th.valid == 0), "{e}");
    // The other roles verify through their declared names too.
    let snap = repo::sign(&repo::snapshot(1, FAR, &[]), &[&k.snap]);
    let ts = repo::timestamp(1, FAR, &snap, 1);
    assert!(t.update_timestamp(&repo::sign(&ts, &[&k.ts]), NOW).is_err(), "signed under the computed id");
    assert!(t.update_timestamp(&sign_as(&ts, &[("ts", &k.ts)]), NOW).unwrap());
    // One key declared under two names counts once toward a threshold (stricter than
    // python-tuf, which counts names).
    let mut aliased = root.clone();
    aliased["keys"]["alias of bob"] = k.root[1].public().to_value();
    aliased["roles"]["root"]["keyids"] = json!(["bob", "alias of bob"]);
    let e = Trusted::new(&sign_as(&aliased, &[("bob", &k.root[1]), ("alias of bob", &k.root[1])]), Limits::default()).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(ref th) if th.valid == 1 && th.threshold == 2), "{e}");
}
