//! `imgctl mount` and `imgctl umount`: a generation of the local store as a read-only FUSE mount.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{bin, build_special_tree, compare_trees, Imgctl};

#[test]
fn a_generation_mounts_read_only_with_every_field_and_unmounts() {
    let t = Imgctl::new();
    let src = t.path("src");
    build_special_tree(&src);
    t.import(&src, "img");
    let dir = t.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let mut child = Command::new(bin("imgctl"))
        .arg("--store")
        .arg(&t.store)
        .args(["mount", "img@1"])
        .arg(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The handshake: imgctl says when the mount is up.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("imgctl mount said nothing").unwrap();
    assert!(first.contains("mounted img@1"), "{first}");

    let diffs = compare_trees(&src, &dir);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let err = std::fs::write(dir.join("new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    t.ok(["umount", dir.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "imgctl mount still running after umount");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the mount point is empty again");
}

#[test]
fn an_unknown_generation_is_refused_before_mounting() {
    let t = Imgctl::new();
    let dir = t.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = t.run(["mount", "nothing@3", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
