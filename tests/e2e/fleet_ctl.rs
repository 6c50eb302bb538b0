//! The operator's fleet commands against a real server: enrollment tokens, endpoints listed, labelled, shown and revoked, groups, compliance, and arguments refused before any request.

use std::io::Read;

use api::fleet::{EndpointId, Enroll, Enrolled, Event, EventKind, Facts, Labels, MountState, ReportBatch, Session, SessionRequest};
use serde_json::Value;
use tests::{client, failed, ok_json, ok_text, Imgctl, Server};

/// Enrolls a synthetic endpoint named `hostname` with a key made here; its id and key.
fn enroll(server: &Server, token: &str, hostname: &str, labels: &[(&str, &str)]) -> (String, trust::keys::SecretKey) {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut seed).unwrap();
    let key = trust::keys::SecretKey::from_bytes(&seed);
    let public: String = key.public().ed25519_bytes().expect("ed25519").iter().map(|b| format!("{b:02x}")).collect();
    let body = Enroll {
        token: token.to_string(),
        signature: key.sign(&api::fleet::enroll_message(token, &public)),
        public_key: public,
        facts: Facts { hostname: hostname.into(), machine_id: "0123".into(), arch: "x86_64".into(), cpus: 2, ..Default::default() },
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>(),
    };
    let r = client().post(format!("{}/v1/fleet/enroll", server.url)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    assert!(status == 200 || status == 201, "enroll: {status} {text}");
    (serde_json::from_str::<Enrolled>(&text).unwrap().endpoint.to_string(), key)
}

/// Reports `events` and `mounts` as the endpoint `id` holding `key` would.
fn report(server: &Server, id: &str, key: &trust::keys::SecretKey, events: Vec<Event>, mounts: Vec<MountState>) {
    let endpoint = EndpointId::new(id).unwrap();
    let time = cache::clock::now();
    let request = SessionRequest { signature: key.sign(&api::fleet::session_message(&endpoint, time)), endpoint, time };
    let r = client().post(format!("{}/v1/fleet/session", server.url)).json(&request).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let session: Session = r.json().unwrap();
    let batch = ReportBatch { events, mounts };
    let r = client().post(format!("{}/v1/fleet/reports", server.url)).bearer_auth(&session.token).json(&batch).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
}

/// The ids of a listing's `endpoints`: summaries (`fleet ls`) or plain ids (a group).
fn ids(listing: &Value) -> Vec<&str> {
    listing["endpoints"].as_array().unwrap().iter().map(|e| e["id"].as_str().or(e.as_str()).unwrap()).collect()
}

#[test]
fn an_operator_enrolls_groups_labels_checks_and_revokes_endpoints_with_imgctl() {
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));

    // A token for two endpoints, shown once; the listing never shows it.
    let created =
        ok_json(t.remote(&server, &["--json", "fleet", "token", "create", "--uses", "2", "--lifetime", "1h", "--label", "site=paris"]));
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["info"]["uses_left"], 2);
    assert!(created["info"]["expires"].is_i64(), "{created}");
    let shown = ok_text(t.remote(&server, &["fleet", "token", "create", "--uses", "1"]));
    assert!(shown.contains("shown only now") && shown.contains("1 use(s) left, never expires"), "{shown}");

    let (kiosk, _) = enroll(&server, &token, "kiosk-1", &[("role", "kiosk")]);
    let (desk, desk_key) = enroll(&server, &token, "desk-1", &[("role", "desk")]);
    let tokens = ok_json(t.remote(&server, &["--json", "fleet", "token", "ls"]));
    let first = tokens["tokens"].as_array().unwrap().iter().find(|t| t["id"] == created["info"]["id"]).unwrap();
    assert_eq!(first["uses_left"], 0, "{tokens}");
    assert!(!tokens.to_string().contains(&token), "secrets are never listed");

    // Groups: one by selector with a namespace, one by static membership.
    let ns = t.path("kiosk.toml");
    std::fs::write(
        &ns,
        "[[mount]]\npath = \"/os\"\nchannel = \"os/stable\"\ncache_share = 40\n\n[[mount]]\npath = \"/opt/kiosk\"\npinned = \"kiosk@3\"\n",
    )
    .unwrap();
    let kiosks = ok_json(t.remote(
        &server,
        &[
            "--json",
            "group",
            "create",
            "kiosks",
            "--selector",
            "role=kiosk,site=paris",
            "--priority",
            "5",
            "--namespace",
            ns.to_str().unwrap(),
        ],
    ));
    assert_eq!(ids(&kiosks), [kiosk.as_str()], "group answers list endpoint ids");
    assert_eq!(kiosks["group"]["namespace"]["mounts"][0]["channel"], "os/stable");
    let desks = ok_text(t.remote(&server, &["group", "create", "desks", "--member", &desk]));
    assert!(desks.contains("created group desks") && desks.contains(&format!("endpoints:  1: {desk}")), "{desks}");
    let (code, err) = failed(t.remote(&server, &["group", "create", "desks"]));
    assert!(code == 6 && err.contains("group_exists"), "{code} {err}");
    ok_json(t.remote(&server, &["--json", "group", "create", "desks", "--member", &desk, "--priority", "-1", "--replace"]));

    // Listing by labels (all must match), in a table and as JSON.
    assert_eq!(ids(&ok_json(t.remote(&server, &["--json", "fleet", "ls", "--label", "role=kiosk"]))), [kiosk.as_str()]);
    assert_eq!(
        ids(&ok_json(t.remote(&server, &["--json", "fleet", "ls", "--label", "site=paris", "--label", "role=desk"]))),
        [desk.as_str()]
    );
    assert_eq!(ids(&ok_json(t.remote(&server, &["--json", "fleet", "ls", "--group", "desks"]))), [desk.as_str()]);
    let table = ok_text(t.remote(&server, &["fleet", "ls"]));
    assert!(table.starts_with("ID ") && table.contains("kiosk-1") && table.contains("never"), "{table}");

    // Operators' labels, the endpoint named by its host name: desk-1 becomes a kiosk.
    let labelled = ok_json(t.remote(&server, &["--json", "fleet", "label", "desk-1", "role=kiosk", "floor=2"]));
    assert_eq!((labelled["labels"]["role"].as_str(), labelled["labels"]["floor"].as_str()), (Some("kiosk"), Some("2")), "{labelled}");
    let removed = ok_json(t.remote(&server, &["--json", "fleet", "label", &desk, "--remove", "floor"]));
    assert!(removed["labels"].get("floor").is_none(), "{removed}");
    let group = ok_json(t.remote(&server, &["--json", "group", "show", "kiosks"]));
    let mut members: Vec<&str> = group["endpoints"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    members.sort();
    let mut want = vec![kiosk.as_str(), desk.as_str()];
    want.sort();
    assert_eq!(members, want);
    let shown = ok_text(t.remote(&server, &["group", "show", "kiosks"]));
    assert!(
        shown.contains("selector:   role=kiosk,site=paris")
            && shown.contains("/os")
            && shown.contains("channel os/stable, cache share 40%")
            && shown.contains(&desk),
        "{shown}"
    );
    let listed = ok_text(t.remote(&server, &["group", "ls"]));
    assert!(listed.contains("kiosks") && listed.contains("desks"), "{listed}");

    // Nobody checked in yet: compliance says why, per endpoint.
    let c = ok_json(t.remote(&server, &["--json", "fleet", "compliance", "os@1"]));
    assert_eq!((c["total"].as_u64(), c["on"].as_u64(), c["counts"]["never_checked_in"].as_u64()), (Some(2), Some(0), Some(2)), "{c}");
    let words = ok_text(t.remote(&server, &["fleet", "compliance", "os@1"]));
    assert!(words.starts_with("0 of 2 on os@1\n") && words.contains("never checked in"), "{words}");
    let detail = ok_text(t.remote(&server, &["fleet", "show", "kiosk-1"]));
    assert!(detail.contains(&format!("endpoint:   {kiosk} (kiosk-1)")) && detail.contains("never checked in"), "{detail}");
    assert!(
        detail.contains("role=kiosk (own)") && detail.contains("site=paris (enroll token)") && detail.contains("groups:     kiosks"),
        "{detail}"
    );
    let detail = ok_json(t.remote(&server, &["--json", "fleet", "show", &kiosk]));
    assert_eq!(detail["summary"]["hostname"], "kiosk-1");

    // desk-1 reports a mount and a switch: show, ls and compliance tell.
    let now = cache::clock::now();
    let events = vec![
        Event { seq: 1, time: now - 60, kind: EventKind::Mounted { path: "/os".into(), generation: "os@1".into() } },
        Event {
            seq: 2,
            time: now - 30,
            kind: EventKind::Switched { path: "/os".into(), from: "os@1".into(), to: "os@2".into(), millis: 120 },
        },
    ];
    report(
        &server,
        &desk,
        &desk_key,
        events,
        vec![MountState { path: "/os".into(), current: Some("os@2".into()), previous: Some("os@1".into()) }],
    );
    let detail = ok_text(t.remote(&server, &["fleet", "show", "desk-1"]));
    assert!(detail.contains("switched /os os@1 -> os@2 in 120 ms") && detail.contains("mounted /os on os@1"), "{detail}");
    assert!(detail.contains("actual os@2, previous os@1") && detail.contains("state:      online; last seen"), "{detail}");
    assert!(ok_text(t.remote(&server, &["fleet", "ls"])).contains("/os=os@2"));
    assert_eq!(ids(&ok_json(t.remote(&server, &["--json", "fleet", "ls", "--not-on", "os@2"]))), [kiosk.as_str()]);
    let words = ok_text(t.remote(&server, &["fleet", "compliance", "os@2"]));
    assert!(words.starts_with("1 of 2 on os@2\nnot on it: 1 never checked in\n") && words.contains("kiosk-1"), "{words}");

    // Revocation.
    let revoked = ok_json(t.remote(&server, &["--json", "fleet", "revoke", "kiosk-1"]));
    assert!(revoked["revoked"].is_i64(), "{revoked}");
    assert!(ok_text(t.remote(&server, &["fleet", "ls"])).contains("revoked"));
    assert_eq!(ok_json(t.remote(&server, &["--json", "fleet", "compliance", "os@1"]))["total"], 1);

    // Removal of a group answers what was removed.
    let gone = ok_text(t.remote(&server, &["group", "rm", "desks"]));
    assert!(gone.contains("removed group desks"), "{gone}");
    let (code, _) = failed(t.remote(&server, &["group", "show", "desks"]));
    assert_eq!(code, 3);

    // Refused before any request, exit 5: a selector, a label, a namespace file, a target.
    let (code, err) = failed(t.remote(&server, &["group", "create", "bad", "--selector", "site=,=x"]));
    assert!(code == 5 && err.contains("label selector") && err.contains("does not parse"), "{code} {err}");
    let (code, err) = failed(t.remote(&server, &["fleet", "ls", "--label", "site"]));
    assert!(code == 5 && err.contains("KEY=VALUE"), "{code} {err}");
    let typo = t.path("typo.toml");
    std::fs::write(&typo, "[[mount]]\npath = \"/os\"\nchanel = \"os/stable\"\n").unwrap();
    let (code, err) = failed(t.remote(&server, &["group", "create", "typo", "--namespace", typo.to_str().unwrap()]));
    assert!(code == 5 && err.contains("unknown key \"chanel\""), "{code} {err}");
    let (code, _) = failed(t.remote(&server, &["fleet", "compliance", "not a target"]));
    assert_eq!(code, 5);
    let (code, _) = failed(t.remote(&server, &["fleet", "label", &desk]));
    assert_eq!(code, 5, "nothing to change");
    // Unknown endpoints: by id the server answers 404, by host name no lookup matches (exit 3).
    let (code, _) = failed(t.remote(&server, &["fleet", "show", "ep-0000000000000000"]));
    assert_eq!(code, 3);
    let (code, err) = failed(t.remote(&server, &["fleet", "show", "nobody"]));
    assert!(code == 3 && err.contains("no endpoint has the id or host name"), "{code} {err}");
    // Without a token the server refuses: exit 6.
    let out = t.command().args(["fleet", "token", "create"]).env("IMAGED_SERVER", &server.url).env_remove("IMAGED_TOKEN").output().unwrap();
    assert_eq!(failed(out).0, 6);
}
