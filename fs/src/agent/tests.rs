//! Unit tests of the agent's pure parts and its disk state: the report queue (order,
//! durability across reopen, torn writes, the bound, acks), the configuration, the
//! reconciler (rollouts, withdrawal, activation, failed offers), health checks on an injected
//! clock, probes and restarts as real processes, the observer, the schedule, the SSE parser,
//! facts parsing and the key file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::fleet::{CacheState, DesiredMount, EventKind, Facts, GroupName, NamespaceMount, Source};

use super::config::AgentConfig;
use super::queue::{bound, parse_events, Queue};
use super::reconcile::{self, Action, RunState, Running, Seen, Spec};
use super::schedule::{Backoff, Schedule};

fn mounted(n: u64) -> EventKind {
    EventKind::Mounted { path: "/srv/os".into(), generation: format!("os@{n}") }
}

fn cache_event() -> EventKind {
    EventKind::Cache { cache: CacheState::default() }
}

fn seqs(q: &Queue) -> Vec<u64> {
    q.events().map(|e| e.seq).collect()
}

#[test]
fn the_queue_numbers_events_and_keeps_them_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(dir.path(), 100).unwrap();
    for n in 1..=3 {
        assert_eq!(q.push(10, mounted(n)).unwrap(), n);
    }
    drop(q);
    let mut q = Queue::open(dir.path(), 100).unwrap();
    assert_eq!(seqs(&q), vec![1, 2, 3]);
    assert_eq!(q.push(11, mounted(4)).unwrap(), 4);
    assert_eq!(q.batch().len(), 4);
}

#[test]
fn acked_events_go_and_sequence_numbers_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(dir.path(), 100).unwrap();
    for n in 1..=5 {
        q.push(10, mounted(n)).unwrap();
    }
    q.ack(3).unwrap();
    assert_eq!(seqs(&q), vec![4, 5]);
    q.ack(5).unwrap();
    assert!(q.is_empty());
    drop(q);
    // Every event acknowledged: the numbers still go on from 6 after a restart.
    let mut q = Queue::open(dir.path(), 100).unwrap();
    assert_eq!(q.push(12, mounted(6)).unwrap(), 6);
}

#[test]
fn a_torn_last_line_is_ignored_and_the_next_append_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(dir.path(), 100).unwrap();
    q.push(10, mounted(1)).unwrap();
    q.push(10, mounted(2)).unwrap();
    drop(q);
    let path = dir.path().join("events.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    // A crash in the middle of the third append.
    bytes.extend_from_slice(br#"{"seq":3,"time":10,"kind":"mount"#);
    std::fs::write(&path, &bytes).unwrap();
    let mut q = Queue::open(dir.path(), 100).unwrap();
    assert_eq!(seqs(&q), vec![1, 2]);
    assert_eq!(q.push(11, mounted(3)).unwrap(), 3);
    drop(q);
    let q = Queue::open(dir.path(), 100).unwrap();
    assert_eq!(seqs(&q), vec![1, 2, 3]);
}

#[test]
fn parse_events_stops_at_damage() {
    let good = br#"{"seq":1,"time":1,"kind":"enrolled"}
{"seq":2,"time":1,"kind":"enrolled"}
"#;
    let (events, torn) = parse_events(good);
    assert_eq!((events.len(), torn), (2, false));
    // A line out of order is damage too.
    let bad = br#"{"seq":2,"time":1,"kind":"enrolled"}
{"seq":1,"time":1,"kind":"enrolled"}
"#;
    let (events, torn) = parse_events(bad);
    assert_eq!((events.len(), torn), (1, true));
    let (events, torn) = parse_events(b"garbage\n");
    assert_eq!((events.len(), torn), (0, true));
}

#[test]
fn the_bound_drops_the_oldest_cache_and_facts_events_first_then_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(dir.path(), 4).unwrap();
    q.push(1, mounted(1)).unwrap(); // 1
    q.push(1, cache_event()).unwrap(); // 2
    q.push(1, mounted(3)).unwrap(); // 3
    q.push(1, EventKind::Facts { facts: Facts::default() }).unwrap(); // 4
    q.push(1, mounted(5)).unwrap(); // 5: drops 2 (the oldest cache)
    assert_eq!(seqs(&q), vec![1, 3, 4, 5]);
    q.push(1, mounted(6)).unwrap(); // drops 4 (facts)
    assert_eq!(seqs(&q), vec![1, 3, 5, 6]);
    q.push(1, mounted(7)).unwrap(); // no cheap events left: drops the oldest
    assert_eq!(seqs(&q), vec![3, 5, 6, 7]);
    drop(q);
    // The file may hold more than the bound until its next rewrite; reading applies it.
    let q = Queue::open(dir.path(), 4).unwrap();
    assert_eq!(seqs(&q), vec![3, 5, 6, 7]);
    assert_eq!(q.last_seq(), 7);
    // A smaller bound at the next start keeps the newest.
    drop(q);
    let q = Queue::open(dir.path(), 2).unwrap();
    assert_eq!(seqs(&q), vec![6, 7]);
}

#[test]
fn the_events_file_stays_bounded_under_many_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(dir.path(), 10).unwrap();
    for n in 1..=200 {
        q.push(1, mounted(n)).unwrap();
    }
    let lines = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap().lines().count();
    assert!(lines <= 10 + 10 / 8 + 16 + 1, "{lines} lines");
    assert_eq!(seqs(&q), (191..=200).collect::<Vec<_>>());
}

#[test]
fn bound_alone_is_pure() {
    let ev = |seq, kind| api::fleet::Event { seq, time: 0, kind };
    let mut v: std::collections::VecDeque<_> = vec![ev(1, cache_event()), ev(2, mounted(2)), ev(3, cache_event())].into();
    assert_eq!(bound(&mut v, 1), 2);
    assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn batches_take_at_most_max_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = Queue::open(dir.path(), 5000).unwrap();
    for n in 1..=1500 {
        q.push(1, mounted(n)).unwrap();
    }
    let b = q.batch();
    assert_eq!((b.len(), b[0].seq, b[999].seq), (api::fleet::MAX_EVENTS, 1, 1000));
}

#[test]
fn the_config_reads_with_defaults_and_refuses_bad_values() {
    let c = AgentConfig::parse(
        r#"
servers = ["http://a:4640", "http://b:4640"]
mount_prefix = "/tmp/agent1"
[labels]
site = "paris"
"#,
    )
    .unwrap();
    assert_eq!(c.state, std::path::PathBuf::from("/var/lib/imgfs"));
    assert_eq!(c.report_queue_max, super::config::DEFAULT_REPORT_QUEUE_MAX);
    assert_eq!(c.labels.get("site").map(String::as_str), Some("paris"));
    assert_eq!(c.local_path("/srv/os"), std::path::PathBuf::from("/tmp/agent1/srv/os"));
    for bad in [
        "servers = []",
        r#"servers = ["ftp://a"]"#,
        "servers = [\"http://a\"]\nunknown_key = 1",
        "servers = [\"http://a\"]\ninterval_seconds = 0",
        "servers = [\"http://a\"]\nmount_prefix = \"rel\"",
        "servers = [\"http://a\"]\n[labels]\n\"bad key\" = \"x\"",
    ] {
        assert!(AgentConfig::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../../docs/agent.toml.example");
    AgentConfig::parse(text).unwrap();
}

fn desired(path: &str, source: Source, hint: Option<&str>) -> DesiredMount {
    DesiredMount {
        mount: NamespaceMount { path: path.into(), source, cache_share: None, passthrough: false, health: None, writable: None },
        group: GroupName::new("kiosks").unwrap(),
        generation: hint.map(String::from),
        rollout: None,
        soak_seconds: None,
        ignore_windows: false,
        window: None,
        activation: None,
    }
}

fn channel(c: &str) -> Source {
    Source::Channel(format::ChannelName::new(c).unwrap())
}

fn up(source: Source, current: &str) -> Running {
    Running {
        spec: Spec { source, cache_share: reconcile::DEFAULT_CACHE_SHARE, passthrough: false, writable: None },
        state: RunState::Up { current: current.into() },
        last_update: None,
        previous: None,
        held: None,
    }
}

#[test]
fn plan_starts_stops_restarts_and_updates() {
    let now = Instant::now();
    let want = vec![
        desired("/srv/os", channel("os/stable"), Some("os@3")),
        desired("/srv/app", Source::Pinned("app@2".into()), Some("app@2")),
        desired("/srv/new", channel("os/pilot"), None),
    ];
    let mut running = BTreeMap::new();
    running.insert("/srv/os".to_string(), up(channel("os/stable"), "os@2"));
    running.insert("/srv/app".to_string(), up(Source::Pinned("app@1".into()), "app@1"));
    running.insert("/srv/old".to_string(), up(channel("os/stable"), "os@2"));
    let actions = reconcile::plan(&want, &running, now);
    let spec = |s| Spec { source: s, cache_share: 25, passthrough: false, writable: None };
    assert_eq!(
        actions,
        vec![
            Action::Stop { path: "/srv/old".into() },
            Action::Restart { path: "/srv/app".into(), spec: spec(Source::Pinned("app@2".into())) },
            Action::Start { path: "/srv/new".into(), spec: spec(channel("os/pilot")) },
            Action::Update { path: "/srv/os".into(), hint: "os@3".into() },
        ]
    );
}

#[test]
fn plan_does_not_repeat_an_update_for_the_same_hint_too_soon() {
    let now = Instant::now();
    let want = vec![desired("/srv/os", channel("os/stable"), Some("os@3"))];
    let mut r = up(channel("os/stable"), "os@2");
    r.last_update = Some(("os@3".into(), now));
    let mut running = BTreeMap::from([("/srv/os".to_string(), r.clone())]);
    assert_eq!(reconcile::plan(&want, &running, now + Duration::from_secs(5)), vec![]);
    assert_eq!(reconcile::plan(&want, &running, now + reconcile::UPDATE_AGAIN).len(), 1);
    // A new hint is acted on at once.
    let want4 = vec![desired("/srv/os", channel("os/stable"), Some("os@4"))];
    assert_eq!(reconcile::plan(&want4, &running, now), vec![Action::Update { path: "/srv/os".into(), hint: "os@4".into() }]);
    // Already there: nothing to do.
    running.get_mut("/srv/os").unwrap().state = RunState::Up { current: "os@3".into() };
    assert_eq!(reconcile::plan(&want, &running, now + Duration::from_secs(60)), vec![]);
}

#[test]
fn plan_restarts_a_down_mount_only_when_its_wait_is_over() {
    let now = Instant::now();
    let want = vec![desired("/srv/os", channel("os/stable"), None)];
    let mut r = up(channel("os/stable"), "os@2");
    r.state = RunState::Down { retry_at: now + Duration::from_secs(10) };
    let running = BTreeMap::from([("/srv/os".to_string(), r)]);
    assert_eq!(reconcile::plan(&want, &running, now), vec![]);
    assert_eq!(reconcile::plan(&want, &running, now + Duration::from_secs(10)).len(), 1);
}

#[test]
fn a_pinned_mount_moved_off_its_pin_is_sent_back() {
    let want = vec![desired("/srv/app", Source::Pinned("app@2".into()), Some("app@2"))];
    let running = BTreeMap::from([("/srv/app".to_string(), up(Source::Pinned("app@2".into()), "app@1"))]);
    assert_eq!(reconcile::plan(&want, &running, Instant::now()), vec![Action::Update { path: "/srv/app".into(), hint: "app@2".into() }]);
}

fn status(current: &str, last_check: Option<api::control::Switch>, fresh: bool, offline: bool) -> api::control::Status {
    use api::control::*;
    let g = |s: &str| GenerationRef { generation: s.into(), manifest: format::Digest::of(s.as_bytes()) };
    Status {
        channel: Some(format::ChannelName::new("os/stable").unwrap()),
        at: None,
        channel_version: 1,
        held: None,
        current: g(current),
        previous: Some(g("os@1")),
        cache: CacheReport {
            dir: "/c".into(),
            used_bytes: 100 << 20,
            objects: 1,
            object_bytes: 1,
            plain_copies: 0,
            plain_copy_bytes: 0,
            limit: "25%".into(),
            min_free: "5%".into(),
            allowance_bytes: None,
            disk_available_bytes: Some(1 << 30),
            evicted_objects: 0,
            evicted_bytes: 0,
            keeper_rounds: 0,
            last_eviction: None,
        },
        pins: vec![g("os@0")],
        prefetching: vec![],
        servers: vec![ServerHealth {
            url: "http://a".into(),
            ok: 1,
            failed: 2,
            last_error: Some("connection refused".into()),
            resting_for: 5,
        }],
        offline,
        traffic: Traffic::default(),
        opens: Opens { mode: OpenMode::Kernel, fuse: 0, passthrough: 0 },
        trust: TrustSummary {
            fresh,
            stale_since: (!fresh).then(|| "2030-01-01T00:00:00Z".into()),
            valid_until: None,
            last_check: None,
            versions: Default::default(),
            min_epoch: 0,
            family: None,
            arch: "x86_64".into(),
            clock_high_water: String::new(),
        },
        last_check: last_check.map(|result| LastCheck { seconds_ago: 1, result }),
        writable: None,
        trace_fetch: None,
    }
}

#[test]
fn observe_reports_the_pollers_switches_rollbacks_and_trouble_once() {
    use api::control::Switch;
    let (ev, seen) = reconcile::observe("/srv/os", None, &status("os@2", None, true, false));
    assert!(ev.is_empty(), "the first look reports nothing");
    let switched = Switch::Switched { from: "os@2".into(), to: "os@3".into(), channel_version: 2, millis: 7 };
    let (ev, seen) = reconcile::observe("/srv/os", Some(&seen), &status("os@3", Some(switched.clone()), true, false));
    assert_eq!(ev, vec![EventKind::Switched { path: "/srv/os".into(), from: "os@2".into(), to: "os@3".into(), millis: 7 }]);
    let (ev, seen) = reconcile::observe("/srv/os", Some(&seen), &status("os@2", Some(switched), true, false));
    assert!(matches!(&ev[..], [EventKind::RolledBack { from, to, .. }] if from == "os@3" && to == "os@2"), "{ev:?}");
    let (ev, seen) = reconcile::observe("/srv/os", Some(&seen), &status("os@2", None, false, true));
    assert_eq!(ev.iter().map(|e| e.name()).collect::<Vec<_>>(), vec!["metadata_stale", "fetch_failed"]);
    assert_eq!(seen, Seen { current: "os@2".into(), stale: true, offline: true });
    let (ev, _) = reconcile::observe("/srv/os", Some(&seen), &status("os@2", None, false, true));
    assert!(ev.is_empty(), "trouble is reported when it begins only");
}

#[test]
fn the_cache_state_merges_mounts_and_reports_only_real_changes() {
    let a = status("os@2", None, true, false);
    let mut b = status("os@5", None, true, false);
    b.cache.disk_available_bytes = Some(1 << 29);
    let c = reconcile::cache_state([&a, &b]);
    assert_eq!(c.used_bytes, 200 << 20);
    assert_eq!(c.free_bytes, 1 << 29);
    assert_eq!(c.generations, vec!["os@0", "os@1", "os@2", "os@5"]);
    assert_eq!(c.pins, vec!["os@0"]);
    assert!(reconcile::cache_changed(None, &c));
    let mut d = c.clone();
    d.used_bytes += 1 << 20;
    assert!(!reconcile::cache_changed(Some(&c), &d), "a small change is not reported");
    d.used_bytes += 200 << 20;
    assert!(reconcile::cache_changed(Some(&c), &d));
    let mut e = c.clone();
    e.generations.push("os@6".into());
    assert!(reconcile::cache_changed(Some(&c), &e));
}

#[test]
fn the_actual_header_lists_mounts_up_and_down() {
    let mut running = BTreeMap::new();
    running.insert("/srv/os".to_string(), up(channel("os/stable"), "os@2"));
    let mut down = up(channel("os/stable"), "os@2");
    down.state = RunState::Down { retry_at: Instant::now() };
    running.insert("/srv/x".to_string(), down);
    assert_eq!(api::fleet::format_actual(&reconcile::actual(&running)), "/srv/os=os@2 /srv/x=-");
}

#[test]
fn the_schedule_follows_the_interval_hints_and_retry_after() {
    let t0 = Instant::now();
    let s0 = |s| t0 + Duration::from_secs(s);
    let mut s = Schedule::new(t0);
    assert!(s.due(t0));
    s.checked_in(t0, Duration::from_secs(100), 0.0);
    assert_eq!(s.next(), s0(100));
    s.checked_in(t0, Duration::from_secs(100), 0.999);
    assert!(s.next() > s0(109) && s.next() <= s0(110), "at most 10 % jitter");
    // A push hint: at once.
    s.hint(s0(5));
    assert_eq!(s.next(), s0(5));
    // Retry-After holds even against a hint.
    s.retry_after(s0(5), 30);
    s.hint(s0(6));
    assert_eq!(s.next(), s0(35));
    s.checked_in(s0(6), Duration::from_secs(1), 0.0);
    assert_eq!(s.next(), s0(35));
}

#[test]
fn failures_back_off_exponentially_up_to_a_minute_and_at_most_the_interval() {
    let mut b = Backoff::default();
    let waits: Vec<u64> = (0..9).map(|_| b.next(1.0).as_secs()).collect();
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    let mut b = Backoff::default();
    assert_eq!(b.next(0.0), Duration::from_millis(500), "jitter takes up to half off");
    b.reset();
    assert_eq!(b.next(1.0), Duration::from_secs(1));
    let t0 = Instant::now();
    let mut s = Schedule::new(t0);
    for _ in 0..10 {
        s.failed(t0, Duration::from_secs(20), 1.0);
    }
    assert_eq!(s.next(), t0 + Duration::from_secs(20));
}

#[test]
fn the_sse_parser_yields_named_events_and_skips_comments() {
    let mut p = super::client::SseParser::default();
    let mut got = Vec::new();
    for line in [": keepalive", "", "event: check", "data: {}", "", "data: x", "", "event: check\r", "\r"] {
        got.extend(p.line(line));
    }
    assert_eq!(got, vec!["check", "message", "check"]);
}

#[test]
fn facts_parse_os_release_and_meminfo_and_ignore_small_free_space_moves() {
    use super::facts::*;
    assert_eq!(pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert_eq!(pretty_name("PRETTY_NAME=Plain\n").as_deref(), Some("Plain"));
    assert_eq!(mem_total("MemTotal:       16318412 kB\nMemFree: 1 kB\n"), Some(16318412 * 1024));
    assert_eq!(clean("a\u{1b}[31mb\n"), "a[31mb");
    let f = Facts { cache_disk_bytes: 1000, cache_free_bytes: 500, hostname: "h".into(), ..Facts::default() };
    assert!(!changed(&f, &Facts { cache_free_bytes: 520, ..f.clone() }));
    assert!(changed(&f, &Facts { cache_free_bytes: 600, ..f.clone() }));
    assert!(changed(&f, &Facts { hostname: "h2".into(), ..f.clone() }));
    let real = collect(std::path::Path::new("/tmp/no/such/dir"));
    assert!(real.bad_field().is_none(), "{real:?}");
    assert!(real.cpus >= 1 && real.cache_disk_bytes > 0);
}

#[test]
fn the_key_is_made_once_0600_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let k1 = super::identity::load_or_create_key(dir.path()).unwrap();
    let path = super::identity::key_path(dir.path());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let k2 = super::identity::load_or_create_key(dir.path()).unwrap();
    assert_eq!(super::identity::endpoint_id(&k1), super::identity::endpoint_id(&k2));
    // Requests are signed by it.
    let s = super::identity::session_request(&k1, 1000);
    assert!(k1.public().verifies(&api::fleet::session_message(&s.endpoint, 1000), &s.signature));
    let e = super::identity::enroll_request(&k1, "tok", Facts::default(), Default::default());
    assert!(k1.public().verifies(&api::fleet::enroll_message("tok", &e.public_key), &e.signature));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn mount_directories_are_named_from_their_paths_without_collisions() {
    let a = super::supervisor::dir_name("/a-b");
    let b = super::supervisor::dir_name("/a/b");
    assert!(a.starts_with("a-b-") && b.starts_with("a-b-") && a != b, "{a} {b}");
}

// Rollouts, withdrawal, activation.

fn rollout(path: &str, generation: &str, id: u64) -> DesiredMount {
    let mut d = desired(path, channel("os/stable"), Some(generation));
    d.rollout = Some(api::rollouts::RolloutId(id));
    d
}

fn memos(path: &str, memo: reconcile::Memo) -> BTreeMap<String, reconcile::Memo> {
    BTreeMap::from([(path.to_string(), memo)])
}

fn plan_one(d: &DesiredMount, withdrawn: &[&str], memo: reconcile::Memo, r: Running) -> Vec<Action> {
    let withdrawn: Vec<String> = withdrawn.iter().map(|s| s.to_string()).collect();
    let running = BTreeMap::from([(d.mount.path.clone(), r)]);
    reconcile::plan_with(std::slice::from_ref(d), &withdrawn, &memos(&d.mount.path, memo), &running, Instant::now())
}

#[test]
fn a_rollout_switches_to_its_generation_and_a_moved_channel_is_updated() {
    let r = up(channel("os/stable"), "os@1");
    assert_eq!(
        plan_one(&rollout("/os", "os@2", 7), &[], Default::default(), r.clone()),
        vec![Action::SwitchTo { path: "/os".into(), generation: "os@2".into() }]
    );
    // No rollout: the channel moved (or a rollout was aborted with revert): update.
    let d = desired("/os", channel("os/stable"), Some("os@2"));
    assert_eq!(plan_one(&d, &[], Default::default(), r.clone()), vec![Action::Update { path: "/os".into(), hint: "os@2".into() }]);
    // A switch just sent is not sent again at once.
    let mut sent = r.clone();
    sent.last_update = Some(("os@2".into(), Instant::now()));
    assert_eq!(plan_one(&rollout("/os", "os@2", 7), &[], Default::default(), sent), vec![]);
    // On it already and held by the rollout: nothing.
    let mut there = up(channel("os/stable"), "os@2");
    there.held = Some("os@2".into());
    assert_eq!(plan_one(&rollout("/os", "os@2", 7), &[], Default::default(), there.clone()), vec![]);
    // The rollout is over (the channel names os@2): the hold is released so the mount follows
    // its channel again.
    assert_eq!(plan_one(&d, &[], Default::default(), there), vec![Action::Update { path: "/os".into(), hint: "os@2".into() }]);
}

#[test]
fn a_withdrawn_generation_is_left_at_once_and_never_entered() {
    let mut r = up(channel("os/stable"), "os@2");
    r.previous = Some("os@1".into());
    let d = desired("/os", channel("os/stable"), Some("os@2"));
    assert_eq!(plan_one(&d, &["os@2"], Default::default(), r.clone()), vec![Action::Withdraw { path: "/os".into(), from: "os@2".into() }]);
    // Even while a rollout offers it.
    assert_eq!(
        plan_one(&rollout("/os", "os@2", 3), &["os@2"], Default::default(), r.clone()),
        vec![Action::Withdraw { path: "/os".into(), from: "os@2".into() }]
    );
    // Nothing to go back to (none, or withdrawn too): reported once, and it keeps serving.
    let mut stuck = r.clone();
    stuck.previous = Some("os@1".into());
    let want = vec![Action::Stuck { path: "/os".into(), generation: "os@2".into(), previous: Some("os@1".into()) }];
    assert_eq!(plan_one(&d, &["os@1", "os@2"], Default::default(), stuck.clone()), want);
    let reported = reconcile::Memo { stuck_on: Some("os@2".into()), ..Default::default() };
    assert_eq!(plan_one(&d, &["os@1", "os@2"], reported, stuck.clone()), vec![]);
    stuck.previous = None;
    assert!(matches!(&plan_one(&d, &["os@2"], Default::default(), stuck)[..], [Action::Stuck { previous: None, .. }]));
    // Back on os@1 with os@2 still offered: never switched (or updated) into it.
    let back = up(channel("os/stable"), "os@1");
    assert_eq!(plan_one(&d, &["os@2"], Default::default(), back.clone()), vec![]);
    assert_eq!(plan_one(&rollout("/os", "os@2", 3), &["os@2"], Default::default(), back), vec![]);
}

#[test]
fn a_failed_offer_is_not_tried_again_until_the_desired_state_changes() {
    let r = up(channel("os/stable"), "os@1");
    let failed = |g: &str, id: Option<u64>| reconcile::Memo {
        failed: Some(reconcile::Offer { generation: g.into(), rollout: id.map(api::rollouts::RolloutId) }),
        ..Default::default()
    };
    assert_eq!(plan_one(&rollout("/os", "os@2", 7), &[], failed("os@2", Some(7)), r.clone()), vec![]);
    // Another rollout of the same generation, another generation, or the channel's own move
    // are other offers.
    assert_eq!(plan_one(&rollout("/os", "os@2", 8), &[], failed("os@2", Some(7)), r.clone()).len(), 1);
    assert_eq!(plan_one(&rollout("/os", "os@3", 7), &[], failed("os@2", Some(7)), r.clone()).len(), 1);
    let d = desired("/os", channel("os/stable"), Some("os@2"));
    assert_eq!(plan_one(&d, &[], failed("os@2", None), r.clone()), vec![]);
    assert_eq!(plan_one(&d, &[], failed("os@2", Some(7)), r), vec![Action::Update { path: "/os".into(), hint: "os@2".into() }]);
    // forget_stale drops what the desired state no longer offers, and mounts no longer desired.
    let mut m = BTreeMap::from([("/os".to_string(), failed("os@2", Some(7))), ("/gone".to_string(), failed("x@1", None))]);
    assert!(reconcile::forget_stale(&mut m, &[rollout("/os", "os@2", 7)], &[]));
    assert_eq!(m.keys().collect::<Vec<_>>(), vec!["/os"]);
    assert!(!reconcile::forget_stale(&mut m, &[rollout("/os", "os@2", 7)], &[]));
    assert!(reconcile::forget_stale(&mut m, &[rollout("/os", "os@3", 7)], &[]));
    assert!(m.is_empty());
}

#[test]
fn a_reboot_activation_is_staged_once_and_forgotten_when_reached_or_withdrawn() {
    let r = up(channel("os/stable"), "os@1");
    let mut d = rollout("/os", "os@2", 4);
    d.activation = Some("reboot".into());
    assert_eq!(
        plan_one(&d, &[], Default::default(), r.clone()),
        vec![Action::StageReboot { path: "/os".into(), generation: "os@2".into() }]
    );
    let staged = |g: &str| reconcile::Memo { pending_reboot: Some(g.into()), ..Default::default() };
    assert_eq!(plan_one(&d, &[], staged("os@2"), r.clone()), vec![], "waiting is reported once");
    // A newer generation replaces the staged one: several collapse into the latest offered.
    let mut d3 = d.clone();
    d3.generation = Some("os@3".into());
    assert_eq!(plan_one(&d3, &[], staged("os@2"), r.clone()), vec![Action::StageReboot { path: "/os".into(), generation: "os@3".into() }]);
    // Withdrawn: forgotten, and the next start will not take it.
    assert_eq!(plan_one(&d, &["os@2"], staged("os@2"), r.clone()), vec![Action::Unstage { path: "/os".into() }]);
    assert_eq!(reconcile::boot_generation(Some(&staged("os@2")), &["os@2".into()]), None);
    assert_eq!(reconcile::boot_generation(Some(&staged("os@2")), &[]).as_deref(), Some("os@2"));
    assert_eq!(reconcile::boot_generation(None, &[]), None);
    // Reached (the mount started on it): forgotten.
    assert_eq!(plan_one(&d, &[], staged("os@2"), up(channel("os/stable"), "os@2")), vec![Action::Unstage { path: "/os".into() }]);
    // Live and restart activations switch.
    for a in ["live", "restart:nginx.service,app@1.service"] {
        let mut live = d.clone();
        live.activation = Some(a.into());
        assert_eq!(
            plan_one(&live, &[], Default::default(), r.clone()),
            vec![Action::SwitchTo { path: "/os".into(), generation: "os@2".into() }]
        );
    }
}

#[test]
fn activations_parse_and_anything_unknown_is_taken_as_reboot() {
    use reconcile::Activation;
    assert_eq!(Activation::of(None), Activation::Live);
    assert_eq!(Activation::of(Some("live")), Activation::Live);
    assert_eq!(Activation::of(Some("reboot")), Activation::Reboot);
    assert_eq!(Activation::of(Some("restart:a.service,b")), Activation::Restart(vec!["a.service".into(), "b".into()]));
    for odd in ["restart:", "restart:a;rm -rf /", "restart:a,,b", "soon"] {
        assert_eq!(Activation::of(Some(odd)), Activation::Reboot, "{odd}");
    }
}

// Health checks on an injected clock.

fn check(soak: u64, units: &[&str], t0: Instant) -> super::health::Check {
    let offer = reconcile::Offer { generation: "os@2".into(), rollout: None };
    super::health::Check::new(offer, t0, Duration::from_secs(soak), units.iter().map(|u| u.to_string()).collect(), 1)
}

#[test]
fn a_switch_is_probed_at_once_and_again_after_the_soak_then_healthy() {
    use super::health::{Task, Verdict};
    let t0 = Instant::now();
    let mut c = check(60, &[], t0);
    assert_eq!(c.start(t0), Some(Task::Probe));
    assert_eq!(c.start(t0), None, "one task at a time");
    assert_eq!(c.finished(true), Verdict::Continue);
    assert_eq!(c.due(), t0 + Duration::from_secs(60));
    assert_eq!(c.start(t0 + Duration::from_secs(59)), None, "not before the soak ends");
    assert_eq!(c.start(t0 + Duration::from_secs(60)), Some(Task::Probe));
    assert_eq!(c.finished(true), Verdict::Healthy);
    // No soak: one healthy probe is enough.
    let mut c = check(0, &[], t0);
    assert_eq!(c.start(t0), Some(Task::Probe));
    assert_eq!(c.finished(true), Verdict::Healthy);
}

#[test]
fn a_failed_probe_at_once_or_after_the_soak_fails_the_check() {
    use super::health::Verdict;
    let t0 = Instant::now();
    let mut c = check(30, &[], t0);
    c.start(t0);
    assert_eq!(c.finished(false), Verdict::ProbeFailed);
    let mut c = check(30, &[], t0);
    c.start(t0);
    c.finished(true);
    c.start(t0 + Duration::from_secs(31));
    assert_eq!(c.finished(false), Verdict::ProbeFailed);
}

#[test]
fn units_are_restarted_after_a_healthy_first_probe_and_a_failed_restart_says_so() {
    use super::health::{Task, Verdict};
    let t0 = Instant::now();
    let mut c = check(10, &["app.service"], t0);
    assert_eq!(c.start(t0), Some(Task::Probe));
    assert_eq!(c.finished(true), Verdict::Continue);
    assert_eq!(c.start(t0), Some(Task::Restart));
    assert_eq!(c.finished(true), Verdict::Continue);
    assert_eq!(c.start(t0 + Duration::from_secs(10)), Some(Task::Probe));
    assert_eq!(c.finished(true), Verdict::Healthy);
    let mut c = check(10, &["app.service"], t0);
    c.start(t0);
    c.finished(true);
    c.start(t0);
    assert_eq!(c.finished(false), Verdict::RestartFailed);
}

// Probes and restarts as real processes.

fn probe_cmd(command: &str, timeout: u64) -> api::fleet::Probe {
    api::fleet::Probe { command: Some(command.into()), url: None, timeout_seconds: timeout }
}

#[test]
fn a_command_probe_sees_the_mount_generation_and_labels_and_fails_with_its_output_and_exit() {
    use super::probe::{probe, How};
    let dir = tempfile::tempdir().unwrap();
    let labels: api::fleet::Labels = [("site", "paris"), ("fault", "probe")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let none = api::fleet::Labels::new();
    let ok = probe_cmd(
        r#"test "$IMGFS_MOUNT" = /srv/os && test "$IMGFS_GENERATION" = os@2 && test "$IMGFS_LABELS" = fault=probe,site=paris"#,
        10,
    );
    assert_eq!(probe(Some(&ok), std::path::Path::new("/srv/os"), "os@2", &labels), Ok(()));
    let unlabelled = probe_cmd(r#"test -z "$IMGFS_LABELS" && test "${IMGFS_LABELS+set}" = set"#, 10);
    assert_eq!(probe(Some(&unlabelled), dir.path(), "os@2", &none), Ok(()), "no labels: set and empty");
    let bad = probe_cmd("echo out; echo err >&2; exit 3", 10);
    let f = probe(Some(&bad), dir.path(), "os@2", &none).unwrap_err();
    assert_eq!((f.output.as_str(), &f.how), ("out\nerr", &How::Exit(3)));
    assert_eq!(f.to_string(), "out\nerr (exit 3)");
    assert_eq!(probe(None, dir.path(), "os@2", &labels), Ok(()), "no probe: healthy");
}

#[test]
fn a_probe_past_its_deadline_is_killed_with_its_whole_process_group() {
    use super::probe::{probe, How};
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child.pid");
    // The shell leaves a grandchild behind that would keep the pipe open.
    let cmd = format!("echo started; sleep 30 & echo $! > {}; wait", marker.display());
    let start = Instant::now();
    // A deadline of 3 s: long enough for the shell to start on a loaded machine.
    let f = probe(Some(&probe_cmd(&cmd, 3)), dir.path(), "os@2", &Default::default()).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(12), "{:?}", start.elapsed());
    assert_eq!((f.output.as_str(), &f.how), ("started", &How::TimedOut(3)));
    let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    // Killed (or a zombie about to be reaped by init): no longer sleeping. SIGKILL takes a
    // moment to land on a loaded machine: give it up to 2 s.
    let alive = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z") && !s.contains(") X"));
    let until = Instant::now() + Duration::from_secs(2);
    while alive() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(), "the probe's grandchild {pid} survived");
}

#[test]
fn an_http_probe_is_healthy_on_2xx_only() {
    use super::probe::{probe, How};
    use std::io::{Read, Write};
    let serve = |status: &'static str, body: &'static str| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let reply = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            c.write_all(reply.as_bytes()).unwrap();
        });
        api::fleet::Probe { command: None, url: Some(url), timeout_seconds: 5 }
    };
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(probe(Some(&serve("204 No Content", "")), dir.path(), "os@2", &Default::default()), Ok(()));
    let f = probe(Some(&serve("503 Service Unavailable", "db down")), dir.path(), "os@2", &Default::default()).unwrap_err();
    assert_eq!((f.output.as_str(), &f.how), ("db down", &How::Http(503)));
}

#[test]
fn the_restart_command_gets_the_units_as_arguments() {
    use super::probe::{restart, How};
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("restart");
    let log = dir.path().join("log");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\ncase \"$*\" in *bad.service*) echo no such unit; exit 5;; esac\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let command = format!("{} --now", script.display());
    assert_eq!(restart(&command, &["a.service".into(), "b.service".into()]), Ok(()));
    let f = restart(&command, &["bad.service".into()]).unwrap_err();
    assert_eq!((f.output.as_str(), &f.how), ("no such unit", &How::Exit(5)));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "--now a.service b.service\n--now bad.service\n");
}

#[test]
fn the_config_takes_a_health_probe_and_a_restart_command() {
    let c = AgentConfig::parse(
        "servers = [\"http://a\"]\nrestart_command = \"/usr/local/bin/restart\"\n[health]\ncommand = \"true\"\ntimeout_seconds = 5\n",
    )
    .unwrap();
    assert_eq!(c.health.as_ref().and_then(|h| h.command.as_deref()), Some("true"));
    assert_eq!(c.restart_command, "/usr/local/bin/restart");
    let c = AgentConfig::parse("servers = [\"http://a\"]").unwrap();
    assert_eq!((c.health, c.restart_command.as_str()), (None, super::config::DEFAULT_RESTART_COMMAND));
    for bad in [
        "servers = [\"http://a\"]\n[health]\ntimeout_seconds = 5",
        "servers = [\"http://a\"]\n[health]\ncommand = \"true\"\nurl = \"http://x\"",
        "servers = [\"http://a\"]\n[health]\ncommand = \"true\"\ntimeout_seconds = 0",
        "servers = [\"http://a\"]\n[health]\ncommand = \"true\"\ntimeot = 3",
        "servers = [\"http://a\"]\nrestart_command = \" \"",
    ] {
        assert!(AgentConfig::parse(bad).is_err(), "{bad}");
    }
}
