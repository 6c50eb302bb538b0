//! Fifty real agents on this machine: enrollment, two groups by label with a namespace of two mounts from two images, a channel move switched everywhere through the push hint, compliance, reports queued through a server crash without duplicates, stopped agents shown offline, revocation.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::{enroll_token, get};
use tests::{bin, client, ok_json, Imgctl, Server};

const AGENTS: usize = 50;

fn publish(t: &Imgctl, server: &Server, src: &Path, image: &str, content: &str) {
    std::fs::write(src.join("f"), content).unwrap();
    t.publish(server, src, image, &format!("{image}/stable"));
}

/// What each endpoint reports its `path` mount runs.
fn running(server: &Server, path: &str) -> BTreeMap<String, Option<String>> {
    get(server, "/v1/fleet/endpoints")["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let g = e["mounts"].as_array().unwrap().iter().find(|m| m["path"] == path).and_then(|m| m["current"].as_str().map(String::from));
            (e["id"].as_str().unwrap().to_string(), g)
        })
        .collect()
}

/// Polls every 100 ms until `done` or `secs` pass; how long it took.
fn wait(secs: u64, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn events(server: &Server, id: &str) -> Vec<Value> {
    get(server, &format!("/v1/fleet/endpoints/{id}"))["events"].as_array().unwrap().clone()
}

#[test]
fn fifty_agents_enroll_switch_within_seconds_and_report_through_a_server_crash() {
    let t = Imgctl::new();
    let data = t.path("server");
    let config = t.path("imaged.toml");
    // Check-ins every 10 s; an endpoint silent for 25 s is offline.
    std::fs::write(&config, "poll_seconds = 10\nfleet_offline_seconds = 25\n").unwrap();
    let mut server = Server::start_with(&data, 0, Some(&config));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    publish(&t, &server, &src, "os", "os one");
    publish(&t, &server, &src, "app", "app one");

    let ns = |app: Value| json!({ "mounts": [{ "path": "/os", "channel": "os/stable" }, app] });
    for (name, app) in [("paris", json!({ "path": "/app", "channel": "app/stable" })), ("lyon", json!({ "path": "/app", "pinned": "app@1" }))] {
        let group = json!({ "name": name, "selector": format!("site={name}"), "namespace": ns(app) });
        let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let token = enroll_token(&server, Some(AGENTS as u32), Some(3600), json!({ "fleet": "test" }));

    // Fifty agents, half in each site, each with its own key, state, caches and mounts.
    let root = t.root_file();
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            let site = if i % 2 == 0 { "paris" } else { "lyon" };
            Agent::start(&t.path(&format!("agent{i}")), &server, &root, &token, site, "", &["/os", "/app"])
        })
        .collect();
    let ids: Vec<String> = agents.iter().map(Agent::id).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), AGENTS, "one id per key");
    for a in &agents {
        a.wait_file("/os", "os one", 120);
        a.wait_file("/app", "app one", 120);
    }
    wait(60, "all fifty report both mounts", || running(&server, "/app").values().filter(|g| g.is_some()).count() == AGENTS);
    let paris = get(&server, "/v1/fleet/endpoints?group=paris")["endpoints"].as_array().unwrap().len();
    assert_eq!(paris, AGENTS / 2);

    // A channel move reaches every endpoint through the push hint: all fifty report the
    // switch within 5 s of the move.
    std::fs::write(src.join("f"), "os two").unwrap();
    t.import(&src, "os");
    t.push_signed(&server, "os@2");
    let moved = Instant::now();
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@2"]));
    wait(60, "all fifty on os@2", || running(&server, "/os").values().all(|g| g.as_deref() == Some("os@2")));
    let took = moved.elapsed();
    eprintln!("fleet: the last of {AGENTS} switches was reported {took:?} after the channel move");
    assert!(took < Duration::from_secs(5), "the last switch was reported {took:?} after the move");
    for id in &ids {
        let switched = events(&server, id).iter().filter(|e| e["kind"] == "switched" && e["to"] == "os@2").count();
        assert_eq!(switched, 1, "{id}");
    }
    let c = get(&server, "/v1/fleet/compliance?target=os/stable");
    assert_eq!((c["on"].as_u64(), c["total"].as_u64()), (Some(AGENTS as u64), Some(AGENTS as u64)), "{c}");
    let out = t.remote(&server, &["fleet", "compliance", "os/stable"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("{AGENTS} of {AGENTS} on os@2")), "{text}");
    // The pinned app mount of Lyon stays on app@1: compliance with app/stable says why.
    let c = get(&server, "/v1/fleet/compliance?target=app/stable");
    assert_eq!(c["on"].as_u64(), Some(AGENTS as u64), "app@1 is what app/stable names: {c}");

    // Five agents stop; the server is killed; the others roll back locally (imgfs rollback
    // works offline) and their reports wait on disk.
    for a in &mut agents[..5] {
        a.stop();
    }
    let stopped_at = tests::fleet::now();
    std::thread::sleep(Duration::from_secs(6)); // the server writes last-seen times every 5 s
    let port = server.port();
    server.kill();
    for a in &agents[5..] {
        let out = std::process::Command::new(bin("imgfs")).arg("rollback").arg(a.mount("/os")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(Duration::from_secs(30));
    let server = Server::start_with(&data, port, Some(&config));

    // Back: every running endpoint's rollback arrives once, and they return to os@2.
    wait(120, "the queued rollbacks arrive", || {
        ids[5..].iter().all(|id| events(&server, id).iter().any(|e| e["kind"] == "rolled_back" && e["to"] == "os@1"))
    });
    wait(120, "the forty-five back on os@2", || {
        let r = running(&server, "/os");
        ids[5..].iter().all(|id| r[id].as_deref() == Some("os@2"))
    });
    for id in &ids[5..] {
        let evs = events(&server, id);
        let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{id}: stored events in increasing order, none twice: {seqs:?}");
        let back = evs.iter().filter(|e| e["kind"] == "rolled_back" && e["to"] == "os@1").count();
        assert_eq!(back, 1, "{id}: the rollback once: {evs:?}");
    }
    // The others switch again while the five stay stopped: compliance counts the forty-five
    // and shows the five offline since their last check-in, on their last generation.
    std::fs::write(src.join("f"), "os three").unwrap();
    t.import(&src, "os");
    t.push_signed(&server, "os@3");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@3"]));
    wait(60, "the forty-five on os@3", || {
        let r = running(&server, "/os");
        ids[5..].iter().all(|id| r[id].as_deref() == Some("os@3"))
    });
    let c = get(&server, "/v1/fleet/compliance?target=os/stable");
    assert_eq!((c["generation"].as_str(), c["on"].as_u64(), c["counts"]["offline"].as_u64()), (Some("os@3"), Some(45), Some(5)), "{c}");
    for id in &ids[..5] {
        let s = c["stragglers"].as_array().unwrap().iter().find(|s| s["endpoint"] == id.as_str()).unwrap_or_else(|| panic!("{id} in {c}"));
        assert_eq!(s["reason"], "offline", "{s}");
        let since = s["since"].as_i64().unwrap();
        assert!(since <= stopped_at && since > stopped_at - 60, "{s}");
        assert_eq!(s["running"].as_array().unwrap().iter().find(|m| m["path"] == "/os").unwrap()["current"], "os@2");
    }
    let listed = get(&server, "/v1/fleet/endpoints?not_on=os%403");
    assert_eq!(listed["endpoints"].as_array().unwrap().iter().filter(|e| e["offline"] == true).count(), 5, "{listed}");

    // The audit log names who did what: the admin's channel moves and groups, each
    // enrollment by its token.
    let log = get(&server, "/v1/audit");
    let entries = log["entries"].as_array().unwrap();
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("endpoint enroll"), AGENTS, "{log}");
    assert!(entries.iter().filter(|e| e["action"] == "endpoint enroll").all(|e| e["actor"].as_str().unwrap().starts_with("enroll-token ")));
    assert_eq!(entries.iter().filter(|e| e["action"] == "group create" && e["actor"] == "admin").count(), 2);
    assert!(entries.iter().any(|e| e["actor"] == "admin" && e["subject"].as_str().unwrap().contains("os/stable") && e["after"] == "os@3"), "{log}");

    // A revoked endpoint is refused: its agent stops (exit 7), everyone else carries on.
    let r = client().delete(format!("{}/v1/fleet/endpoints/{}", server.url, ids[5])).bearer_auth(server.token()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let victim = agents[5].child.as_mut().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = victim.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "the revoked agent did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(7));
    let c = get(&server, "/v1/fleet/compliance?target=os@3");
    assert_eq!(c["total"].as_u64(), Some(AGENTS as u64 - 1), "revoked endpoints are not counted");
    let log = get(&server, "/v1/audit");
    let revoke = log["entries"].as_array().unwrap().iter().find(|e| e["action"] == "endpoint revoke").cloned().unwrap_or(Value::Null);
    assert_eq!((revoke["actor"].as_str(), revoke["subject"].as_str()), (Some("admin"), Some(format!("endpoint {}", ids[5]).as_str())));
}
