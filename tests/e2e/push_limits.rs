//! `imgctl push` behind a proxy whose body limit refuses large requests.
//!
//! Batches are halved until they pass, and an object too large on its own fails with a
//! message naming the limit.

use std::fs;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tests::proxy::{Proxy, Rule};
use tests::{bin, client, noise, ok_json, Imgctl, Server};

/// A generation of 24 incompressible files of 30 kB each: about 720 kB of objects in all.
fn import_noise(t: &Imgctl) -> Vec<(String, u64)> {
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..24 {
        fs::write(src.join(format!("f{i}")), noise(30_000, i)).unwrap();
    }
    t.import(&src, "img");
    let objects: Value = serde_json::from_str(&t.ok(["--json", "objects", "img@1"])).unwrap();
    objects.as_array().unwrap().iter().map(|o| (o["digest"].as_str().unwrap().to_string(), o["stored_bytes"].as_u64().unwrap())).collect()
}

fn push_through(t: &Imgctl, server: &Server, proxy: &Proxy) -> Output {
    Command::new(bin("imgctl"))
        .arg("--store")
        .arg(&t.store)
        .args(["--json", "push", "img@1", "--server", &proxy.url, "--token", &server.token()])
        .env_remove("IMAGED_SERVER")
        .env_remove("IMAGED_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn a_push_refused_as_too_large_by_a_proxy_is_retried_in_smaller_batches() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let objects = import_noise(&t);
    let largest = objects.iter().map(|(_, n)| *n).max().unwrap();
    let total: u64 = objects.iter().map(|(_, n)| *n).sum();
    let limit = (3 * largest) as usize;
    assert!(total > 4 * limit as u64, "the first batch must be refused: {total} bytes against a limit of {limit}");
    let proxy = Proxy::start(&server.url);
    proxy.set("/v1/objects/upload", Rule::BodyLimit(limit));

    let report = ok_json(push_through(&t, &server, &proxy));
    assert_eq!(report["uploaded"], report["objects"], "{report}");
    let uploads = proxy.log.lock().unwrap().iter().filter(|p| *p == "/v1/objects/upload").count();
    assert!(uploads > 4, "the batch was not split: {uploads} upload requests");
    // The server has every object, and the generation is published.
    let digests: Vec<&str> = objects.iter().map(|(d, _)| d.as_str()).collect();
    let m: Value =
        client().post(format!("{}/v1/objects/missing", server.url)).json(&json!({ "digests": digests })).send().unwrap().json().unwrap();
    assert_eq!(m["missing"], json!([]), "objects did not arrive");
    let g: Value = client().get(format!("{}/v1/generations/img/1", server.url)).send().unwrap().json().unwrap();
    assert_eq!(g["label"], "img@1", "{g}");
}

#[test]
fn an_object_larger_than_the_proxy_limit_fails_the_push_naming_the_limit() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    import_noise(&t);
    let proxy = Proxy::start(&server.url);
    proxy.set("/v1/objects/upload", Rule::BodyLimit(10_000));

    let out = push_through(&t, &server, &proxy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "the server (or its proxy) refused: {err}");
    assert!(err.contains("refused a request body of") && err.contains("as too large"), "{err}");
    assert!(err.contains("client_max_body_size"), "the message must name the proxy's limit: {err}");
    assert!(!err.contains("unknown"), "{err}");
    let gens: Value = client().get(format!("{}/v1/generations", server.url)).send().unwrap().json().unwrap();
    assert_eq!(gens["generations"], json!([]), "nothing is published when objects are missing");
}
