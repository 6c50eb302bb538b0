//! `fleet-load`: plays many enrolled fleet endpoints against one imaged, for `bench/fleet.sh`
//! (issue 14). Phases, each printing one `RESULT phase=...` line of `key=value` pairs: enroll,
//! sessions, first check-ins, conditional check-ins (304), reports, event streams held (the
//! server's memory per stream), compliance over every endpoint. Speaks the wire through
//! `api::fleet`'s types; every endpoint has its own ed25519 key, derived from a seed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use api::fleet::{
    CacheState, Compliance, CreatedEnrollToken, Desired, EndpointId, Enroll, Enrolled, Event, EventKind, Facts, Group, GroupName,
    MountState, Namespace, NamespaceMount, NewEnrollToken, ReportAck, ReportBatch, Session, SessionRequest, Source,
};
use clap::Parser;
use reqwest::header::{HeaderValue, AUTHORIZATION, ETAG, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};

/// Plays N enrolled endpoints against one imaged and prints one result line per phase.
#[derive(Parser, Debug)]
#[command(name = "fleet-load")]
struct Args {
    /// The server.
    #[arg(long, env = "IMAGED_SERVER")]
    url: String,
    /// An admin token (creates the enrollment token and the group, reads compliance).
    #[arg(long, env = "IMAGED_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Endpoints to enroll.
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Requests in flight (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of each timed phase (check-ins, reports).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Event streams to hold open at once.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// The channel the group's namespace follows (compliance target).
    #[arg(long, default_value = "bench/stable")]
    channel: String,
    /// The generation endpoints say they run before their reports (`IMAGE@N`).
    #[arg(long, default_value = "bench@1")]
    running: String,
    /// Every this many endpoints reports a failed switch instead of a switch (so compliance
    /// has stragglers with a reason); 0: none.
    #[arg(long, default_value_t = 20)]
    fail_every: usize,
    /// Events each endpoint reports before the timed phases (in one batch), so that its record
    /// carries a history as in a fleet that has been running (the server keeps the last 50).
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// imaged's process id, to sample its resident memory around the event streams.
    #[arg(long)]
    pid: Option<u32>,
    /// Seed of the endpoints' keys (the same seed enrolls the same endpoints again).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start a rollout of the channel to this generation (`IMAGE@N`, the `normal` plan) before
    /// the check-ins, so they are answered while the server ticks it.
    #[arg(long)]
    rollout_to: Option<String>,
}

/// The label every endpoint enrolls with, and the group's selector.
const LABEL: (&str, &str) = ("bench", "fleet");
/// The group's name and its one mount path.
const GROUP: &str = "bench";
const MOUNT: &str = "/os";

/// One simulated endpoint.
struct Sim {
    key: trust::keys::SecretKey,
    id: EndpointId,
    /// `Bearer SESSION`, once a session is open.
    auth: OnceLock<HeaderValue>,
    /// The ETag of its desired state, once it checked in.
    etag: OnceLock<HeaderValue>,
    /// The last sequence number it sent.
    seq: AtomicU64,
    /// Held while one of its batches is in flight: when the report phase wraps around (more
    /// batches than endpoints), a later batch must not overtake an earlier one.
    turn: tokio::sync::Mutex<()>,
}

/// Everything the phases share.
struct Bench {
    args: Args,
    http: reqwest::Client,
    sims: Vec<Sim>,
    /// The generation the channel names now (learned at the first check-in).
    target: OnceLock<String>,
    /// The first few unexpected answers, printed once per phase.
    errors: Mutex<Vec<String>>,
    /// `x-imaged-actual` of an endpoint running `--running`.
    actual: HeaderValue,
    /// Parsed once: the routes the hot loops use.
    desired_url: Url,
    reports_url: Url,
}

/// What one timed or counted phase measured.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    /// Latencies in microseconds.
    micros: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.micros.extend(other.micros);
    }

    fn record(&mut self, ok: bool, start: Instant) {
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        self.micros.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }

    /// `ok=.. errors=.. seconds=.. per_second=.. p50_ms=.. p99_ms=.. max_ms=..`
    fn line(mut self, phase: &str, seconds: f64, extra: &str) -> String {
        self.micros.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            let i = ((self.micros.len() as f64 * p).ceil() as usize).clamp(1, self.micros.len()) - 1;
            self.micros[i] as f64 / 1000.0
        };
        format!(
            "RESULT phase={phase} ok={} errors={} seconds={seconds:.2} per_second={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}{}{extra}",
            self.ok,
            self.errors,
            self.ok as f64 / seconds,
            pct(0.50),
            pct(0.99),
            pct(1.0),
            if extra.is_empty() { "" } else { " " },
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The secret key of endpoint `i`: BLAKE3 of the seed and the index.
fn key_of(seed: u64, i: usize) -> trust::keys::SecretKey {
    let mut h = blake3::Hasher::new();
    h.update(b"fleet-load\n");
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    trust::keys::SecretKey::from_bytes(h.finalize().as_bytes())
}

fn facts(i: usize) -> Facts {
    Facts {
        hostname: format!("bench-{i:06}"),
        machine_id: format!("{:032x}", i),
        arch: "x86_64".into(),
        os_release: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0-28-amd64".into(),
        cpus: 4,
        memory_bytes: 8 << 30,
        cache_disk_bytes: 64 << 30,
        cache_free_bytes: 40 << 30,
        addresses: vec![format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)],
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A small xorshift: which endpoint checks in next, without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

impl Bench {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.url)
    }

    /// The `Authorization` header of endpoint `i` (empty before its session: refused).
    fn auth(&self, i: usize) -> HeaderValue {
        self.sims[i].auth.get().cloned().unwrap_or(HeaderValue::from_static(""))
    }

    fn note_error(&self, what: String) {
        let mut e = self.errors.lock().unwrap();
        if e.len() < 5 {
            e.push(what);
        }
    }

    fn print_errors(&self, phase: &str) {
        for e in std::mem::take(&mut *self.errors.lock().unwrap()) {
            eprintln!("fleet-load: {phase}: {e}");
        }
    }

    fn target(&self) -> &str {
        self.target.get().map(String::as_str).unwrap_or("")
    }

    /// Runs `count` jobs over `concurrency` tasks, each job `f(i)` for the next index; or, with
    /// a deadline, jobs until it passes (the index then counts up without bound).
    async fn run<F, Fut>(self: &Arc<Self>, count: Option<usize>, deadline: Option<Instant>, f: F) -> (Tally, f64)
    where
        F: Fn(Arc<Bench>, usize, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let f = Arc::new(f);
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..self.args.concurrency {
            let (bench, next, f) = (self.clone(), next.clone(), f.clone());
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let salt = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t as u64 + 1);
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if count.is_some_and(|n| i >= n) {
                        break;
                    }
                    let started = Instant::now();
                    let ok = f(bench.clone(), i, salt ^ i as u64).await;
                    tally.record(ok, started);
                }
                tally
            }));
        }
        let mut all = Tally::default();
        for t in tasks {
            all.merge(t.await.expect("a load task panicked"));
        }
        (all, start.elapsed().as_secs_f64())
    }
}

/// An enrollment token for every endpoint, with the label the group selects.
/// Starts a rollout of the channel (the `normal` plan) and lets its first tick pass (the
/// empty pilot stage), so the desired states the endpoints learn next stay put.
async fn start_rollout(b: &Bench, to: &str) -> Result<String> {
    let req = api::rollouts::StartRollout {
        channel: format::ChannelName::new(&b.args.channel).map_err(|e| anyhow::anyhow!("{e}"))?,
        generation: to.to_string(),
        plan: api::rollouts::PlanSpec::Named("normal".into()),
        reason: Some("fleet-load".into()),
    };
    let r = b.http.post(b.url("/v1/rollouts")).bearer_auth(&b.args.admin_token).json(&req).send().await?;
    if r.status() != StatusCode::CREATED {
        bail!("starting a rollout: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    let started: api::rollouts::Rollout = r.json().await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = b.http.get(b.url(&format!("/v1/rollouts/{}", started.id))).bearer_auth(&b.args.admin_token).send().await?;
    let now: api::rollouts::Rollout = r.json().await?;
    Ok(format!("RESULT phase=rollout id={} stage={} targeted={}", now.id, now.stage + 1, now.counts.targeted))
}

async fn setup(b: &Bench) -> Result<String> {
    let req = NewEnrollToken { uses: None, lifetime_seconds: Some(24 * 3600), labels: [(LABEL.0.to_string(), LABEL.1.to_string())].into() };
    let r = b.http.post(b.url("/v1/fleet/enroll-tokens")).bearer_auth(&b.args.admin_token).json(&req).send().await?;
    if r.status() != StatusCode::CREATED {
        bail!("creating an enrollment token: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    let token: CreatedEnrollToken = r.json().await?;
    let channel = format::ChannelName::new(&b.args.channel).map_err(|e| anyhow::anyhow!("{e}"))?;
    let group = Group {
        name: GroupName::new(GROUP).expect("valid"),
        members: Vec::new(),
        selector: Some(format!("{}={}", LABEL.0, LABEL.1)),
        priority: 0,
        namespace: Namespace {
            mounts: vec![NamespaceMount { path: MOUNT.into(), source: Source::Channel(channel), cache_share: None, passthrough: false, health: None, writable: None }],
        },
        window: None,
        pin: None,
    };
    let r = b.http.put(b.url(&format!("/v1/fleet/groups/{GROUP}"))).bearer_auth(&b.args.admin_token).json(&group).send().await?;
    if !r.status().is_success() {
        bail!("creating group {GROUP}: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(token.token)
}

async fn enroll(b: Arc<Bench>, i: usize, token: Arc<String>) -> bool {
    let sim = &b.sims[i];
    let public = hex(sim.key.public().ed25519_bytes().expect("ed25519"));
    let signature = sim.key.sign(&api::fleet::enroll_message(&token, &public));
    let body = Enroll { token: token.to_string(), public_key: public, signature, facts: facts(i), labels: Default::default() };
    match b.http.post(b.url("/v1/fleet/enroll")).json(&body).send().await {
        Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Enrolled>().await {
            Ok(e) if e.endpoint == sim.id => true,
            Ok(e) => {
                b.note_error(format!("endpoint {i}: enrolled as {}, expected {}", e.endpoint, sim.id));
                false
            }
            Err(e) => {
                b.note_error(format!("endpoint {i}: {e}"));
                false
            }
        },
        Ok(r) => {
            b.note_error(format!("endpoint {i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
            false
        }
        Err(e) => {
            b.note_error(format!("endpoint {i}: {e}"));
            false
        }
    }
}

async fn open_session(b: Arc<Bench>, i: usize) -> bool {
    let sim = &b.sims[i];
    let time = now();
    let req = SessionRequest { endpoint: sim.id.clone(), time, signature: sim.key.sign(&api::fleet::session_message(&sim.id, time)) };
    let r = match b.http.post(b.url("/v1/fleet/session")).json(&req).send().await {
        Ok(r) if r.status() == StatusCode::OK => r.json::<Session>().await,
        Ok(r) => {
            b.note_error(format!("session {i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
            return false;
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(s) => match HeaderValue::from_str(&format!("Bearer {}", s.token)) {
            Ok(v) => sim.auth.set(v).is_ok(),
            Err(_) => {
                b.note_error(format!("session {i}: a token that is not a header value"));
                false
            }
        },
        Err(e) => {
            b.note_error(format!("session {i}: {e}"));
            false
        }
    }
}

/// The first check-in: 200 with the desired state; keeps its ETag (and the channel's
/// generation, the target).
async fn first_check_in(b: Arc<Bench>, i: usize) -> bool {
    let sim = &b.sims[i];
    let r =
        b.http.get(b.desired_url.clone()).header(AUTHORIZATION, b.auth(i)).header(api::fleet::ACTUAL_HEADER, b.actual.clone()).send().await;
    let r = match r {
        Ok(r) if r.status() == StatusCode::OK => r,
        Ok(r) => {
            b.note_error(format!("check-in {i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
            return false;
        }
        Err(e) => {
            b.note_error(format!("check-in {i}: {e}"));
            return false;
        }
    };
    let etag = r.headers().get(ETAG).cloned();
    let desired = r.json::<Desired>().await;
    match (etag, desired) {
        (Some(etag), Ok(d)) => {
            let Some(g) = d.mounts.iter().find(|m| m.mount.path == MOUNT).and_then(|m| m.generation.clone()) else {
                b.note_error(format!("check-in {i}: no generation for {MOUNT} in the desired state (is the group there?)"));
                return false;
            };
            let _ = b.target.set(g);
            let _ = sim.etag.set(etag);
            true
        }
        (etag, d) => {
            b.note_error(format!("check-in {i}: ETag {etag:?}, body {:?}", d.err()));
            false
        }
    }
}

/// A conditional check-in of a random endpoint: true on 304.
async fn conditional_check_in(b: Arc<Bench>, _i: usize, salt: u64) -> bool {
    let i = Rng(salt | 1).below(b.sims.len());
    let etag = b.sims[i].etag.get().cloned().unwrap_or(HeaderValue::from_static(""));
    let r = b
        .http
        .get(b.desired_url.clone())
        .header(AUTHORIZATION, b.auth(i))
        .header(api::fleet::ACTUAL_HEADER, b.actual.clone())
        .header(IF_NONE_MATCH, etag)
        .send()
        .await;
    match r {
        Ok(r) if r.status() == StatusCode::NOT_MODIFIED => true,
        Ok(r) => {
            b.note_error(format!("conditional check-in {i}: {} (expected 304)", r.status()));
            false
        }
        Err(e) => {
            b.note_error(format!("conditional check-in {i}: {e}"));
            false
        }
    }
}

/// The batch endpoint `i` sends: its switch to the target (or, for every `fail_every`-th, a
/// failed try) and its cache, with its next two sequence numbers and its mounts now.
fn batch_of(b: &Bench, i: usize) -> ReportBatch {
    let sim = &b.sims[i];
    let seq = sim.seq.fetch_add(2, Ordering::Relaxed);
    let (running, target, time) = (b.args.running.clone(), b.target().to_string(), now());
    let fails = b.args.fail_every > 0 && i % b.args.fail_every == 0;
    let first = if fails {
        EventKind::Failed {
            path: MOUNT.into(),
            generation: Some(target.clone()),
            error: "fetching 3 objects: connection reset by peer".into(),
        }
    } else {
        EventKind::Switched { path: MOUNT.into(), from: running.clone(), to: target.clone(), millis: 20 + (i % 50) as u64 }
    };
    let (current, previous) = if fails { (running.clone(), None) } else { (target.clone(), Some(running.clone())) };
    let cache = CacheState {
        used_bytes: 700 << 20,
        free_bytes: 40 << 30,
        pins: Vec::new(),
        generations: if fails { vec![running] } else { vec![running, target] },
    };
    ReportBatch {
        events: vec![Event { seq: seq + 1, time, kind: first }, Event { seq: seq + 2, time, kind: EventKind::Cache { cache } }],
        mounts: vec![MountState { path: MOUNT.into(), current: Some(current), previous }],
    }
}

async fn report(b: Arc<Bench>, i: usize) -> bool {
    let i = i % b.sims.len();
    let _turn = b.sims[i].turn.lock().await;
    let batch = batch_of(&b, i);
    let r = b.http.post(b.reports_url.clone()).header(AUTHORIZATION, b.auth(i)).json(&batch).send().await;
    match r {
        Ok(r) if r.status() == StatusCode::OK => match r.json::<ReportAck>().await {
            Ok(ack) if ack.stored == 2 && ack.acked == batch.events[1].seq => true,
            Ok(ack) => {
                b.note_error(format!("report {i}: {ack:?}, expected 2 stored up to {}", batch.events[1].seq));
                false
            }
            Err(e) => {
                b.note_error(format!("report {i}: {e}"));
                false
            }
        },
        Ok(r) => {
            b.note_error(format!("report {i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
            false
        }
        Err(e) => {
            b.note_error(format!("report {i}: {e}"));
            false
        }
    }
}

/// One batch of `--history` cache events from endpoint `i`.
async fn history(b: Arc<Bench>, i: usize) -> bool {
    let _turn = b.sims[i].turn.lock().await;
    let n = b.args.history.min(api::fleet::MAX_EVENTS) as u64;
    let first = b.sims[i].seq.fetch_add(n, Ordering::Relaxed) + 1;
    let time = now();
    let cache = CacheState { used_bytes: 700 << 20, free_bytes: 40 << 30, pins: Vec::new(), generations: vec![b.args.running.clone()] };
    let events = (first..first + n).map(|seq| Event { seq, time, kind: EventKind::Cache { cache: cache.clone() } }).collect();
    let batch = ReportBatch { events, mounts: Vec::new() };
    match b.http.post(b.reports_url.clone()).header(AUTHORIZATION, b.auth(i)).json(&batch).send().await {
        Ok(r) if r.status() == StatusCode::OK => true,
        Ok(r) => {
            b.note_error(format!("history {i}: {} {}", r.status(), r.text().await.unwrap_or_default()));
            false
        }
        Err(e) => {
            b.note_error(format!("history {i}: {e}"));
            false
        }
    }
}

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens the event stream of endpoint `i` and reads up to its first `check` event.
async fn open_stream(http: &reqwest::Client, b: &Bench, i: usize) -> Result<reqwest::Response> {
    let mut r =
        http.get(b.url("/v1/fleet/events")).header(AUTHORIZATION, b.auth(i)).send().await.with_context(|| format!("opening stream {i}"))?;
    if r.status() != StatusCode::OK {
        bail!("stream {i}: {}", r.status());
    }
    let mut seen = Vec::new();
    while let Some(chunk) = r.chunk().await.with_context(|| format!("reading stream {i}"))? {
        seen.extend_from_slice(&chunk);
        if seen.windows(12).any(|w| w == b"event: check") {
            return Ok(r);
        }
    }
    bail!("stream {i} ended before its first check event")
}

async fn streams(b: &Arc<Bench>) -> Result<String> {
    let n = b.args.streams.min(b.sims.len());
    // A client of its own: each held stream keeps its connection.
    let http = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(0).build()?;
    let rss_before = b.args.pid.and_then(rss_kib);
    let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.args.concurrency.min(n.max(1)) {
        let (b, http, held, next, failed) = (b.clone(), http.clone(), held.clone(), next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failed.load(Ordering::Relaxed) {
                    return;
                }
                match open_stream(&http, &b, i).await {
                    Ok(r) => held.lock().unwrap().push(r),
                    Err(e) => {
                        b.note_error(format!("{e:#}"));
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let opened = start.elapsed().as_secs_f64();
    let count = held.lock().unwrap().len();
    // Let the server settle (its connection tasks idle on their streams) before sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = b.args.pid.and_then(rss_kib);
    let per = match (rss_before, rss_after) {
        (Some(a), Some(z)) if count > 0 => format!("{:.1}", (z as f64 - a as f64) / count as f64),
        _ => "unknown".into(),
    };
    let line = format!(
        "RESULT phase=streams ok={count} errors={} seconds={opened:.2} rss_before_kib={} rss_after_kib={} kib_per_stream={per}",
        n - count,
        rss_before.map_or("unknown".into(), |v| v.to_string()),
        rss_after.map_or("unknown".into(), |v| v.to_string()),
    );
    drop(std::mem::take(&mut *held.lock().unwrap()));
    Ok(line)
}

async fn compliance(b: &Bench) -> Result<String> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let start = Instant::now();
        let r =
            b.http.get(b.url("/v1/fleet/compliance")).query(&[("target", &b.args.channel)]).bearer_auth(&b.args.admin_token).send().await?;
        if r.status() != StatusCode::OK {
            bail!("compliance: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        let body = r.bytes().await?;
        times.push(start.elapsed().as_secs_f64());
        last = Some(body);
    }
    times.sort_by(f64::total_cmp);
    let body = last.expect("three answers");
    let c: Compliance = serde_json::from_slice(&body).context("parsing the compliance answer")?;
    let counts: Vec<String> = c.counts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    Ok(format!(
        "RESULT phase=compliance seconds={:.3} min_seconds={:.3} max_seconds={:.3} total={} on={} stragglers={} counts={} bytes={} generation={}",
        times[1],
        times[0],
        times[2],
        c.total,
        c.on,
        c.stragglers.len(),
        if counts.is_empty() { "-".into() } else { counts.join(",") },
        body.len(),
        c.generation,
    ))
}

fn say(line: String) {
    println!("{line}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.endpoints == 0 || args.concurrency == 0 {
        bail!("--endpoints and --concurrency must be at least 1");
    }
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let t0 = Instant::now();
    let sims: Vec<Sim> = (0..args.endpoints)
        .map(|i| {
            let key = key_of(args.seed, i);
            let id = EndpointId::of_key(key.public().ed25519_bytes().expect("ed25519"));
            Sim { key, id, auth: OnceLock::new(), etag: OnceLock::new(), seq: AtomicU64::new(0), turn: Default::default() }
        })
        .collect();
    eprintln!("fleet-load: {} keys in {:.1} s", sims.len(), t0.elapsed().as_secs_f64());
    let actual = api::fleet::format_actual(&[(MOUNT.to_string(), Some(args.running.clone()))]);
    let actual = HeaderValue::from_str(&actual).context("--running makes a bad header")?;
    let base = Url::parse(&args.url).with_context(|| format!("--url {}", args.url))?;
    let (desired_url, reports_url) = (base.join("/v1/fleet/desired")?, base.join("/v1/fleet/reports")?);
    let b = Arc::new(Bench { args, http, sims, target: OnceLock::new(), errors: Mutex::new(Vec::new()), actual, desired_url, reports_url });
    let n = b.sims.len();
    let duration = Duration::from_secs(b.args.duration);

    let token = Arc::new(setup(&b).await?);
    let (t, s) = b.run(Some(n), None, move |b, i, _| enroll(b, i, token.clone())).await;
    b.print_errors("enroll");
    let failed = t.errors;
    say(t.line("enroll", s, ""));
    if failed > 0 {
        bail!("{failed} endpoints did not enroll");
    }

    let (t, s) = b.run(Some(n), None, |b, i, _| open_session(b, i)).await;
    b.print_errors("session");
    let failed = t.errors;
    say(t.line("session", s, ""));
    if failed > 0 {
        bail!("{failed} sessions were not opened");
    }

    if let Some(to) = &b.args.rollout_to {
        say(start_rollout(&b, to).await?);
    }

    let (t, s) = b.run(Some(n), None, |b, i, _| first_check_in(b, i)).await;
    b.print_errors("first check-in");
    let failed = t.errors;
    say(t.line("checkin_first", s, &format!("target={}", b.target())));
    if failed > 0 {
        bail!("{failed} first check-ins failed");
    }

    if b.args.history > 0 {
        let (t, s) = b.run(Some(n), None, |b, i, _| history(b, i)).await;
        b.print_errors("history");
        say(t.line("history", s, &format!("events_each={}", b.args.history.min(api::fleet::MAX_EVENTS))));
    }

    let (t, s) = b.run(None, Some(Instant::now() + duration), conditional_check_in).await;
    b.print_errors("conditional check-in");
    say(t.line("checkin_304", s, ""));

    let cursor = Arc::new(AtomicUsize::new(0));
    let c = cursor.clone();
    let (t, s) = b
        .run(None, Some(Instant::now() + duration), move |b, i, _| {
            c.fetch_max(i + 1, Ordering::Relaxed);
            report(b, i)
        })
        .await;
    b.print_errors("report");
    say(t.line("report", s, ""));
    // Every endpoint reports once, so that compliance sees a settled fleet (untimed goal).
    let done = cursor.load(Ordering::Relaxed);
    if done < n {
        let (t, s) = b.run(Some(n - done), None, move |b, i, _| report(b, done + i)).await;
        b.print_errors("report (the rest)");
        say(t.line("report_rest", s, ""));
    }

    say(streams(&b).await?);
    b.print_errors("streams");

    say(compliance(&b).await?);
    Ok(())
}
