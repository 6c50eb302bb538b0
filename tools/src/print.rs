//! The text `imgctl` prints for each command's output when `--json` is not given.

use std::io::{Result, Write};
use std::path::Path;

use format::{Activation, Entry, EntryKind};
use tools::analysis::SecuritySummary;
use tools::browse::{display_bytes, mode_string, utc_string};
use tools::commands::fleet::text as fleet_text;
use tools::commands::rollouts::text as rollout_text;
use tools::commands::gate::{Approved, ShowOutput, TestOutput};
use tools::commands::keys::{Forgotten, GeneratedKey, Initialised, KeyFile, MinEpochSet, Rotated, TraceAdded};
use tools::commands::local::{DiffOutput, ExportOutput, ImportOutput, LogEntry, ObjectRow};
use api::affected::AffectedRow;
use tools::commands::server::{ChannelOutput, PushOutput};
use tools::diff::Change;
use tools::signing::Listing;
use tools::verify::VerifyReport;

/// The new generation on stdout, the details on stderr.
pub fn import(out: &mut dyn Write, r: &ImportOutput) -> Result<()> {
    let s = &r.stats;
    writeln!(out, "{}", r.generation)?;
    eprintln!(
        "manifest {} root {}\n{} files, {} dirs, {} symlinks, {} bytes; {} new objects ({} bytes, {} stored); {} files read, {} unchanged; {:.2} s",
        r.manifest, r.root, s.files, s.directories, s.symlinks, s.bytes, s.new_objects, s.new_bytes, r.stored_bytes, r.files_read, r.files_reused, r.seconds
    );
    Ok(())
}

pub fn patch(out: &mut dyn Write, r: &tools::patch::PatchReport) -> Result<()> {
    writeln!(out, "{}", r.generation)?;
    for (i, s) in r.steps.iter().enumerate() {
        eprintln!("step {}: {} {:?}: exit {} in {:.1} s", i + 1, s.kind.as_str(), s.text, s.exit, s.duration_ms as f64 / 1000.0);
    }
    if !r.excluded.is_empty() {
        eprintln!("left out ({}): {}", r.excluded.len(), r.excluded.join(" "));
    }
    eprintln!(
        "from {}: {} paths changed, {} files read at commit; {} new objects ({} bytes stored); commit {:.2} s of {:.1} s; log {}",
        r.base,
        r.changed_paths,
        r.files_read,
        r.new_objects,
        r.stored_bytes,
        r.commit_ms as f64 / 1000.0,
        r.total_ms as f64 / 1000.0,
        &r.log.to_hex()[..12]
    );
    Ok(())
}

pub fn log(out: &mut dyn Write, rows: &Vec<LogEntry>) -> Result<()> {
    for g in rows {
        let s = &g.stats;
        writeln!(
            out,
            "{:<16} {}  {}  {:<24} {} files {} bytes (+{} new)  {}",
            g.generation,
            &g.manifest.to_hex()[..12],
            utc_string(g.created),
            g.change,
            s.files,
            s.bytes,
            s.new_bytes,
            g.message
        )?;
    }
    Ok(())
}

pub fn ls(out: &mut dyn Write, entries: &[Entry]) -> Result<()> {
    for e in entries {
        let tail = match &e.kind {
            EntryKind::Symlink { target } => format!(" -> {}", display_bytes(target)),
            _ => String::new(),
        };
        let size = match &e.kind {
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => format!("{major}, {minor}"),
            _ => e.size().to_string(),
        };
        writeln!(
            out,
            "{} {:>5} {:>5} {:>12} {} {}{}",
            mode_string(e.kind.letter(), e.mode),
            e.uid,
            e.gid,
            size,
            utc_string(e.mtime_sec),
            display_bytes(&e.name),
            tail
        )?;
    }
    Ok(())
}

pub fn objects(out: &mut dyn Write, rows: &Vec<ObjectRow>) -> Result<()> {
    for r in rows {
        writeln!(out, "{} {}", r.digest, r.stored_bytes)?;
    }
    Ok(())
}

pub fn export(out: &mut dyn Write, r: &ExportOutput) -> Result<()> {
    writeln!(out, "exported {} to {}: {} entries, {} bytes", r.generation, r.dest.display(), r.entries, r.bytes)
}

pub fn affected(out: &mut dyn Write, rows: &Vec<AffectedRow>) -> Result<()> {
    for r in rows {
        let packages: Vec<String> = r.packages.iter().map(|p| format!("{}:{} {}", p.name, p.arch, p.version)).collect();
        let channels: Vec<&str> = r.channels.iter().map(|c| c.as_str()).collect();
        let mut line = format!("{:<24} {}", r.generation, &r.manifest.to_hex()[..12]);
        if !packages.is_empty() {
            line += &format!("  {}", packages.join(", "));
        }
        if !channels.is_empty() {
            line += &format!("  channels: {}", channels.join(" "));
        }
        writeln!(out, "{line}")?;
        for h in &r.endpoints {
            writeln!(out, "    {} {} ({})", h.how, h.endpoint, h.hostname)?;
        }
    }
    Ok(())
}

pub fn diff(out: &mut dyn Write, d: &DiffOutput) -> Result<()> {
    for c in &d.changes {
        match c {
            Change::Added { path, size } => writeln!(out, "A {path} ({size} bytes)")?,
            Change::Removed { path, size } => writeln!(out, "D {path} ({size} bytes)")?,
            Change::Modified { path, old_size, new_size, what } => {
                writeln!(out, "M {path} ({old_size} -> {new_size} bytes; {})", what.join(", "))?
            }
        }
    }
    if let Some(pk) = &d.packages {
        writeln!(out, "packages:")?;
        for p in pk {
            match (&p.old, &p.new) {
                (None, Some(v)) => writeln!(out, "  + {} {v}", p.package)?,
                (Some(v), None) => writeln!(out, "  - {} {v}", p.package)?,
                (Some(o), Some(n)) => writeln!(out, "  ~ {} {o} -> {n}", p.package)?,
                (None, None) => {}
            }
        }
    }
    let a = &d.activation;
    let policy = match &a.policy {
        Activation::Live => "live".to_string(),
        Activation::Reboot => "reboot".to_string(),
        Activation::Restart(units) => format!("restart {}", units.join(" ")),
    };
    match a.why.as_slice() {
        [] => writeln!(out, "activation: {policy}")?,
        [one] => writeln!(out, "activation: {policy} ({one})")?,
        many => {
            writeln!(out, "activation: {policy}")?;
            for w in many {
                writeln!(out, "  {w}")?;
            }
        }
    }
    security(out, &d.security)
}

/// The `security:` section of a diff, omitted when there is nothing to say.
fn security(out: &mut dyn Write, s: &SecuritySummary) -> Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    let or_none = |m: &Option<String>| m.clone().unwrap_or_else(|| "none".into());
    writeln!(out, "security:")?;
    for c in &s.setid {
        writeln!(out, "  setid {}: {} -> {}", c.path, or_none(&c.before), or_none(&c.after))?;
    }
    for c in &s.capabilities {
        writeln!(out, "  capabilities {}: {} -> {}", c.path, or_none(&c.before), or_none(&c.after))?;
    }
    for w in &s.world_writable {
        writeln!(out, "  world-writable {} {} ({})", if w.directory { "directory" } else { "file" }, w.path, w.mode)?;
    }
    for u in &s.units {
        writeln!(out, "  unit {} {}", u.unit, u.change)?;
    }
    for l in &s.listening {
        writeln!(out, "  listening {}: [{}] -> [{}]", l.unit, l.before.join(", "), l.after.join(", "))?;
    }
    for p in &s.downgrades {
        writeln!(out, "  downgrade {} {} -> {}", p.package, p.old.as_deref().unwrap_or(""), p.new.as_deref().unwrap_or(""))?;
    }
    Ok(())
}

pub fn push(out: &mut dyn Write, p: &PushOutput) -> Result<()> {
    match &p.signed {
        Some(s) => writeln!(out, "signed {} (arch {}, epoch {})", p.generation, s.arch, s.epoch)?,
        None => writeln!(out, "{} is not signed (no --key): endpoints refuse it and channels cannot name it", p.generation)?,
    }
    let r = &p.report;
    writeln!(
        out,
        "pushed {}: {} objects, {} uploaded ({} bytes), {:.2} s",
        p.generation, r.objects, r.uploaded, r.uploaded_bytes, p.seconds
    )
}

pub fn keep(out: &mut dyn Write, k: &api::generations::Kept) -> Result<()> {
    writeln!(out, "{}: keep {}", k.generation, if k.keep { "on" } else { "off" })
}

pub fn channel(out: &mut dyn Write, c: &ChannelOutput) -> Result<()> {
    match c {
        ChannelOutput::History(h) => {
            for cv in &h.versions {
                writeln!(out, "v{:<5} {:<24} {:<9} {}", cv.version, cv.generation, cv.action.as_str(), utc_string(cv.created))?;
            }
            Ok(())
        }
        ChannelOutput::Channel(c) => writeln!(out, "{} v{} -> {} ({})", c.channel, c.version, c.generation, c.action.as_str()),
    }
}

pub fn verify(out: &mut dyn Write, r: &VerifyReport, quarantine: &Path) -> Result<()> {
    writeln!(out, "checked {} objects and {} generations", r.objects_checked, r.generations_checked)?;
    for (d, why) in &r.corrupt {
        writeln!(out, "corrupt object {d}: {why}")?;
    }
    if r.quarantined > 0 {
        writeln!(out, "moved {} corrupt objects to {}", r.quarantined, quarantine.display())?;
    }
    if r.tmp_removed > 0 {
        writeln!(out, "removed {} temporary files left by interrupted writers", r.tmp_removed)?;
    }
    for (label, missing) in &r.incomplete {
        writeln!(
            out,
            "generation {label} is missing {} objects (first: {}); re-import its source or fetch it from a server",
            missing.len(),
            missing[0]
        )?;
    }
    if r.corrupt.is_empty() && r.incomplete.is_empty() {
        writeln!(out, "all good")?;
    }
    Ok(())
}

pub fn generated_key(out: &mut dyn Write, k: &GeneratedKey) -> Result<()> {
    writeln!(out, "{} {} {} (public half in {})", k.keytype, k.keyid, k.file.display(), k.public.display())
}

pub fn key_files(out: &mut dyn Write, rows: &Vec<KeyFile>) -> Result<()> {
    for k in rows {
        writeln!(out, "{} {}{}", k.keyid, k.file.display(), if k.secret { " (secret)" } else { "" })?;
    }
    Ok(())
}

/// A list of key ids as JSON writes it, as `key list` has always shown them.
fn ids(keyids: &[trust::keys::KeyId]) -> String {
    serde_json::to_string(keyids).unwrap_or_default()
}

pub fn listing(out: &mut dyn Write, l: &Listing) -> Result<()> {
    writeln!(out, "root v{} (expires {})", l.root.version, l.root.expires)?;
    for (role, r) in &l.root.roles {
        writeln!(out, "  {role}: threshold {} of {}", r.threshold, ids(&r.keyids))?;
    }
    if let Some(t) = &l.targets {
        writeln!(out, "targets v{} (expires {})", t.version, t.expires)?;
        for d in &t.delegations {
            let paths = serde_json::to_string(&d.paths).unwrap_or_default();
            writeln!(out, "  {} {}: threshold {} of {}", d.name, paths, d.threshold, ids(&d.keyids))?;
        }
    }
    Ok(())
}

pub fn rotated(out: &mut dyn Write, r: &Rotated) -> Result<()> {
    writeln!(out, "{}: new keys in {} version {}", r.role, r.uploaded, r.version)
}

pub fn initialised(out: &mut dyn Write, i: &Initialised) -> Result<()> {
    writeln!(out, "repository created; endpoints start from {} (imgfs mount --root)", i.root.display())
}

pub fn trace_added(out: &mut dyn Write, t: &TraceAdded) -> Result<()> {
    let short = &t.trace.to_hex()[..12];
    if t.signed {
        writeln!(out, "{}: trace {short} ({} reads) signed with it; endpoints fetch its data first", t.generation, t.reads)
    } else {
        writeln!(out, "{}: already signed with trace {short}", t.generation)
    }
}

pub fn forgotten(out: &mut dyn Write, f: &Forgotten) -> Result<()> {
    if f.removed {
        writeln!(out, "{}: no longer signed; garbage collection may remove it", f.generation)
    } else {
        writeln!(out, "{}: its family's metadata does not list it; nothing signed", f.generation)
    }
}

pub fn min_epoch(out: &mut dyn Write, m: &MinEpochSet) -> Result<()> {
    writeln!(out, "{}: min_epoch {} (role version {}); generations below it are withdrawn", m.image, m.min_epoch, m.version)
}

fn names(tests: &[api::gate::TestName]) -> String {
    if tests.is_empty() {
        "none".into()
    } else {
        tests.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn rule(r: &api::gate::Rule) -> String {
    format!("tests {}; {} approval(s)", names(&r.tests), r.approvals)
}

pub fn policy(out: &mut dyn Write, p: &api::gate::ChannelPolicy) -> Result<()> {
    writeln!(out, "{} policy (set {})", p.channel, utc_string(p.updated))?;
    writeln!(out, "  normal:    {}", rule(&p.normal))?;
    writeln!(out, "  emergency: {}", rule(&p.emergency))?;
    let ids = |keys: &[api::tuf::TufKey]| -> String {
        let ids: Vec<String> = keys.iter().filter_map(|k| Some(trust::keys::PublicKey::from_value(&serde_json::to_value(k).ok()?).ok()?.key_id().0[..12].to_string())).collect();
        if ids.is_empty() { "none".into() } else { ids.join(" ") }
    };
    writeln!(out, "  approvers: {}", ids(&p.approvers))?;
    writeln!(out, "  testers:   {}", ids(&p.testers))
}

pub fn tested(out: &mut dyn Write, t: &TestOutput) -> Result<()> {
    writeln!(
        out,
        "{} {} {} (exit {}, {:.1} s); log {} ({} bytes); signed by {}",
        t.generation,
        t.test,
        t.outcome.as_str(),
        t.exit,
        t.duration_ms as f64 / 1000.0,
        t.log,
        t.log_len,
        &t.keyid[..12.min(t.keyid.len())]
    )
}

pub fn approved(out: &mut dyn Write, a: &Approved) -> Result<()> {
    writeln!(out, "{} approved by {}", a.generation, &a.keyid[..12.min(a.keyid.len())])
}

pub fn show_generation(out: &mut dyn Write, s: &ShowOutput) -> Result<()> {
    writeln!(out, "{}  manifest {}", s.generation, s.manifest)?;
    writeln!(out, "  created {}  root {}", utc_string(s.created), s.root)?;
    if let Some(p) = &s.parent {
        writeln!(out, "  parent {p}")?;
    }
    let st = &s.stats;
    writeln!(out, "  {} files, {} dirs, {} symlinks, {} bytes", st.files, st.directories, st.symlinks, st.bytes)?;
    if !s.message.is_empty() {
        writeln!(out, "  message: {}", s.message)?;
    }
    match &s.change {
        Some(c) => {
            writeln!(out, "change: {}", c.classification.as_str())?;
            writeln!(out, "  reason: {}", c.reason)?;
            writeln!(out, "  requested by: {}", c.requested_by)?;
            if !c.advisories.is_empty() {
                writeln!(out, "  advisories: {}", c.advisories.join(" "))?;
            }
            let source = match c.activation_source {
                format::ActivationSource::Derived => "derived",
                format::ActivationSource::Override => "set by hand",
            };
            writeln!(out, "  activation: {} ({source})", c.activation.to_arg())?;
            for why in &c.activation_why {
                writeln!(out, "    {why}")?;
            }
        }
        None => writeln!(out, "change: - (no change record)")?,
    }
    if let Some(p) = &s.patch {
        writeln!(out, "patch: over generation {} ({}), network {}", p.base_generation, p.base, if p.network { "host" } else { "none" })?;
        for step in &p.steps {
            writeln!(out, "  {} {}  exit {}  {:.1} s", step.kind.as_str(), step.text, step.exit, step.duration_ms as f64 / 1000.0)?;
        }
        if !p.excluded.is_empty() {
            writeln!(out, "  excluded: {}", p.excluded.join(" "))?;
        }
        writeln!(out, "  log {} ({} bytes)", p.log, p.log_len)?;
    }
    for u in &s.unreadable {
        writeln!(out, "unreadable {u}")?;
    }
    let Some(g) = &s.server else { return Ok(()) };
    writeln!(out, "server: {} ({})", g.generation, g.classification.as_str())?;
    let short = |k: &api::tuf::TufKey| -> String {
        trust::keys::PublicKey::from_value(&serde_json::to_value(k).unwrap_or_default()).map_or("?".into(), |k| k.key_id().0[..12].to_string())
    };
    if g.evidence.is_empty() {
        writeln!(out, "  evidence: none")?;
    }
    for e in &g.evidence {
        let t = &e.statement;
        writeln!(
            out,
            "  test {} {} exit {} {:.1} s  log {}  by {}  at {}",
            t.test,
            t.outcome.as_str(),
            t.exit,
            t.duration_ms as f64 / 1000.0,
            &t.log.to_hex()[..12],
            short(&e.key),
            utc_string(t.time)
        )?;
    }
    if g.approvals.is_empty() {
        writeln!(out, "  approvals: none")?;
    }
    for a in &g.approvals {
        writeln!(out, "  approved by {} at {}  {}", short(&a.key), utc_string(a.statement.time), a.statement.comment)?;
    }
    for c in &g.channels {
        if c.met {
            writeln!(out, "  gate {}: met ({})", c.channel, rule(&c.rule))?;
        } else {
            writeln!(out, "  gate {}: not met: missing tests {}; {} more approval(s)", c.channel, names(&c.missing.tests), c.missing.approvals)?;
        }
    }
    Ok(())
}

pub fn new_user(out: &mut dyn Write, u: &api::users::NewUser) -> Result<()> {
    writeln!(out, "added {} ({}); its token, shown only now:", u.user.name, u.user.role.as_str())?;
    writeln!(out, "{}", u.token)?;
    Ok(())
}

pub fn users(out: &mut dyn Write, u: &api::users::Users) -> Result<()> {
    for user in &u.users {
        let state = match user.revoked {
            Some(t) => format!("revoked {}", utc_string(t)),
            None => "active".to_string(),
        };
        writeln!(out, "{:<24} {:<10} {}  added {} by {}", user.name, user.role.as_str(), state, utc_string(user.created), user.created_by)?;
    }
    Ok(())
}

pub fn revoked_user(out: &mut dyn Write, u: &api::users::User) -> Result<()> {
    writeln!(out, "revoked {} ({})", u.name, u.role.as_str())?;
    Ok(())
}

pub fn audit(out: &mut dyn Write, a: &tools::commands::audit::AuditOutput) -> Result<()> {
    for e in &a.entries {
        write!(out, "{:>6}  {}  {:<16} {:<16} {}", e.seq, utc_string(e.time), e.actor, e.action, e.subject)?;
        match (&e.before, &e.after) {
            (Some(b), Some(a)) => write!(out, ": {b} -> {a}")?,
            (None, Some(a)) => write!(out, ": -> {a}")?,
            (Some(b), None) => write!(out, ": {b} ->")?,
            (None, None) => {}
        }
        if !e.detail.is_empty() {
            write!(out, " ({})", e.detail)?;
        }
        if let Some(r) = &e.reason {
            write!(out, " because: {r}")?;
        }
        writeln!(out)?;
    }
    match &a.head {
        Some(h) => writeln!(out, "chain verified: {} entries, {} shown; head {} {}", a.total, a.entries.len(), h.seq, h.hash)?,
        None => writeln!(out, "the audit log is empty")?,
    }
    Ok(())
}

// The fleet's text lives in the library (`tools::commands::fleet::text`), where it is tested;
// these give it the time now.

pub fn created_enroll_token(out: &mut dyn Write, t: &api::fleet::CreatedEnrollToken) -> Result<()> {
    fleet_text::created_token(out, t, cache::clock::now())
}

pub fn enroll_tokens(out: &mut dyn Write, t: &api::fleet::EnrollTokens) -> Result<()> {
    fleet_text::tokens(out, t, cache::clock::now())
}

pub fn endpoints(out: &mut dyn Write, e: &api::fleet::Endpoints) -> Result<()> {
    fleet_text::endpoints(out, e, cache::clock::now())
}

pub fn endpoint(out: &mut dyn Write, d: &api::fleet::EndpointDetail) -> Result<()> {
    fleet_text::endpoint(out, d, cache::clock::now())
}

pub fn endpoint_changed(out: &mut dyn Write, verb: &str, e: &api::fleet::EndpointSummary) -> Result<()> {
    fleet_text::endpoint_changed(out, verb, e)
}

pub fn compliance(out: &mut dyn Write, c: &api::fleet::Compliance) -> Result<()> {
    fleet_text::compliance(out, c, cache::clock::now())
}

pub fn group(out: &mut dyn Write, verb: Option<&str>, g: &api::fleet::GroupSummary) -> Result<()> {
    fleet_text::group(out, verb, g)
}

pub fn groups(out: &mut dyn Write, g: &api::fleet::Groups) -> Result<()> {
    fleet_text::groups(out, g)
}

// The rollouts' text lives in the library too (`tools::commands::rollouts::text`).

pub fn rollout_started(out: &mut dyn Write, r: &api::rollouts::Rollout) -> Result<()> {
    rollout_text::started(out, r, cache::clock::now())
}

pub fn rollout_status(out: &mut dyn Write, r: &api::rollouts::Rollout) -> Result<()> {
    rollout_text::status(out, r, cache::clock::now())
}

pub fn rollout_acted(out: &mut dyn Write, verb: &str, r: &api::rollouts::Rollout) -> Result<()> {
    rollout_text::acted(out, verb, r)
}

pub fn rollouts(out: &mut dyn Write, r: &api::rollouts::Rollouts) -> Result<()> {
    rollout_text::rollouts(out, r, cache::clock::now())
}

pub fn withdrawn(out: &mut dyn Write, w: &api::rollouts::Withdrawn) -> Result<()> {
    rollout_text::withdrawn(out, w)
}

pub fn pinned(out: &mut dyn Write, e: &api::fleet::EndpointSummary, pin: Option<&str>) -> Result<()> {
    rollout_text::pinned(out, e, pin)
}

pub fn held(out: &mut dyn Write, e: &api::fleet::EndpointSummary, reason: Option<&str>) -> Result<()> {
    rollout_text::held(out, e, reason)
}
