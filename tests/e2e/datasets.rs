//! Round trips on real data: the debootstrapped Debian roots and the Rust toolchain tree.
//!
//! The data sets are built by `shared/datasets/make-datasets.sh` (scripts/test.sh builds them
//! first).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use format::Digest;
use tests::{compare_trees, ok_json, Imgctl};

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
}

#[test]
fn rust_toolchain_tree_round_trips() {
    let d = datasets();
    let t = Imgctl::new();
    let r = round_trip(&t, &d.join("rust"), "rust");
    assert!(r["stats"]["files"].as_u64().unwrap() > 40_000);
}
