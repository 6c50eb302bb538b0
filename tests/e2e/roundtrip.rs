//! Import, export and compare: every metadata field survives, identity is deterministic, re-imports read only what changed.
//!
//! Tar archives import like the directory they came from.

use std::fs;
use std::process::Command;

use tests::{build_special_tree, compare_trees, Imgctl};

#[test]
fn special_tree_round_trips_with_every_field() {
    let t = Imgctl::new();
    let src = t.path("src");
    build_special_tree(&src);
    let report = t.import(&src, "special");
    assert_eq!(report["generation"], "special@1");
    t.ok(["export", "special@1", t.path("out").to_str().unwrap()]);
    let diffs = compare_trees(&src, &t.path("out"));
    assert!(diffs.is_empty(), "differences after round trip:\n{}", diffs.join("\n"));
    // The sparse file came back sparse: 100 MB logical, little allocated.
    let md = fs::metadata(t.path("out/sparse.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(md.size(), 100 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "sparse file exported with {} blocks", md.blocks());
}

#[test]
fn same_tree_gives_same_root_in_any_store_and_reimport_reads_nothing() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src");
    build_special_tree(&src);
    let (a, b) = (Imgctl::new(), Imgctl::new());
    let first = a.import(&src, "img");
    let other_store = b.import(&src, "img");
    assert_eq!(first["root"], other_store["root"], "root digest depends on the store");
    // Past the index's racy window (2 s), the files just created count as settled: the
    // imports that follow run on a clock 3 s ahead.
    let clock = tests::TestClock::new(&a.path("clock"));
    clock.advance(3);
    a.use_clock(&clock);
    let again = a.import(&src, "img");
    let again2 = a.import(&src, "img");
    assert_eq!(again["root"], first["root"]);
    assert_eq!(again2["files_read"], 0, "unchanged re-import read files: {again2}");
    assert_eq!(again2["stats"]["new_objects"], 0);
    assert!(again2["files_reused"].as_u64().unwrap() > 10);
    // One changed file is the only one read, and the root moves.
    fs::write(src.join("dir/sub/text"), "changed\n").unwrap();
    let changed = a.import(&src, "img");
    assert_eq!(changed["files_read"], 1, "{changed}");
    assert_ne!(changed["root"], first["root"]);
    assert_eq!(changed["generation"], "img@4");
}

fn tar_of(src: &std::path::Path, dest: &std::path::Path, extra: &[&str]) {
    let status = Command::new("tar")
        .args(["--format=posix", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner"])
        .args(extra)
        .arg("-C")
        .arg(src)
        .arg("-cf")
        .arg(dest)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
}

#[test]
fn tar_archives_import_like_the_directory() {
    let t = Imgctl::new();
    let src = t.path("src");
    build_special_tree(&src);
    // tar cannot carry sockets, and stores sparse files dense without -S; leave them out.
    fs::remove_file(src.join("socket")).unwrap();
    fs::remove_file(src.join("sparse.img")).unwrap();
    let from_dir = t.import(&src, "dir");
    for (name, extra) in [("plain.tar", vec![]), ("gz.tar.gz", vec!["-z"]), ("zst.tar.zst", vec!["--zstd"])] {
        let archive = t.path(name);
        tar_of(&src, &archive, &extra);
        let from_tar = t.import(&archive, "tar");
        assert_eq!(from_tar["root"], from_dir["root"], "{name} imports differently from the directory");
    }
    t.ok(["export", "tar@latest", t.path("out").to_str().unwrap()]);
    let diffs = compare_trees(&src, &t.path("out"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn ls_cat_log_and_diff_show_the_generation() {
    let t = Imgctl::new();
    let src = t.path("src");
    build_special_tree(&src);
    t.import(&src, "img");
    fs::write(src.join("small.txt"), b"new content\n").unwrap();
    fs::write(src.join("added"), b"x").unwrap();
    fs::remove_file(src.join("owned")).unwrap();
    t.import(&src, "img");

    let ls = t.ok(["ls", "img@1:dir"]);
    assert!(ls.lines().any(|l| l.ends_with(" big.bin") && l.contains(&(3 << 20).to_string())), "{ls}");
    let root = t.ok(["ls", "img@1"]);
    assert!(root.lines().any(|l| l.starts_with("-rwsr-xr-x") && l.ends_with("setuid-bin")), "{root}");
    assert!(root.lines().any(|l| l.starts_with('c') && l.contains("1, 3") && l.ends_with(" null")), "{root}");
    assert!(root.contains("loop-a -> loop-b"), "{root}");
    assert!(root.contains("caf\\xe9-\\xff"), "non-UTF-8 name not escaped: {root}");
    assert_eq!(t.ok(["cat", "img@1:small.txt"]), "hello imaged\n");
    assert_eq!(t.ok(["cat", "img@latest:/small.txt"]), "new content\n");
    let log = t.ok(["log", "img"]);
    assert!(log.lines().next().unwrap().starts_with("img@2"), "{log}");
    assert_eq!(log.lines().count(), 2);
    let diff = t.ok(["diff", "img@1", "img@2"]);
    assert!(diff.contains("M small.txt (13 -> 12 bytes; content"), "{diff}");
    assert!(diff.contains("A added (1 bytes)"), "{diff}");
    assert!(diff.contains("D owned (18 bytes)"), "{diff}");
    assert!(!diff.contains("big.bin"), "unchanged file reported: {diff}");
    // The manifest digest addresses a generation too.
    let log_json: serde_json::Value = serde_json::from_str(&t.ok(["--json", "log", "img"])).unwrap();
    let digest = log_json[1]["manifest"].as_str().unwrap().to_string();
    assert_eq!(t.ok(["cat", &format!("{digest}:small.txt")]), "hello imaged\n");
}
