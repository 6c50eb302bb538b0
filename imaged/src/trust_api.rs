//! HTTP endpoints of the signed metadata: `GET /tuf/{file}` for clients (TUF's repository
//! layout, consistent snapshots), and for engineers `GET /v1/tuf` (state and the online
//! keys), `POST /v1/tuf/keys/{role}` (a new online key), `PUT /v1/tuf/root` and
//! `PUT /v1/tuf/roles/{role}` (metadata signed offline).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use api::tuf::{NewKey, RoleUploaded};

use api::ErrorCode;

use crate::error::AppError;
use crate::meta::AuditEntry;
use crate::state::{blocking, AppState};
use crate::tuf::TufError;

impl From<TufError> for AppError {
    fn from(e: TufError) -> AppError {
        match e {
            TufError::NotInitialised => AppError::new(ErrorCode::TrustNotInitialised, e.to_string()),
            TufError::Refused(m) => AppError::new(ErrorCode::MetadataRefused, m),
            e @ TufError::NotNewer { .. } => AppError::new(ErrorCode::VersionNotNewer, e.to_string()),
            TufError::Unsigned(m) => AppError::new(ErrorCode::UnsignedGeneration, m),
            TufError::NoKey(_) => AppError::new(ErrorCode::NoOnlineKey, e.to_string()),
            other => AppError::internal("the signed metadata", other),
        }
    }
}

/// The current version of a role of the signed repository, if it has one.
fn role_version(st: &crate::state::Shared, role: &str) -> Option<u64> {
    st.tuf.status().roles.get(role).map(|r| r.version)
}

/// An entry with a role's version before and after an upload.
fn versions(entry: AuditEntry, before: Option<u64>, after: u64) -> AuditEntry {
    let entry = entry.after(format!("version {after}"));
    match before {
        Some(v) => entry.before(format!("version {v}")),
        None => entry,
    }
}

/// The signed metadata files are written before their audit entry (they are not in rocksdb),
/// so a failure here follows an accepted change: the answer says so.
fn audit_err(e: crate::meta::MetaError) -> AppError {
    AppError::internal("recording the audit entry of an accepted change", e)
}

/// `GET /v1/tuf`.
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    Ok(Json(state.tuf.status()).into_response())
}

/// `POST /v1/tuf/keys/{role}`: a new key for an online role; its public half.
pub async fn add_key(State(state): State<AppState>, Path(role): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Admin)?;
    let st = state.clone();
    let key = blocking(move || {
        let key = st.tuf.add_online_key(&role)?;
        let entry = AuditEntry::new(&actor.name, "trust key", format!("role {role}"), "a new online key").after(key.key_id().0);
        st.meta.record(entry).map_err(audit_err)?;
        Ok(key)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(NewKey { keyid: key.key_id().0, key: crate::tuf::api_key(&key) })).into_response())
}

/// `PUT /v1/tuf/root` with a root file signed offline.
pub async fn put_root(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Admin)?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    let version = blocking(move || {
        let before = role_version(&st, "root");
        let version = st.tuf.put_root(&body, &st.meta)?;
        st.meta.record(versions(AuditEntry::new(&actor.name, "trust root", "root", "a root signed offline"), before, version)).map_err(audit_err)?;
        Ok(version)
    })
    .await?;
    Ok(Json(RoleUploaded { role: "root".into(), version }).into_response())
}

/// `PUT /v1/tuf/roles/{role}` with `targets` or an image family's role, signed offline.
pub async fn put_role(
    State(state): State<AppState>,
    Path(role): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Admin)?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    let r = role.clone();
    let version = blocking(move || {
        let before = role_version(&st, &r);
        let version = st.tuf.put_role(&r, &body, &st.meta)?;
        let entry = AuditEntry::new(&actor.name, "trust role", format!("role {r}"), "metadata signed offline");
        st.meta.record(versions(entry, before, version)).map_err(audit_err)?;
        Ok(version)
    })
    .await?;
    Ok(Json(RoleUploaded { role, version }).into_response())
}

/// `GET /tuf/targets/{*path}`: a target file under its consistent-snapshot name.
pub async fn target(State(state): State<AppState>, Path(path): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let st = state.clone();
    let p = path.clone();
    let bytes = blocking(move || Ok(st.tuf.target(&p, &st.store))).await?;
    let bytes = bytes.ok_or_else(|| AppError::not_found(format!("no target file {path}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], bytes)
        .into_response())
}

/// The name a metadata file is stored under, for the path a request names: the path
/// arrives decoded (`1.images/debian.json`), files are stored under the encoded name
/// (`1.images%2Fdebian.json`).
pub fn stored_name(file: &str) -> String {
    match file.split_once('.') {
        Some((v, rest)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{v}.{}.json", trust::sign::encode_role(rest.strip_suffix(".json").unwrap_or(rest)))
        }
        _ => format!("{}.json", trust::sign::encode_role(file.strip_suffix(".json").unwrap_or(file))),
    }
}

/// `GET /tuf/{file}`: a metadata file (`N.ROLE.json`, `timestamp.json`, `ROLE.json`), the
/// role name percent-encoded as clients write it.
pub async fn file(State(state): State<AppState>, Path(file): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let name = stored_name(&file);
    let st = state.clone();
    let n = name.clone();
    let bytes = blocking(move || Ok(st.tuf.file(&n)?)).await?;
    let bytes = bytes.ok_or_else(|| AppError::not_found(format!("no metadata file {name}")))?;
    let cache = if name.starts_with(|c: char| c.is_ascii_digit()) { "public, max-age=31536000, immutable" } else { "no-cache" };
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, cache)], bytes).into_response())
}
