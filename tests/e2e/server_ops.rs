//! The server's operations side over real HTTP: garbage collection, keep marks, push pins, /metrics, read tokens, kill -9.
//!
//! Garbage collection and its retention rules, `keep` marks, pins of a push in progress,
//! `/metrics`, reads behind a token, readers served while a publisher works, and kill -9 at
//! many moments of a push and publish.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{client, noise, ok_json, Imgctl, Server};

/// Every object (hex) the local generation `label` reaches, its manifest included.
fn objects_of(t: &Imgctl, label: &str) -> Vec<String> {
    let store = cache::Store::open(&t.store).unwrap();
    let image = label.split('@').next().unwrap();
    let log: Value = serde_json::from_str(&t.ok(["--json", "log", image])).unwrap();
    let gen = log.as_array().unwrap().iter().find(|g| g["generation"] == label).unwrap_or_else(|| panic!("no {label} in {log}"));
    let manifest: format::Digest = gen["manifest"].as_str().unwrap().parse().unwrap();
    let m = format::Manifest::decode(&store.get(&manifest).unwrap()).unwrap();
    let mut out: Vec<String> = cache::reachable(&store, &m).unwrap().iter().map(|d| d.to_hex()).collect();
    out.push(manifest.to_hex());
    out
}

/// Which of `digests` the server lacks.
fn server_missing(server: &Server, digests: &[String]) -> Vec<String> {
    let v: Value =
        client().post(format!("{}/v1/objects/missing", server.url)).json(&json!({ "digests": digests })).send().unwrap().json().unwrap();
    v["missing"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect()
}

/// Fetches `digests` in one batch request and checks every record decodes to its digest;
/// returns how many arrived.
fn fetch_and_verify(server: &Server, digests: &[String]) -> usize {
    let body =
        client().post(format!("{}/v1/objects/batch", server.url)).json(&json!({ "digests": digests })).send().unwrap().bytes().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let store = cache::Store::open(scratch.path()).unwrap();
    let mut n = 0;
    let mut records: Vec<(format::Digest, Vec<u8>)> =
        format::record::decode_all(&body).unwrap().into_iter().map(|r| (r.digest, r.framed.to_vec())).collect();
    // Dictionaries first, so objects compressed with one can be checked.
    records.sort_by_key(|(_, f)| f.len() > 8 && f[5] == 2);
    for (d, framed) in records {
        store.insert_framed(&d, &framed, 1 << 30).unwrap_or_else(|e| panic!("object {d} from the server does not verify: {e}"));
        n += 1;
    }
    n
}

/// Checks the server is consistent: every generation it lists is complete and verifies.
fn assert_consistent(t: &Imgctl, server: &Server) -> usize {
    let gens: Value = client().get(format!("{}/v1/generations", server.url)).send().unwrap().json().unwrap();
    let gens = gens["generations"].as_array().unwrap().clone();
    for g in &gens {
        let label = g["label"].as_str().unwrap();
        let objects = objects_of(t, label);
        assert_eq!(server_missing(server, &objects), Vec::<String>::new(), "{label} is listed but incomplete");
        assert_eq!(fetch_and_verify(server, &objects), objects.len(), "{label}: some objects did not come back");
    }
    gens.len()
}

fn write_config(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

/// Four generations, each with a file no other generation has.
fn four_generations(t: &Imgctl) {
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("shared"), noise(50_000, 1)).unwrap();
    for g in 1..=4u64 {
        let _ = fs::remove_file(src.join(format!("only{}", g - 1)));
        fs::write(src.join(format!("only{g}")), noise(40_000, 100 + g)).unwrap();
        t.import(&src, "img");
    }
}

#[test]
fn gc_keeps_channels_marks_newest_and_pushes_in_progress() {
    let t = Imgctl::new();
    let data = t.path("server");
    let strict = t.path("strict.toml");
    write_config(&strict, "keep_channel_versions = 1\ngc_grace_seconds = 0\n");
    four_generations(&t);
    let mut server = Server::start_with(&data, 0, Some(&strict));
    let port = server.port().to_string();
    let listen = format!("127.0.0.1:{port}");
    for g in 1..=4 {
        ok_json(t.remote(&server, &["--json", "push", &format!("img@{g}")]));
    }
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@1"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@2"]));
    let kept = ok_json(t.remote(&server, &["--json", "keep", "img@3"]));
    assert_eq!(kept["keep"], true);
    let g3: Value = client().get(format!("{}/v1/generations/img/3", server.url)).send().unwrap().json().unwrap();
    assert_eq!(g3["keep"], true);
    assert_eq!(t.remote(&server, &["keep", "img@9"]).status.code(), Some(3), "keep of an unknown generation is not found");

    let only = |g: u64| objects_of(&t, &format!("img@{g}")).into_iter().collect::<HashSet<_>>();
    let gen1_only: Vec<String> = only(1).difference(&(&(&only(2) | &only(3)) | &only(4))).cloned().collect();
    assert!(gen1_only.len() >= 3, "img@1 has its own file, tree and manifest: {gen1_only:?}");

    // A dry run through the running server (the CLI finds the data directory locked).
    let dry = ok_json(server.admin(&["gc", "--dry-run", "--json", "--listen", &listen]));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["generations_removed"], json!(["img@1"]), "{dry}");
    assert_eq!(dry["generations_kept"], json!(["img@2", "img@3", "img@4"]), "{dry}");
    assert_eq!(dry["objects_removed"].as_u64().unwrap(), gen1_only.len() as u64, "{dry}");
    assert!(dry["bytes_freed"].as_u64().unwrap() > 40_000, "img@1's own file is 40 kB of noise: {dry}");
    assert_eq!(server_missing(&server, &gen1_only), Vec::<String>::new(), "a dry run deletes nothing");

    let done = ok_json(server.admin(&["gc", "--json", "--listen", &listen]));
    assert_eq!(done["objects_removed"], dry["objects_removed"]);
    let mut gone = server_missing(&server, &gen1_only);
    gone.sort();
    let mut expected = gen1_only.clone();
    expected.sort();
    assert_eq!(gone, expected, "exactly img@1's own objects are gone");
    assert_eq!(assert_consistent(&t, &server), 3);
    let g1 = client().get(format!("{}/v1/generations/img/1", server.url)).send().unwrap();
    assert_eq!(g1.status().as_u16(), 404);
    // The channel's history still names img@1, but rolling back cannot pick a generation gone.
    let out = t.remote(&server, &["channel", "rollback", "os/stable"]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("still published"));

    let metrics = client().get(format!("{}/metrics", server.url)).send().unwrap().text().unwrap();
    assert!(metrics.contains("imaged_gc_runs_total 1"), "{metrics}");
    assert!(metrics.contains(&format!("imaged_gc_objects_removed_total {}", gen1_only.len())), "{metrics}");
    assert!(metrics.contains("imaged_generations 3"), "{metrics}");
    assert!(metrics.contains("route=\"/v1/objects/missing\""), "{metrics}");
    assert!(metrics.contains("imaged_publishes_total 4"), "{metrics}");
    assert!(metrics.contains("imaged_http_request_duration_seconds_bucket"), "{metrics}");

    // An object a push uploaded but has not published yet survives a collection within the
    // grace period, and goes once the grace is over.
    server.kill();
    let stray = b"uploaded by a push still in progress".to_vec();
    let stray_hex = blake3::hash(&stray).to_hex().to_string();
    let framed = tests::framed_raw(&stray);
    let server = Server::start_on(&data, 0);
    let r = client().put(format!("{}/v1/objects/{stray_hex}", server.url)).bearer_auth(server.token()).body(framed).send().unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let listen = format!("127.0.0.1:{}", server.port());
    let report = ok_json(server.admin(&["gc", "--json", "--listen", &listen]));
    assert_eq!(report["objects_pinned"], 1, "{report}");
    assert_eq!(server_missing(&server, &[stray_hex.clone()]), Vec::<String>::new(), "a pinned upload must survive");
    drop(server);
    // Offline, with no grace: the pin has lapsed and the object goes.
    let out = std::process::Command::new(tests::bin("imaged"))
        .args(["gc", "--json", "--config"])
        .arg(&strict)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let report = ok_json(out);
    assert_eq!(report["objects_removed"], 1, "{report}");
    let server = Server::start_on(&data, 0);
    assert_eq!(server_missing(&server, &[stray_hex.clone()]), vec![stray_hex]);
    assert_eq!(assert_consistent(&t, &server), 3);
    let off = ok_json(t.remote(&server, &["--json", "keep", "img@3", "--off"]));
    assert_eq!(off["keep"], false);
    let g3: Value = client().get(format!("{}/v1/generations/img/3", server.url)).send().unwrap().json().unwrap();
    assert_eq!(g3["keep"], false, "the mark is gone");
}

#[test]
fn reads_can_require_the_token_and_the_config_file_sets_it() {
    let t = Imgctl::new();
    let data = t.path("server");
    let cfg = t.path("imaged.toml");
    write_config(&cfg, "token = \"s3cret-token\"\ntoken_for_reads = true\npoll_seconds = 42\n");
    let mut server = Server::start_with(&data, 0, Some(&cfg));
    server.token = Some("s3cret-token".into());
    assert!(!data.join("admin.token").exists(), "a configured token means none is generated");
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), noise(10_000, 7)).unwrap();
    let rep = t.import(&src, "img");
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "office/pilot", "img@1"]));
    let c = client();
    let manifest = rep["manifest"].as_str().unwrap();
    for path in [format!("/v1/objects/{manifest}"), "/v1/generations".into(), "/v1/channels/office/pilot".into()] {
        let r = c.get(format!("{}{path}", server.url)).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} must need the token");
        assert_eq!(r.json::<Value>().unwrap()["error"], "token_required");
        let r = c.get(format!("{}{path}", server.url)).bearer_auth("wrong").send().unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path} with a wrong token");
        let r = c.get(format!("{}{path}", server.url)).bearer_auth("s3cret-token").send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
    }
    let doc: Value = c.get(format!("{}/v1/channels/office/pilot", server.url)).bearer_auth("s3cret-token").send().unwrap().json().unwrap();
    assert_eq!(doc["poll_seconds"], 42, "the config file's poll interval is served");
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(c.get(format!("{}/healthz", server.url)).send().unwrap().status().as_u16(), 200);
    assert_eq!(c.get(format!("{}/metrics", server.url)).send().unwrap().status().as_u16(), 200);
    // A config file with an unknown key is refused with its name.
    let bad = t.path("bad.toml");
    write_config(&bad, "listen_on = \"x\"\n");
    let out = std::process::Command::new(tests::bin("imaged")).args(["serve", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("listen_on"), "{err}");
}

#[test]
fn readers_are_served_while_a_publisher_pushes_and_collects() {
    let t = Imgctl::new();
    let data = t.path("server");
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("a{i}")), noise(20_000, i)).unwrap();
    }
    t.import(&src, "img");
    for i in 0..4000 {
        fs::write(src.join(format!("b{i}")), noise(4_000, 10_000 + i)).unwrap();
    }
    t.import(&src, "img");
    let server = Arc::new(Server::start(&data));
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@1"]));
    let objects = Arc::new(objects_of(&t, "img@1"));

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..6)
        .map(|r| {
            let (server, objects, stop, served, slowest) = (server.clone(), objects.clone(), stop.clone(), served.clone(), slowest.clone());
            std::thread::spawn(move || {
                let c = client();
                let scratch = tempfile::tempdir().unwrap();
                let store = cache::Store::open(scratch.path()).unwrap();
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    if i % 3 == 0 {
                        let r = c.get(format!("{}/v1/channels/os/stable", server.url)).send().unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                    } else {
                        let hex = &objects[i % objects.len()];
                        let r = c.get(format!("{}/v1/objects/{hex}", server.url)).send().unwrap();
                        assert_eq!(r.status().as_u16(), 200, "object {hex}");
                        let framed = r.bytes().unwrap();
                        // Dictionary-compressed objects need the dictionary; the rest verify here.
                        if framed[5] != 2 {
                            store.insert_framed(&hex.parse().unwrap(), &framed, 1 << 30).unwrap();
                        }
                    }
                    slowest.fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                    served.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            })
        })
        .collect();
    let start = Instant::now();
    ok_json(t.remote(&server, &["--json", "push", "img@2"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@2"]));
    let report: Value = client()
        .post(format!("{}/v1/gc", server.url))
        .bearer_auth(server.token())
        .json(&json!({"dry_run": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(report["objects_removed"], 0, "everything is kept within the grace period: {report}");
    let publishing = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader failed");
    }
    let served = served.load(Ordering::Relaxed);
    // A rate, not a count: the publish may take half a second or five on a loaded machine.
    let rate = served as f64 / publishing.as_secs_f64();
    assert!(served >= 10 && rate > 20.0, "readers were starved: {served} requests in {publishing:?}");
    let slowest = slowest.load(Ordering::Relaxed);
    assert!(slowest < 5_000, "a read took {slowest} ms while the publisher worked");
    assert_eq!(assert_consistent(&t, &server), 2);
}

/// Starts `imaged serve` on `port` (0: any), with `IMAGED_FAULT=fault` if given, so it kills
/// itself (SIGKILL) at that point of its store's writes or syncs; waits until it listens.
fn start_logged(data: &Path, port: u16, fault: Option<&str>) -> Server {
    let mut cmd = std::process::Command::new(tests::bin("imaged"));
    cmd.args(["serve", "--data"]).arg(data).args(["--listen", &format!("127.0.0.1:{port}")]);
    if let Some(fault) = fault {
        cmd.env("IMAGED_FAULT", fault);
    }
    Server::start_command(cmd, data)
}

#[test]
fn truncated_pack_gives_errors_naming_it_to_gc_and_reads_not_panics() {
    let t = Imgctl::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..200 {
        fs::write(src.join(format!("f{i}")), noise(6_000, 70_000 + i)).unwrap();
    }
    t.import(&src, "img");
    let data = t.path("server");
    let server = Server::start(&data);
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    drop(server);
    // Cut every pack of the server's store to its header and a few bytes.
    let mut packs = Vec::new();
    for e in fs::read_dir(data.join("store/packs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().unwrap() == "pack" {
            fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(20).unwrap();
            packs.push(p);
        }
    }
    assert!(!packs.is_empty(), "the push wrote packs");
    let server = start_logged(&data, 0, None);
    let objects = objects_of(&t, "img@1");
    // Reads: a batch leaves out what it cannot read; single reads fail with a server error.
    assert!(fetch_and_verify(&server, &objects) < objects.len());
    let lost = objects.iter().find(|d| client().get(format!("{}/v1/objects/{d}", server.url)).send().unwrap().status() == 500);
    assert!(lost.is_some(), "some object is in a cut pack");
    // Garbage collection cannot walk the generation: it answers an error and removes nothing.
    let gc = client().post(format!("{}/v1/gc", server.url)).bearer_auth(server.token()).json(&json!({"dry_run": false})).send().unwrap();
    assert_eq!(gc.status(), 500);
    assert_eq!(server_missing(&server, &objects), Vec::<String>::new(), "gc removed nothing");
    // The log names the pack; nothing panicked.
    let log = server.log().join("\n");
    assert!(packs.iter().any(|p| log.contains(&p.display().to_string())), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn kill_9_at_many_moments_of_push_and_publish() {
    use std::os::unix::process::ExitStatusExt;
    let t = Imgctl::new();
    let data = t.path("server");
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3000 {
        fs::write(src.join(format!("f{i}")), noise(6_000, 50_000 + i)).unwrap();
    }
    t.import(&src, "img");
    let port = Server::start(&data).port();
    // The server stops itself at a chosen write or sync of its store (or just before the
    // publish commit, a sync point): from the first write, through the pushes' pack commits,
    // to points past the publish, where the push completes and the server is killed after.
    let faults = [
        "write:1",
        "sync:1",
        "write:20",
        "sync:2",
        "sync:3",
        "write:300",
        "sync:5",
        "sync:8",
        "write:1500",
        "sync:13",
        "sync:21",
        "sync:1000000",
    ];
    let mut published_at = None;
    let mut completed = false;
    for (round, fault) in faults.into_iter().enumerate() {
        let mut server = start_logged(&data, port, Some(fault));
        let push = std::process::Command::new(tests::bin("imgctl"))
            .arg("--store")
            .arg(&t.store)
            .args(["push", "img@1", "--server", &server.url, "--token", &server.token()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        completed = push.success();
        // A push that failed saw the server die; its exit may trail the closed connection.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut exit = server.child.try_wait().unwrap();
        while exit.is_none() && !completed && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            exit = server.child.try_wait().unwrap();
        }
        let fired = exit.is_some_and(|s| s.signal() == Some(9));
        assert!(fired || completed, "round {round} ({fault}): the push failed with the server up");
        if round == 0 {
            assert!(fired, "write:1 is reached by any push that uploads");
        }
        drop(server); // kill -9, if the fault did not
        let server = Server::start_on(&data, port);
        let n = assert_consistent(&t, &server);
        if round == 0 {
            assert_eq!(n, 0, "killed at once, nothing can have been published");
        }
        if completed {
            assert_eq!(n, 1, "round {round} ({fault}): the push completed");
        }
        if n == 1 && published_at.is_none() {
            published_at = Some(round);
        }
        // No temporary file of a killed upload survives a restart.
        assert_eq!(fs::read_dir(data.join("store/tmp")).unwrap().count(), 0, "round {round}");
    }
    eprintln!("published by round {published_at:?}");
    assert!(completed, "the last fault lies past the publish: the push completes");
    // Whatever moment the kills hit, a final push completes and everything verifies.
    let server = Server::start_on(&data, port);
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    assert_eq!(assert_consistent(&t, &server), 1);
}

#[test]
fn gc_keeps_what_a_family_signed_until_its_owner_signs_it_away() {
    let t = Imgctl::new();
    let config = t.path("strict.toml");
    write_config(&config, "keep_channel_versions = 1\ngc_grace_seconds = 0\n");
    let server = Server::start_with(&t.path("server"), 0, Some(&config));
    let listen = format!("127.0.0.1:{}", server.port());
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for v in ["one", "two", "three"] {
        std::fs::write(src.join("f"), v).unwrap();
        t.publish(&server, &src, "os", "os/stable");
    }
    // os@1 and os@2 are signed (an endpoint may be pinned to them): kept, though no channel
    // names them any more.
    let dry = ok_json(server.admin(&["gc", "--dry-run", "--json", "--listen", &listen]));
    assert_eq!(dry["generations_removed"], json!([]), "{dry}");
    // The family's owner signs os@1 away: it goes at the next collection.
    let key = t.key("images");
    let f = ok_json(t.remote(&server, &["--json", "trust", "forget", "os@1", "--key", key.to_str().unwrap()]));
    assert_eq!(f["removed"], true, "{f}");
    let again = ok_json(t.remote(&server, &["--json", "trust", "forget", "os@1", "--key", key.to_str().unwrap()]));
    assert_eq!(again["removed"], false, "{again}");
    let done = ok_json(server.admin(&["gc", "--json", "--listen", &listen]));
    assert_eq!(done["generations_removed"], json!(["os@1"]), "{done}");
}
