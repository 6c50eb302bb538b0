//! Generation endpoints: publish (refused, with the missing objects, unless the whole tree is
//! present), list and get.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cache::Store;
use format::{Digest, EntryKind, ImageName, Manifest, Tree};
use api::generations::{Generation, GenerationList, GenerationStats, Kept};

use api::ErrorCode;

use crate::error::AppError;
use crate::meta::AuditEntry;
use crate::state::{blocking, AppState};

/// How many missing digests a refusal lists (the count is always exact).
const LIST_MISSING: usize = 10_000;

/// Every object `m` reaches that `store` lacks (or cannot parse, for trees): up to `cap` of
/// them, and how many in all. A missing tree hides what is below it until it arrives.
pub fn missing_objects(store: &Store, m: &Manifest, cap: usize) -> (Vec<Digest>, usize) {
    let mut missing = Vec::new();
    let mut count = 0;
    let mut note = |d: Digest, missing: &mut Vec<Digest>| {
        count += 1;
        if missing.len() < cap {
            missing.push(d);
        }
    };
    for side in m.side_objects() {
        if !store.contains(&side) {
            note(side, &mut missing);
        }
    }
    let mut seen = HashSet::new();
    let mut stack = vec![m.root];
    let mut seen_data = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        let Some(tree) = store.get(&t).ok().and_then(|b| Tree::decode(&b).ok()) else {
            note(t, &mut missing);
            continue;
        };
        for e in tree.entries {
            match e.kind {
                EntryKind::Directory { tree } => stack.push(tree),
                EntryKind::Regular { extents, .. } => {
                    for x in extents {
                        if seen_data.insert(x.digest) && !store.contains(&x.digest) {
                            note(x.digest, &mut missing);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (missing, count)
}

fn describe(p: &crate::meta::Published, m: &Manifest) -> Generation {
    describe_with(p, m, None)
}

fn describe_with(p: &crate::meta::Published, m: &Manifest, keep: Option<bool>) -> Generation {
    Generation {
        keep,
        image: m.image.clone(),
        generation: p.generation,
        label: format!("{}@{}", p.image, p.generation),
        manifest: p.manifest,
        root: m.root,
        parent: m.parent,
        created: m.created,
        message: m.message.clone(),
        stats: GenerationStats { files: m.stats.files, bytes: m.stats.bytes, objects: m.stats.objects },
    }
}

/// `POST /v1/generations` with the manifest bytes as body.
pub async fn publish(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Publish)?;
    let manifest = Manifest::decode(&body).map_err(|e| AppError::new(ErrorCode::BadManifest, format!("not a generation manifest: {e}")))?;
    let digest = Digest::of(&body);
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    let answer = blocking(move || {
        let label = format!("{}@{}", manifest.image, manifest.generation);
        let published = crate::meta::Published { image: manifest.image.to_string(), generation: manifest.generation, manifest: digest };
        match st.meta.generation(manifest.image.as_str(), manifest.generation).map_err(|e| AppError::internal("reading metadata", e))? {
            Some(existing) if existing == digest => return Ok((StatusCode::OK, Json(describe(&published, &manifest))).into_response()),
            Some(existing) => {
                return Err(AppError::new(
                    ErrorCode::GenerationExists,
                    format!("{label} is already published as manifest {existing}"),
                ));
            }
            None => {}
        }
        let (missing, count) = missing_objects(&st.store, &manifest, LIST_MISSING);
        if count > 0 {
            let mut e = AppError::new(
                ErrorCode::MissingObjects,
                format!("{label} refers to {count} objects the server lacks; upload them and publish again"),
            );
            e.0.missing_count = Some(count as u64);
            e.0.missing = Some(missing);
            return Err(e);
        }
        // Objects are all present; the manifest object next, then the record that makes the
        // generation visible.
        st.store.insert(&body, 3).map_err(|e| AppError::internal("storing the manifest", e))?;
        st.store.sync().map_err(|e| AppError::internal("syncing the store", e))?;
        // The change record's reason is the publish's reason; a generation without one (or
        // with one this server cannot read) is recorded without.
        let reason = manifest.change().and_then(Result::ok).map(|c| c.reason).unwrap_or_default();
        let entry = AuditEntry::new(&actor.name, "publish", label.clone(), manifest.message.clone()).after(digest.to_hex()).reason(reason);
        let existing = st
            .meta
            .put_generation(&manifest.image, manifest.generation, &digest, entry)
            .map_err(|e| AppError::internal("recording the generation", e))?;
        match existing {
            // Another publish of the same generation got there first.
            Some(existing) if existing == digest => return Ok((StatusCode::OK, Json(describe(&published, &manifest))).into_response()),
            Some(existing) => {
                return Err(AppError::new(ErrorCode::GenerationExists, format!("{label} is already published as manifest {existing}")));
            }
            None => {}
        }
        st.metrics.publishes.inc();
        tracing::info!(generation = %label, manifest = %digest, "published");
        Ok((StatusCode::CREATED, Json(describe(&published, &manifest))).into_response())
    })
    .await;
    drop(_gc);
    // Its serving pack and layout next, in the background (the batch request serves it
    // meanwhile); a republish of a generation without a layout builds it too.
    if answer.is_ok() {
        crate::serve::spawn_builds(&state, vec![digest]);
    }
    answer
}

fn load(store: &Store, p: &crate::meta::Published) -> Result<Manifest, AppError> {
    let bytes = store.get(&p.manifest).map_err(|e| AppError::internal("reading a manifest", e))?;
    Manifest::decode(&bytes).map_err(|e| AppError::internal("parsing a manifest", e))
}

/// `GET /v1/generations`: every published generation.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let st = state.clone();
    blocking(move || {
        let all = st.meta.generations().map_err(|e| AppError::internal("reading metadata", e))?;
        let kept = st.meta.kept().map_err(|e| AppError::internal("reading metadata", e))?;
        let is_kept = |p: &crate::meta::Published| kept.iter().any(|(i, n)| *i == p.image && *n == p.generation);
        let rows: Result<Vec<Generation>, AppError> = all.iter().map(|p| Ok(describe_with(p, &load(&st.store, p)?, Some(is_kept(p))))).collect();
        Ok(Json(GenerationList { generations: rows? }).into_response())
    })
    .await
}

/// `GET /v1/generations/{image}/{number}`.
pub async fn get(
    State(state): State<AppState>,
    Path((image, number)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let image = ImageName::new(&image).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))?;
    let st = state.clone();
    blocking(move || {
        let d = st.meta.generation(image.as_str(), number).map_err(|e| AppError::internal("reading metadata", e))?;
        let d = d.ok_or_else(|| AppError::not_found(format!("no generation {image}@{number}")))?;
        let p = crate::meta::Published { image: image.to_string(), generation: number, manifest: d };
        let kept = st.meta.kept().map_err(|e| AppError::internal("reading metadata", e))?;
        let keep = kept.iter().any(|(i, n)| i == image.as_str() && *n == number);
        Ok(Json(describe_with(&p, &load(&st.store, &p)?, Some(keep))).into_response())
    })
    .await
}

/// `PUT|DELETE /v1/generations/{image}/{number}/keep`: marks (or unmarks) a generation that
/// garbage collection must keep whatever the channels say.
pub async fn keep(
    State(state): State<AppState>,
    Path((image, number)): Path<(String, u64)>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Publish)?;
    let image = ImageName::new(&image).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))?;
    let keep = method == axum::http::Method::PUT;
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    blocking(move || {
        let found = st.meta.generation(image.as_str(), number).map_err(|e| AppError::internal("reading metadata", e))?;
        found.ok_or_else(|| AppError::not_found(format!("no generation {image}@{number}")))?;
        let label = format!("{image}@{number}");
        let (action, before, after) = if keep { ("keep", "not kept", "kept") } else { ("unkeep", "kept", "not kept") };
        let entry = AuditEntry::new(&actor.name, action, label, "").before(before).after(after);
        // Setting a mark that is already so changes nothing and records nothing.
        st.meta.set_keep(image.as_str(), number, keep, entry).map_err(|e| AppError::internal("recording the mark", e))?;
        Ok(Json(Kept { generation: format!("{image}@{number}"), keep }).into_response())
    })
    .await
}
