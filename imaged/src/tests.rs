//! Unit tests of the server's pure parts and its metadata on a real rocksdb in a temporary
//! directory. The HTTP surface is tested end to end in tests/e2e/server*.rs.

use format::Digest;

use crate::hot::{HotChannels, HotObjects};
use crate::meta::{AuditEntry, ChannelVersion, Meta};

fn entry(action: &str) -> AuditEntry {
    AuditEntry::new("alice", action, "img@1", "")
}

fn cv(channel: &str, version: u64, generation: &str) -> ChannelVersion {
    ChannelVersion {
        channel: channel.parse().unwrap(),
        version,
        generation: generation.into(),
        manifest: Digest::of(generation.as_bytes()),
        created: 0,
        action: api::channels::ChannelAction::Set,
    }
}

#[test]
fn a_reader_that_raced_a_writer_cannot_put_back_an_older_channel_version() {
    let hot = HotChannels::default();
    hot.put(&cv("os/stable", 4, "img@4"));
    hot.put(&cv("os/stable", 3, "img@3"));
    assert_eq!(hot.get("os/stable").unwrap().version, 4);
    hot.put(&cv("os/stable", 5, "img@5"));
    assert_eq!(hot.get("os/stable").unwrap().generation, "img@5");
    assert!(hot.get("os/pilot").is_none());
}

#[test]
fn hot_objects_keep_small_objects_and_forget_on_request() {
    let hot = HotObjects::new(1 << 20);
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    hot.put(a, bytes::Bytes::from_static(b"small"));
    hot.put(b, bytes::Bytes::from(vec![0u8; crate::hot::MAX_HOT_OBJECT + 1]));
    assert_eq!(hot.get(&a).as_deref(), Some(&b"small"[..]));
    assert!(hot.get(&b).is_none(), "objects over the size limit stay on disk");
    hot.forget(&[a]);
    assert!(hot.get(&a).is_none());
    let off = HotObjects::new(0);
    off.put(a, bytes::Bytes::from_static(b"x"));
    assert!(off.get(&a).is_none());
}

#[test]
fn records_split_exactly_or_are_refused() {
    let mut body = Vec::new();
    for content in [&b"one"[..], b"two!"] {
        format::record::encode_into(&mut body, &Digest::of(content), content);
    }
    let recs = crate::objects::parse_records(&body).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1], (Digest::of(b"two!"), &b"two!"[..]));
    for cut in [1, 4, 30, body.len() - 1] {
        let e = crate::objects::parse_records(&body[..body.len() - cut]).unwrap_err();
        assert_eq!(e.code(), api::ErrorCode::BadRecords);
    }
    assert!(crate::objects::parse_records(&[]).unwrap().is_empty());
}

#[test]
fn metadata_survives_reopening_and_removes_generations_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let image = format::ImageName::new("img").unwrap();
    {
        let meta = Meta::open(dir.path()).unwrap();
        for n in 1..=3 {
            assert_eq!(meta.put_generation(&image, n, &Digest::of(&[n as u8]), entry("publish")).unwrap(), None);
        }
        assert!(meta.set_keep("img", 2, true, entry("keep")).unwrap());
        assert!(!meta.set_keep("img", 2, true, entry("keep")).unwrap(), "no change, no entry");
        meta.pin(&[Digest::of(b"pinned")]).unwrap();
        meta.push_channel(&cv("os/stable", 1, "img@1"), entry("channel set")).unwrap();
        meta.push_channel(&cv("os/stable", 2, "img@3"), entry("channel set")).unwrap();
    }
    let meta = Meta::open(dir.path()).unwrap();
    assert_eq!(meta.generations().unwrap().len(), 3);
    assert_eq!(meta.kept().unwrap(), vec![("img".to_string(), 2)]);
    assert!(meta.published_at("img", 1).unwrap() > 1_700_000_000);
    assert_eq!(meta.pins().unwrap()[0].0, Digest::of(b"pinned"));
    assert_eq!(meta.channel("os/stable").unwrap().unwrap().generation, "img@3");
    assert_eq!(meta.history("os/stable").unwrap().len(), 2);
    meta.remove_generations(&[("img".into(), 1), ("img".into(), 2)], entry("gc")).unwrap();
    let left: Vec<u64> = meta.generations().unwrap().iter().map(|p| p.generation).collect();
    assert_eq!(left, [3]);
    assert!(meta.kept().unwrap().is_empty(), "a removed generation's keep mark goes with it");
    assert_eq!(meta.published_at("img", 1).unwrap(), 0);
    meta.unpin(&[Digest::of(b"pinned")]).unwrap();
    assert!(meta.pins().unwrap().is_empty());
}

#[test]
fn routes_and_methods_have_bounded_labels() {
    assert_eq!(crate::metrics::route_label(Some("/v1/objects/{digest}")), "/v1/objects/{digest}");
    assert_eq!(crate::metrics::route_label(Some("/something/else")), "unmatched");
    assert_eq!(crate::metrics::route_label(None), "unmatched");
    assert_eq!(crate::metrics::method_label(&axum::http::Method::PATCH), "other");
    let m = crate::metrics::Metrics::default();
    m.requests.get_or_create(&crate::metrics::RequestLabels { route: "/healthz", method: "GET", status: 200 }).inc();
    let text = m.encode();
    assert!(text.contains("imaged_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

/// The promotion gate's pure evaluation: one `check` per case.
mod gate {
    use api::gate::{ApprovalStatement, ChannelPolicy, EvidenceStatement, Missing, Outcome, Rule, Signed, TestName};
    use format::{Classification, Digest};
    use trust::keys::SecretKey;

    use crate::gate::{evaluate, Verdict};

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes(&[n; 32])
    }

    fn api_key(k: &SecretKey) -> api::tuf::TufKey {
        serde_json::from_value(k.public().to_value()).unwrap()
    }

    fn name(s: &str) -> TestName {
        TestName::new(s).unwrap()
    }

    fn manifest() -> Digest {
        Digest::of(b"generation")
    }

    fn run(by: &SecretKey, test: &str, outcome: Outcome, time: i64) -> Signed<EvidenceStatement> {
        let exit = if outcome.passed() { 0 } else { 1 };
        let s = EvidenceStatement {
            manifest: manifest(),
            test: name(test),
            outcome,
            exit,
            duration_ms: 10,
            log: Digest::of(b"log"),
            log_len: 3,
            time,
        };
        Signed { signature: by.sign(&s.signed_bytes()), key: api_key(by), statement: s }
    }

    fn approval(by: &SecretKey, time: i64) -> Signed<ApprovalStatement> {
        let s = ApprovalStatement { manifest: manifest(), comment: String::new(), time };
        Signed { signature: by.sign(&s.signed_bytes()), key: api_key(by), statement: s }
    }

    /// Policy: `boot` and 2 approvals (approvers 1, 2, 3), emergency: `boot` and 1 approval;
    /// tester 9.
    fn policy() -> ChannelPolicy {
        let normal = Rule { tests: vec![name("boot")], approvals: 2 };
        ChannelPolicy {
            channel: "os/stable".parse().unwrap(),
            emergency: api::gate::default_emergency(&normal),
            normal,
            approvers: vec![api_key(&key(1)), api_key(&key(2)), api_key(&key(3))],
            testers: vec![api_key(&key(9))],
            updated: 0,
        }
    }

    fn check(class: Classification, evidence: &[Signed<EvidenceStatement>], approvals: &[Signed<ApprovalStatement>], tests: &[&str], more: u32) {
        let want = if tests.is_empty() && more == 0 {
            Verdict::Met
        } else {
            Verdict::Missing(Missing { tests: tests.iter().map(|t| name(t)).collect(), approvals: more })
        };
        assert_eq!(evaluate(&policy(), class, &manifest(), evidence, approvals), want);
    }

    use Classification::{Emergency, Normal};

    #[test]
    fn nothing_recorded_misses_everything() {
        check(Normal, &[], &[], &["boot"], 2);
        check(Emergency, &[], &[], &["boot"], 1);
    }

    #[test]
    fn a_failed_or_timed_out_run_does_not_count() {
        let (a, b) = (approval(&key(1), 1), approval(&key(2), 1));
        check(Normal, &[run(&key(9), "boot", Outcome::Failed, 1)], &[a.clone(), b.clone()], &["boot"], 0);
        check(Normal, &[run(&key(9), "boot", Outcome::TimedOut, 1)], &[a, b], &["boot"], 0);
    }

    #[test]
    fn the_newest_run_decides() {
        let pass_then_fail = [run(&key(9), "boot", Outcome::Passed, 1), run(&key(9), "boot", Outcome::Failed, 2)];
        check(Emergency, &pass_then_fail, &[approval(&key(1), 1)], &["boot"], 0);
        let fail_then_pass = [run(&key(9), "boot", Outcome::Failed, 1), run(&key(9), "boot", Outcome::Passed, 2)];
        check(Emergency, &fail_then_pass, &[approval(&key(1), 1)], &[], 0);
        // Same time: the later arrival wins.
        let same_time = [run(&key(9), "boot", Outcome::Passed, 5), run(&key(9), "boot", Outcome::Failed, 5)];
        check(Emergency, &same_time, &[approval(&key(1), 1)], &["boot"], 0);
    }

    #[test]
    fn approvals_count_once_per_listed_key() {
        let pass = [run(&key(9), "boot", Outcome::Passed, 1)];
        check(Normal, &pass, &[approval(&key(1), 1)], &[], 1);
        check(Normal, &pass, &[approval(&key(1), 1), approval(&key(1), 2)], &[], 1);
        check(Normal, &pass, &[approval(&key(1), 1), approval(&key(7), 2)], &[], 1);
        check(Normal, &pass, &[approval(&key(1), 1), approval(&key(3), 2)], &[], 0);
    }

    #[test]
    fn unlisted_testers_forged_signatures_and_other_generations_do_not_count() {
        let approvals = [approval(&key(1), 1), approval(&key(2), 1)];
        check(Normal, &[run(&key(1), "boot", Outcome::Passed, 1)], &approvals, &["boot"], 0);
        let mut forged = run(&key(9), "boot", Outcome::Failed, 1);
        forged.statement.outcome = Outcome::Passed;
        check(Normal, &[forged], &approvals, &["boot"], 0);
        let mut elsewhere = run(&key(9), "boot", Outcome::Passed, 1);
        elsewhere.statement.manifest = Digest::of(b"other");
        elsewhere.signature = key(9).sign(&elsewhere.statement.signed_bytes());
        check(Normal, &[elsewhere], &approvals, &["boot"], 0);
        let mut forged_approval = approval(&key(3), 1);
        forged_approval.key = api_key(&key(2));
        check(Normal, &[run(&key(9), "boot", Outcome::Passed, 1)], &[approvals[0].clone(), forged_approval], &[], 1);
    }

    #[test]
    fn an_empty_rule_is_met_and_the_default_emergency_rule_is_never_stricter() {
        let empty = Rule::default();
        assert_eq!(api::gate::default_emergency(&empty), empty);
        let mut p = policy();
        p.normal = empty;
        assert_eq!(evaluate(&p, Normal, &manifest(), &[], &[]), Verdict::Met);
    }
}

#[test]
fn gate_records_and_their_audit_entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = Digest::of(b"m");
    let k = trust::keys::SecretKey::from_bytes(&[4; 32]);
    let s = api::gate::ApprovalStatement { manifest: m, comment: "ok".into(), time: 3 };
    let a = api::gate::Signed { signature: k.sign(&s.signed_bytes()), key: serde_json::from_value(k.public().to_value()).unwrap(), statement: s };
    let audit = |action: &str| crate::meta::AuditEntry::new("token", action, "img@1", "");
    {
        let meta = Meta::open(dir.path()).unwrap();
        meta.put_approval(&m, "id1", &a, audit("approval")).unwrap();
        meta.put_approval(&m, "id1", &a, audit("approval")).unwrap();
    }
    let meta = Meta::open(dir.path()).unwrap();
    assert_eq!(meta.approvals(&m).unwrap(), vec![a], "one approval per key");
    assert!(meta.approvals(&Digest::of(b"other")).unwrap().is_empty());
    let log = meta.audit_log().unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn publishing_a_generation_again_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image = format::ImageName::new("img").unwrap();
    let meta = Meta::open(dir.path()).unwrap();
    assert_eq!(meta.put_generation(&image, 1, &Digest::of(b"a"), entry("publish")).unwrap(), None);
    let again = meta.put_generation(&image, 1, &Digest::of(b"b"), entry("publish")).unwrap();
    assert_eq!(again, Some(Digest::of(b"a")), "a second publish of img@1 records nothing");
    let actions: Vec<String> = meta.audit_log().unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["publish"]);
}

/// Writes `n` entries through `Meta::record`.
fn record(meta: &Meta, actor: &str, n: usize) {
    for i in 0..n {
        meta.record(AuditEntry::new(actor, "test", format!("thing {i}"), "").before("a").after("b").reason("why")).unwrap();
    }
}

#[test]
fn the_audit_chain_continues_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let meta = Meta::open(dir.path()).unwrap();
        record(&meta, "alice", 3);
    }
    let meta = Meta::open(dir.path()).unwrap();
    assert_eq!(meta.audit_head().0, 3);
    record(&meta, "bob", 2);
    let log = meta.audit_log().unwrap();
    let head = api::audit::verify(&log).unwrap().unwrap();
    assert_eq!((head.seq, log[3].prev.as_str()), (5, log[2].hash.as_str()));
    assert_eq!(log[0].prev, api::audit::GENESIS);
    assert!(log.iter().all(|e| e.time > 1_700_000_000), "the server stamps the time");
    assert_eq!(meta.audit_head(), (5, head.hash));
}

/// Replaces the stored entry `seq` with what `change` makes of it.
fn doctor(dir: &std::path::Path, seq: u64, change: impl FnOnce(&mut serde_json::Value)) {
    let db = rocksdb::DB::open_default(dir).unwrap();
    let mut key = b"audit/".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    let mut v: serde_json::Value = serde_json::from_slice(&db.get(&key).unwrap().unwrap()).unwrap();
    change(&mut v);
    db.put(&key, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn a_tampered_stored_entry_is_found_by_verification() {
    use api::audit::{BreakKind, ChainBreak};
    let check = |seq: u64, change: fn(&mut serde_json::Value), expect: ChainBreak| {
        let dir = tempfile::tempdir().unwrap();
        record(&Meta::open(dir.path()).unwrap(), "alice", 4);
        doctor(dir.path(), seq, change);
        let meta = Meta::open(dir.path()).unwrap();
        let got = crate::audit::log(&meta, &api::audit::AuditQuery::default()).unwrap();
        assert_eq!(got.broken_at, Some(expect.seq));
        assert_eq!(api::audit::verify(&meta.audit_log().unwrap()), Err(expect));
    };
    check(2, |v| v["actor"] = "mallory".into(), ChainBreak { seq: 2, kind: BreakKind::Hash });
    check(3, |v| v["before"] = serde_json::Value::Null, ChainBreak { seq: 3, kind: BreakKind::Hash });
    // Recomputing the altered entry's hash moves the break to the next entry.
    check(
        2,
        |v| {
            let mut e: AuditEntry = serde_json::from_value(v.clone()).unwrap();
            e.actor = "mallory".into();
            let prev = e.prev.clone();
            e.seal(2, &prev);
            *v = serde_json::to_value(e).unwrap();
        },
        ChainBreak { seq: 3, kind: BreakKind::Prev },
    );
}

#[test]
fn an_entry_deleted_from_the_middle_is_found_and_one_cut_off_the_end_moves_the_head() {
    use api::audit::{AuditQuery, BreakKind, ChainBreak};
    for (cut, expect) in [(2, ChainBreak { seq: 2, kind: BreakKind::Gap }), (4, ChainBreak { seq: 4, kind: BreakKind::Gap })] {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path()).unwrap();
        record(&meta, "alice", 4);
        drop(meta);
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        let mut key = b"audit/".to_vec();
        key.extend_from_slice(&(cut as u64).to_be_bytes());
        db.delete(&key).unwrap();
        drop(db);
        let meta = Meta::open(dir.path()).unwrap();
        let got = crate::audit::log(&meta, &AuditQuery::default()).unwrap();
        if cut == 2 {
            assert_eq!(got.broken_at, Some(expect.seq));
        } else {
            // The end cut while no server ran: the chain that is left holds, and a reader that
            // kept the old head (seq 4) sees it gone.
            assert_eq!((got.broken_at, got.head.map(|h| h.seq)), (None, Some(3)));
        }
    }
}

#[test]
fn concurrent_writers_keep_a_dense_chain() {
    let dir = tempfile::tempdir().unwrap();
    let meta = std::sync::Arc::new(Meta::open(dir.path()).unwrap());
    let image = format::ImageName::new("img").unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (meta, image) = (meta.clone(), image.clone());
            s.spawn(move || {
                for i in 0..25u64 {
                    match i % 3 {
                        0 => record(&meta, &format!("writer{t}"), 1),
                        1 => {
                            meta.put_generation(&image, t * 100 + i, &Digest::of(&[t as u8, i as u8]), entry("publish")).unwrap();
                        }
                        _ => meta.push_channel(&cv(&format!("c/{t}"), i, "img@1"), entry("channel set")).unwrap(),
                    }
                }
            });
        }
    });
    meta.commit_all(rocksdb::WriteBatch::default(), (0..3).map(|_| entry("enroll")).collect()).unwrap();
    let log = meta.audit_log().unwrap();
    assert_eq!(api::audit::verify(&log).unwrap().unwrap().seq, 103);
}

#[test]
fn entries_of_an_older_server_are_sealed_into_the_chain_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        for seq in 1..=2u64 {
            let mut key = b"audit/".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            let old = serde_json::json!({"seq": seq, "time": 5, "actor": "admin", "action": "policy", "subject": "os/stable", "detail": ""});
            db.put(&key, serde_json::to_vec(&old).unwrap()).unwrap();
        }
    }
    let meta = Meta::open(dir.path()).unwrap();
    record(&meta, "alice", 1);
    let log = meta.audit_log().unwrap();
    assert_eq!(api::audit::verify(&log).unwrap().unwrap().seq, 3);
    assert_eq!(log[0].time, 5, "sealing keeps what the entries said");
}

mod fleet_core {
    use api::fleet::*;
    use format::ChannelName;

    use crate::fleet::{apply_actual, apply_report, check_report, desired_of, reason, LiveGroup, Observed, Record, ReportError};

    fn group(name: &str, priority: i32, selector: Option<&str>, members: &[&EndpointId], mounts: &[(&str, Source)]) -> LiveGroup {
        let mounts = mounts
            .iter()
            .map(|(p, s)| NamespaceMount { path: p.to_string(), source: s.clone(), cache_share: None, passthrough: false, health: None, writable: None })
            .collect();
        LiveGroup::new(Group {
            name: GroupName::new(name).unwrap(),
            members: members.iter().map(|m| (*m).clone()).collect(),
            selector: selector.map(Into::into),
            priority,
            namespace: Namespace { mounts },
            window: None,
            pin: None,
        })
        .unwrap()
    }

    fn chan(s: &str) -> Source {
        Source::Channel(ChannelName::new(s).unwrap())
    }

    fn record(id: &EndpointId) -> Record {
        Record::new(id.clone(), String::new(), Facts::default(), 0)
    }

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event { seq, time: 100 + seq as i64, kind }
    }

    #[test]
    fn desired_state_is_the_union_of_groups_with_priority_on_shared_paths() {
        let me = EndpointId::of_key(&[1; 32]);
        let other = EndpointId::of_key(&[2; 32]);
        let mut labels = Labels::new();
        labels.insert("site".into(), "paris".into());
        let groups = [
            group("paris", 0, Some("site=paris"), &[], &[("/os", chan("os/stable")), ("/app", chan("app/stable"))]),
            group("pilots", 10, None, &[&me], &[("/os", chan("os/beta"))]),
            group("lyon", 50, Some("site=lyon"), &[&other], &[("/os", chan("os/lyon"))]),
        ];
        let gen = |c: &ChannelName| Some(format!("{}@7", c.as_str().split('/').next().unwrap()));
        let d = desired_of(&me, &labels, groups.iter(), &gen, 60);
        assert_eq!(d.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(), ["paris", "pilots"]);
        let mounts: Vec<(&str, &str, Option<&str>)> =
            d.mounts.iter().map(|m| (m.mount.path.as_str(), m.group.as_str(), m.generation.as_deref())).collect();
        assert_eq!(mounts, [("/app", "paris", Some("app@7")), ("/os", "pilots", Some("os@7"))]);
        assert_eq!(d.conflicts.len(), 1);
        assert_eq!((d.conflicts[0].winner.as_str(), d.conflicts[0].losers[0].as_str()), ("pilots", "paris"));
        // The same priority: the name that sorts first wins.
        let tie = [group("b", 0, Some("site"), &[], &[("/os", chan("os/b"))]), group("a", 0, Some("site"), &[], &[("/os", chan("os/a"))])];
        let d = desired_of(&me, &labels, tie.iter(), &|_| None, 60);
        assert_eq!(d.mounts[0].group.as_str(), "a");
        // No group: nothing to run.
        assert!(desired_of(&me, &Labels::new(), groups[..1].iter(), &gen, 60).mounts.is_empty());
    }

    #[test]
    fn a_group_pin_holds_its_endpoints_mounts_of_the_image_the_higher_priority_group_first() {
        let me = EndpointId::of_key(&[1; 32]);
        let mut labels = Labels::new();
        labels.insert("site".into(), "paris".into());
        let pinned = |mut g: LiveGroup, pin: &str| {
            g.group.pin = Some(pin.into());
            g
        };
        let groups = [
            pinned(group("paris", 0, Some("site=paris"), &[], &[("/os", chan("os/stable")), ("/app", chan("app/stable"))]), "os@3"),
            pinned(group("kiosks", 5, None, &[&me], &[]), "os@4"),
            pinned(group("apps", 0, None, &[&me], &[]), "app@1"),
        ];
        let gen = |c: &ChannelName| Some(format!("{}@7", c.as_str().split('/').next().unwrap()));
        let d = desired_of(&me, &labels, groups.iter(), &gen, 60);
        let mounts: Vec<(&str, &Source, Option<&str>)> =
            d.mounts.iter().map(|m| (m.mount.path.as_str(), &m.mount.source, m.generation.as_deref())).collect();
        let pin = |g: &str| Source::Pinned(g.into());
        assert_eq!(mounts, [("/app", &pin("app@1"), Some("app@1")), ("/os", &pin("os@4"), Some("os@4"))]);
        // An endpoint outside the pinning groups follows its channel.
        let other = EndpointId::of_key(&[2; 32]);
        let d = desired_of(&other, &labels, groups[..1].iter().chain(&groups[2..]), &gen, 60);
        assert_eq!(d.mounts[1].generation.as_deref(), Some("os@3"));
        let d = desired_of(&other, &labels, groups[2..].iter(), &gen, 60);
        assert!(d.mounts.is_empty());
    }

    #[test]
    fn reports_are_idempotent_and_move_mounts_and_problems() {
        let id = EndpointId::of_key(&[1; 32]);
        let mut r = record(&id);
        let batch = ReportBatch {
            events: vec![
                ev(1, EventKind::Mounted { path: "/os".into(), generation: "os@1".into() }),
                ev(2, EventKind::Failed { path: "/os".into(), generation: Some("os@2".into()), error: "no space".into() }),
            ],
            mounts: vec![],
        };
        assert_eq!(check_report(&batch), Ok(()));
        let count = |(stored, dups): (Vec<Event>, u32)| (stored.len(), dups);
        assert_eq!(count(apply_report(&mut r, &batch)), (2, 0));
        assert_eq!(r.problems["/os"].kind, "failed");
        // The same batch again (a lost ack): nothing changes.
        let before = r.clone();
        assert_eq!(count(apply_report(&mut r, &batch)), (0, 2));
        assert_eq!(r, before);
        let more = ReportBatch {
            events: vec![
                ev(2, EventKind::Unmounted { path: "/os".into() }),
                ev(5, EventKind::Switched { path: "/os".into(), from: "os@1".into(), to: "os@2".into(), millis: 9 }),
            ],
            mounts: vec![],
        };
        let (stored, dups) = apply_report(&mut r, &more);
        assert_eq!((stored.iter().map(|e| e.seq).collect::<Vec<_>>(), dups), (vec![5], 1));
        assert_eq!(r.last_seq, 5);
        assert_eq!(r.mounts, [MountState { path: "/os".into(), current: Some("os@2".into()), previous: Some("os@1".into()) }]);
        assert!(r.problems.is_empty(), "a switch clears the failure");
        let back = ReportBatch {
            events: vec![ev(6, EventKind::RolledBack { path: "/os".into(), from: "os@2".into(), to: "os@1".into(), why: "probe".into() })],
            mounts: vec![],
        };
        apply_report(&mut r, &back);
        assert_eq!(r.problems["/os"].kind, "rolled_back");
        // Refused before anything is stored.
        let unordered = ReportBatch { events: vec![ev(9, EventKind::Enrolled), ev(8, EventKind::Enrolled)], mounts: vec![] };
        assert!(matches!(check_report(&unordered), Err(ReportError::Bad(_))));
        let many = ReportBatch { events: (1..=1001).map(|i| ev(i, EventKind::Enrolled)).collect(), mounts: vec![] };
        assert_eq!(check_report(&many), Err(ReportError::TooMany(1001)));
        let dirty = ReportBatch { events: vec![ev(1, EventKind::Mounted { path: "/os\u{7}".into(), generation: "os@1".into() })], mounts: vec![] };
        assert!(matches!(check_report(&dirty), Err(ReportError::Bad(_))));
    }

    #[test]
    fn check_ins_record_a_change_of_generation_once() {
        let id = EndpointId::of_key(&[1; 32]);
        let mut r = record(&id);
        assert!(apply_actual(&mut r, &[("/os".into(), Some("os@1".into()))]));
        assert!(!apply_actual(&mut r, &[("/os".into(), Some("os@1".into()))]), "the same state is no change: no write");
        assert!(apply_actual(&mut r, &[("/os".into(), Some("os@2".into()))]));
        assert_eq!(r.mounts[0].previous.as_deref(), Some("os@1"));
        assert!(apply_actual(&mut r, &[]), "a mount gone");
        assert!(r.mounts.is_empty());
    }

    #[test]
    fn compliance_reasons_come_from_reports_in_order() {
        let id = EndpointId::of_key(&[1; 32]);
        let stable = ChannelName::new("os/stable").unwrap();
        let groups = [group("all", 0, Some("site"), &[], &[("/os", chan("os/stable"))])];
        let mut labels = Labels::new();
        labels.insert("site".into(), "x".into());
        let desired = desired_of(&id, &labels, groups.iter(), &|_| Some("os@2".into()), 60);
        let mut r = record(&id);
        let why = |r: &Record, seen: Option<i64>, d: &Desired| reason(&Observed { record: r, last_seen: seen, desired: d }, "os@2", Some(&stable), 1000, 180);
        assert_eq!(why(&r, None, &desired), Some(Reason::NeverCheckedIn));
        assert_eq!(why(&r, Some(700), &desired), Some(Reason::Offline { since: 700 }));
        assert_eq!(why(&r, Some(990), &desired), Some(Reason::Pending { since: 990 }));
        apply_report(&mut r, &ReportBatch { events: vec![ev(1, EventKind::Failed { path: "/os".into(), generation: None, error: "disk full".into() })], mounts: vec![] });
        assert_eq!(why(&r, Some(990), &desired), Some(Reason::Failed { error: "disk full".into(), time: 101 }));
        apply_report(&mut r, &ReportBatch { events: vec![ev(2, EventKind::MetadataStale { path: "/os".into(), error: "expired".into() })], mounts: vec![] });
        assert_eq!(why(&r, Some(990), &desired), Some(Reason::MetadataStale { error: "expired".into(), time: 102 }));
        let none = desired_of(&id, &Labels::new(), groups.iter(), &|_| None, 60);
        assert_eq!(why(&r, Some(990), &none), Some(Reason::NotInGroup));
        let pinned = [group("held", 0, Some("site"), &[], &[("/os", Source::Pinned("os@1".into()))])];
        let pinned = desired_of(&id, &labels, pinned.iter(), &|_| None, 60);
        assert_eq!(why(&r, Some(990), &pinned), Some(Reason::Pinned { generation: "os@1".into() }));
        apply_report(&mut r, &ReportBatch { events: vec![ev(3, EventKind::Switched { path: "/os".into(), from: "os@1".into(), to: "os@2".into(), millis: 5 })], mounts: vec![] });
        assert_eq!(why(&r, None, &none), None, "on it, whatever else holds");
    }
}

mod rollout_core {
    use api::fleet::*;
    use api::rollouts::*;
    use format::ChannelName;

    use crate::rollouts::{bucket, entry_stage, evaluate, Member, Step};

    fn rollout(stages: Vec<Stage>) -> Rollout {
        Rollout {
            id: RolloutId(7),
            channel: ChannelName::new("os/stable").unwrap(),
            generation: "os@2".into(),
            from: Some("os@1".into()),
            plan: Plan { name: "t".into(), stages, ignore_windows: false, lost_after_seconds: 100 },
            state: RolloutState::Running,
            stage: 0,
            stage_started: 1000,
            stage_times: vec![1000],
            counts: Default::default(),
            started_by: "admin".into(),
            started: 1000,
            reason: None,
            log: vec![],
            acknowledged: vec![],
            activation: None,
        }
    }

    fn stage(target: StageTarget, min_sample: u32, soak_seconds: u64, budget: u32) -> Stage {
        Stage { target, min_sample, soak_seconds, success_percent: 100, failure_budget: budget }
    }

    fn member(n: u8, entry: usize, healthy: bool, failed: bool) -> Member {
        Member { id: EndpointId::of_key(&[n; 32]), entry, switched: healthy, healthy, failed, waiting: false, seen: Some(1000) }
    }

    #[test]
    fn only_the_newest_rollout_of_a_channel_holds_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::sync::Arc::new(crate::meta::Meta::open(dir.path()).unwrap());
        let engine = crate::rollouts::Engine::load(meta).unwrap();
        let entry = || crate::meta::AuditEntry::new("admin", "rollout", "r", "");
        let mut old = rollout(vec![stage(StageTarget::Percent(100), 1, 0, 0)]);
        old.id = RolloutId(1);
        old.state = RolloutState::Aborted { by: "admin".into(), revert: false };
        engine.put(old, entry()).unwrap();
        assert_eq!(engine.holding().iter().map(|r| r.id).collect::<Vec<_>>(), [RolloutId(1)], "aborted where it stood: still holds");
        let mut new = rollout(vec![stage(StageTarget::Percent(100), 1, 0, 0)]);
        new.id = RolloutId(2);
        new.state = RolloutState::Completed;
        engine.put(new, entry()).unwrap();
        assert!(engine.holding().is_empty(), "a later rollout of the channel ends the old one's hold");
    }

    #[test]
    fn buckets_are_stable_per_rollout_and_differ_between_rollouts() {
        let ids: Vec<EndpointId> = (0..200u8).map(|n| EndpointId::of_key(&[n; 32])).collect();
        let a: Vec<u32> = ids.iter().map(|e| bucket(e, RolloutId(1))).collect();
        assert_eq!(a, ids.iter().map(|e| bucket(e, RolloutId(1))).collect::<Vec<_>>());
        assert_ne!(a, ids.iter().map(|e| bucket(e, RolloutId(2))).collect::<Vec<_>>());
        // Shares select about their size.
        let ten = a.iter().filter(|b| **b < 1000).count();
        assert!((5..=40).contains(&ten), "{ten} of 200 in 10%");
        let r = rollout(vec![stage(StageTarget::Group(GroupName::new("pilot").unwrap()), 1, 0, 0), stage(StageTarget::Percent(100), 1, 0, 0)]);
        let pilot = [GroupName::new("pilot").unwrap()];
        assert_eq!(entry_stage(&r, &ids[0], &pilot), Some(0));
        assert_eq!(entry_stage(&r, &ids[0], &[]), Some(1));
    }

    #[test]
    fn a_stage_passes_on_healthy_endpoints_after_its_soak_and_the_brake_halts_beyond_the_budget() {
        let mut r = rollout(vec![stage(StageTarget::Percent(10), 2, 60, 0), stage(StageTarget::Percent(100), 1, 0, 1)]);
        let two_healthy = [member(1, 0, true, false), member(2, 0, true, false), member(3, 1, false, false)];
        let (c, step) = evaluate(&r, &two_healthy, 1030);
        assert_eq!((c.targeted, c.healthy, step), (2, 2, Step::Stay), "the soak is not over");
        assert!(matches!(evaluate(&r, &two_healthy, 1061).1, Step::Advance(_)));
        let one_failed = [member(1, 0, true, false), member(2, 0, false, true)];
        match evaluate(&r, &one_failed, 1061).1 {
            Step::Halt(rule, failed) => {
                assert!(rule.contains("budget 0"), "{rule}");
                assert_eq!(failed, [EndpointId::of_key(&[2; 32])]);
            }
            other => panic!("{other:?}"),
        }
        // Acknowledged failures no longer count.
        r.acknowledged.push(EndpointId::of_key(&[2; 32]));
        assert!(matches!(evaluate(&r, &one_failed, 1061).1, Step::Advance(_)), "1 healthy of the 1 not excused");
        // Silent past the deadline counts as lost, and lost as failed.
        let mut silent = member(4, 0, false, false);
        silent.seen = Some(1000);
        r.acknowledged.clear();
        let (c, step) = evaluate(&r, &[member(1, 0, true, false), silent], 1200);
        assert_eq!(c.lost, 1);
        assert!(matches!(step, Step::Halt(..)));
        // Stage 2 takes everyone and tolerates one failure.
        r.stage = 1;
        r.stage_times.push(1100);
        let all = [member(1, 0, true, false), member(2, 0, true, false), member(3, 1, false, true), member(5, 1, true, false)];
        assert_eq!(evaluate(&r, &all, 1150).1, Step::Stay, "3 of 4 healthy is under 100%, one failure within budget");
        // An empty stage passes at once.
        let mut empty = rollout(vec![stage(StageTarget::Group(GroupName::new("pilot").unwrap()), 1, 600, 0)]);
        empty.stage_started = 1000;
        assert!(matches!(evaluate(&empty, &[], 1001).1, Step::Advance(_)));
    }
}

/// A generation of one directory of `files` (name, content) in `store`; returns its manifest.
fn small_generation(store: &cache::Store, generation: u64, files: &[(&str, Vec<u8>)]) -> Digest {
    use format::{EntryKind, Extent, Manifest, Meta, Tree};
    let mut entries = Vec::new();
    for (name, content) in files {
        let chunk = store.insert(content, 3).unwrap().digest;
        entries.push(format::Entry {
            name: name.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            link_group: 0,
            link_count: 1,
            xattrs: vec![],
            kind: EntryKind::Regular { size: content.len() as u64, extents: vec![Extent { offset: 0, len: content.len() as u32, digest: chunk }] },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let root = store.insert(&Tree { entries }.encode().unwrap(), 3).unwrap().digest;
    let manifest = Manifest {
        image: format::ImageName::new("img").unwrap(),
        generation,
        root,
        root_meta: Meta { mode: 0o755, uid: 0, gid: 0, mtime_sec: 0, mtime_nsec: 0, xattrs: vec![] },
        parent: None,
        created: 0,
        message: String::new(),
        chunking: Default::default(),
        stats: Default::default(),
        extensions: vec![],
    };
    let d = store.insert(&manifest.encode(), 3).unwrap().digest;
    store.sync().unwrap();
    d
}

#[test]
fn serving_packs_hold_each_object_once_and_go_when_no_layout_names_them() {
    use crate::serve::Serving;
    use format::layout::Layout;
    let dir = tempfile::tempdir().unwrap();
    let store = cache::Store::open(dir.path().join("store")).unwrap();
    let text = |i: u8| vec![i; 5000];
    let one = small_generation(&store, 1, &[("a", text(1)), ("b", text(2)), ("c", text(3))]);
    let two = small_generation(&store, 2, &[("a", text(1)), ("b", text(2)), ("c", text(4))]);
    let serving = Serving::open(&dir.path().join("serve"), 0).unwrap();
    let built = serving.build(&store, &one).unwrap();
    assert_eq!((built.objects, built.new_objects), (5, 5), "manifest, tree, three chunks");
    let built = serving.build(&store, &two).unwrap();
    assert_eq!((built.objects, built.new_objects), (5, 3), "a and b are served from the first pack");
    assert_eq!(serving.build(&store, &two).unwrap(), Default::default(), "built once");

    let layout = |m: &Digest| Layout::decode(&serving.blobs().read(&Serving::layout_key(m)).unwrap().unwrap()).unwrap();
    let (l1, l2) = (layout(&one), layout(&two));
    assert_eq!(l2.packs.len(), 2);
    assert_eq!(l2.packs[0], l1.packs[0]);
    assert_eq!(l2.packs[1].origin, two);
    // Every placed record is the object, byte for byte as the store frames it.
    for l in [&l1, &l2] {
        for e in &l.entries {
            let pack = serving.blobs().read(&Serving::pack_key(&l.packs[e.pack as usize].digest)).unwrap().unwrap();
            let rec = &pack[e.offset as usize..e.end() as usize];
            let d = Digest(rec[..32].try_into().unwrap());
            assert_eq!(format::layout::prefix(&d), e.prefix);
            assert_eq!(store.decode(&rec[36..], &d, 1 << 20).unwrap(), store.get(&d).unwrap());
        }
    }
    // The metadata region of the second pack is its manifest and tree, before its one chunk.
    let meta: Vec<_> = l2.entries.iter().filter(|e| e.pack == 1 && e.offset < l2.packs[1].meta_end).collect();
    assert_eq!(meta.len(), 2);

    // Reopened, the server knows what it serves; a layout whose pack is gone is dropped.
    drop(serving);
    let serving = Serving::open(&dir.path().join("serve"), 0).unwrap();
    assert!(serving.has_layout(&one) && serving.has_layout(&two));
    assert_eq!(serving.collect(&[two].into_iter().collect()).unwrap(), (1, 0), "gen1's pack still serves gen2");
    assert!(!dir.path().join("serve/layouts").join(one.to_hex()).exists());
    assert_eq!(serving.collect(&Default::default()).unwrap(), (1, 2));
    assert_eq!(std::fs::read_dir(dir.path().join("serve/packs")).unwrap().count(), 0);

    // A copy gone bad in the store is not served: the build fails and writes no layout.
    let three = small_generation(&store, 3, &[("z", text(9))]);
    let chunk = Digest::of(&text(9));
    let framed = store.get_framed(&chunk).unwrap();
    let path = store.object_path(&chunk);
    let mut bad = framed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(serving.build(&store, &three), Err(crate::serve::ServeError::Corrupt { digest, .. }) if digest == chunk));
    assert!(!serving.has_layout(&three) && !dir.path().join("serve/layouts").join(three.to_hex()).exists());
    assert_eq!(std::fs::read_dir(dir.path().join("serve/tmp")).unwrap().count(), 0, "a failed build leaves nothing");
    assert_eq!(std::fs::read_dir(dir.path().join("serve/packs")).unwrap().count(), 0);
}

#[test]
fn serving_packs_recompress_objects_at_a_higher_level_without_changing_what_they_are() {
    use crate::serve::Serving;
    use format::layout::Layout;
    let dir = tempfile::tempdir().unwrap();
    let store = cache::Store::open(dir.path().join("store")).unwrap();
    // Text with the structure of real files: words drawn from a small vocabulary.
    let words = ["config", "value", "enable", "path", "/usr/lib", "default", "timeout", "=", "\n", "# comment"];
    let mut seed = 7u64;
    let mut text = |n: usize| {
        let mut s = String::new();
        while s.len() < n {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s.push_str(words[(seed >> 33) as usize % words.len()]);
            s.push(' ');
        }
        s.into_bytes()
    };
    let files = [("a", text(200_000)), ("b", text(300_000))];
    let gen = small_generation(&store, 1, &files);
    let pack_len = |level: i32| {
        let serving = Serving::open(&dir.path().join(format!("serve{level}")), level).unwrap();
        serving.build(&store, &gen).unwrap();
        let l = Layout::decode(&serving.blobs().read(&Serving::layout_key(&gen)).unwrap().unwrap()).unwrap();
        // Every record still decodes to the object its digest names; at a level, the data
        // objects are members of group records, whose bytes inside the group are theirs.
        let pack = serving.blobs().read(&Serving::pack_key(&l.packs[0].digest)).unwrap().unwrap();
        for e in &l.entries {
            let rec = &pack[e.offset as usize..e.end() as usize];
            let d = Digest(rec[..32].try_into().unwrap());
            let content = store.decode(&rec[36..], &d, 1 << 22).unwrap();
            match e.inner {
                None if store.contains(&d) => assert_eq!(content, store.get(&d).unwrap()),
                None => assert!(l.entries.iter().any(|m| m.inner.is_some() && m.offset == e.offset), "a record of no stored object is a group"),
                Some(inner) => {
                    let bytes = &content[inner.offset as usize..(inner.offset + inner.len) as usize];
                    let m = Digest::of(bytes);
                    assert_eq!(format::layout::prefix(&m), e.prefix);
                    assert_eq!(store.get(&m).unwrap(), bytes);
                }
            }
        }
        assert_eq!(l.entries.iter().any(|e| e.inner.is_some()), level > 0, "groups only when recompressing");
        l.packs[0].len
    };
    let (stored, nineteen) = (pack_len(0), pack_len(19));
    assert!(nineteen * 10 < stored * 9, "level 19 saves over a tenth of the level-3 objects: {nineteen} against {stored}");
}
