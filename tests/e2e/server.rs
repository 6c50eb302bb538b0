//! A real imaged over real HTTP: objects, generations, channels, push and resume, bad input, and a kill -9 in the middle of a push.

use std::fs;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::{build_special_tree, client, noise, ok_json, Imgctl, Server};

fn raw_request(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn push_publish_serve_and_move_channels() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let mode =
        fs::metadata(t.path("server/admin.token")).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).unwrap();
    assert_eq!(mode, 0o600, "the generated token must be private");
    let src = t.path("src");
    build_special_tree(&src);
    t.import(&src, "img");
    fs::write(src.join("small.txt"), b"generation two\n").unwrap();
    t.import(&src, "img");

    let first = ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    assert!(first["uploaded"].as_u64().unwrap() > 5);
    assert_eq!(first["uploaded"], first["objects"], "a fresh server lacks everything");
    let second = ok_json(t.remote(&server, &["--json", "push", "img@2"]));
    assert!(second["uploaded"].as_u64().unwrap() < 10, "gen 2 shares almost everything: {second}");
    let again = ok_json(t.remote(&server, &["--json", "push", "img@2"]));
    assert_eq!(again["uploaded"], 0, "a repeated push sends nothing");

    // Objects: immutable caching, ETag, conditional GET, Range, HEAD.
    let c = client();
    let manifest = second["published"]["manifest"].as_str().unwrap().to_string();
    let url = format!("{}/v1/objects/{manifest}", server.url);
    let r = c.get(&url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{manifest}\""));
    assert!(r.headers().contains_key("x-request-id"));
    let framed = r.bytes().unwrap();
    assert_eq!(c.get(&url).header("if-none-match", &etag).send().unwrap().status(), StatusCode::NOT_MODIFIED);
    let part = c.get(&url).header("range", "bytes=4-9").send().unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], format!("bytes 4-9/{}", framed.len()));
    assert_eq!(&part.bytes().unwrap()[..], &framed[4..10]);
    assert_eq!(c.get(&url).header("range", "bytes=999999-").send().unwrap().status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let head = c.head(&url).send().unwrap();
    assert_eq!(head.headers()["content-length"], framed.len().to_string().as_str());

    // Missing query and batch fetch.
    let absent = blake3::hash(b"never stored").to_hex().to_string();
    let m: Value =
        c.post(format!("{}/v1/objects/missing", server.url)).json(&json!({"digests": [manifest, absent]})).send().unwrap().json().unwrap();
    assert_eq!(m["missing"], json!([absent]));
    let batch =
        c.post(format!("{}/v1/objects/batch", server.url)).json(&json!({"digests": [manifest, absent]})).send().unwrap().bytes().unwrap();
    assert_eq!(&batch[..32], &blake3::Hash::from_hex(&manifest).unwrap().as_bytes()[..]);
    assert_eq!(u32::from_le_bytes(batch[32..36].try_into().unwrap()) as usize, framed.len());
    assert_eq!(batch.len(), 36 + framed.len(), "the absent object is left out");

    // Generations.
    let gens: Value = c.get(format!("{}/v1/generations", server.url)).send().unwrap().json().unwrap();
    assert_eq!(gens["generations"].as_array().unwrap().len(), 2);
    let g2: Value = c.get(format!("{}/v1/generations/img/2", server.url)).send().unwrap().json().unwrap();
    assert_eq!(g2["manifest"], manifest.as_str());

    // Channels: set, conditional poll, promote, rollback, history.
    let set = ok_json(t.remote(&server, &["--json", "channel", "set", "os/pilot", "img@1"]));
    assert_eq!((set["version"].as_u64(), set["generation"].as_str()), (Some(1), Some("img@1")));
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/pilot", "img@2"]));
    let curl = format!("{}/v1/channels/os/pilot", server.url);
    let r = c.get(&curl).send().unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=5");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let doc: Value = r.json().unwrap();
    assert_eq!((doc["version"].as_u64(), doc["generation"].as_str()), (Some(2), Some("img@2")));
    assert_eq!(c.get(&curl).header("if-none-match", &etag).send().unwrap().status(), StatusCode::NOT_MODIFIED);
    let promoted = ok_json(t.remote(&server, &["--json", "channel", "promote", "os/pilot", "os/stable"]));
    assert_eq!(promoted["generation"], "img@2");
    let rolled = ok_json(t.remote(&server, &["--json", "channel", "rollback", "os/pilot"]));
    assert_eq!(
        (rolled["version"].as_u64(), rolled["generation"].as_str(), rolled["action"].as_str()),
        (Some(3), Some("img@1"), Some("rollback"))
    );
    assert_ne!(
        c.get(&curl).header("if-none-match", &etag).send().unwrap().status(),
        StatusCode::NOT_MODIFIED,
        "a new version must change the ETag"
    );
    let hist = ok_json(t.remote(&server, &["--json", "channel", "history", "os/pilot"]));
    let gens: Vec<&str> = hist["versions"].as_array().unwrap().iter().map(|v| v["generation"].as_str().unwrap()).collect();
    assert_eq!(gens, ["img@1", "img@2", "img@1"]);
    let out = t.remote(&server, &["channel", "rollback", "os/stable"]);
    assert_eq!(out.status.code(), Some(6), "nothing to roll back to: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_requests_get_json_4xx_and_store_nothing() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let c = client();
    let token = server.token();
    let base = &server.url;
    let check = |r: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(r.status().as_u16(), status);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"], code, "{v}");
    };
    let good = b"an object's content".to_vec();
    let digest = blake3::hash(&good).to_hex().to_string();
    let framed = tests::framed_raw(&good);
    check(c.put(format!("{base}/v1/objects/{digest}")).body(framed.clone()).send().unwrap(), 401, "token_required");
    check(c.put(format!("{base}/v1/objects/{digest}")).bearer_auth("wrong").body(framed.clone()).send().unwrap(), 403, "bad_token");
    let other = blake3::hash(b"something else").to_hex().to_string();
    check(c.put(format!("{base}/v1/objects/{other}")).bearer_auth(&token).body(framed.clone()).send().unwrap(), 400, "bad_object");
    check(c.put(format!("{base}/v1/objects/{digest}")).bearer_auth(&token).body(framed[..20].to_vec()).send().unwrap(), 400, "bad_object");
    check(c.get(format!("{base}/v1/objects/{other}")).send().unwrap(), 404, "not_found");
    // A batch upload with one bad record stores none of it; a truncated batch is refused.
    let good2 = b"another object".to_vec();
    let framed2 = tests::framed_raw(&good2);
    let record = |hex: &str, framed: &[u8]| format::record::encode(&hex.parse().unwrap(), framed);
    let digest2 = blake3::hash(&good2).to_hex().to_string();
    let mut body = record(&digest2, &framed2);
    body.extend(record(&other, &framed));
    check(c.post(format!("{base}/v1/objects/upload")).bearer_auth(&token).body(body.clone()).send().unwrap(), 400, "bad_object");
    check(c.post(format!("{base}/v1/objects/upload")).body(body).send().unwrap(), 401, "token_required");
    let whole = record(&digest2, &framed2);
    check(
        c.post(format!("{base}/v1/objects/upload")).bearer_auth(&token).body(whole[..whole.len() - 1].to_vec()).send().unwrap(),
        400,
        "bad_records",
    );
    check(c.get(format!("{base}/v1/objects/{digest2}")).send().unwrap(), 404, "not_found");
    check(c.get(format!("{base}/v1/objects/nothex")).send().unwrap(), 400, "bad_digest");
    // An oversized body is refused from its declared length, before it is read; a client still
    // writing may see the connection close, so declare the length and send no body.
    let raw = raw_request(
        server.port(),
        &format!("PUT /v1/objects/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 80u64 << 20),
    );
    assert!(raw.starts_with("HTTP/1.1 413") && raw.contains("body_too_large") && raw.contains("application/json"), "{raw}");
    check(
        c.post(format!("{base}/v1/objects/missing")).header("content-type", "application/json").body("{not json").send().unwrap(),
        400,
        "bad_request",
    );
    for name in ["a%2fb", "x%01", "UPPER", "a//b", "a/..b"] {
        check(c.get(format!("{base}/v1/channels/{name}")).send().unwrap(), 400, "bad_channel_name");
    }
    // HTTP clients resolve "..", so send that one byte for byte.
    let raw = raw_request(server.port(), "GET /v1/channels/os/../../etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 400") && raw.contains("bad_channel_name"), "{raw}");
    check(
        c.post(format!("{base}/v1/generations")).bearer_auth(&token).body(b"not a manifest".to_vec()).send().unwrap(),
        400,
        "bad_manifest",
    );
    // Nothing was stored by any of that.
    let m: Value = c.post(format!("{base}/v1/objects/missing")).json(&json!({"digests": [digest, other]})).send().unwrap().json().unwrap();
    assert_eq!(m["missing"].as_array().unwrap().len(), 2);

    // A manifest whose objects are absent is refused with the list of what is missing.
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), noise(1000, 3)).unwrap();
    let rep = t.import(&src, "img");
    let man = tests::store_objects(&t.store).into_iter().find(|d| *d == rep["manifest"].as_str().unwrap()).unwrap();
    let bytes = cache::Store::open(&t.store).unwrap().get(&man.parse().unwrap()).unwrap();
    let r = c.post(format!("{base}/v1/generations")).bearer_auth(&token).body(bytes).send().unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"], "missing_objects");
    assert_eq!(v["missing"].as_array().unwrap()[0], rep["root"]);
    assert_eq!(c.get(format!("{base}/v1/generations")).send().unwrap().json::<Value>().unwrap()["generations"], json!([]));
    // And the server still serves.
    assert_eq!(c.get(format!("{base}/healthz")).send().unwrap().text().unwrap(), "ok\n");
}

#[test]
fn kill_9_during_push_then_restart_and_resume() {
    let t = Imgctl::new();
    let data = t.path("server");
    let mut server = Server::start(&data);
    let port = server.port();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..12_000 {
        fs::write(src.join(format!("f{i}")), noise(3_000, i)).unwrap();
    }
    t.import(&src, "img");
    let mut push = Command::new(tests::bin("imgctl"))
        .arg("--store")
        .arg(&t.store)
        .args(["push", "img@1", "--server", &server.url, "--token", &server.token()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the server once the first upload batch (of ~1000 objects) has been committed as a
    // pack, far from all of the ~12000 objects.
    let packs = |dir: &std::path::Path| {
        fs::read_dir(dir.join("store/packs"))
            .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "idx")).count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while packs(&data) < 1 {
        assert!(std::time::Instant::now() < deadline, "no upload batch arrived within 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    assert!(!push.wait().unwrap().success(), "the push must fail when the server dies");
    drop(server);

    // After a restart on the same port: consistent, no generation visible, some objects kept.
    let server = Server::start_on(&data, port);
    let c = client();
    assert_eq!(c.get(format!("{}/v1/generations", server.url)).send().unwrap().json::<Value>().unwrap()["generations"], json!([]));
    let out = t.remote(&server, &["--json", "push", "img@1"]);
    let report = ok_json(out);
    assert!(report["uploaded"].as_u64().unwrap() < report["objects"].as_u64().unwrap(), "the resumed push re-sent everything: {report}");
    // Full verification: every object the generation reaches comes back intact.
    let store = cache::Store::open(&t.store).unwrap();
    for hex in tests::store_objects(&t.store) {
        let d: format::Digest = hex.parse().unwrap();
        let framed = c.get(format!("{}/v1/objects/{hex}", server.url)).send().unwrap().bytes().unwrap();
        assert_eq!(store.decode(&framed, &d, 1 << 30).unwrap(), store.get(&d).unwrap(), "object {hex} differs");
    }
}
