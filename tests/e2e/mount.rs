//! imgfs against a real imaged over HTTP on 127.0.0.1, mounted for real through FUSE:
//! every field of every kind of file, and a Debian root whose dpkg runs from the mount.

use std::path::PathBuf;
use std::process::Command;

use tests::{build_special_tree, compare_trees, ok_json, Imgctl, Mount, Server};

fn publish(t: &Imgctl, server: &Server, src: &std::path::Path, image: &str, channel: &str) {
    t.import(src, image);
    ok_json(t.remote(server, &["--json", "push", &format!("{image}@latest")]));
    ok_json(t.remote(server, &["--json", "channel", "set", channel, &format!("{image}@latest")]));
}

fn assert_same(src: &std::path::Path, mnt: &std::path::Path) {
    let diffs = compare_trees(src, mnt);
    assert!(diffs.is_empty(), "{} differences, first: {}", diffs.len(), diffs.iter().take(10).cloned().collect::<Vec<_>>().join("\n"));
}

#[test]
fn every_kind_of_file_and_metadata_reads_back_through_the_mount() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    build_special_tree(&src);
    publish(&t, &server, &src, "special", "test/special");
    let mnt = Mount::start(&[&server.url], "test/special", &t.path("cache"), &t.path("mnt"));
    assert!(mnt.banner.contains("special@1"), "{}", mnt.banner);
    assert_same(&src, &mnt.point);
    // Read-only: nothing can be created or changed.
    assert!(std::fs::write(mnt.point.join("new-file"), b"x").is_err());
    assert!(std::fs::remove_file(mnt.point.join("small.txt")).is_err());
}

#[test]
fn a_debian_root_runs_dpkg_from_the_mount() {
    let gen1 = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into())).join("gen1");
    assert!(gen1.join("usr/bin/dpkg").exists(), "dataset gen1 missing: run shared/datasets/make-datasets.sh");
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    publish(&t, &server, &gen1, "debian", "os/stable");
    let mnt = Mount::start(&[&server.url], "os/stable", &t.path("cache"), &t.path("mnt"));
    let dpkg = |root: &std::path::Path| {
        let out = Command::new("chroot").arg(root).args(["/usr/bin/dpkg", "-l"]).output().unwrap();
        assert!(out.status.success(), "dpkg -l in {}: {}", root.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = dpkg(&mnt.point);
    assert!(listed.lines().filter(|l| l.starts_with("ii ")).count() > 50, "{listed}");
    assert_eq!(listed, dpkg(&gen1), "dpkg -l differs between the mount and the source tree");
    assert_same(&gen1, &mnt.point);
}
