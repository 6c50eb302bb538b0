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
    assert!(PublicKey::from_value(&rsa).is_err());
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
    // One old key counted twice: refused.
    let e = t.update_root(&repo::sign(&v2, &[&k.root[1], &k.root[1]])).unwrap_err();
    assert!(matches!(e, UpdateError::Threshold(_)), "{e}");
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
    assert_eq!(secret_from_file(&file).unwrap().to_bytes(), k.to_bytes());
    assert_eq!(public_from_file(&file).unwrap(), k.public());
    let mut v: serde_json::Value = serde_json::from_slice(&file).unwrap();
    v["keyval"]["public"] = json!(hex::encode(key(10).public().as_bytes()));
    assert!(secret_from_file(&serde_json::to_vec(&v).unwrap()).is_err());
    assert_eq!(crate::sign::role_of_file("images%2Fdebian.json").as_deref(), Some("images/debian"));
    assert_eq!(crate::sign::encode_role("images/debian"), "images%2Fdebian");
    assert_eq!(crate::sign::target_file("images/debian/7", "ff"), "images/debian/ff.7");
}
