//! The rollout routes (`/v1/rollouts`, `/v1/withdraw`, endpoint pins and holds) and the tick
//! that advances running rollouts: every second it derives each running rollout's counts from
//! what its endpoints reported, passes a stage, halts on the brake, or completes by moving the
//! channel. Every transition is written with its audit entry and tells the fleet.

use std::time::Duration;

use api::channels::ChannelAction;
use api::rollouts::{Abort, Hold, Pin, Plan, PlanSpec, Rollout, RolloutId, RolloutState, Rollouts, StartRollout, Withdraw, Withdrawn};
use api::users::Permission;
use api::ErrorCode;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::channels::{move_channel, Why};
use crate::error::AppError;
use crate::meta::AuditEntry;
use crate::rollouts::{self, decision, Member, Step, WithdrawnRecord};
use crate::state::{blocking, AppState, Shared};

fn meta_err(e: crate::meta::MetaError) -> AppError {
    AppError::internal("writing rollouts", e)
}

fn parse_id(id: &str) -> Result<RolloutId, AppError> {
    id.parse().map_err(|e: api::fleet::BadId| AppError::new(ErrorCode::BadName, e.to_string()))
}

fn find(st: &Shared, id: &str) -> Result<Rollout, AppError> {
    let id = parse_id(id)?;
    st.rollouts.get(id).ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no rollout {id}")))
}

fn audit(actor: &str, action: &str, r: &Rollout, detail: impl Into<String>) -> AuditEntry {
    AuditEntry::new(actor, action, format!("rollout {} ({} -> {})", r.id, r.channel, r.generation), detail)
}

/// The plan a start names.
fn plan_of(spec: PlanSpec) -> Result<Plan, AppError> {
    let plan = match spec {
        PlanSpec::Named(n) if n == "normal" => Plan::normal(),
        PlanSpec::Named(n) if n == "emergency" => Plan::emergency(),
        PlanSpec::Named(n) => return Err(AppError::new(ErrorCode::BadPlan, format!("no built-in plan {n:?}: normal, emergency, or give the plan"))),
        PlanSpec::Given(p) => p,
    };
    if let Some(p) = plan.problem() {
        return Err(AppError::new(ErrorCode::BadPlan, format!("plan {}: {p}", plan.name)));
    }
    Ok(plan)
}

/// The activation policy in a generation's change record, if it has one.
fn activation(st: &Shared, manifest: &format::Digest) -> Option<String> {
    let bytes = st.store.get(manifest).ok()?;
    let m = format::Manifest::decode(&bytes).ok()?;
    let change = m.change()?.ok()?;
    Some(change.activation.to_arg())
}

/// `POST /v1/rollouts` (publish): starts a rollout of a channel to a generation. Waits for
/// approval when the channel's policy is not met yet (`POST .../approve` once it is).
pub async fn start(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<StartRollout>, JsonRejection>) -> Result<Response, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let Json(req) = body?;
    let plan = plan_of(req.plan.clone())?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        if st.rollouts.withdrawn(&req.generation).is_some() {
            return Err(AppError::new(ErrorCode::Withdrawn, format!("{} was withdrawn", req.generation)));
        }
        if let Some(r) = st.rollouts.active_on(&req.channel) {
            return Err(AppError::new(ErrorCode::RolloutActive, format!("rollout {} of {} is under way", r.id, r.channel)));
        }
        let from = st.meta.channel(req.channel.as_str()).map_err(meta_err)?;
        let from = from.ok_or_else(|| AppError::new(ErrorCode::NotFound, format!("no channel {}", req.channel)))?;
        let (generation, manifest) = crate::channels::resolve(&st, &req.generation)?;
        if st.tuf.initialised() {
            let (image, n) = api::fleet::parse_generation(&generation).map(|(i, n)| (i.to_string(), n)).unwrap_or_default();
            st.tuf.signed_generation(&image, n, &manifest.to_hex())?;
        }
        let gate = crate::gate_api::check(&st, &req.channel, &generation, &manifest);
        let state = match &gate {
            Ok(()) => RolloutState::Running,
            Err(e) if e.0.error == ErrorCode::GateNotMet => RolloutState::AwaitingApproval,
            Err(_) => return gate.map(|_| unreachable!()),
        };
        let now = cache::clock::now();
        let mut r = Rollout {
            id: st.rollouts.next_id(),
            channel: req.channel,
            generation,
            from: Some(from.generation),
            plan,
            state,
            stage: 0,
            stage_started: now,
            stage_times: vec![now],
            counts: Default::default(),
            started_by: actor.name.clone(),
            started: now,
            reason: req.reason.clone(),
            log: vec![],
            acknowledged: vec![],
            activation: activation(&st, &manifest),
        };
        let text = match &gate {
            Ok(()) => format!("started with plan {} ({} stages)", r.plan.name, r.plan.stages.len()),
            Err(e) => format!("waiting for approval: {}", e.0.message),
        };
        r.log.push(decision(&actor.name, text.clone()));
        let entry = audit(&actor.name, "rollout start", &r, text).reason(req.reason.unwrap_or_default());
        st.rollouts.put(r.clone(), entry).map_err(meta_err)?;
        st.fleet.changed();
        tracing::info!(rollout = %r.id, channel = %r.channel, generation = %r.generation, "rollout started");
        Ok((StatusCode::CREATED, Json(r)).into_response())
    })
    .await
}

/// `GET /v1/rollouts` (read).
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Rollouts>, AppError> {
    state.require_read(&headers)?;
    Ok(Json(Rollouts { rollouts: state.rollouts.list() }))
}

/// `GET /v1/rollouts/{id}` (read).
pub async fn show(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Result<Json<Rollout>, AppError> {
    state.require_read(&headers)?;
    Ok(Json(find(&state, &id)?))
}

/// `POST /v1/rollouts/{id}/{action}` (publish): `pause`, `resume` (acknowledging the failures
/// seen), `abort` (`{"revert": bool}`), `approve` (once the channel's policy is met).
pub async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<Abort>>,
) -> Result<Json<Rollout>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let mut r = find(&st, &id)?;
        let wrong = |r: &Rollout| AppError::new(ErrorCode::RolloutState, format!("rollout {} is {}: cannot {action}", r.id, r.state.name()));
        let text = match (action.as_str(), &r.state) {
            ("pause", RolloutState::Running) => {
                r.state = RolloutState::Paused { by: actor.name.clone() };
                "paused".to_string()
            }
            ("resume", RolloutState::Paused { .. }) => {
                r.state = RolloutState::Running;
                "resumed".to_string()
            }
            ("resume", RolloutState::Halted { failed, .. }) => {
                let n = failed.len();
                r.acknowledged.extend(failed.iter().cloned());
                r.state = RolloutState::Running;
                format!("resumed, acknowledging {n} failure(s)")
            }
            ("abort", s) if rollouts::active(s) => {
                let revert = body.map(|b| b.0.revert).unwrap_or(false);
                r.state = RolloutState::Aborted { by: actor.name.clone(), revert };
                if revert { "aborted; endpoints go back".to_string() } else { "aborted; endpoints stay where they are".to_string() }
            }
            ("approve", RolloutState::AwaitingApproval) => {
                let manifest = st.meta.generations().map_err(meta_err)?;
                let p = manifest.iter().find(|p| format!("{}@{}", p.image, p.generation) == r.generation);
                let p = p.ok_or_else(|| AppError::new(ErrorCode::UnknownGeneration, format!("{} is no longer published", r.generation)))?;
                crate::gate_api::check(&st, &r.channel, &r.generation, &p.manifest)?;
                r.state = RolloutState::Running;
                r.stage_started = cache::clock::now();
                r.stage_times = vec![r.stage_started];
                "approved: the channel's policy is met".to_string()
            }
            ("pause" | "resume" | "abort" | "approve", _) => return Err(wrong(&r)),
            _ => return Err(AppError::new(ErrorCode::NotFound, format!("no rollout action {action:?}: pause, resume, abort, approve"))),
        };
        r.log.push(decision(&actor.name, text.clone()));
        st.rollouts.put(r.clone(), audit(&actor.name, &format!("rollout {action}"), &r, text)).map_err(meta_err)?;
        st.fleet.changed();
        Ok(Json(r))
    })
    .await
}


/// One tick: every running rollout's counts from its endpoints, and its next step.
pub async fn tick(state: &AppState) {
    let running: Vec<Rollout> = state.rollouts.list().into_iter().filter(|r| r.state == RolloutState::Running).collect();
    for r in running {
        let st = state.clone();
        let Ok((counts, step)) = tokio::task::spawn_blocking(move || {
            let now = cache::clock::now();
            let members: Vec<Member> = st
                .fleet
                .endpoints()
                .iter()
                .filter(|ep| ep.revoked.load(std::sync::atomic::Ordering::Relaxed) == 0)
                .filter_map(|ep| {
                    let desired = crate::fleet_api::served(&st, ep).desired;
                    rollouts::member(&r, &ep.record.lock().unwrap(), ep.seen(), &desired)
                })
                .collect();
            let (counts, step) = rollouts::evaluate(&r, &members, now);
            (counts, (r, step))
        })
        .await
        else {
            continue;
        };
        let (r, step) = step;
        state.rollouts.set_counts(r.id, counts.clone());
        if step == Step::Stay {
            continue;
        }
        if let Err(e) = apply(state, r, counts, step).await {
            tracing::error!(error = %e.0.message, "a rollout step failed");
        }
    }
}

/// Takes a step: the next stage, completion (the channel moves), or a halt.
async fn apply(state: &AppState, mut r: Rollout, counts: api::rollouts::StageCounts, step: Step) -> Result<(), AppError> {
    let now = cache::clock::now();
    r.counts = counts;
    match step {
        Step::Stay => return Ok(()),
        Step::Halt(rule, failed) => {
            r.log.push(decision("rollout", format!("halted: {rule}")));
            tracing::warn!(rollout = %r.id, %rule, "rollout halted by the brake");
            r.state = RolloutState::Halted { rule: rule.clone(), failed };
            let entry = audit("rollout", "rollout halt", &r, rule);
            let st = state.clone();
            blocking(move || st.rollouts.put(r, entry).map_err(meta_err)).await?;
        }
        Step::Advance(text) => {
            r.log.push(decision("rollout", text.clone()));
            r.stage += 1;
            r.stage_started = now;
            r.stage_times.push(now);
            if r.stage >= r.plan.stages.len() {
                // Every stage passed: the channel names the generation for everyone.
                let generation = r.generation.clone();
                let why = Why { actor: r.started_by.clone(), reason: r.reason.clone(), note: format!(", rollout {}", r.id) };
                move_channel(state, r.channel.clone(), ChannelAction::Rollout, why, move |st, _| crate::channels::resolve(st, &generation)).await?;
                r.state = RolloutState::Completed;
                r.log.push(decision("rollout", format!("completed: {} names {}", r.channel, r.generation)));
            }
            let entry = audit("rollout", if r.state == RolloutState::Completed { "rollout complete" } else { "rollout stage" }, &r, text);
            let st = state.clone();
            blocking(move || st.rollouts.put(r, entry).map_err(meta_err)).await?;
        }
    }
    state.fleet.changed();
    Ok(())
}

/// Starts the tick loop (every second).
pub fn spawn(state: &AppState) {
    let st = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            tick(&st).await;
        }
    });
}

/// `POST /v1/withdraw` (publish): the generation is never offered again; channels naming it
/// move back, rollouts to it abort with revert, endpoints running it roll back through the
/// push hint.
pub async fn withdraw(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<Withdraw>, JsonRejection>) -> Result<Json<Withdrawn>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let Json(req) = body?;
    if req.reason.trim().is_empty() {
        return Err(AppError::new(ErrorCode::BadRequest, "a withdrawal needs a reason"));
    }
    let (generation, _) = crate::channels::resolve(&state, &req.generation)?;
    {
        let _guard = state.channel_writes.lock().await;
        let st = state.clone();
        let (g, reason, by) = (generation.clone(), req.reason.clone(), actor.name.clone());
        blocking(move || {
            let w = WithdrawnRecord { generation: g.clone(), reason: reason.clone(), by: by.clone(), time: cache::clock::now() };
            st.rollouts.put_withdrawn(w, AuditEntry::new(&by, "withdraw", g, "").reason(reason)).map_err(meta_err)?;
            // The signed channels role lists it from now on.
            st.tuf.channels_changed(&st.meta)?;
            Ok(())
        })
        .await?;
    }
    let mut out = Withdrawn { generation: generation.clone(), channels: vec![], rollouts: vec![], running: vec![] };
    // Rollouts to it stop and send their endpoints back.
    for mut r in state.rollouts.list().into_iter().filter(|r| r.generation == generation && rollouts::active(&r.state)) {
        r.state = RolloutState::Aborted { by: actor.name.clone(), revert: true };
        r.log.push(decision(&actor.name, format!("aborted: {generation} withdrawn ({})", req.reason)));
        out.rollouts.push(r.id);
        let entry = audit(&actor.name, "rollout abort", &r, "withdrawn");
        let st = state.clone();
        blocking(move || st.rollouts.put(r, entry).map_err(meta_err)).await?;
    }
    // Channels naming it go back to the newest earlier generation not withdrawn.
    let channels = state.meta.channels().map_err(meta_err)?;
    for name in channels {
        let Some(cv) = state.meta.channel(&name).map_err(meta_err)? else { continue };
        if cv.generation != generation {
            continue;
        }
        let why = Why { actor: actor.name.clone(), reason: Some(req.reason.clone()), note: format!(", {generation} withdrawn") };
        let g = generation.clone();
        let moved = move_channel(&state, cv.channel.clone(), ChannelAction::Withdraw, why, move |st, history| {
            let published = st.meta.generations().map_err(|e| AppError::internal("reading metadata", e))?;
            let back = history
                .iter()
                .rev()
                .filter(|v| v.generation != g && st.rollouts.withdrawn(&v.generation).is_none())
                .find(|v| published.iter().any(|p| p.manifest == v.manifest));
            let back = back.ok_or_else(|| AppError::new(ErrorCode::NothingToRollBackTo, format!("{} never named another generation still published", cv.channel)))?;
            Ok((back.generation.clone(), back.manifest))
        })
        .await;
        match moved {
            Ok(v) => out.channels.push((v.channel, v.generation)),
            Err(e) => tracing::warn!(channel = %name, error = %e.0.message, "a channel naming a withdrawn generation could not move back"),
        }
    }
    out.running = state
        .fleet
        .endpoints()
        .iter()
        .filter(|ep| ep.record.lock().unwrap().mounts.iter().any(|m| m.current.as_deref() == Some(generation.as_str())))
        .map(|ep| ep.id.clone())
        .collect();
    state.fleet.changed();
    tracing::warn!(%generation, reason = %req.reason, "generation withdrawn");
    Ok(Json(out))
}

/// `PUT`/`DELETE /v1/fleet/endpoints/{id}/pin` (publish).
pub async fn pin(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Option<Json<Pin>>) -> Result<Json<api::fleet::EndpointSummary>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let pin = body.map(|b| b.0.generation);
    pin_allowed(&state, pin.as_deref())?;
    crate::fleet_api::edit_endpoint(state, &id, move |r| {
        if r.pin == pin {
            return Ok(None);
        }
        let entry = AuditEntry::new(&actor.name, "endpoint pin", format!("endpoint {}", r.id), "")
            .before(r.pin.clone().unwrap_or_default())
            .after(pin.clone().unwrap_or_default());
        r.pin = pin;
        Ok(Some(entry))
    })
    .await
}

/// `PUT`/`DELETE /v1/fleet/groups/{name}/pin` (publish): the group's endpoints' mounts of the
/// image stay on the generation (an endpoint's own pin comes first).
pub async fn pin_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Pin>>,
) -> Result<Json<api::fleet::GroupSummary>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let name = crate::fleet_api::group_name(&name)?;
    let pin = body.map(|b| b.0.generation);
    pin_allowed(&state, pin.as_deref())?;
    let _guard = state.channel_writes.lock().await;
    let st = state.clone();
    blocking(move || {
        let Some(mut live) = st.fleet.group(&name) else {
            return Err(AppError::new(ErrorCode::NotFound, format!("no group {name}")));
        };
        if live.group.pin != pin {
            let entry = AuditEntry::new(&actor.name, if pin.is_some() { "group pin" } else { "group unpin" }, format!("group {name}"), "")
                .before(live.group.pin.clone().unwrap_or_default())
                .after(pin.clone().unwrap_or_default());
            live.group.pin = pin;
            st.fleet.put_group(live.clone(), entry).map_err(meta_err)?;
        }
        Ok(Json(crate::fleet_api::summary_of(&st, &live)))
    })
    .await
}

/// Refuses a pin to text that is not `IMAGE@N` or to a withdrawn generation.
fn pin_allowed(state: &Shared, pin: Option<&str>) -> Result<(), AppError> {
    if let Some(g) = pin {
        if api::fleet::parse_generation(g).is_none() {
            return Err(AppError::new(ErrorCode::BadGeneration, format!("{g:?} is not IMAGE@N")));
        }
        if state.rollouts.withdrawn(g).is_some() {
            return Err(AppError::new(ErrorCode::Withdrawn, format!("{g} was withdrawn")));
        }
    }
    Ok(())
}

/// `PUT`/`DELETE /v1/fleet/endpoints/{id}/hold` (publish).
pub async fn hold(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Option<Json<Hold>>) -> Result<Json<api::fleet::EndpointSummary>, AppError> {
    let actor = state.authorize(&headers, Permission::Publish)?;
    let hold = body.map(|b| b.0.reason);
    crate::fleet_api::edit_endpoint(state, &id, move |r| {
        if r.hold == hold {
            return Ok(None);
        }
        let entry = AuditEntry::new(&actor.name, if hold.is_some() { "endpoint hold" } else { "endpoint release" }, format!("endpoint {}", r.id), "")
            .reason(hold.clone().unwrap_or_default());
        r.hold = hold;
        Ok(Some(entry))
    })
    .await
}
