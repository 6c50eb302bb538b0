//! Unit tests: the wire spelling of every code, and old records still read.

use crate::channels::{ChannelAction, ChannelVersion};
use crate::{ErrorBody, ErrorCode};

#[test]
fn every_code_is_spelled_on_the_wire_as_as_str_says_and_reads_back() {
    for code in ErrorCode::ALL {
        let wire = serde_json::to_value(code).unwrap();
        assert_eq!(wire, serde_json::Value::String(code.as_str().into()));
        assert_eq!(serde_json::from_value::<ErrorCode>(wire).unwrap(), *code);
        assert!((400..600).contains(&code.http_status()), "{code}");
    }
}

#[test]
fn a_code_from_a_newer_server_reads_as_unknown() {
    let body: ErrorBody = serde_json::from_str(r#"{"error":"quota_exceeded","message":"m"}"#).unwrap();
    assert_eq!(body.error, ErrorCode::Unknown);
    assert_eq!(body.message, "m");
}

#[test]
fn missing_objects_details_travel_with_the_error() {
    let d = format::Digest::of(b"x");
    let text = format!(r#"{{"error":"missing_objects","message":"m","missing_count":7,"missing":["{d}"]}}"#);
    let body: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!((body.error, body.missing_count, body.missing), (ErrorCode::MissingObjects, Some(7), Some(vec![d])));
    let plain = serde_json::to_string(&ErrorBody::new(ErrorCode::NotFound, "gone")).unwrap();
    assert_eq!(plain, r#"{"error":"not_found","message":"gone"}"#);
}

#[test]
fn a_channel_version_recorded_before_the_api_crate_still_reads() {
    let d = format::Digest::of(b"m");
    let stored = format!(r#"{{"channel":"os/stable","version":3,"generation":"os@2","manifest":"{d}","created":5,"action":"promote"}}"#);
    let v: ChannelVersion = serde_json::from_str(&stored).unwrap();
    assert_eq!((v.channel.as_str(), v.manifest, v.action), ("os/stable", d, ChannelAction::Promote));
    assert_eq!(serde_json::to_string(&v).unwrap(), stored);
}

#[test]
fn channel_names_are_checked_when_read() {
    assert!(serde_json::from_str::<crate::ChannelName>(r#""os/Stable""#).is_err());
    assert!(serde_json::from_str::<crate::ChannelName>(r#""os/../x""#).is_err());
    assert!(serde_json::from_str::<crate::ChannelName>(r#""os/stable-2.x""#).is_ok());
}

#[test]
fn docs_api_md_lists_every_code_with_its_status() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {}", code.as_str(), code.http_status());
        assert!(doc.contains(&row), "docs/api.md has no row {row:?}");
    }
}

mod control {
    use crate::control::{Failed, FailureKind, Prefetched, Progress, ProgressLine, Refusal, Reply, Request, Switch};

    #[test]
    fn a_switch_keeps_the_fields_scripts_read_and_reads_back() {
        let s = Switch::Switched { from: "os@1".into(), to: "os@2".into(), channel_version: 3, millis: 7 };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!((v["switched"].as_bool(), v["generation"].as_str(), v["from"].as_str()), (Some(true), Some("os@2"), Some("os@1")));
        assert_eq!(serde_json::from_value::<Switch>(v).unwrap(), s);
        let refused = Switch::Refused { reason: Refusal::MetadataRefused, error: "timestamp: expired at X".into() };
        let v = serde_json::to_value(&refused).unwrap();
        assert_eq!((v["switched"].as_bool(), v["error"].as_str()), (Some(false), Some("timestamp: expired at X")));
        assert_eq!(serde_json::from_value::<Switch>(v).unwrap(), refused);
        let none = serde_json::to_value(Switch::NothingToRollBackTo).unwrap();
        assert_eq!(none["error"], "no previous generation to roll back to");
        assert!(serde_json::from_str::<Switch>(r#"{"outcome":"switched","switched":true}"#).is_err(), "a switch names its generations");
    }

    #[test]
    fn a_client_tells_progress_answers_and_failures_apart() {
        let line = |text: String| serde_json::from_str::<Reply<Prefetched>>(&text).unwrap();
        let p = ProgressLine { progress: Progress { objects_done: 2, ..Progress::default() }, generation: "a@1".into() };
        assert_eq!(line(serde_json::to_string(&p).unwrap()), Reply::Progress(p));
        let done = Prefetched { generation: "a@1".into(), done: true, pinned: true, fetched: Progress::default() };
        assert_eq!(line(serde_json::to_string(&done).unwrap()), Reply::Done(done));
        let failed = Failed { error: "stopped".into(), kind: FailureKind::Failed, generation: Some("a@1".into()) };
        assert_eq!(line(serde_json::to_string(&failed).unwrap()), Reply::Failed(failed));
        // A refused switch carries `error` too, and is still a switch.
        let refused = Switch::Refused { reason: Refusal::Unreachable, error: "x".into() };
        let r: Reply<Switch> = serde_json::from_str(&serde_json::to_string(&refused).unwrap()).unwrap();
        assert_eq!(r, Reply::Done(refused));
    }

    #[test]
    fn requests_are_one_tagged_line() {
        let r = Request::Pin { generation: "os@2".into(), max_rate: Some(4 << 20) };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"command":"pin","generation":"os@2","max_rate":4194304}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"status"}"#).unwrap(), Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"command":"format"}"#).is_err());
    }
}

mod gate {
    use crate::gate::{ApprovalStatement, EvidenceStatement, Outcome, TestName};
    use format::Digest;

    #[test]
    fn test_names_follow_the_rule() {
        for good in ["boot", "smoke.net", "a-1_b", "9"] {
            assert!(TestName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "Boot", "-x", "a b", "a\nb", &"x".repeat(65)] {
            assert!(TestName::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<TestName>(r#""Boot""#).is_err());
    }

    #[test]
    fn signed_statements_have_one_spelling_per_field() {
        let e = EvidenceStatement {
            manifest: Digest::of(b"m"),
            test: TestName::new("boot").unwrap(),
            outcome: Outcome::TimedOut,
            exit: -9,
            duration_ms: 1500,
            log: Digest::of(b"log"),
            log_len: 3,
            time: 7,
        };
        let text = String::from_utf8(e.signed_bytes()).unwrap();
        let expect = format!(
            "imaged-evidence-v1\nmanifest {}\ntest boot\noutcome timed_out\nexit -9\nduration_ms 1500\nlog {}\nlog_len 3\ntime 7\n",
            Digest::of(b"m"),
            Digest::of(b"log")
        );
        assert_eq!(text, expect);
        // A newline in a comment cannot end the field and forge another.
        let a = ApprovalStatement { manifest: Digest::of(b"m"), comment: "ok\ntime 9".into(), time: 7 };
        let text = String::from_utf8(a.signed_bytes()).unwrap();
        assert!(text.ends_with("approve\ncomment \"ok\\ntime 9\"\ntime 7\n"), "{text}");
    }
}

#[test]
fn roles_grant_nested_permissions_and_user_names_are_checked() {
    use crate::users::{Permission::*, Role, UserName};
    let grants = |r: Role| [Read, Publish, Attest, Approve, Admin].map(|p| r.allows(p));
    assert_eq!(grants(Role::Admin), [true; 5]);
    assert_eq!(grants(Role::Publisher), [true, true, true, false, false]);
    assert_eq!(grants(Role::Approver), [true, false, true, true, false]);
    assert_eq!(grants(Role::Viewer), [true, false, false, false, false]);
    assert_eq!(Role::parse("approver"), Some(Role::Approver));
    assert!(UserName::new("ci-bot.1").is_ok());
    for bad in ["", "Alice", "-x", "a b", &"a".repeat(65)] {
        assert!(UserName::new(bad).is_err(), "{bad:?}");
    }
    assert!(serde_json::from_str::<UserName>("\"Bad\"").is_err());
}

fn sealed_entry() -> crate::audit::AuditEntry {
    let mut e = crate::audit::AuditEntry::new("alice", "channel set", "os/stable", "version 2").at(1_700_000_000).before("img@1").after("img@2");
    e.seal(1, crate::audit::GENESIS);
    e
}

#[test]
fn an_audit_entry_hashes_its_canonical_encoding_and_survives_json() {
    let e = sealed_entry();
    let mut want = b"imaged-audit-1\n".to_vec();
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&1_700_000_000i64.to_be_bytes());
    for s in ["alice", "channel set", "os/stable", "version 2"] {
        want.extend_from_slice(&(s.len() as u32).to_be_bytes());
        want.extend_from_slice(s.as_bytes());
    }
    for s in ["img@1", "img@2"] {
        want.push(1);
        want.extend_from_slice(&(s.len() as u32).to_be_bytes());
        want.extend_from_slice(s.as_bytes());
    }
    want.push(0);
    want.extend_from_slice(&64u32.to_be_bytes());
    want.extend_from_slice(crate::audit::GENESIS.as_bytes());
    assert_eq!(e.canonical(), want, "format.md describes this encoding");
    assert_eq!(e.hash, format::Digest::of(&want).to_hex());
    let back: crate::audit::AuditEntry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(back, e);
    assert!(!serde_json::to_string(&e).unwrap().contains("reason"), "absent fields stay absent");
}

#[test]
fn an_empty_reason_is_left_out_but_an_empty_before_is_not_an_absent_one() {
    let e = sealed_entry();
    assert_eq!(e.clone().reason("").reason, None);
    let mut empty = e.clone();
    empty.before = Some(String::new());
    assert_ne!(empty.expected_hash(), crate::audit::AuditEntry { before: None, ..e }.expected_hash());
}

#[test]
fn fleet_wire_forms_round_trip_and_refuse_what_they_should() {
    use crate::fleet::*;
    let m: NamespaceMount = serde_json::from_str(r#"{"path":"/os","channel":"os/stable","cache_share":30}"#).unwrap();
    assert_eq!(m.source, Source::Channel(format::ChannelName::new("os/stable").unwrap()));
    let back: NamespaceMount = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    let p: NamespaceMount = serde_json::from_str(r#"{"path":"/app","pinned":"app@3"}"#).unwrap();
    assert_eq!(p.source, Source::Pinned("app@3".into()));
    let ns = Namespace { mounts: vec![m.clone(), p] };
    assert_eq!(ns.problem(), None);
    let twice = Namespace { mounts: vec![m.clone(), m.clone()] };
    assert!(twice.problem().unwrap().contains("two mounts"));
    for bad in ["os", "/os/", "/a/../b", "/a b", "/a=b", "/"] {
        let ns = Namespace { mounts: vec![NamespaceMount { path: bad.into(), ..m.clone() }] };
        assert!(ns.problem().is_some(), "{bad:?}");
    }
    let w: NamespaceMount =
        serde_json::from_str(r#"{"path":"/os","channel":"os/stable","writable":{"protect":["etc/ssh/**"],"drift_interval_seconds":30}}"#).unwrap();
    assert_eq!(w.writable.as_ref().unwrap().protect, ["etc/ssh/**"]);
    assert_eq!(Namespace { mounts: vec![w.clone()] }.problem(), None);
    for bad in [r#"{"protect":["etc/\u001b"]}"#, r#"{"protect":[" "]}"#, r#"{"drift_interval_seconds":0}"#] {
        let wm: WritableMount = serde_json::from_str(bad).unwrap();
        let ns = Namespace { mounts: vec![NamespaceMount { writable: Some(wm), ..w.clone() }] };
        assert!(ns.problem().is_some(), "{bad}");
    }
    assert!(serde_json::from_str::<WritableMount>(r#"{"protected":["x"]}"#).is_err(), "unknown fields are refused");
    let e: Event = serde_json::from_str(r#"{"seq":3,"time":9,"kind":"switched","path":"/os","from":"os@1","to":"os@2","millis":12}"#).unwrap();
    assert_eq!(e.kind.name(), "switched");
    assert_eq!(serde_json::from_str::<Event>(&serde_json::to_string(&e).unwrap()).unwrap(), e);
    assert!(serde_json::from_str::<Event>(r#"{"seq":3,"time":9,"kind":"nope"}"#).is_err());
    let bad = EventKind::Failed { path: "/os".into(), generation: None, error: "x\u{1b}[31m".into() };
    assert!(bad.problem().is_some());
    assert!(EventKind::Failed { path: "/os".into(), generation: None, error: "line 1\nline 2".into() }.problem().is_none());
    let s = Selector::parse("site=paris, role=kiosk,!legacy").unwrap();
    let mut labels = Labels::new();
    labels.insert("site".into(), "paris".into());
    assert!(!s.matches(&labels));
    labels.insert("role".into(), "kiosk".into());
    assert!(s.matches(&labels));
    labels.insert("legacy".into(), "".into());
    assert!(!s.matches(&labels));
    for bad in ["", "a==b", "=x", "site=par is", "a=b,,c"] {
        assert!(Selector::parse(bad).is_err(), "{bad:?}");
    }
    let actual = parse_actual("/os=os@3 /app=-").unwrap();
    assert_eq!(actual, vec![("/os".to_string(), Some("os@3".to_string())), ("/app".to_string(), None)]);
    assert_eq!(format_actual(&actual), "/os=os@3 /app=-");
    assert!(parse_actual("os=os@3").is_none());
    assert!(parse_actual("/os=junk").is_none());
    let id = EndpointId::of_key(&[7; 32]);
    assert_eq!(EndpointId::new(id.as_str()).unwrap(), id);
    assert!(EndpointId::new("ep-XYZ").is_err());
}

#[test]
fn trace_paths_escape_percent_and_invalid_bytes_and_come_back_whole() {
    use crate::control::{escape_path, unescape_path};
    for bytes in [&b"usr/lib/python3.11/json/__init__.py"[..], b"100%/x", b"caf\xc3\xa9", b"bad\xff\xfeend", b"", b"%"] {
        let text = escape_path(bytes);
        assert_eq!(unescape_path(&text).unwrap(), bytes, "{text}");
    }
    assert_eq!(escape_path(b"100%/x"), "100%25/x");
    assert_eq!(escape_path(b"bad\xffend"), "bad%FFend");
    assert_eq!(escape_path("café".as_bytes()), "café", "valid UTF-8 stays readable");
    assert_eq!(unescape_path("%G1"), None);
    assert_eq!(unescape_path("ab%4"), None);
}
