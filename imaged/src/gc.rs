//! Garbage collection: decides which generations are kept, forgets the others, and deletes
//! every object no kept generation reaches and no push in progress has uploaded.
//!
//! Kept generations: the ones a channel names in its newest `keep_channel_versions` versions,
//! the ones marked `keep`, the ones a current family role lists (signed: endpoints may be sent
//! to them), the newest generation of every image, the ones endpoints run, and any published
//! less than `gc_grace_seconds` ago. Kept objects: everything a kept generation reaches (manifest,
//! dictionary, trees, chunks), the logs of recorded test runs, and every object pinned by an upload or a missing-query within
//! the grace period. The caller holds the collection lock for writing, so no upload, publish
//! or channel move runs meanwhile.

use std::collections::{BTreeSet, HashSet};

use format::{Digest, Manifest};

use crate::meta::AuditEntry;
use crate::state::AppState;

/// What a collection found and (unless a dry run) did.
pub use api::server::GcReport;

/// Why a collection stopped. Nothing has been deleted when it stops before the sweep.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    /// A kept generation could not be walked: deleting anything would be a guess.
    #[error("cannot walk kept generation {label}; nothing was deleted")]
    Walk {
        /// `IMAGE@N`.
        label: String,
        /// Why.
        #[source]
        source: cache::ReachError,
    },
    /// A kept generation's manifest does not parse.
    #[error("manifest of kept generation {label} is malformed; nothing was deleted")]
    BadManifest {
        /// `IMAGE@N`.
        label: String,
        /// Why.
        #[source]
        source: format::DecodeError,
    },
    /// Removing serving layouts or packs failed.
    #[error("serving packs: {0}")]
    Serving(#[source] crate::serve::ServeError),
    /// Listing or deleting objects failed.
    #[error("object store at {path}: {source}")]
    Store {
        /// The store.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Seconds since the epoch by the workspace's clock (`cache::clock`).
fn now_secs() -> u64 {
    cache::clock::now().max(0) as u64
}

/// Runs a collection on behalf of `actor` (recorded in the audit log unless a dry run).
/// Blocking; the caller holds `state.gc_lock` for writing.
pub fn collect(state: &AppState, dry_run: bool, actor: &str) -> Result<GcReport, GcError> {
    let start = std::time::Instant::now();
    let (meta, store, config) = (&state.meta, &state.store, &state.config);
    let now = now_secs();
    let published = meta.generations()?;

    let mut keep: BTreeSet<(String, u64)> = BTreeSet::new();
    for channel in meta.channels()? {
        let history = meta.history(&channel)?;
        let newest = history.iter().rev().take(config.keep_channel_versions.max(1) as usize);
        keep.extend(newest.filter_map(|v| v.generation.rsplit_once('@').and_then(|(i, n)| Some((i.to_string(), n.parse().ok()?)))));
    }
    keep.extend(meta.kept()?);
    // What a family's signed metadata lists stays, or endpoints would be sent to generations
    // whose objects are gone (the family signs a version without it to let it go).
    keep.extend(state.tuf.signed_generations());
    let mut newest: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for p in &published {
        let n = newest.entry(&p.image).or_insert(p.generation);
        *n = (*n).max(p.generation);
        if meta.published_at(&p.image, p.generation)? + config.gc_grace_seconds > now {
            keep.insert((p.image.clone(), p.generation));
        }
    }
    keep.extend(newest.into_iter().map(|(i, n)| (i.to_string(), n)));

    let mut report = GcReport { dry_run, ..GcReport::default() };
    // What endpoints report running (or would roll back to) stays, whatever channels say.
    let since = now.saturating_sub(config.fleet_keep_seconds) as i64;
    for (generation, endpoints) in state.fleet.running(since) {
        let Some((image, n)) = generation.rsplit_once('@').and_then(|(i, n)| Some((i.to_string(), n.parse::<u64>().ok()?))) else {
            continue;
        };
        // Listed only when nothing else keeps it: "kept because these endpoints run it".
        if published.iter().any(|p| p.image == image && p.generation == n) && keep.insert((image, n)) {
            report.kept_for_endpoints.push(api::server::KeptForEndpoints { generation, endpoints });
        }
    }
    let mut reached: HashSet<Digest> = HashSet::new();
    let mut order = Vec::new();
    let mut removed = Vec::new();
    let mut live_manifests = HashSet::new();
    for p in &published {
        let label = format!("{}@{}", p.image, p.generation);
        if !keep.contains(&(p.image.clone(), p.generation)) {
            removed.push((p.image.clone(), p.generation));
            report.generations_removed.push(label);
            continue;
        }
        live_manifests.insert(p.manifest);
        let bytes = store.get(&p.manifest).map_err(|e| GcError::Walk { label: label.clone(), source: e.into() })?;
        let manifest = Manifest::decode(&bytes).map_err(|source| GcError::BadManifest { label: label.clone(), source })?;
        reached.insert(p.manifest);
        cache::reachable_into(store, &manifest, &mut reached, &mut order)
            .map_err(|source| GcError::Walk { label: label.clone(), source })?;
        report.generations_kept.push(label);
    }

    // The logs of recorded test runs are part of the evidence and stay with it.
    reached.extend(meta.evidence_logs()?);
    // So do the read traces signed with a generation (endpoints fetch them on mount).
    reached.extend(state.tuf.signed_traces());
    let pins = meta.pins()?;
    let live = |when: u64| when + config.gc_grace_seconds > now;
    let pinned: HashSet<Digest> = pins.iter().filter(|(_, when)| live(*when)).map(|(d, _)| *d).collect();
    let expired: Vec<Digest> = pins.iter().filter(|(_, when)| !live(*when)).map(|(d, _)| *d).collect();
    let store_err = |source| GcError::Store { path: store.root().to_path_buf(), source };
    let all = store.list().map_err(store_err)?;
    let mut garbage = Vec::new();
    for d in all {
        if reached.contains(&d) {
            report.objects_kept += 1;
        } else if pinned.contains(&d) {
            report.objects_kept += 1;
            report.objects_pinned += 1;
        } else {
            report.bytes_freed += store.stored_len(&d).unwrap_or(0);
            garbage.push(d);
        }
    }
    report.objects_removed = garbage.len() as u64;
    if !dry_run {
        // Generations go first: at no moment is a generation visible whose objects are gone.
        // The audit entry lands with the removal of the generations, before any object goes.
        let detail = format!(
            "{} generations removed, {} kept; {} objects ({} bytes) deleted, {} kept ({} pinned by pushes)",
            report.generations_removed.len(),
            report.generations_kept.len(),
            report.objects_removed,
            report.bytes_freed,
            report.objects_kept,
            report.objects_pinned
        );
        let mut entry = AuditEntry::new(actor, "gc", "garbage collection", detail);
        if !report.generations_removed.is_empty() {
            entry = entry.before(report.generations_removed.join(" ")).after("removed");
        }
        meta.remove_generations(&removed, entry)?;
        state.hot_objects.forget(&garbage);
        store.remove(&garbage).map_err(store_err)?;
        // Serving layouts go with their generations, packs when no layout names them.
        let (layouts, packs) = state.serving.collect(&live_manifests).map_err(GcError::Serving)?;
        if layouts + packs > 0 {
            tracing::info!(layouts, packs, "serving layouts and packs removed");
        }
        meta.unpin(&expired)?;
        state.metrics.gc_runs.inc();
        state.metrics.gc_objects_removed.inc_by(report.objects_removed);
        state.metrics.gc_bytes_freed.inc_by(report.bytes_freed);
    }
    report.millis = start.elapsed().as_millis() as u64;
    Ok(report)
}

/// Takes the collection lock (waiting for uploads, publishes and channel moves in progress to
/// finish, and holding new ones back) and collects on behalf of `actor` (a user, `imaged` for
/// the schedule, `local` for `imaged gc` run with no server up).
pub async fn run(state: &AppState, dry_run: bool, actor: &str) -> Result<GcReport, crate::error::AppError> {
    let _exclusive = state.gc_lock.write().await;
    let (st, actor) = (state.clone(), actor.to_string());
    let report = crate::state::blocking(move || {
        collect(&st, dry_run, &actor).map_err(|e| crate::error::AppError::internal("collecting garbage", e))
    })
    .await?;
    tracing::info!(
        dry_run,
        removed = report.objects_removed,
        freed = report.bytes_freed,
        generations_removed = report.generations_removed.len(),
        millis = report.millis,
        "garbage collection"
    );
    Ok(report)
}

/// Body of `POST /v1/gc`.
pub use api::server::GcRequest;

/// `POST /v1/gc` `{"dry_run": bool}` → the report. Needs the token.
pub async fn handle(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    axum::Json(req): axum::Json<GcRequest>,
) -> Result<axum::Json<GcReport>, crate::error::AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Admin)?;
    Ok(axum::Json(run(&state, req.dry_run, &actor.name).await?))
}
