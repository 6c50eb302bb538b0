//! The emergency rollout benchmark (bench/fleet.sh): one imaged and N real `imgfs agent`s on
//! this machine, each with its own state, cache and mount; the built-in `emergency` plan moves
//! them from gen 1 to gen 2 while every agent probes its mount. Prints, as `RESULT` lines, the
//! time from `rollout start` to every endpoint switched, to every endpoint reported healthy
//! after its soak, and to completion, against the plan's own soak times.

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::enroll_token;
use tests::{client, ok_json, Imgctl, Server};

#[derive(Parser)]
struct Args {
    /// Agents to run.
    #[arg(long, default_value_t = 50)]
    agents: usize,
}

fn get(server: &Server, path: &str) -> Value {
    let r = client().get(format!("{}{path}", server.url)).bearer_auth(server.token()).send().expect("the server answers");
    r.json().expect("JSON")
}

/// What each endpoint's `/os` mount runs, as reported.
fn on(server: &Server, generation: &str) -> usize {
    let all = get(server, "/v1/fleet/endpoints");
    all["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["mounts"].as_array().is_some_and(|m| m.iter().any(|m| m["path"] == "/os" && m["current"] == generation)))
                .count()
        })
        .unwrap_or(0)
}

fn publish(t: &Imgctl, server: &Server, src: &std::path::Path, content: &str) {
    std::fs::write(src.join("f"), content).expect("write");
    std::fs::write(src.join("big"), tests::noise(1 << 20, content.len() as u64)).expect("write");
    t.import(src, "os");
    t.push_signed(server, "os@latest");
}

fn main() {
    let args = Args::parse();
    let t = Imgctl::new();
    let config = t.path("imaged.toml");
    std::fs::write(&config, "poll_seconds = 30\n").expect("write");
    let server = Server::start_with(&t.path("server"), 0, Some(&config));
    let src = t.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    publish(&t, &server, &src, "one");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@1"]));
    publish(&t, &server, &src, "two");
    let ns = json!({ "mounts": [{ "path": "/os", "channel": "os/stable" }] });
    let r = client()
        .post(format!("{}/v1/fleet/groups", server.url))
        .bearer_auth(server.token())
        .json(&json!({ "name": "fleet", "selector": "site=bench", "namespace": ns }))
        .send()
        .expect("the server answers");
    assert!(r.status().is_success(), "creating the group: {}", r.status());
    let token = enroll_token(&server, None, None, json!({}));
    let root = t.root_file();
    let probe = "[health]\ncommand = 'test -r \"$IMGFS_MOUNT/f\"'\ntimeout_seconds = 10\n";
    let started = Instant::now();
    let agents: Vec<Agent> =
        (0..args.agents).map(|i| Agent::start(&t.path(&format!("agent{i}")), &server, &root, &token, "bench", probe, &["/os"])).collect();
    while on(&server, "os@1") < args.agents {
        assert!(started.elapsed() < Duration::from_secs(300), "the agents did not all mount os@1 within 300 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("RESULT phase=agents_up agents={} seconds={:.1}", args.agents, started.elapsed().as_secs_f64());

    let t0 = Instant::now();
    let r = client()
        .post(format!("{}/v1/rollouts", server.url))
        .bearer_auth(server.token())
        .json(&json!({ "channel": "os/stable", "generation": "os@2", "plan": "emergency", "reason": "benchmark" }))
        .send()
        .expect("the server answers");
    let rollout: Value = r.json().expect("JSON");
    let id = rollout["id"].as_str().expect("a rollout id").to_string();
    // Every stage from the first one that takes an endpoint waits for its soak (a stage counts
    // the endpoints of the stages before it too); stages before it pass at once.
    let stages = rollout["plan"]["stages"].as_array().expect("stages").clone();
    let ids: Vec<api::fleet::EndpointId> = get(&server, "/v1/fleet/endpoints")["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["id"].as_str()?.parse().ok())
        .collect();
    let rid: api::rollouts::RolloutId = id.parse().expect("a rollout id");
    let first = stages
        .iter()
        .position(|st| st["percent"].as_u64().is_some_and(|p| ids.iter().any(|e| u64::from(api::rollouts::bucket(e, rid)) < p * 100)))
        .unwrap_or(0);
    let soaks: u64 = stages[first..].iter().map(|s| s["soak_seconds"].as_u64().unwrap_or(0)).sum();
    let (mut switched, mut healthy, mut completed) = (None, None, None);
    let mut unhealthy: Vec<String> = get(&server, "/v1/fleet/endpoints")["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    while completed.is_none() || healthy.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(soaks + 300), "the rollout did not complete: {}", get(&server, &format!("/v1/rollouts/{id}")));
        let r = get(&server, &format!("/v1/rollouts/{id}"));
        if switched.is_none() && on(&server, "os@2") == args.agents {
            switched = Some(t0.elapsed());
        }
        // Healthy: the endpoint reported `healthy` on os@2 (after its soak).
        unhealthy.retain(|ep| {
            let shown = get(&server, &format!("/v1/fleet/endpoints/{ep}"));
            !shown["events"].as_array().is_some_and(|ev| ev.iter().any(|e| e["kind"] == "healthy" && e["generation"] == "os@2"))
        });
        if healthy.is_none() && unhealthy.is_empty() {
            healthy = Some(t0.elapsed());
        }
        if completed.is_none() && r["state"] == "completed" {
            completed = Some(t0.elapsed());
        }
        assert!(r["state"] != "halted", "the brake tripped: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64());
    println!(
        "RESULT phase=emergency agents={} first_stage={} soak_seconds={soaks} all_switched_s={:.1} all_healthy_s={:.1} completed_s={:.1} over_soaks_s={:.1}",
        args.agents,
        first + 1,
        s(switched),
        s(healthy),
        s(completed),
        s(healthy) - soaks as f64
    );
    drop(agents);
}
