//! `GET /v1/affected`: which published generations carry a Debian package or a path, and the
//! channels that name them now. Reads each generation's package-list object (or, for one made
//! before package lists existed, its dpkg status file) and, for paths, its trees.

use std::collections::HashMap;

use api::affected::{Affected, AffectedQuery, AffectedRow};
use api::ErrorCode;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use cache::browse::{self, ReadError};
use format::{ChannelName, Manifest};

use crate::error::AppError;
use crate::state::{blocking, AppState, Shared};

fn meta_err(e: crate::meta::MetaError) -> AppError {
    AppError::internal("reading metadata", e)
}

fn read_err(generation: &str, e: ReadError) -> AppError {
    AppError::internal(&format!("reading {generation}"), e)
}

/// `GET /v1/affected?package=NAME | source=NAME | path=PATH[&digest=D]` (read access).
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AffectedQuery>, QueryRejection>,
) -> Result<Json<Affected>, AppError> {
    state.require_read(&headers)?;
    let Query(q) = query.map_err(|e| AppError::new(ErrorCode::BadRequest, e.body_text()))?;
    let asked = [q.package.is_some(), q.source.is_some(), q.path.is_some()].iter().filter(|b| **b).count();
    if asked != 1 {
        return Err(AppError::new(ErrorCode::BadRequest, "give exactly one of package, source or path".to_string()));
    }
    if q.digest.is_some() && q.path.is_none() {
        return Err(AppError::new(ErrorCode::BadRequest, "digest goes with path".to_string()));
    }
    let st = state.clone();
    blocking(move || Ok(Json(Affected { rows: rows(&st, &q)? }))).await
}

fn rows(st: &Shared, q: &AffectedQuery) -> Result<Vec<AffectedRow>, AppError> {
    let mut naming: HashMap<String, Vec<ChannelName>> = HashMap::new();
    for name in st.meta.channels().map_err(meta_err)? {
        if let Some(cv) = st.meta.channel(&name).map_err(meta_err)? {
            naming.entry(cv.generation.clone()).or_default().push(cv.channel);
        }
    }
    let mut holders = st.fleet.holders();
    let mut out = Vec::new();
    for p in st.meta.generations().map_err(meta_err)? {
        let generation = format!("{}@{}", p.image, p.generation);
        let bytes = st.store.get(&p.manifest).map_err(|e| AppError::internal("reading a manifest", e))?;
        let m = Manifest::decode(&bytes).map_err(|e| AppError::internal("parsing a manifest", e))?;
        let found = browse::carries(&st.store, &m, q.package.as_deref(), q.source.as_deref(), q.path.as_deref(), q.digest.as_ref())
            .map_err(|e| read_err(&generation, e))?;
        let Some(packages) = found else { continue };
        let mut channels = naming.remove(&generation).unwrap_or_default();
        channels.sort();
        let endpoints = holders.remove(&generation).unwrap_or_default();
        out.push(AffectedRow { generation, manifest: p.manifest, packages, channels, endpoints });
    }
    Ok(out)
}
