//! Unit tests of the agent's pure parts and its disk state: the report queue (order,
//! durability across reopen, torn writes, the bound, acks), the configuration, the
//! reconciler, the observer, the schedule, the SSE parser, facts parsing and the key file.

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
        mount: NamespaceMount { path: path.into(), source, cache_share: None, passthrough: false, health: None },
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
        spec: Spec { source, cache_share: reconcile::DEFAULT_CACHE_SHARE, passthrough: false },
        state: RunState::Up { current: current.into() },
        last_update: None,
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
    let spec = |s| Spec { source: s, cache_share: 25, passthrough: false };
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
        servers: vec![ServerHealth { url: "http://a".into(), ok: 1, failed: 2, last_error: Some("connection refused".into()), resting_for: 5 }],
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
