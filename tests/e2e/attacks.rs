//! Attacks on the update path, through a proxy the test controls: each is refused, and the mounted generation and trusted state stay.
//!
//! One test per attack, each driving real imgctl, imaged and a real imgfs mount through the
//! proxy (tests::proxy): it serves old, altered, oversized, slow or missing files, or files
//! signed with the server's stolen online keys. Each checks how `imgfs update` ends, the
//! trusted state on disk (CACHE/trust/) and the generation that stays mounted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::proxy::{signed, Forger, Proxy, Rule};
use tests::{bin, client, ok_json, Imgctl, Mount, Server, TestClock};

/// A signed repository with `os@1` and `os@2` pushed, `os/stable` at 1, a proxy in front
/// of the server and a mount of `os/stable` through the proxy; the server and the mount
/// share a clock the test can move forward.
struct Setup {
    t: Imgctl,
    server: Server,
    proxy: Proxy,
    mnt: Mount,
    clock: TestClock,
}

fn write_tree(src: &Path, version: &str) {
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/version"), format!("{version}\n")).unwrap();
    std::fs::write(src.join("payload.bin"), tests::noise(40_000, version.len() as u64)).unwrap();
}

fn setup_with(config: Option<&str>) -> Setup {
    setup_typed(config, "ed25519")
}

/// `setup_with`, every key of type `keytype`: the engineers' (root, targets, the family's)
/// and the server's online keys.
fn setup_typed(config: Option<&str>, keytype: &'static str) -> Setup {
    let t = Imgctl::new();
    t.use_key_type(keytype);
    let config = match (config, keytype) {
        (c, "ed25519") => c.map(String::from),
        (c, k) => Some(format!("{}\ntuf_key_type = \"{k}\"\n", c.unwrap_or(""))),
    };
    let config = config.as_deref();
    let data = t.path("server");
    let clock = TestClock::new(&t.path("clock"));
    let server = match config {
        Some(c) => {
            let file = t.path("imaged.toml");
            std::fs::write(&file, c).unwrap();
            Server::start_clocked(&data, Some(&file), &clock)
        }
        None => Server::start_clocked(&data, None, &clock),
    };
    let src = t.path("src");
    write_tree(&src, "one");
    t.publish(&server, &src, "os", "os/stable");
    write_tree(&src, "two");
    t.import(&src, "os");
    t.push_signed(&server, "os@2");
    let proxy = Proxy::start(&server.url);
    let mnt = Mount::start_clocked(&[&proxy.url], "os/stable", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"], &clock);
    assert_eq!(version(&mnt), "one");
    Setup { t, server, proxy, mnt, clock }
}

fn setup() -> Setup {
    setup_with(None)
}

impl Setup {
    fn set_channel(&self, generation: &str) {
        ok_json(self.t.remote(&self.server, &["--json", "channel", "set", "os/stable", generation]));
    }

    fn cache(&self) -> PathBuf {
        self.t.path("cache")
    }

    fn forger(&self) -> Forger {
        Forger::steal(&self.server.data, &self.server.url)
    }
}

/// What the mount serves at etc/version.
fn version(mnt: &Mount) -> String {
    std::fs::read_to_string(mnt.point.join("etc/version")).unwrap().trim().to_string()
}

/// Runs `imgfs update`; its exit status and what it printed.
fn update(mnt: &Mount) -> (bool, String) {
    let out = Command::new(bin("imgfs")).arg("update").arg(&mnt.point).env("RUST_BACKTRACE", "0").output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Asserts `imgfs update` fails saying `why`, and that the mount still serves `serving`.
fn refused(mnt: &Mount, why: &str, serving: &str) -> String {
    let (ok, text) = update(mnt);
    assert!(!ok, "the update was accepted (expected {why:?}): {text}");
    assert!(text.contains(why), "expected {why:?} in: {text}");
    assert_eq!(version(mnt), serving, "the mounted generation changed");
    text
}

/// The version of `role` in the endpoint's trusted state on disk (0 if absent).
fn trusted(cache: &Path, role: &str) -> u64 {
    let file = cache.join("trust").join(trust::sign::metadata_file(role, None));
    std::fs::read(&file).map(|b| signed(&b)["version"].as_u64().unwrap()).unwrap_or(0)
}

fn server_version(s: &Setup, file: &str) -> u64 {
    signed(&s.forger().current(file))["version"].as_u64().unwrap()
}

fn status(mnt: &Mount) -> Value {
    mnt.control("status")
}

/// The key-related attacks run with every key type in every role.
const KEY_TYPES: [&str; 3] = ["ed25519", "ecdsa", "rsa"];

#[test]
fn unsigned_or_under_threshold_metadata_and_repeated_signatures_are_refused() {
    for keytype in KEY_TYPES {
        unsigned_or_under_threshold(keytype);
    }
}

fn unsigned_or_under_threshold(keytype: &'static str) {
    let s = setup_typed(None, keytype);
    s.set_channel("os@2");
    let ts_before = trusted(&s.cache(), "timestamp");
    // Unsigned: the server's new timestamp with its signatures removed.
    let mut ts: Value = serde_json::from_slice(&s.forger().current("timestamp.json")).unwrap();
    ts["signatures"] = json!([]);
    s.proxy.set("/tuf/timestamp.json", Rule::Bytes(serde_json::to_vec(&ts).unwrap()));
    refused(&s.mnt, "valid signature", "one");
    assert_eq!(trusted(&s.cache(), "timestamp"), ts_before, "the refused timestamp is not trusted");
    s.proxy.clear_all();

    // Root needs 2 of 2 keys from version 2 on; a version 3 signed by one key, or by one key
    // twice, is refused and root 2 stays trusted.
    let (root, root2) = (s.t.key("root"), s.t.key("root2"));
    let p = |k: &Path| k.to_str().unwrap().to_string();
    let add = format!("{}.pub", p(&root2));
    ok_json(s.t.remote(
        &s.server,
        &["--json", "key", "rotate", "root", "--add", &add, "--threshold", "2", "--sign-with", &p(&root), "--sign-with", &p(&root2)],
    ));
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    assert_eq!(trusted(&s.cache(), "root"), 2);
    assert_eq!(version(&s.mnt), "two");
    let mut v3 = signed(&s.forger().current("root.json"));
    v3["version"] = json!(3);
    let one_key = trust::keys::secret_from_file(&std::fs::read(&root).unwrap()).unwrap();
    let once = trust::sign::sign(&v3, &[&one_key]).unwrap();
    s.proxy.set("/tuf/3.root.json", Rule::Bytes(once));
    refused(&s.mnt, "1 valid signature(s) from distinct authorised keys, 2 needed", "two");
    let twice = trust::sign::sign(&v3, &[&one_key, &one_key]).unwrap();
    s.proxy.set("/tuf/3.root.json", Rule::Bytes(twice));
    refused(&s.mnt, &format!("root: malformed metadata: the signatures list key {} twice", one_key.public().key_id()), "two");
    assert_eq!(trusted(&s.cache(), "root"), 2);
    s.proxy.clear_all();

    // A delegated role: the family needs 2 keys; a version signed by one key twice (with a
    // snapshot and timestamp from the stolen online keys that agree with it) is refused.
    let (images, images2) = (s.t.key("images"), s.t.key("images2"));
    let targets = s.t.key("targets");
    let add = format!("{}.pub", p(&images2));
    // The family's role must verify under its new keys: a rotation that cannot sign it again
    // is refused before anything changes.
    let family_v = server_version(&s, "images%2Fos.json");
    let alone =
        s.t.remote(&s.server, &["--json", "key", "rotate", "images/os", "--add", &add, "--threshold", "2", "--sign-with", &p(&targets)]);
    assert!(!alone.status.success() && String::from_utf8_lossy(&alone.stderr).contains("give 2 of them with --sign-with"), "{alone:?}");
    assert_eq!(server_version(&s, "images%2Fos.json"), family_v);
    ok_json(
        s.t.remote(
            &s.server,
            &["--json", "key", "rotate", "images/os", "--add", &add, "--threshold", "2"]
                .into_iter()
                .chain(["--sign-with", &p(&targets), "--sign-with", &p(&images), "--sign-with", &p(&images2)])
                .collect::<Vec<_>>(),
        ),
    );
    assert_eq!(server_version(&s, "images%2Fos.json"), family_v + 1, "signed again by both keys");
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    let family_before = trusted(&s.cache(), "images/os");
    let f = s.forger();
    let mut fam = signed(&f.current("images%2Fos.json"));
    let fv = fam["version"].as_u64().unwrap() + 1;
    fam["version"] = json!(fv);
    let k = trust::keys::secret_from_file(&std::fs::read(&images).unwrap()).unwrap();
    let forged = trust::sign::sign(&fam, &[&k, &k]).unwrap();
    s.proxy.set(&format!("/tuf/{fv}.images%2Fos.json"), Rule::Bytes(forged.clone()));
    let (sv, tv) = (server_version(&s, "snapshot.json") + 1, server_version(&s, "timestamp.json") + 1);
    f.serve_snapshot(&s.proxy, sv, tv, &[("images/os.json", &forged, fv)]);
    refused(&s.mnt, &format!("images/os: malformed metadata: the signatures list key {} twice", k.public().key_id()), "two");
    assert_eq!(trusted(&s.cache(), "images/os"), family_before);
}

#[test]
fn rollback_of_timestamp_snapshot_targets_roles_and_channels_is_refused_but_an_operator_rollback_is_not() {
    let s = setup();
    let old_ts = s.forger().current("timestamp.json");
    let old_snapshot_v = server_version(&s, "snapshot.json");
    let old_channels_v = server_version(&s, "channels.json");
    // The family's role before os@2 was signed.
    let old_family_v = server_version(&s, "images%2Fos.json") - 1;
    s.set_channel("os@2");
    let (ok, text) = update(&s.mnt);
    assert!(ok && version(&s.mnt) == "two", "{text}");
    let ts_now = trusted(&s.cache(), "timestamp");

    // An old timestamp, replayed.
    s.proxy.set("/tuf/timestamp.json", Rule::Bytes(old_ts));
    refused(&s.mnt, "rollback refused", "two");
    assert_eq!(trusted(&s.cache(), "timestamp"), ts_now);
    s.proxy.clear_all();

    // The operator's rollback is a new channel version naming the older generation.
    ok_json(s.t.remote(&s.server, &["--json", "channel", "rollback", "os/stable"]));
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    assert_eq!(version(&s.mnt), "one");
    assert_eq!(status(&s.mnt)["channel_version"], 3);

    // With the stolen online keys: a newer timestamp naming an older snapshot.
    let f = s.forger();
    let mut ts = signed(&f.current("timestamp.json"));
    ts["version"] = json!(ts["version"].as_u64().unwrap() + 5);
    let old_snap = f.current(&format!("{old_snapshot_v}.snapshot.json"));
    ts["meta"]["snapshot.json"] = trust::sign::meta_info(&old_snap, old_snapshot_v);
    s.proxy.set("/tuf/timestamp.json", Rule::Bytes(f.sign("timestamp", &ts)));
    refused(&s.mnt, "rollback refused", "one");
    s.proxy.clear_all();

    // A new snapshot listing an older channels record (a replay of its first version), and
    // one listing an older family role.
    let old_channels = f.current(&format!("{old_channels_v}.channels.json"));
    let (sv, tv) = (server_version(&s, "snapshot.json") + 1, server_version(&s, "timestamp.json") + 1);
    f.serve_snapshot(&s.proxy, sv, tv, &[("channels.json", &old_channels, old_channels_v)]);
    refused(&s.mnt, "channels: version", "one");
    s.proxy.clear_all();
    let old_family = f.current(&format!("{old_family_v}.images%2Fos.json"));
    f.serve_snapshot(&s.proxy, sv + 1, tv + 1, &[("images/os.json", &old_family, old_family_v)]);
    refused(&s.mnt, "images/os: version", "one");
    s.proxy.clear_all();
    assert_eq!(trusted(&s.cache(), "snapshot"), server_version(&s, "snapshot.json"));
}

#[test]
fn a_frozen_timestamp_expires_the_endpoint_stays_and_reports_stale_since() {
    let s = setup_with(Some("tuf_timestamp_seconds = 4\n"));
    let frozen = s.forger().current("timestamp.json");
    s.proxy.set("/tuf/timestamp.json", Rule::Bytes(frozen));
    // The frozen timestamp's 4 s run out: the server's and the endpoint's clock move 5 s on.
    s.clock.advance(5);
    s.set_channel("os@2");
    refused(&s.mnt, "timestamp: expired at", "one");
    let st = status(&s.mnt);
    assert_eq!(st["trust"]["fresh"], false, "{st}");
    let since = trust::time::parse(st["trust"]["stale_since"].as_str().unwrap()).unwrap();
    let now = s.clock.now();
    assert!(since <= now && since > now - 60, "{st}");
    // The server signs fresh timestamps by itself; once they get through, the endpoint moves.
    s.proxy.clear_all();
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    assert_eq!(version(&s.mnt), "two");
    assert_eq!(status(&s.mnt)["trust"]["fresh"], true);
}

#[test]
fn endless_metadata_a_zstd_bomb_and_a_billion_object_manifest_are_stopped() {
    let s = setup();
    s.set_channel("os@2");
    // A timestamp that never ends: cut at the limit, quickly.
    s.proxy.set("/tuf/timestamp.json", Rule::Endless);
    let start = Instant::now();
    refused(&s.mnt, "more than the 16384", "one");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    s.proxy.clear_all();
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    assert_eq!(version(&s.mnt), "two");

    // A zstd bomb in place of payload.bin's chunk: the read fails, nothing is cached.
    let payload = tests::noise(40_000, 3);
    let digest = blake3::hash(&payload);
    let mut bomb = format::object::encode(&vec![0u8; 64 << 20], 3);
    bomb[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let record = format::record::encode(&format::Digest(*digest.as_bytes()), &bomb);
    // In place of the range of the serving pack that holds the chunk (and in a batch answer,
    // should the endpoint ask that way).
    s.server.wait_for_layouts();
    let m2 = s.forger().current("images%2Fos.json");
    let manifest = signed(&m2)["targets"]["images/os/2"]["custom"]["manifest"].as_str().unwrap().to_string();
    let layout = client().get(format!("{}/v1/layouts/{manifest}", s.server.url)).send().unwrap().bytes().unwrap();
    let layout = format::layout::Layout::decode(&layout).unwrap();
    let at = layout.entries.iter().find(|e| e.prefix == format::layout::prefix(&format::Digest(*digest.as_bytes()))).unwrap();
    let pack = layout.packs[at.pack as usize].digest;
    let r = record.clone();
    s.proxy.set(&format!("/v1/packs/{pack}"), Rule::Range(std::sync::Arc::new(move |_, _| r.clone())));
    s.proxy.set("/v1/objects/batch", Rule::Func(std::sync::Arc::new(move |_| (200, record.clone()))));
    assert!(std::fs::read(s.mnt.point.join("payload.bin")).is_err(), "the bomb must not be served");
    let store = cache::Store::open(s.cache().join("store")).unwrap();
    assert!(!store.contains(&digest.to_hex().parse().unwrap()), "the bomb must not be cached");
    s.proxy.clear_all();

    // A manifest (signed by the family) claiming a billion objects: refused before any tree.
    let m2 = s.forger().current("images%2Fos.json");
    let rec = &signed(&m2)["targets"]["images/os/2"];
    let manifest_digest: format::Digest = rec["custom"]["manifest"].as_str().unwrap().parse().unwrap();
    let local = cache::Store::open(&s.t.store).unwrap();
    let mut m = format::Manifest::decode(&local.get(&manifest_digest).unwrap()).unwrap();
    m.generation = 3;
    m.stats.objects = 1_000_000_000;
    let bytes = m.encode();
    let token = s.server.token();
    let r = client().post(format!("{}/v1/generations", s.server.url)).bearer_auth(&token).body(bytes.clone()).send().unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let mut fam = signed(&m2);
    let v = fam["version"].as_u64().unwrap() + 1;
    fam["version"] = json!(v);
    fam["targets"]["images/os/3"] = json!({"length": bytes.len(), "hashes": {"sha256": trust::sign::sha256_hex(&bytes)},
        "custom": {"image": "os", "generation": 3, "arch": trust::policy::host_arch(), "epoch": 0, "manifest": format::Digest::of(&bytes).to_hex()}});
    let key = trust::keys::secret_from_file(&std::fs::read(s.t.key("images")).unwrap()).unwrap();
    let r = client()
        .put(format!("{}/v1/tuf/roles/images/os", s.server.url))
        .bearer_auth(&token)
        .body(trust::sign::sign(&fam, &[&key]).unwrap())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    s.set_channel("os@3");
    refused(&s.mnt, "claims 1000000000 objects", "two");
}

#[test]
fn mix_and_match_of_timestamp_and_snapshot_is_refused() {
    let s = setup();
    let old_snap_v = server_version(&s, "snapshot.json");
    let old_snap = s.forger().current(&format!("{old_snap_v}.snapshot.json"));
    s.set_channel("os@2");
    // The current timestamp, with an older snapshot under the name it gives.
    let current_v = server_version(&s, "snapshot.json");
    s.proxy.set(&format!("/tuf/{current_v}.snapshot.json"), Rule::Bytes(old_snap));
    refused(&s.mnt, "5.snapshot.json: snapshot: the file does not match the sha256 its parent signed", "one");
    assert!(trusted(&s.cache(), "snapshot") < current_v);
}

#[test]
fn a_fast_forward_attack_freezes_until_the_timestamp_key_is_rotated() {
    for keytype in KEY_TYPES {
        fast_forward_and_recovery(keytype);
    }
}

fn fast_forward_and_recovery(keytype: &'static str) {
    let s = setup_typed(None, keytype);
    let key_types = |role: &str| {
        let root = signed(&s.forger().current("root.json"));
        let ids = root["roles"][role]["keyids"].as_array().unwrap().clone();
        ids.iter().map(|id| root["keys"][id.as_str().unwrap()]["keytype"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    for role in ["root", "targets", "timestamp", "snapshot"] {
        assert!(key_types(role).iter().all(|k| k == keytype), "{keytype}: {role} has {:?}", key_types(role));
    }
    let f = s.forger();
    let mut ts = signed(&f.current("timestamp.json"));
    ts["version"] = json!(1_000_000);
    s.proxy.set("/tuf/timestamp.json", Rule::Bytes(f.sign("timestamp", &ts)));
    let (ok, text) = update(&s.mnt);
    assert!(ok, "a validly signed timestamp is taken: {text}");
    assert_eq!(trusted(&s.cache(), "timestamp"), 1_000_000);
    s.proxy.clear_all();
    s.set_channel("os@2");
    refused(&s.mnt, "rollback refused", "one");
    // Recovery: the root gets a new timestamp key (made by the server); the endpoint drops
    // the timestamp signed by the old one and takes the server's again.
    let root = s.t.key("root");
    ok_json(
        s.t.remote(&s.server, &["--json", "key", "rotate", "timestamp", "--online", "--replace", "--sign-with", root.to_str().unwrap()]),
    );
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    assert_eq!(version(&s.mnt), "two");
    assert_eq!(trusted(&s.cache(), "root"), 2);
    assert!(trusted(&s.cache(), "timestamp") < 1_000_000);
}

#[test]
fn a_stolen_online_key_cannot_point_a_channel_at_unsigned_or_withdrawn_generations() {
    let s = setup();
    s.forger().point_channel(&s.proxy, "os/stable", "images/os/99", 0, 1);
    refused(&s.mnt, "images/os/99 is not signed by its image family's keys", "one");
    s.proxy.clear_all();

    // Generation 3 fixes a security hole: epoch 1, and the family withdraws everything below.
    let src = s.t.path("src");
    write_tree(&src, "three");
    s.t.import(&src, "os");
    let key = s.t.key("images");
    let k = key.to_str().unwrap();
    ok_json(s.t.remote(&s.server, &["--json", "push", "os@3", "--key", k, "--epoch", "1"]));
    ok_json(s.t.remote(&s.server, &["--json", "trust", "min-epoch", "os", "1", "--key", k]));
    s.set_channel("os@3");
    let (ok, text) = update(&s.mnt);
    assert!(ok, "{text}");
    assert_eq!(version(&s.mnt), "three");
    let local: Value = serde_json::from_slice(&std::fs::read(s.cache().join("trust/local.json")).unwrap()).unwrap();
    assert_eq!(local["min_epoch"], 1);
    // The server refuses to point a channel below the floor; a thief of its keys tries anyway.
    let out = s.t.remote(&s.server, &["--json", "channel", "set", "os/stable", "os@2"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("withdrawn"));
    s.forger().point_channel(&s.proxy, "os/stable", "images/os/2", 0, 1);
    refused(&s.mnt, "has security epoch 0, below the floor 1", "three");
    s.proxy.clear_all();
    // (The thief's timestamp and snapshot above were validly signed: the endpoint trusts
    // their versions now; the next forgery has to go higher.)
    s.forger().point_channel(&s.proxy, "os/stable", "images/os/3", 2, 2);
    refused(&s.mnt, "claims epoch 2 for images/os/3, its family signed epoch 1", "three");
}

#[test]
fn a_mount_leaves_a_generation_the_signed_metadata_withdraws_on_its_own() {
    let s = setup();
    // A mount held on os@2, as an agent holds one for a rollout, polling every second.
    let mnt =
        Mount::start_clocked(&[&s.proxy.url], "os/stable", &s.t.path("cache2"), &s.t.path("mnt2"), &["--poll-seconds", "1"], &s.clock);
    let switched = mnt.control_with("switch", &["os@2"]);
    assert_eq!(switched["outcome"], "switched", "{switched}");
    assert_eq!(version(&mnt), "two");
    // Withdrawn: no channel named it, so only the signed `channels` role says so.
    let w = ok_json(s.t.remote(&s.server, &["--json", "withdraw", "os@2", "--reason", "a pre-release pushed by mistake"]));
    assert_eq!(w["channels"], serde_json::json!([]), "{w}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while version(&mnt) != "one" {
        assert!(std::time::Instant::now() < until, "still serving os@2: {}", status(&mnt));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let st = status(&mnt);
    assert!(st["held"].is_null() && st["current"]["generation"] == "os@1", "{st}");
    // It is not taken again, asked or not.
    let out = Command::new(bin("imgfs")).args(["switch"]).arg(&mnt.point).arg("os@2").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("withdrawn"), "{out:?}");
    assert_eq!(version(&mnt), "one");
    // The mount that was not held follows its channel, which never moved: os@1 still.
    assert_eq!(version(&s.mnt), "one");
}

#[test]
fn another_image_family_or_architecture_is_refused() {
    let s = setup();
    let src = s.t.path("other");
    write_tree(&src, "other");
    s.t.import(&src, "kiosk");
    s.t.push_signed(&s.server, "kiosk@1");
    s.set_channel("kiosk@1");
    refused(&s.mnt, "outside image family os", "one");
    let src = s.t.path("src");
    write_tree(&src, "arm");
    s.t.import(&src, "os");
    let key = s.t.key("images");
    ok_json(s.t.remote(&s.server, &["--json", "push", "os@3", "--key", key.to_str().unwrap(), "--arch", "riscv64"]));
    s.set_channel("os@3");
    refused(&s.mnt, "is for riscv64", "one");
    assert_eq!(status(&s.mnt)["trust"]["family"], "os");
    let local: Value = serde_json::from_slice(&std::fs::read(s.cache().join("trust/local.json")).unwrap()).unwrap();
    assert_eq!(local["family"], "os", "the family stays the one first mounted");
}

#[test]
fn a_malicious_mirror_is_passed_over_for_a_good_one() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    write_tree(&src, "one");
    t.publish(&server, &src, "os", "os/stable");
    let bad = Proxy::start(&server.url);
    let mut ts: Value = serde_json::from_slice(&Forger::steal(&server.data, &server.url).current("timestamp.json")).unwrap();
    ts["signed"]["version"] = json!(999);
    bad.set("/tuf/timestamp.json", Rule::Bytes(serde_json::to_vec(&ts).unwrap()));
    let mnt = Mount::start_with(&[&bad.url, &server.url], "os/stable", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"]);
    assert_eq!(version(&mnt), "one");
    write_tree(&src, "two");
    t.publish(&server, &src, "os", "os/stable");
    let (ok, text) = update(&mnt);
    assert!(ok, "{text}");
    assert_eq!(version(&mnt), "two");
    assert!(trusted(&t.path("cache"), "timestamp") < 999);
}

#[test]
fn slow_retrieval_at_one_byte_a_second_fails_within_the_deadline() {
    let s = setup();
    s.set_channel("os@2");
    let before = trusted(&s.cache(), "timestamp");
    s.proxy.set("/tuf/timestamp.json", Rule::Drip(Duration::from_secs(1)));
    let start = Instant::now();
    refused(&s.mnt, "below the minimum rate", "one");
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
    assert_eq!(trusted(&s.cache(), "timestamp"), before);
}

#[test]
fn a_clock_set_back_is_noticed_and_nothing_is_switched() {
    let mut s = setup();
    s.set_channel("os@2");
    // The clock goes back a day: the endpoint's last update used a time a day ahead of it.
    s.mnt.kill();
    let file = s.cache().join("trust/local.json");
    let mut local: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    local["clock_high_water"] = json!(now + 86_400);
    std::fs::write(&file, serde_json::to_vec(&local).unwrap()).unwrap();
    let mnt = Mount::start_with(&[&s.proxy.url], "os/stable", &s.cache(), &s.t.path("mnt"), &["--poll-seconds", "3600"]);
    assert!(mnt.banner.contains("from the cache"), "{}", mnt.banner);
    assert_eq!(version(&mnt), "one", "the last verified generation, not the channel's new one");
    refused(&mnt, "before", "one");
    let st = status(&mnt);
    assert!(st["trust"]["last_check"]["error"].as_str().unwrap().contains("refusing to trust it"), "{st}");
}
