//! The endpoint's cache on a real mount: size limit and LRU eviction, rollback spares, pins, resumable prefetch, mount(8) and fstab.
//!
//! Against a real imaged and a real FUSE mount: the size limit and LRU eviction, the previous
//! generation spared for an offline rollback, pins, prefetch with a bandwidth cap that resumes
//! after a crash, and mounting through mount(8) and an fstab line.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{bin, compare_trees, noise, store_objects, Imgctl, Mount, Server};

const MIB: usize = 1 << 20;

/// `n` files of `size` bytes of noise named `{prefix}{i}`, seeded by `seed`.
fn write_files(dir: &Path, prefix: &str, n: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("{prefix}{i}")), noise(size, seed * 1000 + i as u64)).unwrap();
    }
}

fn used(status: &serde_json::Value) -> u64 {
    status["cache"]["used_bytes"].as_u64().unwrap()
}

fn read_same(src: &Path, mnt: &Path, name: &str) {
    let got = std::fs::read(mnt.join(name)).unwrap_or_else(|e| panic!("reading {name} through the mount: {e}"));
    assert!(got == std::fs::read(src.join(name)).unwrap(), "{name} differs from the source");
}

#[test]
fn the_cache_keeps_its_limit_evicting_old_data_but_sparing_the_previous_generation() {
    let t = Imgctl::new();
    let mut server = Server::start(&t.path("server"));
    let src = t.path("src");
    write_files(&src, "a", 8, MIB, 1);
    t.publish(&server, &src, "lab", "lab/stable");
    let cache = t.path("cache");
    let mnt = Mount::start_with(&[&server.url], "lab/stable", &cache, &t.path("mnt"), &["--cache-size", "6M", "--min-free", "0%"]);
    for i in 0..4 {
        read_same(&src, &mnt.point, &format!("a{i}"));
    }
    let gen1_cached = store_objects(&cache.join("store"));

    // Generation 2 has only new data, more than the limit; reading it all must evict.
    let src2 = t.path("src2");
    write_files(&src2, "b", 8, MIB, 2);
    t.publish(&server, &src2, "lab", "lab/stable");
    assert_eq!(mnt.control("update")["generation"], "lab@2");
    for i in 0..8 {
        read_same(&src2, &mnt.point, &format!("b{i}"));
    }
    let st = mnt.wait_status(20, |st| used(st) <= 6 * MIB as u64);
    assert!(used(&st) <= 6 * MIB as u64, "the cache holds {} bytes, over its 6 MiB limit: {st}", used(&st));
    assert!(st["cache"]["evicted_objects"].as_u64().unwrap() > 0, "{st}");
    let now = store_objects(&cache.join("store"));
    let lost: Vec<_> = gen1_cached.difference(&now).collect();
    assert!(lost.is_empty(), "{} objects of the previous generation were evicted", lost.len());
    // Evicted data of the current generation comes back from the server.
    for i in 0..8 {
        read_same(&src2, &mnt.point, &format!("b{i}"));
    }

    // Offline, rollback finds generation 1 as it was cached.
    server.kill();
    assert_eq!(mnt.control("rollback")["generation"], "lab@1");
    for i in 0..4 {
        read_same(&src, &mnt.point, &format!("a{i}"));
    }
    let err = std::fs::read(mnt.point.join("a7")).expect_err("a7 was never cached and the server is gone");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

/// SHA-256 of a file read through a shared read-only mapping.
fn mmap_sha256(path: &Path) -> String {
    let out = Command::new("python3")
        .args(["-c", "import mmap,sys,hashlib; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print(hashlib.sha256(m).hexdigest())"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn with_passthrough_fully_cached_files_get_plain_copies_and_read_the_same() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    write_files(&src, "big", 4, 3 * MIB + 12345, 6);
    std::fs::write(src.join("small"), b"too small for a copy\n").unwrap();
    // A sparse file: its copy keeps the hole.
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(8 * MIB as u64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &noise(100_000, 7), 5 * MIB as u64).unwrap();
    drop(f);
    t.publish(&server, &src, "ws", "ws/stable");
    let mnt = Mount::start_with(&[&server.url], "ws/stable", &t.path("cache"), &t.path("mnt"), &["--passthrough"]);
    let names = ["big0", "big1", "big2", "big3", "small", "sparse"];
    for n in names {
        read_same(&src, &mnt.point, n);
    }
    // Released, fully cached and big enough: copied in the background.
    let st = mnt.wait_status(20, |st| st["cache"]["plain_copies"].as_u64() == Some(5));
    assert_eq!(st["cache"]["plain_copies"], 5, "{st}");
    // Now opened in passthrough mode: the same bytes by read and by mmap, with the server gone.
    let server_url = server.url.clone();
    drop(server);
    for n in names {
        read_same(&src, &mnt.point, n);
    }
    assert_eq!(mmap_sha256(&mnt.point.join("big2")), mmap_sha256(&src.join("big2")));
    // Two opens at once share the backing file; a copy removed under an open file changes nothing.
    let a = std::fs::File::open(mnt.point.join("big0")).unwrap();
    let b = std::fs::File::open(mnt.point.join("big0")).unwrap();
    std::fs::remove_dir_all(t.path("cache").join("files")).unwrap();
    let st = mnt.control("status");
    assert!(st["opens"]["passthrough"].as_u64().unwrap() >= 7, "the copies were not used: {st}");
    let mut buf = vec![0u8; 3 * MIB + 12345];
    std::os::unix::fs::FileExt::read_exact_at(&a, &mut buf, 0).unwrap();
    assert!(buf == std::fs::read(src.join("big0")).unwrap());
    std::os::unix::fs::FileExt::read_exact_at(&b, &mut buf, 0).unwrap();
    assert!(buf == std::fs::read(src.join("big0")).unwrap());
    assert_eq!(st["opens"]["mode"], "passthrough", "{st}");
    drop((a, b, mnt));

    // Mounted again in the default mode (offline, from the cache): the kernel opens files
    // without asking imgfs; files read to their end get plain copies again (the ones above
    // were removed), which READs then read instead of decoding objects: the same bytes.
    let mnt = Mount::start(&[&server_url], "ws/stable", &t.path("cache"), &t.path("mnt"));
    for n in names {
        read_same(&src, &mnt.point, n);
    }
    let st = mnt.wait_status(20, |st| st["cache"]["plain_copies"].as_u64() == Some(5));
    assert_eq!(st["cache"]["plain_copies"], 5, "{st}");
    // The kernel forgets the pages it has, so the reads below reach imgfs.
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    for n in names {
        read_same(&src, &mnt.point, n);
    }
    assert_eq!(mmap_sha256(&mnt.point.join("big1")), mmap_sha256(&src.join("big1")));
    let st = mnt.control("status");
    assert_eq!(st["opens"]["mode"], "kernel", "{st}");
    assert_eq!(st["opens"]["fuse"], 0, "imgfs was asked to open files: {st}");
}

#[test]
fn a_pin_keeps_a_generation_whole_over_the_limit_until_unpinned() {
    let t = Imgctl::new();
    let mut server = Server::start(&t.path("server"));
    let src = t.path("src");
    write_files(&src, "f", 8, MIB, 3);
    t.publish(&server, &src, "kiosk", "kiosk/stable");
    let mnt =
        Mount::start_with(&[&server.url], "kiosk/stable", &t.path("cache"), &t.path("mnt"), &["--cache-size", "4M", "--min-free", "0%"]);

    let start = Instant::now();
    let pinned = mnt.control_with("pin", &["current", "--max-rate", "4M"]);
    let took = start.elapsed();
    assert_eq!(pinned["done"], true, "{pinned}");
    assert_eq!(pinned["pinned"], true, "{pinned}");
    assert_eq!(pinned["fetched"]["objects_done"], pinned["fetched"]["objects_total"], "{pinned}");
    // 8 MiB under a 4 MiB/s cap: the first half-second batch is free, the rest is paced.
    assert!(took >= Duration::from_millis(1400), "8 MiB at most 4 MiB/s took only {took:?}");

    // Over the limit, but pinned: nothing goes (once the keeper has looked: two more of its
    // rounds, so that one began after the pin), and it all reads with the server gone.
    let rounds = |st: &serde_json::Value| st["cache"]["keeper_rounds"].as_u64().unwrap();
    let pinned_at = rounds(&mnt.control("status"));
    let st = mnt.wait_status(20, |st| rounds(st) >= pinned_at + 2);
    assert!(rounds(&st) >= pinned_at + 2, "the keeper did not look at the cache within 20 s: {st}");
    assert!(used(&st) > 8 * MIB as u64, "{st}");
    assert_eq!(st["pins"][0]["generation"], "kiosk@1", "{st}");
    server.kill();
    let diffs = compare_trees(&src, &mnt.point);
    assert!(diffs.is_empty(), "offline after a pin: {diffs:?}");

    let un = mnt.control_with("unpin", &["kiosk@1"]);
    assert_eq!(un["unpinned"], "kiosk@1", "{un}");
    let st = mnt.wait_status(20, |st| used(st) <= 4 * MIB as u64);
    assert!(used(&st) <= 4 * MIB as u64, "unpinned, the cache must shrink to its limit: {st}");
    assert_eq!(st["pins"].as_array().map(Vec::len), Some(0), "{st}");
}

#[test]
fn a_prefetch_killed_with_its_mount_resumes_at_the_next_mount_and_then_works_offline() {
    let t = Imgctl::new();
    let mut server = Server::start(&t.path("server"));
    let src = t.path("src");
    write_files(&src, "p", 16, MIB / 2, 4);
    t.publish(&server, &src, "field", "field/stable");
    let cache = t.path("cache");
    let mut mnt = Mount::start(&[&server.url], "field/stable", &cache, &t.path("mnt"));
    let mut client = Command::new(bin("imgfs"))
        .args(["prefetch"])
        .arg(&mnt.point)
        .args(["current", "--max-rate", "2M"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a quarter of the 8 MiB is in (its progress, as the client sees it), well
    // before all of it is (4 s at 2 MiB/s).
    let quarter = |st: &serde_json::Value| {
        let p = &st["prefetching"][0]["progress"];
        p["objects_done"].as_u64().unwrap_or(0) > 0 && p["bytes_done"].as_u64().unwrap_or(0) >= 2 * MIB as u64
    };
    let st = mnt.wait_status(60, quarter);
    assert!(quarter(&st), "the prefetch did not get a quarter of the way within 60 s: {st}");
    mnt.kill();
    let _ = client.wait();
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(cache.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["prefetching"][0]["generation"], "field@1", "the interrupted prefetch is recorded: {state}");
    // Loose or in the cache's packs (what one range or batch answer brought).
    let before = cache::Store::open(cache.join("store")).unwrap().list().unwrap().len();
    assert!(before > 0);

    let mnt = Mount::start(&[&server.url], "field/stable", &cache, &t.path("mnt"));
    let st = mnt.wait_status(60, |st| st["prefetching"].as_array().is_some_and(Vec::is_empty));
    assert!(st["prefetching"].as_array().unwrap().is_empty(), "the prefetch did not finish: {st}");
    // It fetched what the first attempt had not: less than the whole 8 MiB of noise.
    let received = st["traffic"]["bytes"].as_u64().unwrap();
    assert!(received < 8 * MIB as u64, "the resumed prefetch received {received} bytes: it started over");
    // The state file is written behind the mount (after the store's sync): it says so soon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(cache.join("state.json")).unwrap()).unwrap();
        if state["prefetching"].as_array().map(Vec::len) == Some(0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the finished prefetch is still in the state file after 10 s: {state}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill();
    let diffs = compare_trees(&src, &mnt.point);
    assert!(diffs.is_empty(), "offline after a prefetch: {diffs:?}");
}

#[test]
fn mount_t_fuse_imgfs_with_an_fstab_line_starts_a_daemon() {
    // mount(8) must run /usr/local/bin/imgfs, not the Debian package's (packages.rs).
    let _helper = tests::mount_helper_lock();
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    write_files(&src, "d", 3, 64 << 10, 5);
    t.publish(&server, &src, "desk", "desk/stable");
    let point = t.path("mnt");
    std::fs::create_dir_all(&point).unwrap();
    let fstab = t.path("fstab");
    std::fs::write(
        &fstab,
        format!(
            "desk/stable {} fuse.imgfs server={},cache={},root={},poll_seconds=3600,_netdev 0 0\n",
            point.display(),
            server.url,
            t.path("cache").display(),
            t.root_file().display()
        ),
    )
    .unwrap();
    // mount(8) runs mount.fuse3 without the caller's PATH; it finds imgfs where
    // scripts/install.sh put it (scripts/test.sh runs it), which must be this build.
    let installed = std::fs::read("/usr/local/bin/imgfs").unwrap_or_default();
    assert!(installed == std::fs::read(bin("imgfs")).unwrap(), "/usr/local/bin/imgfs is not this build: run scripts/install.sh");
    let out = Command::new("mount").arg("-T").arg(&fstab).arg(&point).output().unwrap();
    assert!(out.status.success(), "mount -T: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(mounts.lines().any(|l| l.contains(&*point.to_string_lossy()) && l.contains("fuse.imgfs")), "{mounts}");
    let diffs = compare_trees(&src, &point);
    let status = Command::new(bin("imgfs")).arg("status").arg(&point).arg("--json").output().unwrap();
    let umount = Command::new(bin("imgfs")).arg("umount").arg(&point).output().unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["current"]["generation"], "desk@1", "{st}");
    assert!(umount.status.success(), "{}", String::from_utf8_lossy(&umount.stderr));
    // The daemon ends with its mount.
    let until = Instant::now() + Duration::from_secs(10);
    while Command::new(bin("imgfs")).arg("status").arg(&point).output().unwrap().status.success() {
        assert!(Instant::now() < until, "the daemon still answers 10 s after its mount went");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A bad option is refused with a clear message, and nothing is mounted.
    let out = Command::new(bin("imgfs")).args(["desk/stable"]).arg(&point).args(["-o", "cache=/tmp/x,frobnicate"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"), "{}", String::from_utf8_lossy(&out.stderr));
}
