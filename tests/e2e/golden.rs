//! Golden stores: what format version 1 wrote reads in every later version, and today's import of its recipe is byte-identical.
//!
//! A store written by format version 1 is kept in `tests/golden/` and must be read by every
//! later version; and importing the same recipe today must give the same manifest and root
//! digests, byte for byte. Regenerate only with a format version bump:
//! `IMAGED_WRITE_GOLDEN=1 cargo test --release -p tests golden`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use tests::{compare_trees, noise, Imgctl};

const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/v1-store.tar.gz");
const EPOCH: &str = "1700000000";

/// A small tree that exercises every object kind: many small files (so a dictionary is
/// trained), a chunked large file, a symlink, nested directories; all metadata fixed.
fn golden_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/share/doc")).unwrap();
    for i in 0..150 {
        let page = format!(
            "<html><head><title>Page {i}</title></head><body><h1>Section {i}</h1><p>{}</p></body></html>\n",
            "golden text ".repeat(i % 17 + 3)
        );
        fs::write(root.join(format!("usr/share/doc/page-{i:03}.html")), page).unwrap();
    }
    fs::write(root.join("usr/big.bin"), noise(300_000, 42)).unwrap();
    std::os::unix::fs::symlink("share/doc/page-000.html", root.join("usr/index")).unwrap();
    fs::set_permissions(root.join("usr/big.bin"), fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("find").arg(root).args(["-exec", "touch", "-h", "-d", "@1600000000.5", "{}", "+"]).status().unwrap();
    assert!(status.success());
}

fn import_recipe(t: &Imgctl, src: &Path) -> serde_json::Value {
    let out = Command::new(tests::bin("imgctl"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("--store")
        .arg(&t.store)
        .args(["--json", "import", src.to_str().unwrap(), "--image", "golden", "-m", "golden v1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn golden_v1_store_is_read_and_today_encodes_identically() {
    let t = Imgctl::new();
    let src = t.path("src");
    golden_tree(&src);
    let today = import_recipe(&t, &src);
    assert!(today["dictionary"].is_string(), "the recipe must exercise the dictionary codec");

    if std::env::var_os("IMAGED_WRITE_GOLDEN").is_some() {
        let status = Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--mtime=@1700000000", "-czf", GOLDEN_V1, "-C"])
            .arg(&t.store)
            .args(["objects", "packs", "refs"])
            .status()
            .unwrap();
        assert!(status.success());
    }

    let golden = Imgctl::new();
    fs::create_dir_all(&golden.store).unwrap();
    let status = Command::new("tar").args(["-xzf", GOLDEN_V1, "-C"]).arg(&golden.store).status().unwrap();
    assert!(status.success(), "cannot unpack {GOLDEN_V1}");
    let verify = golden.run(["verify", "--dry-run"]);
    assert!(verify.status.success(), "golden store does not verify: {}", String::from_utf8_lossy(&verify.stdout));
    let log: serde_json::Value = serde_json::from_str(&golden.ok(["--json", "log", "golden"])).unwrap();
    assert_eq!(log[0]["root"], today["root"], "today's trees encode differently from format v1");
    assert_eq!(log[0]["stats"], today["stats"], "today's import counts differently");
    // Since format log entry 7 every import carries a change record (an extension v1 did not
    // have); without it, today's manifest must be v1's byte for byte.
    let digest: format::Digest = today["manifest"].as_str().unwrap().parse().unwrap();
    let mut manifest = format::Manifest::decode(&cache::Store::open(&t.store).unwrap().get(&digest).unwrap()).unwrap();
    assert!(manifest.change().is_some(), "an import records its change");
    manifest.extensions.retain(|(k, _)| k != format::change::CHANGE_EXTENSION);
    assert_eq!(log[0]["manifest"].as_str().unwrap(), format::Digest::of(&manifest.encode()).to_hex(), "today's manifest encodes differently from format v1: {today}");
    golden.ok(["export", "golden@1", golden.path("out").to_str().unwrap()]);
    let diffs = compare_trees(&src, &golden.path("out"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
