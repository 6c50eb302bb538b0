//! Fifty real agents through a staged rollout: a canary ring whose probe fails trips the brake and rolls itself back, compliance says why, the fix and a resume complete it, then a withdrawal sends every online endpoint back within seconds and an offline one at its next check-in.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::enroll_token;
use tests::{client, ok_json, Imgctl, Server};

const AGENTS: usize = 50;
/// Agents 0-1 are the pilot ring, 2-4 the canary ring (their probe fails on os@2 until fixed).
const PILOTS: std::ops::Range<usize> = 0..2;
const CANARIES: std::ops::Range<usize> = 2..5;

fn get(server: &Server, path: &str) -> Value {
    let r = client().get(format!("{}{path}", server.url)).bearer_auth(server.token()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().unwrap()
}

fn post(server: &Server, path: &str, body: Value) -> Value {
    let r = client().post(format!("{}{path}", server.url)).bearer_auth(server.token()).json(&body).send().unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert!(status < 300, "{path}: {status} {v}");
    v
}

/// What each endpoint reports its `/os` mount runs.
fn running(server: &Server) -> BTreeMap<String, Option<String>> {
    get(server, "/v1/fleet/endpoints")["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let g = e["mounts"].as_array().unwrap().iter().find(|m| m["path"] == "/os").and_then(|m| m["current"].as_str().map(String::from));
            (e["id"].as_str().unwrap().to_string(), g)
        })
        .collect()
}

/// Polls every 200 ms until `done`, at most `secs`.
fn wait(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line of the timeline, seconds since `t0`.
fn mark(t0: Instant, what: &str) {
    eprintln!("timeline {:>6.1} s  {what}", t0.elapsed().as_secs_f64());
}

fn publish(t: &Imgctl, server: &Server, src: &Path, content: &str) {
    std::fs::write(src.join("f"), content).unwrap();
    t.import(src, "os");
    t.push_signed(server, "os@latest");
}

#[test]
fn fifty_agents_a_failing_canary_ring_trips_the_brake_a_resume_completes_and_a_withdrawal_undoes_it_in_seconds() {
    let t = Imgctl::new();
    let config = t.path("imaged.toml");
    std::fs::write(&config, "poll_seconds = 10\n").unwrap();
    let server = Server::start_with(&t.path("server"), 0, Some(&config));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    publish(&t, &server, &src, "one");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@1"]));
    publish(&t, &server, &src, "two");

    let ns = json!({ "mounts": [{ "path": "/os", "channel": "os/stable" }] });
    post(&server, "/v1/fleet/groups", json!({ "name": "fleet", "selector": "site=lab", "namespace": ns }));
    post(&server, "/v1/fleet/groups", json!({ "name": "pilot", "selector": "ring=pilot" }));
    post(&server, "/v1/fleet/groups", json!({ "name": "canary", "selector": "ring=canary" }));
    let token = enroll_token(&server, None, None, json!({ "site": "lab" }));
    let root = t.root_file();
    // Every agent probes its mount: healthy unless a file named `broken` sits in its directory
    // (the canary ring's), and only on os@2.
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            let dir = t.path(&format!("agent{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let ring = if PILOTS.contains(&i) { "pilot" } else if CANARIES.contains(&i) { "canary" } else { "rest" };
            if ring == "canary" {
                std::fs::write(dir.join("broken"), "os@2 breaks this machine").unwrap();
            }
            let probe = format!(
                "[health]\ncommand = 'if [ \"$IMGFS_GENERATION\" = os@2 ] && [ -e {} ]; then cat {}; exit 3; fi'\ntimeout_seconds = 10\n",
                dir.join("broken").display(),
                dir.join("broken").display()
            );
            Agent::start(&dir, &server, &root, &token, "lab", &probe, &["/os"])
        })
        .collect();
    // The rings are operators' labels.
    let ids: Vec<String> = agents.iter().map(Agent::id).collect();
    for (i, id) in ids.iter().enumerate() {
        let ring = if PILOTS.contains(&i) { "pilot" } else if CANARIES.contains(&i) { "canary" } else { "rest" };
        let r = client().put(format!("{}/v1/fleet/endpoints/{id}/labels", server.url)).bearer_auth(server.token()).json(&json!({ "set": { "ring": ring } })).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    wait(120, "all fifty mounted on os@1", || running(&server).values().filter(|g| g.as_deref() == Some("os@1")).count() == AGENTS);

    // The plan: pilot, canary (tolerates 1 failure), everyone; soaks of 2 s.
    let plan = json!({ "name": "rings", "lost_after_seconds": 600, "stages": [
        { "group": "pilot", "min_sample": 2, "soak_seconds": 2, "failure_budget": 0 },
        { "group": "canary", "min_sample": 3, "soak_seconds": 2, "failure_budget": 1 },
        { "percent": 100, "min_sample": 10, "soak_seconds": 2, "success_percent": 95, "failure_budget": 2 },
    ] });
    let t0 = Instant::now();
    let r = post(&server, "/v1/rollouts", json!({ "channel": "os/stable", "generation": "os@2", "plan": plan, "reason": "fix" }));
    let id = r["id"].as_str().unwrap().to_string();
    mark(t0, &format!("rollout {id} started"));
    let rollout = || get(&server, &format!("/v1/rollouts/{id}"));
    wait(60, "the pilot ring passes", || rollout()["stage"] == 1);
    mark(t0, "stage 1 (pilot) passed");
    wait(60, "the brake", || rollout()["state"] == "halted");
    let halted = rollout();
    mark(t0, &format!("halted: {}", halted["rule"]));
    let failed: Vec<&str> = halted["failed"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(failed.len() >= 2 && failed.iter().all(|f| ids[CANARIES].contains(&f.to_string())), "{halted:#}");
    // The canaries are back on os@1 by themselves; compliance says they failed, with the output.
    wait(30, "the canaries rolled back", || {
        let r = running(&server);
        ids[CANARIES].iter().all(|id| r[id].as_deref() == Some("os@1"))
    });
    mark(t0, "canaries back on os@1 by themselves");
    let c = get(&server, "/v1/fleet/compliance?target=os@2");
    for id in &ids[CANARIES] {
        let s = c["stragglers"].as_array().unwrap().iter().find(|s| s["endpoint"] == id.as_str()).unwrap_or_else(|| panic!("{id}: {c}"));
        assert!(matches!(s["reason"].as_str(), Some("failed" | "rolled_back")), "{s}");
        let text = s["error"].as_str().or(s["why"].as_str()).unwrap_or("");
        assert!(text.contains("os@2 breaks this machine"), "the probe's output: {s}");
    }
    let rest = running(&server);
    assert!(ids[5..].iter().all(|id| rest[id].as_deref() == Some("os@1")), "the brake kept the rest on os@1");

    // The fix, then resume: the rollout completes and every endpoint ends on os@2.
    for i in CANARIES {
        std::fs::remove_file(t.path(&format!("agent{i}")).join("broken")).unwrap();
    }
    post(&server, &format!("/v1/rollouts/{id}/resume"), json!({}));
    mark(t0, "fixed; resumed");
    wait(120, "completion", || rollout()["state"] == "completed");
    mark(t0, "completed: the channel names os@2");
    wait(60, "all fifty on os@2", || running(&server).values().all(|g| g.as_deref() == Some("os@2")));
    mark(t0, "all fifty on os@2");
    for line in rollout()["log"].as_array().unwrap() {
        eprintln!("decision  {}  {}: {}", line["time"], line["actor"].as_str().unwrap(), line["text"].as_str().unwrap());
    }

    // Withdrawal: one agent is offline; every online one is back on os@1 within 5 s.
    agents[AGENTS - 1].stop();
    let asked = Instant::now();
    let w = post(&server, "/v1/withdraw", json!({ "generation": "os@2", "reason": "a pre-release pushed by mistake" }));
    assert_eq!(w["channels"], json!([["os/stable", "os@1"]]), "{w}");
    wait(30, "every online agent back on os@1", || {
        let r = running(&server);
        ids[..AGENTS - 1].iter().all(|id| r[id].as_deref() == Some("os@1"))
    });
    let took = asked.elapsed();
    mark(t0, &format!("withdrawn: {} online agents back on os@1 {took:?} after the request", AGENTS - 1));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(running(&server)[&ids[AGENTS - 1]].as_deref(), Some("os@2"), "the offline one still runs it");
    agents[AGENTS - 1].restart();
    wait(60, "the offline agent rolls back at its next check-in", || running(&server)[&ids[AGENTS - 1]].as_deref() == Some("os@1"));
    mark(t0, "the offline agent back on os@1 after its restart");
    let log = get(&server, "/v1/audit");
    let withdraw = log["entries"].as_array().unwrap().iter().find(|e| e["action"] == "withdraw").cloned().unwrap_or(Value::Null);
    assert_eq!((withdraw["actor"].as_str(), withdraw["subject"].as_str()), (Some("admin"), Some("os@2")), "{withdraw}");
}
