//! python-tuf, TUF's reference implementation, against imaged in both directions: repositories python-tuf writes with every key type are read by `imaged-conformance-client` and by imgfs (a generation mounted) and their tampered versions refused with the trusted state unchanged, and python-tuf's own client reads imaged's repository.
//!
//! The repositories come from `tests/interop/python_repo.py` (python-tuf's `Metadata` API):
//! ed25519, ECDSA, RSA and mixed keys, a delegation with `?` and `*` patterns, a root rotation
//! to ECDSA keys, a root threshold of 2 (of three key types when mixed). They are served by
//! Python's `http.server` as static files. python-tuf 6.0.0 lives in the virtual environment
//! the setup script makes (`IMAGED_PYENV`, default `/var/tmp/imaged-pyenv`). imgfs reads
//! repositories from `tests/interop/python_imaged_repo.py` (imaged's role layout, python-tuf's
//! keys of each type, a rotated root, thresholds of 2 with mixed key types), served by a proxy
//! in front of a real server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tests::{bin, ok_json, Imgctl, Server};

/// The virtual environment's python.
fn python() -> PathBuf {
    let env = std::env::var_os("IMAGED_PYENV").map_or_else(|| PathBuf::from("/var/tmp/imaged-pyenv"), PathBuf::from);
    let py = env.join("bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh (it installs python-tuf there)", py.display());
    py
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop").join(name)
}

/// Python's static file server on a free port, killed when dropped.
struct Static {
    child: Child,
    url: String,
}

impl Static {
    fn start(dir: &Path) -> Static {
        let mut child = Command::new(python())
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let port = line.split_whitespace().skip_while(|w| *w != "port").nth(1).unwrap_or_else(|| panic!("http.server said {line:?}"));
        Static { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Static {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies every file under `from` into `to` (replacing what is there).
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Every file of a directory, by name, with its bytes.
fn snapshot_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    trust::sign::sha256_hex(bytes)
}

/// `imaged-conformance-client` with the metadata directory and URLs of one served repository.
struct Client {
    md: PathBuf,
    targets: PathBuf,
    url: String,
}

impl Client {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin("imaged-conformance-client"))
            .arg("--metadata-dir")
            .arg(&self.md)
            .args(["--metadata-url", &format!("{}/metadata", self.url)])
            .args(["--target-base-url", &format!("{}/targets", self.url)])
            .arg("--target-dir")
            .arg(&self.targets)
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Downloads every target of `expect` (path -> sha256) and checks the bytes.
    fn download_all(&self, expect: &Value, what: &str) {
        let mut args = Vec::new();
        for path in expect.as_object().unwrap().keys() {
            args.extend(["--target-name", path.as_str()]);
        }
        args.push("download");
        let (ok, err) = self.run(&args);
        assert!(ok, "{what}: {err}");
        for (path, digest) in expect.as_object().unwrap() {
            let got = std::fs::read(self.targets.join(trust::sign::encode_role(path))).unwrap();
            assert_eq!(&sha256_hex(&got), digest.as_str().unwrap(), "{what}: {path}");
        }
    }
}

#[test]
fn python_tuf_repositories_of_every_key_type_are_read_and_their_tampered_versions_refused() {
    let t = Imgctl::new();
    for keytype in ["ed25519", "ecdsa", "rsa", "mixed"] {
        let out = t.path(&format!("python-{keytype}"));
        let made = Command::new(python()).arg(script("python_repo.py")).arg(&out).arg(keytype).output().unwrap();
        assert!(made.status.success(), "python_repo.py {keytype}: {}", String::from_utf8_lossy(&made.stderr));
        let expect: Value = serde_json::from_slice(&std::fs::read(out.join("expect.json")).unwrap()).unwrap();
        let served = t.path(&format!("served-{keytype}"));
        std::fs::create_dir_all(&served).unwrap();
        copy_tree(&out.join("v1"), &served);
        let web = Static::start(&served);
        let c = Client { md: t.path(&format!("md-{keytype}")), targets: t.path(&format!("targets-{keytype}")), url: web.url.clone() };
        let root = out.join("v1/metadata/root.json");
        let (ok, err) = c.run(&["init", root.to_str().unwrap()]);
        assert!(ok, "{keytype}: init: {err}");
        // Version 1: a target of the top-level targets and one of the delegated role (`files/v?/*.txt`).
        c.download_all(&expect["v1"], &format!("{keytype} v1"));
        // Version 2: root 2 (its keys rotated to ECDSA, signed by old and new), new targets.
        copy_tree(&out.join("v2"), &served);
        c.download_all(&expect["v2"], &format!("{keytype} v2"));
        let trusted_root: Value = serde_json::from_slice(&std::fs::read(c.md.join("root.json")).unwrap()).unwrap();
        assert_eq!(trusted_root["signed"]["version"], 2, "{keytype}: the rotated root is trusted");
        let keys = trusted_root["signed"]["keys"].as_object().unwrap();
        let root_ids = trusted_root["signed"]["roles"]["root"]["keyids"].as_array().unwrap();
        assert!(root_ids.iter().all(|id| keys[id.as_str().unwrap()]["keytype"] == "ecdsa"), "{keytype}: {trusted_root:#}");
        drop(web);
        // Version 3, wrong in one way each, and rolled-back timestamp, snapshot and targets
        // versions, each to a client that trusts version 2: refused. A timestamp or snapshot
        // that verified before the refused role may move to its new version (correct TUF
        // behaviour: each role that verified is trusted); the refused role's trusted file and
        // those after it stay unchanged on disk.
        let all = ["root.json", "timestamp.json", "snapshot.json", "targets.json", "files.json"];
        let from_snapshot = [&all[..1], &all[2..]].concat();
        for (bad, says, unchanged) in [
            ("badsig", "targets: 0 valid signature(s) from distinct authorised keys, 1 needed", &[&all[..1], &all[3..]].concat()),
            ("dupkey", "snapshot: malformed metadata: the signatures list key", &from_snapshot),
            ("expired", "timestamp: expired at 2020-01-01T00:00:00Z", &all.to_vec()),
            ("rollback", "timestamp: version 1 is older than the trusted version 2 (rollback refused)", &all.to_vec()),
            ("rollback-snapshot", "snapshot: version 1 is older than the trusted version 2 (rollback refused)", &all.to_vec()),
            ("rollback-targets", "targets: version 1 is older than the trusted version 2 (rollback refused)", &from_snapshot),
        ] {
            let served = t.path(&format!("served-{keytype}-{bad}"));
            std::fs::create_dir_all(&served).unwrap();
            copy_tree(&out.join("v1"), &served);
            copy_tree(&out.join("v2"), &served);
            let web = Static::start(&served);
            let c = Client { md: t.path(&format!("md-{keytype}-{bad}")), targets: t.path(&format!("targets-{keytype}-{bad}")), url: web.url.clone() };
            assert!(c.run(&["init", root.to_str().unwrap()]).0);
            c.download_all(&expect["v2"], &format!("{keytype} v2 before {bad}"));
            let before = snapshot_dir(&c.md);
            copy_tree(&out.join(bad), &served);
            let (ok, err) = c.run(&["--target-name", "images/demo/1", "download"]);
            assert!(!ok, "{keytype} {bad}: accepted");
            assert!(err.contains(says), "{keytype} {bad}: expected {says:?} in {err}");
            let after = snapshot_dir(&c.md);
            for f in unchanged {
                assert_eq!(after.get(*f), before.get(*f), "{keytype} {bad}: {f} changed on disk");
            }
            assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{keytype} {bad}");
        }
    }
}

#[test]
fn python_tuf_reference_client_reads_imageds_repository_and_downloads_a_generation_manifest() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    let md = t.path("ngclient-metadata");
    let target_dir = t.path("ngclient-targets");
    let out = Command::new(python())
        .arg(script("ngclient_fetch.py"))
        .arg(&md)
        .arg(t.root_file())
        .arg(format!("{}/tuf/", server.url))
        .arg(format!("{}/tuf/targets/", server.url))
        .arg(&target_dir)
        .arg("images/os/1")
        .output()
        .unwrap();
    assert!(out.status.success(), "ngclient: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = std::fs::read(got["path"].as_str().unwrap()).unwrap();
    assert!(format::Manifest::decode(&manifest).is_ok(), "python-tuf downloaded the generation's manifest: {got}");
    // The same bytes imaged's own client downloads.
    let ours = t.path("ours");
    let c = Client { md: t.path("ours-md"), targets: ours.clone(), url: server.url.clone() };
    let (ok, err) = c.run(&["init", t.root_file().to_str().unwrap()]);
    assert!(ok, "{err}");
    let out = Command::new(bin("imaged-conformance-client"))
        .arg("--metadata-dir")
        .arg(&c.md)
        .args(["--metadata-url", &format!("{}/tuf", server.url), "--target-base-url", &format!("{}/tuf/targets", server.url)])
        .arg("--target-dir")
        .arg(&ours)
        .args(["--target-name", "images/os/1", "download"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(ours.join("images%2Fos%2F1")).unwrap(), manifest);
    // python-tuf kept what it trusted: the delegated family role included.
    assert!(md.join("images%2Fos.json").exists() || md.join("images/os.json").exists(), "{:?}", snapshot_dir(&md).keys().collect::<Vec<_>>());
}

/// What the server's `images/FAMILY` and `channels` roles sign now, as python_imaged_repo.py's
/// ENTRIES file (written to `file`).
fn imaged_entries(server: &Server, file: &Path) {
    let targets_of = |name: &str| -> Value {
        let bytes = tests::client().get(format!("{}/tuf/{name}", server.url)).send().unwrap().bytes().unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["signed"]["targets"].clone()
    };
    let entries = serde_json::json!({ "family": "os", "images": targets_of("images%2Fos.json"), "channels": targets_of("channels.json") });
    std::fs::write(file, serde_json::to_vec(&entries).unwrap()).unwrap();
}

/// Has `proxy` answer every metadata file in `dir` with its bytes.
fn serve_metadata(proxy: &tests::proxy::Proxy, dir: &Path) {
    for (name, bytes) in snapshot_dir(dir) {
        proxy.set(&format!("/tuf/{name}"), tests::proxy::Rule::Bytes(bytes));
    }
}

/// The `signed` part of a trusted role's file in `trust_dir`.
fn trusted_signed(trust_dir: &Path, file: &str) -> Value {
    serde_json::from_slice::<Value>(&std::fs::read(trust_dir.join(file)).unwrap()).unwrap()["signed"].clone()
}

/// Runs `imgfs update` on a mount; its exit status and what it printed.
fn imgfs_update(mnt: &tests::Mount) -> (bool, String) {
    let out = Command::new(bin("imgfs")).arg("update").arg(&mnt.point).env("RUST_BACKTRACE", "0").output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn imgfs_mounts_generations_whose_metadata_python_tuf_signed_and_refuses_their_tampered_versions() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"signed by python-tuf\n").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    // The generation's and the channel's target entries as imaged signed them; python-tuf signs
    // them again, in a repository of its own keys, with imaged's role layout. `later.json`:
    // after os@2 was pushed and the channel moved to it (what the tampered versions name).
    let entries_file = t.path("entries.json");
    imaged_entries(&server, &entries_file);
    std::fs::write(src.join("f"), b"os@2, which no tampered update may switch to\n").unwrap();
    t.import(&src, "os");
    t.push_signed(&server, "os@2");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@2"]));
    let later_file = t.path("later.json");
    imaged_entries(&server, &later_file);
    for mode in ["ed25519", "ecdsa", "rsa", "rotated", "mixed"] {
        let out = t.path(&format!("python-signed-{mode}"));
        let mut make = Command::new(python());
        make.arg(script("python_imaged_repo.py")).arg(&out).arg(mode).arg(&entries_file);
        if mode == "mixed" {
            make.arg(&later_file);
        }
        let made = make.output().unwrap();
        assert!(made.status.success(), "{mode}: {}", String::from_utf8_lossy(&made.stderr));
        // Served in place of imaged's metadata by a proxy in front of it (objects pass through).
        let proxy = tests::proxy::Proxy::start(&server.url);
        serve_metadata(&proxy, &out.join("metadata"));
        let roots = if mode == "rotated" { 2 } else { 1 };
        proxy.set(&format!("/tuf/{}.root.json", roots + 1), tests::proxy::Rule::Missing);
        // Provisioned with root 1 (for `rotated`, its ed25519 keys: the endpoint follows the
        // rotation to root 2's ECDSA keys).
        let root = out.join("metadata/root.json");
        let cache = t.path(&format!("cache-{mode}"));
        let trust_dir = cache.join("trust");
        let point = t.path(&format!("mnt-{mode}"));
        let mnt = tests::Mount::start_with(&[&proxy.url], "os/stable", &cache, &point, &["--root", root.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(mnt.point.join("f")).unwrap(), "signed by python-tuf\n", "{mode}");
        let status = mnt.control("status");
        assert_eq!(status["current"]["generation"], "os@1", "{mode}: {status}");
        let trusted = trusted_signed(&trust_dir, "root.json");
        let keys = trusted["keys"].as_object().unwrap();
        let types = |role: &str| -> Vec<String> {
            let ids = trusted["roles"][role]["keyids"].as_array().unwrap();
            ids.iter().map(|id| keys[id.as_str().unwrap()]["keytype"].as_str().unwrap().to_string()).collect()
        };
        match mode {
            "rotated" => {
                assert_eq!(trusted["version"], 2, "the endpoint followed the rotation: {trusted:#}");
                assert!(["root", "targets", "snapshot", "timestamp"].iter().all(|r| types(r) == ["ecdsa"]), "{trusted:#}");
            }
            "mixed" => {
                assert_eq!(trusted["roles"]["root"]["threshold"], 2, "{trusted:#}");
                let mut root_types = types("root");
                root_types.sort();
                assert_eq!(root_types, ["ecdsa", "ed25519", "rsa"], "{trusted:#}");
                let family = &trusted_signed(&trust_dir, "targets.json")["delegations"]["roles"][1];
                assert_eq!((&family["name"], &family["threshold"]), (&Value::from("images/os"), &Value::from(2)), "{family}");
            }
            keytype => {
                assert!(keys.values().all(|k| k["keytype"] == keytype), "the endpoint trusts python-tuf's {keytype} root: {trusted:#}")
            }
        }
        // The family role was reached through a delegation whose path has `?` and `*`.
        let targets = trusted_signed(&trust_dir, "targets.json");
        assert_eq!(targets["delegations"]["roles"][1]["paths"], serde_json::json!(["images/o?/*"]), "{mode}");
        assert_eq!(trusted_signed(&trust_dir, "images%2Fos.json")["version"], 1, "{mode}");
        assert!(proxy.log.lock().unwrap().iter().any(|p| p == "/tuf/1.images%2Fos.json"), "{mode}: the family role came from python-tuf");
        if mode != "mixed" {
            continue;
        }
        // A version 2 of every role (still naming os@1) is taken.
        serve_metadata(&proxy, &out.join("good"));
        assert_eq!(mnt.control("update")["generation"], "os@1");
        for file in ["timestamp.json", "snapshot.json", "targets.json", "channels.json", "images%2Fos.json"] {
            assert_eq!(trusted_signed(&trust_dir, file)["version"], 2, "{file} after the good update");
        }
        // Then later versions, wrong in one way each (the first two name os@2), to the same
        // mount. A timestamp or snapshot that verified may be kept, as TUF says (so later
        // cases use higher versions); the refused role's trusted file, the files after it
        // and the mounted generation stay as they were.
        let all = ["root.json", "timestamp.json", "snapshot.json", "targets.json", "channels.json", "images%2Fos.json", "local.json"];
        for (bad, says, unchanged) in [
            ("badsig", "3.targets.json: targets: 1 valid signature(s) from distinct authorised keys, 2 needed", &all[3..]),
            ("dupkey", "4.snapshot.json: snapshot: malformed metadata: the signatures list key", &all[2..]),
            ("expired", "timestamp.json: timestamp: expired at 2020-01-01T00:00:00Z", &all[..]),
            ("rollback-timestamp", "timestamp: version 1 is older than the trusted version 4 (rollback refused)", &all[..]),
            ("rollback-snapshot", "snapshot: version 1 is older than the trusted version 4 (rollback refused)", &all[..]),
            ("rollback-targets", "7.snapshot.json: targets: version 1 is older than the trusted version 3 (rollback refused)", &all[2..]),
        ] {
            let before = snapshot_dir(&trust_dir);
            serve_metadata(&proxy, &out.join(bad));
            let (ok, text) = imgfs_update(&mnt);
            assert!(!ok, "{bad}: accepted: {text}");
            assert!(text.contains(says), "{bad}: expected {says:?} in: {text}");
            let after = snapshot_dir(&trust_dir);
            assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{bad}");
            for f in unchanged {
                assert!(after.get(*f) == before.get(*f), "{bad}: {f} changed on disk");
            }
            assert_eq!(mnt.control("status")["current"]["generation"], "os@1", "{bad}");
            assert_eq!(std::fs::read_to_string(mnt.point.join("f")).unwrap(), "signed by python-tuf\n", "{bad}");
        }
    }
}
