//! Real agents under a real rollout: health probes after the switch, one endpoint whose probe fails rolls back by itself and reports the probe's output, the others report healthy after the soak, and a withdrawal sends them back within seconds through the push hint.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::enroll_token;
use tests::{client, Imgctl, Server};

/// The events the server holds of endpoint `id`.
fn events(server: &Server, id: &str) -> Vec<Value> {
    let r = client().get(format!("{}/v1/fleet/endpoints/{id}", server.url)).bearer_auth(server.token()).send().unwrap();
    let v: Value = r.json().unwrap();
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most `secs`) for an event of `kind` from `id` that `pred` accepts.
fn wait_event(server: &Server, id: &str, kind: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let evs = events(server, id);
        if let Some(e) = evs.iter().find(|e| e["kind"] == kind && pred(e)) {
            return e.clone();
        }
        assert!(Instant::now() < until, "endpoint {id} never reported {kind}: {evs:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(server: &Server, id: &str, kind: &str) -> usize {
    events(server, id).iter().filter(|e| e["kind"] == kind).count()
}

/// The agent's `[health]` table: a probe that fails while the agent's directory holds a file
/// `unhealthy`, with its output.
fn health(dir: &Path) -> String {
    format!(
        "interval_seconds = 600\n[health]\ncommand = \"if [ -e {}/unhealthy ]; then echo probe says no to $IMGFS_GENERATION; exit 3; fi; test -e $IMGFS_MOUNT/f\"\ntimeout_seconds = 10\n",
        dir.display()
    )
}

#[test]
fn a_failing_probe_rolls_back_by_itself_the_others_report_healthy_and_a_withdrawal_sends_them_back() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "one").unwrap();
    t.publish(&server, &src, "app", "app/stable");
    std::fs::write(src.join("f"), "two").unwrap();
    t.import(&src, "app");
    t.push_signed(&server, "app@2");

    let token = enroll_token(&server, None, None, json!({}));
    let group = json!({ "name": "paris", "selector": "site=paris", "namespace": { "mounts": [{ "path": "/os", "channel": "app/stable" }] } });
    let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    let root = t.root_file();
    let agents: Vec<Agent> = ["a1", "a2", "a3"]
        .iter()
        .map(|name| {
            let dir = t.path(name);
            Agent::start(&dir, &server, &root, &token, "paris", &health(&dir), &["/os"])
        })
        .collect();
    let ids: Vec<String> = agents.iter().map(Agent::id).collect();
    for a in &agents {
        a.wait_file("/os", "one", 60);
    }
    // The second endpoint's probe will fail.
    std::fs::write(agents[1].dir.join("unhealthy"), "").unwrap();

    // A rollout to app@2: every endpoint at once, a 2 s soak, one failure tolerated.
    let plan = json!({ "name": "test", "ignore_windows": true, "stages": [
        { "percent": 100, "min_sample": 1, "soak_seconds": 2, "success_percent": 50, "failure_budget": 1 } ] });
    let body = json!({ "channel": "app/stable", "generation": "app@2", "plan": plan, "reason": "health test" });
    let started = Instant::now();
    let r = client().post(format!("{}/v1/rollouts", server.url)).bearer_auth(server.token()).json(&body).send().unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());

    // The healthy ones switch (the push hint: their interval is 600 s) and report healthy
    // after the soak.
    for i in [0, 2] {
        agents[i].wait_file("/os", "two", 30);
        wait_event(&server, &ids[i], "switched", 30, |e| e["to"] == "app@2");
        wait_event(&server, &ids[i], "healthy", 30, |e| e["generation"] == "app@2");
    }
    // The unhealthy one switched, failed its probe, went back by itself and says why.
    wait_event(&server, &ids[1], "switched", 30, |e| e["to"] == "app@2");
    let back = wait_event(&server, &ids[1], "rolled_back", 30, |e| e["from"] == "app@2");
    assert_eq!(back["to"], "app@1", "{back}");
    assert_eq!(back["why"], "health probe failed: probe says no to app@2", "{back}");
    let failed = wait_event(&server, &ids[1], "failed", 30, |e| e["generation"] == "app@2");
    assert_eq!(failed["error"], "health probe failed: probe says no to app@2 (exit 3)", "{failed}");
    agents[1].wait_file("/os", "one", 10);
    println!("rollout: healthy on two, rolled back on one, in {:?}", started.elapsed());
    // No flapping: it stays on app@1 while the rollout still offers app@2.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(std::fs::read_to_string(agents[1].mount("/os").join("f")).unwrap(), "one", "{}", agents[1].log());
    assert_eq!((count(&server, &ids[1], "switched"), count(&server, &ids[1], "rolled_back")), (1, 1), "{:#?}", events(&server, &ids[1]));

    // Withdrawn: the endpoints on app@2 are back on app@1 within 5 s, by the push hint.
    let withdrawn = Instant::now();
    let w = ok_json_post(&server, "/v1/withdraw", json!({ "generation": "app@2", "reason": "bad build" }));
    assert_eq!(w["generation"], "app@2", "{w}");
    for i in [0, 2] {
        let took = agents[i].wait_file("/os", "one", 5);
        println!("agent {} back on app@1 {:?} after the withdrawal", i + 1, withdrawn.elapsed().max(took));
        wait_event(&server, &ids[i], "rolled_back", 10, |e| e["why"] == "withdrawn" && e["from"] == "app@2");
    }
    assert!(withdrawn.elapsed() < Duration::from_secs(10), "{:?}", withdrawn.elapsed());
    // And they stay there.
    std::thread::sleep(Duration::from_secs(3));
    for a in &agents {
        assert_eq!(std::fs::read_to_string(a.mount("/os").join("f")).unwrap(), "one", "{}", a.log());
    }
}

fn ok_json_post(server: &Server, route: &str, body: Value) -> Value {
    let r = client().post(format!("{}{route}", server.url)).bearer_auth(server.token()).json(&body).send().unwrap();
    let status = r.status();
    let text = r.text().unwrap();
    assert!(status.is_success(), "{route}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}
