//! Keys and the signed repository from the engineer's side, and the TUF conformance client against a real imaged.
//!
//! `imgctl key` and `trust init`; `imaged-conformance-client` against a real imaged: the
//! tuf-conformance protocol over the same verification core as imgfs.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use tests::proxy::{Proxy, Rule};
use tests::{bin, client, ok_json, Imgctl, Server};

fn conformance(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("imaged-conformance-client")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn keys_are_generated_once_listed_and_rotated_into_a_new_root() {
    let t = Imgctl::new();
    let key = t.path("a.key");
    let first = t.ok(["--json", "key", "generate", key.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&key).unwrap();
    let again = t.run(["key", "generate", key.to_str().unwrap()]);
    assert!(!again.status.success(), "a key file is never overwritten");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let listed: Value = serde_json::from_str(&t.ok(["--json", "key", "list", key.to_str().unwrap()])).unwrap();
    let made: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(listed[0]["keyid"], made["keyid"]);
    assert_eq!(listed[0]["secret"], true);

    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"one\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    let list = ok_json(t.remote(&server, &["--json", "key", "list"]));
    assert_eq!(list["root"]["version"], 1);
    let old_targets = list["root"]["roles"]["targets"]["keyids"][0].clone();
    // A new targets key, ECDSA P-256 this time: root version 2 (signed by the root key), and
    // targets.json signed again by the new key; publishing goes on.
    let root = t.key("root");
    let new_targets = t.path("targets-2.key");
    let made = ok_json(t.run(["--json", "key", "generate", new_targets.to_str().unwrap(), "--type", "ecdsa"]));
    assert_eq!(made["keytype"], "ecdsa");
    let public: Value = serde_json::from_slice(&std::fs::read(t.path("targets-2.key.pub")).unwrap()).unwrap();
    assert_eq!(public["scheme"], "ecdsa-sha2-nistp256");
    assert!(public["keyval"]["public"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"), "{public}");
    let add = format!("{}.pub", new_targets.display());
    let sign = [root.to_str().unwrap(), new_targets.to_str().unwrap()];
    ok_json(t.remote(
        &server,
        &["--json", "key", "rotate", "targets", "--add", &add, "--replace", "--sign-with", sign[0], "--sign-with", sign[1]],
    ));
    let list = ok_json(t.remote(&server, &["--json", "key", "list"]));
    assert_eq!(list["root"]["version"], 2);
    assert_ne!(list["root"]["roles"]["targets"]["keyids"][0], old_targets);
    assert_eq!(list["root"]["roles"]["targets"]["keyids"][0], made["keyid"]);
    std::fs::write(src.join("f"), b"two\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    // A client provisioned with root 1 follows the rotation and verifies the ECDSA signature.
    let md = t.path("metadata");
    let md_s = md.to_str().unwrap();
    assert!(conformance(&["--metadata-dir", md_s, "init", t.root_file().to_str().unwrap()]).0);
    let (ok, err) = conformance(&["--metadata-dir", md_s, "--metadata-url", &format!("{}/tuf", server.url), "refresh"]);
    assert!(ok, "{err}");
    let targets: Value = serde_json::from_slice(&std::fs::read(md.join("targets.json")).unwrap()).unwrap();
    assert_eq!(targets["signatures"][0]["keyid"], made["keyid"]);
    assert!(targets["signatures"][0]["sig"].as_str().unwrap().starts_with("30"), "a DER signature: {targets}");
    // A rotation signed without the root key is refused by the server.
    let out = t.remote(&server, &["key", "rotate", "targets", "--add", &add, "--sign-with", sign[1]]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_conformance_client_refreshes_downloads_and_refuses_tampering() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    let md = t.path("metadata");
    let md_s = md.to_str().unwrap();
    let root = t.root_file();
    assert!(conformance(&["--metadata-dir", md_s, "init", root.to_str().unwrap()]).0);
    let url = format!("{}/tuf", server.url);
    let (ok, err) = conformance(&["--metadata-dir", md_s, "--metadata-url", &url, "refresh"]);
    assert!(ok, "{err}");
    for role in ["root", "timestamp", "snapshot", "targets"] {
        let served = client().get(format!("{url}/{role}.json")).send().unwrap().bytes().unwrap();
        assert_eq!(std::fs::read(md.join(format!("{role}.json"))).unwrap(), served.to_vec(), "{role}.json: the exact bytes");
    }
    let targets = t.path("targets");
    let download = |name: &str| {
        conformance(&[
            "--metadata-dir",
            md_s,
            "--metadata-url",
            &url,
            "--target-name",
            name,
            "--target-base-url",
            &format!("{}/tuf/targets", server.url),
            "--target-dir",
            targets.to_str().unwrap(),
            "download",
        ])
    };
    let (ok, err) = download("images/os/1");
    assert!(ok, "{err}");
    let manifest = std::fs::read(targets.join("images%2Fos%2F1")).unwrap();
    assert!(format::Manifest::decode(&manifest).is_ok(), "the generation's manifest");
    assert!(md.join("images%2Fos.json").exists(), "the delegated role, under its encoded name");
    assert!(!download("images/os/9").0, "a target no role lists");
    // Several targets in one call, in order, with one updater: a failure in the middle is
    // reported (exit 1) and the rest are still downloaded; one already there is not fetched.
    std::fs::write(src.join("f"), b"content 2\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    let proxy = Proxy::start(&server.url);
    let out = Command::new(bin("imaged-conformance-client"))
        .args(["--metadata-dir", md_s, "--metadata-url", &url, "--target-base-url", &format!("{}/tuf/targets", proxy.url)])
        .args(["--target-dir", targets.to_str().unwrap()])
        .args(["--target-name", "images/os/1", "--target-name", "images/os/9", "--target-name", "images/os/2", "download"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("images/os/9: no trusted role lists target images/os/9"), "{err}");
    assert!(format::Manifest::decode(&std::fs::read(targets.join("images%2Fos%2F2")).unwrap()).is_ok(), "the third target: {err}");
    let fetched = proxy.log.lock().unwrap().clone();
    assert!(fetched.iter().all(|p| !p.contains("/images/os/") || p.ends_with(".2")), "images/os/1 was there already: {fetched:?}");
    assert_eq!(fetched.iter().filter(|p| p.ends_with(".2")).count(), 1, "{fetched:?}");
    // Tampered metadata: refused, the trusted files unchanged.
    let mut ts: Value = serde_json::from_slice(&std::fs::read(md.join("timestamp.json")).unwrap()).unwrap();
    ts["signed"]["version"] = Value::from(1000);
    proxy.set("/tuf/timestamp.json", Rule::Bytes(serde_json::to_vec(&ts).unwrap()));
    let before = std::fs::read(md.join("timestamp.json")).unwrap();
    let (ok, err) = conformance(&["--metadata-dir", md_s, "--metadata-url", &format!("{}/tuf", proxy.url), "refresh"]);
    assert!(!ok);
    assert!(err.contains("valid signature"), "{err}");
    assert_eq!(std::fs::read(md.join("timestamp.json")).unwrap(), before);
}

#[test]
fn a_root_key_behind_an_external_signer_creates_the_repository_and_rotates_a_role() {
    let t = Imgctl::new();
    let token = t.path("token");
    let signer = tests::signer::openssl_signer(&token);
    let server = Server::start(&t.path("server"));
    let (targets, images) = (t.key("targets"), t.key("images"));
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let root_out = t.path("root-from-signer.json");
    let family = format!("os={}.pub", s(&images));
    ok_json(t.remote(
        &server,
        &["--json", "trust", "init", "--root-signer", &signer, "--targets-key", &s(&targets), "--image", &family, "--out", &s(&root_out)],
    ));
    let root: Value = serde_json::from_slice(&std::fs::read(&root_out).unwrap()).unwrap();
    let root_id = root["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap().to_string();
    assert_eq!(root["signed"]["keys"][&root_id]["keytype"], "ecdsa", "{root:#}");
    assert_eq!(root["signatures"][0]["keyid"], root_id.as_str());
    // A new targets key, with the root key still in its token: root version 2.
    let new_targets = t.key("targets-2");
    let add = format!("{}.pub", s(&new_targets));
    ok_json(t.remote(
        &server,
        &["--json", "key", "rotate", "targets", "--add", &add, "--replace", "--signer", &signer, "--sign-with", &s(&new_targets)],
    ));
    let list = ok_json(t.remote(&server, &["--json", "key", "list"]));
    assert_eq!(list["root"]["version"], 2);
    let uses = std::fs::read_to_string(token.join("uses")).unwrap();
    assert_eq!(uses.lines().filter(|l| *l == "sign").count(), 2, "root 1 and root 2 were signed in the token: {uses}");
    // A client provisioned with root 1 follows to root 2: both verify with the token's key.
    let md = t.path("metadata");
    let md_s = md.to_str().unwrap();
    assert!(conformance(&["--metadata-dir", md_s, "init", root_out.to_str().unwrap()]).0);
    let (ok, err) = conformance(&["--metadata-dir", md_s, "--metadata-url", &format!("{}/tuf", server.url), "refresh"]);
    assert!(ok, "{err}");
    let trusted: Value = serde_json::from_slice(&std::fs::read(md.join("root.json")).unwrap()).unwrap();
    assert_eq!(trusted["signed"]["version"], 2);
    // A signer that answers with a bad signature is caught before anything is sent.
    let liar = format!("{signer_dir}/liar.sh", signer_dir = token.display());
    std::fs::write(&liar, format!("#!/bin/sh\nif [ \"$IMGCTL_SIGNER\" = sign ]; then echo 3045022100aa; else {signer}; fi\n")).unwrap();
    let out = t.remote(&server, &["key", "rotate", "targets", "--add", &add, "--signer", &format!("sh {liar}"), "--sign-with", &s(&new_targets)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not verify with its public key"), "{err}");
    assert_eq!(ok_json(t.remote(&server, &["--json", "key", "list"]))["root"]["version"], 2);
}

#[test]
fn a_family_key_behind_an_external_signer_signs_pushes_and_forgets_and_a_targets_key_behind_one_inits() {
    let t = Imgctl::new();
    let (family_token, targets_token) = (t.path("family-token"), t.path("targets-token"));
    let (family_signer, targets_signer) = (tests::signer::openssl_signer(&family_token), tests::signer::openssl_signer(&targets_token));
    let family_pub = t.path("family.pub");
    tests::signer::public_file(&family_signer, &family_pub);
    let server = Server::start(&t.path("server"));
    let root = t.key("root");
    let root_out = t.path("root.json");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let image = format!("os={}", s(&family_pub));
    ok_json(t.remote(
        &server,
        &[
            "--json",
            "trust",
            "init",
            "--root-key",
            &s(&root),
            "--targets-signer",
            &targets_signer,
            "--image",
            &image,
            "--out",
            &s(&root_out),
        ],
    ));
    let signs = |token: &std::path::Path| std::fs::read_to_string(token.join("uses")).unwrap().lines().filter(|l| *l == "sign").count();
    assert_eq!(signs(&targets_token), 1, "targets 1 was signed in its token");
    assert_eq!(signs(&family_token), 0);
    // Two generations pushed, each signed into the family role by the token's key.
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (n, v) in [(1, "one"), (2, "two")] {
        std::fs::write(src.join("f"), v).unwrap();
        t.import(&src, "os");
        let pushed = ok_json(t.remote(&server, &["--json", "push", &format!("os@{n}"), "--signer", &family_signer]));
        assert_eq!(signs(&family_token), n, "push os@{n}: {pushed}");
    }
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@2"]));
    // os@1 signed away, the family role signed again in the token.
    let forgot = ok_json(t.remote(&server, &["--json", "trust", "forget", "os@1", "--signer", &family_signer]));
    assert_eq!(forgot["removed"], true, "{forgot}");
    assert_eq!(signs(&family_token), 3);
    assert_eq!(signs(&targets_token), 1, "the targets key was not needed again");
    // What the tokens signed verifies for a client provisioned with the root: os@2 is listed
    // by the family role (signed with the token's key), os@1 no longer is.
    let md = t.path("metadata");
    let md_s = s(&md);
    let targets_dir = t.path("targets");
    assert!(conformance(&["--metadata-dir", &md_s, "init", &s(&root_out)]).0);
    let client = |target: &str| {
        let (metadata_url, target_url) = (format!("{}/tuf", server.url), format!("{}/tuf/targets", server.url));
        let common = ["--metadata-dir", &md_s, "--metadata-url", &metadata_url, "--target-base-url", &target_url, "--target-dir"];
        conformance(&[&common[..], &[&s(&targets_dir), "--target-name", target, "download"]].concat())
    };
    let (ok, err) = client("images/os/2");
    assert!(ok, "{err}");
    assert!(targets_dir.join("images%2Fos%2F2").exists());
    let (ok, err) = client("images/os/1");
    assert!(!ok, "os@1 was forgotten, yet downloaded: {err}");
    let family_role: Value = serde_json::from_slice(&std::fs::read(md.join("images%2Fos.json")).unwrap()).unwrap();
    let public: Value = serde_json::from_slice(&std::fs::read(&family_pub).unwrap()).unwrap();
    let token_id = trust::keys::PublicKey::from_value(&public).unwrap().key_id().0;
    assert_eq!(family_role["signatures"][0]["keyid"], token_id.as_str(), "{family_role:#}");
    let targets_role: Value = serde_json::from_slice(&std::fs::read(md.join("targets.json")).unwrap()).unwrap();
    assert_eq!(targets_role["signatures"].as_array().unwrap().len(), 1, "{targets_role:#}");
    let trusted_root: Value = serde_json::from_slice(&std::fs::read(md.join("root.json")).unwrap()).unwrap();
    let targets_id = trusted_root["signed"]["roles"]["targets"]["keyids"][0].as_str().unwrap();
    assert_eq!(trusted_root["signed"]["keys"][targets_id]["keytype"], "ecdsa");
    assert_eq!(targets_role["signatures"][0]["keyid"], targets_id);
}

#[test]
fn imgctl_trusts_the_root_it_created_not_one_a_server_hands_over() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"one\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    // `trust init` kept the root it created in the store.
    let pins = t.store.join("trusted-roots");
    let kept: Vec<_> = std::fs::read_dir(&pins).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), std::fs::read(t.root_file()).unwrap());
    // Whoever controls the server's disk hands over a root of its own making, self-signed by a
    // key of its own: refused before anything is signed with the engineer's keys.
    let repo = server.data.join("tuf/repo");
    let genuine = std::fs::read(repo.join("root.json")).unwrap();
    let thief = trust::keys::SecretKey::generate(&mut trust::OsRng);
    let mut forged: Value = serde_json::from_slice(&genuine).unwrap();
    let signed = &mut forged["signed"];
    signed["version"] = Value::from(2);
    let id = thief.public().key_id().0;
    signed["keys"][&id] = thief.public().to_value();
    for role in ["root", "targets", "timestamp", "snapshot"] {
        signed["roles"][role]["keyids"] = serde_json::json!([id]);
    }
    let bytes = trust::sign::sign(signed, &[&thief]).unwrap();
    std::fs::write(repo.join("root.json"), &bytes).unwrap();
    std::fs::write(repo.join("2.root.json"), &bytes).unwrap();
    std::fs::write(src.join("f"), b"two\n").unwrap();
    t.import(&src, "os");
    let key = t.key("images");
    let push = || t.remote(&server, &["push", "os@2", "--key", key.to_str().unwrap()]);
    let out = push();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not follow the root imgctl trusts"), "{err}");
    // Only the current root.json swapped: refused too.
    std::fs::remove_file(repo.join("2.root.json")).unwrap();
    let out = push();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not the root version 1 its signed chain leads to"), "{err}");
    // The genuine root back: signing goes on.
    std::fs::write(repo.join("root.json"), &genuine).unwrap();
    ok_json(t.remote(&server, &["--json", "push", "os@2", "--key", key.to_str().unwrap()]));
}

#[test]
fn the_server_prunes_old_snapshot_and_channels_versions_but_keeps_what_clients_may_need() {
    let t = Imgctl::new();
    let clock = tests::TestClock::new(&t.path("clock"));
    let server = Server::start_clocked(&t.path("server"), None, &clock);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for v in ["one", "two"] {
        std::fs::write(src.join("f"), v).unwrap();
        t.publish(&server, &src, "os", "os/stable");
    }
    // imaged::tuf::KEEP_VERSIONS: versions of snapshot and channels kept however old.
    const KEEP_VERSIONS: u64 = 16;
    let moves = 24;
    for i in 0..moves {
        ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", if i % 2 == 0 { "os@1" } else { "os@2" }]));
    }
    let repo = server.data.join("tuf/repo");
    let versions = |role: &str| -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(&repo)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(&format!(".{role}.json"))?.parse().ok()
            })
            .collect();
        v.sort();
        v
    };
    let before = versions("snapshot");
    assert!(before.len() > 20 && before[0] == 1, "every recent version is kept: {before:?}");
    // Two days later (past a timestamp's lifetime), the next change prunes the old ones.
    clock.advance(2 * 24 * 3600);
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@1"]));
    for role in ["snapshot", "channels"] {
        let now = versions(role);
        assert_eq!(now.len() as u64, KEEP_VERSIONS, "{role}: {now:?}");
        assert_eq!(*now.last().unwrap(), *now.first().unwrap() + KEEP_VERSIONS - 1, "{role}: the newest, contiguous");
    }
    assert_eq!(versions("root"), vec![1], "root versions are never pruned");
    assert_eq!(versions("targets").first(), Some(&1), "nor the offline roles");
    // A client starting from root 1 still gets the whole current repository.
    let md = t.path("md");
    assert!(conformance(&["--metadata-dir", md.to_str().unwrap(), "init", t.root_file().to_str().unwrap()]).0);
    let (ok, err) = conformance(&["--metadata-dir", md.to_str().unwrap(), "--metadata-url", &format!("{}/tuf", server.url), "refresh"]);
    assert!(ok, "{err}");
}

#[test]
fn a_signed_mount_checks_its_channel_as_often_as_the_server_says() {
    let t = Imgctl::new();
    let config = t.path("imaged.toml");
    std::fs::write(&config, "poll_seconds = 1\n").unwrap();
    let server = Server::start_with(&t.path("server"), 0, Some(&config));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"one").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    std::fs::write(src.join("f"), b"two").unwrap();
    t.import(&src, "os");
    t.push_signed(&server, "os@latest");
    // The interval rides in the signed channel record.
    let channels: Value = client().get(format!("{}/tuf/channels.json", server.url)).send().unwrap().json().unwrap();
    assert_eq!(channels["signed"]["targets"]["channels/os/stable"]["custom"]["poll_seconds"], 1, "{channels:#}");
    // A mount given no --poll-seconds follows a channel move by itself within seconds.
    let mnt = tests::Mount::start(&[&server.url], "os/stable", &t.path("cache"), &t.path("mnt"));
    assert_eq!(std::fs::read_to_string(mnt.point.join("f")).unwrap(), "one");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@2"]));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(mnt.point.join("f")).unwrap() != "two" {
        assert!(std::time::Instant::now() < until, "the mount did not follow the channel by itself");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
