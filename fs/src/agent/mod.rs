//! `imgfs agent` and `imgfs enroll`: the endpoint's side of the fleet (docs/fleet.md). The
//! agent enrolls once, then checks in for its desired state (a conditional GET on an interval
//! with jitter, at once on a push hint from the event stream), runs each desired mount as an
//! `imgfs mount --daemon` of its own and reconciles them (rollouts, withdrawn generations,
//! activations), checks a mount's health after each switch and rolls it back when its probe
//! fails, and reports what happens through a queue on disk. Pure decisions live in
//! `reconcile`, `health` and `schedule`; `client`, `supervisor`, `probe`, `queue`,
//! `identity` and `facts` do the IO.

pub mod client;
pub mod config;
pub mod deferral;
pub mod facts;
pub mod health;
pub mod hold;
pub mod identity;
pub mod probe;
pub mod queue;
pub mod reconcile;
pub mod schedule;
pub mod supervisor;
pub mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::control::Switch;
use api::fleet::{CacheState, Desired, EventKind, Facts, MountState, ReportBatch};

use client::{Client, ClientError, DesiredAnswer};
use config::AgentConfig;
use health::{Check, Task, Verdict};
use identity::Sessions;
use queue::Queue;
use reconcile::{Action, Activation, Memo, Offer, RunState, Running};
use schedule::{jitter, Backoff, Schedule};
use supervisor::{Child, Supervisor};

/// Check-ins before the server has said how often (and when it is unreachable).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// How often the mounts are asked for their status.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The identity could not be read, made or enrolled.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// Not enrolled and no `enroll_token` configured.
    #[error("{} does not exist: run `imgfs enroll` or set enroll_token in the configuration", path.display())]
    NotEnrolled {
        /// The missing file.
        path: PathBuf,
    },
    /// The report queue cannot be used.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// The server refuses this endpoint (revoked or unknown). The mounts keep serving.
    #[error("the server refuses this endpoint; its mounts keep serving what they serve")]
    LockedOut(#[source] ClientError),
}

/// What wakes the agent's loop up besides its timers.
enum Wake {
    /// A push hint: check in now.
    Hint,
    /// A health check's task ended.
    Done {
        /// Namespace path.
        path: String,
        /// The check it belongs to.
        serial: u64,
        /// Its outcome.
        result: Result<(), probe::Failure>,
    },
}

/// What the agent holds while it runs.
struct Agent {
    config: AgentConfig,
    client: Arc<Client>,
    sessions: Arc<Sessions>,
    queue: Queue,
    supervisor: Supervisor,
    desired: Option<Desired>,
    etag: Option<String>,
    facts: Option<Facts>,
    cache: Option<CacheState>,
    report_backoff: Backoff,
    next_report: Instant,
    /// Health checks after switches, by namespace path.
    checks: BTreeMap<String, Check>,
    /// Serial numbers of checks.
    serial: u64,
    /// What is remembered of each mount (`STATE/rollouts.json`).
    memos: BTreeMap<String, Memo>,
    /// Where the health checks' tasks report.
    wake: mpsc::Sender<Wake>,
    /// Switches the switch gate holds back (maintenance windows, deferrals).
    holds: hold::Holds,
}

/// Seconds since the epoch (the workspace's clock, which tests can set).
fn unix_now() -> i64 {
    crate::trusted::unix_now()
}

/// Runs the agent until the server refuses the endpoint (or a local failure).
pub fn run(config: AgentConfig, exe: PathBuf) -> Result<(), AgentError> {
    let state = config.state.clone();
    let key = identity::load_or_create_key(&state)?;
    if identity::read_endpoint(&state)?.is_none() {
        let Some(token) = &config.enroll_token else { return Err(AgentError::NotEnrolled { path: identity::endpoint_path(&state) }) };
        let file = identity::enroll(&state, &config.servers, token, config.labels.clone(), &config.cache)?;
        tracing::info!(endpoint = %file.endpoint, "enrolled");
    }
    tracing::info!(endpoint = %identity::endpoint_id(&key), "agent starting");
    let client = Arc::new(Client::new(&config.servers));
    let sessions = Arc::new(Sessions::new(key));
    let queue = Queue::open(&state.join("reports"), config.report_queue_max)?;
    let (wake, wakes) = mpsc::channel::<Wake>();
    spawn_stream(client.clone(), sessions.clone(), wake.clone());
    let now = Instant::now();
    let mut supervisor = Supervisor::new(exe, config.clone());
    supervisor.adopt(now);
    let desired = std::fs::read(state.join("desired.json")).ok().and_then(|b| serde_json::from_slice::<Desired>(&b).ok());
    let memos = load_memos(&state);
    let mut agent = Agent {
        config,
        client,
        sessions,
        queue,
        supervisor,
        desired,
        etag: None,
        facts: None,
        cache: None,
        report_backoff: Backoff::default(),
        next_report: now,
        checks: BTreeMap::new(),
        serial: 0,
        memos,
        wake,
        holds: hold::Holds::default(),
    };
    agent.check_facts();
    let mut schedule = Schedule::new(now);
    let mut next_status = now;
    loop {
        let now = Instant::now();
        let interval = agent.interval();
        if schedule.due(now) {
            match agent.check_in() {
                Ok(()) => schedule.checked_in(Instant::now(), interval, jitter()),
                Err(e) if e.locked_out() => return Err(AgentError::LockedOut(e)),
                Err(ClientError::RetryAfter { seconds, .. }) => schedule.retry_after(now, seconds),
                Err(e) => {
                    tracing::warn!(error = %e, "check-in failed; the mounts keep serving");
                    schedule.failed(now, interval, jitter());
                }
            }
            agent.check_facts();
        }
        let gate_due = agent.gate_wake().is_some_and(|t| now >= t);
        if now >= next_status || gate_due {
            agent.watch();
            agent.reconcile();
            next_status = Instant::now() + STATUS_EVERY;
        }
        if !agent.queue.is_empty() && Instant::now() >= agent.next_report {
            if let Err(e) = agent.send_reports() {
                if e.locked_out() {
                    return Err(AgentError::LockedOut(e));
                }
            }
        }
        agent.run_checks(cache::clock::instant());
        let mut until = schedule.next().min(next_status);
        if let Some(t) = agent.gate_wake() {
            until = until.min(t);
        }
        if !agent.queue.is_empty() {
            until = until.min(agent.next_report);
        }
        if let Some(due) = agent.checks.values().filter(|c| !c.busy).map(Check::due).min() {
            // Soaks run on the workspace's clock (`cache::clock::instant`), which a test moves.
            until = until.min(Instant::now() + due.saturating_duration_since(cache::clock::instant()));
        }
        let wait = until.saturating_duration_since(Instant::now());
        if let Ok(first) = wakes.recv_timeout(wait) {
            let mut hinted = agent.woken(first);
            while let Ok(more) = wakes.try_recv() {
                hinted |= agent.woken(more);
            }
            if hinted {
                tracing::debug!("push hint: checking in now");
                schedule.hint(Instant::now());
            }
        }
    }
}

/// Keeps the event stream open in a thread of its own, reconnecting with backoff; every
/// `check` event sends a hint. The agent works the same without it.
fn spawn_stream(client: Arc<Client>, sessions: Arc<Sessions>, hints: mpsc::Sender<Wake>) {
    std::thread::spawn(move || {
        let mut backoff = Backoff::default();
        loop {
            let opened = Instant::now();
            let result = sessions.with(&client, unix_now(), |token| {
                client.events(token, &mut || {
                    let _ = hints.send(Wake::Hint);
                })
            });
            match result {
                // A stream that stayed open a while was healthy: reconnect at once.
                Ok(()) if opened.elapsed() > Duration::from_secs(10) => backoff.reset(),
                Ok(()) => {}
                Err(ClientError::RetryAfter { seconds, .. }) => {
                    std::thread::sleep(Duration::from_secs(seconds));
                    continue;
                }
                // Revoked or unknown: the check-in that follows finds out and stops the agent.
                Err(e) if e.locked_out() => {
                    let _ = hints.send(Wake::Hint);
                }
                Err(e) => tracing::debug!(error = %e, "event stream failed"),
            }
            std::thread::sleep(backoff.next(jitter()));
        }
    });
}

impl Agent {
    /// The check-in interval: the configuration's, else the server's, else the default.
    fn interval(&self) -> Duration {
        let secs = self.config.interval_seconds.or(self.desired.as_ref().map(|d| d.interval_seconds)).unwrap_or(DEFAULT_INTERVAL.as_secs());
        Duration::from_secs(secs.max(1))
    }

    /// Queues an event (a queue that cannot be written loses it, and says so).
    fn event(&mut self, kind: EventKind) {
        tracing::info!(event = kind.name(), "{kind:?}");
        if let Some(problem) = kind.problem() {
            // The server would refuse the whole batch: this one event is not sent.
            tracing::error!(problem, "an event the server would refuse: not queued");
            return;
        }
        if let Err(e) = self.queue.push(unix_now(), kind) {
            tracing::error!(error = %e, "cannot queue an event");
        }
        // Events are sent at once (the backoff still holds after failures).
        if self.report_backoff.failures() == 0 {
            self.next_report = Instant::now();
        }
    }

    /// Asks for the desired state (conditionally) and applies it.
    fn check_in(&mut self) -> Result<(), ClientError> {
        let actual = api::fleet::format_actual(&reconcile::actual(&self.running()));
        let etag = self.etag.clone();
        let answer = self.sessions.with(&self.client, unix_now(), |token| self.client.desired(token, &actual, etag.as_deref()))?;
        if let DesiredAnswer::Changed { desired, etag } = answer {
            if self.desired.as_ref() != Some(&desired) {
                let bytes = serde_json::to_vec_pretty(&desired).expect("serialises");
                if let Err(e) = cache::atomic::write(&self.config.state.join("desired.json"), &bytes) {
                    tracing::warn!(error = %e, "cannot keep the desired state for an offline restart");
                }
            }
            self.desired = Some(desired);
            self.etag = etag;
        }
        self.reconcile();
        if !self.queue.is_empty() {
            let _ = self.send_reports();
        }
        Ok(())
    }

    fn running(&self) -> std::collections::BTreeMap<String, Running> {
        self.supervisor.children.iter().map(|(p, c)| (p.clone(), c.running.clone())).collect()
    }

    /// Makes the mounts what the desired state says (nothing before the first answer).
    fn reconcile(&mut self) {
        let Some(desired) = self.desired.clone() else { return };
        if reconcile::forget_stale(&mut self.memos, &desired.mounts, &desired.withdrawn) {
            self.save_memos();
        }
        let actions = reconcile::plan_with(&desired.mounts, &desired.withdrawn, &self.memos, &self.running(), Instant::now());
        let mut prefetched = Vec::new();
        self.holds.finished(unix_now(), &mut prefetched);
        prefetched.into_iter().for_each(|e| self.event(e));
        let mut changed = false;
        for action in actions {
            match action {
                Action::Stop { path } => {
                    self.supervisor.stop(&path);
                    self.checks.remove(&path);
                    self.event(EventKind::Unmounted { path });
                    changed = true;
                }
                Action::Restart { path, spec } => {
                    self.supervisor.stop(&path);
                    self.checks.remove(&path);
                    self.event(EventKind::Unmounted { path: path.clone() });
                    self.start(&path, spec, None);
                    changed = true;
                }
                Action::Start { path, spec } => {
                    let staged = reconcile::boot_generation(self.memos.get(&path), &desired.withdrawn);
                    self.start(&path, spec, staged);
                    changed = true;
                }
                Action::Update { path, hint } => {
                    if self.may_switch(&desired, &path, &hint) {
                        self.update(&path, hint)
                    }
                }
                Action::SwitchTo { path, generation } => {
                    if self.may_switch(&desired, &path, &generation) {
                        self.switch_to(&path, generation)
                    }
                }
                Action::Withdraw { path, from } => {
                    self.checks.remove(&path);
                    self.roll_back(&path, &from, "withdrawn".into(), None);
                }
                Action::Stuck { path, generation, previous } => {
                    let error = match &previous {
                        Some(p) => {
                            format!("{generation} is withdrawn and so is its previous generation {p}: it keeps serving {generation}")
                        }
                        None => format!("{generation} is withdrawn and there is no previous generation to go back to: it keeps serving it"),
                    };
                    self.memo(&path).stuck_on = Some(generation.clone());
                    self.save_memos();
                    self.event(EventKind::Failed { path, generation: Some(generation), error });
                }
                Action::StageReboot { path, generation } => self.stage_reboot(&path, generation),
                Action::Unstage { path } => {
                    self.memo(&path).pending_reboot = None;
                    self.save_memos();
                }
            }
        }
        self.holds.end_turn();
        if changed {
            self.supervisor.save();
        }
    }

    /// The switch gate's hook (`window`, `hold`), asked before any switch to an offered
    /// generation: whether the mount at `path` may switch to `generation` now. If not, the
    /// mount prefetches it in the background and the agent reports why it waits; the loop asks
    /// again at every turn and wakes when the gate may open (`gate_wake`).
    fn may_switch(&mut self, desired: &Desired, path: &str, generation: &str) -> bool {
        let Some(mount) = desired.mounts.iter().find(|m| m.mount.path == path) else { return true };
        let deferral = match deferral::read(&self.config.state) {
            Ok(d) => d.deferrals.get(path).copied(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the users' deferrals; none is honoured");
                None
            }
        };
        let mut events = Vec::new();
        let local = self.config.local_path(path);
        if let Some((g, offered)) = self.memos.get(path).and_then(|m| m.offered.clone()).filter(|(g, _)| g == generation) {
            self.holds.restore(path, &g, offered);
        }
        let now = self.holds.consider(unix_now(), mount, generation, &local, deferral, &mut events);
        let offered = self.holds.offered(path);
        if self.memos.get(path).and_then(|m| m.offered.clone()) != offered {
            self.memo(path).offered = offered;
            self.save_memos();
        }
        events.into_iter().for_each(|e| self.event(e));
        if !now {
            self.keep_still(path);
        }
        now
    }

    /// Holds a waiting mount on the generation it serves, so that its own channel poller does
    /// not switch it outside its window or deferral when the channel moves; the switch the gate
    /// lets through later ends the hold.
    fn keep_still(&mut self, path: &str) {
        let Some(c) = self.supervisor.children.get(path) else { return };
        let RunState::Up { current } = &c.running.state else { return };
        if c.running.held.is_some() {
            return;
        }
        let current = current.clone();
        match self.supervisor.switch_to(path, &current) {
            Ok(Switch::AlreadyCurrent { .. }) => {
                if let Some(c) = self.supervisor.children.get_mut(path) {
                    c.running.held = Some(current);
                }
            }
            Ok(other) => tracing::warn!(path, ?other, "holding a waiting mount where it is did something else"),
            Err(e) => tracing::warn!(path, error = %e, "cannot hold a waiting mount where it is; its poller may switch it early"),
        }
    }

    /// When the switch gate may open for a held switch.
    fn gate_wake(&self) -> Option<Instant> {
        let until = self.holds.wake()?;
        Some(Instant::now() + Duration::from_secs(until.saturating_sub(unix_now()).max(0) as u64))
    }

    /// What is remembered of the mount at `path` (made empty if nothing was).
    fn memo(&mut self, path: &str) -> &mut Memo {
        self.memos.entry(path.to_string()).or_default()
    }

    /// Writes `STATE/rollouts.json` atomically (before the events that depend on it).
    fn save_memos(&mut self) {
        self.memos.retain(|_, m| !m.is_empty());
        let file = MemosFile { mounts: self.memos.clone() };
        let bytes = serde_json::to_vec_pretty(&file).expect("serialises");
        if let Err(e) = cache::atomic::write(&self.config.state.join(MEMOS_FILE), &bytes) {
            tracing::error!(error = %e, "cannot record the staged and failed generations");
        }
    }

    /// The desired mount at `path`.
    fn desired_mount(&self, path: &str) -> Option<api::fleet::DesiredMount> {
        self.desired.as_ref()?.mounts.iter().find(|d| d.mount.path == path).cloned()
    }

    /// Starts a mount (on `staged`, held there, if a generation was staged for its next start);
    /// a failure is reported and tried again after a backoff.
    fn start(&mut self, path: &str, spec: reconcile::Spec, staged: Option<String>) {
        let failures = self.supervisor.children.get(path).map_or(0, |c| c.failures);
        let local = self.config.local_path(path);
        match self.supervisor.start(path, &spec, staged.as_deref()) {
            Ok(st) => {
                let generation = st.current.generation.clone();
                let seen = reconcile::observe(path, None, &st).1;
                let running = Running::of_status(spec, &st);
                self.supervisor
                    .children
                    .insert(path.to_string(), Child { running, local, seen: Some(seen), status: Some(st), failures: 0 });
                self.event(EventKind::Mounted { path: path.to_string(), generation: generation.clone() });
                if staged.as_ref() == Some(&generation) {
                    tracing::info!(path, %generation, "started on the generation staged for this start");
                    self.memo(path).pending_reboot = None;
                    self.save_memos();
                    self.begin_check(path, &generation);
                }
            }
            Err(e) => {
                let wait = restart_wait(failures);
                tracing::warn!(path, error = %e, retry_in = ?wait, "mount failed");
                let generation = match &spec.source {
                    api::fleet::Source::Pinned(g) => Some(g.clone()),
                    api::fleet::Source::Channel(_) => None,
                };
                let running = Running::down(spec, Instant::now() + wait);
                self.supervisor
                    .children
                    .insert(path.to_string(), Child { running, local, seen: None, status: None, failures: failures + 1 });
                self.event(EventKind::Failed { path: path.to_string(), generation, error: reconcile::clip(&format!("{e:#}")) });
            }
        }
    }

    /// Asks a mount to check its channel now, and reports what it did.
    fn update(&mut self, path: &str, hint: String) {
        if let Some(c) = self.supervisor.children.get_mut(path) {
            c.running.last_update = Some((hint.clone(), Instant::now()));
        }
        match self.supervisor.update(path) {
            Ok(Switch::Switched { from, to, millis, .. }) => {
                self.moved(path, &from, &to, None);
                self.event(EventKind::Switched { path: path.into(), from, to: to.clone(), millis });
                self.begin_check(path, &to);
            }
            Ok(Switch::AlreadyCurrent { generation, .. }) => {
                if let Some(c) = self.supervisor.children.get_mut(path) {
                    c.running.held = None;
                }
                if generation != hint {
                    tracing::info!(path, %generation, %hint, "the mount's signed metadata does not name the hinted generation yet");
                }
            }
            Ok(Switch::Refused { error, .. }) => {
                self.event(EventKind::Failed { path: path.into(), generation: Some(hint), error: reconcile::clip(&error) })
            }
            Ok(Switch::NothingToRollBackTo) => {}
            Err(e) => {
                self.event(EventKind::Failed { path: path.into(), generation: Some(hint), error: reconcile::clip(&format!("{e:#}")) })
            }
        }
    }

    /// Records that the mount at `path` moved from `from` to `to` by the agent's own request
    /// (so the next status shows no surprise), held on `held`.
    fn moved(&mut self, path: &str, from: &str, to: &str, held: Option<String>) {
        if let Some(c) = self.supervisor.children.get_mut(path) {
            c.running.state = RunState::Up { current: to.to_string() };
            c.running.previous = Some(from.to_string());
            c.running.held = held;
            if let Some(seen) = c.seen.as_mut() {
                seen.current = to.to_string();
            }
        }
    }

    /// Switches the mount to a rollout's generation (held there) and reports it.
    fn switch_to(&mut self, path: &str, generation: String) {
        if let Some(c) = self.supervisor.children.get_mut(path) {
            c.running.last_update = Some((generation.clone(), Instant::now()));
        }
        match self.supervisor.switch_to(path, &generation) {
            Ok(Switch::Switched { from, to, millis, .. }) => {
                self.moved(path, &from, &to, Some(to.clone()));
                if self.memos.get(path).is_some_and(|m| m.pending_reboot.is_some()) {
                    // A live switch supersedes a generation staged for the next start.
                    self.memo(path).pending_reboot = None;
                    self.save_memos();
                }
                self.event(EventKind::Switched { path: path.into(), from, to: to.clone(), millis });
                self.begin_check(path, &to);
            }
            Ok(Switch::AlreadyCurrent { generation, .. }) => {
                if let Some(c) = self.supervisor.children.get_mut(path) {
                    c.running.held = Some(generation);
                }
            }
            Ok(Switch::Refused { error, .. }) => {
                self.event(EventKind::Failed { path: path.into(), generation: Some(generation), error: reconcile::clip(&error) })
            }
            Ok(Switch::NothingToRollBackTo) => {}
            Err(e) => {
                self.event(EventKind::Failed { path: path.into(), generation: Some(generation), error: reconcile::clip(&format!("{e:#}")) })
            }
        }
    }

    /// Rolls the mount at `path` back from `from` and holds it on what it went back to (so
    /// its channel poller does not take `from` again); reports `rolled_back` with `why`, and
    /// `failed` with `failure` (a failed probe's error) when given.
    fn roll_back(&mut self, path: &str, from: &str, why: String, failure: Option<String>) {
        let failed =
            |error: String| EventKind::Failed { path: path.into(), generation: Some(from.to_string()), error: reconcile::clip(&error) };
        match self.supervisor.rollback(path) {
            Ok(Switch::Switched { from: left, to, .. }) => {
                self.moved(path, &left, &to, None);
                match self.supervisor.switch_to(path, &to) {
                    Ok(Switch::AlreadyCurrent { .. } | Switch::Switched { .. }) => self.moved(path, &left, &to, Some(to.clone())),
                    Ok(other) => tracing::warn!(path, outcome = ?other, "cannot hold the mount after its rollback"),
                    Err(e) => tracing::warn!(path, error = %e, "cannot hold the mount after its rollback"),
                }
                self.event(EventKind::RolledBack { path: path.into(), from: left, to, why: reconcile::clip(&why) });
                if let Some(error) = failure {
                    self.event(failed(error));
                }
            }
            Ok(Switch::NothingToRollBackTo) => {
                let error = failure.unwrap_or(why);
                self.event(failed(format!("{error}; no previous generation to roll back to: it keeps serving {from}")));
            }
            Ok(Switch::Refused { error, .. }) => self.event(failed(format!("rolling back ({why}): {error}"))),
            Ok(Switch::AlreadyCurrent { .. }) => {}
            Err(e) => self.event(failed(format!("rolling back ({why}): {e:#}"))),
        }
    }

    /// Stages `generation` for the mount's next start (a `reboot` activation): recorded first,
    /// the mount held where it is so its poller does not switch it live, then reported.
    fn stage_reboot(&mut self, path: &str, generation: String) {
        self.memo(path).pending_reboot = Some(generation.clone());
        self.save_memos();
        let current = self.supervisor.children.get(path).and_then(|c| match &c.running.state {
            RunState::Up { current } if c.running.held.as_ref() != Some(current) => Some(current.clone()),
            _ => None,
        });
        if let Some(current) = current {
            match self.supervisor.switch_to(path, &current) {
                Ok(Switch::AlreadyCurrent { .. }) => {
                    if let Some(c) = self.supervisor.children.get_mut(path) {
                        c.running.held = Some(current);
                    }
                }
                other => {
                    tracing::warn!(path, outcome = ?other.map_err(|e| e.to_string()), "cannot hold the mount for its staged generation")
                }
            }
        }
        tracing::info!(path, %generation, "staged for the next boot (activation reboot)");
        self.event(EventKind::Waiting { path: path.into(), generation, why: "pending_reboot".into(), until: None });
    }

    /// Starts the health check of the mount at `path`, which switched to `generation` now:
    /// with the desired mount's soak time, and its activation's units when the desired state
    /// offers this generation. A check under way for the path is replaced.
    fn begin_check(&mut self, path: &str, generation: &str) {
        let d = self.desired_mount(path);
        let offered = d.as_ref().is_some_and(|d| reconcile::target(d).as_deref() == Some(generation));
        let offer = Offer { generation: generation.to_string(), rollout: d.as_ref().filter(|_| offered).and_then(|d| d.rollout) };
        let soak = Duration::from_secs(d.as_ref().and_then(|d| d.soak_seconds).unwrap_or(0));
        let units = match (&d, offered) {
            (Some(d), true) => Activation::of(d.activation.as_deref()).units().to_vec(),
            _ => vec![],
        };
        self.serial += 1;
        self.checks.insert(path.to_string(), Check::new(offer, cache::clock::instant(), soak, units, self.serial));
    }

    /// Starts the health checks' tasks that are due, each on a thread of its own (the loop
    /// goes on: check-ins, hints and other mounts do not wait for a probe).
    fn run_checks(&mut self, now: Instant) {
        let paths: Vec<String> = self.checks.keys().cloned().collect();
        for path in paths {
            let probe = self.desired_mount(&path).and_then(|d| d.mount.health).or_else(|| self.config.health.clone());
            let labels = self.desired.as_ref().map(|d| d.labels.clone()).unwrap_or_default();
            let local = self.config.local_path(&path);
            let restart_command = self.config.restart_command.clone();
            let check = self.checks.get_mut(&path).expect("listed");
            let Some(task) = check.start(now) else { continue };
            let (serial, generation, units) = (check.serial, check.offer.generation.clone(), check.units.clone());
            let wake = self.wake.clone();
            std::thread::spawn(move || {
                let result = match task {
                    Task::Probe => probe::probe(probe.as_ref(), &local, &generation, &labels),
                    Task::Restart => probe::restart(&restart_command, &units),
                };
                let _ = wake.send(Wake::Done { path, serial, result });
            });
        }
    }

    /// Handles what woke the loop; whether it was a push hint.
    fn woken(&mut self, wake: Wake) -> bool {
        match wake {
            Wake::Hint => true,
            Wake::Done { path, serial, result } => {
                self.check_done(&path, serial, result);
                false
            }
        }
    }

    /// A health check's task ended: the verdict, acted on.
    fn check_done(&mut self, path: &str, serial: u64, result: Result<(), probe::Failure>) {
        let Some(check) = self.checks.get_mut(path).filter(|c| c.serial == serial) else { return };
        let verdict = check.finished(result.is_ok());
        let (offer, units) = (check.offer.clone(), check.units.clone());
        if verdict == Verdict::Continue {
            return;
        }
        self.checks.remove(path);
        let generation = offer.generation.clone();
        match (verdict, result) {
            (Verdict::Healthy, _) => self.event(EventKind::Healthy { path: path.into(), generation }),
            (Verdict::ProbeFailed, Err(f)) => {
                let current = self.supervisor.children.get(path).and_then(|c| match &c.running.state {
                    RunState::Up { current } => Some(current.clone()),
                    RunState::Down { .. } => None,
                });
                if current.as_deref() != Some(generation.as_str()) {
                    // It moved on meanwhile: the failure is of a generation it no longer runs.
                    return;
                }
                tracing::warn!(path, %generation, error = %f, "health probe failed: rolling back");
                self.memo(path).failed = Some(offer);
                self.save_memos();
                let why = format!("health probe failed: {}", f.output);
                self.roll_back(path, &generation, why, Some(format!("health probe failed: {f}")));
            }
            (Verdict::RestartFailed, Err(f)) => self.event(EventKind::Failed {
                path: path.into(),
                generation: Some(generation),
                error: reconcile::clip(&format!("restarting {} failed: {f}", units.join(" "))),
            }),
            (verdict, result) => tracing::error!(path, ?verdict, ok = result.is_ok(), "a verdict that does not match its outcome"),
        }
    }

    /// Asks every mount that is up for its status: reports what changed, marks dead ones down.
    fn watch(&mut self) {
        let paths: Vec<String> = self.supervisor.children.keys().cloned().collect();
        let mut events = Vec::new();
        for path in paths {
            let c = self.supervisor.children.get_mut(&path).expect("listed");
            if !matches!(c.running.state, RunState::Up { .. }) {
                continue;
            }
            match supervisor::status(&c.local) {
                Ok(st) => {
                    let (evs, seen) = reconcile::observe(&path, c.seen.as_ref(), &st);
                    c.running.state = RunState::Up { current: seen.current.clone() };
                    c.running.previous = st.previous.as_ref().map(|p| p.generation.clone());
                    c.running.held = st.held.clone();
                    c.seen = Some(seen);
                    c.status = Some(st);
                    events.extend(evs);
                }
                Err(e) => {
                    let wait = restart_wait(c.failures);
                    c.failures += 1;
                    c.running.state = RunState::Down { retry_at: Instant::now() + wait };
                    c.status = None;
                    events.push(EventKind::Failed {
                        path: path.clone(),
                        generation: None,
                        error: reconcile::clip(&format!("the mount stopped answering: {e:#}")),
                    });
                }
            }
        }
        for e in events {
            if let EventKind::Switched { path, to, .. } = &e {
                // The mount's own poller switched it: its health is checked like any switch.
                let (path, to) = (path.clone(), to.clone());
                self.begin_check(&path, &to);
            }
            self.event(e);
        }
        self.report_drift();
        let cache = reconcile::cache_state(self.supervisor.children.values().filter_map(|c| c.status.as_ref()));
        if !self.supervisor.children.is_empty() && reconcile::cache_changed(self.cache.as_ref(), &cache) {
            self.cache = Some(cache.clone());
            self.event(EventKind::Cache { cache });
        }
    }

    /// Queues the writable layers' events not reported yet, read from their logs (so none is
    /// lost between two looks at a mount's status, or while the agent was down); queued
    /// before they are marked reported.
    fn report_drift(&mut self) {
        let layers: Vec<(String, u64, String)> = self
            .supervisor
            .children
            .iter()
            .filter_map(|(p, c)| c.status.as_ref()?.writable.as_ref().map(|w| (p.clone(), w.events, w.dir.clone())))
            .collect();
        let mut changed = false;
        for (path, total, dir) in layers {
            let reported = self.memos.get(&path).map_or(0, |m| m.drift_reported);
            if total == reported {
                continue;
            }
            let fresh = if total < reported {
                // A new layer: its log started again.
                0
            } else {
                reported
            };
            let log = std::fs::read_to_string(std::path::Path::new(&dir).join("events.jsonl")).unwrap_or_default();
            let lines: Vec<api::control::DriftEvent> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            for e in lines.iter().skip(fresh as usize) {
                self.event(EventKind::Drift {
                    path: path.clone(),
                    file: e.path.clone(),
                    drift: e.kind,
                    generation: e.generation.clone(),
                    image: e.image,
                    local: e.local,
                });
            }
            self.memo(&path).drift_reported = lines.len() as u64;
            changed = true;
        }
        if changed {
            self.save_memos();
        }
    }

    /// Reports the facts if they changed (always at start).
    fn check_facts(&mut self) {
        let now = facts::collect(&self.config.cache);
        if self.facts.as_ref().map_or(true, |old| facts::changed(old, &now)) {
            self.facts = Some(now.clone());
            self.event(EventKind::Facts { facts: now });
        }
    }

    /// Sends the queued events in batches until the queue is empty or a send fails.
    fn send_reports(&mut self) -> Result<(), ClientError> {
        while !self.queue.is_empty() {
            let batch = ReportBatch { events: self.queue.batch(), mounts: self.mount_states() };
            let sent = self.sessions.with(&self.client, unix_now(), |token| self.client.report(token, &batch));
            match sent {
                Ok(ack) => {
                    self.report_backoff.reset();
                    if let Err(e) = self.queue.ack(ack.acked) {
                        tracing::error!(error = %e, "cannot drop acknowledged events");
                    }
                    if ack.acked < batch.events.last().map_or(0, |e| e.seq) {
                        // The server holds less than was sent (it refused part): try later.
                        self.next_report = Instant::now() + self.report_backoff.next(jitter());
                        return Ok(());
                    }
                }
                Err(e) if matches!(e.code(), Some(api::ErrorCode::BadReport | api::ErrorCode::TooManyEvents)) => {
                    // Sending it again would be refused again: the batch is dropped so the
                    // queue does not stall behind it.
                    tracing::error!(error = %e, events = batch.events.len(), "the server refused a report batch: dropped");
                    let last = batch.events.last().map_or(0, |e| e.seq);
                    if let Err(e) = self.queue.ack(last) {
                        tracing::error!(error = %e, "cannot drop refused events");
                    }
                }
                Err(e) => {
                    let wait = match &e {
                        ClientError::RetryAfter { seconds, .. } => Duration::from_secs(*seconds),
                        _ => self.report_backoff.next(jitter()),
                    };
                    tracing::warn!(error = %e, queued = self.queue.len(), retry_in = ?wait, "reports not sent; they wait on disk");
                    self.next_report = Instant::now() + wait;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// What each mount runs now.
    fn mount_states(&self) -> Vec<MountState> {
        self.supervisor
            .children
            .iter()
            .map(|(p, c)| MountState {
                path: p.clone(),
                current: match &c.running.state {
                    RunState::Up { current } => Some(current.clone()),
                    RunState::Down { .. } => None,
                },
                previous: c.status.as_ref().and_then(|s| s.previous.as_ref()).map(|g| g.generation.clone()),
            })
            .collect()
    }
}

/// The file of what the agent remembers of its mounts: staged and failed generations.
pub const MEMOS_FILE: &str = "rollouts.json";

/// What `STATE/rollouts.json` holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct MemosFile {
    mounts: BTreeMap<String, Memo>,
}

/// Reads `STATE/rollouts.json` (nothing remembered if it is missing or unreadable).
fn load_memos(state: &std::path::Path) -> BTreeMap<String, Memo> {
    let Ok(bytes) = std::fs::read(state.join(MEMOS_FILE)) else { return BTreeMap::new() };
    match serde_json::from_slice::<MemosFile>(&bytes) {
        Ok(f) => f.mounts,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read {MEMOS_FILE}: no staged or failed generations remembered");
            BTreeMap::new()
        }
    }
}

/// How long a mount that failed `failures` times before waits to be started again.
pub fn restart_wait(failures: u32) -> Duration {
    let mut b = Backoff::default();
    (0..failures).for_each(|_| {
        b.next(1.0);
    });
    b.next(jitter())
}
