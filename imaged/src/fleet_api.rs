//! The fleet's routes under `/v1/fleet/`: enrollment tokens, enrollment, sessions, check-ins
//! (conditional GET of the desired state), the push-hint event stream, reports, and the
//! operators' inventory, labels, groups and compliance. State lives in `fleet::Fleet`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use api::fleet::{
    Compliance, CreatedEnrollToken, Desired, EndpointDetail, EndpointId, Endpoints, Enroll, EnrollToken, EnrollTokens, Enrolled, Group,
    GroupName, GroupSummary, Groups, LabelChange, MountView, NewEnrollToken, ReportAck, ReportBatch, Session, SessionRequest,
    Straggler,
};
use api::users::Permission;
use api::ErrorCode;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use format::ChannelName;

use crate::error::AppError;
use crate::fleet::{self, Endpoint, LiveGroup, Observed, Record, StoredToken};
use crate::meta::AuditEntry;
use crate::state::{blocking, AppState, Shared};

fn meta_err(e: crate::meta::MetaError) -> AppError {
    AppError::internal("writing the fleet's records", e)
}

fn bad_report(why: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::BadReport, why)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AppError> {
    Ok(body?.0)
}

fn labels_ok(labels: &api::fleet::Labels) -> Result<(), AppError> {
    if labels.len() > api::fleet::MAX_LABELS {
        return Err(bad_report(format!("more than {} labels", api::fleet::MAX_LABELS)));
    }
    for (k, v) in labels {
        if !api::fleet::label_key_ok(k) || !api::fleet::label_value_ok(v) {
            return Err(bad_report(format!("label {:?}: keys and values are at most 63 of [a-zA-Z0-9._/-]", k.chars().take(70).collect::<String>())));
        }
    }
    Ok(())
}

/// The generation a channel names now, from memory or the database.
pub fn channel_generation(st: &Shared, c: &ChannelName) -> Option<String> {
    if let Some(cv) = st.hot_channels.get(c.as_str()) {
        return Some(cv.generation);
    }
    let cv = st.meta.channel(c.as_str()).ok()??;
    st.hot_channels.put(&cv);
    Some(cv.generation)
}

/// The endpoint's desired state now: its groups' namespaces, with the rollouts that reached
/// it, its pin or hold, and the withdrawn generations.
pub fn served(st: &Shared, ep: &Endpoint) -> fleet::Served {
    st.fleet.served(ep, &|c| channel_generation(st, c), &|record, desired| {
        let holding = st.rollouts.holding();
        let refs: Vec<&api::rollouts::Rollout> = holding.iter().collect();
        crate::rollouts::overlay(desired, record, &refs, &st.rollouts.all_withdrawn());
    })
}

/// The endpoint behind `Authorization: Bearer ep1...`: 401 `token_required` without one, 401
/// `session_expired`, 403 `bad_token` for a forged one, 403 `unknown_endpoint`, 403
/// `endpoint_revoked`.
fn endpoint(st: &Shared, headers: &HeaderMap) -> Result<Arc<Endpoint>, AppError> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(AppError::new(ErrorCode::TokenRequired, "an endpoint's request needs Authorization: Bearer SESSION"));
    };
    let Some((id, expires)) = st.fleet.check_session(given) else {
        return Err(AppError::new(ErrorCode::BadToken, "the session token is not one this server made"));
    };
    if expires < cache::clock::now() {
        return Err(AppError::new(ErrorCode::SessionExpired, "the session expired: open a new one"));
    }
    let ep = st.fleet.endpoint(&id).ok_or_else(|| AppError::new(ErrorCode::UnknownEndpoint, format!("no endpoint {id}")))?;
    if ep.revoked.load(Ordering::Relaxed) != 0 {
        return Err(AppError::new(ErrorCode::EndpointRevoked, format!("endpoint {id} was revoked")));
    }
    Ok(ep)
}

/// `POST /v1/fleet/enroll-tokens` (admin): a new enrollment token, shown once.
pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewEnrollToken>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, Permission::Admin)?;
    let req = json_body(body)?;
    labels_ok(&req.labels)?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let bytes: [u8; 32] = rand::random();
        let token = fleet::hex_encode(&bytes);
        let hash = format::Digest::of(token.as_bytes()).to_hex();
        let now = cache::clock::now();
        let info = EnrollToken {
            id: hash[..12].to_string(),
            uses_left: req.uses,
            expires: req.lifetime_seconds.map(|s| now + s.min(100 * 365 * 86400) as i64),
            labels: req.labels,
            created_by: actor.name.clone(),
            created: now,
        };
        let uses = info.uses_left.map_or("unlimited uses".to_string(), |n| format!("{n} uses"));
        let expires = info.expires.map_or("no expiry".to_string(), |e| format!("expires at {e}"));
        let labels: Vec<String> = info.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let detail = format!("{uses}, {expires}, labels {}", labels.join(","));
        let entry = AuditEntry::new(&actor.name, "enroll-token create", format!("enroll-token {}", info.id), detail);
        st.fleet.put_token(&hash, StoredToken { info: info.clone() }, entry).map_err(meta_err)?;
        Ok((StatusCode::CREATED, Json(CreatedEnrollToken { info, token })).into_response())
    })
    .await
}

/// `GET /v1/fleet/enroll-tokens` (admin).
pub async fn list_tokens(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<EnrollTokens>, AppError> {
    state.authorize(&headers, Permission::Admin)?;
    let mut tokens: Vec<EnrollToken> = state.fleet.inner.read().unwrap().tokens.values().map(|t| t.info.clone()).collect();
    tokens.sort_by_key(|t| t.created);
    Ok(Json(EnrollTokens { tokens }))
}

/// `POST /v1/fleet/enroll`: an endpoint registers its public key with an enrollment token.
pub async fn enroll(State(state): State<AppState>, body: Result<Json<Enroll>, JsonRejection>) -> Result<Response, AppError> {
    let req = json_body(body)?;
    if let Some(f) = req.facts.bad_field() {
        return Err(bad_report(format!("fact {f} has control characters or is too long")));
    }
    labels_ok(&req.labels)?;
    let key_bytes: [u8; 32] = fleet::hex_decode(&req.public_key)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AppError::new(ErrorCode::BadRequest, "public_key must be 32 bytes of ed25519 key in hex"))?;
    let key = trust::keys::PublicKey::from_raw(&key_bytes)
        .ok_or_else(|| AppError::new(ErrorCode::BadRequest, "public_key is not an ed25519 key"))?;
    if !key.verifies(&api::fleet::enroll_message(&req.token, &req.public_key), &req.signature) {
        return Err(AppError::new(ErrorCode::BadSignature, "the signature does not verify with public_key"));
    }
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let now = cache::clock::now();
        let hash = format::Digest::of(req.token.as_bytes()).to_hex();
        let token = st.fleet.inner.read().unwrap().tokens.get(&hash).cloned();
        let Some(mut token) = token else {
            return Err(AppError::new(ErrorCode::BadEnrollToken, "the enrollment token is unknown"));
        };
        if token.info.expires.is_some_and(|e| e < now) {
            return Err(AppError::new(ErrorCode::BadEnrollToken, format!("enrollment token {} has expired", token.info.id)));
        }
        if token.info.uses_left == Some(0) {
            return Err(AppError::new(ErrorCode::BadEnrollToken, format!("enrollment token {} is used up", token.info.id)));
        }
        let id = EndpointId::of_key(&key_bytes);
        let old = st.fleet.endpoint(&id).map(|e| e.record());
        if let Some(r) = old.as_ref().filter(|r| r.revoked.is_some()) {
            return Err(AppError::new(ErrorCode::EndpointRevoked, format!("endpoint {} was revoked: enroll with a new key", r.id)));
        }
        token.info.uses_left = token.info.uses_left.map(|n| n - 1);
        let record = match old {
            Some(mut r) => {
                r.facts = req.facts;
                r.own_labels = req.labels;
                r.token_labels = token.info.labels.clone();
                r
            }
            None => Record {
                own_labels: req.labels,
                token_labels: token.info.labels.clone(),
                ..Record::new(id.clone(), fleet::hex_encode(&key_bytes), req.facts, now)
            },
        };
        let labels: Vec<String> = record.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let detail = format!("host {}, labels {}", record.facts.hostname, labels.join(","));
        let entry = AuditEntry::new(&format!("enroll-token {}", token.info.id), "endpoint enroll", format!("endpoint {id}"), detail);
        st.fleet.put_enrolled(record, Some((&hash, &token)), entry).map_err(meta_err)?;
        st.fleet.changed();
        tracing::info!(endpoint = %id, token = %token.info.id, "endpoint enrolled");
        Ok((StatusCode::CREATED, Json(Enrolled { endpoint: id })).into_response())
    })
    .await
}

/// `POST /v1/fleet/session`: a session token for an endpoint that proves it holds its key.
pub async fn session(State(state): State<AppState>, body: Result<Json<SessionRequest>, JsonRejection>) -> Result<Json<Session>, AppError> {
    let req = json_body(body)?;
    let now = cache::clock::now();
    let ep = state.fleet.endpoint(&req.endpoint).ok_or_else(|| AppError::new(ErrorCode::UnknownEndpoint, format!("no endpoint {}", req.endpoint)))?;
    if ep.revoked.load(Ordering::Relaxed) != 0 {
        return Err(AppError::new(ErrorCode::EndpointRevoked, format!("endpoint {} was revoked", ep.id)));
    }
    if (req.time - now).abs() > 300 {
        return Err(AppError::new(ErrorCode::BadRequest, format!("time {} is more than 5 minutes from the server's {now}", req.time)));
    }
    if !ep.key.verifies(&api::fleet::session_message(&ep.id, req.time), &req.signature) {
        return Err(AppError::new(ErrorCode::BadSignature, "the signature does not verify with the endpoint's key"));
    }
    let expires = now + state.fleet.settings.session_seconds;
    Ok(Json(Session { token: state.fleet.session_token(&ep.id, expires), expires }))
}

/// Counts a check-in in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /v1/fleet/desired`: the check-in. Records the endpoint as seen (memory only) and the
/// generations of the `x-imaged-actual` header (written only when they changed); answers the
/// desired state with an `ETag`, or 304 to a matching `If-None-Match`. 503 with `Retry-After`
/// when more than `fleet_max_checkins` are being answered.
pub async fn desired(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let n = state.fleet.in_flight.fetch_add(1, Ordering::Relaxed);
    let _count = InFlight(&state.fleet.in_flight);
    if n >= state.config.fleet_max_checkins as i64 {
        let retry = (state.fleet.settings.interval / 10).clamp(1, 60);
        let mut resp = AppError::new(ErrorCode::Internal, "the server is busy: check in later").into_response();
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry));
        return Ok(resp);
    }
    let ep = endpoint(&state, &headers)?;
    let now = cache::clock::now();
    if let Some(h) = headers.get(api::fleet::ACTUAL_HEADER) {
        let actual = h.to_str().ok().and_then(api::fleet::parse_actual).ok_or_else(|| {
            bad_report(format!("{} must be PATH=IMAGE@N pairs separated by spaces", api::fleet::ACTUAL_HEADER))
        })?;
        let differs = fleet::actual_mounts(&ep.record.lock().unwrap().mounts, &actual).is_some();
        if differs {
            let _turn = ep.write_turn.lock().await;
            let mut r = ep.record();
            fleet::apply_actual(&mut r, &actual);
            r.last_seen = Some(now);
            if !state.fleet.commit(&ep, r, &[]).await {
                return Err(AppError::internal("recording a check-in", "the write failed"));
            }
        }
    }
    state.fleet.seen(&ep, now);
    let served = served(&state, &ep);
    let etag = HeaderValue::from_str(&served.etag).expect("hex");
    let matches = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == served.etag.as_bytes());
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        served.body.clone(),
    )
        .into_response())
}

/// Counts an open event stream while it lives.
struct StreamGuard(Arc<fleet::Fleet>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /v1/fleet/events`: the push hint. A `check` event at once and whenever something that
/// can change desired states changes (a channel move, a group, labels); a comment every 15 s
/// keeps proxies from closing it. Ends when the endpoint is revoked.
pub async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let ep = endpoint(&state, &headers)?;
    let rx = state.fleet.subscribe();
    state.fleet.streams.fetch_add(1, Ordering::Relaxed);
    let guard = StreamGuard(state.fleet.clone());
    let first = SseEvent::default().event("check").data("connected");
    let rest = futures::stream::unfold((rx, guard, ep), |(mut rx, guard, ep)| async move {
        loop {
            match rx.recv().await {
                Ok(fleet::CLOSING) => return None,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if ep.revoked.load(Ordering::Relaxed) != 0 {
                        return None;
                    }
                    let ev = SseEvent::default().event("check").data("changed");
                    return Some((Ok::<_, Infallible>(ev), (rx, guard, ep)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::once(async move { Ok::<_, Infallible>(first) }), rest);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keepalive")).into_response())
}

/// `POST /v1/fleet/reports`: a batch of events and the mounts now. Events at or below the
/// highest sequence number stored are ignored as duplicates; the rest are stored durably before
/// the answer. 413 `too_many_events`, 400 `bad_report`.
pub async fn reports(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<ReportBatch>, JsonRejection>) -> Result<Json<ReportAck>, AppError> {
    let ep = endpoint(&state, &headers)?;
    let batch = json_body(body)?;
    match fleet::check_report(&batch) {
        Ok(()) => {}
        Err(fleet::ReportError::TooMany(n)) => {
            return Err(AppError::new(ErrorCode::TooManyEvents, format!("{n} events in one batch; at most {}", api::fleet::MAX_EVENTS)))
        }
        Err(fleet::ReportError::Bad(why)) => return Err(bad_report(why)),
    }
    let now = cache::clock::now();
    let _turn = ep.write_turn.lock().await;
    let mut r = ep.record();
    let before = r.clone();
    let (events, duplicates) = fleet::apply_report(&mut r, &batch);
    let stored = events.len() as u32;
    if r != before {
        r.last_seen = Some(now);
        if !state.fleet.commit(&ep, r, &events).await {
            return Err(AppError::internal("storing a report", "the write failed"));
        }
    }
    state.fleet.seen(&ep, now);
    let acked = ep.record.lock().unwrap().last_seq;
    Ok(Json(ReportAck { acked, stored, duplicates }))
}

/// The query of `GET /v1/fleet/endpoints`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// Only members of this group.
    pub group: Option<GroupName>,
    /// Only endpoints with these labels (`k=v`, repeatable).
    #[serde(default)]
    pub label: Vec<String>,
    /// Only endpoints no mount of which runs this generation.
    pub not_on: Option<String>,
}

/// `GET /v1/fleet/endpoints?group=G&label=k=v&not_on=IMAGE@N` (read).
pub async fn list_endpoints(State(state): State<AppState>, headers: HeaderMap, uri: axum::http::Uri) -> Result<Json<Endpoints>, AppError> {
    state.require_read(&headers)?;
    let q = parse_list_query(uri.query().unwrap_or(""))?;
    let labels = if q.label.is_empty() { None } else { Some(api::fleet::Selector::parse(&q.label.join(",")).map_err(|e| AppError::new(ErrorCode::BadSelector, e.to_string()))?) };
    let st = state.clone();
    blocking(move || {
        let now = cache::clock::now();
        let mut out = Vec::new();
        for ep in st.fleet.endpoints() {
            let s = st.fleet.summary(&ep, now);
            if q.group.as_ref().is_some_and(|g| !s.groups.contains(g)) {
                continue;
            }
            if labels.as_ref().is_some_and(|sel| !sel.matches(&s.labels)) {
                continue;
            }
            if q.not_on.as_ref().is_some_and(|g| s.mounts.iter().any(|m| m.current.as_ref() == Some(g))) {
                continue;
            }
            out.push(s);
        }
        Ok(Json(Endpoints { endpoints: out }))
    })
    .await
}

/// Parses the list query by hand: `label` repeats, which a derived query extractor refuses.
fn parse_list_query(q: &str) -> Result<ListQuery, AppError> {
    let mut out = ListQuery::default();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| AppError::new(ErrorCode::BadRequest, format!("bad escape in {k}")))?;
        match k {
            "group" => out.group = Some(GroupName::new(&v).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))?),
            "label" => out.label.push(v),
            "not_on" => out.not_on = Some(v),
            _ => return Err(AppError::new(ErrorCode::BadRequest, format!("unknown query parameter {k:?}"))),
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                out.push(u8::from_str_radix(std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn find(state: &Shared, id: &str) -> Result<Arc<Endpoint>, AppError> {
    let id = EndpointId::new(id).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))?;
    state.fleet.endpoint(&id).ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no endpoint {id}")))
}

/// `GET /v1/fleet/endpoints/{id}` (read): facts, labels, groups, desired vs actual, events.
pub async fn show_endpoint(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<EndpointDetail>, AppError> {
    state.require_read(&headers)?;
    let ep = find(&state, &id)?;
    let now = cache::clock::now();
    let summary = state.fleet.summary(&ep, now);
    let r = ep.record();
    let desired = served(&state, &ep).desired;
    let mut paths: Vec<String> = desired.mounts.iter().map(|m| m.mount.path.clone()).chain(r.mounts.iter().map(|m| m.path.clone())).collect();
    paths.sort();
    paths.dedup();
    let mounts = paths
        .into_iter()
        .map(|p| MountView {
            desired: desired.mounts.iter().find(|m| m.mount.path == p).cloned(),
            actual: r.mounts.iter().find(|m| m.path == p).cloned(),
            path: p,
        })
        .collect();
    Ok(Json(EndpointDetail {
        summary,
        facts: r.facts.clone(),
        own_labels: r.own_labels.clone(),
        operator_labels: r.operator_labels.clone(),
        mounts,
        conflicts: desired.conflicts.clone(),
        cache: r.cache.clone(),
        enrolled: r.enrolled,
        events: state.fleet.recent_events(&ep.id).map_err(|e| AppError::internal("reading an endpoint's events", e))?,
    }))
}

/// Changes one endpoint's record as `change` says (None: nothing to change), with its audit
/// entry, serialised with the endpoint's other writes.
pub(crate) async fn edit_endpoint(
    state: AppState,
    id: &str,
    change: impl FnOnce(&mut Record) -> Result<Option<AuditEntry>, AppError> + Send + 'static,
) -> Result<Json<api::fleet::EndpointSummary>, AppError> {
    let ep = find(&state, id)?;
    let _guard = state.channel_writes.lock().await;
    let _turn = ep.write_turn.lock().await;
    let st = state.clone();
    let ep = ep.clone();
    blocking(move || {
        let mut r = ep.record();
        if let Some(entry) = change(&mut r)? {
            st.fleet.put_record(&ep, r, entry).map_err(meta_err)?;
        }
        Ok(Json(st.fleet.summary(&ep, cache::clock::now())))
    })
    .await
}

/// `DELETE /v1/fleet/endpoints/{id}` (admin): revokes the endpoint; its sessions and event
/// stream stop working at once.
pub async fn revoke_endpoint(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<api::fleet::EndpointSummary>, AppError> {
    let actor = state.authorize(&headers, Permission::Admin)?;
    edit_endpoint(state, &id, move |r| {
        if r.revoked.is_some() {
            return Ok(None);
        }
        r.revoked = Some(cache::clock::now());
        tracing::info!(endpoint = %r.id, by = %actor.name, "endpoint revoked");
        Ok(Some(AuditEntry::new(&actor.name, "endpoint revoke", format!("endpoint {}", r.id), format!("host {}", r.facts.hostname))))
    })
    .await
}

/// `PUT /v1/fleet/endpoints/{id}/labels` (publish): operators' labels.
pub async fn label_endpoint(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<LabelChange>, JsonRejection>,
) -> Result<Json<api::fleet::EndpointSummary>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let change = json_body(body)?;
    labels_ok(&change.set)?;
    edit_endpoint(state, &id, move |r| {
        let before = r.operator_labels.clone();
        for k in &change.remove {
            r.operator_labels.remove(k);
        }
        r.operator_labels.extend(change.set);
        if r.operator_labels.len() > api::fleet::MAX_LABELS {
            return Err(bad_report(format!("more than {} labels", api::fleet::MAX_LABELS)));
        }
        if r.operator_labels == before {
            return Ok(None);
        }
        let show = |l: &api::fleet::Labels| l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let entry = AuditEntry::new(&actor.name, "endpoint label", format!("endpoint {}", r.id), "operators' labels")
            .before(show(&before))
            .after(show(&r.operator_labels));
        Ok(Some(entry))
    })
    .await
}

pub(crate) fn summary_of(st: &Shared, g: &LiveGroup) -> GroupSummary {
    let endpoints = st
        .fleet
        .endpoints()
        .into_iter()
        .filter(|ep| ep.revoked.load(Ordering::Relaxed) == 0 && g.contains(&ep.id, &ep.record.lock().unwrap().labels()))
        .map(|ep| ep.id.clone())
        .collect();
    GroupSummary { group: g.group.clone(), endpoints }
}

/// `GET /v1/fleet/groups` (read).
pub async fn list_groups(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Groups>, AppError> {
    state.require_read(&headers)?;
    let groups: Vec<LiveGroup> = state.fleet.inner.read().unwrap().groups.values().cloned().collect();
    Ok(Json(Groups { groups: groups.iter().map(|g| summary_of(&state, g)).collect() }))
}

pub(crate) fn group_name(name: &str) -> Result<GroupName, AppError> {
    GroupName::new(name).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))
}

/// `GET /v1/fleet/groups/{name}` (read).
pub async fn show_group(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Result<Json<GroupSummary>, AppError> {
    state.require_read(&headers)?;
    let name = group_name(&name)?;
    let g = state.fleet.inner.read().unwrap().groups.get(&name).cloned();
    let g = g.ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no group {name}")))?;
    Ok(Json(summary_of(&state, &g)))
}

async fn write_group(state: AppState, headers: HeaderMap, group: Group, create: bool) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    if let Some(p) = group.namespace.problem() {
        return Err(AppError::new(ErrorCode::BadRequest, format!("namespace of {}: {p}", group.name)));
    }
    if let Some(Err(e)) = group.window.as_ref().map(api::window::Schedule::parse) {
        return Err(AppError::new(ErrorCode::BadRequest, format!("group {}: {e}", group.name)));
    }
    let live = LiveGroup::new(group).map_err(|e| AppError::new(ErrorCode::BadSelector, e.to_string()))?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let mut live = live;
        let old = st.fleet.inner.read().unwrap().groups.get(&live.group.name).map(|g| g.group.clone());
        // The pin is changed only through its own route.
        live.group.pin = old.as_ref().and_then(|g| g.pin.clone());
        if create && old.is_some() {
            return Err(AppError::new(ErrorCode::GroupExists, format!("a group named {} exists", live.group.name)));
        }
        let after = String::from_utf8(fleet::json(&live.group)).unwrap_or_default();
        let before = old.map(|g| String::from_utf8(fleet::json(&g)).unwrap_or_default()).unwrap_or_default();
        let action = if before.is_empty() { "group create" } else { "group replace" };
        let mut entry = AuditEntry::new(&actor.name, action, format!("group {}", live.group.name), "").after(after);
        if !before.is_empty() {
            entry = entry.before(before);
        }
        st.fleet.put_group(live.clone(), entry).map_err(meta_err)?;
        let status = if create { StatusCode::CREATED } else { StatusCode::OK };
        Ok((status, Json(summary_of(&st, &live))).into_response())
    })
    .await
}

/// `POST /v1/fleet/groups` (publish): a new group; 409 `group_exists`.
pub async fn create_group(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<Group>, JsonRejection>) -> Result<Response, AppError> {
    let group = json_body(body)?;
    write_group(state, headers, group, true).await
}

/// `PUT /v1/fleet/groups/{name}` (publish): creates or replaces the group.
pub async fn put_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Group>, JsonRejection>,
) -> Result<Response, AppError> {
    let group = json_body(body)?;
    if group.name.as_str() != name {
        return Err(AppError::new(ErrorCode::BadRequest, format!("the body names group {}, the path {name}", group.name)));
    }
    write_group(state, headers, group, false).await
}

/// `DELETE /v1/fleet/groups/{name}` (publish).
pub async fn remove_group(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Result<Json<GroupSummary>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let name = group_name(&name)?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let Some(g) = st.fleet.inner.read().unwrap().groups.get(&name).cloned() else {
            return Err(AppError::new(ErrorCode::NotFound, format!("no group {name}")));
        };
        let summary = summary_of(&st, &g);
        let entry = AuditEntry::new(&actor.name, "group remove", format!("group {name}"), "").before(String::from_utf8(fleet::json(&g.group)).unwrap_or_default());
        st.fleet.remove_group(&name, entry).map_err(meta_err)?;
        Ok(Json(summary))
    })
    .await
}

/// The query of `GET /v1/fleet/compliance`.
#[derive(Debug, serde::Deserialize)]
pub struct ComplianceQuery {
    /// A channel or `IMAGE@N`.
    pub target: String,
}

/// `GET /v1/fleet/compliance?target=CHANNEL|IMAGE@N` (read): how many endpoints run it and,
/// for each that does not, why, from what it reported.
pub async fn compliance(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ComplianceQuery>, QueryRejection>,
) -> Result<Json<Compliance>, AppError> {
    state.require_read(&headers)?;
    let Query(q) = query.map_err(|e| AppError::new(ErrorCode::BadRequest, e.body_text()))?;
    let st = state.clone();
    blocking(move || {
        let (generation, channel) = if api::fleet::parse_generation(&q.target).is_some() {
            (q.target.clone(), None)
        } else {
            let c = ChannelName::new(&q.target).map_err(|e| AppError::new(ErrorCode::BadChannelName, e.to_string()))?;
            let g = channel_generation(&st, &c).ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no channel {c}")))?;
            (g, Some(c))
        };
        let now = cache::clock::now();
        let offline_after = st.fleet.settings.offline_after;
        let mut out = Compliance { target: q.target, generation: generation.clone(), total: 0, on: 0, counts: BTreeMap::new(), stragglers: Vec::new() };
        for ep in st.fleet.endpoints() {
            if ep.revoked.load(Ordering::Relaxed) != 0 {
                continue;
            }
            out.total += 1;
            let desired: Arc<Desired> = served(&st, &ep).desired;
            let r = ep.record.lock().unwrap();
            let o = Observed { record: &r, last_seen: ep.seen(), desired: &desired };
            match fleet::reason(&o, &generation, channel.as_ref(), now, offline_after) {
                None => out.on += 1,
                Some(reason) => {
                    *out.counts.entry(reason.name().to_string()).or_default() += 1;
                    out.stragglers.push(Straggler { endpoint: ep.id.clone(), hostname: r.facts.hostname.clone(), running: r.mounts.clone(), reason });
                }
            }
        }
        Ok(Json(out))
    })
    .await
}
