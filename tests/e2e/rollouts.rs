//! Rollouts on the server spoken to by synthetic endpoints: stages by group and share, gates on reported health, the brake, resume, completion moving the channel, kill -9 in the middle of a stage with exact counts after it and a re-sent report counted once, withdrawal, pins and holds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::fleet::{call, get, Synthetic};
use tests::{client, Imgctl, Server};

/// Polls the rollout until `done` (at most 15 s: the server ticks every second).
fn wait_rollout(server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(server, &format!("/v1/rollouts/{id}"));
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < until, "{what}: {r:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An endpoint's desired generation and rollout for `/os`.
fn desired(e: &Synthetic, actual: &str) -> (String, Option<String>, Value) {
    let (status, _, d) = e.check_in(actual, None);
    assert_eq!(status, 200, "{d}");
    let m = d["mounts"].as_array().unwrap().iter().find(|m| m["path"] == "/os").cloned().unwrap_or(Value::Null);
    (m["generation"].as_str().unwrap_or("").to_string(), m["rollout"].as_str().map(String::from), d)
}

/// Reports a switch to `to` (and, if `healthy`, health on it) with sequence numbers from `seq`.
fn switch(e: &Synthetic, seq: u64, from: &str, to: &str, healthy: bool) {
    let mut events = vec![json!({ "seq": seq, "time": 1, "kind": "switched", "path": "/os", "from": from, "to": to, "millis": 5 })];
    if healthy {
        events.push(json!({ "seq": seq + 1, "time": 1, "kind": "healthy", "path": "/os", "generation": to }));
    }
    let (status, body) = e.report(json!(events), json!([]));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_rollout_advances_on_reported_health_halts_on_the_brake_survives_a_crash_and_a_withdrawal_undoes_it() {
    let t = Imgctl::new();
    let data = t.path("server");
    let mut server = Server::start(&data);
    let mut eps = tests::fleet::three_generations_and_four_endpoints(&t, &server);
    let ns = json!({ "mounts": [{ "path": "/os", "channel": "img/stable" }] });
    assert_eq!(call(&server, "POST", "/v1/fleet/groups", json!({ "name": "all", "selector": "site=x", "namespace": ns })).0, 201);
    assert_eq!(call(&server, "POST", "/v1/fleet/groups", json!({ "name": "pilot", "members": [eps[0].id] })).0, 201);

    // A two-stage plan: the pilot group, then everyone; no failure tolerated.
    let plan = json!({ "name": "two", "lost_after_seconds": 900, "stages": [
        { "group": "pilot", "min_sample": 1, "soak_seconds": 0, "failure_budget": 0 },
        { "percent": 100, "min_sample": 1, "soak_seconds": 0, "failure_budget": 0 },
    ] });
    let (status, r) =
        call(&server, "POST", "/v1/rollouts", json!({ "channel": "img/stable", "generation": "img@2", "plan": plan, "reason": "fix" }));
    assert_eq!((status, r["state"].as_str()), (201, Some("running")), "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let (status, again) = call(&server, "POST", "/v1/rollouts", json!({ "channel": "img/stable", "generation": "img@3" }));
    assert_eq!((status, again["error"].as_str()), (409, Some("rollout_active")));

    // Stage 1 reaches the pilot alone; the others are not offered it yet.
    let (g, rollout, _) = desired(&eps[0], "/os=img@1");
    assert_eq!((g.as_str(), rollout.as_deref()), ("img@2", Some(id.as_str())));
    assert_eq!(desired(&eps[1], "/os=img@1").0, "img@1");
    let c = get(&server, "/v1/fleet/compliance?target=img@2");
    assert_eq!(
        (c["counts"]["not_yet_offered"].as_u64(), c["counts"]["pending"].as_u64()),
        (Some(3), Some(1)),
        "the pilot is offered it: {c}"
    );
    switch(&eps[0], 1, "img@1", "img@2", true);
    let r = wait_rollout(&server, &id, "stage 1 passes on the pilot's health", |r| r["stage"] == 1);
    assert!(
        r["log"].as_array().unwrap().iter().any(|d| d["text"].as_str().unwrap().starts_with("stage 1 passed: 1 healthy of 1")),
        "{r:#}"
    );

    // Stage 2 under way: host2 switched and then reported healthy, host3 switched only, host1
    // has not reported yet.
    assert_eq!(desired(&eps[1], "/os=img@1").0, "img@2");
    let switched = json!([{ "seq": 1, "time": 1, "kind": "switched", "path": "/os", "from": "img@1", "to": "img@2", "millis": 5 }]);
    assert_eq!(eps[2].report(switched.clone(), json!([])).0, 200);
    assert_eq!(eps[2].report(json!([{ "seq": 2, "time": 1, "kind": "healthy", "path": "/os", "generation": "img@2" }]), json!([])).0, 200);
    switch(&eps[3], 1, "img@1", "img@2", false);
    let under_way = json!({ "stage": 1, "targeted": 4, "switched": 3, "healthy": 2, "failed": 0, "lost": 0, "waiting": 0 });
    let before = wait_rollout(&server, &id, "stage 2 counted", |r| r["counts"] == under_way);
    assert_eq!((before["state"].as_str(), before["stage"].as_u64()), (Some("running"), Some(1)), "{before:#}");

    // kill -9 in the middle of the stage: after a restart on the same data the rollout is in
    // the same stage, started at the same time, and its first count (the stored one is still
    // stage 1's) is exactly what it was.
    let port = server.port();
    server.kill();
    server = Server::start_on(&data, port);
    let after = get(&server, &format!("/v1/rollouts/{id}"));
    for field in ["state", "stage", "stage_started", "stage_times", "acknowledged"] {
        assert_eq!(after[field], before[field], "{field} after the restart: {after:#}");
    }
    let after = wait_rollout(&server, &id, "stage 2 recounted after the restart", |r| r["counts"]["stage"] == 1);
    assert_eq!(after["counts"], under_way, "{after:#}");
    // host2 re-sends its first batch (its ack was lost in the crash, say): the same sequence
    // number is a duplicate, so its later health is not undone by the old `switched`.
    for e in eps.iter_mut() {
        assert_eq!(e.open_session(tests::fleet::now()).0, 200);
    }
    let (status, ack) = eps[2].report(switched, json!([]));
    assert_eq!(
        (status, ack["acked"].as_u64(), ack["stored"].as_u64(), ack["duplicates"].as_u64()),
        (200, Some(2), Some(0), Some(1)),
        "{ack}"
    );

    // Stage 2: host1 fails its probe: the brake halts the rollout, counting the others as before.
    let failed =
        json!([{ "seq": 1, "time": 1, "kind": "failed", "path": "/os", "generation": "img@2", "error": "health probe failed: boom" }]);
    assert_eq!(eps[1].report(failed, json!([])).0, 200);
    let r = wait_rollout(&server, &id, "the brake", |r| r["state"] == "halted");
    assert_eq!(r["failed"], json!([eps[1].id]), "{r:#}");
    assert_eq!(
        r["counts"],
        json!({ "stage": 1, "targeted": 4, "switched": 3, "healthy": 2, "failed": 1, "lost": 0, "waiting": 0 }),
        "{r:#}"
    );
    assert!(r["rule"].as_str().unwrap().contains("budget 0"));
    let c = get(&server, "/v1/fleet/compliance?target=img@2");
    let s = c["stragglers"].as_array().unwrap().iter().find(|s| s["endpoint"] == eps[1].id.as_str()).unwrap().clone();
    assert_eq!((s["reason"].as_str(), s["error"].as_str()), (Some("failed"), Some("health probe failed: boom")));

    // A crash while halted loses nothing either.
    server.kill();
    server = Server::start_on(&data, port);
    assert_eq!(get(&server, &format!("/v1/rollouts/{id}"))["state"], "halted");

    // Resume acknowledges the failure; the rest report healthy and the rollout completes.
    let (status, r) = call(&server, "POST", &format!("/v1/rollouts/{id}/resume"), json!({}));
    assert_eq!((status, r["state"].as_str()), (200, Some("running")), "{r}");
    for e in eps.iter_mut().skip(1) {
        assert_eq!(e.open_session(tests::fleet::now()).0, 200);
        switch(e, 10, "img@1", "img@2", true);
    }
    let r = wait_rollout(&server, &id, "completion", |r| r["state"] == "completed");
    assert_eq!(r["stage"], 2);
    assert_eq!(get(&server, "/v1/channels/img/stable")["generation"], "img@2", "the channel moved when the last stage passed");
    let (status, r) = call(&server, "POST", &format!("/v1/rollouts/{id}/pause"), json!({}));
    assert_eq!((status, r["error"].as_str()), (409, Some("rollout_state")));

    // Pins and holds.
    assert_eq!(eps[0].open_session(tests::fleet::now()).0, 200);
    assert_eq!(call(&server, "PUT", &format!("/v1/fleet/endpoints/{}/pin", eps[2].id), json!({ "generation": "img@1" })).0, 200);
    let (g, _, d) = desired(&eps[2], "/os=img@2");
    assert_eq!((g.as_str(), d["mounts"][0]["pinned"].as_str()), ("img@1", Some("img@1")), "{d}");
    assert_eq!(call(&server, "PUT", &format!("/v1/fleet/endpoints/{}/hold", eps[3].id), json!({ "reason": "trade show" })).0, 200);

    // Withdrawal: the channel goes back, every endpoint is told, it is never offered again.
    let (status, w) = call(&server, "POST", "/v1/withdraw", json!({ "generation": "img@2", "reason": "pre-release pushed by mistake" }));
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["channels"], json!([["img/stable", "img@1"]]));
    assert_eq!(get(&server, "/v1/channels/img/stable")["generation"], "img@1");
    let (g, _, d) = desired(&eps[0], "/os=img@2");
    assert_eq!((g.as_str(), d["withdrawn"].clone()), ("img@1", json!(["img@2"])));
    let (status, body) = call(&server, "POST", "/v1/rollouts", json!({ "channel": "img/stable", "generation": "img@2" }));
    assert_eq!((status, body["error"].as_str()), (409, Some("withdrawn")));
    let r = client()
        .put(format!("{}/v1/channels/img/stable", server.url))
        .bearer_auth(server.token())
        .json(&json!({ "generation": "img@2" }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let c = get(&server, "/v1/fleet/compliance?target=img@1");
    let held = c["stragglers"].as_array().unwrap().iter().find(|s| s["endpoint"] == eps[3].id.as_str()).unwrap().clone();
    assert_eq!((held["reason"].as_str(), held["why"].as_str()), (Some("held"), Some("trade show")));

    // The audit log has every decision with its actor.
    let log = get(&server, "/v1/audit");
    let actions: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
        .collect();
    for (actor, action) in [
        ("admin", "rollout start"),
        ("rollout", "rollout stage"),
        ("rollout", "rollout halt"),
        ("admin", "rollout resume"),
        ("rollout", "rollout complete"),
        ("admin", "withdraw"),
        ("admin", "endpoint pin"),
        ("admin", "endpoint hold"),
    ] {
        assert!(actions.contains(&(actor.to_string(), action.to_string())), "{actor} {action} in {actions:?}");
    }
}
