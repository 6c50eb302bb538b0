//! Activation policies through a real agent: a `reboot` generation is staged and not switched live until the mount starts again as at boot; a `restart` generation switches and restarts its units through the configured command.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::{enroll_token, post};
use tests::{client, ok_json, Imgctl, Server};

fn events(server: &Server, id: &str) -> Vec<Value> {
    let r = client().get(format!("{}/v1/fleet/endpoints/{id}", server.url)).bearer_auth(server.token()).send().unwrap();
    r.json::<Value>().unwrap()["events"].as_array().cloned().unwrap_or_default()
}

fn wait(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn publish(t: &Imgctl, server: &Server, src: &Path, content: &str, activation: &str) {
    std::fs::write(src.join("f"), content).unwrap();
    ok_json(t.run(["--json", "import", src.to_str().unwrap(), "--image", "os", "--activation", activation]));
    t.push_signed(server, "os@latest");
}

/// A one-stage rollout of os/stable to `generation`, run to its end or until it waits.
fn roll(server: &Server, generation: &str) -> String {
    let plan = json!({ "name": "all", "stages": [{ "percent": 100, "min_sample": 1, "soak_seconds": 0 }] });
    post(server, "/v1/rollouts", json!({ "channel": "os/stable", "generation": generation, "plan": plan }))["id"].as_str().unwrap().to_string()
}

#[test]
fn a_reboot_generation_waits_for_the_next_start_and_a_restart_generation_restarts_its_units() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    publish(&t, &server, &src, "one", "live");
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "os@1"]));
    post(&server, "/v1/fleet/groups", json!({ "name": "all", "selector": "site=lab", "namespace": { "mounts": [{ "path": "/os", "channel": "os/stable" }] } }));
    let token = enroll_token(&server, None, None, json!({}));
    let dir = t.path("agent");
    std::fs::create_dir_all(&dir).unwrap();
    // The stand-in for systemctl: records the units it was asked to restart.
    let restarted = dir.join("restarted");
    let script = dir.join("restart.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$@\" >> {}\n", restarted.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let extra = format!("restart_command = {:?}", script.display().to_string());
    let mut agent = Agent::start(&dir, &server, &t.root_file(), &token, "lab", &extra, &["/os"]);
    let id = agent.id();
    agent.wait_file("/os", "one", 60);

    // reboot: not switched live; the endpoint says it waits for a reboot.
    publish(&t, &server, &src, "two", "reboot");
    let first = roll(&server, "os@2");
    wait(30, "pending_reboot reported", || events(&server, &id).iter().any(|e| e["kind"] == "waiting" && e["why"] == "pending_reboot"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(agent.mount("/os").join("f")).unwrap(), "one", "never switched live");
    // As at boot: the agent and its mount go away, and the mount's next start takes os@2.
    agent.stop();
    let out = std::process::Command::new(tests::bin("imgfs")).arg("umount").arg(agent.mount("/os")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.restart();
    agent.wait_file("/os", "two", 60);
    wait_completed(&server, &first);

    // restart:UNIT: switched live, then the units restarted.
    publish(&t, &server, &src, "three", "restart:demo.service");
    let rollout = roll(&server, "os@3");
    agent.wait_file("/os", "three", 60);
    wait(30, "the unit restarted", || std::fs::read_to_string(&restarted).is_ok_and(|s| s.contains("demo.service")));
    wait_completed(&server, &rollout);
}

fn wait_completed(server: &Server, id: &str) {
    wait(60, &format!("rollout {id} completes"), || {
        let r = client().get(format!("{}/v1/rollouts/{id}", server.url)).bearer_auth(server.token()).send().unwrap();
        r.json::<Value>().unwrap()["state"] == "completed"
    });
}
