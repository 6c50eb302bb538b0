//! Real `imgfs agent`s against a real imaged: enrollment, a namespace of a channel mount and a pinned mount (with a writable layer whose drift is reported) through real FUSE, a channel move switched by the push hint, a revoked endpoint refused while its mounts keep serving.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::fleet::enroll_token;
use tests::agent::Agent;
use tests::{bin, client, ok_json, Imgctl, Server};

fn publish(t: &Imgctl, server: &Server, src: &Path, content: &str) {
    std::fs::write(src.join("f"), content).unwrap();
    t.import(src, "app");
    t.push_signed(server, "app@latest");
    ok_json(t.remote(server, &["--json", "channel", "set", "app/stable", "app@latest"]));
}

/// The kinds of the events the server holds of endpoint `id`.
fn event_kinds(server: &Server, id: &str) -> Vec<String> {
    let r = client().get(format!("{}/v1/fleet/endpoints/{id}", server.url)).bearer_auth(server.token()).send().unwrap();
    let v: Value = r.json().unwrap();
    v["events"].as_array().map(|a| a.iter().map(|e| e["kind"].as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
}

fn wait_event(server: &Server, id: &str, kind: &str, count: usize, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let kinds = event_kinds(server, id);
        if kinds.iter().filter(|k| *k == kind).count() >= count {
            return;
        }
        assert!(Instant::now() < until, "endpoint {id} never reported {count} {kind}: {kinds:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agents_enroll_mount_their_namespace_switch_on_a_channel_move_and_a_revoked_one_stops() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    publish(&t, &server, &src, "one");

    let token = enroll_token(&server, None, None, json!({}));
    let group = json!({ "name": "paris", "selector": "site=paris", "namespace": { "mounts": [
        { "path": "/os", "channel": "app/stable" },
        { "path": "/pinned", "pinned": "app@1", "cache_share": 10, "writable": { "protect": ["f"], "drift_interval_seconds": 1 } },
    ] } });
    let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());

    let root = t.root_file();
    // A long interval: switches within seconds can only come from the push hint.
    let (extra, paths) = ("interval_seconds = 600", &["/os", "/pinned"]);
    let a1 = Agent::start(&t.path("a1"), &server, &root, &token, "paris", extra, paths);
    let mut a2 = Agent::start(&t.path("a2"), &server, &root, &token, "paris", extra, paths);
    let (id1, id2) = (a1.id(), a2.id());
    assert_ne!(id1, id2);
    for a in [&a1, &a2] {
        a.wait_file("/os", "one", 60);
        a.wait_file("/pinned", "one", 60);
    }
    // The key never leaves the endpoint and only its owner reads it.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(a1.dir.join("state/endpoint.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    for id in [&id1, &id2] {
        wait_event(&server, id, "mounted", 2, 30);
        wait_event(&server, id, "facts", 1, 30);
    }
    // The pinned mount has a writable layer whose policy protects f: an edit is undone, and
    // the drift event reaches the server.
    std::fs::write(a1.mount("/pinned").join("f"), "tampered").unwrap();
    a1.wait_file("/pinned", "one", 10);
    wait_event(&server, &id1, "drift", 1, 30);
    let r = client().get(format!("{}/v1/fleet/endpoints/{id1}", server.url)).bearer_auth(server.token()).send().unwrap();
    let shown: Value = r.json().unwrap();
    let drift = shown["events"].as_array().unwrap().iter().find(|e| e["kind"] == "drift").cloned().unwrap();
    assert_eq!((drift["path"].as_str(), drift["file"].as_str(), drift["drift"].as_str()), (Some("/pinned"), Some("f"), Some("restored")), "{drift}");
    assert_eq!(drift["local"], format::Digest::of(b"tampered").to_hex(), "{drift}");
    // The pinned mount says so.
    let out = Command::new(bin("imgfs")).arg("status").arg(a1.mount("/pinned")).arg("--json").output().unwrap();
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((st["at"].as_str(), st.get("channel")), (Some("app@1"), None), "{st}");

    // A channel move: the push hint switches both within seconds (their interval is 600 s);
    // the pinned mounts stay.
    let moved = Instant::now();
    publish(&t, &server, &src, "two");
    for a in [&a1, &a2] {
        a.wait_file("/os", "two", 30);
    }
    for id in [&id1, &id2] {
        wait_event(&server, id, "switched", 1, 30);
    }
    let took = moved.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(std::fs::read_to_string(a1.mount("/pinned").join("f")).unwrap(), "one");

    // Revoked: the agent is refused and stops (exit code 7); its mounts keep serving.
    let r = client().delete(format!("{}/v1/fleet/endpoints/{id2}", server.url)).bearer_auth(server.token()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = a2.child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "the revoked agent did not stop: {}", a2.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(7), "{}", a2.log());
    assert!(a2.log().contains("endpoint_revoked"), "{}", a2.log());
    assert_eq!(std::fs::read_to_string(a2.mount("/os").join("f")).unwrap(), "two");
    // The other agent goes on.
    publish(&t, &server, &src, "three");
    a1.wait_file("/os", "three", 30);
}
