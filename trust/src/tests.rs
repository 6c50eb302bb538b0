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
