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
    let mut rest = &body[..];
    let mut n = 0;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let d = format::Digest(rest[..32].try_into().unwrap());
        let len = u32::from_le_bytes(rest[32..36].try_into().unwrap()) as usize;
        records.push((d, rest[36..36 + len].to_vec()));
        rest = &rest[36 + len..];
    }
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
    assert!(served > 100, "readers were starved: {served} requests in {publishing:?}");
    let slowest = slowest.load(Ordering::Relaxed);
    assert!(slowest < 5_000, "a read took {slowest} ms while the publisher worked");
    assert_eq!(assert_consistent(&t, &server), 2);
}

#[test]
fn kill_9_at_many_moments_of_push_and_publish() {
    let t = Imgctl::new();
    let data = t.path("server");
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3000 {
        fs::write(src.join(format!("f{i}")), noise(6_000, 50_000 + i)).unwrap();
    }
    t.import(&src, "img");
    let port = Server::start(&data).port();
    let mut delays_ms: Vec<u64> = vec![0, 5, 20, 60, 120, 250, 400, 700];
    let mut published_at = None;
    for (round, delay) in delays_ms.drain(..).enumerate() {
        let server = Server::start_on(&data, port);
        let mut push = std::process::Command::new(tests::bin("imgctl"))
            .arg("--store")
            .arg(&t.store)
            .args(["push", "img@1", "--server", &server.url, "--token", &server.token()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        drop(server); // kill -9
        let _ = push.wait();
        let server = Server::start_on(&data, port);
        let n = assert_consistent(&t, &server);
        if round == 0 {
            assert_eq!(n, 0, "killed at once, nothing can have been published");
        }
        if n == 1 && published_at.is_none() {
            published_at = Some(round);
        }
        // No temporary file of a killed upload survives a restart.
        assert_eq!(fs::read_dir(data.join("store/tmp")).unwrap().count(), 0, "round {round}");
    }
    eprintln!("published by round {published_at:?}");
    // Whatever moment the kills hit, a final push completes and everything verifies.
    let server = Server::start_on(&data, port);
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    assert_eq!(assert_consistent(&t, &server), 1);
}
