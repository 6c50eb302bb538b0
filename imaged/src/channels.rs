//! Channel endpoints: named, versioned pointers to generations. Every change is a new version
//! with the next number; nothing is ever rewritten. Reads are cheap to poll: short cache
//! lifetime, an ETag per version and 304 answers.

use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use api::channels::{Channel, ChannelAction, History, Promote, Rollback, SetChannel};
use format::{ChannelName, Digest, GenSpec};

use api::ErrorCode;

use crate::error::AppError;
use crate::meta::{AuditEntry, ChannelVersion};
use crate::state::{blocking, AppState};

/// Checks a channel name in a path (`format::ChannelName` has the rule). The raw request path
/// must not encode anything (`%2f`, `%00`): names are plain.
pub fn check_name(name: &str, raw_path: &str) -> Result<ChannelName, AppError> {
    if raw_path.contains('%') {
        return Err(AppError::new(
            ErrorCode::BadChannelName,
            format!("invalid channel name {name:?}: percent-encoding is not allowed in channel names"),
        ));
    }
    name.parse().map_err(|e: format::ChannelNameError| AppError::new(ErrorCode::BadChannelName, e.to_string()))
}

fn doc(cv: &ChannelVersion, poll_seconds: u32) -> Channel {
    Channel {
        channel: cv.channel.clone(),
        version: cv.version,
        generation: cv.generation.clone(),
        manifest: cv.manifest,
        updated: cv.created,
        action: cv.action,
        poll_seconds,
    }
}

/// The checks every channel read starts with (read token, name), then `read` on the metadata,
/// off the async runtime.
async fn read_channel<T: Send + 'static>(
    state: &AppState,
    name: &str,
    raw_path: &str,
    headers: &HeaderMap,
    read: impl FnOnce(&crate::meta::Meta, &str) -> Result<T, crate::meta::MetaError> + Send + 'static,
) -> Result<T, AppError> {
    state.require_read(headers)?;
    check_name(name, raw_path)?;
    let (st, n) = (state.clone(), name.to_string());
    blocking(move || read(&st.meta, &n).map_err(|e| AppError::internal("reading metadata", e))).await
}

/// `GET /v1/channels/{name}`.
pub async fn get(State(state): State<AppState>, Path(name): Path<String>, req: axum::extract::Request) -> Result<Response, AppError> {
    // The request by value rather than `HeaderMap` and `OriginalUri` extractors, which copy.
    let (headers, uri) = (req.headers(), req.uri());
    let cached = {
        state.require_read(headers)?;
        check_name(&name, uri.path())?;
        state.hot_channels.get(&name)
    };
    let cv = match cached {
        Some(cv) => cv,
        None => {
            let cv = read_channel(&state, &name, uri.path(), headers, |meta, n| meta.channel(n)).await?;
            let cv = cv.ok_or_else(|| AppError::not_found(format!("no channel {name}")))?;
            state.hot_channels.put(&cv);
            cv
        }
    };
    let etag = format!("\"v{}\"", cv.version);
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=5"));
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    Ok((h, Json(doc(&cv, state.config.poll_seconds))).into_response())
}

/// Resolves `IMAGE@N` or a manifest digest to a published generation.
pub(crate) fn resolve(state: &AppState, spec: &str) -> Result<(String, Digest), AppError> {
    let bad = |m: String| AppError::new(ErrorCode::BadGeneration, m);
    let parsed: GenSpec = spec.parse().map_err(|e: format::NameError| bad(e.to_string()))?;
    let all = state.meta.generations().map_err(|e| AppError::internal("reading metadata", e))?;
    let found = match &parsed {
        GenSpec::Digest(d) => all.into_iter().find(|p| p.manifest == *d),
        GenSpec::Number(image, n) => all.into_iter().find(|p| p.image == image.as_str() && p.generation == *n),
        GenSpec::Latest(image) => all.into_iter().filter(|p| p.image == image.as_str()).max_by_key(|p| p.generation),
    };
    let p = found.ok_or_else(|| AppError::new(ErrorCode::UnknownGeneration, format!("no published generation {spec}")))?;
    Ok((format!("{}@{}", p.image, p.generation), p.manifest))
}

/// Who moves a channel and why, for the audit entry.
pub(crate) struct Why {
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// Added to the entry's detail (a promotion's source channel).
    pub note: String,
}

async fn write(
    state: &AppState,
    channel: ChannelName,
    action: ChannelAction,
    why: Why,
    pick: impl FnOnce(&AppState, &[ChannelVersion]) -> Result<(String, Digest), AppError> + Send + 'static,
) -> Result<Response, AppError> {
    let cv = move_channel(state, channel, action, why, pick).await?;
    Ok((StatusCode::CREATED, Json(doc(&cv, state.config.poll_seconds))).into_response())
}

/// Appends a channel version naming what `pick` chooses from the history: signed and gated
/// (not for rollbacks and withdrawals), never a withdrawn generation, audited, the signed
/// channel records and the fleet told.
pub(crate) async fn move_channel(
    state: &AppState,
    channel: ChannelName,
    action: ChannelAction,
    why: Why,
    pick: impl FnOnce(&AppState, &[ChannelVersion]) -> Result<(String, Digest), AppError> + Send + 'static,
) -> Result<ChannelVersion, AppError> {
    let _guard = state.channel_writes.lock().await;
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    blocking(move || {
        let history = st.meta.history(channel.as_str()).map_err(|e| AppError::internal("reading metadata", e))?;
        let (generation, manifest) = pick(&st, &history)?;
        // Once the repository is signed, a channel may name only a generation its family's
        // offline keys signed: endpoints would refuse anything else.
        if st.tuf.initialised() {
            let (image, n) = generation.split_once('@').and_then(|(i, n)| Some((i, n.parse::<u64>().ok()?))).unwrap_or(("", 0));
            st.tuf.signed_generation(image, n, &manifest.to_hex())?;
        }
        if st.rollouts.withdrawn(&generation).is_some() {
            return Err(AppError::new(ErrorCode::Withdrawn, format!("{generation} was withdrawn: no channel names it again")));
        }
        // Set and promote pass the channel's promotion gate; a rollback goes back to a
        // generation the channel already ran, and must stay possible when tests cannot run;
        // a rollout passed it when it started.
        if matches!(action, ChannelAction::Set | ChannelAction::Promote) {
            crate::gate_api::check(&st, &channel, &generation, &manifest)?;
        }
        let now = cache::clock::now();
        let cv = ChannelVersion {
            channel,
            version: history.last().map_or(1, |v| v.version + 1),
            generation,
            manifest,
            created: now,
            action,
        };
        // Before is the generation the channel named until now (absent for a new channel).
        let mut entry = AuditEntry::new(&why.actor, &format!("channel {}", action.as_str()), cv.channel.to_string(), format!("version {}{}", cv.version, why.note))
            .after(cv.generation.clone())
            .reason(why.reason.unwrap_or_default());
        if let Some(old) = history.last() {
            entry = entry.before(old.generation.clone());
        }
        st.meta.push_channel(&cv, entry).map_err(|e| AppError::internal("recording the channel", e))?;
        // The signed channel records follow (rebuilt from the recorded versions, so a failure
        // here is repaired by the next signing round).
        st.tuf.channels_changed(&st.meta)?;
        st.metrics.channel_moves.inc();
        st.hot_channels.put(&cv);
        st.fleet.changed();
        tracing::info!(channel = %cv.channel, version = cv.version, generation = %cv.generation, action = action.as_str(), "channel moved");
        Ok(cv)
    })
    .await
}

/// `PUT /v1/channels/{name}` `{"generation": "IMAGE@N" | DIGEST}`.
pub async fn set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Json<SetChannel>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Publish)?;
    let name = check_name(&name, uri.path())?;
    let Json(body) = body?;
    let why = Why { actor: actor.name, reason: body.reason, note: String::new() };
    write(&state, name, ChannelAction::Set, why, move |st, _| resolve(st, &body.generation)).await
}

/// `POST /v1/promote` `{"from": CHANNEL, "to": CHANNEL}`: `to` gets `from`'s generation.
pub async fn promote(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Promote>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Publish)?;
    let Json(body) = body.map_err(channel_body)?;
    let from = body.from.clone();
    let why = Why { actor: actor.name, reason: body.reason, note: format!(", from {from}") };
    write(&state, body.to, ChannelAction::Promote, why, move |st, _| {
        let cv = st.meta.channel(from.as_str()).map_err(|e| AppError::internal("reading metadata", e))?;
        let cv = cv.ok_or_else(|| AppError::not_found(format!("no channel {from}")))?;
        Ok((cv.generation, cv.manifest))
    })
    .await
}

/// `POST /v1/rollback` `{"channel": NAME, "to": optional generation}`: a new version naming an
/// older generation: `to`, or else the newest generation the channel named before its current
/// one that is still published (garbage collection may have removed older ones).
pub async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Rollback>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Publish)?;
    let Json(body) = body.map_err(channel_body)?;
    let to = body.to;
    let channel = body.channel.clone();
    let why = Why { actor: actor.name, reason: body.reason, note: String::new() };
    write(&state, body.channel, ChannelAction::Rollback, why, move |st, history| {
        let current = history.last().ok_or_else(|| AppError::not_found(format!("no channel {channel}")))?;
        if let Some(spec) = to {
            return resolve(st, &spec);
        }
        let published = st.meta.generations().map_err(|e| AppError::internal("reading metadata", e))?;
        let previous = history
            .iter()
            .rev()
            .filter(|v| v.manifest != current.manifest)
            .find(|v| published.iter().any(|p| p.manifest == v.manifest));
        let previous = previous.ok_or_else(|| {
            AppError::new(
                ErrorCode::NothingToRollBackTo,
                format!("{channel} never named another generation that is still published"),
            )
        })?;
        Ok((previous.generation.clone(), previous.manifest))
    })
    .await
}

/// A promote or rollback body that does not read: a bad channel name in it is
/// `bad_channel_name`, as in a path.
fn channel_body(e: JsonRejection) -> AppError {
    match e {
        JsonRejection::JsonDataError(d) => AppError::new(ErrorCode::BadChannelName, d.body_text()),
        e => e.into(),
    }
}

/// `GET /v1/history/{name}`: every version, oldest first.
pub async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let versions = read_channel(&state, &name, uri.path(), &headers, |meta, n| meta.history(n)).await?;
    if versions.is_empty() {
        return Err(AppError::not_found(format!("no channel {name}")));
    }
    let channel = check_name(&name, uri.path())?;
    Ok(Json(History { channel, versions }).into_response())
}
