//! Bad input gets a clear error, a documented exit code, and leaves nothing published.

use std::fs;
use std::path::Path;
use std::process::Command;

use tests::{noise, Imgctl};

const NOT_FOUND: i32 = 3;
const BAD_INPUT: i32 = 5;

/// Writes a tar whose entry names are set byte for byte, bypassing the builder's own checks.
fn raw_tar(path: &Path, entries: &[(&str, tar::EntryType, &str, &[u8])]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.finish().unwrap();
}

fn assert_refused(t: &Imgctl, archive: &Path, code: i32, needle: &str) {
    let out = t.run(["import", archive.to_str().unwrap(), "--image", "evil"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "error does not mention {needle:?}: {err}");
    // Nothing was published.
    let log = t.run(["log", "evil"]);
    assert_eq!(log.status.code(), Some(NOT_FOUND), "a generation was published: {}", String::from_utf8_lossy(&log.stdout));
}

#[test]
fn tar_entries_escaping_the_root_are_refused() {
    use tar::EntryType::*;
    let t = Imgctl::new();
    let cases: Vec<(&str, Vec<(&str, tar::EntryType, &str, &[u8])>, &str)> = vec![
        ("dotdot.tar", vec![("../escape", Regular, "", b"x")], "'..'"),
        ("nested-dotdot.tar", vec![("a/../../etc/passwd", Regular, "", b"x")], "'..'"),
        ("absolute.tar", vec![("/etc/passwd", Regular, "", b"x")], "absolute"),
        // A symlink to outside, then a file "through" it: extracting would write /etc/passwd.
        ("symlink-trick.tar", vec![("link", Symlink, "/etc", b""), ("link/passwd", Regular, "", b"x")], "not a directory"),
        ("hardlink-out.tar", vec![("h", Link, "../../etc/shadow", b"")], "'..'"),
        ("hardlink-missing.tar", vec![("h", Link, "nothing-here", b"")], "hard link"),
    ];
    for (name, entries, needle) in cases {
        let p = t.path(name);
        raw_tar(&p, &entries);
        assert_refused(&t, &p, BAD_INPUT, needle);
    }
}

#[test]
fn truncated_and_corrupt_archives_are_refused() {
    let t = Imgctl::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), noise(200_000, 1)).unwrap();
    fs::write(src.join("b"), noise(200_000, 2)).unwrap();
    let full = t.path("full.tar.gz");
    assert!(Command::new("tar").args(["-czf"]).arg(&full).arg("-C").arg(&src).arg(".").status().unwrap().success());
    let bytes = fs::read(&full).unwrap();
    let cut = t.path("cut.tar.gz");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&t, &cut, BAD_INPUT, "corrupt or truncated");
    let plain = t.path("full.tar");
    assert!(Command::new("tar").args(["-cf"]).arg(&plain).arg("-C").arg(&src).arg(".").status().unwrap().success());
    let bytes = fs::read(&plain).unwrap();
    let cut = t.path("cut.tar");
    fs::write(&cut, &bytes[..700]).unwrap();
    assert_refused(&t, &cut, BAD_INPUT, "corrupt or truncated");
}

#[test]
fn unreadable_file_is_named_and_nothing_is_published() {
    // Root reads everything, so run imgctl as nobody with a store nobody owns.
    let t = Imgctl::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    fs::write(src.join("secret"), b"hidden").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    for p in [t.dir.path(), src.as_path()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = t.path("nobody-store");
    fs::create_dir(&store).unwrap();
    nix::unistd::chown(&store, Some(65534.into()), Some(65534.into())).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(tests::bin("imgctl"))
        .arg("--store")
        .arg(&store)
        .args(["import", src.to_str().unwrap(), "--image", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("secret") && err.contains("Permission denied"), "{err}");
    assert!(!store.join("refs/x").exists(), "a ref was written");
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_previous_generation() {
    let t = Imgctl::new();
    let mnt = t.path("small-fs");
    fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    let store = mnt.join("store");
    let run = |src: &Path| {
        Command::new(tests::bin("imgctl"))
            .arg("--store")
            .arg(&store)
            .args(["import", src.to_str().unwrap(), "--image", "img", "--level", "0"])
            .output()
            .unwrap()
    };
    let small = t.path("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("f"), b"fits").unwrap();
    let first = run(&small);
    let big = t.path("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("f"), noise(4 << 20, 9)).unwrap();
    let second = run(&big);
    let tmp_left = fs::read_dir(store.join("tmp")).map(|d| d.count()).unwrap_or(0);
    let refs: Vec<_> = fs::read_dir(store.join("refs/img")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let verify = Command::new(tests::bin("imgctl")).arg("--store").arg(&store).args(["verify"]).output().unwrap();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(tmp_left, 0, "a half-written object was left in tmp/");
    assert_eq!(refs, vec![std::ffi::OsString::from("1")], "only the first generation may be published");
    assert!(verify.status.success(), "store damaged after a full disk: {}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn bad_names_and_unknown_generations_have_their_own_exit_codes() {
    let t = Imgctl::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    let out = t.run(["import", src.to_str().unwrap(), "--image", "../bad"]);
    assert_eq!(out.status.code(), Some(BAD_INPUT), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid image name"));
    for args in [vec!["ls", "nope@1"], vec!["cat", "nope@latest:x"], vec!["log", "nope"]] {
        let out = t.run(&args);
        assert_eq!(out.status.code(), Some(NOT_FOUND), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    t.import(&src, "img");
    let out = t.run(["cat", "img@1:missing/file"]);
    assert_eq!(out.status.code(), Some(NOT_FOUND));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such path: missing/file"));
}

#[test]
fn a_bad_channel_name_is_refused_before_any_request() {
    let t = Imgctl::new();
    // Nothing listens on the server's port: a request would fail as unreachable (7).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("http://127.0.0.1:{port}");
    for args in
        [vec!["channel", "get", "os/Stable"], vec!["channel", "set", "os/../x", "img@1"], vec!["channel", "promote", "os/a", "a//b"]]
    {
        let out = t.run(args.iter().copied().chain(["--server", server.as_str()]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(BAD_INPUT), "{args:?}: {err}");
        assert!(err.contains("invalid channel name"), "{args:?}: {err}");
    }
}
