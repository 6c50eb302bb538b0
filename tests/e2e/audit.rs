//! The audit log against a real server: every change listed with its actor, before, after and reason, filtered, verified by imgctl audit.

use serde_json::{json, Value};
use tests::{client, ok_json, Imgctl, Server};

/// `imgctl ARGS` against `server` with `token`.
fn as_user(t: &Imgctl, server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    t.command().args(args).env("IMAGED_SERVER", &server.url).env("IMAGED_TOKEN", token).output().unwrap()
}

/// `GET /v1/audit?QUERY` with `token` (none: no header): status and body.
fn get_audit(server: &Server, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = client().get(format!("{}/v1/audit{query}", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// The entries' (actor, action, subject) triples.
fn rows(entries: &Value) -> Vec<(String, String, String)> {
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    entries.as_array().unwrap().iter().map(|e| (s(e, "actor"), s(e, "action"), s(e, "subject"))).collect()
}

/// The first entry with `action` and `subject`.
fn find<'a>(entries: &'a Value, action: &str, subject: &str) -> &'a Value {
    let found = entries.as_array().unwrap().iter().find(|e| e["action"] == action && e["subject"] == subject);
    found.unwrap_or_else(|| panic!("no {action} of {subject} in {entries:#}"))
}

#[test]
fn the_audit_log_lists_each_change_with_its_actor_and_imgctl_verifies_it() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "one\n").unwrap();
    t.import(&src, "img");
    std::fs::write(src.join("f"), "two\n").unwrap();
    t.import(&src, "img");
    t.push_signed(&server, "img@1");
    t.push_signed(&server, "img@2");
    ok_json(t.remote(&server, &["--json", "channel", "set", "img/stable", "img@1", "--reason", "first rollout"]));
    let alice = ok_json(t.remote(&server, &["--json", "user", "add", "alice", "--role", "publisher"]));
    let alice = alice["token"].as_str().unwrap().to_string();
    ok_json(as_user(&t, &server, &alice, &["--json", "channel", "set", "img/stable", "img@2"]));
    ok_json(t.remote(&server, &["--json", "keep", "img@1"]));
    ok_json(t.remote(&server, &["--json", "keep", "img@1"]));
    let r = client().post(format!("{}/v1/gc", server.url)).bearer_auth(server.token()).json(&json!({"dry_run": true})).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client().post(format!("{}/v1/gc", server.url)).bearer_auth(server.token()).json(&json!({"dry_run": false})).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let all = ok_json(t.remote(&server, &["--json", "audit"]));
    let entries = &all["entries"];
    let n = entries.as_array().unwrap().len() as u64;
    assert_eq!((all["total"].as_u64(), all["head"]["seq"].as_u64()), (Some(n), Some(n)), "{all:#}");
    assert_eq!(all["head"]["hash"], entries[n as usize - 1]["hash"]);

    // Each change, with its actor, in order.
    let want = [
        ("admin", "trust root", "root"),
        ("admin", "publish", "img@1"),
        ("admin", "publish", "img@2"),
        ("admin", "channel set", "img/stable"),
        ("admin", "user add", "user alice"),
        ("alice", "channel set", "img/stable"),
        ("admin", "keep", "img@1"),
        ("admin", "gc", "garbage collection"),
    ];
    let got = rows(entries);
    let mut at = 0;
    for (actor, action, subject) in want {
        let i = got[at..].iter().position(|(a, c, s)| (a.as_str(), c.as_str(), s.as_str()) == (actor, action, subject));
        let i = i.unwrap_or_else(|| panic!("no {actor} {action} {subject} after entry {at} in {got:#?}"));
        at += i + 1;
    }
    assert_eq!(got.iter().filter(|(_, c, _)| c == "keep").count(), 1, "a keep mark set twice is one change");
    assert_eq!(got.iter().filter(|(_, c, _)| c == "gc").count(), 1, "a dry run changes nothing");
    assert!(got.iter().any(|(_, c, s)| c == "trust role" && s == "role targets"), "{got:#?}");

    // Before, after and reason.
    let first = find(entries, "channel set", "img/stable");
    assert_eq!((first.get("before"), first["after"].as_str(), first["reason"].as_str()), (None, Some("img@1"), Some("first rollout")));
    let by_alice = entries.as_array().unwrap().iter().find(|e| e["actor"] == "alice").unwrap();
    assert_eq!((by_alice["before"].as_str(), by_alice["after"].as_str()), (Some("img@1"), Some("img@2")));
    assert_eq!(by_alice.get("reason"), None);
    let publish = find(entries, "publish", "img@2");
    assert_eq!(publish["after"].as_str().map(str::len), Some(64), "the manifest digest");
    let keep = find(entries, "keep", "img@1");
    assert_eq!((keep["before"].as_str(), keep["after"].as_str()), (Some("not kept"), Some("kept")));
    for (i, e) in entries.as_array().unwrap().iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
        assert!(e["time"].as_i64().unwrap() > 1_700_000_000);
    }

    // Filters: by actor, by time; text output says the chain was verified.
    let alices = ok_json(t.remote(&server, &["--json", "audit", "--actor", "alice"]));
    assert_eq!(rows(&alices["entries"]), [("alice".to_string(), "channel set".to_string(), "img/stable".to_string())]);
    assert_eq!(alices["total"].as_u64(), Some(n));
    let later = ok_json(t.remote(&server, &["--json", "audit", "--since", "2999-01-01"]));
    assert_eq!(later["entries"].as_array().map(Vec::len), Some(0));
    let since = entries[2]["time"].as_i64().unwrap().to_string();
    let recent = ok_json(t.remote(&server, &["--json", "audit", "--since", &since]));
    assert!(recent["entries"].as_array().unwrap().iter().all(|e| e["time"].as_i64().unwrap() >= entries[2]["time"].as_i64().unwrap()));
    let text = t.remote(&server, &["audit", "--actor", "alice"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("img@1 -> img@2") && text.contains(&format!("chain verified: {n} entries, 1 shown")), "{text}");
    let bad = t.remote(&server, &["audit", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(5), "{}", String::from_utf8_lossy(&bad.stderr));

    // The route: its own filters, any role with a token, never without one.
    let (status, body) = get_audit(&server, Some(&alice), "?actor=alice&limit=5");
    assert_eq!((status, rows(&body["entries"]).len(), body["broken_at"].is_null()), (200, 1, true), "{body}");
    let (_, body) = get_audit(&server, Some(&alice), "?limit=2");
    let seqs: Vec<u64> = body["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [n - 1, n], "the newest, oldest first");
    let (status, body) = get_audit(&server, None, "");
    assert_eq!((status, body["error"].as_str()), (401, Some("token_required")), "reads are open, the audit log is not");
    let (status, body) = get_audit(&server, Some(&alice), "?who=alice");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, body) = get_audit(&server, Some(&alice), "?since=soon");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
}

#[test]
fn the_audit_chain_continues_across_a_server_restart() {
    let t = Imgctl::new();
    let data = t.path("server");
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "one\n").unwrap();
    t.import(&src, "img");
    let before = {
        let server = Server::start(&data);
        ok_json(t.remote(&server, &["--json", "push", "img@1"]));
        ok_json(t.remote(&server, &["--json", "channel", "set", "a/b", "img@1"]));
        ok_json(t.remote(&server, &["--json", "audit"]))
    };
    let server = Server::start(&data);
    ok_json(t.remote(&server, &["--json", "channel", "rollback", "a/b", "--to", "img@1", "--reason", "again"]));
    let after = ok_json(t.remote(&server, &["--json", "audit"]));
    assert_eq!(before["head"]["seq"].as_u64(), Some(2));
    assert_eq!(after["entries"][2]["prev"], before["head"]["hash"]);
    assert_eq!((after["entries"][2]["action"].as_str(), after["entries"][2]["reason"].as_str()), (Some("channel rollback"), Some("again")));
}
