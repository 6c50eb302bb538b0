//! The store under damage: corrupt objects moved aside, killed writers' leftovers cleared, no partial generation after a kill -9.
//!
//! Corrupt objects are found and moved aside, leftovers of killed writers are cleared, and a
//! kill -9 at any moment of an import never publishes a partial generation.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

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

/// Runs `imgctl import` of `src` as `img` with `IMAGED_FAULT=fault`: true if it was killed
/// at that point, false if it finished first (the point lies past the end of the import).
fn import_killed_at(t: &Imgctl, src: &Path, fault: &str) -> bool {
    let status = Command::new(tests::bin("imgctl"))
        .arg("--store")
        .arg(&t.store)
        .args(["import", src.to_str().unwrap(), "--image", "img"])
        .env("IMAGED_FAULT", fault)
        .env_remove("IMGCTL_STORE")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    if status.success() {
        return false;
    }
    assert_eq!(status.signal(), Some(9), "{fault}: the import failed without being killed: {status}");
    true
}

#[test]
fn kill_during_import_never_publishes_a_partial_generation() {
    let src = tempfile::tempdir().unwrap();
    let src = src.path().join("src");
    build_special_tree(&src);
    for i in 0..40 {
        fs::write(src.join(format!("bulk-{i}")), noise(512 * 1024, i)).unwrap();
    }
    // Every round imports into an empty store and stops at one point: each sync in turn,
    // then writes spread from the first to past the last (a fresh import has about 7 syncs
    // and 330 writes), until an import finishes.
    let sweeps: [(&str, &[u64]); 2] =
        [("sync", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), ("write", &[1, 2, 8, 32, 128, 256, 320, 2048, 8192])];
    for (kind, points) in sweeps {
        let mut finished = false;
        for at in points {
            let fault = format!("{kind}:{at}");
            let t = Imgctl::new();
            finished = !import_killed_at(&t, &src, &fault);
            // Whatever the moment, every published generation is complete and readable.
            let verify = t.run(["verify"]);
            assert!(verify.status.success(), "{fault} (finished: {finished}): {}", String::from_utf8_lossy(&verify.stdout));
            let published = fs::read_dir(t.store.join("refs/img")).map(|d| d.count()).unwrap_or(0);
            if *at == 1 {
                assert_eq!(published, 0, "{fault}: killed at its first point, the import cannot have published");
            }
            if finished {
                assert!(published > 0, "{fault}: the import finished but published nothing");
            } else {
                // The killed import's leftovers do not stop the next one.
                t.import(&src, "img");
                assert!(t.run(["verify"]).status.success(), "{fault}: verify after a completing import");
            }
            let out = t.path("out");
            t.ok(["export", "img@latest", out.to_str().unwrap()]);
            let diffs = tests::compare_trees(&src, &out);
            assert!(diffs.is_empty(), "{fault}: {}", diffs.join("\n"));
            if finished {
                break;
            }
        }
        assert!(finished, "no import finished: {kind} points go further than {points:?}");
    }
}
