//! What `imgctl fleet` and `imgctl group` print for people (with `--json` they print the
//! server's typed answers instead). Every function takes the time now, so the text is the same
//! in tests and on a terminal.

use std::io::{Result, Write};

use api::fleet::{
    CacheState, Compliance, CreatedEnrollToken, EndpointDetail, EndpointSummary, Endpoints, EnrollToken, EnrollTokens, Event, EventKind,
    GroupSummary, Groups, Labels, MountState, NamespaceMount, Reason, Source, Straggler,
};

/// `2026-12-03 10:00`, UTC.
pub fn minute(secs: i64) -> String {
    let (y, m, d, h, mi, _) = trust::time::utc_parts(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}")
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`; `in 5m` for a time ahead of `now`.
pub fn relative(then: i64, now: i64) -> String {
    let span = |s: i64| match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    if then <= now {
        format!("{} ago", span(now - then))
    } else {
        format!("in {}", span(then - now))
    }
}

/// `2026-12-03 10:00 (5m ago)`.
pub(crate) fn when(then: i64, now: i64) -> String {
    format!("{} ({})", minute(then), relative(then, now))
}

/// Text an endpoint sent, on one line: newlines and tabs become spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.split(['\n', '\t', '\r']).map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" / ")
}

fn labels(l: &Labels) -> String {
    l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

fn join<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(sep)
}

/// `/os=os@4 /apps=-`: what each mount runs.
fn mounts(m: &[MountState]) -> String {
    let parts: Vec<String> = m.iter().map(|m| format!("{}={}", m.path, m.current.as_deref().unwrap_or("-"))).collect();
    parts.join(" ")
}

/// Rows as columns, each as wide as its widest cell; the last column is not padded.
pub(crate) fn table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn token_line(t: &EnrollToken, now: i64) -> String {
    let uses = t.uses_left.map_or("unlimited uses".to_string(), |n| format!("{n} use(s) left"));
    let expiry = match t.expires {
        Some(e) if e <= now => format!("expired {}", when(e, now)),
        Some(e) => format!("expires {}", when(e, now)),
        None => "never expires".to_string(),
    };
    format!("{uses}, {expiry}")
}

/// `fleet token create`: the token's id and terms, then the secret, once.
pub fn created_token(out: &mut dyn Write, t: &CreatedEnrollToken, now: i64) -> Result<()> {
    writeln!(out, "enroll token {}: {}", t.info.id, token_line(&t.info, now))?;
    if !t.info.labels.is_empty() {
        writeln!(out, "labels: {}", labels(&t.info.labels))?;
    }
    writeln!(out, "the token, shown only now (imgfs enroll --enroll-token):")?;
    writeln!(out, "{}", t.token)
}

/// `fleet token ls`.
pub fn tokens(out: &mut dyn Write, t: &EnrollTokens, now: i64) -> Result<()> {
    if t.tokens.is_empty() {
        return writeln!(out, "no enroll tokens");
    }
    let mut rows = vec![vec!["ID".into(), "USES".into(), "EXPIRES".into(), "CREATED".into(), "LABELS".into()]];
    for t in &t.tokens {
        let expires = match t.expires {
            Some(e) if e <= now => format!("expired {}", minute(e)),
            Some(e) => format!("{} ({})", minute(e), relative(e, now)),
            None => "never".into(),
        };
        rows.push(vec![
            t.id.clone(),
            t.uses_left.map_or("unlimited".into(), |n| n.to_string()),
            expires,
            format!("{} by {}", minute(t.created), t.created_by),
            labels(&t.labels),
        ]);
    }
    table(out, &rows)
}

fn flags(e: &EndpointSummary) -> String {
    let mut f = Vec::new();
    if e.revoked.is_some() {
        f.push("revoked");
    }
    if e.offline {
        f.push("offline");
    }
    f.join(",")
}

/// `fleet ls`: one row per endpoint.
pub fn endpoints(out: &mut dyn Write, e: &Endpoints, now: i64) -> Result<()> {
    if e.endpoints.is_empty() {
        return writeln!(out, "no endpoints");
    }
    let mut rows = vec![vec!["ID".into(), "HOSTNAME".into(), "GROUPS".into(), "MOUNTS".into(), "LAST SEEN".into(), "FLAGS".into()]];
    for e in &e.endpoints {
        rows.push(vec![
            e.id.to_string(),
            e.hostname.clone(),
            if e.groups.is_empty() { "-".into() } else { join(&e.groups, ",") },
            if e.mounts.is_empty() { "-".into() } else { mounts(&e.mounts) },
            e.last_seen.map_or("never".into(), |t| relative(t, now)),
            flags(e),
        ]);
    }
    table(out, &rows)
}

/// One event, one line: `switched /os os@1 -> os@2 in 120 ms`.
pub fn event(kind: &EventKind) -> String {
    match kind {
        EventKind::Enrolled => "enrolled".into(),
        EventKind::Facts { facts } => {
            format!("facts: {} {}, {}, kernel {}", facts.hostname, facts.arch, one_line(&facts.os_release), facts.kernel)
        }
        EventKind::Mounted { path, generation } => format!("mounted {path} on {generation}"),
        EventKind::Unmounted { path } => format!("unmounted {path}"),
        EventKind::Switched { path, from, to, millis } => format!("switched {path} {from} -> {to} in {millis} ms"),
        EventKind::RolledBack { path, from, to, why } => format!("rolled back {path} {from} -> {to}: {}", one_line(why)),
        EventKind::Failed { path, generation: Some(g), error } => format!("failed {path} to {g}: {}", one_line(error)),
        EventKind::Failed { path, generation: None, error } => format!("failed {path}: {}", one_line(error)),
        EventKind::MetadataStale { path, error } => format!("metadata stale {path}: {}", one_line(error)),
        EventKind::FetchFailed { path, error } => format!("fetch failed {path}: {}", one_line(error)),
        EventKind::Cache { cache: c } => format!("cache: {}", cache(c)),
        EventKind::Healthy { path, generation } => format!("healthy {path} on {generation}"),
        EventKind::Waiting { path, generation, why, until } => format!("waiting {path} for {generation}: {}", waiting(why, until.map(minute))),
        EventKind::Prefetched { path, generation, bytes } => format!("prefetched {generation} for {path}: {}", fs::report::bytes(*bytes)),
        EventKind::Drift { path, file, drift, generation, .. } => {
            let what = match drift {
                api::control::DriftKind::Restored => "restored a protected file",
                api::control::DriftKind::Conflict => "kept a local edit the new generation also changed",
                api::control::DriftKind::Reset => "dropped a local change",
            };
            format!("drift {path}: {what}, {file} (on {generation})")
        }
    }
}

/// Why an endpoint waits before switching, in words: `its maintenance window opens T`,
/// `deferred by its user until T`, `prefetching`, `pending a reboot` (the agent's `why`,
/// `window`, `deferred`, `prefetching`, `pending_reboot`; another is shown as it is).
pub fn waiting(why: &str, until: Option<String>) -> String {
    let until = |lead: &str| until.as_ref().map(|t| format!(" {lead} {t}")).unwrap_or_default();
    match why {
        "window" => format!("its maintenance window{}", until("opens")),
        "deferred" => format!("deferred by its user{}", until("until")),
        "prefetching" => format!("prefetching{}", until("until")),
        "pending_reboot" => "pending a reboot".into(),
        other => format!("{}{}", one_line(&other.replace('_', " ")), until("until")),
    }
}

fn cache(c: &CacheState) -> String {
    let mut s = format!("{} used, {} free", fs::report::bytes(c.used_bytes), fs::report::bytes(c.free_bytes));
    if !c.pins.is_empty() {
        s += &format!("; pinned {}", c.pins.join(" "));
    }
    if !c.generations.is_empty() {
        s += &format!("; holds {}", c.generations.join(" "));
    }
    s
}

fn source(m: &NamespaceMount) -> String {
    match &m.source {
        Source::Channel(c) => format!("channel {c}"),
        Source::Pinned(g) => format!("pinned to {g}"),
    }
}

fn events(out: &mut dyn Write, events: &[Event], now: i64) -> Result<()> {
    for e in events {
        writeln!(out, "  {} ({})  {}", minute(e.time), relative(e.time, now), event(&e.kind))?;
    }
    Ok(())
}

/// `fleet show`: everything the server knows of one endpoint.
pub fn endpoint(out: &mut dyn Write, d: &EndpointDetail, now: i64) -> Result<()> {
    let s = &d.summary;
    let f = &d.facts;
    writeln!(out, "endpoint:   {} ({})", s.id, s.hostname)?;
    let seen = match s.last_seen {
        Some(t) => format!("last seen {}", when(t, now)),
        None => "never checked in".into(),
    };
    let state = match (s.revoked, s.offline) {
        (Some(r), _) => format!("revoked {}; {seen}", when(r, now)),
        (None, true) => format!("offline; {seen}"),
        (None, false) => format!("online; {seen}"),
    };
    writeln!(out, "state:      {state}")?;
    writeln!(out, "enrolled:   {}", when(d.enrolled, now))?;
    writeln!(
        out,
        "facts:      {}, {}, kernel {}, {} cpu(s), {} memory",
        f.arch,
        one_line(&f.os_release),
        f.kernel,
        f.cpus,
        fs::report::bytes(f.memory_bytes)
    )?;
    writeln!(
        out,
        "            machine-id {}, cache disk {} ({} free)",
        f.machine_id,
        fs::report::bytes(f.cache_disk_bytes),
        fs::report::bytes(f.cache_free_bytes)
    )?;
    if !f.addresses.is_empty() {
        writeln!(out, "            addresses {}", f.addresses.join(" "))?;
    }
    if s.labels.is_empty() {
        writeln!(out, "labels:     none")?;
    } else {
        let parts: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| {
                let from = if d.operator_labels.get(k) == Some(v) {
                    "operator"
                } else if d.own_labels.get(k) == Some(v) {
                    "own"
                } else {
                    "enroll token"
                };
                format!("{k}={v} ({from})")
            })
            .collect();
        writeln!(out, "labels:     {}", parts.join(", "))?;
    }
    writeln!(out, "groups:     {}", if s.groups.is_empty() { "none".into() } else { join(&s.groups, ", ") })?;
    if d.mounts.is_empty() {
        writeln!(out, "mounts:     none")?;
    } else {
        writeln!(out, "mounts:")?;
        let width = d.mounts.iter().map(|m| m.path.len()).max().unwrap_or(0);
        for m in &d.mounts {
            let desired = match &m.desired {
                Some(want) => {
                    let target = match (&want.mount.source, &want.generation) {
                        (Source::Channel(_), Some(g)) => format!("{g} ({}, group {})", source(&want.mount), want.group),
                        _ => format!("{} (group {})", source(&want.mount), want.group),
                    };
                    format!("desired {target}")
                }
                None => "desired: nothing (no group names this path)".into(),
            };
            let actual = match &m.actual {
                Some(MountState { current: Some(c), previous, .. }) => {
                    let before = previous.as_deref().map(|p| format!(", previous {p}")).unwrap_or_default();
                    let in_step = m
                        .desired
                        .as_ref()
                        .and_then(|w| w.generation.as_deref())
                        .map(|g| if g == c { "  ok" } else { "  differs" })
                        .unwrap_or("");
                    format!("actual {c}{before}{in_step}")
                }
                Some(MountState { current: None, .. }) => "actual: not mounted".into(),
                None => "actual: not reported".into(),
            };
            writeln!(out, "  {:<width$}  {desired}; {actual}", m.path)?;
        }
    }
    for c in &d.conflicts {
        writeln!(out, "conflict:   {}: group {} wins over {}", c.path, c.winner, join(&c.losers, ", "))?;
    }
    match &d.cache {
        Some(c) => writeln!(out, "cache:      {}", cache(c))?,
        None => writeln!(out, "cache:      not reported")?,
    }
    if d.events.is_empty() {
        writeln!(out, "events:     none")?;
    } else {
        writeln!(out, "events:")?;
        events(out, &d.events, now)?;
    }
    Ok(())
}

/// `fleet label` and `fleet revoke`: the endpoint as it is now.
pub fn endpoint_changed(out: &mut dyn Write, verb: &str, e: &EndpointSummary) -> Result<()> {
    writeln!(out, "{verb} {} ({})", e.id, e.hostname)?;
    writeln!(out, "labels: {}", if e.labels.is_empty() { "none".into() } else { labels(&e.labels) })?;
    writeln!(out, "groups: {}", if e.groups.is_empty() { "none".into() } else { join(&e.groups, ", ") })
}

/// A straggler's reason in words: `offline since 2026-12-03 10:00 (5m ago), last on os@4`.
pub fn reason(s: &Straggler, now: i64) -> String {
    let running: Vec<&str> = s.running.iter().filter_map(|m| m.current.as_deref()).collect();
    let on = if running.is_empty() { String::new() } else { running.join(", ") };
    let tail = |lead: &str| if on.is_empty() { String::new() } else { format!("{lead} {on}") };
    match &s.reason {
        Reason::NeverCheckedIn => "never checked in".into(),
        Reason::Offline { since } => format!("offline since {}{}", when(*since, now), tail(", last on")),
        Reason::Failed { error, time } => format!("failed {}: {}{}", relative(*time, now), one_line(error), tail("; runs")),
        Reason::RolledBack { why, time } => format!("rolled back {}: {}{}", relative(*time, now), one_line(why), tail("; runs")),
        Reason::MetadataStale { error, time } => {
            format!("metadata stale since {}: {}{}", relative(*time, now), one_line(error), tail("; runs"))
        }
        Reason::Pinned { generation } => format!("pinned to {generation}"),
        Reason::NotInGroup => format!("not in a group that gets it{}", tail("; runs")),
        Reason::Pending { since } => format!("pending since {}{}", when(*since, now), tail("; runs")),
        Reason::Waiting { why, until } => format!("waiting: {}{}", waiting(why, until.map(|t| when(t, now))), tail("; runs")),
        Reason::Held { why } => format!("held: {}{}", one_line(why), tail("; runs")),
        Reason::NotYetOffered => format!("not yet offered by the rollout{}", tail("; runs")),
    }
}

/// `fleet compliance`: `N of M on os@5 (channel os/stable)`, counts per reason, then each
/// straggler with its reason.
pub fn compliance(out: &mut dyn Write, c: &Compliance, now: i64) -> Result<()> {
    let channel = if c.target != c.generation { format!(" (channel {})", c.target) } else { String::new() };
    writeln!(out, "{} of {} on {}{channel}", c.on, c.total, c.generation)?;
    if !c.counts.is_empty() {
        let counts: Vec<String> = c.counts.iter().map(|(reason, n)| format!("{n} {}", reason.replace('_', " "))).collect();
        writeln!(out, "not on it: {}", counts.join(", "))?;
    }
    let width = c.stragglers.iter().map(|s| s.hostname.chars().count()).max().unwrap_or(0);
    for s in &c.stragglers {
        writeln!(out, "  {}  {:<width$}  {}", s.endpoint, s.hostname, reason(s, now))?;
    }
    Ok(())
}

fn group_mounts(out: &mut dyn Write, mounts: &[NamespaceMount]) -> Result<()> {
    let width = mounts.iter().map(|m| m.path.len()).max().unwrap_or(0);
    for m in mounts {
        let mut extra = String::new();
        if let Some(s) = m.cache_share {
            extra += &format!(", cache share {s}%");
        }
        if m.passthrough {
            extra += ", passthrough";
        }
        writeln!(out, "  {:<width$}  {}{extra}", m.path, source(m))?;
    }
    Ok(())
}

/// `group show`, `group create`, `group rm`: the group, what it mounts and who is in it.
pub fn group(out: &mut dyn Write, verb: Option<&str>, g: &GroupSummary) -> Result<()> {
    let group = &g.group;
    if let Some(verb) = verb {
        writeln!(out, "{verb} group {}", group.name)?;
    }
    writeln!(out, "group:      {} (priority {})", group.name, group.priority)?;
    writeln!(out, "selector:   {}", group.selector.as_deref().unwrap_or("none"))?;
    writeln!(out, "members:    {}", if group.members.is_empty() { "none".into() } else { join(&group.members, " ") })?;
    if let Some(pin) = &group.pin {
        writeln!(out, "pinned:     {pin}")?;
    }
    if group.namespace.mounts.is_empty() {
        writeln!(out, "mounts:     none")?;
    } else {
        writeln!(out, "mounts:")?;
        group_mounts(out, &group.namespace.mounts)?;
    }
    writeln!(
        out,
        "endpoints:  {}{}",
        g.endpoints.len(),
        if g.endpoints.is_empty() { String::new() } else { format!(": {}", join(&g.endpoints, " ")) }
    )
}

/// `group ls`.
pub fn groups(out: &mut dyn Write, g: &Groups) -> Result<()> {
    if g.groups.is_empty() {
        return writeln!(out, "no groups");
    }
    let mut rows = vec![vec!["NAME".into(), "PRIORITY".into(), "ENDPOINTS".into(), "SELECTOR".into(), "MEMBERS".into(), "MOUNTS".into()]];
    for s in &g.groups {
        let group = &s.group;
        let mounts: Vec<String> = group
            .namespace
            .mounts
            .iter()
            .map(|m| {
                format!(
                    "{}={}",
                    m.path,
                    match &m.source {
                        Source::Channel(c) => c.to_string(),
                        Source::Pinned(g) => g.clone(),
                    }
                )
            })
            .collect();
        rows.push(vec![
            group.name.to_string(),
            group.priority.to_string(),
            s.endpoints.len().to_string(),
            group.selector.clone().unwrap_or_else(|| "-".into()),
            group.members.len().to_string(),
            if mounts.is_empty() { "-".into() } else { mounts.join(" ") },
        ]);
    }
    table(out, &rows)
}
