//! The promotion gate over HTTP: channel policies, signed test evidence and approvals of a
//! generation, the gate report, and `check`, which channel set and promote call before they
//! move a channel. The decision itself is `gate::evaluate`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use api::gate::{Approval, ChannelGate, ChannelPolicy, Evidence, GateRefusal, GateReport, Recorded, SetPolicy};
use api::tuf::TufKey;
use api::ErrorCode;
use format::{ChannelName, Classification, Digest, ImageName, Manifest};

use crate::channels::check_name;
use crate::error::AppError;
use crate::gate::{self, Verdict};
use crate::meta::AuditEntry;
use crate::state::{blocking, AppState, Shared};

fn meta_err(e: crate::meta::MetaError) -> AppError {
    AppError::internal("reading metadata", e)
}

/// `PUT /v1/policies/{channel}` (token): sets the channel's policy. Every key must be an
/// ed25519 key; an absent emergency rule gets `api::gate::default_emergency`.
pub async fn put_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Json<SetPolicy>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Admin)?;
    let channel = check_name(&name, uri.path())?;
    let Json(body) = body?;
    for key in body.approvers.iter().chain(&body.testers) {
        if gate::public_key(key).is_none() {
            return Err(AppError::new(ErrorCode::BadRequest, format!("not an ed25519 key: {:?}", key.keyval.public)));
        }
    }
    let emergency = body.emergency.unwrap_or_else(|| api::gate::default_emergency(&body.normal));
    let policy = ChannelPolicy {
        channel: channel.clone(),
        normal: body.normal,
        emergency,
        approvers: dedup(body.approvers),
        testers: dedup(body.testers),
        updated: cache::clock::now(),
    };
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        // Before and after are the rules the channel had and has (absent before a first policy).
        let old = st.meta.policy(channel.as_str()).map_err(meta_err)?;
        let mut audit = entry(actor.name.clone(), "policy", channel.to_string(), String::new()).after(rules(&policy));
        if let Some(old) = old {
            audit = audit.before(rules(&old));
        }
        st.meta.put_policy(&policy, audit).map_err(|e| AppError::internal("recording the policy", e))?;
        tracing::info!(channel = %policy.channel, "gate policy set");
        Ok(Json(policy).into_response())
    })
    .await
}

/// A policy's rules in one line, for its audit entry.
fn rules(policy: &ChannelPolicy) -> String {
    format!(
        "normal: tests {:?}, {} approvals; emergency: tests {:?}, {} approvals; {} approvers, {} testers",
        policy.normal.tests.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        policy.normal.approvals,
        policy.emergency.tests.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        policy.emergency.approvals,
        policy.approvers.len(),
        policy.testers.len()
    )
}

/// The same key listed twice is listed once.
fn dedup(keys: Vec<TufKey>) -> Vec<TufKey> {
    let mut out: Vec<TufKey> = Vec::new();
    for k in keys {
        let pk = gate::public_key(&k);
        if !out.iter().any(|o| gate::public_key(o) == pk) {
            out.push(k);
        }
    }
    out
}

fn entry(actor: String, action: &str, subject: String, detail: String) -> AuditEntry {
    AuditEntry::new(&actor, action, subject, detail)
}

/// `GET /v1/policies/{channel}`.
pub async fn get_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let channel = check_name(&name, uri.path())?;
    let st = state.clone();
    blocking(move || {
        let p = st.meta.policy(channel.as_str()).map_err(meta_err)?;
        let p = p.ok_or_else(|| AppError::not_found(format!("channel {channel} has no policy")))?;
        Ok(Json(p).into_response())
    })
    .await
}

/// The manifest digest of a published `image@number`, or 404 `unknown_generation`.
fn published(st: &Shared, image: &str, number: u64) -> Result<(ImageName, Digest), AppError> {
    let image = ImageName::new(image).map_err(|e| AppError::new(ErrorCode::BadName, e.to_string()))?;
    let d = st.meta.generation(image.as_str(), number).map_err(meta_err)?;
    let d = d.ok_or_else(|| AppError::new(ErrorCode::UnknownGeneration, format!("no published generation {image}@{number}")))?;
    Ok((image, d))
}

/// The checks every signed statement passes on receipt: about this generation, signed by
/// the key it names, that key listed by some channel's policy in the role `role` picks.
fn check_signed<S>(
    st: &Shared,
    label: &str,
    manifest: &Digest,
    about: &Digest,
    signed: &api::gate::Signed<S>,
    message: &[u8],
    role: fn(&ChannelPolicy) -> &[TufKey],
    what: &str,
) -> Result<String, AppError> {
    if about != manifest {
        return Err(AppError::new(ErrorCode::BadSignature, format!("the statement is about manifest {about}, {label} is {manifest}")));
    }
    let key = gate::signer(signed, message)
        .ok_or_else(|| AppError::new(ErrorCode::BadSignature, format!("the {what}'s signature does not verify with the key it names")))?;
    let policies = st.meta.policies().map_err(meta_err)?;
    if !policies.iter().any(|p| gate::listed(&key, role(p))) {
        return Err(AppError::new(
            ErrorCode::SignerNotListed,
            format!("key {} is not listed as a{} by any channel policy", key.key_id(), if what == "approval" { "n approver" } else { " tester" }),
        ));
    }
    Ok(key.key_id().0)
}

/// `POST /v1/generations/{image}/{number}/evidence` (token): records a signed test run. The
/// log object must be on the server already.
pub async fn post_evidence(
    State(state): State<AppState>,
    Path((image, number)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Result<Json<Evidence>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Attest)?;
    let Json(evidence) = body?;
    let _guard = state.channel_writes.lock().await;
    let _gc = state.gc_lock.read().await;
    let st = state.clone();
    blocking(move || {
        let (image, manifest) = published(&st, &image, number)?;
        let label = format!("{image}@{number}");
        let s = &evidence.statement;
        let keyid = check_signed(&st, &label, &manifest, &s.manifest, &evidence, &s.signed_bytes(), |p| &p.testers, "test statement")?;
        if !st.store.contains(&s.log) {
            let mut e = AppError::new(ErrorCode::MissingObjects, format!("the log object {} is not on the server; upload it first", s.log));
            e.0.missing_count = Some(1);
            e.0.missing = Some(vec![s.log]);
            return Err(e);
        }
        let detail = format!("{} {} exit {} in {} ms", s.test, s.outcome.as_str(), s.exit, s.duration_ms);
        let audit = entry(format!("{} key {keyid}", actor.name), "evidence", label.clone(), detail);
        st.meta.add_evidence(&manifest, &evidence, audit).map_err(|e| AppError::internal("recording the evidence", e))?;
        tracing::info!(generation = %label, test = %s.test, outcome = s.outcome.as_str(), keyid = %keyid, "test evidence recorded");
        Ok((StatusCode::CREATED, Json(Recorded { generation: label, keyid, received: cache::clock::now() })).into_response())
    })
    .await
}

/// `POST /v1/generations/{image}/{number}/approvals` (token): records a signed approval; a
/// key's newer approval replaces its older one.
pub async fn post_approval(
    State(state): State<AppState>,
    Path((image, number)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Result<Json<Approval>, JsonRejection>,
) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, api::users::Permission::Approve)?;
    let Json(approval) = body?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let (image, manifest) = published(&st, &image, number)?;
        let label = format!("{image}@{number}");
        let s = &approval.statement;
        let keyid = check_signed(&st, &label, &manifest, &s.manifest, &approval, &s.signed_bytes(), |p| &p.approvers, "approval")?;
        let audit = entry(format!("{} key {keyid}", actor.name), "approval", label.clone(), s.comment.clone());
        st.meta.put_approval(&manifest, &keyid, &approval, audit).map_err(|e| AppError::internal("recording the approval", e))?;
        tracing::info!(generation = %label, keyid = %keyid, "approval recorded");
        Ok((StatusCode::CREATED, Json(Recorded { generation: label, keyid, received: cache::clock::now() })).into_response())
    })
    .await
}

/// The classification of the generation `manifest` (its change record's; normal without).
fn classify(st: &Shared, manifest: &Digest) -> Result<Classification, AppError> {
    let bytes = st.store.get(manifest).map_err(|e| AppError::internal("reading a manifest", e))?;
    let m = Manifest::decode(&bytes).map_err(|e| AppError::internal("parsing a manifest", e))?;
    Ok(gate::classification(&m))
}

/// `GET /v1/generations/{image}/{number}/gate`: evidence, approvals and every channel's verdict.
pub async fn report(
    State(state): State<AppState>,
    Path((image, number)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.require_read(&headers)?;
    let st = state.clone();
    blocking(move || {
        let (image, manifest) = published(&st, &image, number)?;
        let classification = classify(&st, &manifest)?;
        let evidence = st.meta.evidence(&manifest).map_err(meta_err)?;
        let approvals = st.meta.approvals(&manifest).map_err(meta_err)?;
        let channels = st
            .meta
            .policies()
            .map_err(meta_err)?
            .into_iter()
            .map(|p| {
                let missing = gate::evaluate(&p, classification, &manifest, &evidence, &approvals).missing();
                ChannelGate { channel: p.channel.clone(), rule: p.rule(classification).clone(), met: missing.is_empty(), missing }
            })
            .collect();
        let generation = format!("{image}@{number}");
        Ok(Json(GateReport { generation, manifest, classification, evidence, approvals, channels }).into_response())
    })
    .await
}

/// Refuses with 409 `gate_not_met` unless `generation` (`IMAGE@N`, manifest `manifest`)
/// meets `channel`'s policy; a channel without a policy lets anything through. Blocking; the
/// caller holds `channel_writes`, so no evidence lands between the check and the move.
pub fn check(st: &Shared, channel: &ChannelName, generation: &str, manifest: &Digest) -> Result<(), AppError> {
    let Some(policy) = st.meta.policy(channel.as_str()).map_err(meta_err)? else { return Ok(()) };
    let classification = classify(st, manifest)?;
    let evidence = st.meta.evidence(manifest).map_err(meta_err)?;
    let approvals = st.meta.approvals(manifest).map_err(meta_err)?;
    match gate::evaluate(&policy, classification, manifest, &evidence, &approvals) {
        Verdict::Met => Ok(()),
        Verdict::Missing(missing) => {
            let tests: Vec<&str> = missing.tests.iter().map(|t| t.as_str()).collect();
            let mut e = AppError::new(
                ErrorCode::GateNotMet,
                format!(
                    "{generation} ({}) does not meet {channel}'s policy: missing tests {tests:?}, {} more approval(s)",
                    classification.as_str(),
                    missing.approvals
                ),
            );
            e.0.gate = Some(GateRefusal { channel: channel.clone(), generation: generation.to_string(), classification, missing });
            Err(e)
        }
    }
}
