//! `GET /v1/audit`: the audit log, filtered by time and actor, with the server's own check of
//! the whole chain. Any role may read it, but only with a token, even when reads are open:
//! it names people, keys and what they did.

use api::audit::{AuditLog, AuditQuery, BreakKind, ChainBreak};
use api::users::Permission;
use api::ErrorCode;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;

use crate::error::AppError;
use crate::meta::Meta;
use crate::state::{blocking, AppState};

/// `GET /v1/audit?since=T&actor=A&limit=N` (a token of any role).
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditLog>, AppError> {
    state.authorize(&headers, Permission::Read)?;
    let Query(q) = query.map_err(|e| AppError::new(ErrorCode::BadRequest, e.body_text()))?;
    let st = state.clone();
    blocking(move || Ok(Json(log(&st.meta, &q).map_err(|e| AppError::internal("reading the audit log", e))?))).await
}

/// The entries `q` selects, the head of the whole log, and where the chain breaks, if it does.
pub fn log(meta: &Meta, q: &AuditQuery) -> Result<AuditLog, crate::meta::MetaError> {
    let (head_seq, _) = meta.audit_head();
    let all = meta.audit_log()?;
    let broken_at = check(&all, head_seq).err().map(|b| b.seq);
    if let Some(seq) = broken_at {
        tracing::error!(seq, "the audit log's hash chain is broken");
    }
    let head = all.last().map(|e| api::audit::AuditHead { seq: e.seq, hash: e.hash.clone() });
    let entries = q.select(&all).into_iter().cloned().collect();
    Ok(AuditLog { entries, head, broken_at })
}

/// Checks the whole chain, and that it reaches the newest entry this process wrote (entries
/// cut off the end while it runs show as a gap there).
pub fn check(all: &[api::audit::AuditEntry], head_seq: u64) -> Result<(), ChainBreak> {
    api::audit::verify(all)?;
    let last = all.last().map_or(0, |e| e.seq);
    if last < head_seq {
        return Err(ChainBreak { seq: last + 1, kind: BreakKind::Gap });
    }
    Ok(())
}
