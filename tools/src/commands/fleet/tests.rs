//! Unit tests of the fleet commands' argument checks, namespace files and the text of
//! `fleet show`, `fleet ls` and `fleet compliance`.

use std::collections::BTreeMap;
use std::path::Path;

use api::fleet::{
    CacheState, Compliance, Conflict, DesiredMount, EndpointDetail, EndpointId, EndpointSummary, Endpoints, Event, EventKind, Facts,
    GroupName, MountState, MountView, NamespaceMount, Reason, Source, Straggler,
};

use super::*;

/// The time "now" of every rendering here: 2026-12-03 10:05:00 UTC.
const NOW: i64 = 1_796_292_300;

fn id(n: u8) -> EndpointId {
    EndpointId::new(&format!("ep-{:016x}", n)).unwrap()
}

fn render(f: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn now_is_the_minute_the_expectations_say() {
    assert_eq!(text::minute(NOW), "2026-12-03 10:05");
}

#[test]
fn labels_are_key_value_with_the_api_rules() {
    assert_eq!(parse_label("site=paris").unwrap(), ("site".into(), "paris".into()));
    assert_eq!(parse_label("empty=").unwrap(), ("empty".into(), "".into()));
    assert_eq!(parse_label("a/b.c=x-y_z").unwrap(), ("a/b.c".into(), "x-y_z".into()));
    for bad in ["site", "=paris", "site=pa ris", "si te=paris", "k=a=b", &format!("k={}", "v".repeat(64))] {
        assert!(matches!(parse_label(bad), Err(InputError::Label { .. })), "{bad}");
    }
    let labels = parse_labels(&["a=1".into(), "b=2".into(), "a=3".into()]).unwrap();
    assert_eq!(labels, BTreeMap::from([("a".into(), "3".into()), ("b".into(), "2".into())]));
}

#[test]
fn lifetimes_take_units_or_seconds() {
    let check = |text: &str, want: Option<u64>| assert_eq!(parse_lifetime(text).ok(), want, "{text}");
    check("30m", Some(1800));
    check("1h", Some(3600));
    check("7d", Some(7 * 86400));
    check("90s", Some(90));
    check("600", Some(600));
    check("0", None);
    check("1w", None);
    check("h", None);
    check("-5m", None);
    check("", None);
    check("99999999999999999999d", None);
}

#[test]
fn targets_are_channels_or_generations() {
    assert_eq!(parse_target("os/stable").unwrap(), "os/stable");
    assert_eq!(parse_target("os@5").unwrap(), "os@5");
    assert!(matches!(parse_target("os@five"), Err(InputError::Target(_))));
    assert!(matches!(parse_target("../x"), Err(InputError::Target(_))));
    assert!(parse_generation("os/stable").is_err());
    assert!(parse_generation("os@3").is_ok());
}

fn namespace(name: &str, text: &str) -> Result<Namespace, InputError> {
    parse_namespace(Path::new(name), text)
}

#[test]
fn a_toml_namespace_file_becomes_the_api_namespace() {
    let ns = namespace(
        "ns.toml",
        r#"
[[mount]]
path = "/os"
channel = "os/stable"
cache_share = 40
passthrough = true

[[mount]]
path = "/opt/app"
pinned = "app@3"
[mount.writable]
protect = ["etc/ssh/**", "usr/**"]
drift_interval_seconds = 30
"#,
    )
    .unwrap();
    assert_eq!(
        ns.mounts,
        [
            NamespaceMount {
                path: "/os".into(),
                source: Source::Channel("os/stable".parse().unwrap()),
                cache_share: Some(40),
                passthrough: true,
                health: None,
                writable: None,
            },
            NamespaceMount {
                path: "/opt/app".into(),
                source: Source::Pinned("app@3".into()),
                cache_share: None,
                passthrough: false,
                health: None,
                writable: Some(api::fleet::WritableMount {
                    protect: vec!["etc/ssh/**".into(), "usr/**".into()],
                    drift_interval_seconds: Some(30)
                }),
            },
        ]
    );
    assert_eq!(namespace("empty.toml", "").unwrap(), Namespace::default());
}

#[test]
fn a_json_namespace_file_takes_the_file_form_and_the_api_form() {
    let file = namespace("ns.json", r#"{"mount": [{"path": "/os", "channel": "os/stable"}]}"#).unwrap();
    let api = namespace("ns.json", r#"{"mounts": [{"path": "/os", "channel": "os/stable"}]}"#).unwrap();
    assert_eq!(file, api);
    assert_eq!(file.mounts.len(), 1);
}

#[test]
fn the_example_namespace_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/namespace.toml.example");
    let ns = namespace("namespace.toml", &std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(ns.mounts.len() >= 2);
}

#[test]
fn namespace_files_with_mistakes_are_refused_before_any_request() {
    let syntax = |name: &str, text: &str, needle: &str| match namespace(name, text) {
        Err(e @ InputError::NamespaceSyntax { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("{text}: {other:?}"),
    };
    syntax("ns.toml", "[[mount]]\npath = \"/os\"\nchanel = \"os/stable\"\n", "unknown key \"chanel\"");
    syntax("ns.toml", "[[mount]]\npath = \"/os\"\n", "exactly one of channel");
    syntax("ns.toml", "[[mount]]\npath = \"/os\"\nchannel = \"os/stable\"\npinned = \"os@3\"\n", "exactly one of channel");
    syntax("ns.toml", "[[mount]\n", "ns.toml");
    syntax("ns.toml", "[[mounts]]\npath = \"/os\"\nchannel = \"os/stable\"\n[[mount]]\npath = \"/x\"\nchannel = \"os/stable\"\n", "");
    syntax("ns.toml", "other = 1\n", "unknown key \"other\"");
    syntax("ns.toml", "mount = 3\n", "expected a sequence");
    syntax("ns.json", "[]", "not a table");
    syntax("ns.json", "{\"mount\": [1]}", "not a table");
    syntax("ns.toml", "[[mount]]\npath = \"/os\"\nchannel = \"Not A Channel\"\n", "");
    let problem = |text: &str, needle: &str| match namespace("ns.toml", text) {
        Err(e @ InputError::Namespace { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("{text}: {other:?}"),
    };
    problem("[[mount]]\npath = \"os\"\nchannel = \"os/stable\"\n", "must be absolute");
    problem("[[mount]]\npath = \"/os\"\nchannel = \"os/stable\"\n[[mount]]\npath = \"/os\"\npinned = \"os@1\"\n", "two mounts on /os");
    problem("[[mount]]\npath = \"/os\"\nchannel = \"os/stable\"\ncache_share = 0\n", "1-100");
    problem("[[mount]]\npath = \"/os\"\npinned = \"os\"\n", "IMAGE@N");
}

#[test]
fn a_group_is_checked_whole() {
    let args = GroupArgs {
        name: "kiosks".into(),
        selector: Some("site=paris,role=kiosk".into()),
        members: vec![id(2).to_string(), id(1).to_string(), id(2).to_string()],
        priority: 5,
        namespace: Namespace::default(),
    };
    let g = group(args.clone()).unwrap();
    assert_eq!(g.members, [id(1), id(2)], "sorted, once");
    assert_eq!(g.selector.as_deref(), Some("site=paris,role=kiosk"));
    assert!(matches!(group(GroupArgs { selector: Some("site=,=x".into()), ..args.clone() }), Err(InputError::Selector(_))));
    assert!(matches!(group(GroupArgs { selector: Some("".into()), ..args.clone() }), Err(InputError::Selector(_))));
    assert!(matches!(group(GroupArgs { name: "Kiosks".into(), ..args.clone() }), Err(InputError::Id(_))));
    assert!(matches!(group(GroupArgs { members: vec!["kiosk-12".into()], ..args }), Err(InputError::Id(_))));
}

#[test]
fn relative_times_read_like_people_say_them() {
    let check = |ago: i64, want: &str| assert_eq!(text::relative(NOW - ago, NOW), want);
    check(0, "0s ago");
    check(12, "12s ago");
    check(300, "5m ago");
    check(3 * 3600 + 5, "3h ago");
    check(2 * 86400, "2d ago");
    check(-120, "in 2m");
}

fn straggler(n: u8, host: &str, running: Option<&str>, reason: Reason) -> Straggler {
    Straggler {
        endpoint: id(n),
        hostname: host.into(),
        running: vec![MountState { path: "/os".into(), current: running.map(String::from), previous: None }],
        reason,
    }
}

#[test]
fn compliance_counts_and_names_each_straggler_and_why() {
    let c = Compliance {
        target: "os/stable".into(),
        generation: "os@5".into(),
        total: 10,
        on: 2,
        counts: BTreeMap::from([
            ("offline".into(), 1),
            ("failed".into(), 1),
            ("rolled_back".into(), 1),
            ("metadata_stale".into(), 1),
            ("pinned".into(), 1),
            ("not_in_group".into(), 1),
            ("never_checked_in".into(), 1),
            ("pending".into(), 1),
        ]),
        stragglers: vec![
            straggler(1, "kiosk-1", Some("os@4"), Reason::Offline { since: NOW - 300 }),
            straggler(2, "kiosk-2", Some("os@4"), Reason::Failed { error: "fetch: server\nunreachable".into(), time: NOW - 60 }),
            straggler(3, "kiosk-3", Some("os@4"), Reason::RolledBack { why: "boot check failed".into(), time: NOW - 7200 }),
            straggler(4, "kiosk-4", Some("os@5"), Reason::MetadataStale { error: "timestamp expired".into(), time: NOW - 30 }),
            straggler(5, "lab-1", Some("os@3"), Reason::Pinned { generation: "os@3".into() }),
            straggler(6, "desk", None, Reason::NotInGroup),
            straggler(7, "new", None, Reason::NeverCheckedIn),
            straggler(8, "kiosk-8", Some("os@4"), Reason::Pending { since: NOW - 20 }),
        ],
    };
    let want = "\
2 of 10 on os@5 (channel os/stable)
not on it: 1 failed, 1 metadata stale, 1 never checked in, 1 not in group, 1 offline, 1 pending, 1 pinned, 1 rolled back
  ep-0000000000000001  kiosk-1  offline since 2026-12-03 10:00 (5m ago), last on os@4
  ep-0000000000000002  kiosk-2  failed 1m ago: fetch: server / unreachable; runs os@4
  ep-0000000000000003  kiosk-3  rolled back 2h ago: boot check failed; runs os@4
  ep-0000000000000004  kiosk-4  metadata stale since 30s ago: timestamp expired; runs os@5
  ep-0000000000000005  lab-1    pinned to os@3
  ep-0000000000000006  desk     not in a group that gets it
  ep-0000000000000007  new      never checked in
  ep-0000000000000008  kiosk-8  pending since 2026-12-03 10:04 (20s ago); runs os@4
";
    assert_eq!(render(|out| text::compliance(out, &c, NOW)), want);
    let by_generation = Compliance { target: "os@5".into(), stragglers: vec![], counts: BTreeMap::new(), on: 3, total: 3, ..c };
    assert_eq!(render(|out| text::compliance(out, &by_generation, NOW)), "3 of 3 on os@5\n");
}

fn summary() -> EndpointSummary {
    EndpointSummary {
        id: id(0xab),
        hostname: "kiosk-12".into(),
        labels: BTreeMap::from([("role".into(), "kiosk".into()), ("site".into(), "paris".into()), ("batch".into(), "7".into())]),
        groups: vec![GroupName::new("kiosks").unwrap(), GroupName::new("paris").unwrap()],
        mounts: vec![
            MountState { path: "/os".into(), current: Some("os@4".into()), previous: Some("os@3".into()) },
            MountState { path: "/opt/app".into(), current: None, previous: None },
        ],
        last_seen: Some(NOW - 12),
        offline: false,
        revoked: None,
    }
}

#[test]
fn fleet_ls_is_a_table_with_mounts_last_seen_and_flags() {
    let mut offline = summary();
    offline.id = id(0xac);
    offline.hostname = "kiosk-13".into();
    offline.groups.clear();
    offline.mounts.clear();
    offline.last_seen = Some(NOW - 3 * 86400);
    offline.offline = true;
    offline.revoked = Some(NOW - 86400);
    let mut never = summary();
    never.id = id(0xad);
    never.hostname = "new".into();
    never.last_seen = None;
    never.mounts.clear();
    let want = "\
ID                   HOSTNAME  GROUPS        MOUNTS               LAST SEEN  FLAGS
ep-00000000000000ab  kiosk-12  kiosks,paris  /os=os@4 /opt/app=-  12s ago
ep-00000000000000ac  kiosk-13  -             -                    3d ago     revoked,offline
ep-00000000000000ad  new       kiosks,paris  -                    never
";
    let listing = Endpoints { endpoints: vec![summary(), offline, never] };
    assert_eq!(render(|out| text::endpoints(out, &listing, NOW)), want);
    assert_eq!(render(|out| text::endpoints(out, &Endpoints::default(), NOW)), "no endpoints\n");
}

#[test]
fn events_are_one_human_line_each() {
    let check = |kind: EventKind, want: &str| assert_eq!(text::event(&kind), want);
    check(
        EventKind::Switched { path: "/os".into(), from: "os@1".into(), to: "os@2".into(), millis: 120 },
        "switched /os os@1 -> os@2 in 120 ms",
    );
    check(
        EventKind::RolledBack { path: "/os".into(), from: "os@2".into(), to: "os@1".into(), why: "asked".into() },
        "rolled back /os os@2 -> os@1: asked",
    );
    check(
        EventKind::Failed { path: "/os".into(), generation: Some("os@2".into()), error: "no\nspace".into() },
        "failed /os to os@2: no / space",
    );
    check(EventKind::Failed { path: "/os".into(), generation: None, error: "x".into() }, "failed /os: x");
    check(EventKind::Mounted { path: "/os".into(), generation: "os@1".into() }, "mounted /os on os@1");
    check(EventKind::Unmounted { path: "/os".into() }, "unmounted /os");
    check(EventKind::MetadataStale { path: "/os".into(), error: "offline".into() }, "metadata stale /os: offline");
    check(EventKind::FetchFailed { path: "/os".into(), error: "timeout".into() }, "fetch failed /os: timeout");
    check(EventKind::Enrolled, "enrolled");
    check(
        EventKind::Cache {
            cache: CacheState {
                used_bytes: 3 << 30,
                free_bytes: 10 << 30,
                pins: vec!["os@3".into()],
                generations: vec!["os@3".into(), "os@4".into()],
            },
        },
        "cache: 3.0 GiB used, 10.0 GiB free; pinned os@3; holds os@3 os@4",
    );
}

#[test]
fn fleet_show_puts_desired_next_to_actual() {
    let desired = |path: &str, source: Source, group: &str, generation: Option<&str>| DesiredMount {
        mount: NamespaceMount { path: path.into(), source, cache_share: None, passthrough: false, health: None, writable: None },
        group: GroupName::new(group).unwrap(),
        generation: generation.map(String::from),
        rollout: None,
        soak_seconds: None,
        ignore_windows: false,
        window: None,
        activation: None,
    };
    let d = EndpointDetail {
        summary: summary(),
        facts: Facts {
            hostname: "kiosk-12".into(),
            machine_id: "0123abcd".into(),
            arch: "x86_64".into(),
            os_release: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0-18-amd64".into(),
            cpus: 4,
            memory_bytes: 8 << 30,
            cache_disk_bytes: 100 << 30,
            cache_free_bytes: 60 << 30,
            addresses: vec!["10.0.0.12".into()],
        },
        own_labels: BTreeMap::from([("site".into(), "paris".into())]),
        operator_labels: BTreeMap::from([("role".into(), "kiosk".into())]),
        mounts: vec![
            MountView {
                path: "/os".into(),
                desired: Some(desired("/os", Source::Channel("os/stable".parse().unwrap()), "kiosks", Some("os@5"))),
                actual: Some(MountState { path: "/os".into(), current: Some("os@4".into()), previous: Some("os@3".into()) }),
            },
            MountView {
                path: "/opt/app".into(),
                desired: Some(desired("/opt/app", Source::Pinned("app@3".into()), "paris", Some("app@3"))),
                actual: Some(MountState { path: "/opt/app".into(), current: Some("app@3".into()), previous: None }),
            },
            MountView {
                path: "/old".into(),
                desired: None,
                actual: Some(MountState { path: "/old".into(), current: None, previous: None }),
            },
        ],
        conflicts: vec![Conflict {
            path: "/os".into(),
            winner: GroupName::new("kiosks").unwrap(),
            losers: vec![GroupName::new("paris").unwrap()],
        }],
        cache: Some(CacheState { used_bytes: 1 << 30, free_bytes: 60 << 30, pins: vec![], generations: vec!["os@4".into()] }),
        enrolled: NOW - 2 * 86400,
        events: vec![
            Event { seq: 1, time: NOW - 2 * 86400, kind: EventKind::Enrolled },
            Event {
                seq: 2,
                time: NOW - 90,
                kind: EventKind::Switched { path: "/os".into(), from: "os@3".into(), to: "os@4".into(), millis: 120 },
            },
        ],
    };
    let want = "\
endpoint:   ep-00000000000000ab (kiosk-12)
state:      online; last seen 2026-12-03 10:04 (12s ago)
enrolled:   2026-12-01 10:05 (2d ago)
facts:      x86_64, Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64, 4 cpu(s), 8.0 GiB memory
            machine-id 0123abcd, cache disk 100.0 GiB (60.0 GiB free)
            addresses 10.0.0.12
labels:     batch=7 (enroll token), role=kiosk (operator), site=paris (own)
groups:     kiosks, paris
mounts:
  /os       desired os@5 (channel os/stable, group kiosks); actual os@4, previous os@3  differs
  /opt/app  desired pinned to app@3 (group paris); actual app@3  ok
  /old      desired: nothing (no group names this path); actual: not mounted
conflict:   /os: group kiosks wins over paris
cache:      1.0 GiB used, 60.0 GiB free; holds os@4
events:
  2026-12-01 10:05 (2d ago)  enrolled
  2026-12-03 10:03 (1m ago)  switched /os os@3 -> os@4 in 120 ms
";
    assert_eq!(render(|out| text::endpoint(out, &d, NOW)), want);
}

#[test]
fn the_endpoint_query_repeats_label_and_encodes_values() {
    use crate::remote::fleet::EndpointQuery;
    assert_eq!(EndpointQuery::default().query_string(), "");
    let q = EndpointQuery {
        group: Some(GroupName::new("kiosks").unwrap()),
        labels: vec![("site".into(), "paris".into()), ("role".into(), "kiosk".into())],
        not_on: Some("os@5".into()),
    };
    assert_eq!(q.query_string(), "?group=kiosks&label=site%3Dparis&label=role%3Dkiosk&not_on=os%405");
}

#[test]
fn rollout_events_are_one_human_line_each() {
    let check = |kind: EventKind, want: &str| assert_eq!(text::event(&kind), want);
    check(EventKind::Healthy { path: "/os".into(), generation: "os@5".into() }, "healthy /os on os@5");
    check(EventKind::Prefetched { path: "/os".into(), generation: "os@5".into(), bytes: 3 << 20 }, "prefetched os@5 for /os: 3.0 MiB");
    let drift = EventKind::Drift {
        path: "/os".into(),
        file: "etc/ssh/sshd_config".into(),
        drift: api::control::DriftKind::Restored,
        generation: "os@5".into(),
        image: None,
        local: None,
    };
    check(drift, "drift /os: restored a protected file, etc/ssh/sshd_config (on os@5)");
    let waiting = |why: &str, until: Option<i64>| EventKind::Waiting { path: "/os".into(), generation: "os@5".into(), why: why.into(), until };
    check(waiting("window", Some(NOW + 7200)), "waiting /os for os@5: its maintenance window opens 2026-12-03 12:05");
    check(waiting("window", None), "waiting /os for os@5: its maintenance window");
    check(waiting("deferred", Some(NOW + 3600)), "waiting /os for os@5: deferred by its user until 2026-12-03 11:05");
    check(waiting("prefetching", None), "waiting /os for os@5: prefetching");
    check(waiting("pending_reboot", None), "waiting /os for os@5: pending a reboot");
    check(waiting("disk_full", None), "waiting /os for os@5: disk full");
}

#[test]
fn compliance_during_a_rollout_says_who_waits_is_held_or_is_not_offered_yet() {
    let waiting = |why: &str, until| Reason::Waiting { why: why.into(), until };
    let c = Compliance {
        target: "os/stable".into(),
        generation: "os@5".into(),
        total: 7,
        on: 1,
        counts: BTreeMap::from([("waiting".into(), 4), ("held".into(), 1), ("not_yet_offered".into(), 1)]),
        stragglers: vec![
            straggler(1, "kiosk-1", Some("os@4"), waiting("window", Some(NOW + 7200))),
            straggler(2, "kiosk-2", Some("os@4"), waiting("deferred", Some(NOW + 3600))),
            straggler(3, "kiosk-3", Some("os@4"), waiting("prefetching", None)),
            straggler(4, "kiosk-4", Some("os@4"), waiting("pending_reboot", None)),
            straggler(5, "show-1", Some("os@4"), Reason::Held { why: "trade show\nuntil friday".into() }),
            straggler(6, "kiosk-6", Some("os@4"), Reason::NotYetOffered),
        ],
    };
    let want = "\
1 of 7 on os@5 (channel os/stable)
not on it: 1 held, 1 not yet offered, 4 waiting
  ep-0000000000000001  kiosk-1  waiting: its maintenance window opens 2026-12-03 12:05 (in 2h); runs os@4
  ep-0000000000000002  kiosk-2  waiting: deferred by its user until 2026-12-03 11:05 (in 1h); runs os@4
  ep-0000000000000003  kiosk-3  waiting: prefetching; runs os@4
  ep-0000000000000004  kiosk-4  waiting: pending a reboot; runs os@4
  ep-0000000000000005  show-1   held: trade show / until friday; runs os@4
  ep-0000000000000006  kiosk-6  not yet offered by the rollout; runs os@4
";
    assert_eq!(render(|out| text::compliance(out, &c, NOW)), want);
}
