//! Fifty real agents through the built-in `normal` plan on a test clock: the 50% stage, whose probe fails because an operator labels its endpoints `fault=probe`, trips the brake and rolls itself back, compliance says why, the fix and a resume complete it, then a withdrawal sends every online endpoint back within seconds and an offline one (its mount cut off too) at its next check-in, reporting the rollback as the withdrawal's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::{enroll_token, get, post};
use tests::tunnel::Tunnel;
use tests::{client, ok_json, Imgctl, Server, TestClock};

const AGENTS: usize = 50;
/// Agents 0-1 are the pilot group.
const PILOTS: std::ops::Range<usize> = 0..2;

/// What each endpoint reports its `/os` mount runs.
fn running(server: &Server) -> BTreeMap<String, Option<String>> {
    get(server, "/v1/fleet/endpoints")["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let g =
                e["mounts"].as_array().unwrap().iter().find(|m| m["path"] == "/os").and_then(|m| m["current"].as_str().map(String::from));
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

/// The built-in `normal` plan's stages: pilot group, then 1%, 10%, 50%, 100% of buckets.
const NORMAL_PERCENTS: [u32; 4] = [1, 10, 50, 100];

/// The first stage (0-based) of the `normal` plan that takes an endpoint of bucket `b`.
fn entry_stage(pilot: bool, b: u32) -> usize {
    if pilot {
        return 0;
    }
    1 + NORMAL_PERCENTS.iter().position(|p| b < p * 100).expect("100% takes every bucket")
}

#[test]
fn fifty_agents_the_normal_plan_halts_on_a_failing_stage_a_resume_completes_and_a_withdrawal_undoes_it_in_seconds() {
    let t = Imgctl::new();
    let config = t.path("imaged.toml");
    std::fs::write(&config, "poll_seconds = 10\n").unwrap();
    // The server, the agents and their mounts share one test clock: the plan's soaks (10 min to
    // an hour) pass by moving it, not by waiting.
    let clock = TestClock::new(&t.path("clock"));
    let server = Server::start_clocked(&t.path("server"), Some(&config), &clock);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    publish(&t, &server, &src, "one");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@1"]));
    publish(&t, &server, &src, "two");

    let ns = json!({ "mounts": [{ "path": "/os", "channel": "os/stable" }] });
    post(&server, "/v1/fleet/groups", json!({ "name": "fleet", "selector": "site=lab", "namespace": ns }));
    post(&server, "/v1/fleet/groups", json!({ "name": "pilot", "selector": "ring=pilot" }));
    let token = enroll_token(&server, None, None, json!({ "site": "lab" }));
    let root = t.root_file();
    let env = [("IMAGED_TEST_CLOCK", clock.path())];
    // Every agent probes its mount: healthy unless the endpoint carries the label `fault=probe`
    // (an operator's label, standing in for a machine-specific fault), and only on os@2. The
    // probe sees the endpoint's labels, as the server's desired state gives them, in
    // IMGFS_LABELS.
    let probe = "[health]\ncommand = 'case \"$IMGFS_GENERATION,$IMGFS_LABELS,\" in os@2,fault=probe,*|os@2,*,fault=probe,*) echo \"os@2 breaks this machine ($IMGFS_LABELS)\"; exit 3;; esac'\ntimeout_seconds = 10\n";
    // The last agent, the one offline during the withdrawal, reaches the server (it and its
    // mount) through a tunnel the test cuts.
    let tunnel = Tunnel::start(&server.url);
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            let url = if i == AGENTS - 1 { &tunnel.url } else { &server.url };
            Agent::start_at(&t.path(&format!("agent{i}")), url, &root, &token, "lab", probe, &["/os"], &env)
        })
        .collect();
    let ids: Vec<String> = agents.iter().map(Agent::id).collect();
    // Agents 0-1 are the pilot group (an operator's label).
    for id in &ids[PILOTS] {
        let r = client()
            .put(format!("{}/v1/fleet/endpoints/{id}/labels", server.url))
            .bearer_auth(server.token())
            .json(&json!({ "set": { "ring": "pilot" } }))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    wait(120, "all fifty mounted on os@1", || running(&server).values().filter(|g| g.as_deref() == Some("os@1")).count() == AGENTS);

    // The rollout will be r1: each endpoint's stage follows from its stable bucket. The whole
    // 50% stage fails its probe on os@2.
    let stage_of: Vec<usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| entry_stage(PILOTS.contains(&i), api::rollouts::bucket(&id.parse().unwrap(), api::rollouts::RolloutId(1))))
        .collect();
    let broken: Vec<usize> = (0..AGENTS).filter(|i| stage_of[*i] == 3).collect();
    assert!(broken.len() >= 3, "the 50% stage has {} of 50 endpoints: too few to trip its budget of 2", broken.len());
    for i in &broken {
        ok_json(t.remote(&server, &["--json", "fleet", "label", &ids[*i], "fault=probe"]));
    }
    eprintln!("stages of the 50 endpoints: {:?}", (0..5).map(|k| stage_of.iter().filter(|s| **s == k).count()).collect::<Vec<_>>());

    let t0 = Instant::now();
    let r = post(&server, "/v1/rollouts", json!({ "channel": "os/stable", "generation": "os@2", "plan": "normal", "reason": "fix" }));
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(id, "r1");
    let soaks: Vec<u64> = r["plan"]["stages"].as_array().unwrap().iter().map(|s| s["soak_seconds"].as_u64().unwrap()).collect();
    let lost_after = r["plan"]["lost_after_seconds"].as_u64().unwrap();
    mark(t0, &format!("rollout {id} started with the normal plan, soaks {soaks:?} s"));
    let rollout = || get(&server, &format!("/v1/rollouts/{id}"));
    // Lets `secs` of the clock pass, in steps of at most half the plan's lost-after time, each
    // followed by a check-in of every online agent (or its silence would count as lost).
    let soak = |secs: u64, online: &[String]| {
        let mut left = secs;
        while left > 0 {
            let step = left.min(lost_after / 2);
            clock.advance(step);
            left -= step;
            let after = clock.now();
            wait(60, "every agent checked in after the clock moved", || {
                let all = get(&server, "/v1/fleet/endpoints");
                all["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| online.iter().any(|id| e["id"] == id.as_str()))
                    .all(|e| e["last_seen"].as_i64() >= Some(after))
            });
        }
    };
    // Each stage: once the server counts exactly the endpoints the buckets put in it and its
    // earlier stages, and they switched (or failed), its soak passes.
    let stage_settled = |k: u64| {
        let r = rollout();
        let c = &r["counts"];
        let n = |f: &str| c[f].as_u64().unwrap();
        let members = stage_of.iter().filter(|s| **s as u64 <= k).count() as u64;
        r["state"] == "halted"
            || r["stage"].as_u64() > Some(k)
            || (r["stage"] == k && c["stage"] == k && n("targeted") == members && n("switched") + n("failed") >= members)
    };
    for k in 0..3u64 {
        wait(60, &format!("stage {} switched", k + 1), || stage_settled(k));
        mark(t0, &format!("stage {}: {}", k + 1, rollout()["counts"]));
        soak(soaks[k as usize], &ids);
        wait(60, &format!("stage {} passes", k + 1), || rollout()["stage"].as_u64() > Some(k));
        mark(t0, &format!("stage {} passed after its soak of {} s", k + 1, soaks[k as usize]));
    }
    wait(90, "the brake", || rollout()["state"] == "halted");
    let halted = rollout();
    mark(t0, &format!("halted: {}", halted["rule"]));
    assert_eq!(halted["stage"], 3, "{halted:#}");
    let failed: Vec<&str> = halted["failed"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    let broken_ids: Vec<&String> = broken.iter().map(|i| &ids[*i]).collect();
    assert!(failed.len() >= 3 && failed.iter().all(|f| broken_ids.iter().any(|b| b.as_str() == *f)), "{halted:#}");
    // Those endpoints are back on os@1 by themselves; compliance says they failed, with the output.
    wait(60, "the failing stage rolled back", || {
        let r = running(&server);
        broken_ids.iter().all(|id| r[id.as_str()].as_deref() == Some("os@1"))
    });
    mark(t0, &format!("the {} endpoints of stage 4 back on os@1 by themselves", broken.len()));
    let c = get(&server, "/v1/fleet/compliance?target=os@2");
    for id in &broken_ids {
        let s = c["stragglers"].as_array().unwrap().iter().find(|s| s["endpoint"] == id.as_str()).unwrap_or_else(|| panic!("{id}: {c}"));
        assert!(matches!(s["reason"].as_str(), Some("failed" | "rolled_back")), "{s}");
        let text = s["error"].as_str().or(s["why"].as_str()).unwrap_or("");
        assert!(text.contains("os@2 breaks this machine (fault=probe,site=lab)"), "the probe's output: {s}");
    }
    let now = running(&server);
    for (i, id) in ids.iter().enumerate() {
        let want = if stage_of[i] < 3 { "os@2" } else { "os@1" };
        assert_eq!(now[id].as_deref(), Some(want), "stage {} endpoint {id}: the brake keeps later stages on os@1", stage_of[i] + 1);
    }

    // The fix (the label goes), then resume: the rollout completes and every endpoint ends on os@2.
    for i in &broken {
        ok_json(t.remote(&server, &["--json", "fleet", "label", &ids[*i], "--remove", "fault"]));
    }
    post(&server, &format!("/v1/rollouts/{id}/resume"), json!({}));
    mark(t0, "fixed; resumed");
    soak(soaks[3], &ids);
    wait(60, "stage 4 passes", || rollout()["stage"].as_u64() > Some(3));
    mark(t0, "stage 4 passed after its soak");
    wait(60, "stage 5 switched", || stage_settled(4));
    soak(soaks[4], &ids);
    wait(60, "completion", || rollout()["state"] == "completed");
    mark(t0, "completed: the channel names os@2");
    wait(60, "all fifty on os@2", || running(&server).values().all(|g| g.as_deref() == Some("os@2")));
    mark(t0, "all fifty on os@2");
    for line in rollout()["log"].as_array().unwrap() {
        eprintln!("decision  {}  {}: {}", line["time"], line["actor"].as_str().unwrap(), line["text"].as_str().unwrap());
    }

    // Withdrawal: one agent is offline (stopped, and its mount cut off from the server, so it
    // cannot read the withdrawal in the signed metadata either); every online one is back on
    // os@1 within 5 s.
    let offline = &ids[AGENTS - 1];
    agents[AGENTS - 1].stop();
    tunnel.cut(|_| true);
    let asked = Instant::now();
    let w = post(&server, "/v1/withdraw", json!({ "generation": "os@2", "reason": "a pre-release pushed by mistake" }));
    assert_eq!(w["channels"], json!([["os/stable", "os@1"]]), "{w}");
    wait(30, "every online agent back on os@1", || {
        let r = running(&server);
        ids.iter().filter(|id| *id != offline).all(|id| r[id].as_deref() == Some("os@1"))
    });
    let took = asked.elapsed();
    mark(t0, &format!("withdrawn: {} online agents back on os@1 {took:?} after the request", AGENTS - 1));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(running(&server)[offline].as_deref(), Some("os@2"), "the offline one still runs it");
    // It comes back: the agent reaches the fleet routes again, while its mount's metadata stays
    // cut off until the agent has acted, so the rollback is the check-in's (the mount's own
    // poller would report it as a rollback on the endpoint, not a withdrawal).
    tunnel.cut(|path| !path.starts_with("/v1/fleet/"));
    agents[AGENTS - 1].restart();
    wait(60, "the offline agent rolls back at its next check-in", || running(&server)[offline].as_deref() == Some("os@1"));
    mark(t0, "the offline agent back on os@1 at its first check-in after its restart");
    let events = get(&server, &format!("/v1/fleet/endpoints/{offline}"))["events"].as_array().cloned().unwrap_or_default();
    let withdrawn = |e: &&Value| e["kind"] == "rolled_back" && e["why"] == "withdrawn" && e["from"] == "os@2" && e["to"] == "os@1";
    assert_eq!(events.iter().filter(withdrawn).count(), 1, "one rolled_back event, why withdrawn: {events:#?}");
    tunnel.heal();
    let log = get(&server, "/v1/audit");
    let withdraw = log["entries"].as_array().unwrap().iter().find(|e| e["action"] == "withdraw").cloned().unwrap_or(Value::Null);
    assert_eq!((withdraw["actor"].as_str(), withdraw["subject"].as_str()), (Some("admin"), Some("os@2")), "{withdraw}");
}
