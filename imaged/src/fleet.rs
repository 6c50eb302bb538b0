//! The fleet's state on the server: enrolled endpoints, enrollment tokens and groups, held in
//! memory and written to the metadata database (`fleet/` keys) on every change. Idle check-ins
//! touch memory only: `last_seen` is flushed in batches every few seconds. Reports are written
//! durably, many endpoints' batches in one synced write (`Committer`), before they are acked.
//! The pure parts (desired state, reports, compliance reasons) are free functions tested
//! without a server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use api::fleet::{
    CacheState, Conflict, Desired, DesiredMount, EndpointId, EndpointSummary, Event, EventKind, Facts, Group, GroupName, Labels,
    MountState, Reason, ReportBatch, Selector, Source,
};
use format::ChannelName;

use crate::meta::{AuditEntry, Meta, MetaError};

/// The hint that tells event streams to end.
pub const CLOSING: u64 = u64::MAX;

/// Events kept per endpoint for `fleet show`.
pub const RECENT_EVENTS: usize = 50;

/// What the fleet is told by the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Seconds between check-ins, told to endpoints.
    pub interval: u64,
    /// An endpoint not heard from for this long is offline.
    pub offline_after: i64,
    /// How long a session token works.
    pub session_seconds: i64,
}

/// A problem an endpoint reported on one mount, until a later success clears it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// `failed`, `rolled_back`, `metadata_stale` or `fetch_failed`.
    pub kind: String,
    /// The error or the reason.
    pub text: String,
    /// The generation involved, if known (for a rollback: the one left).
    #[serde(default)]
    pub generation: Option<String>,
    /// When, by the endpoint's clock.
    pub time: i64,
    /// For `waiting`: until when, if known.
    #[serde(default)]
    pub until: Option<i64>,
}

/// An endpoint as stored (`fleet/ep/ID`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Id.
    pub id: EndpointId,
    /// Its ed25519 public key, hex.
    pub public_key: String,
    /// Facts as last reported.
    pub facts: Facts,
    /// Labels from its configuration.
    pub own_labels: Labels,
    /// Labels from the enrollment token.
    pub token_labels: Labels,
    /// Labels operators set.
    pub operator_labels: Labels,
    /// When it enrolled.
    pub enrolled: i64,
    /// When it was revoked.
    pub revoked: Option<i64>,
    /// The highest report sequence number stored.
    pub last_seq: u64,
    /// Its mounts as last reported.
    pub mounts: Vec<MountState>,
    /// Its cache as last reported.
    pub cache: Option<CacheState>,
    /// Open problems per mount path.
    pub problems: BTreeMap<String, Problem>,
    /// Per mount path, the generation it last reported healthy on (cleared by a switch).
    #[serde(default)]
    pub healthy: BTreeMap<String, String>,
    /// An operator's pin, `IMAGE@N`: mounts of that image stay on it.
    #[serde(default)]
    pub pin: Option<String>,
    /// An operator's hold, with its reason: every mount stays where it is.
    #[serde(default)]
    pub hold: Option<String>,
    /// Last check-in or report as of this record's write (`fleet/seen/ID` may be newer).
    pub last_seen: Option<i64>,
}

impl Record {
    /// A newly enrolled endpoint: nothing reported yet.
    pub fn new(id: EndpointId, public_key: String, facts: Facts, enrolled: i64) -> Record {
        Record {
            id,
            public_key,
            facts,
            own_labels: Labels::new(),
            token_labels: Labels::new(),
            operator_labels: Labels::new(),
            enrolled,
            revoked: None,
            last_seq: 0,
            mounts: Vec::new(),
            cache: None,
            problems: BTreeMap::new(),
            healthy: BTreeMap::new(),
            pin: None,
            hold: None,
            last_seen: None,
        }
    }

    /// All labels: the endpoint's, the token's, then the operators' (later ones win).
    pub fn labels(&self) -> Labels {
        let mut l = self.own_labels.clone();
        l.extend(self.token_labels.clone());
        l.extend(self.operator_labels.clone());
        l
    }
}

/// An enrollment token as stored (`fleet/token/HASH`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredToken {
    /// The listing.
    pub info: api::fleet::EnrollToken,
}

/// A desired state as served: its ETag and body.
#[derive(Debug, Clone)]
pub struct Served {
    /// Fleet epoch it was computed at.
    epoch: u64,
    /// Quoted ETag.
    pub etag: String,
    /// JSON body.
    pub body: bytes::Bytes,
    /// What it says (for compliance and `fleet show`).
    pub desired: Arc<Desired>,
}

/// An enrolled endpoint in memory.
pub struct Endpoint {
    /// Id.
    pub id: EndpointId,
    /// Its key.
    pub key: trust::keys::PublicKey,
    /// The stored record.
    pub record: Mutex<Record>,
    /// Serialises writes of this endpoint's record across awaits.
    pub write_turn: tokio::sync::Mutex<()>,
    /// Last check-in or report, seconds (0: never).
    pub last_seen: AtomicI64,
    /// When it was revoked (0: not).
    pub revoked: AtomicI64,
    /// The last desired state served.
    pub served: Mutex<Option<Served>>,
}

impl Endpoint {
    fn new(record: Record, seen: i64) -> Option<Endpoint> {
        let bytes: [u8; 32] = hex_decode(&record.public_key)?.try_into().ok()?;
        let key = trust::keys::PublicKey::from_raw(&bytes)?;
        Some(Endpoint {
            id: record.id.clone(),
            key,
            last_seen: AtomicI64::new(seen.max(record.last_seen.unwrap_or(0))),
            revoked: AtomicI64::new(record.revoked.unwrap_or(0)),
            record: Mutex::new(record),
            write_turn: tokio::sync::Mutex::new(()),
            served: Mutex::new(None),
        })
    }

    /// A copy of the record.
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }

    /// Last seen, if ever.
    pub fn seen(&self) -> Option<i64> {
        Some(self.last_seen.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }
}

/// Decodes lowercase or uppercase hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Encodes as lowercase hex.
pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A group with its parsed selector.
#[derive(Debug, Clone)]
pub struct LiveGroup {
    /// As stored.
    pub group: Group,
    /// Parsed.
    pub selector: Option<Selector>,
    /// Static members, for lookups.
    pub members: HashSet<EndpointId>,
}

impl LiveGroup {
    /// Parses the selector (the caller validated it).
    pub fn new(group: Group) -> Result<LiveGroup, api::fleet::BadSelector> {
        let selector = group.selector.as_deref().map(Selector::parse).transpose()?;
        let members = group.members.iter().cloned().collect();
        Ok(LiveGroup { group, selector, members })
    }

    /// Whether the endpoint with these labels is in it.
    pub fn contains(&self, id: &EndpointId, labels: &Labels) -> bool {
        self.members.contains(id) || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// Everything behind the fleet's lock.
#[derive(Default)]
pub struct Inner {
    /// Endpoints by id.
    pub endpoints: HashMap<EndpointId, Arc<Endpoint>>,
    /// Groups by name.
    pub groups: BTreeMap<GroupName, LiveGroup>,
    /// Enrollment tokens by the hex BLAKE3 of the secret.
    pub tokens: BTreeMap<String, StoredToken>,
}

/// A durable write of several endpoints' records at once.
struct Job {
    puts: Vec<(String, Vec<u8>)>,
    ranges: Vec<(String, String)>,
    done: tokio::sync::oneshot::Sender<bool>,
}

/// Batches durable writes: one synced database write for every job waiting.
struct Committer {
    /// `None` once dropped.
    tx: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// Joined on drop: the thread holds the database, which must close before the process
    /// exits (rocksdb's background threads abort on "pthread lock: Invalid argument" when the
    /// process's static destructors run under them).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Committer {
    fn start(meta: Arc<Meta>) -> Committer {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("fleet-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < 4096 {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let puts: Vec<(String, Vec<u8>)> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.puts)).collect();
                    let ranges: Vec<(String, String)> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.ranges)).collect();
                    let ok = match meta.write_ranges(&puts, &ranges) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(error = %e, "writing endpoint records failed");
                            false
                        }
                    };
                    for j in jobs {
                        let _ = j.done.send(ok);
                    }
                }
            })
            .expect("spawning the fleet's writer");
        Committer { tx: Mutex::new(Some(tx)), thread: Some(thread) }
    }

    async fn write(&self, puts: Vec<(String, Vec<u8>)>, ranges: Vec<(String, String)>) -> bool {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = match &*self.tx.lock().unwrap() {
            Some(tx) => tx.send(Job { puts, ranges, done }).is_ok(),
            None => false,
        };
        if !sent {
            return false;
        }
        wait.await.unwrap_or(false)
    }
}

/// The fleet.
pub struct Fleet {
    meta: Arc<Meta>,
    /// Endpoints, groups, tokens.
    pub inner: RwLock<Inner>,
    /// Bumped by every change that can change an endpoint's desired state.
    epoch: AtomicU64,
    hint: tokio::sync::broadcast::Sender<u64>,
    secret: [u8; 32],
    committer: Committer,
    seen_dirty: Mutex<HashSet<EndpointId>>,
    /// Event streams open now.
    pub streams: AtomicI64,
    /// Check-ins being answered now.
    pub in_flight: AtomicI64,
    /// Settings.
    pub settings: Settings,
}

fn ep_key(id: &EndpointId) -> String {
    format!("fleet/ep/{id}")
}

/// The key of one stored event: sequence numbers zero-padded so keys sort by them.
fn event_key(id: &EndpointId, seq: u64) -> String {
    format!("fleet/ev/{id}/{seq:020}")
}

fn seen_key(id: &EndpointId) -> String {
    format!("fleet/seen/{id}")
}

fn group_key(name: &GroupName) -> String {
    format!("fleet/group/{name}")
}

fn token_key(hash: &str) -> String {
    format!("fleet/token/{hash}")
}

/// Why the fleet could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A stored record does not parse.
    #[error("fleet record {key} is damaged: {why}")]
    Damaged {
        /// Its key.
        key: String,
        /// Why.
        why: String,
    },
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, LoadError> {
    serde_json::from_slice(v).map_err(|e| LoadError::Damaged { key: key.to_string(), why: e.to_string() })
}

/// The JSON of a record.
pub fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialisable")
}

impl Fleet {
    /// Loads the fleet from the database (creating its session secret the first time).
    pub fn load(meta: Arc<Meta>, settings: Settings) -> Result<Fleet, LoadError> {
        let secret: [u8; 32] = match meta.records("fleet/secret")?.into_iter().next() {
            Some((_, v)) if v.len() == 32 => v.try_into().expect("32 bytes"),
            _ => {
                let s: [u8; 32] = rand::random();
                meta.write_records(&[("fleet/secret".into(), s.to_vec())], &[], None, true)?;
                s
            }
        };
        let mut seen = HashMap::new();
        for (k, v) in meta.records("fleet/seen/")? {
            if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                seen.insert(k["fleet/seen/".len()..].to_string(), i64::from_be_bytes(b));
            }
        }
        let mut inner = Inner::default();
        for (k, v) in meta.records("fleet/ep/")? {
            let record: Record = parse(&k, &v)?;
            let s = seen.get(record.id.as_str()).copied().unwrap_or(0);
            let ep = Endpoint::new(record, s).ok_or_else(|| LoadError::Damaged { key: k.clone(), why: "bad public key".into() })?;
            inner.endpoints.insert(ep.id.clone(), Arc::new(ep));
        }
        for (k, v) in meta.records("fleet/group/")? {
            let g: Group = parse(&k, &v)?;
            let live = LiveGroup::new(g).map_err(|e| LoadError::Damaged { key: k.clone(), why: e.to_string() })?;
            inner.groups.insert(live.group.name.clone(), live);
        }
        for (k, v) in meta.records("fleet/token/")? {
            inner.tokens.insert(k["fleet/token/".len()..].to_string(), parse(&k, &v)?);
        }
        let (hint, _) = tokio::sync::broadcast::channel(16);
        Ok(Fleet {
            committer: Committer::start(meta.clone()),
            meta,
            inner: RwLock::new(inner),
            epoch: AtomicU64::new(1),
            hint,
            secret,
            seen_dirty: Mutex::new(HashSet::new()),
            streams: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            settings,
        })
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Something that can change desired states changed: served states are recomputed and
    /// every event stream is told to check in now.
    pub fn changed(&self) {
        let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.hint.send(e);
    }

    /// The server is stopping: event streams end (so a graceful shutdown does not wait for
    /// them) and the last-seen times are written.
    pub fn close(&self) {
        let _ = self.hint.send(CLOSING);
        if let Err(e) = self.flush_seen() {
            tracing::warn!(error = %e, "writing last-seen times at shutdown failed");
        }
    }

    /// A receiver of "check now" hints.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<u64> {
        self.hint.subscribe()
    }

    /// The session token for `id` valid until `expires`.
    pub fn session_token(&self, id: &EndpointId, expires: i64) -> String {
        format!("ep1.{id}.{expires}.{}", self.mac(id, expires))
    }

    fn mac(&self, id: &EndpointId, expires: i64) -> String {
        let mut m = self.secret.to_vec();
        m.extend_from_slice(format!("session\n{id}\n{expires}").as_bytes());
        format::Digest::of(&m).to_hex()[..32].to_string()
    }

    /// The endpoint and expiry a session token names, if its MAC holds.
    pub fn check_session(&self, token: &str) -> Option<(EndpointId, i64)> {
        let mut parts = token.split('.');
        let (Some("ep1"), Some(id), Some(exp), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let id = EndpointId::new(id).ok()?;
        let expires: i64 = exp.parse().ok()?;
        let want = self.mac(&id, expires);
        let same = want.len() == mac.len() && want.bytes().zip(mac.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        same.then_some((id, expires))
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: &EndpointId) -> Option<Arc<Endpoint>> {
        self.inner.read().unwrap().endpoints.get(id).cloned()
    }

    /// Marks the endpoint seen now (memory only; flushed by `flush_seen`).
    pub fn seen(&self, ep: &Endpoint, now: i64) {
        if ep.last_seen.swap(now, Ordering::Relaxed) != now {
            self.seen_dirty.lock().unwrap().insert(ep.id.clone());
        }
    }

    /// Writes the last-seen times that changed since the last flush (not synced: a crash
    /// loses at most one flush interval of them).
    pub fn flush_seen(&self) -> Result<usize, MetaError> {
        let dirty: Vec<EndpointId> = std::mem::take(&mut *self.seen_dirty.lock().unwrap()).into_iter().collect();
        if dirty.is_empty() {
            return Ok(0);
        }
        let inner = self.inner.read().unwrap();
        let puts: Vec<(String, Vec<u8>)> = dirty
            .iter()
            .filter_map(|id| inner.endpoints.get(id))
            .map(|ep| (seen_key(&ep.id), ep.last_seen.load(Ordering::Relaxed).to_be_bytes().to_vec()))
            .collect();
        drop(inner);
        self.meta.write_records(&puts, &[], None, false)?;
        Ok(puts.len())
    }

    /// Writes an endpoint's record and its new events durably (batched with other
    /// endpoints') and then makes the record the one in memory. Events older than the last
    /// `RECENT_EVENTS` go, a range at a time. False if the write failed (memory unchanged).
    pub async fn commit(&self, ep: &Endpoint, record: Record, events: &[Event]) -> bool {
        let mut puts = vec![(ep_key(&ep.id), json(&record))];
        puts.extend(events.iter().map(|e| (event_key(&ep.id, e.seq), json(e))));
        let old = RECENT_EVENTS as u64;
        let before = ep.record.lock().unwrap().last_seq;
        let ranges = match record.last_seq / old > before / old && record.last_seq > 2 * old {
            // Every `RECENT_EVENTS` sequence numbers, what is older than twice that goes.
            true => vec![(event_key(&ep.id, 0), event_key(&ep.id, record.last_seq - 2 * old))],
            false => vec![],
        };
        if !self.committer.write(puts, ranges).await {
            return false;
        }
        ep.revoked.store(record.revoked.unwrap_or(0), Ordering::Relaxed);
        *ep.record.lock().unwrap() = record;
        true
    }

    /// Adds or replaces an endpoint (enrollment), with the token's new state and the audit
    /// entry, durably (`Meta` numbers and chains the entry under its own lock).
    pub fn put_enrolled(&self, record: Record, token: Option<(&str, &StoredToken)>, audit: AuditEntry) -> Result<Arc<Endpoint>, MetaError> {
        let mut puts = vec![(ep_key(&record.id), json(&record))];
        if let Some((hash, t)) = token {
            puts.push((token_key(hash), json(t)));
        }
        self.meta.write_records(&puts, &[], Some(audit), true)?;
        let seen = record.last_seen.unwrap_or(0);
        let ep = Arc::new(Endpoint::new(record, seen).expect("the caller checked the key"));
        let mut inner = self.inner.write().unwrap();
        if let Some((hash, t)) = token {
            inner.tokens.insert(hash.to_string(), t.clone());
        }
        match inner.endpoints.get(&ep.id) {
            // Enrolled again: keep the one in memory (open streams hold it), with the new record.
            Some(old) => {
                *old.record.lock().unwrap() = ep.record();
                Ok(old.clone())
            }
            None => {
                inner.endpoints.insert(ep.id.clone(), ep.clone());
                Ok(ep)
            }
        }
    }

    /// Writes an admin's change of one endpoint (labels, revocation) with its audit entry.
    pub fn put_record(&self, ep: &Endpoint, record: Record, audit: AuditEntry) -> Result<(), MetaError> {
        self.meta.write_records(&[(ep_key(&ep.id), json(&record))], &[], Some(audit), true)?;
        ep.revoked.store(record.revoked.unwrap_or(0), Ordering::Relaxed);
        *ep.record.lock().unwrap() = record;
        self.changed();
        Ok(())
    }

    /// Stores a new enrollment token.
    pub fn put_token(&self, hash: &str, token: StoredToken, audit: AuditEntry) -> Result<(), MetaError> {
        self.meta.write_records(&[(token_key(hash), json(&token))], &[], Some(audit), true)?;
        self.inner.write().unwrap().tokens.insert(hash.to_string(), token);
        Ok(())
    }

    /// Stores (creates or replaces) a group.
    pub fn put_group(&self, live: LiveGroup, audit: AuditEntry) -> Result<(), MetaError> {
        self.meta.write_records(&[(group_key(&live.group.name), json(&live.group))], &[], Some(audit), true)?;
        self.inner.write().unwrap().groups.insert(live.group.name.clone(), live);
        self.changed();
        Ok(())
    }

    /// The group named `name`, if there is one.
    pub fn group(&self, name: &GroupName) -> Option<LiveGroup> {
        self.inner.read().unwrap().groups.get(name).cloned()
    }

    /// Removes a group.
    pub fn remove_group(&self, name: &GroupName, audit: AuditEntry) -> Result<Option<LiveGroup>, MetaError> {
        self.meta.write_records(&[], &[group_key(name)], Some(audit), true)?;
        let removed = self.inner.write().unwrap().groups.remove(name);
        self.changed();
        Ok(removed)
    }

    /// The desired state of `ep`, from the one served last if nothing changed since.
    pub fn served(&self, ep: &Endpoint, channel: &dyn Fn(&ChannelName) -> Option<String>, overlay: &dyn Fn(&Record, &mut Desired)) -> Served {
        let epoch = self.epoch();
        if let Some(s) = ep.served.lock().unwrap().as_ref().filter(|s| s.epoch == epoch) {
            return s.clone();
        }
        let labels = ep.record.lock().unwrap().labels();
        let mut desired = {
            let inner = self.inner.read().unwrap();
            desired_of(&ep.id, &labels, inner.groups.values(), channel, self.settings.interval)
        };
        overlay(&ep.record.lock().unwrap(), &mut desired);
        let body = json(&desired);
        let etag = format!("\"{}\"", &format::Digest::of(&body).to_hex()[..20]);
        let s = Served { epoch, etag, body: body.into(), desired: Arc::new(desired) };
        *ep.served.lock().unwrap() = Some(s.clone());
        s
    }

    /// The last `RECENT_EVENTS` events an endpoint reported, oldest first.
    pub fn recent_events(&self, id: &EndpointId) -> Result<Vec<Event>, MetaError> {
        let stored = self.meta.records(&format!("fleet/ev/{id}/"))?;
        let skip = stored.len().saturating_sub(RECENT_EVENTS);
        Ok(stored.into_iter().skip(skip).filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect())
    }

    /// Every endpoint, by id.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        let mut v: Vec<Arc<Endpoint>> = self.inner.read().unwrap().endpoints.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Groups of an endpoint with these labels.
    pub fn groups_of(&self, id: &EndpointId, labels: &Labels) -> Vec<GroupName> {
        self.inner.read().unwrap().groups.values().filter(|g| g.contains(id, labels)).map(|g| g.group.name.clone()).collect()
    }

    /// The summary of one endpoint.
    pub fn summary(&self, ep: &Endpoint, now: i64) -> EndpointSummary {
        let r = ep.record();
        let labels = r.labels();
        let last_seen = ep.seen();
        EndpointSummary {
            id: ep.id.clone(),
            hostname: r.facts.hostname.clone(),
            groups: self.groups_of(&ep.id, &labels),
            labels,
            mounts: r.mounts.clone(),
            offline: last_seen.is_none_or(|s| now - s > self.settings.offline_after),
            last_seen,
            revoked: r.revoked,
        }
    }

    /// Generations endpoints seen since `since` run now or would roll back to, with who.
    pub fn running(&self, since: i64) -> BTreeMap<String, Vec<EndpointId>> {
        let mut out: BTreeMap<String, Vec<EndpointId>> = BTreeMap::new();
        for ep in self.endpoints() {
            if ep.revoked.load(Ordering::Relaxed) != 0 || ep.seen().is_none_or(|s| s < since) {
                continue;
            }
            let r = ep.record.lock().unwrap();
            let mut gens: Vec<&String> = r.mounts.iter().flat_map(|m| m.current.iter().chain(m.previous.iter())).collect();
            gens.sort();
            gens.dedup();
            for g in gens {
                out.entry(g.clone()).or_default().push(ep.id.clone());
            }
        }
        out
    }
}

impl Fleet {
    /// Per generation, the endpoints (not revoked) that run it, would roll back to it or
    /// hold it in their cache, as they last reported.
    pub fn holders(&self) -> HashMap<String, Vec<api::fleet::Holder>> {
        let mut out: HashMap<String, Vec<api::fleet::Holder>> = HashMap::new();
        for ep in self.endpoints() {
            if ep.revoked.load(Ordering::Relaxed) != 0 {
                continue;
            }
            let r = ep.record.lock().unwrap();
            let mut seen: HashSet<&str> = HashSet::new();
            let running = r.mounts.iter().filter_map(|m| m.current.as_deref()).map(|g| (g, "running"));
            let previous = r.mounts.iter().filter_map(|m| m.previous.as_deref()).map(|g| (g, "previous"));
            let cached = r.cache.iter().flat_map(|c| c.generations.iter().map(|g| (g.as_str(), "cached")));
            for (g, how) in running.chain(previous).chain(cached) {
                if seen.insert(g) {
                    let h = api::fleet::Holder { endpoint: ep.id.clone(), hostname: r.facts.hostname.clone(), how: how.into() };
                    out.entry(g.to_string()).or_default().push(h);
                }
            }
        }
        out
    }
}

/// An endpoint's desired state: the union of its groups' namespaces; on a path several
/// groups name, the highest priority wins, then the group name that sorts first.
pub fn desired_of<'a>(
    id: &EndpointId,
    labels: &Labels,
    groups: impl Iterator<Item = &'a LiveGroup>,
    channel: &dyn Fn(&ChannelName) -> Option<String>,
    interval: u64,
) -> Desired {
    let mut mine: Vec<&LiveGroup> = groups.filter(|g| g.contains(id, labels)).collect();
    mine.sort_by(|a, b| b.group.priority.cmp(&a.group.priority).then_with(|| a.group.name.cmp(&b.group.name)));
    let mut by_path: BTreeMap<&str, (DesiredMount, Vec<GroupName>)> = BTreeMap::new();
    for g in &mine {
        for m in &g.group.namespace.mounts {
            match by_path.get_mut(m.path.as_str()) {
                Some((_, losers)) => losers.push(g.group.name.clone()),
                None => {
                    let generation = match &m.source {
                        Source::Channel(c) => channel(c),
                        Source::Pinned(g) => Some(g.clone()),
                    };
                    by_path.insert(&m.path, (
                            DesiredMount {
                                mount: m.clone(),
                                group: g.group.name.clone(),
                                generation,
                                rollout: None,
                                soak_seconds: None,
                                ignore_windows: false,
                                window: g.group.window.clone(),
                                activation: None,
                            },
                            Vec::new(),
                        ));
                }
            }
        }
    }
    let mut mounts = Vec::new();
    let mut conflicts = Vec::new();
    let pins: Vec<&String> = mine.iter().filter_map(|g| g.group.pin.as_ref()).collect();
    for (path, (mut m, losers)) in by_path {
        if !losers.is_empty() {
            conflicts.push(Conflict { path: path.to_string(), winner: m.group.clone(), losers });
        }
        if let Some(pin) = pins.iter().find(|p| same_image(p, &m)) {
            m.mount.source = Source::Pinned((*pin).clone());
            m.generation = Some((*pin).clone());
        }
        mounts.push(m);
    }
    let mut groups: Vec<GroupName> = mine.iter().map(|g| g.group.name.clone()).collect();
    groups.sort();
    Desired { endpoint: id.clone(), groups, mounts, conflicts, interval_seconds: interval, withdrawn: Vec::new(), labels: labels.clone() }
}

/// Whether pin `pin` (`IMAGE@N`) names the image of mount `m`: the image of its pinned
/// generation, or of the generation its channel names now.
pub fn same_image(pin: &str, m: &DesiredMount) -> bool {
    let image = |g: &str| g.rsplit_once('@').map(|(i, _)| i.to_string());
    let mine = match &m.mount.source {
        Source::Pinned(g) => image(g),
        Source::Channel(_) => m.generation.as_deref().and_then(image),
    };
    mine.is_some() && mine == image(pin)
}

/// Why a report batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// More events than `MAX_EVENTS`.
    TooMany(usize),
    /// Sequence numbers not increasing, a zero, bad text or a bad mount.
    Bad(String),
}

/// Checks a batch before anything is stored.
pub fn check_report(batch: &ReportBatch) -> Result<(), ReportError> {
    if batch.events.len() > api::fleet::MAX_EVENTS {
        return Err(ReportError::TooMany(batch.events.len()));
    }
    let mut last = 0;
    for e in &batch.events {
        if e.seq <= last {
            return Err(ReportError::Bad(format!("sequence number {} follows {last}: they must increase from 1", e.seq)));
        }
        last = e.seq;
        if let Some(p) = e.kind.problem() {
            return Err(ReportError::Bad(p));
        }
    }
    if batch.mounts.len() > 64 {
        return Err(ReportError::Bad("more than 64 mounts".into()));
    }
    for m in &batch.mounts {
        let bad_gen = |g: &Option<String>| g.as_deref().is_some_and(|g| api::fleet::parse_generation(g).is_none());
        if !m.path.starts_with('/') || !api::fleet::clean_text(&m.path, false) || bad_gen(&m.current) || bad_gen(&m.previous) {
            return Err(ReportError::Bad(format!("mount {:?}: a path is absolute and a generation IMAGE@N", m.path)));
        }
    }
    Ok(())
}

fn set_mount(r: &mut Record, path: &str, current: Option<String>, previous: Option<String>) {
    match r.mounts.iter_mut().find(|m| m.path == path) {
        Some(m) => {
            m.current = current;
            if previous.is_some() {
                m.previous = previous;
            }
        }
        None => r.mounts.push(MountState { path: path.to_string(), current, previous }),
    }
    r.mounts.sort_by(|a, b| a.path.cmp(&b.path));
}

/// Applies a checked batch to a record: events above `last_seq` are stored (and change the
/// mounts, cache, facts and problems they speak of), the others counted as duplicates; the
/// batch's mount list, if any, is the truth about the mounts. Returns the events stored and
/// how many were duplicates.
pub fn apply_report(r: &mut Record, batch: &ReportBatch) -> (Vec<Event>, u32) {
    let (mut stored, mut dups) = (Vec::new(), 0);
    for e in &batch.events {
        if e.seq <= r.last_seq {
            dups += 1;
            continue;
        }
        stored.push(e.clone());
        r.last_seq = e.seq;
        let problem = |kind: &str, text: &str, generation: Option<String>| Problem { kind: kind.into(), text: text.into(), generation, time: e.time, until: None };
        match &e.kind {
            EventKind::Enrolled => {}
            EventKind::Facts { facts } => r.facts = facts.clone(),
            EventKind::Mounted { path, generation } => {
                set_mount(r, path, Some(generation.clone()), None);
                r.problems.remove(path);
                r.healthy.remove(path);
            }
            EventKind::Unmounted { path } => {
                r.mounts.retain(|m| &m.path != path);
                r.problems.remove(path);
                r.healthy.remove(path);
            }
            EventKind::Switched { path, from, to, .. } => {
                set_mount(r, path, Some(to.clone()), Some(from.clone()));
                r.problems.remove(path);
                r.healthy.remove(path);
            }
            EventKind::RolledBack { path, from, to, why } => {
                set_mount(r, path, Some(to.clone()), Some(from.clone()));
                r.healthy.remove(path);
                r.problems.insert(path.clone(), problem("rolled_back", why, Some(from.clone())));
            }
            EventKind::Failed { path, generation, error } => {
                r.problems.insert(path.clone(), problem("failed", error, generation.clone()));
            }
            EventKind::MetadataStale { path, error } => {
                r.problems.insert(path.clone(), problem("metadata_stale", error, None));
            }
            EventKind::FetchFailed { path, error } => {
                r.problems.entry(path.clone()).or_insert_with(|| problem("fetch_failed", error, None));
            }
            EventKind::Cache { cache } => r.cache = Some(cache.clone()),
            EventKind::Healthy { path, generation } => {
                r.problems.remove(path);
                r.healthy.insert(path.clone(), generation.clone());
            }
            EventKind::Waiting { path, generation, why, until } => {
                let waiting = Problem { until: *until, ..problem("waiting", why, Some(generation.clone())) };
                r.problems.insert(path.clone(), waiting);
            }
            // Kept in the endpoint's history (`imgctl fleet events`).
            EventKind::Prefetched { .. } | EventKind::Drift { .. } => {}
        }
    }
    if !batch.mounts.is_empty() {
        let mut mounts = batch.mounts.clone();
        mounts.sort_by(|a, b| a.path.cmp(&b.path));
        r.mounts = mounts;
    }
    (stored, dups)
}

/// The mounts after a check-in's actual generations, if they differ from `before`.
pub fn actual_mounts(before: &[MountState], actual: &[(String, Option<String>)]) -> Option<Vec<MountState>> {
    let mut mounts = Vec::with_capacity(actual.len());
    for (path, current) in actual {
        let old = before.iter().find(|m| &m.path == path);
        let previous = match old {
            Some(m) if m.current != *current && m.current.is_some() => m.current.clone(),
            Some(m) => m.previous.clone(),
            None => None,
        };
        mounts.push(MountState { path: path.clone(), current: current.clone(), previous });
    }
    mounts.sort_by(|a, b| a.path.cmp(&b.path));
    (mounts != before).then_some(mounts)
}

/// Applies a check-in's actual generations; true if the record changed.
pub fn apply_actual(r: &mut Record, actual: &[(String, Option<String>)]) -> bool {
    match actual_mounts(&r.mounts, actual) {
        Some(m) => {
            r.mounts = m;
            true
        }
        None => false,
    }
}

/// What an endpoint's compliance answer is built from.
pub struct Observed<'a> {
    /// The record.
    pub record: &'a Record,
    /// Last seen.
    pub last_seen: Option<i64>,
    /// Its desired state now.
    pub desired: &'a Desired,
}

/// Whether the endpoint runs `generation` on some mount, and if not, why, from what it
/// reported. `channel` is the channel asked about, if the target was a channel.
pub fn reason(o: &Observed, generation: &str, channel: Option<&ChannelName>, now: i64, offline_after: i64) -> Option<Reason> {
    if o.record.mounts.iter().any(|m| m.current.as_deref() == Some(generation)) {
        return None;
    }
    let Some(seen) = o.last_seen else { return Some(Reason::NeverCheckedIn) };
    if now - seen > offline_after {
        return Some(Reason::Offline { since: seen });
    }
    if let Some(why) = &o.record.hold {
        return Some(Reason::Held { why: why.clone() });
    }
    let image = generation.rsplit_once('@').map_or(generation, |(i, _)| i);
    // The mount that should carry it: one following the channel, or one whose desired
    // generation is it.
    let offered = o.desired.mounts.iter().find(|m| match (&m.mount.source, channel) {
        (Source::Channel(c), Some(asked)) => c == asked,
        _ => m.generation.as_deref() == Some(generation),
    });
    let Some(mount) = offered else {
        let pinned = o.desired.mounts.iter().find_map(|m| match &m.mount.source {
            Source::Pinned(g) if g.rsplit_once('@').map(|(i, _)| i) == Some(image) => Some(g.clone()),
            _ => None,
        });
        // A mount of the same image following a channel: a rollout has not reached it yet.
        let same_image = o.desired.mounts.iter().any(|m| {
            matches!(m.mount.source, Source::Channel(_)) && m.generation.as_deref().and_then(|g| g.rsplit_once('@')).map(|(i, _)| i) == Some(image)
        });
        return Some(match pinned {
            Some(generation) => Reason::Pinned { generation },
            None if same_image => Reason::NotYetOffered,
            None => Reason::NotInGroup,
        });
    };
    if let Source::Pinned(g) = &mount.mount.source {
        if g != generation {
            return Some(Reason::Pinned { generation: g.clone() });
        }
    }
    Some(match o.record.problems.get(&mount.mount.path) {
        Some(p) => match p.kind.as_str() {
            "rolled_back" => Reason::RolledBack { why: p.text.clone(), time: p.time },
            "metadata_stale" => Reason::MetadataStale { error: p.text.clone(), time: p.time },
            "waiting" => Reason::Waiting { why: p.text.clone(), until: p.until },
            _ => Reason::Failed { error: p.text.clone(), time: p.time },
        },
        None => Reason::Pending { since: seen },
    })
}
