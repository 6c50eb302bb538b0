//! A mount with a writable layer: local edits kept, protected paths restored, the merge at a switch, `reset`, and common tools.
//!
//! Local edits survive a restart of imgfs; restores and conflicts are recorded with their
//! digests; tools that rename, link and replace directories work and never leave the layer.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{Imgctl, Mount, Server};

fn blake3_hex(data: &[u8]) -> String {
    format::Digest::of(data).to_hex()
}

/// Waits (at most `within`) until `path` reads `want`.
fn becomes(path: &Path, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path).ok().as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{} still reads {:?}, not {want:?}, after {within:?}", path.display(), std::fs::read_to_string(path));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events(mnt: &Mount) -> Vec<serde_json::Value> {
    let st = mnt.control("status");
    st["writable"]["recent"].as_array().cloned().unwrap_or_else(|| panic!("no writable layer in the status: {st}"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_writable_layer_keeps_local_edits_restores_protected_paths_and_merges_them_at_a_switch() {
    let t = Imgctl::new();
    let server = &Server::start(&t.path("server"));
    let src = t.path("src");
    for d in ["etc/ssh", "usr/bin", "var/lib"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let files = [
        ("etc/hostname", "base\n"),
        ("etc/motd", "welcome\n"),
        ("etc/app.conf", "threads=1\n"),
        ("etc/ssh/sshd_config", "PermitRootLogin no\n"),
        ("var/lib/state", "s\n"),
    ];
    for (p, c) in files {
        std::fs::write(src.join(p), c).unwrap();
    }
    std::fs::copy("/bin/cat", src.join("usr/bin/cat")).unwrap();
    let (image, channel) = ("wlayer", "wlayer/pilot");
    t.publish(server, &src, image, channel);
    let layer = t.path("layer");
    let args = ["--poll-seconds", "3600", "--writable", layer.to_str().unwrap(), "--protect", "etc/ssh/**", "--drift-interval", "1s"];
    let mnt = Mount::start_with(&[&server.url], channel, &t.path("cache"), &t.path("mnt"), &args);
    let p = mnt.point.clone();

    // Local edits through the mount, with the usual tools: sed -i writes a new file and
    // renames it over the image's; a log is appended to; an image file is removed.
    run(Command::new("sed").arg("-i").arg("s/base/kiosk-7/").arg(p.join("etc/hostname")));
    std::fs::write(p.join("etc/app.conf"), "threads=8\n").unwrap();
    std::fs::remove_file(p.join("etc/motd")).unwrap();
    std::fs::create_dir_all(p.join("var/log/app")).unwrap();
    for line in ["one\n", "two\n"] {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(p.join("var/log/app/app.log")).unwrap().write_all(line.as_bytes()).unwrap();
    }
    assert_eq!(std::fs::read_to_string(p.join("etc/hostname")).unwrap(), "kiosk-7\n");
    assert_eq!(std::fs::read_to_string(p.join("var/log/app/app.log")).unwrap(), "one\ntwo\n");
    assert!(!p.join("etc/motd").exists());
    let listing: Vec<String> = std::fs::read_dir(p.join("etc")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!listing.contains(&"motd".to_string()) && listing.contains(&"hostname".to_string()), "{listing:?}");
    // A program from the image still runs, and reads local files.
    assert_eq!(run(Command::new(p.join("usr/bin/cat")).arg(p.join("etc/app.conf"))), "threads=8\n");
    // The layer holds overlayfs's form: the file whole, the removal as a 0/0 whiteout.
    assert_eq!(std::fs::read_to_string(layer.join("upper/etc/app.conf")).unwrap(), "threads=8\n");
    let wh = std::fs::symlink_metadata(layer.join("upper/etc/motd")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) && std::os::unix::fs::MetadataExt::rdev(&wh) == 0);

    // A protected file changed through the mount comes back (at once: the mount sees the
    // change; the deadline allows for a loaded machine), removed too; the events
    // name the file and both digests.
    let sshd = p.join("etc/ssh/sshd_config");
    std::fs::write(&sshd, "PermitRootLogin yes\n").unwrap();
    becomes(&sshd, "PermitRootLogin no\n", Duration::from_secs(3));
    std::fs::remove_file(&sshd).unwrap();
    becomes(&sshd, "PermitRootLogin no\n", Duration::from_secs(3));
    // Changed behind the mount's back (in the layer's directory): restored within the
    // interval (1 s), checked with slack for a loaded machine.
    std::fs::write(layer.join("upper/etc/ssh/sshd_config"), "PermitRootLogin maybe\n").unwrap();
    becomes(&sshd, "PermitRootLogin no\n", Duration::from_secs(3));
    let ev = events(&mnt);
    let restored: Vec<&serde_json::Value> = ev.iter().filter(|e| e["kind"] == "restored").collect();
    assert_eq!(restored.len(), 3, "{ev:?}");
    assert!(restored.iter().all(|e| e["path"] == "etc/ssh/sshd_config" && e["generation"] == "wlayer@1"), "{ev:?}");
    assert_eq!(restored[0]["image"], blake3_hex(b"PermitRootLogin no\n"));
    assert_eq!(restored[0]["local"], blake3_hex(b"PermitRootLogin yes\n"));
    assert!(restored[1].get("local").is_none(), "a removal has no local digest: {ev:?}");
    assert_eq!(restored[2]["local"], blake3_hex(b"PermitRootLogin maybe\n"));
    // Unprotected edits are left alone by the drift check.
    assert_eq!(std::fs::read_to_string(p.join("etc/app.conf")).unwrap(), "threads=8\n");

    // Local changes outlive imgfs: unmounted and mounted again, they are all there.
    drop(mnt);
    let mnt = Mount::start_with(&[&server.url], channel, &t.path("cache"), &t.path("mnt"), &args);
    assert_eq!(std::fs::read_to_string(p.join("etc/hostname")).unwrap(), "kiosk-7\n");
    assert!(!p.join("etc/motd").exists());
    assert_eq!(std::fs::read_to_string(p.join("var/log/app/app.log")).unwrap(), "one\ntwo\n");

    // Generation 2 changes app.conf (which the machine changed too) and sshd_config, adds a
    // file, and leaves hostname and motd alone.
    std::fs::write(src.join("etc/app.conf"), "threads=2\n").unwrap();
    std::fs::write(src.join("etc/ssh/sshd_config"), "PermitRootLogin no\nX11Forwarding no\n").unwrap();
    std::fs::write(src.join("etc/new.conf"), "new\n").unwrap();
    t.publish(server, &src, image, channel);
    let up = mnt.control("update");
    assert_eq!((up["switched"].as_bool(), up["generation"].as_str()), (Some(true), Some("wlayer@2")), "{up}");
    // Kept: the edit of a file generation 2 did not change, the removal, the log.
    assert_eq!(std::fs::read_to_string(p.join("etc/hostname")).unwrap(), "kiosk-7\n");
    assert!(!p.join("etc/motd").exists());
    assert_eq!(std::fs::read_to_string(p.join("var/log/app/app.log")).unwrap(), "one\ntwo\n");
    // New from the image: the added file, the protected file's new version.
    assert_eq!(std::fs::read_to_string(p.join("etc/new.conf")).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(&sshd).unwrap(), "PermitRootLogin no\nX11Forwarding no\n");
    // The conflict: the machine's edit wins, and the event has all three digests.
    assert_eq!(std::fs::read_to_string(p.join("etc/app.conf")).unwrap(), "threads=8\n");
    let ev = events(&mnt);
    let conflict = ev.iter().find(|e| e["kind"] == "conflict").unwrap_or_else(|| panic!("no conflict recorded: {ev:?}"));
    assert_eq!(conflict["path"], "etc/app.conf");
    assert_eq!(conflict["generation"], "wlayer@2");
    assert_eq!(conflict["base"], blake3_hex(b"threads=1\n"));
    assert_eq!(conflict["image"], blake3_hex(b"threads=2\n"));
    assert_eq!(conflict["local"], blake3_hex(b"threads=8\n"));
    assert_eq!(ev.iter().filter(|e| e["kind"] == "conflict").count(), 1, "only app.conf conflicts: {ev:?}");
    // imgfs status shows the layer for people too.
    let text = run(Command::new(tests::bin("imgfs")).arg("status").arg(&p));
    assert!(text.lines().any(|l| l.starts_with("writable:") && l.contains("local changes")), "{text}");
    assert!(text.contains("conflict etc/app.conf"), "{text}");

    // reset PATH takes the image's version of one path; reset drops every local change.
    let out = run(Command::new(tests::bin("imgfs")).arg("reset").arg(&p).arg(p.join("etc/app.conf")));
    assert!(out.contains("dropped 1"), "{out}");
    assert_eq!(std::fs::read_to_string(p.join("etc/app.conf")).unwrap(), "threads=2\n");
    assert_eq!(std::fs::read_to_string(p.join("etc/hostname")).unwrap(), "kiosk-7\n");
    // Three changes are left: hostname, the removal of motd, the log.
    let out = run(Command::new(tests::bin("imgfs")).arg("reset").arg(&p));
    assert!(out.contains("dropped 3"), "{out}");
    assert_eq!(std::fs::read_to_string(p.join("etc/hostname")).unwrap(), "base\n");
    assert_eq!(std::fs::read_to_string(p.join("etc/motd")).unwrap(), "welcome\n");
    assert!(!p.join("var/log").exists());
    assert_eq!(std::fs::read_dir(layer.join("upper")).unwrap().count(), 0, "the layer is empty after a full reset");
    // Every event is a whole line of the log.
    let log = std::fs::read_to_string(layer.join("events.jsonl")).unwrap();
    let kinds: Vec<String> = log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "reset").count(), 1 + 3, "{kinds:?}");
}

#[test]
fn a_writable_layer_works_for_common_tools_keeps_set_id_bits_and_never_leaves_itself() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let t = Imgctl::new();
    let server = &Server::start(&t.path("server"));
    let src = t.path("src");
    for d in ["etc/conf.d", "usr/bin", "tmp"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("etc/conf.d/a.conf"), "a\n").unwrap();
    std::fs::write(src.join("etc/conf.d/b.conf"), "b\n").unwrap();
    std::fs::write(src.join("etc/name"), "image\n").unwrap();
    std::fs::copy("/bin/cat", src.join("usr/bin/suid-cat")).unwrap();
    std::fs::set_permissions(src.join("usr/bin/suid-cat"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    t.publish(server, &src, "wtools", "wtools/pilot");
    let layer = t.path("layer");
    let args = ["--poll-seconds", "3600", "--writable", layer.to_str().unwrap()];
    let mnt = Mount::start_with(&[&server.url], "wtools/pilot", &t.path("cache"), &t.path("mnt"), &args);
    let p = mnt.point.clone();
    let sh = |script: &str| run(Command::new("sh").arg("-c").arg(script).env("P", &p));

    // A directory of the image removed and made again shows only what was made in it.
    sh("rm -r \"$P/etc/conf.d\" && mkdir \"$P/etc/conf.d\" && echo c > \"$P/etc/conf.d/c.conf\"");
    let names = sh("ls \"$P/etc/conf.d\"");
    assert_eq!(names, "c.conf\n");
    // A file appended to (copied up) and then renamed reads at its new name; the old is gone.
    sh("echo more >> \"$P/etc/name\" && mv \"$P/etc/name\" \"$P/etc/renamed\"");
    assert_eq!(std::fs::read_to_string(p.join("etc/renamed")).unwrap(), "image\nmore\n");
    assert!(!p.join("etc/name").exists());
    // A file made with set-id bits keeps them; a hard link to an image's set-uid program
    // leaves its bits alone.
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o4755).open(p.join("tmp/made")).unwrap();
    assert_eq!(std::fs::metadata(p.join("tmp/made")).unwrap().mode() & 0o7777, 0o4755);
    std::fs::hard_link(p.join("usr/bin/suid-cat"), p.join("usr/bin/suid-link")).unwrap();
    for f in ["usr/bin/suid-cat", "usr/bin/suid-link"] {
        assert_eq!(std::fs::metadata(p.join(f)).unwrap().mode() & 0o7777, 0o4755, "{f}");
    }
    assert_eq!(std::fs::read(p.join("usr/bin/suid-link")).unwrap(), std::fs::read("/bin/cat").unwrap());
    // A directory renamed while a shell sits in it, and a symlink to a host directory put in
    // its place: the shell's new file lands in the renamed directory, never on the host.
    let victim = t.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let script = format!("mkdir \"$P/tmp/d\" && cd \"$P/tmp/d\" && mv ../d ../e && ln -s {} ../d && echo x > file", victim.display());
    sh(&script);
    assert_eq!(std::fs::read_to_string(p.join("tmp/e/file")).unwrap(), "x\n");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "a file escaped the layer");
    assert_eq!(std::fs::read_link(p.join("tmp/d")).unwrap(), victim);
    // An image directory cannot be renamed (EXDEV, as overlayfs): mv copies it instead.
    sh("mv \"$P/usr/bin\" \"$P/usr/bin2\"");
    assert!(p.join("usr/bin2/suid-cat").exists() && !p.join("usr/bin").exists());
    // df sees the layer's file system.
    let df = sh("df -P \"$P\" | tail -1");
    assert!(df.split_whitespace().nth(3).is_some_and(|avail| avail.parse::<u64>().unwrap() > 0), "{df}");
}

#[test]
fn a_mount_without_a_writable_layer_stays_read_only() {
    let t = Imgctl::new();
    let server = &Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/motd"), "hi\n").unwrap();
    t.publish(server, &src, "wlayer-ro", "wlayer-ro/pilot");
    let mnt = Mount::start_with(&[&server.url], "wlayer-ro/pilot", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"]);
    let e = std::fs::write(mnt.point.join("etc/motd"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::create_dir(mnt.point.join("new")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let out = Command::new(tests::bin("imgfs")).arg("reset").arg(&mnt.point).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no writable layer"), "{}", String::from_utf8_lossy(&out.stderr));
}
