//! What `imgctl rollout`, `imgctl withdraw` and `imgctl fleet pin|hold` print for people
//! (with `--json` they print the server's typed answers instead). Every function takes the
//! time now, so the text is the same in tests and on a terminal.

use std::io::{Result, Write};

use api::fleet::EndpointSummary;
use api::rollouts::{Rollout, RolloutState, Rollouts, Stage, StageTarget, Withdrawn};

use crate::commands::fleet::text::{minute, one_line, relative, table, when};

/// `0s`, `90s`, `10m`, `1h`, `2d`: seconds as a plan's author would write them.
pub fn duration(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A state in one or two words: `running`, `awaiting approval`, `aborted (reverted)`.
pub fn state_name(s: &RolloutState) -> &'static str {
    match s {
        RolloutState::Aborted { revert: true, .. } => "aborted (reverted)",
        s => s.name(),
    }
}

/// `group pilot` or `10%`.
fn target(s: &Stage) -> String {
    match &s.target {
        StageTarget::Group(g) => format!("group {g}"),
        StageTarget::Percent(p) => format!("{p}%"),
    }
}

/// `2/5`: the stage reached of how many (all of them once complete).
fn progress(r: &Rollout) -> String {
    let n = r.plan.stages.len();
    format!("{}/{n}", (r.stage + 1).min(n))
}

/// `img/stable: img@1 -> img@2`.
fn movement(r: &Rollout) -> String {
    match &r.from {
        Some(from) => format!("{}: {from} -> {}", r.channel, r.generation),
        None => format!("{}: -> {}", r.channel, r.generation),
    }
}

/// `rollout ls`: one row per rollout, newest first.
pub fn rollouts(out: &mut dyn Write, list: &Rollouts, now: i64) -> Result<()> {
    if list.rollouts.is_empty() {
        return writeln!(out, "no rollouts");
    }
    let mut rows = vec![vec![
        "ID".into(),
        "CHANNEL".into(),
        "FROM".into(),
        "TO".into(),
        "PLAN".into(),
        "STAGE".into(),
        "STATE".into(),
        "STARTED".into(),
    ]];
    for r in &list.rollouts {
        rows.push(vec![
            r.id.to_string(),
            r.channel.to_string(),
            r.from.clone().unwrap_or_else(|| "-".into()),
            r.generation.clone(),
            r.plan.name.clone(),
            progress(r),
            state_name(&r.state).into(),
            format!("{} by {}", relative(r.started, now), r.started_by),
        ]);
    }
    table(out, &rows)
}

/// The state and what a person can do about it, one line each.
fn state_lines(r: &Rollout) -> Vec<String> {
    let id = r.id;
    match &r.state {
        RolloutState::AwaitingApproval => vec![
            "awaiting approval: the channel's policy is not met yet".into(),
            format!("once it is (imgctl test, imgctl approve): imgctl rollout approve {id}"),
        ],
        RolloutState::Running => vec!["running".into()],
        RolloutState::Paused { by } => vec![format!("paused by {by}; imgctl rollout resume {id} goes on")],
        RolloutState::Halted { rule, failed } => {
            let mut lines = vec![format!("halted by the brake: {}", one_line(rule))];
            if !failed.is_empty() {
                let ids: Vec<String> = failed.iter().map(|e| e.to_string()).collect();
                lines.push(format!("failed or lost: {}", ids.join(" ")));
            }
            lines.push(format!("after a fix, imgctl rollout resume {id} acknowledges them; or abort it (--revert sends endpoints back)"));
            lines
        }
        RolloutState::Completed => vec![format!("completed: {} names {}", r.channel, r.generation)],
        RolloutState::Aborted { by, revert: true } => {
            let back = r.from.as_deref().map(|f| format!(" to {f}")).unwrap_or_default();
            vec![format!("aborted by {by}; its endpoints went back{back}")]
        }
        RolloutState::Aborted { by, revert: false } => vec![format!("aborted by {by}; its endpoints stay where they are")],
    }
}

/// The plan as a table, the current stage marked `>` with where it is; passed stages with
/// when they passed.
fn plan(out: &mut dyn Write, r: &Rollout, now: i64) -> Result<()> {
    let mut rows = vec![vec![
        "".into(),
        "STAGE".into(),
        "TARGET".into(),
        "MIN SAMPLE".into(),
        "SOAK".into(),
        "SUCCESS".into(),
        "BUDGET".into(),
        "STATUS".into(),
    ]];
    for (i, s) in r.plan.stages.iter().enumerate() {
        let started = r.stage_times.get(i).copied();
        let since = || started.map(|t| format!(" since {}", when(t, now))).unwrap_or_default();
        let current = i == r.stage;
        let status = if i < r.stage {
            match r.stage_times.get(i + 1) {
                Some(t) => format!("passed {}", minute(*t)),
                None => "passed".into(),
            }
        } else if current {
            match &r.state {
                RolloutState::AwaitingApproval => "waits for approval".into(),
                RolloutState::Running => format!("current{}", since()),
                RolloutState::Paused { .. } => format!("paused{}", since()),
                RolloutState::Halted { .. } => format!("halted{}", since()),
                RolloutState::Aborted { .. } => format!("aborted{}", since()),
                RolloutState::Completed => String::new(),
            }
        } else {
            String::new()
        };
        rows.push(vec![
            if current { "  >".into() } else { "   ".into() },
            (i + 1).to_string(),
            target(s),
            s.min_sample.to_string(),
            duration(s.soak_seconds),
            format!("{}%", s.success_percent),
            s.failure_budget.to_string(),
            status,
        ]);
    }
    table(out, &rows)
}

/// `rollout status`: where it goes, its state and what to do about it, the plan with the
/// current stage marked, the current stage's counts, and every decision with its time.
pub fn status(out: &mut dyn Write, r: &Rollout, now: i64) -> Result<()> {
    let activation = r.activation.as_deref().map(|a| format!(" (activation {a})")).unwrap_or_default();
    writeln!(out, "rollout:    {}, {}{activation}", r.id, movement(r))?;
    for (i, line) in state_lines(r).iter().enumerate() {
        writeln!(out, "{}{line}", if i == 0 { "state:      " } else { "            " })?;
    }
    let why = r.reason.as_deref().map(|w| format!(": {}", one_line(w))).unwrap_or_default();
    writeln!(out, "started:    {} by {}{why}", when(r.started, now), r.started_by)?;
    let windows = if r.plan.ignore_windows { "ignores maintenance windows" } else { "waits for maintenance windows" };
    let stages = r.plan.stages.len();
    writeln!(
        out,
        "plan:       {}, {stages} stage{}, {windows}, lost after {} silent",
        r.plan.name,
        if stages == 1 { "" } else { "s" },
        duration(r.plan.lost_after_seconds)
    )?;
    plan(out, r, now)?;
    let c = &r.counts;
    writeln!(
        out,
        "counts:     stage {}: {} targeted, {} switched, {} healthy, {} failed, {} lost, {} waiting",
        (c.stage + 1).min(stages),
        c.targeted,
        c.switched,
        c.healthy,
        c.failed,
        c.lost,
        c.waiting
    )?;
    if !r.acknowledged.is_empty() {
        let ids: Vec<String> = r.acknowledged.iter().map(|e| e.to_string()).collect();
        writeln!(out, "acknowledged: {} (failures a resume accepted; the brake no longer counts them)", ids.join(" "))?;
    }
    if r.log.is_empty() {
        return writeln!(out, "log:        none");
    }
    writeln!(out, "log:")?;
    let rows: Vec<Vec<String>> = r
        .log
        .iter()
        .map(|d| vec![format!("  {} ({})", minute(d.time), relative(d.time, now)), d.actor.clone(), one_line(&d.text)])
        .collect();
    table(out, &rows)
}

/// `rollout start`: the new rollout's status under `started rollout r1`.
pub fn started(out: &mut dyn Write, r: &Rollout, now: i64) -> Result<()> {
    writeln!(out, "started rollout {}", r.id)?;
    status(out, r, now)
}

/// `rollout pause|resume|approve|abort`: what was done and the state now.
pub fn acted(out: &mut dyn Write, verb: &str, r: &Rollout) -> Result<()> {
    writeln!(out, "{verb} rollout {} ({}), stage {}", r.id, movement(r), progress(r))?;
    for (i, line) in state_lines(r).iter().enumerate() {
        writeln!(out, "{}{line}", if i == 0 { "state: " } else { "       " })?;
    }
    Ok(())
}

/// `withdraw`: the channels moved back, the rollouts aborted, the endpoints still running it.
pub fn withdrawn(out: &mut dyn Write, w: &Withdrawn) -> Result<()> {
    writeln!(out, "withdrew {}: it is never offered again", w.generation)?;
    if w.channels.is_empty() {
        writeln!(out, "channels moved back: none named it")?;
    } else {
        writeln!(out, "channels moved back:")?;
        for (channel, now_names) in &w.channels {
            writeln!(out, "  {channel} -> {now_names}")?;
        }
    }
    let ids: Vec<String> = w.rollouts.iter().map(|r| r.to_string()).collect();
    writeln!(out, "rollouts aborted: {}", if ids.is_empty() { "none".into() } else { ids.join(" ") })?;
    if w.running.is_empty() {
        writeln!(out, "endpoints running it: none")
    } else {
        writeln!(out, "endpoints running it: {} (they roll back at once, offline ones at their next check-in):", w.running.len())?;
        for e in &w.running {
            writeln!(out, "  {e}")?;
        }
        Ok(())
    }
}

/// `fleet pin|unpin|hold|release`: what now holds the endpoint.
pub fn pinned(out: &mut dyn Write, e: &EndpointSummary, pin: Option<&str>) -> Result<()> {
    match pin {
        Some(g) => {
            writeln!(out, "pinned {} ({}): its mounts of that image stay on {g}, whatever channels and rollouts say", e.id, e.hostname)
        }
        None => writeln!(out, "unpinned {} ({}): its mounts follow their channels and rollouts again", e.id, e.hostname),
    }
}

/// `fleet hold|release`.
pub fn held(out: &mut dyn Write, e: &EndpointSummary, reason: Option<&str>) -> Result<()> {
    match reason {
        Some(why) => writeln!(out, "held {} ({}) where it is: {}", e.id, e.hostname, one_line(why)),
        None => writeln!(out, "released {} ({}): channels and rollouts move it again", e.id, e.hostname),
    }
}
