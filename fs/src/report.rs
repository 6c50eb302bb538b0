//! What `imgfs status`, `update`, `rollback`, `pin`, `unpin` and `prefetch` print for people,
//! in the manner of `ostree admin status` and `cvmfs_config stat`: a short summary, one fact a
//! line. With `--json` they print the typed answers of `api::control` instead.

use std::fmt::Write;

use api::control::{DriftKind, OpenMode, Prefetched, Progress, Refusal, ResetDone, Status, Switch, Unpinned};

/// `n` bytes in binary units: `512 B`, `1.5 KiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// A manifest digest as people compare them: its first 12 hex digits.
fn short(d: &format::Digest) -> String {
    d.to_hex()[..12].to_string()
}

/// `3 s`, `4 min`, `2 h`, `5 d`.
fn ago(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// Unix seconds as an RFC 3339 instant in UTC (`2026-12-03T10:00:00Z`).
pub fn time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| format!("{unix} (unix seconds)"), |t| t.to_string())
}

fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).unwrap_or(100)
}

/// One line of what a switch did.
pub fn outcome(s: &Switch) -> String {
    match s {
        Switch::Switched { from, to, channel_version, millis } => {
            format!("switched from {from} to {to} (channel version {channel_version}) in {millis} ms")
        }
        Switch::AlreadyCurrent { generation, channel_version } => {
            format!("{generation} is current (channel version {channel_version})")
        }
        Switch::Refused { reason: Refusal::Unreachable, error } => format!("no server reachable: {error}"),
        Switch::Refused { error, .. } => format!("refused: {error}"),
        Switch::NothingToRollBackTo => api::control::NOTHING_TO_ROLL_BACK_TO.to_string(),
    }
}

/// The summary `imgfs status` prints.
pub fn status(st: &Status) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        let label = if label.is_empty() { String::new() } else { format!("{label}:") };
        let _ = writeln!(out, "{label:<12} {text}");
    };
    match (&st.channel, &st.at) {
        (Some(channel), _) => line("channel", format!("{channel}, version {}", st.channel_version)),
        (None, at) => line("pinned", format!("{}: follows no channel", at.as_deref().unwrap_or("?"))),
    }
    if let Some(held) = &st.held {
        line("held", format!("{held}: the poller leaves it there until `imgfs update` or `imgfs rollback`"));
    }
    line("current", format!("{} (manifest {})", st.current.generation, short(&st.current.manifest)));
    line(
        "previous",
        match &st.previous {
            Some(p) => format!("{} (manifest {})", p.generation, short(&p.manifest)),
            None => "none: rollback has no target".into(),
        },
    );
    line(
        "checked",
        match &st.last_check {
            Some(c) => format!("{} ago: {}", ago(c.seconds_ago), outcome(&c.result)),
            None => "not since the mount started".into(),
        },
    );
    let t = &st.trust;
    line(
        "metadata",
        match (&t.stale_since, &t.valid_until) {
            (Some(since), _) => format!("stale since {since}"),
            (None, Some(until)) => format!("fresh, valid until {until}"),
            (None, None) => "fresh".into(),
        },
    );
    if let Some(e) = t.last_check.as_ref().and_then(|c| c.error.as_ref()) {
        line("last error", e.clone());
    }
    let c = &st.cache;
    let of = match c.allowance_bytes {
        Some(a) => bytes(a),
        None => c.limit.clone(),
    };
    let mut cache = format!("{} of {of} (limit {}, min free {}), {} objects", bytes(c.used_bytes), c.limit, c.min_free, c.objects);
    if c.plain_copies > 0 {
        let _ = write!(cache, ", {} plain copies", c.plain_copies);
    }
    if c.evicted_objects > 0 {
        let _ = write!(cache, "; evicted {} ({})", c.evicted_objects, bytes(c.evicted_bytes));
    }
    line("cache", cache);
    for (i, s) in st.servers.iter().enumerate() {
        let health = match (s.resting_for, &s.last_error) {
            (0, _) => "ok".to_string(),
            (n, Some(e)) => format!("resting {n} s after: {e}"),
            (n, None) => format!("resting {n} s"),
        };
        let text = format!("{} {health} ({} ok, {} failed)", s.url, s.ok, s.failed);
        line(if i == 0 { "servers" } else { "" }, text);
    }
    line("offline", if st.offline { "yes: every server is resting after a failure".into() } else { "no".into() });
    let pins: Vec<&str> = st.pins.iter().map(|p| p.generation.as_str()).collect();
    line("pins", if pins.is_empty() { "none".into() } else { pins.join(", ") });
    for p in &st.prefetching {
        line("prefetching", format!("{} {}", p.generation, progress(&p.progress)));
    }
    if let Some(f) = &st.trace_fetch {
        let when = if f.before_switch { "before the switch to it" } else { "after it was mounted" };
        line("trace data", format!("{}: {} objects ({}) in {} ms, {when}", f.generation, f.objects, bytes(f.bytes), f.millis));
    }
    line(
        "opens",
        match st.opens.mode {
            OpenMode::Kernel => "by the kernel".into(),
            OpenMode::Passthrough => {
                format!("passthrough: {} through imgfs, {} handed to the kernel", st.opens.fuse, st.opens.passthrough)
            }
        },
    );
    if let Some(w) = &st.writable {
        line("writable", format!("{}: {} local changes, {} events", w.dir, w.changes, w.events));
        line("protected", if w.protected.is_empty() { "nothing".into() } else { w.protected.join(" ") });
        for e in &w.recent {
            let d = |d: &Option<format::Digest>| d.map_or("-".to_string(), |d| d.to_hex()[..12].to_string());
            let kind = match e.kind {
                DriftKind::Restored => "restored",
                DriftKind::Conflict => "conflict",
                DriftKind::Reset => "reset",
            };
            line("", format!("{} {kind} {} (image {}, local {}) on {}", e.at, e.path, d(&e.image), d(&e.local), e.generation));
        }
    }
    out
}

/// What `reset` prints.
pub fn reset(r: &ResetDone) -> String {
    format!("dropped {} local change(s): the image's version shows", r.removed)
}

/// `35% (12 of 34 objects, 3.0 MiB of 8.0 MiB)`.
pub fn progress(p: &Progress) -> String {
    format!(
        "{}% ({} of {} objects, {} of {})",
        percent(p.bytes_done, p.bytes_total),
        p.objects_done,
        p.objects_total,
        bytes(p.bytes_done),
        bytes(p.bytes_total)
    )
}

/// What a finished pin or prefetch prints.
pub fn prefetched(p: &Prefetched) -> String {
    let f = &p.fetched;
    format!(
        "{}{}: fetched {} objects ({}, {} received); {} of its {} chunks were cached already",
        if p.pinned { "pinned " } else { "" },
        p.generation,
        f.objects_done,
        bytes(f.bytes_done),
        bytes(f.transferred),
        f.cached_before,
        f.chunks
    )
}

/// What `unpin` prints.
pub fn unpinned(u: &Unpinned) -> String {
    format!("unpinned {} (manifest {})", u.unpinned, short(&u.manifest))
}
