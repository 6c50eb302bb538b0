//! The fleet's control plane spoken to by hand: enrollment tokens, sessions, check-ins with 304, the push hint, idempotent reports, compliance reasons, revocation, bad input, gc and affected.

use std::io::BufRead;

use serde_json::{json, Value};
use tests::fleet::{enroll_token, Synthetic};
use tests::{client, ok_json, Imgctl, Server, TestClock};

fn set_channel(server: &Server, channel: &str, generation: &str) {
    let r = client().put(format!("{}/v1/channels/{channel}", server.url)).bearer_auth(server.token()).json(&json!({ "generation": generation })).send().unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
}

fn admin_get(server: &Server, path: &str) -> Value {
    let r = client().get(format!("{}{path}", server.url)).bearer_auth(server.token()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().unwrap()
}

fn error_of(resp: (u16, Value)) -> (u16, String) {
    (resp.0, resp.1["error"].as_str().unwrap_or("").to_string())
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["endpoints"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

/// The next `event:` name on an event stream.
fn next_event(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    for line in lines {
        if let Some(name) = line.unwrap().strip_prefix("event: ") {
            return name.to_string();
        }
    }
    panic!("the event stream ended");
}

#[test]
fn endpoints_enroll_check_in_report_and_compliance_says_why_from_their_reports() {
    let t = Imgctl::new();
    let clock = TestClock::new(&t.path("clock"));
    let config = t.path("imaged.toml");
    std::fs::write(&config, "poll_seconds = 60\nkeep_channel_versions = 1\ngc_grace_seconds = 0\n").unwrap();
    let mut server = Server::start_clocked(&t.path("server"), Some(&config), &clock);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for v in ["one", "two"] {
        std::fs::write(src.join("f"), v).unwrap();
        t.import(&src, "img");
    }
    ok_json(t.remote(&server, &["--json", "push", "img@1"]));
    ok_json(t.remote(&server, &["--json", "push", "img@2"]));
    set_channel(&server, "img/stable", "img@1");

    // Enrollment: a token for two endpoints, carrying a label.
    let token = enroll_token(&server, Some(2), Some(600), json!({ "site": "paris" }));
    let (mut e1, mut e2, mut e3) = (Synthetic::new(&server, 1), Synthetic::new(&server, 2), Synthetic::new(&server, 3));
    assert_eq!(e1.enroll(&token, "one", json!({ "role": "kiosk" })).0, 201);
    assert_eq!(e2.enroll(&token, "two", json!({})).0, 201);
    assert_eq!(error_of(e3.enroll(&token, "three", json!({}))), (403, "bad_enroll_token".into()), "used up");
    let short = enroll_token(&server, None, Some(60), json!({}));
    clock.advance(61);
    assert_eq!(error_of(e3.enroll(&short, "three", json!({}))), (403, "bad_enroll_token".into()), "expired");
    let open = enroll_token(&server, None, None, json!({}));
    assert_eq!(error_of(e3.enroll("not-a-token", "three", json!({}))), (403, "bad_enroll_token".into()));
    // Facts with control characters, and a signature by another key, store nothing.
    assert_eq!(error_of(e3.enroll(&open, "evil\u{1b}[2J", json!({}))), (400, "bad_report".into()));
    let mut forger = Synthetic::new(&server, 3);
    forger.key = trust::keys::SecretKey::from_bytes(&[9; 32]);
    let r = client()
        .post(format!("{}/v1/fleet/enroll", server.url))
        .json(&json!({ "token": open, "public_key": e3.public(), "signature": forger.key.sign(b"x"), "facts": tests::fleet::facts("x") }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(ids(&admin_get(&server, "/v1/fleet/endpoints")).len(), 2, "nothing stored by refused enrollments");
    assert_eq!(e3.enroll(&open, "three", json!({})).0, 201);
    let again = e3.id.clone();
    assert_eq!(e3.enroll(&open, "three", json!({})).0, 201);
    assert_eq!(e3.id, again, "the same key enrolls as the same endpoint");

    // Groups: a selector puts both Paris endpoints in; a bad selector is refused.
    let group = json!({ "name": "paris", "selector": "site=paris", "namespace": { "mounts": [{ "path": "/os", "channel": "img/stable" }] } });
    let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.json::<Value>().unwrap()["endpoints"].as_array().unwrap().len(), 2);
    let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&group).send().unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let bad = json!({ "name": "bad", "selector": "site==x" });
    let r = client().post(format!("{}/v1/fleet/groups", server.url)).bearer_auth(server.token()).json(&bad).send().unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().unwrap()["error"].clone()), (400, json!("bad_selector")));

    // Sessions and check-ins: 200 with an ETag, then 304 while nothing changes.
    for e in [&mut e1, &mut e2] {
        assert_eq!(e.open_session(clock.now()).0, 200);
    }
    let (status, etag, desired) = e1.check_in("/os=img@1", None);
    assert_eq!(status, 200);
    assert_eq!(desired["mounts"][0]["generation"], "img@1");
    assert_eq!(desired["interval_seconds"], 60);
    assert_eq!(e1.check_in("/os=img@1", Some(&etag)).0, 304);

    // The push hint: a stream says `check` at once and again when the channel moves; the
    // next check-in gets the new desired state.
    let stream = client().get(format!("{}/v1/fleet/events", server.url)).bearer_auth(&e1.session).send().unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let mut lines = std::io::BufReader::new(stream).lines();
    assert_eq!(next_event(&mut lines), "check");
    set_channel(&server, "img/stable", "img@2");
    assert_eq!(next_event(&mut lines), "check");
    let (status, _, desired) = e1.check_in("/os=img@1", Some(&etag));
    assert_eq!((status, desired["mounts"][0]["generation"].as_str()), (200, Some("img@2")));

    // Reports: stored once, however often they are sent.
    let events = json!([
        { "seq": 1, "time": clock.now(), "kind": "mounted", "path": "/os", "generation": "img@1" },
        { "seq": 2, "time": clock.now(), "kind": "switched", "path": "/os", "from": "img@1", "to": "img@2", "millis": 30 },
    ]);
    let (status, ack) = e1.report(events.clone(), json!([]));
    assert_eq!((status, ack["acked"].as_u64(), ack["stored"].as_u64()), (200, Some(2), Some(2)));
    let (_, ack) = e1.report(events, json!([]));
    assert_eq!((ack["stored"].as_u64(), ack["duplicates"].as_u64()), (Some(0), Some(2)));
    let many: Vec<Value> = (10..1011).map(|i| json!({ "seq": i, "time": 1, "kind": "enrolled" })).collect();
    assert_eq!(error_of(e1.report(json!(many), json!([]))), (413, "too_many_events".into()));
    let dirty = json!([{ "seq": 3, "time": 1, "kind": "failed", "path": "/os\u{7}", "error": "x" }]);
    assert_eq!(error_of(e1.report(dirty, json!([]))), (400, "bad_report".into()));
    assert_eq!(admin_get(&server, &format!("/v1/fleet/endpoints/{}", e1.id))["events"].as_array().unwrap().len(), 2);
    // The server keeps an endpoint's last 50 events.
    let burst: Vec<Value> = (3..=160).map(|i| json!({ "seq": i, "time": 1, "kind": "cache", "cache": { "used_bytes": i, "free_bytes": 1 } })).collect();
    assert_eq!(e1.report(json!(burst), json!([])).1["acked"], 160);
    let shown = admin_get(&server, &format!("/v1/fleet/endpoints/{}", e1.id));
    let seqs: Vec<u64> = shown["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (111..=160).collect::<Vec<_>>());
    assert_eq!(shown["cache"]["used_bytes"], 160);

    // e2 runs img@1 and fails to reach img@2.
    assert_eq!(e2.check_in("/os=img@1", None).0, 200);
    let failed = json!([{ "seq": 1, "time": clock.now(), "kind": "failed", "path": "/os", "generation": "img@2", "error": "no space left" }]);
    assert_eq!(e2.report(failed, json!([])).0, 200);
    let c = admin_get(&server, "/v1/fleet/compliance?target=img/stable");
    assert_eq!((c["generation"].as_str(), c["total"].as_u64(), c["on"].as_u64()), (Some("img@2"), Some(3), Some(1)), "{c}");
    let why = |c: &Value, id: &str| c["stragglers"].as_array().unwrap().iter().find(|s| s["endpoint"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!((why(&c, &e2.id)["reason"].as_str(), why(&c, &e2.id)["error"].as_str()), (Some("failed"), Some("no space left")));
    assert_eq!(why(&c, &e3.id)["reason"], "never_checked_in");
    assert_eq!(ids(&admin_get(&server, "/v1/fleet/endpoints?not_on=img%402")), [e2.id.clone(), e3.id.clone()].iter().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>());
    assert_eq!(ids(&admin_get(&server, "/v1/fleet/endpoints?label=role%3Dkiosk")), [e1.id.clone()]);

    // Forged and revoked: refused, everyone else served.
    let mut forged = Synthetic::new(&server, 1);
    forged.session = format!("{}0", &e1.session[..e1.session.len() - 1]);
    forged.session = if forged.session == e1.session { format!("{}1", &e1.session[..e1.session.len() - 1]) } else { forged.session };
    assert_eq!(forged.check_in("/os=img@2", None).0, 403);
    let r = client().delete(format!("{}/v1/fleet/endpoints/{}", server.url, e2.id)).bearer_auth(server.token()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _, body) = e2.check_in("/os=img@1", None);
    assert_eq!((status, body["error"].as_str()), (403, Some("endpoint_revoked")));
    assert_eq!(error_of(e2.open_session(clock.now())), (403, "endpoint_revoked".into()));
    assert_eq!(e1.check_in("/os=img@2", None).0, 200);

    // e3 checks in on img@1, then goes silent: offline since that check-in, and gc keeps img@1
    // (no channel names it any more) because e3 runs it.
    assert_eq!(e3.open_session(clock.now()).0, 200);
    let seen = clock.now();
    assert_eq!(e3.check_in("/os=img@1", None).0, 200);
    clock.advance(200);
    assert_eq!(e1.open_session(clock.now()).0, 200);
    assert_eq!(e1.check_in("/os=img@2", None).0, 200);
    let c = admin_get(&server, "/v1/fleet/compliance?target=img@2");
    let off = why(&c, &e3.id);
    assert_eq!(off["reason"], "offline");
    assert!((off["since"].as_i64().unwrap() - seen).abs() <= 1, "{off}");
    assert_eq!(off["running"][0]["current"], "img@1");
    let r = client().post(format!("{}/v1/gc", server.url)).bearer_auth(server.token()).json(&json!({})).send().unwrap();
    let gc: Value = r.json().unwrap();
    assert!(gc["generations_kept"].as_array().unwrap().contains(&json!("img@1")), "{gc}");
    // e1 would roll back to it, e3 runs it; nothing else keeps it.
    let mut holders = vec![e1.id.clone(), e3.id.clone()];
    holders.sort();
    assert_eq!(gc["kept_for_endpoints"], json!([{ "generation": "img@1", "endpoints": holders }]));
    let affected = admin_get(&server, "/v1/affected?path=f");
    let row = affected["rows"].as_array().unwrap().iter().find(|r| r["generation"] == "img@1").unwrap().clone();
    let mut holders: Vec<(String, String)> = row["endpoints"].as_array().unwrap().iter().map(|h| (h["hostname"].as_str().unwrap().into(), h["how"].as_str().unwrap().into())).collect();
    holders.sort();
    assert_eq!(holders, [("one".to_string(), "previous".to_string()), ("three".into(), "running".into())]);
    let out = t.remote(&server, &["affected", "--path", "f"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("running {} (three)", e3.id)), "imgctl affected lists the endpoints: {text}");

    // A crash loses nothing acked: the reports and the revocation are there after a restart.
    server.kill();
    let server = Server::start_clocked(&t.path("server"), Some(&config), &clock);
    e1.url = server.url.clone();
    assert_eq!(e1.open_session(clock.now()).0, 200);
    let replay = json!([{ "seq": 150, "time": 1, "kind": "switched", "path": "/os", "from": "img@1", "to": "img@2", "millis": 30 }]);
    assert_eq!(e1.report(replay, json!([])).1["duplicates"], 1);
    e2.url = server.url.clone();
    assert_eq!(error_of(e2.open_session(clock.now())), (403, "endpoint_revoked".into()));
    let shown = admin_get(&server, &format!("/v1/fleet/endpoints/{}", e1.id));
    assert_eq!(shown["mounts"][0]["actual"]["current"], "img@2", "{shown}");
    assert_eq!(shown["summary"]["groups"], json!(["paris"]));
}
