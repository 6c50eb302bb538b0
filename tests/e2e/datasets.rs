//! Round trips on real data: the debootstrapped Debian roots and the Rust toolchain tree.
//!
//! The data sets are built by `shared/datasets/make-datasets.sh` (scripts/test.sh builds them
//! first).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use format::Digest;
use serde_json::json;
use tests::{compare_trees, ok_json, Imgctl, Server};

fn datasets() -> PathBuf {
    let dir = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into()));
    for set in ["gen1", "gen2", "rust"] {
        assert!(
            dir.join(format!(".{set}.done")).exists(),
            "dataset {set} missing under {}: run shared/datasets/make-datasets.sh (scripts/test.sh does)",
            dir.display()
        );
    }
    dir
}

fn objects(store: &Path) -> HashSet<String> {
    tests::store_objects(store)
}

fn round_trip(t: &Imgctl, src: &Path, image: &str) -> serde_json::Value {
    let report = t.import(src, image);
    let out = t.path(&format!("export-{image}"));
    t.ok(["export", &format!("{image}@latest"), out.to_str().unwrap()]);
    let diffs = compare_trees(src, &out);
    assert!(
        diffs.is_empty(),
        "{image}: {} differences, first: {}",
        diffs.len(),
        diffs.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    fs::remove_dir_all(&out).unwrap();
    report
}

#[test]
fn debian_generations_round_trip_and_gen2_stores_only_new_content() {
    let d = datasets();
    let t = Imgctl::new();
    let g1 = round_trip(&t, &d.join("gen1"), "debian");
    let after_gen1 = objects(&t.store);
    let g2 = round_trip(&t, &d.join("gen2"), "debian");
    let after_gen2 = objects(&t.store);

    // A store holding only gen2 tells which of gen2's objects gen1 lacked.
    let alone = Imgctl::new();
    let g2_alone = alone.import(&d.join("gen2"), "debian");
    assert_eq!(g2_alone["root"], g2["root"], "gen2's identity depends on what the store held");
    let gen2_objects = objects(&alone.store);
    let needed: HashSet<_> = gen2_objects.difference(&after_gen1).cloned().collect();
    let written: HashSet<_> = after_gen2.difference(&after_gen1).cloned().collect();
    // The manifests differ (parent and time), and the lone store trained its own dictionary
    // where gen2-after-gen1 reused gen1's; compare data and trees alone.
    let own = |r: &serde_json::Value| [r["manifest"].as_str().map(String::from), r["dictionary"].as_str().map(String::from)];
    assert!(g1["dictionary"].is_string() && g2["dictionary"] == g1["dictionary"], "gen2 must reuse gen1's dictionary");
    let needed: HashSet<_> = needed.into_iter().filter(|d| !own(&g2_alone).contains(&Some(d.clone()))).collect();
    let written: HashSet<_> = written.into_iter().filter(|d| !own(&g2).contains(&Some(d.clone()))).collect();
    let extra: Vec<_> = written.difference(&needed).collect();
    let lacking: Vec<_> = needed.difference(&written).collect();
    assert!(
        extra.is_empty() && lacking.is_empty(),
        "gen2 stored {} objects it did not need and lacks {}: {:?} {:?}",
        extra.len(),
        lacking.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        lacking.iter().take(5).collect::<Vec<_>>()
    );
    assert!(g2["stats"]["new_bytes"].as_u64().unwrap() < g1["stats"]["new_bytes"].as_u64().unwrap() / 3);

    // Which generations carry a package, a version below a bound, a path, a file's content.
    let affected = |args: &[&str]| -> Vec<String> {
        let v = ok_json(t.run([&["affected", "--json"], args].concat()));
        v.as_array().unwrap().iter().map(|r| r["generation"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(affected(&["--package", "less"]), ["debian@2"]);
    assert_eq!(affected(&["--package", "libc6", "--below", "99"]), ["debian@1", "debian@2"]);
    assert_eq!(affected(&["--package", "libc6", "--below", "1:0"]), ["debian@1", "debian@2"], "an epoch outranks any version");
    assert!(affected(&["--package", "libc6", "--below", "2.0"]).is_empty());
    assert_eq!(affected(&["--path", "usr/bin/less"]), ["debian@2"]);
    let passwd = Digest::of(&std::fs::read(d.join("gen2/etc/passwd")).unwrap()).to_hex();
    assert_eq!(affected(&["--path", "/etc/passwd", "--digest", &passwd]), ["debian@1", "debian@2"]);
    assert!(affected(&["--path", "/etc/passwd", "--digest", &Digest::of(b"other").to_hex()]).is_empty());
    // By source package: every binary built from glibc, with architecture and source.
    let rows = ok_json(t.run(["affected", "--json", "--source", "glibc"]));
    let libc = rows[0]["packages"].as_array().unwrap().iter().find(|p| p["name"] == "libc6").expect("libc6 is built from glibc").clone();
    assert_eq!((libc["arch"].as_str(), libc["source"].as_str()), (Some("amd64"), Some("glibc")), "{libc}");
    assert_eq!(rows.as_array().unwrap().len(), 2);

    // A server's generations, with the channels naming them: the same answers over HTTP from
    // the package lists pushed with the generations.
    let data = t.path("server");
    let server = Server::start(&data);
    for g in ["debian@1", "debian@2"] {
        ok_json(t.remote(&server, &["--json", "push", g]));
    }
    ok_json(t.remote(&server, &["--json", "channel", "set", "debian/stable", "debian@1"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "debian/pilot", "debian@2"]));
    let remote = |args: &[&str]| -> serde_json::Value { ok_json(t.remote(&server, &[&["--json", "affected"], args].concat())) };
    let rows = remote(&["--package", "libc6", "--below", "99"]);
    let summary: Vec<(&str, &serde_json::Value)> = rows.as_array().unwrap().iter().map(|r| (r["generation"].as_str().unwrap(), &r["channels"])).collect();
    assert_eq!(summary, [("debian@1", &json!(["debian/stable"])), ("debian@2", &json!(["debian/pilot"]))]);
    let rows = remote(&["--package", "less"]);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["generation"], "debian@2");
    assert_eq!(rows[0]["packages"][0]["version"], dpkg_version(&d.join("gen2"), "less"));
    let rows = remote(&["--path", "/etc/passwd", "--digest", &passwd]);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let text = String::from_utf8(t.remote(&server, &["affected", "--package", "less"]).stdout).unwrap();
    assert!(text.starts_with("debian@2") && text.contains("channels: debian/pilot"), "{text}");
}

/// The version of `package` in the dpkg database of the tree `root`, read with dpkg-query.
fn dpkg_version(root: &Path, package: &str) -> String {
    let out = std::process::Command::new("dpkg-query").arg("--admindir").arg(root.join("var/lib/dpkg")).args(["-W", "-f", "${Version}", package]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rust_toolchain_tree_round_trips() {
    let d = datasets();
    let t = Imgctl::new();
    let r = round_trip(&t, &d.join("rust"), "rust");
    assert!(r["stats"]["files"].as_u64().unwrap() > 40_000);
}
