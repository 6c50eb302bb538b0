//! `POST /v1/users`, `GET /v1/users`, `DELETE /v1/users/{name}`: people's tokens and roles
//! (admin only). A token is 32 random bytes in hex, returned once; only its BLAKE3 is stored.

use api::users::{AddUser, NewUser, Permission, User, UserName, Users};
use api::ErrorCode;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::AppError;
use crate::meta::{AuditEntry, StoredUser};
use crate::state::{blocking, AppState};

fn meta_err(e: crate::meta::MetaError) -> AppError {
    AppError::internal("writing users", e)
}

fn audit(actor: &str, action: &str, user: &UserName, detail: String) -> AuditEntry {
    AuditEntry::new(actor, action, format!("user {user}"), detail)
}

/// `POST /v1/users` (admin): adds a user with a new token; 409 `user_exists` if the name is
/// taken (revoked users keep theirs), 400 for `admin`, the bootstrap token's name.
pub async fn add(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<AddUser>, JsonRejection>) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, Permission::Admin)?;
    let Json(req) = body?;
    if req.name.as_str() == "admin" {
        return Err(AppError::new(ErrorCode::BadRequest, "`admin` is the bootstrap token's name".to_string()));
    }
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let user = User { name: req.name.clone(), role: req.role, created: cache::clock::now(), created_by: actor.name.clone(), revoked: None };
        let stored = StoredUser { user: user.clone(), token_hash: format::Digest::of(token.as_bytes()).to_hex() };
        let entry = audit(&actor.name, "user add", &req.name, String::new()).after(format!("role {}", req.role.as_str()));
        if !st.meta.add_user(&stored, entry).map_err(meta_err)? {
            return Err(AppError::new(ErrorCode::UserExists, format!("a user named {} exists (revoked users keep their name)", req.name)));
        }
        tracing::info!(user = %req.name, role = req.role.as_str(), by = %actor.name, "user added");
        Ok((StatusCode::CREATED, Json(NewUser { user, token })).into_response())
    })
    .await
}

/// `GET /v1/users` (admin): every user, revoked ones included, never with a token.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Users>, AppError> {
    state.authorize(&headers, Permission::Admin)?;
    let st = state.clone();
    blocking(move || Ok(Json(Users { users: st.meta.users().map_err(meta_err)? }))).await
}

/// `DELETE /v1/users/{name}` (admin): revokes the user's token at once; the user stays listed
/// as revoked. 404 `not_found` for an unknown user.
pub async fn revoke(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Result<Json<User>, AppError> {
    let actor = state.authorize(&headers, Permission::Admin)?;
    let name = UserName::new(&name).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let stored = st.meta.user(name.as_str()).map_err(meta_err)?;
        let stored = stored.ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no user {name}")))?;
        if stored.user.revoked.is_some() {
            return Ok(Json(stored.user));
        }
        let role = stored.user.role.as_str();
        let entry = audit(&actor.name, "user revoke", &name, String::new()).before(format!("role {role}")).after("revoked");
        let user = st.meta.revoke_user(stored, cache::clock::now(), entry).map_err(meta_err)?;
        tracing::info!(user = %name, by = %actor.name, "user revoked");
        Ok(Json(user))
    })
    .await
}
