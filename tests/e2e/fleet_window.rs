//! A group's maintenance window with a real imaged and a real `imgfs agent`: an offered generation is prefetched at once (bytes reported) and switched to only once the window opens, a user's `imgfs defer` holds the next one back and is reported, and the built-in emergency plan overrides the deferral and a closed window.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::agent::Agent;
use tests::fleet::enroll_token;
use tests::{bin, client, noise, ok_json, Imgctl, Server, TestClock};

/// Generation `n` of `app`: `f` holds `content`, `big` 2 MiB of its own (so a prefetch has
/// something to fetch).
fn publish(t: &Imgctl, server: &Server, src: &Path, content: &str, n: u64) {
    std::fs::write(src.join("f"), content).unwrap();
    std::fs::write(src.join("big"), noise(2 << 20, n)).unwrap();
    t.import(src, "app");
    t.push_signed(server, "app@latest");
    ok_json(t.remote(server, &["--json", "channel", "set", "app/stable", "app@latest"]));
}

/// The events the server holds of endpoint `id`, oldest first.
fn events(server: &Server, id: &str) -> Vec<Value> {
    let r = client().get(format!("{}/v1/fleet/endpoints/{id}", server.url)).bearer_auth(server.token()).send().unwrap();
    let v: Value = r.json().unwrap();
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Waits (at most `secs`) for an event of endpoint `id` that `matches`; returns it.
fn wait_event(server: &Server, agent: &Agent, id: &str, what: &str, secs: u64, matches: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let all = events(server, id);
        if let Some(e) = all.iter().find(|e| matches(e)) {
            return e.clone();
        }
        assert!(Instant::now() < until, "endpoint {id} never reported {what}: {all:#?}\nagent log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is(e: &Value, kind: &str, generation: &str) -> bool {
    e["kind"] == kind && e["generation"] == generation
}

/// `imgfs defer` with the agent's configuration, on the agent's clock.
fn defer(agent: &Agent, clock: &TestClock, args: &[&str]) -> Output {
    Command::new(bin("imgfs"))
        .arg("defer")
        .arg(agent.mount("/os"))
        .args(args)
        .arg("--config")
        .arg(agent.dir.join("agent.toml"))
        .env("IMAGED_TEST_CLOCK", clock.path())
        .output()
        .unwrap()
}

fn read(agent: &Agent) -> String {
    std::fs::read_to_string(agent.mount("/os").join("f")).unwrap()
}

#[test]
fn a_window_prefetches_at_once_switches_when_it_opens_a_deferral_holds_and_the_emergency_plan_overrides_it_and_a_closed_window() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    publish(&t, &server, &src, "one", 1);

    let token = enroll_token(&server, None, None, json!({}));
    let mut group =
        json!({ "name": "paris", "selector": "site=paris", "namespace": { "mounts": [{ "path": "/os", "channel": "app/stable" }] } });
    let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());

    // The agent and its mounts read the test clock, so the test puts them 20 s before a minute
    // boundary instead of waiting for one.
    let clock = TestClock::new(&t.path("clock"));
    let env = [("IMAGED_TEST_CLOCK", clock.path())];
    let agent = Agent::start_with_env(&t.path("a"), &server, &t.root_file(), &token, "paris", "interval_seconds = 600", &["/os"], &env);
    let id = agent.id();
    agent.wait_file("/os", "one", 60);

    // A window opening at the next minute boundary, 20 s from now by the agent's clock; deferrals
    // of up to an hour allowed.
    clock.advance((40 - clock.now()).rem_euclid(60) as u64);
    let opens = (clock.now() / 60 + 1) * 60;
    let minute = (opens / 60) % 60;
    // A window the endpoints could not use is refused when the group is written.
    for (bad, says) in [
        (json!({ "cron": "0 2 * * MON", "duration_seconds": 600, "timezone": "UTC" }), "window cron expression \"0 2 * * MON\""),
        (
            json!({ "cron": "0 2 * * *", "duration_seconds": 600, "timezone": "Mars/Olympus" }),
            "window time zone \"Mars/Olympus\" is not known",
        ),
        (json!({ "cron": "0 0 30 2 *", "duration_seconds": 600, "timezone": "UTC" }), "never matches a day that exists"),
    ] {
        let mut g = group.clone();
        g["window"] = bad;
        let r = client().put(format!("{}/v1/fleet/groups/paris", server.url)).bearer_auth(server.token()).json(&g).send().unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        assert!(status == 400 && body["message"].as_str().unwrap_or("").contains(says), "{status} {body}");
    }
    group["window"] = json!({ "cron": format!("{minute} * * * *"), "duration_seconds": 600, "timezone": "UTC", "max_defer_seconds": 3600 });
    let r = client().put(format!("{}/v1/fleet/groups/paris", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    // The agent keeps the window in its desired state before the channel moves.
    let until = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(agent.dir.join("state/desired.json")).unwrap_or_default().contains("max_defer_seconds") {
        assert!(Instant::now() < until, "the window never reached the agent: {}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The channel moves: the agent prefetches app@2 at once and waits for the window.
    publish(&t, &server, &src, "two", 2);
    let moved = clock.now();
    assert!(opens - moved >= 10, "the move took too long to test a window 20 s away ({} s left)", opens - moved);
    let prefetched = wait_event(&server, &agent, &id, "prefetched app@2", 15, |e| is(e, "prefetched", "app@2"));
    assert!(prefetched["bytes"].as_u64().unwrap() >= 2 << 20, "{prefetched}");
    let waiting = wait_event(&server, &agent, &id, "waiting for its window", 15, |e| is(e, "waiting", "app@2") && e["why"] == "window");
    assert_eq!(waiting["until"], opens, "{waiting}");
    wait_event(&server, &agent, &id, "waiting while prefetching", 1, |e| is(e, "waiting", "app@2") && e["why"] == "prefetching");
    let before = clock.now();
    assert!(before < opens, "prefetching took until the window opened; nothing left to check");
    // The waiting mount is held where it is, so its own channel poller cannot switch it early.
    let out = Command::new(bin("imgfs")).arg("status").arg(agent.mount("/os")).arg("--json").output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(status["held"], "app@1", "{status}");
    // Until the window opens the mount serves the old generation.
    while clock.now() < opens - 1 {
        assert_eq!(read(&agent), "one", "switched before the window opened ({} s early)", opens - clock.now());
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.wait_file("/os", "two", 30);
    let switched_at = clock.now();
    assert!(switched_at >= opens && switched_at <= opens + 10, "switched at {switched_at}, the window opened at {opens}");
    let switched = wait_event(&server, &agent, &id, "switched to app@2", 15, |e| e["kind"] == "switched" && e["to"] == "app@2");
    assert!(switched["time"].as_i64().unwrap() >= opens, "{switched}");
    println!(
        "window: moved {} s before it opened, prefetched {} bytes, switched {} s after it opened",
        opens - moved,
        prefetched["bytes"],
        switched_at - opens
    );

    // Deferrals: longer than the policy allows is refused (exit 8), an hour is recorded.
    let out = defer(&agent, &clock, &["--for", "2h"]);
    assert_eq!(out.status.code(), Some(8), "{}", String::from_utf8_lossy(&out.stderr));
    let out = defer(&agent, &clock, &["--for", "1h", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deferred: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deferred["path"], "/os");
    assert_eq!(deferred["deferral"]["until"].as_i64().unwrap() - deferred["deferral"]["made"].as_i64().unwrap(), 3600);
    let deferred_until = deferred["deferral"]["until"].as_i64().unwrap();

    // Inside the window, the next move waits for the deferral (prefetched all the same).
    publish(&t, &server, &src, "three", 3);
    let waiting = wait_event(&server, &agent, &id, "waiting, deferred", 20, |e| is(e, "waiting", "app@3") && e["why"] == "deferred");
    assert_eq!(waiting["until"], deferred_until, "{waiting}");
    wait_event(&server, &agent, &id, "prefetched app@3", 20, |e| is(e, "prefetched", "app@3"));
    // Several of the agent's turns (every 5 s) later it still serves app@2.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(read(&agent), "two");

    // The window closes (600 s after it opened) while the deferral still runs.
    clock.advance((opens + 660 - clock.now()).max(0) as u64);
    assert!(clock.now() > opens + 600 && clock.now() < deferred_until, "the window is closed and the deferral holds");
    assert_eq!(read(&agent), "two");

    // The built-in emergency plan ignores windows and deferrals: app@4 goes through at once,
    // outside the window, while the deferral still holds app@3 back. Its soaks (60 s a stage)
    // only delay its completion, which this test does not wait for: an endpoint is offered
    // the generation as soon as its stage starts (here the first or, if its bucket is not in
    // the first 10%, the second, which starts at the next tick since the first has no one).
    std::fs::write(src.join("f"), "four").unwrap();
    t.import(&src, "app");
    t.push_signed(&server, "app@latest");
    let r =
        ok_json(t.remote(&server, &["--json", "rollout", "start", "app/stable", "app@4", "--plan", "emergency", "--reason", "emergency"]));
    assert_eq!((r["plan"]["name"].as_str(), r["plan"]["ignore_windows"].as_bool()), (Some("emergency"), Some(true)), "{r:#}");
    agent.wait_file("/os", "four", 30);
    let now = clock.now();
    assert!(
        now > opens + 600 && now < deferred_until,
        "switched outside the window ({now}, it closed at {}) and before the deferral ended",
        opens + 600
    );
    let switched = wait_event(&server, &agent, &id, "switched to app@4", 15, |e| e["kind"] == "switched" && e["to"] == "app@4");
    assert!(switched["time"].as_i64().unwrap() > opens + 600, "{switched}");
    assert!(
        std::fs::read_to_string(agent.dir.join("state/deferrals.json")).unwrap().contains("/os"),
        "the deferral stays for later offers"
    );

    // Clearing a deferral removes it from the agent's state.
    let out = defer(&agent, &clock, &["--clear"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::fs::read_to_string(agent.dir.join("state/deferrals.json")).unwrap().contains("/os"));
}
