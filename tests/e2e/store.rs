//! The store under damage: corrupt objects moved aside, killed writers' leftovers cleared, no partial generation after a kill -9.
//!
//! Corrupt objects are found and moved aside, leftovers of killed writers are cleared, and a
//! kill -9 at any moment of an import never publishes a partial generation.

use std::fs;
use std::process::Command;
use std::time::Duration;

use tests::{build_special_tree, noise, Imgctl};

const VERIFY_FAILED: i32 = 4;

#[test]
fn corrupt_object_is_reported_quarantined_and_restored_by_reimport() {
    let t = Imgctl::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("victim"), noise(100_000, 5)).unwrap();
    fs::write(src.join("other"), b"other").unwrap();
    t.import(&src, "img");
    assert!(t.ok(["verify"]).contains("all good"));

    // Flip one byte of the victim's object.
    let digest = blake3::hash(&noise(100_000, 5)).to_hex().to_string();
    tests::corrupt_object(&t.store, &digest);

    let out = t.run(["cat", "img@1:victim"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("object {digest}")), "{}", String::from_utf8_lossy(&out.stderr));
    let dry = t.run(["verify", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(VERIFY_FAILED));
    assert!(tests::store_objects(&t.store).contains(&digest), "dry run changed the store");
    let out = t.run(["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(VERIFY_FAILED), "{text}");
    assert!(text.contains(&format!("corrupt object {digest}")), "{text}");
    assert!(text.contains("generation img@1 is missing 1 objects"), "{text}");
    assert!(!tests::store_objects(&t.store).contains(&digest) && t.store.join("quarantine").join(&digest).exists());

    // Re-importing the source restores the object (in a new generation; img@1 is whole again).
    t.import(&src, "img");
    let out = t.run(["verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(t.ok(["cat", "img@1:other"]), "other");
}

#[test]
fn leftovers_of_a_killed_writer_are_cleared_by_verify() {
    let t = Imgctl::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    t.import(&src, "img");
    fs::write(t.store.join("tmp/deadbeef.123.0"), b"half an object").unwrap();
    let out = t.ok(["verify"]);
    assert!(out.contains("removed 1 temporary files"), "{out}");
    assert_eq!(fs::read_dir(t.store.join("tmp")).unwrap().count(), 0);
}

#[test]
fn kill_during_import_never_publishes_a_partial_generation() {
    let t = Imgctl::new();
    let src = t.path("src");
    build_special_tree(&src);
    for i in 0..40 {
        fs::write(src.join(format!("bulk-{i}")), noise(512 * 1024, i)).unwrap();
    }
    for (round, delay_ms) in [5u64, 20, 60, 150, 400].into_iter().enumerate() {
        let mut child = Command::new(tests::bin("imgctl"))
            .arg("--store")
            .arg(&t.store)
            .args(["import", src.to_str().unwrap(), "--image", "img", "--level", "19"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let finished = child.wait().unwrap().success();
        // Whatever the moment, every published generation is complete and readable.
        let verify = t.run(["verify"]);
        assert!(
            verify.status.success(),
            "round {round} (kill after {delay_ms} ms, finished: {finished}): {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let published = fs::read_dir(t.store.join("refs/img")).map(|d| d.count()).unwrap_or(0);
        if published > 0 {
            t.ok(["export", "img@latest", t.path(&format!("out{round}")).to_str().unwrap()]);
            let diffs = tests::compare_trees(&src, &t.path(&format!("out{round}")));
            assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        }
    }
}
