//! The promotion gate against a real imaged: channel policies, `imgctl test` evidence, approvals, refusals with what is missing, emergency generations, `show --server`, and a restart.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use tests::{client, ok_json, Imgctl, Server};

/// `PUT /v1/channels/{channel}` as a client would send it: the status and the JSON answer.
fn set_over_http(server: &Server, channel: &str, generation: &str) -> (u16, Value) {
    let r = client()
        .put(format!("{}/v1/channels/{channel}", server.url))
        .bearer_auth(server.token())
        .json(&json!({ "generation": generation }))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// Asserts the channel move is refused with `gate_not_met` and exactly these gaps.
fn refused(server: &Server, channel: &str, generation: &str, tests: &[&str], approvals: u32) -> Value {
    let (status, body) = set_over_http(server, channel, generation);
    assert_eq!((status, body["error"].as_str()), (409, Some("gate_not_met")), "{body}");
    assert_eq!(body["gate"]["missing"], json!({ "tests": tests, "approvals": approvals }), "{body}");
    assert_eq!(body["gate"]["channel"], channel);
    body
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn key(t: &Imgctl, name: &str) -> String {
    t.key(name).to_str().unwrap().to_string()
}

fn public(t: &Imgctl, name: &str) -> String {
    format!("{}.pub", key(t, name))
}

/// `imgctl test GEN --name NAME --run CMD` with the tester key `by`.
fn run_test(t: &Imgctl, server: &Server, generation: &str, name: &str, cmd: &str, by: &str, extra: &[&str]) -> Output {
    let k = key(t, by);
    let mut args = vec!["--json", "test", generation, "--name", name, "--run", cmd, "--key", &k];
    args.extend_from_slice(extra);
    t.remote(server, &args)
}

fn approve(t: &Imgctl, server: &Server, generation: &str, by: &str) -> Output {
    let k = key(t, by);
    t.remote(server, &["--json", "approve", generation, "--key", &k, "--comment", &format!("ok from {by}")])
}

#[test]
fn gate_refuses_until_tests_pass_and_enough_distinct_listed_approvers_sign_and_survives_a_restart() {
    let t = Imgctl::new();
    let data = t.path("server");
    let mut server = Server::start(&data);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("os-release"), "one\n").unwrap();
    t.import(&src, "img");
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));

    // Bob's key stays in his token: he approves through an external signer.
    let bob = tests::signer::openssl_signer(&t.path("bob-token"));
    let bob_public = t.path("bob-token.pub").to_str().unwrap().to_string();
    tests::signer::public_file(&bob, Path::new(&bob_public));
    let policy = ok_json(t.remote(
        &server,
        &[
            "--json",
            "channel",
            "policy",
            "os/stable",
            "--require-test",
            "boot",
            "--require-approvals",
            "2",
            "--approver",
            &public(&t, "alice"),
            "--approver",
            &bob_public,
            "--tester",
            &public(&t, "tester"),
        ],
    ));
    assert_eq!(policy["emergency"], json!({ "tests": ["boot"], "approvals": 1 }), "default emergency rule: {policy}");
    let shown = ok_json(t.remote(&server, &["--json", "channel", "policy", "os/stable"]));
    assert_eq!(shown["normal"], policy["normal"]);

    // Before any test: refused, through imgctl (exit 6) and over HTTP (what is missing).
    let out = t.remote(&server, &["channel", "set", "os/stable", "img@1"]);
    assert_eq!(code(&out), 6, "{}", String::from_utf8_lossy(&out.stderr));
    let body = refused(&server, "os/stable", "img@1", &["boot"], 2);
    assert_eq!(body["gate"]["classification"], "normal");

    // A failing test is evidence too, and does not open the gate.
    let failed = run_test(&t, &server, "img@1", "boot", "echo kernel panic; exit 3", "tester", &[]);
    assert_eq!(code(&failed), 8, "{}", String::from_utf8_lossy(&failed.stderr));
    let failed: Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!((failed["outcome"].as_str(), failed["exit"].as_i64()), (Some("failed"), Some(3)));
    refused(&server, "os/stable", "img@1", &["boot"], 2);

    // Evidence from a key no policy lists as a tester is refused.
    let stranger = run_test(&t, &server, "img@1", "boot", "true", "mallory", &[]);
    assert_eq!(code(&stranger), 6, "{}", String::from_utf8_lossy(&stranger.stderr));

    // The test runs inside the generation (it sees the generation's files) and cannot change it.
    let passed = ok_json(run_test(&t, &server, "img@1", "boot", "echo booted $(cat os-release); echo x > os-release", "tester", &[]));
    assert_eq!((passed["outcome"].as_str(), passed["exit"].as_i64()), (Some("passed"), Some(0)));
    let digest: format::Digest = passed["log"].as_str().unwrap().parse().unwrap();
    let log = client().get(format!("{}/v1/objects/{digest}", server.url)).send().unwrap();
    assert_eq!(log.status().as_u16(), 200, "the log object is on the server");
    let log = format::object::decode(&log.bytes().unwrap(), &digest, 1 << 20).unwrap();
    assert_eq!(String::from_utf8_lossy(&log), "booted one\n");
    assert_eq!(t.ok(["cat", "img@1:os-release"]), "one\n", "the test's write went to a throw-away layer");
    refused(&server, "os/stable", "img@1", &[], 2);

    // One approval; the same approver again still counts once; an unlisted approver is refused.
    ok_json(approve(&t, &server, "img@1", "alice"));
    refused(&server, "os/stable", "img@1", &[], 1);
    ok_json(approve(&t, &server, "img@1", "alice"));
    refused(&server, "os/stable", "img@1", &[], 1);
    let out = approve(&t, &server, "img@1", "mallory");
    assert_eq!(code(&out), 6, "{}", String::from_utf8_lossy(&out.stderr));
    let out = approve(&t, &server, "img@1", "tester");
    assert_eq!(code(&out), 6, "a tester is not an approver: {}", String::from_utf8_lossy(&out.stderr));
    refused(&server, "os/stable", "img@1", &[], 1);

    // A forged signature is refused on receipt.
    let report = ok_json(t.remote(&server, &["--json", "show", "img@1"]));
    let mut forged = json!({
        "statement": {"manifest": report["manifest"], "comment": "", "time": 1},
        "key": serde_json::from_str::<Value>(&std::fs::read_to_string(&bob_public).unwrap()).unwrap(),
        "signature": "00".repeat(64),
    });
    let r = client().post(format!("{}/v1/generations/img/1/approvals", server.url)).bearer_auth(server.token()).json(&forged).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"], "bad_signature");
    forged["key"]["keyval"]["public"] = json!("zz");
    let r = client().post(format!("{}/v1/generations/img/1/approvals", server.url)).bearer_auth(server.token()).json(&forged).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);

    ok_json(t.remote(&server, &["--json", "approve", "img@1", "--signer", &bob, "--comment", "ok from bob"]));
    let moved = ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@1"]));
    assert_eq!(moved["generation"], "img@1");

    // show --server: the evidence, the approvals, the verdict per channel.
    let report = ok_json(t.remote(&server, &["--json", "show", "img@1"]));
    assert_eq!(report["change"]["classification"], "normal", "an import records a normal change by default");
    let gate = &report["server"];
    let outcomes: Vec<&str> = gate["evidence"].as_array().unwrap().iter().map(|e| e["statement"]["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "passed"]);
    assert_eq!(gate["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(gate["channels"], json!([{ "channel": "os/stable", "rule": {"tests": ["boot"], "approvals": 2}, "met": true, "missing": {"tests": [], "approvals": 0} }]));
    let text = t.remote(&server, &["show", "img@1"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("change: normal"), "{text}");
    assert!(text.contains("test boot failed exit 3") && text.contains("test boot passed exit 0"), "{text}");
    assert!(text.contains("gate os/stable: met"), "{text}");

    // An emergency generation follows the emergency rule: the normal tests, one approval.
    std::fs::write(src.join("os-release"), "two\n").unwrap();
    let mut args = vec!["import".as_ref(), src.as_os_str()];
    args.extend(
        ["--image", "img", "--reason", "openssl fix", "--classification", "emergency", "--advisory", "CVE-2026-1"]
            .iter()
            .chain(&["--requested-by", "security", "--activation", "restart:ssh.service"])
            .map(std::ffi::OsStr::new),
    );
    t.ok(args);
    let log = t.ok(["log", "img"]);
    assert!(log.lines().next().unwrap().contains("emergency restart:ssh.service"), "{log}");
    assert!(log.lines().nth(1).unwrap().contains("normal live"), "{log}");
    ok_json(t.remote(&server, &["--json", "push", "img@2"]));
    let body = refused(&server, "os/stable", "img@2", &["boot"], 1);
    assert_eq!(body["gate"]["classification"], "emergency");
    // A hanging test is killed at its timeout and recorded as timed out.
    let hung = run_test(&t, &server, "img@2", "boot", "sleep 30", "tester", &["--timeout", "1s"]);
    assert_eq!(code(&hung), 8, "{}", String::from_utf8_lossy(&hung.stderr));
    let hung: Value = serde_json::from_slice(&hung.stdout).unwrap();
    assert_eq!(hung["outcome"], "timed_out");
    assert!(hung["duration_ms"].as_u64().unwrap() < 10_000, "{hung}");
    refused(&server, "os/stable", "img@2", &["boot"], 1);
    ok_json(run_test(&t, &server, "img@2", "boot", "true", "tester", &[]));
    ok_json(t.remote(&server, &["--json", "approve", "img@2", "--signer", &bob, "--comment", "ok from bob"]));
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@2"]));
    let shown = String::from_utf8(t.remote(&server, &["show", "img@2"]).stdout).unwrap();
    assert!(shown.contains("change: emergency") && shown.contains("reason: openssl fix"), "{shown}");
    assert!(shown.contains("activation: restart:ssh.service"), "{shown}");

    // Promote follows the target channel's policy; rollback is not gated.
    ok_json(t.remote(&server, &["--json", "channel", "policy", "os/fleet", "--require-test", "soak", "--tester", &public(&t, "tester")]));
    let out = t.remote(&server, &["channel", "promote", "os/stable", "os/fleet"]);
    assert_eq!(code(&out), 6, "{}", String::from_utf8_lossy(&out.stderr));
    ok_json(t.remote(&server, &["--json", "channel", "rollback", "os/stable"]));

    // A restart keeps evidence, approvals and policies.
    server.kill();
    let server = Server::start(&data);
    let report = ok_json(t.remote(&server, &["--json", "show", "img@1"]));
    assert_eq!(report["server"]["evidence"].as_array().unwrap().len(), 2);
    assert_eq!(report["server"]["approvals"].as_array().unwrap().len(), 2);
    let stable = report["server"]["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "os/stable").unwrap().clone();
    assert_eq!(stable["met"], true);
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "img@1"]));
    refused(&server, "os/fleet", "img@1", &["soak"], 0);
}
