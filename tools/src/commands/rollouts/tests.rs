//! Unit tests of the rollout commands' plan files and argument checks, and the text of
//! `rollout status`, `rollout ls`, `withdraw`, `fleet pin` and `fleet hold`.

use std::collections::BTreeMap;
use std::path::Path;

use api::fleet::{EndpointId, EndpointSummary, GroupName};
use api::rollouts::{Decision, Rollout, RolloutId, RolloutState, Rollouts, Stage, StageCounts, StageTarget, Withdrawn};

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

fn plan(name: &str, text: &str) -> Result<Plan, PlanError> {
    parse_plan(Path::new(name), text)
}

#[test]
fn a_toml_plan_file_maps_stage_tables_to_the_api_plan() {
    let p = plan(
        "careful.toml",
        r#"
lost_after_seconds = 600

[[stage]]
group = "pilot"
soak_seconds = 60

[[stage]]
percent = 100
min_sample = 3
success_percent = 90
failure_budget = 2
"#,
    )
    .unwrap();
    assert_eq!(
        p,
        Plan {
            name: "careful".into(),
            stages: vec![
                Stage {
                    target: StageTarget::Group(GroupName::new("pilot").unwrap()),
                    min_sample: 1,
                    soak_seconds: 60,
                    success_percent: 100,
                    failure_budget: 0
                },
                Stage { target: StageTarget::Percent(100), min_sample: 3, soak_seconds: 0, success_percent: 90, failure_budget: 2 },
            ],
            ignore_windows: false,
            lost_after_seconds: 600,
        },
        "defaults are the API's: min_sample 1, soak 0, success 100%, budget 0; the name is the file's"
    );
    assert_eq!(plan("p.toml", "name = \"mine\"\n[[stage]]\npercent = 100\n").unwrap().name, "mine");
}

#[test]
fn a_json_plan_file_is_the_api_plan() {
    let p = plan("fast.json", r#"{"name": "fast", "stages": [{"percent": 100}], "ignore_windows": true}"#).unwrap();
    assert_eq!(p.stages.len(), 1);
    assert!(p.ignore_windows);
    assert_eq!(p.lost_after_seconds, 900);
    let round = plan("again.json", &serde_json::to_string(&Plan::normal()).unwrap()).unwrap();
    assert_eq!(round, Plan::normal(), "the server's own plans read back as they are");
}

#[test]
fn the_example_plan_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plan.toml.example");
    let p = read_plan(&path).unwrap();
    assert_eq!(p.name, "kiosks-careful");
    assert_eq!(p.stages.len(), 4);
    assert_eq!(p.stages[0].target, StageTarget::Group(GroupName::new("pilot").unwrap()));
    assert_eq!(p.stages.last().unwrap().target, StageTarget::Percent(100));
}

#[test]
fn plan_files_with_mistakes_are_refused_before_any_request() {
    let syntax = |name: &str, text: &str, needle: &str| match plan(name, text) {
        Err(e @ PlanError::Syntax { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("{text}: {other:?}"),
    };
    syntax("p.toml", "[[stage]]\npercent = 10\nsoak_second = 60\n", "stage 1: unknown key \"soak_second\"");
    syntax("p.toml", "[[stages]]\npercent = 10\n[[stage]]\npercent = 100\n", "stages once");
    syntax("p.toml", "[[stage]]\npercent = 10\ngroup = \"pilot\"\n", "exactly one of group");
    syntax("p.toml", "[[stage]]\nmin_sample = 1\n", "exactly one of group");
    syntax("p.toml", "name = \"x\"\n", "no stages");
    syntax("p.toml", "windows = true\n[[stage]]\npercent = 100\n", "unknown key \"windows\"");
    syntax("p.toml", "[[stage]\n", "p.toml");
    syntax("p.toml", "[[stage]]\npercent = 300\n", "");
    syntax("p.toml", "[[stage]]\ngroup = \"Not A Group\"\n", "");
    syntax("p.json", "[]", "not a table");
    syntax("p.json", "{\"stages\": [1]}", "stage 1 is not a table");
    let problem = |text: &str, needle: &str| match plan("p.toml", text) {
        Err(e @ PlanError::Problem { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("{text}: {other:?}"),
    };
    problem("[[stage]]\npercent = 50\n[[stage]]\npercent = 10\n", "stage 2: percent is 1-100 and never less than an earlier stage's");
    problem("[[stage]]\npercent = 0\n", "stage 1: percent");
    problem("[[stage]]\npercent = 100\nsuccess_percent = 0\n", "success_percent is 1-100");
}

#[test]
fn plan_names_built_ins_by_name_and_anything_else_as_a_file() {
    assert_eq!(plan_spec(None).unwrap(), PlanSpec::Named("normal".into()));
    assert_eq!(plan_spec(Some("emergency")).unwrap(), PlanSpec::Named("emergency".into()));
    assert!(matches!(plan_spec(Some("fast")), Err(PlanError::Unknown(_))));
    let dir = std::env::temp_dir().join(format!("imgctl-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("two.toml");
    std::fs::write(&file, "[[stage]]\npercent = 100\n").unwrap();
    match plan_spec(Some(file.to_str().unwrap())).unwrap() {
        PlanSpec::Given(p) => assert_eq!(p.name, "two"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn start_and_withdraw_check_their_arguments() {
    let s = start("os/stable", "os@5", Some("emergency"), Some("CVE".into())).unwrap();
    assert_eq!((s.channel.as_str(), s.generation.as_str(), s.reason.as_deref()), ("os/stable", "os@5", Some("CVE")));
    assert!(start("Not A Channel", "os@5", None, None).is_err());
    assert!(start("os/stable", "os@latest", None, None).unwrap_err().downcast_ref::<InputError>().is_some());
    assert!(start("os/stable", "os@5", Some("fast"), None).unwrap_err().downcast_ref::<PlanError>().is_some());
    assert_eq!(withdraw("os@5", "pre-release").unwrap().generation, "os@5");
    assert!(matches!(withdraw("os@5", "  "), Err(InputError::NoReason)));
    assert!(matches!(withdraw("os", "x"), Err(InputError::Generation(_))));
}

#[test]
fn durations_read_as_a_plan_author_writes_them() {
    let check = |secs: u64, want: &str| assert_eq!(text::duration(secs), want);
    check(0, "0s");
    check(90, "90s");
    check(600, "10m");
    check(3600, "1h");
    check(5400, "90m");
    check(2 * 86400, "2d");
}

fn decision(ago: i64, actor: &str, text: &str) -> Decision {
    Decision { time: NOW - ago, actor: actor.into(), text: text.into() }
}

/// The `normal` plan to os@5, in stage 2 (1%), started an hour ago.
fn rollout(state: RolloutState) -> Rollout {
    Rollout {
        id: RolloutId(3),
        channel: "os/stable".parse().unwrap(),
        generation: "os@5".into(),
        from: Some("os@4".into()),
        plan: Plan::normal(),
        state,
        stage: 1,
        stage_started: NOW - 1500,
        stage_times: vec![NOW - 3600, NOW - 1500],
        counts: StageCounts { stage: 1, targeted: 12, switched: 10, healthy: 8, failed: 2, lost: 0, waiting: 1 },
        started_by: "alice".into(),
        started: NOW - 3600,
        reason: Some("point release\nDSA-0000-1".into()),
        log: vec![
            decision(3600, "alice", "started with plan normal (5 stages)"),
            decision(1500, "rollout", "stage 1 passed: 1 healthy of 1"),
        ],
        acknowledged: vec![],
        activation: Some("reboot".into()),
    }
}

#[test]
fn rollout_status_shows_the_plan_with_the_current_stage_the_counts_and_the_log() {
    let want = "\
rollout:    r3, os/stable: os@4 -> os@5 (activation reboot)
state:      running
started:    2026-12-03 09:05 (1h ago) by alice: point release / DSA-0000-1
plan:       normal, 5 stages, waits for maintenance windows, lost after 1h silent
     STAGE  TARGET       MIN SAMPLE  SOAK  SUCCESS  BUDGET  STATUS
     1      group pilot  1           10m   95%      0       passed 2026-12-03 09:40
  >  2      1%           1           10m   95%      0       current since 2026-12-03 09:40 (25m ago)
     3      10%          5           30m   95%      1
     4      50%          20          1h    95%      2
     5      100%         20          1h    95%      5
counts:     stage 2: 12 targeted, 10 switched, 8 healthy, 2 failed, 0 lost, 1 waiting
log:
  2026-12-03 09:05 (1h ago)   alice    started with plan normal (5 stages)
  2026-12-03 09:40 (25m ago)  rollout  stage 1 passed: 1 healthy of 1
";
    assert_eq!(render(|out| text::status(out, &rollout(RolloutState::Running), NOW)), want);
}

#[test]
fn a_halted_rollout_says_which_rule_tripped_who_failed_and_what_to_do() {
    let mut r = rollout(RolloutState::Halted { rule: "stage 2: 2 failed or lost, budget 0".into(), failed: vec![id(2), id(3)] });
    r.log.push(decision(60, "rollout", "halted: stage 2: 2 failed or lost, budget 0"));
    r.acknowledged = vec![id(9)];
    let shown = render(|out| text::status(out, &r, NOW));
    let want_head = "\
rollout:    r3, os/stable: os@4 -> os@5 (activation reboot)
state:      halted by the brake: stage 2: 2 failed or lost, budget 0
            failed or lost: ep-0000000000000002 ep-0000000000000003
            after a fix, imgctl rollout resume r3 acknowledges them; or abort it (--revert sends endpoints back)
";
    assert!(shown.starts_with(want_head), "{shown}");
    assert!(
        shown.contains("  >  2      1%           1           10m   95%      0       halted since 2026-12-03 09:40 (25m ago)\n"),
        "{shown}"
    );
    assert!(shown.contains("acknowledged: ep-0000000000000009 (failures a resume accepted; the brake no longer counts them)\n"), "{shown}");
    assert!(shown.ends_with("  2026-12-03 10:04 (1m ago)   rollout  halted: stage 2: 2 failed or lost, budget 0\n"), "{shown}");
}

#[test]
fn each_state_says_what_a_person_can_do_next() {
    let check = |state: RolloutState, want: &str| {
        let shown = render(|out| text::acted(out, "did", &rollout(state)));
        assert_eq!(shown, format!("did rollout r3 (os/stable: os@4 -> os@5), stage 2/5\n{want}"));
    };
    check(RolloutState::Paused { by: "bob".into() }, "state: paused by bob; imgctl rollout resume r3 goes on\n");
    check(RolloutState::Running, "state: running\n");
    check(RolloutState::Aborted { by: "bob".into(), revert: true }, "state: aborted by bob; its endpoints went back to os@4\n");
    check(RolloutState::Aborted { by: "bob".into(), revert: false }, "state: aborted by bob; its endpoints stay where they are\n");
    check(
        RolloutState::AwaitingApproval,
        "state: awaiting approval: the channel's policy is not met yet\n       once it is (imgctl test, imgctl approve): imgctl rollout approve r3\n",
    );
    let mut done = rollout(RolloutState::Completed);
    done.stage = 5;
    done.counts.stage = 4;
    done.stage_times = (0..6).map(|i| NOW - 3600 + i * 600).collect();
    let shown = render(|out| text::status(out, &done, NOW));
    assert!(shown.contains("state:      completed: os/stable names os@5\n"), "{shown}");
    assert!(shown.contains("     5      100%         20          1h    95%      5       passed 2026-12-03 09:55\n"), "{shown}");
    assert!(!shown.contains("  > "), "no stage is current once complete: {shown}");
    assert!(shown.contains("counts:     stage 5: "), "{shown}");
}

#[test]
fn rollout_ls_is_a_table_newest_first() {
    let mut old = rollout(RolloutState::Completed);
    old.id = RolloutId(1);
    old.stage = 5;
    old.started = NOW - 3 * 86400;
    old.from = None;
    let want = "\
ID  CHANNEL    FROM  TO    PLAN    STAGE  STATE               STARTED
r3  os/stable  os@4  os@5  normal  2/5    aborted (reverted)  1h ago by alice
r1  os/stable  -     os@5  normal  5/5    completed           3d ago by alice
";
    let list = Rollouts { rollouts: vec![rollout(RolloutState::Aborted { by: "bob".into(), revert: true }), old] };
    assert_eq!(render(|out| text::rollouts(out, &list, NOW)), want);
    assert_eq!(render(|out| text::rollouts(out, &Rollouts::default(), NOW)), "no rollouts\n");
}

#[test]
fn withdraw_says_what_moved_back_what_stopped_and_who_still_runs_it() {
    let w = Withdrawn {
        generation: "os@5".into(),
        channels: vec![("os/stable".parse().unwrap(), "os@4".into()), ("os/pilot".parse().unwrap(), "os@3".into())],
        rollouts: vec![RolloutId(3)],
        running: vec![id(1), id(2)],
    };
    let want = "\
withdrew os@5: it is never offered again
channels moved back:
  os/stable -> os@4
  os/pilot -> os@3
rollouts aborted: r3
endpoints running it: 2 (they roll back at once, offline ones at their next check-in):
  ep-0000000000000001
  ep-0000000000000002
";
    assert_eq!(render(|out| text::withdrawn(out, &w)), want);
    let none = Withdrawn { generation: "os@5".into(), channels: vec![], rollouts: vec![], running: vec![] };
    assert_eq!(
        render(|out| text::withdrawn(out, &none)),
        "withdrew os@5: it is never offered again\nchannels moved back: none named it\nrollouts aborted: none\nendpoints running it: none\n"
    );
}

#[test]
fn pins_and_holds_say_what_now_moves_the_endpoint() {
    let e = EndpointSummary {
        id: id(0xab),
        hostname: "kiosk-12".into(),
        labels: BTreeMap::new(),
        groups: vec![],
        mounts: vec![],
        last_seen: None,
        offline: false,
        revoked: None,
    };
    let check = |shown: String, want: &str| assert_eq!(shown, want);
    check(
        render(|out| text::pinned(out, &e, Some("os@3"))),
        "pinned ep-00000000000000ab (kiosk-12): its mounts of that image stay on os@3, whatever channels and rollouts say\n",
    );
    check(
        render(|out| text::pinned(out, &e, None)),
        "unpinned ep-00000000000000ab (kiosk-12): its mounts follow their channels and rollouts again\n",
    );
    check(render(|out| text::held(out, &e, Some("trade\nshow"))), "held ep-00000000000000ab (kiosk-12) where it is: trade / show\n");
    check(render(|out| text::held(out, &e, None)), "released ep-00000000000000ab (kiosk-12): channels and rollouts move it again\n");
}
