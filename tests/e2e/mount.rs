//! imgfs mounted for real through FUSE from a real imaged: every kind of file, switches and rollback, held generations (switch), offline, dpkg from the mount.
//!
//! The server is on 127.0.0.1 over HTTP; the tests check every field of every kind of file,
//! open files and shells across switches, offline reads from the cache, and a Debian root
//! whose dpkg runs from the mount.

use std::path::PathBuf;
use std::process::Command;

use tests::{build_special_tree, compare_trees, ok_json, Imgctl, Mount, Server};

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
    t.publish(&server, &src, "special", "test/special");
    let mnt = Mount::start(&[&server.url], "test/special", &t.path("cache"), &t.path("mnt"));
    assert!(mnt.banner.contains("special@1"), "{}", mnt.banner);
    assert_same(&src, &mnt.point);
    // Read-only: nothing can be created or changed.
    assert!(std::fs::write(mnt.point.join("new-file"), b"x").is_err());
    assert!(std::fs::remove_file(mnt.point.join("small.txt")).is_err());
}

/// The Debian root of the shared datasets.
fn gen1() -> PathBuf {
    let gen1 = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into())).join("gen1");
    assert!(gen1.join("usr/bin/dpkg").exists(), "dataset gen1 missing: run shared/datasets/make-datasets.sh");
    gen1
}

#[test]
fn a_debian_root_runs_dpkg_from_the_mount() {
    let gen1 = gen1();
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    t.publish(&server, &gen1, "debian", "os/stable");
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

#[test]
fn a_switch_leaves_open_files_on_their_generation_and_rollback_brings_it_back() {
    use std::io::Read;
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    let (one, two) = (tests::noise(3 << 20, 1), tests::noise(3 << 20, 2));
    std::fs::write(src.join("data.bin"), &one).unwrap();
    std::fs::write(src.join("app/version"), b"one\n").unwrap();
    t.publish(&server, &src, "office", "office/pilot");
    let mnt = Mount::start_with(&[&server.url], "office/pilot", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"]);
    let p = &mnt.point;

    // A process holds gen 1's data.bin open and has read a third of it.
    let mut held = std::fs::File::open(p.join("data.bin")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    held.read_exact(&mut first).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("app/version")).unwrap(), "one\n");

    std::fs::write(src.join("data.bin"), &two).unwrap();
    std::fs::write(src.join("app/version"), b"two\n").unwrap();
    std::fs::write(src.join("new-in-two"), b"hello\n").unwrap();
    t.publish(&server, &src, "office", "office/pilot");
    let up = mnt.control("update");
    assert_eq!((up["switched"].as_bool(), up["generation"].as_str()), (Some(true), Some("office@2")), "{up}");

    // New opens see gen 2; the held file reads gen 1's bytes to the end.
    assert_eq!(std::fs::read_to_string(p.join("app/version")).unwrap(), "two\n");
    assert_eq!(std::fs::read(p.join("new-in-two")).unwrap(), b"hello\n");
    assert!(std::fs::read(p.join("data.bin")).unwrap() == two, "a new open of data.bin must see gen 2");
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert!(first == one, "the file opened before the switch must read gen 1 to the end");
    let again = mnt.control("update");
    assert_eq!(again["switched"], false, "{again}");

    // Rollback: gen 1 again, at once.
    let back = mnt.control("rollback");
    assert_eq!((back["switched"].as_bool(), back["generation"].as_str()), (Some(true), Some("office@1")), "{back}");
    assert_eq!(std::fs::read_to_string(p.join("app/version")).unwrap(), "one\n");
    assert!(!p.join("new-in-two").exists(), "a name only gen 2 has is gone after the rollback");
    assert!(std::fs::read(p.join("data.bin")).unwrap() == one);
    let status = mnt.control("status");
    assert_eq!(status["current"]["generation"], "office@1", "{status}");
    assert_eq!(status["previous"]["generation"], "office@2", "{status}");
    assert_eq!(status["channel"], "office/pilot");
    assert_eq!(status["offline"], false);
    // Without --json, a summary for people: the current generation and the cache's use.
    let out = Command::new(tests::bin("imgfs")).arg("status").arg(p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l.starts_with("current:") && l.contains("office@1")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("cache:") && l.contains(" of ") && l.contains("B")), "{text}");
}

#[test]
fn offline_cached_data_works_uncached_fails_fast_and_a_restart_mounts_from_the_cache() {
    use std::time::{Duration, Instant};
    let t = Imgctl::new();
    let data = t.path("server");
    let mut server = Server::start(&data);
    let port = server.port();
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20u64 {
        std::fs::write(src.join(format!("f{i}")), tests::noise(200_000, i)).unwrap();
    }
    t.publish(&server, &src, "laptop", "os/stable");
    let (cache, point) = (t.path("cache"), t.path("mnt"));
    let mnt = Mount::start_with(&[&server.url], "os/stable", &cache, &point, &["--poll-seconds", "3600"]);
    for i in 0..10 {
        assert_eq!(std::fs::read(point.join(format!("f{i}"))).unwrap(), tests::noise(200_000, i));
    }

    server.kill();
    // Cached: no error. Uncached: EIO, quickly, never a hang.
    for i in 0..10 {
        assert_eq!(std::fs::read(point.join(format!("f{i}"))).unwrap(), tests::noise(200_000, i), "cached f{i} offline");
    }
    let start = Instant::now();
    let err = std::fs::read(point.join("f15")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10), "an uncached read took {:?} to fail", start.elapsed());
    let status = mnt.control("status");
    assert_eq!(status["offline"], true, "{status}");
    drop(mnt);

    // A restart with the server still down mounts the last generation from the cache.
    let mnt = Mount::start_with(&[&format!("http://127.0.0.1:{port}")], "os/stable", &cache, &point, &["--poll-seconds", "3600"]);
    assert!(mnt.banner.contains("from the cache"), "{}", mnt.banner);
    assert_eq!(std::fs::read(point.join("f3")).unwrap(), tests::noise(200_000, 3));
    assert!(std::fs::read(point.join("f16")).is_err());

    // The server comes back: the mount recovers by itself.
    let _server = Server::start_on(&data, port);
    assert_eq!(std::fs::read(point.join("f16")).unwrap(), tests::noise(200_000, 16), "recovered once the server is back");
}

#[test]
fn a_server_serving_a_wrong_object_is_skipped_and_the_cache_never_holds_it() {
    let t = Imgctl::new();
    let (a, b) = (Server::start(&t.path("server-a")), Server::start(&t.path("server-b")));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let victim = tests::noise(50_000, 77);
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    std::fs::write(src.join("other.txt"), b"fine\n").unwrap();
    t.publish(&a, &src, "app", "apps/stable");
    // B mirrors the objects only; the signed metadata comes from A.
    ok_json(t.remote(&b, &["--json", "push", "app@1"]));
    // Server A's copies of the file's only chunk (its store's and its serving pack's) go bad
    // on its disk; A serves them as they are.
    let hex = blake3::hash(&victim).to_hex().to_string();
    a.wait_for_layouts();
    tests::corrupt_object(&a.data.join("store"), &hex);
    assert_eq!(tests::corrupt_served(&a.data, &hex), 1);

    let cache = t.path("cache");
    let mnt = Mount::start_with(&[&a.url, &b.url], "apps/stable", &cache, &t.path("mnt"), &["--poll-seconds", "3600"]);
    assert!(std::fs::read(mnt.point.join("victim.bin")).unwrap() == victim, "the reader gets the right bytes");
    let status = mnt.control("status");
    let servers = status["servers"].as_array().unwrap();
    assert!(servers[0]["failed"].as_u64().unwrap() >= 1, "{status}");
    assert!(servers[0]["last_error"].as_str().unwrap().contains("does not verify"), "{status}");
    assert!(servers[1]["ok"].as_u64().unwrap() >= 1, "{status}");
    drop(mnt);
    let store = cache::Store::open(cache.join("store")).unwrap();
    assert_eq!(store.get(&hex.parse().unwrap()).unwrap(), victim, "the cache holds the right bytes, verified");
}

#[test]
fn a_chunk_compressed_with_another_images_dictionary_travels_and_reads() {
    // Image A is imported first and stores shared.txt compressed with A's dictionary; image B
    // holds the same file, so B's chunk is A's object and names A's dictionary. Pushing only
    // B, collecting garbage on the server and mounting B must all still work.
    let t = Imgctl::new();
    let small = |dir: &std::path::Path, tag: &str| {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..150 {
            let text = format!("# {tag} configuration file {i}\noption_{i} = value {tag} {i}\nenabled = yes\n").repeat(8);
            std::fs::write(dir.join(format!("{tag}-{i}.conf")), text).unwrap();
        }
        std::fs::write(dir.join("shared.txt"), "a file both images carry, word for word\n".repeat(40)).unwrap();
    };
    let (a, b) = (t.path("a"), t.path("b"));
    small(&a, "alpha");
    small(&b, "beta");
    t.import(&a, "alpha");
    t.import(&b, "beta");
    let store = cache::Store::open(&t.store).unwrap();
    let shared: format::Digest = blake3::hash("a file both images carry, word for word\n".repeat(40).as_bytes()).to_hex().parse().unwrap();
    let dict_a = store.dictionary_of(&shared).expect("shared.txt is stored compressed with a dictionary");
    let log: serde_json::Value = serde_json::from_str(&t.ok(["--json", "log", "beta"])).unwrap();
    let beta_manifest: format::Digest = log[0]["manifest"].as_str().unwrap().parse().unwrap();
    let beta = format::Manifest::decode(&store.get(&beta_manifest).unwrap()).unwrap();
    assert_ne!(beta.dictionary(), Some(dict_a), "the test needs shared.txt to carry the other image's dictionary");
    drop(store);

    let server = Server::start(&t.path("server"));
    t.push_signed(&server, "beta@1");
    ok_json(t.remote(&server, &["--json", "channel", "set", "apps/beta", "beta@1"]));
    let gc = ok_json(server.admin(&["gc", "--json", "--listen", &server.url.replace("http://", "")]));
    assert_eq!(gc["objects_removed"], 0, "{gc}");
    let mnt = Mount::start_with(&[&server.url], "apps/beta", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"]);
    assert_same(&b, &mnt.point);
}

#[test]
fn a_shell_inside_an_old_generation_keeps_working_after_two_switches() {
    use std::io::{BufRead, Read, Write};
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    std::fs::write(src.join("app/version"), b"one\n").unwrap();
    t.publish(&server, &src, "desk", "desk/pilot");
    let mnt = Mount::start_with(&[&server.url], "desk/pilot", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"]);
    // A shell whose working directory is generation 1's app/, and no file open; it says when
    // it is there.
    let mut sh = Command::new("sh")
        .args(["-c", "cd \"$0\" && echo in && read go && cat version && ls"])
        .arg(mnt.point.join("app"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(sh.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "in\n", "the shell did not get into generation 1's app/");
    for (n, v) in [(2, "two"), (3, "three")] {
        std::fs::write(src.join("app/version"), format!("{v}\n")).unwrap();
        t.publish(&server, &src, "desk", "desk/pilot");
        assert_eq!(mnt.control("update")["generation"], format!("desk@{n}"));
    }
    assert_eq!(std::fs::read_to_string(mnt.point.join("app/version")).unwrap(), "three\n");
    sh.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = std::process::Output { status: sh.wait().unwrap(), stdout: rest, stderr: Vec::new() };
    assert!(out.status.success(), "the shell in generation 1 failed: {:?}", out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nversion\n", "relative paths still resolve in generation 1");
}

#[test]
fn switch_to_holds_a_signed_generation_across_polls_and_restarts_until_update_follows_the_channel() {
    use std::time::Duration;
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "one").unwrap();
    t.publish(&server, &src, "os", "os/stable");
    // os@2 signed but on no channel; os@3 published unsigned.
    std::fs::write(src.join("f"), "two").unwrap();
    t.import(&src, "os");
    t.push_signed(&server, "os@2");
    std::fs::write(src.join("f"), "three").unwrap();
    t.import(&src, "os");
    ok_json(t.remote(&server, &["--json", "push", "os@3"]));

    let (cache, point) = (t.path("cache"), t.path("mnt"));
    let mut mnt = Mount::start_with(&[&server.url], "os/stable", &cache, &point, &["--poll-seconds", "1"]);
    let read = || std::fs::read_to_string(point.join("f")).unwrap();
    assert_eq!(read(), "one");
    let sw = mnt.control_with("switch", &["os@2"]);
    assert_eq!((sw["outcome"].as_str(), sw["generation"].as_str(), sw["from"].as_str()), (Some("switched"), Some("os@2"), Some("os@1")), "{sw}");
    assert_eq!(read(), "two");
    // The poller checks (its last check says the held generation is current) and leaves it.
    let st = mnt.wait_status(20, |st| st["last_check"]["result"]["outcome"] == "already_current");
    assert_eq!((st["held"].as_str(), st["current"]["generation"].as_str()), (Some("os@2"), Some("os@2")), "{st}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read(), "two", "a poll moved a held mount");

    // Unsigned and unknown generations are refused, typed; the mount stays.
    for (g, reason) in [("os@3", "not_signed"), ("os@9", "not_signed")] {
        let out = Command::new(tests::bin("imgfs")).arg("switch").arg(&point).arg(g).arg("--json").output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{g}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((v["outcome"].as_str(), v["reason"].as_str()), (Some("refused"), Some(reason)), "{g}: {v}");
    }
    let out = Command::new(tests::bin("imgfs")).arg("switch").arg(&point).arg("nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(), "two");

    // A restart keeps the hold: it starts on os@2, not on the channel's os@1.
    mnt.kill();
    let mnt = Mount::start_with(&[&server.url], "os/stable", &cache, &point, &["--poll-seconds", "1"]);
    assert!(mnt.banner.contains("os@2"), "{}", mnt.banner);
    assert_eq!(mnt.control("status")["held"], "os@2");
    assert_eq!(read(), "two");

    // update: the channel's generation again, no longer held.
    let up = mnt.control("update");
    assert_eq!((up["switched"].as_bool(), up["generation"].as_str()), (Some(true), Some("os@1")), "{up}");
    let st = mnt.control("status");
    assert!(st.get("held").is_none(), "{st}");
    assert_eq!(read(), "one");
    // Held again, then rolled back: the hold ends too.
    mnt.control_with("switch", &["os@2"]);
    let back = mnt.control("rollback");
    assert_eq!(back["generation"], "os@1", "{back}");
    assert!(mnt.control("status").get("held").is_none());
}

#[test]
fn a_dead_mount_left_by_a_killed_imgfs_is_detached_by_the_next_mount() {
    // What an imgfs@ unit that failed for good leaves behind: the process and the keeper gone,
    // the mount point answering "transport endpoint is not connected".
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("motd"), "hello\n").unwrap();
    t.publish(&server, &src, "dead", "test/dead");
    let mut first = Mount::start(&[&server.url], "test/dead", &t.path("cache"), &t.path("mnt"));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let err = std::fs::metadata(&first.point).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // (Mount::start would stumble on the dead mount point itself: imgfs is run directly.)
    let mut cmd = Command::new(tests::bin("imgfs"));
    cmd.args(["mount", "--server", &server.url, "--channel", "test/dead", "--cache"]).arg(t.path("cache")).arg(&first.point);
    let again = Mount::start_command(cmd, &first.point);
    assert_same(&src, &again.point);
}

#[test]
fn a_trace_records_what_a_program_reads_and_cold_endpoints_fetch_its_data_first() {
    let gen1 = gen1();
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    t.publish(&server, &gen1, "debian", "os/stable");
    // Endpoints read through the generation's layout (ranges of its serving pack).
    server.wait_for_layouts();
    let mnt = Mount::start(&[&server.url], "os/stable", &t.path("cache"), &t.path("mnt"));
    let imgfs = |args: &[&str]| Command::new(tests::bin("imgfs")).args(args).output().unwrap();
    let point = mnt.point.to_str().unwrap();
    let stopped = imgfs(&["trace", "stop", point]);
    assert_eq!(stopped.status.code(), Some(3), "stop without a trace: not found; {}", String::from_utf8_lossy(&stopped.stderr));
    let started = ok_json(imgfs(&["--json", "trace", "start", point]));
    assert_eq!(started["generation"], "debian@1");
    assert!(!imgfs(&["trace", "start", point]).status.success(), "one trace at a time");

    let out = Command::new("chroot").arg(&mnt.point).args(["/usr/bin/dpkg", "-l"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = t.path("dpkg.trace");
    let said = imgfs(&["trace", "stop", point, "--out", file.to_str().unwrap()]);
    assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!((trace["version"].as_u64(), trace["generation"].as_str()), (Some(1), Some("debian@1")), "{trace}");
    let reads = trace["reads"].as_array().unwrap();
    let paths: Vec<&str> = reads.iter().map(|r| r["path"].as_str().unwrap()).collect();
    let at = |p: &str| paths.iter().position(|x| *x == p).unwrap_or_else(|| panic!("{p} not in the trace: {paths:?}"));
    assert!(at("usr/bin/dpkg") < at("var/lib/dpkg/status"), "the program is read before the file it reads: {paths:?}");
    for r in reads {
        let path = r["path"].as_str().unwrap();
        let size = std::fs::symlink_metadata(gen1.join(path)).unwrap_or_else(|e| panic!("{path}: {e}")).len();
        let (offset, len) = (r["offset"].as_u64().unwrap(), r["len"].as_u64().unwrap());
        assert!(len > 0 && offset + len <= size, "{path}: {offset}+{len} of {size}");
    }
    // dpkg reads its whole status file: one merged range covers it.
    let status_size = std::fs::metadata(gen1.join("var/lib/dpkg/status")).unwrap().len();
    let status = &reads[at("var/lib/dpkg/status")];
    assert_eq!(status["offset"], 0);
    assert_eq!(status["len"].as_u64().unwrap(), status_size, "{status}");
    assert!(!imgfs(&["trace", "stop", point]).status.success(), "the trace ended");

    // A second endpoint, cold: the trace's data arrives first, in few requests, and the
    // program it recorded then runs without asking the server for anything.
    let cold = Mount::start(&[&server.url], "os/stable", &t.path("cache2"), &t.path("mnt2"));
    let requests = |m: &Mount| m.control("status")["traffic"]["requests"].as_u64().unwrap();
    let before = requests(&cold);
    let fetched = ok_json(imgfs(&["--json", "trace", "prefetch", cold.point.to_str().unwrap(), file.to_str().unwrap()]));
    assert_eq!(fetched["generation"], "debian@1", "{fetched}");
    let f = &fetched["fetched"];
    assert!(f["objects_done"].as_u64().unwrap() > 0 && f["objects_done"] == f["objects_total"], "{fetched}");
    let after_prefetch = requests(&cold);
    // Ranges of the serving pack, records under 512 KiB apart in one (docs/scale.md): a few
    // for the few hundred objects dpkg reads, where one batch request took them all.
    let took = after_prefetch - before;
    assert!((1..=16).contains(&took), "the trace's data in at most 16 ranged requests, took {took}");
    let again = Command::new("chroot").arg(&cold.point).args(["/usr/bin/dpkg", "-l"]).output().unwrap();
    assert!(again.status.success());
    assert_eq!(again.stdout, out.stdout);
    assert_eq!(requests(&cold), after_prefetch, "everything dpkg -l read was prefetched by its trace");

    // An endpoint that has read nothing yet, for the switch below (mounted before the trace
    // is signed, so its mount fetches no trace data).
    let fourth = Mount::start(&[&server.url], "os/stable", &t.path("cache4"), &t.path("mnt4"));

    // Attached to the generation and signed with it: a third cold endpoint fetches the
    // trace's data by itself right after mounting.
    let key = t.key("images");
    let added = ok_json(t.remote(&server, &["--json", "trace", "add", "debian@1", file.to_str().unwrap(), "--key", key.to_str().unwrap()]));
    assert_eq!((added["signed"].as_bool(), added["reads"].as_u64()), (Some(true), Some(reads.len() as u64)), "{added}");
    let again_added = ok_json(t.remote(&server, &["--json", "trace", "add", "debian@1", file.to_str().unwrap(), "--key", key.to_str().unwrap()]));
    assert_eq!(again_added["signed"], false, "the same trace again signs nothing");
    let third = Mount::start(&[&server.url], "os/stable", &t.path("cache3"), &t.path("mnt3"));
    let mut settled = requests(&third);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = requests(&third);
        if now == settled && third.control("status")["cache"]["objects"].as_u64().unwrap() > 0 && now > 0 {
            break;
        }
        settled = now;
        assert!(std::time::Instant::now() < until, "the trace's data kept arriving for 30 s");
    }
    let run = Command::new("chroot").arg(&third.point).args(["/usr/bin/dpkg", "-l"]).output().unwrap();
    assert_eq!(run.stdout, out.stdout);
    assert_eq!(requests(&third), settled, "the signed trace's data was fetched at mount, before dpkg -l ran");
    // The next generation with the same trace: a switch to it fetches the trace's data
    // first, so that dpkg -l runs from the cache as soon as the mount has moved.
    let next = t.path("next");
    assert!(Command::new("cp").arg("-al").arg(&gen1).arg(&next).status().unwrap().success());
    std::fs::write(next.join("etc/next-generation"), b"2\n").unwrap();
    t.import(&next, "debian");
    t.push_signed(&server, "debian@2");
    ok_json(t.remote(&server, &["--json", "trace", "add", "debian@2", file.to_str().unwrap(), "--key", key.to_str().unwrap()]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "debian@2"]));
    let before_switch = requests(&fourth);
    let switched = ok_json(imgfs(&["--json", "update", fourth.point.to_str().unwrap()]));
    let st = fourth.control("status");
    assert_eq!(st["current"]["generation"], "debian@2", "{switched}");
    let warmed = &st["trace_fetch"];
    assert_eq!((warmed["generation"].as_str(), warmed["before_switch"].as_bool()), (Some("debian@2"), Some(true)), "{st}");
    assert!(warmed["objects"].as_u64().unwrap() > 0, "{st}");
    let at_switch = requests(&fourth);
    assert!(at_switch > before_switch, "the switch fetched the next generation's metadata and trace data");
    let run = Command::new("chroot").arg(&fourth.point).args(["/usr/bin/dpkg", "-l"]).output().unwrap();
    assert_eq!(run.stdout, out.stdout);
    assert_eq!(requests(&fourth), at_switch, "the trace's data was in before the switch: dpkg -l asked for nothing");
    assert_eq!(std::fs::read(fourth.point.join("etc/next-generation")).unwrap(), b"2\n");

    let garbage = t.path("garbage.trace");
    std::fs::write(&garbage, b"not a trace").unwrap();
    let refused = t.remote(&server, &["trace", "add", "debian@1", garbage.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(!refused.status.success(), "a file that is not a trace is refused before anything is signed");

    let bad = t.path("bad.trace");
    std::fs::write(&bad, b"{\"version\": 9, \"generation\": \"x@1\", \"reads\": []}").unwrap();
    let refused = imgfs(&["trace", "prefetch", cold.point.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
}

#[test]
fn a_mount_that_fills_fetches_the_whole_generation_in_the_background_and_then_works_offline() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(src.join("data")).unwrap();
    for i in 0..24u64 {
        std::fs::write(src.join(format!("data/f{i:02}")), tests::noise(200_000, i)).unwrap();
    }
    t.publish(&server, &src, "fill", "fill/pilot");
    let extra = ["--poll-seconds", "3600", "--fill", "20M"];
    let mnt = Mount::start_with(&[&server.url], "fill/pilot", &t.path("cache"), &t.path("mnt"), &extra);
    // Nothing is read through the mount; the fill brings every file's data (incompressible:
    // about 4.8 MB on the wire) and ends.
    let st = mnt.wait_status(60, |st| {
        st["traffic"]["bytes"].as_u64().is_some_and(|b| b >= 24 * 200_000) && st["prefetching"].as_array().is_some_and(|p| p.is_empty())
    });
    assert!(st["cache"]["objects"].as_u64().unwrap() >= 24, "{st}");
    // With the server gone, every file reads whole from the cache.
    drop(server);
    for i in 0..24u64 {
        let name = format!("data/f{i:02}");
        assert!(std::fs::read(mnt.point.join(&name)).unwrap() == std::fs::read(src.join(&name)).unwrap(), "{name}");
    }
}
