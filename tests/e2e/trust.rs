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
    // Tampered metadata: refused, the trusted files unchanged.
    let proxy = Proxy::start(&server.url);
    let mut ts: Value = serde_json::from_slice(&std::fs::read(md.join("timestamp.json")).unwrap()).unwrap();
    ts["signed"]["version"] = Value::from(1000);
    proxy.set("/tuf/timestamp.json", Rule::Bytes(serde_json::to_vec(&ts).unwrap()));
    let before = std::fs::read(md.join("timestamp.json")).unwrap();
    let (ok, err) = conformance(&["--metadata-dir", md_s, "--metadata-url", &format!("{}/tuf", proxy.url), "refresh"]);
    assert!(!ok);
    assert!(err.contains("valid signature"), "{err}");
    assert_eq!(std::fs::read(md.join("timestamp.json")).unwrap(), before);
}
