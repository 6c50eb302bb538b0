//! The operator's rollout commands against a real server and synthetic endpoints: a plan file, status through the stages, pause, resume, abort with revert, withdrawal, pins and holds in compliance, a rollout awaiting the approval its channel's policy asks for, and refusals with their exit codes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::fleet::Synthetic;
use tests::{failed, ok_json, ok_text, Imgctl, Server};

/// Polls `imgctl rollout status --json` until `done` (at most 15 s: the server ticks every
/// second).
fn wait_status(t: &Imgctl, server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let r = ok_json(t.remote(server, &["--json", "rollout", "status", id]));
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < until, "{what}: {r:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The generation an endpoint's desired state gives `/os`.
fn desired(e: &Synthetic, actual: &str) -> String {
    let (status, _, d) = e.check_in(actual, None);
    assert_eq!(status, 200, "{d}");
    let m = d["mounts"].as_array().unwrap().iter().find(|m| m["path"] == "/os").cloned().unwrap_or(Value::Null);
    m["generation"].as_str().unwrap_or("").to_string()
}

#[test]
fn an_operator_rolls_out_pauses_aborts_withdraws_pins_and_holds_with_imgctl() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    // Four endpoints following img/stable; the first is the pilot group.
    let eps = four_endpoints_in_one_group(&t, &server);
    ok_json(t.remote(&server, &["--json", "group", "create", "pilot", "--member", &eps[0].id]));

    // Plans with mistakes are refused before any request, exit 5, saying what is wrong.
    let bad = t.path("shrinking.toml");
    std::fs::write(&bad, "[[stage]]\npercent = 50\n[[stage]]\npercent = 10\n").unwrap();
    let (code, err) = failed(t.remote(&server, &["rollout", "start", "img/stable", "img@2", "--plan", bad.to_str().unwrap()]));
    assert!(code == 5 && err.contains("stage 2: percent is 1-100 and never less than an earlier stage's"), "{code} {err}");
    let typo = t.path("typo.toml");
    std::fs::write(&typo, "[[stage]]\npercent = 100\nfailure_budjet = 3\n").unwrap();
    let (code, err) = failed(t.remote(&server, &["rollout", "start", "img/stable", "img@2", "--plan", typo.to_str().unwrap()]));
    assert!(code == 5 && err.contains("unknown key \"failure_budjet\""), "{code} {err}");
    let (code, err) = failed(t.remote(&server, &["rollout", "start", "img/stable", "img@2", "--plan", "fast"]));
    assert!(code == 5 && err.contains("no built-in plan"), "{code} {err}");
    assert!(ok_json(t.remote(&server, &["--json", "rollout", "ls"]))["rollouts"].as_array().unwrap().is_empty(), "nothing was sent");

    // A two-stage plan from a file: the pilot group, then everyone.
    let two = t.path("two.toml");
    std::fs::write(&two, "[[stage]]\ngroup = \"pilot\"\n\n[[stage]]\npercent = 100\n").unwrap();
    let started =
        ok_text(t.remote(&server, &["rollout", "start", "img/stable", "img@2", "--plan", two.to_str().unwrap(), "--reason", "fix"]));
    assert!(
        started.starts_with("started rollout r1\nrollout:    r1, img/stable: img@1 -> img@2 (activation live)\nstate:      running\n"),
        "{started}"
    );
    assert!(started.contains("plan:       two, 2 stages") && started.contains("  >  1      group pilot"), "{started}");
    // One rollout per channel at a time: rollout_active, exit 6.
    let (code, err) = failed(t.remote(&server, &["rollout", "start", "img/stable", "img@3"]));
    assert!(code == 6 && err.contains("rollout_active"), "{code} {err}");

    // Stage 1: the pilot alone.
    wait_status(&t, &server, "r1", "stage 1 counted", |r| r["counts"]["targeted"] == 1);
    let status = ok_text(t.remote(&server, &["rollout", "status", "r1"]));
    assert!(
        status.contains("  >  1      group pilot")
            && status.contains("counts:     stage 1: 1 targeted, 0 switched, 0 healthy, 0 failed, 0 lost, 0 waiting"),
        "{status}"
    );
    assert_eq!(desired(&eps[0], "/os=img@1"), "img@2");
    let events = json!([
        { "seq": 1, "time": 1, "kind": "switched", "path": "/os", "from": "img@1", "to": "img@2", "millis": 5 },
        { "seq": 2, "time": 1, "kind": "healthy", "path": "/os", "generation": "img@2" },
    ]);
    assert_eq!(eps[0].report(events, json!([{ "path": "/os", "current": "img@2", "previous": "img@1" }])).0, 200);
    wait_status(&t, &server, "r1", "the pilot's health passes stage 1", |r| r["stage"] == 1 && r["counts"]["targeted"] == 4);
    let status = ok_text(t.remote(&server, &["rollout", "status", "r1"]));
    assert!(status.contains("     1      group pilot") && status.contains("passed "), "{status}");
    assert!(status.contains("  >  2      100%") && status.contains("counts:     stage 2: 4 targeted, 1 switched, 1 healthy"), "{status}");
    assert!(status.contains("rollout  stage 1 passed: 1 healthy of 1"), "{status}");

    // Pause and resume; pausing twice is refused by the rollout's state (exit 6).
    let paused = ok_text(t.remote(&server, &["rollout", "pause", "r1"]));
    assert!(paused.starts_with("paused rollout r1 (img/stable: img@1 -> img@2), stage 2/2\nstate: paused by admin"), "{paused}");
    let (code, err) = failed(t.remote(&server, &["rollout", "pause", "r1"]));
    assert!(code == 6 && err.contains("rollout_state"), "{code} {err}");
    let resumed = ok_json(t.remote(&server, &["--json", "rollout", "resume", "r1"]));
    assert_eq!(resumed["state"], "running");
    let listed = ok_text(t.remote(&server, &["rollout", "ls"]));
    assert!(listed.starts_with("ID ") && listed.contains("r1  img/stable  img@1  img@2  two") && listed.contains("running"), "{listed}");

    // Abort with revert: the pilot is told to go back.
    let aborted = ok_text(t.remote(&server, &["rollout", "abort", "r1", "--revert"]));
    assert!(aborted.contains("state: aborted by admin; its endpoints went back to img@1"), "{aborted}");
    assert_eq!(desired(&eps[0], "/os=img@2"), "img@1");
    assert_eq!(ok_json(t.remote(&server, &["--json", "rollout", "status", "r1"]))["revert"], true);
    let (code, _) = failed(t.remote(&server, &["rollout", "status", "r9"]));
    assert_eq!(code, 3, "no such rollout");
    let (code, err) = failed(t.remote(&server, &["rollout", "status", "nine"]));
    assert!(code == 5 && err.contains("rollout id"), "{code} {err}");

    // A pin and a hold, by host name, and what compliance says of them.
    let pinned = ok_text(t.remote(&server, &["fleet", "pin", "host1", "img@1"]));
    assert!(pinned.starts_with(&format!("pinned {} (host1)", eps[1].id)), "{pinned}");
    let held = ok_text(t.remote(&server, &["fleet", "hold", "host2", "--reason", "trade show"]));
    assert!(held.starts_with(&format!("held {} (host2) where it is: trade show", eps[2].id)), "{held}");
    let words = ok_text(t.remote(&server, &["fleet", "compliance", "img@2"]));
    assert!(words.contains("1 held") && words.contains("1 pinned") && words.contains("1 not yet offered"), "{words}");
    assert!(words.contains("host1  pinned to img@1") && words.contains("host2  held: trade show; runs img@1"), "{words}");
    assert!(words.contains("host3  not yet offered by the rollout; runs img@1"), "{words}");
    ok_text(t.remote(&server, &["fleet", "unpin", "host1"]));
    // A group's pin: every member of the pilot group stays on img@1, and a group replace keeps it.
    let pinned = ok_text(t.remote(&server, &["fleet", "pin", "pilot", "img@1"]));
    assert!(pinned.starts_with("pinned group pilot\n") && pinned.contains("pinned:     img@1"), "{pinned}");
    assert_eq!(desired(&eps[0], "/os=img@1"), "img@1");
    ok_json(t.remote(&server, &["--json", "group", "create", "pilot", "--member", &eps[0].id, "--priority", "1", "--replace"]));
    let c = ok_json(t.remote(&server, &["--json", "fleet", "compliance", "img@2"]));
    assert_eq!(c["counts"]["pinned"], 1, "{c}");
    let g = ok_json(t.remote(&server, &["--json", "fleet", "unpin", "--group", "pilot"]));
    assert!(g["group"].get("pin").is_none(), "{g}");
    let (code, err) = failed(t.remote(&server, &["fleet", "pin", "nosuch", "img@1"]));
    assert!(code == 3 && err.contains("no endpoint has the id or host name"), "{code} {err}");
    let released = ok_text(t.remote(&server, &["fleet", "release", &eps[2].id]));
    assert!(released.contains("released"), "{released}");
    let c = ok_json(t.remote(&server, &["--json", "fleet", "compliance", "img@2"]));
    assert!(c["counts"].get("held").is_none() && c["counts"].get("pinned").is_none(), "{c}");
    let (code, err) = failed(t.remote(&server, &["fleet", "hold", "host2", "--reason", " "]));
    assert!(code == 5 && err.contains("a reason is required"), "{code} {err}");

    // Withdrawal: a channel naming img@3 moves back, the rollout to it aborts, who runs it is
    // listed; it can never be offered again.
    ok_json(t.remote(&server, &["--json", "channel", "set", "img/other", "img@1"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "img/other", "img@3"]));
    let r2 = ok_json(t.remote(&server, &["--json", "rollout", "start", "img/stable", "img@3", "--plan", "emergency"]));
    assert_eq!((r2["id"].as_str(), r2["state"].as_str(), r2["plan"]["name"].as_str()), (Some("r2"), Some("running"), Some("emergency")));
    assert_eq!(eps[3].check_in("/os=img@3", None).0, 200);
    let (code, _) = failed(t.remote(&server, &["withdraw", "img@3", "--reason", ""]));
    assert_eq!(code, 5, "a withdrawal needs a reason");
    let w = ok_text(t.remote(&server, &["withdraw", "img@3", "--reason", "pre-release pushed by mistake"]));
    assert!(
        w.starts_with("withdrew img@3: it is never offered again\nchannels moved back:\n  img/other -> img@1\nrollouts aborted: r2\n"),
        "{w}"
    );
    assert!(w.contains(&format!("endpoints running it: 1 ")) && w.contains(&format!("  {}\n", eps[3].id)), "{w}");
    assert_eq!(ok_json(t.remote(&server, &["--json", "rollout", "status", "r2"]))["state"], "aborted");
    let (code, err) = failed(t.remote(&server, &["rollout", "start", "img/stable", "img@3"]));
    assert!(code == 6 && err.contains("withdrawn"), "{code} {err}");
    let (code, err) = failed(t.remote(&server, &["fleet", "pin", "host1", "img@3"]));
    assert!(code == 6 && err.contains("withdrawn"), "{code} {err}");
}

/// Runs imgctl against `server` with a user's token instead of the admin's.
/// The fixture's four endpoints, all in group `all` whose namespace mounts `img/stable` at
/// `/os`.
fn four_endpoints_in_one_group(t: &Imgctl, server: &Server) -> Vec<tests::fleet::Synthetic> {
    let eps = tests::fleet::three_generations_and_four_endpoints(t, server);
    let ns = t.path("ns.toml");
    std::fs::write(&ns, "[[mount]]\npath = \"/os\"\nchannel = \"img/stable\"\n").unwrap();
    ok_json(t.remote(server, &["--json", "group", "create", "all", "--selector", "site=x", "--namespace", ns.to_str().unwrap()]));
    eps
}

fn as_user(t: &Imgctl, server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    t.command().args(args).env("IMAGED_SERVER", &server.url).env("IMAGED_TOKEN", token).output().unwrap()
}

#[test]
fn a_rollout_on_a_channel_whose_policy_asks_for_an_approval_waits_reaches_no_endpoint_and_runs_once_approved() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let eps = four_endpoints_in_one_group(&t, &server);
    // img/stable needs one approval from alice's key. Carol (a publisher) runs the rollout; dave
    // (an approver) holds alice's key.
    let alice = format!("{}.pub", t.key("alice").to_str().unwrap());
    ok_json(t.remote(&server, &["--json", "channel", "policy", "img/stable", "--require-approvals", "1", "--approver", &alice]));
    let carol =
        ok_json(t.remote(&server, &["--json", "user", "add", "carol", "--role", "publisher"]))["token"].as_str().unwrap().to_string();
    let dave = ok_json(t.remote(&server, &["--json", "user", "add", "dave", "--role", "approver"]))["token"].as_str().unwrap().to_string();

    // The start is accepted but waits: no endpoint is offered img@2.
    let plan = t.path("all.toml");
    std::fs::write(&plan, "[[stage]]\npercent = 100\n").unwrap();
    let started = ok_text(as_user(
        &t,
        &server,
        &carol,
        &["rollout", "start", "img/stable", "img@2", "--plan", plan.to_str().unwrap(), "--reason", "fix"],
    ));
    assert!(started.starts_with("started rollout r1\n") && started.contains("state:      awaiting approval"), "{started}");
    let r = ok_json(t.remote(&server, &["--json", "rollout", "status", "r1"]));
    assert_eq!((r["state"].as_str(), r["started_by"].as_str()), (Some("awaiting_approval"), Some("carol")), "{r:#}");
    for e in &eps {
        assert_eq!(desired(e, "/os=img@1"), "img@1", "{} is not offered img@2 before the approval", e.id);
    }
    let c = ok_json(t.remote(&server, &["--json", "fleet", "compliance", "img@2"]));
    assert_eq!(c["counts"]["not_yet_offered"], 4, "{c}");

    // Approving the rollout is refused while the policy is not met (exit 6, saying what is missing).
    let (code, err) = failed(as_user(&t, &server, &carol, &["rollout", "approve", "r1"]));
    assert!(code == 6 && err.contains("gate_not_met") && err.contains("1 more approval"), "{code} {err}");
    assert_eq!(ok_json(t.remote(&server, &["--json", "rollout", "status", "r1"]))["state"], "awaiting_approval");
    // A publisher cannot sign the generation's approval; dave, an approver, can.
    let key = t.key("alice");
    let (code, err) =
        failed(as_user(&t, &server, &carol, &["approve", "img@2", "--key", key.to_str().unwrap(), "--comment", "looks fine"]));
    assert!(code != 0 && err.contains("forbidden"), "{code} {err}");
    ok_json(as_user(&t, &server, &dave, &["--json", "approve", "img@2", "--key", key.to_str().unwrap(), "--comment", "reviewed"]));
    assert_eq!(desired(&eps[0], "/os=img@1"), "img@1", "an approval of the generation alone does not start the rollout");

    // Now the rollout approval passes and the rollout runs: every endpoint is offered img@2.
    let approved = ok_json(as_user(&t, &server, &carol, &["--json", "rollout", "approve", "r1"]));
    assert_eq!(approved["state"], "running", "{approved:#}");
    for e in &eps {
        assert_eq!(desired(e, "/os=img@1"), "img@2", "{}", e.id);
    }
    let (code, err) = failed(as_user(&t, &server, &carol, &["rollout", "approve", "r1"]));
    assert!(code == 6 && err.contains("rollout_state"), "approving twice: {code} {err}");
    for e in &eps {
        let events = json!([
            { "seq": 1, "time": 1, "kind": "switched", "path": "/os", "from": "img@1", "to": "img@2", "millis": 5 },
            { "seq": 2, "time": 1, "kind": "healthy", "path": "/os", "generation": "img@2" },
        ]);
        assert_eq!(e.report(events, json!([])).0, 200);
    }
    let done = wait_status(&t, &server, "r1", "completion", |r| r["state"] == "completed");
    let log: Vec<(&str, &str)> =
        done["log"].as_array().unwrap().iter().map(|d| (d["actor"].as_str().unwrap(), d["text"].as_str().unwrap())).collect();
    assert!(log.iter().any(|(a, t)| *a == "carol" && t.starts_with("waiting for approval")), "{log:?}");
    assert!(log.iter().any(|(a, t)| *a == "carol" && t.starts_with("approved")), "{log:?}");

    // The audit log names who did what: carol started and approved the rollout, dave signed
    // the generation's approval with alice's key, the rollout itself completed.
    let audit = ok_json(t.remote(&server, &["--json", "audit"]));
    let entries: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
        .collect();
    for (actor, action) in [("carol", "rollout start"), ("carol", "rollout approve"), ("rollout", "rollout complete")] {
        assert!(entries.contains(&(actor.to_string(), action.to_string())), "{actor} {action} in {entries:?}");
    }
    assert!(entries.iter().any(|(actor, action)| action == "approval" && actor.starts_with("dave key ")), "{entries:?}");
    let approvals = entries.iter().filter(|(_, action)| action == "rollout approve").count();
    assert_eq!(approvals, 1, "a refused approval is not an audited decision: {entries:?}");
}
