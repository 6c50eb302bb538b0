//! Fetching objects from the servers into the local store: many objects per request (ranged
//! GETs of the server's immutable serving packs where a generation's layout says where its
//! objects are, which any HTTP cache can answer; else the batch endpoint), every object verified
//! before it is stored, a deadline and a minimum
//! rate on every transfer, and failover: a server that refuses, times out, drips, or sends
//! bytes that do not match their digest is skipped for the next one and rested for a while.
//! Concurrent requests for the same object share one transfer.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cache::record_reader::{ReadRecordError, RecordReader};
pub use api::control::{ServerHealth, Traffic};
use api::ErrorCode;
use cache::Store;
use format::layout::{self, Layout};
use format::Digest;

/// Largest object accepted from a server, framed or decoded (the server's default upload limit).
pub const MAX_FETCHED_OBJECT: u64 = 64 << 20;
/// Records of one pack at most this far apart are fetched in one range (the bytes between are
/// read and dropped): fewer requests for a few more bytes.
pub const RANGE_GAP: u64 = 512 << 10;
/// Longest range asked in one request.
pub const RANGE_MAX: u64 = 16 << 20;
/// The zstd level a member of a group record is framed at alone for the cache.
const MEMBER_LEVEL: i32 = 1;
/// Ranges of one fetch asked at once (each on its own connection).
const RANGE_LANES: usize = 4;
/// How long a server's answer that a generation has no layout (yet) is believed.
const LAYOUT_RETRY: Duration = Duration::from_secs(60);

/// Limits of every transfer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// To establish a connection.
    pub connect: Duration,
    /// For one whole request, body included.
    pub deadline: Duration,
    /// Below this many bytes per second (after `rate_grace`), a transfer is abandoned.
    pub min_rate: u64,
    /// How long a transfer may run before its rate is judged.
    pub rate_grace: Duration,
    /// How long a failed server is skipped while another one works.
    pub rest: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connect: Duration::from_secs(3),
            deadline: Duration::from_secs(30),
            min_rate: 64 * 1024,
            rate_grace: Duration::from_secs(3),
            rest: Duration::from_secs(30),
        }
    }
}

/// Why objects could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Every server failed; the message says how each did.
    #[error("{missing} objects unavailable from every server: {tried}")]
    Unavailable {
        /// How many objects are still missing.
        missing: usize,
        /// What each server did.
        tried: String,
    },
    /// The local store refused to write (disk full, permissions).
    #[error("cannot store fetched object {digest}: {why}")]
    Store {
        /// The object.
        digest: Digest,
        /// Why.
        why: String,
    },
}

/// Why one request to one server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// No answer: refused or reset connection, name resolution, TLS, or no headers in time.
    #[error("{url}: request failed: {why}")]
    Transport {
        /// What was asked.
        url: String,
        /// The cause.
        why: String,
    },
    /// The server answered with an error status (and, if it sent one, its error code).
    #[error("{url}: answered {}", status_text(*status))]
    Http {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's code; `Unknown` when the body is not imaged's (a proxy's, say).
        code: ErrorCode,
    },
    /// The answer is longer than allowed.
    #[error("{url}: {}", match announced {
        Some(n) => format!("announces {n} bytes, more than the {max} allowed"),
        None => format!("more than the {max} bytes allowed"),
    })]
    TooLarge {
        /// What was asked.
        url: String,
        /// The most allowed.
        max: u64,
        /// The length the server announced, if it did.
        announced: Option<u64>,
    },
    /// The body did not arrive within the deadline, or dripped below the minimum rate.
    #[error("{url}: {why}")]
    Deadline {
        /// What was asked.
        url: String,
        /// How long it took, or how slow it was.
        why: String,
    },
    /// The body broke off or is not what was asked (cut inside a record, an object not
    /// asked for or not matching its digest).
    #[error("{url}: {why}")]
    BadAnswer {
        /// What was asked.
        url: String,
        /// What is wrong with it.
        why: String,
    },
}

/// `404 Not Found`, as reqwest writes a status.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status) {
        Ok(s) => s.to_string(),
        Err(_) => status.to_string(),
    }
}

impl RemoteError {
    /// A failure to read the body of `url`: past the deadline or too slow, else broken off.
    fn reading(url: &str, e: std::io::Error) -> RemoteError {
        let url = url.to_string();
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.get_ref().and_then(|i| i.downcast_ref::<reqwest::Error>()).is_some_and(reqwest::Error::is_timeout);
        match timed_out {
            true => RemoteError::Deadline { url, why: e.to_string() },
            false => RemoteError::BadAnswer { url, why: e.to_string() },
        }
    }

    /// An error status from `url`, with the server's code if its body says one.
    fn status(url: &str, resp: reqwest::blocking::Response) -> RemoteError {
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let _ = resp.take(64 << 10).read_to_end(&mut body);
        let code = serde_json::from_slice::<api::ErrorBody>(&body).map_or(ErrorCode::Unknown, |b| b.error);
        RemoteError::Http { url: url.to_string(), status, code }
    }
}

struct Server {
    url: String,
    ok: u64,
    failed: u64,
    last_error: Option<String>,
    rest_until: Option<Instant>,
}

/// Fetches objects into a store from a list of servers.
pub struct Fetcher {
    servers: Mutex<Vec<Server>>,
    client: reqwest::blocking::Client,
    store: Arc<Store>,
    limits: Limits,
    inflight: Mutex<HashSet<Digest>>,
    landed: Condvar,
    requests: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    /// Called when the disk is full; true if it made room (the cache evicted something).
    make_room: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Where the layouts loaded so far place objects.
    layouts: std::sync::RwLock<Layouts>,
}

/// What the loaded layouts say. Hints only: every record is verified like any other answer.
#[derive(Default)]
struct Layouts {
    /// Object digest prefix → its record: pack (an index into `packs`), offset, length. Kept
    /// small: it holds an entry per object of every generation read (61k for the rust tree).
    at: HashMap<u64, (u32, u64, u32)>,
    /// The packs `at` names, each once.
    packs: Vec<Digest>,
    /// Group record's digest prefix → where its members lie in its decoded content.
    groups: HashMap<u64, Vec<(u32, u32)>>,
    /// Where group records are: (pack index, offset).
    group_at: HashSet<(u32, u64)>,
    /// Manifest → its packs with their metadata regions (pack, region end, origin manifest).
    loaded: HashMap<Digest, Vec<(Digest, u64, Digest)>>,
    /// Manifests no server had a layout for, and when that was asked.
    absent: HashMap<Digest, Instant>,
    /// Packs whose metadata region this process fetched.
    regions: HashSet<Digest>,
    /// Generations this endpoint reads, whose layouts are loaded when a fetch needs them.
    noted: HashSet<Digest>,
}

impl Fetcher {
    /// A fetcher for `urls` (tried in order of health, then of the list) into `store`.
    pub fn new(urls: &[String], store: Arc<Store>, limits: Limits) -> Fetcher {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(limits.connect)
            .timeout(limits.deadline)
            .pool_max_idle_per_host(8)
            .build()
            .expect("an HTTP client with rustls builds");
        let servers = urls
            .iter()
            .map(|u| Server { url: u.trim_end_matches('/').to_string(), ok: 0, failed: 0, last_error: None, rest_until: None })
            .collect();
        Fetcher {
            servers: Mutex::new(servers),
            client,
            store,
            limits,
            inflight: Mutex::new(HashSet::new()),
            landed: Condvar::new(),
            requests: Default::default(),
            bytes: Default::default(),
            make_room: std::sync::OnceLock::new(),
            layouts: Default::default(),
        }
    }

    /// Sets what to call when the disk is full before giving up on an object: the cache's
    /// eviction. Only the first call has an effect.
    pub fn on_disk_full(&self, make_room: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.make_room.set(Box::new(make_room));
    }

    /// Stores a fetched object (verifying it), with the content it decoded if it was new; on a
    /// full disk makes room once and retries.
    fn insert(&self, digest: &Digest, framed: &[u8]) -> Result<(cache::Inserted, Option<Vec<u8>>), cache::InsertError> {
        self.with_room(|| self.store.insert_framed_decoded(digest, framed, MAX_FETCHED_OBJECT))
    }

    /// Runs a store write; on a full disk makes room once and runs it again.
    fn with_room<T>(&self, write: impl Fn() -> Result<T, cache::InsertError>) -> Result<T, cache::InsertError> {
        let result = write();
        match &result {
            Err(cache::InsertError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => {
                if self.make_room.get().is_some_and(|f| f()) {
                    return write();
                }
                result
            }
            _ => result,
        }
    }

    /// The store objects land in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Requests and bytes so far.
    pub fn traffic(&self) -> Traffic {
        use std::sync::atomic::Ordering::Relaxed;
        Traffic { requests: self.requests.load(Relaxed), bytes: self.bytes.load(Relaxed) }
    }

    /// Every server's health.
    pub fn health(&self) -> Vec<ServerHealth> {
        let now = Instant::now();
        self.servers
            .lock()
            .unwrap()
            .iter()
            .map(|s| ServerHealth {
                url: s.url.clone(),
                ok: s.ok,
                failed: s.failed,
                last_error: s.last_error.clone(),
                resting_for: s.rest_until.map_or(0, |t| t.saturating_duration_since(now).as_secs()),
            })
            .collect()
    }

    /// Whether every server is resting after a failure (the endpoint is offline).
    pub fn offline(&self) -> bool {
        let now = Instant::now();
        let servers = self.servers.lock().unwrap();
        !servers.is_empty() && servers.iter().all(|s| s.rest_until.is_some_and(|t| t > now))
    }

    /// Servers in the order to try them: healthy ones first, in list order.
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let servers = self.servers.lock().unwrap();
        let mut idx: Vec<usize> = (0..servers.len()).collect();
        idx.sort_by_key(|&i| servers[i].rest_until.is_some_and(|t| t > now));
        idx
    }

    fn record(&self, i: usize, result: Result<(), String>) {
        let mut servers = self.servers.lock().unwrap();
        let s = &mut servers[i];
        match result {
            Ok(()) => {
                s.ok += 1;
                s.rest_until = None;
            }
            Err(e) => {
                s.failed += 1;
                s.last_error = Some(e);
                s.rest_until = Some(Instant::now() + self.limits.rest);
            }
        }
    }

    /// Servers in the order to try them (healthy first), with their base URLs.
    pub fn servers_in_order(&self) -> Vec<(usize, String)> {
        let order = self.order();
        let servers = self.servers.lock().unwrap();
        order.into_iter().map(|i| (i, servers[i].url.clone())).collect()
    }

    /// File `path` from server `i`: at most `max` bytes (a longer answer is an error, and is
    /// not read further), within the deadline and the minimum rate. `Ok(None)` if the server
    /// says it has no such file. The outcome counts in the server's health.
    pub fn get_file(&self, i: usize, path: &str, max: usize) -> Result<Option<Vec<u8>>, RemoteError> {
        use std::sync::atomic::Ordering::Relaxed;
        let url = format!("{}{path}", self.servers.lock().unwrap()[i].url);
        self.requests.fetch_add(1, Relaxed);
        let result = (|| {
            let resp = self.client.get(&url).send().map_err(|e| RemoteError::Transport { url: url.clone(), why: e.to_string() })?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(RemoteError::status(&url, resp));
            }
            let too_large = |announced| RemoteError::TooLarge { url: url.clone(), max: max as u64, announced };
            if let Some(l) = resp.content_length().filter(|l| *l > max as u64) {
                return Err(too_large(Some(l)));
            }
            let mut reader = RateReader { inner: resp, start: Instant::now(), bytes: 0, limits: &self.limits };
            let mut body = Vec::new();
            let n = (&mut reader).take(max as u64 + 1).read_to_end(&mut body).map_err(|e| RemoteError::reading(&url, e))?;
            self.bytes.fetch_add(n as u64, Relaxed);
            if body.len() > max {
                return Err(too_large(None));
            }
            Ok(Some(body))
        })();
        self.record(i, result.as_ref().map(|_| ()).map_err(ToString::to_string));
        result
    }

    /// Makes every object of `digests` present in the store, fetching what is absent in as
    /// few requests as the servers allow. Objects another caller is fetching are waited for.
    pub fn fetch(&self, digests: &[Digest]) -> Result<(), FetchError> {
        self.fetch_into(digests, None)
    }

    /// `fetch`, also giving the verified content of the objects this call fetched and stored
    /// (those present already, or fetched by another caller, are read from the store).
    pub fn fetch_decoded(&self, digests: &[Digest]) -> Result<HashMap<Digest, Vec<u8>>, FetchError> {
        let mut decoded = HashMap::new();
        self.fetch_into(digests, Some(&mut decoded))?;
        Ok(decoded)
    }

    fn fetch_into(&self, digests: &[Digest], mut decoded: Option<&mut HashMap<Digest, Vec<u8>>>) -> Result<(), FetchError> {
        let deadline = Instant::now() + self.limits.deadline * 2;
        loop {
            // What is in flight is keyed by the object, or for a member of a group record by
            // the record: one fetch of a group brings all its members.
            let keyed: Vec<(Digest, Digest)> = digests.iter().filter(|d| !self.store.contains(d)).map(|d| (*d, self.fetch_key(d))).collect();
            let (mine, mine_keys, theirs) = {
                let mut inflight = self.inflight.lock().unwrap();
                let (mut mine, mut mine_keys, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
                let mut seen = HashSet::new();
                for (d, key) in keyed {
                    if !seen.insert(d) {
                        continue;
                    }
                    if inflight.contains(&key) {
                        theirs.push(key);
                    } else {
                        inflight.insert(key);
                        mine_keys.push(key);
                        mine.push(d);
                    }
                }
                (mine, mine_keys, theirs)
            };
            if !mine.is_empty() {
                let result = self.fetch_from_servers(&mine, decoded.as_deref_mut());
                let mut inflight = self.inflight.lock().unwrap();
                for k in &mine_keys {
                    inflight.remove(k);
                }
                self.landed.notify_all();
                drop(inflight);
                result?;
            }
            if theirs.is_empty() {
                return Ok(());
            }
            let mut inflight = self.inflight.lock().unwrap();
            while theirs.iter().any(|d| inflight.contains(d)) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(FetchError::Unavailable {
                        missing: theirs.len(),
                        tried: "waited past the deadline for another fetch".into(),
                    });
                }
                inflight = self.landed.wait_timeout(inflight, left).unwrap().0;
            }
            // What the other fetch did not bring (it failed) is tried again by this caller.
        }
    }

    /// What a fetch of `d` is in flight under: `d`, or when a loaded layout places it in a
    /// group record, a key naming that record (no digest: 0xff bytes, the pack's index and
    /// the record's offset).
    fn fetch_key(&self, d: &Digest) -> Digest {
        let l = self.layouts.read().unwrap();
        match l.at.get(&layout::prefix(d)) {
            Some(&(pack, offset, _)) if l.group_at.contains(&(pack, offset)) => {
                let mut k = [0xffu8; 32];
                k[8..12].copy_from_slice(&pack.to_le_bytes());
                k[12..20].copy_from_slice(&offset.to_le_bytes());
                Digest(k)
            }
            _ => *d,
        }
    }

    /// Notes that this endpoint reads the generation whose manifest is `manifest`: its layout
    /// is loaded (`use_layout`) before the next fetch from a server, not before (no request
    /// for a mount whose cache has everything).
    pub fn note_generation(&self, manifest: &Digest) {
        self.layouts.write().unwrap().noted.insert(*manifest);
    }

    fn load_noted_layouts(&self) {
        let due: Vec<Digest> = {
            let l = self.layouts.read().unwrap();
            l.noted.iter().filter(|m| !l.loaded.contains_key(*m) && l.absent.get(*m).is_none_or(|t| t.elapsed() >= LAYOUT_RETRY)).copied().collect()
        };
        for m in due {
            self.use_layout(&m);
        }
    }

    fn fetch_from_servers(&self, wanted: &[Digest], mut decoded: Option<&mut HashMap<Digest, Vec<u8>>>) -> Result<(), FetchError> {
        self.load_noted_layouts();
        let mut missing: Vec<Digest> = wanted.to_vec();
        let mut tried = Vec::new();
        let mut stored = HashSet::new();
        for i in self.order() {
            let url = self.servers.lock().unwrap()[i].url.clone();
            let outcome = self.from_server(&url, &missing, &mut Landed { stored: &mut stored, decoded: decoded.as_deref_mut() });
            missing.retain(|d| !stored.contains(d));
            match outcome {
                Err(BatchError::Store(e)) => return Err(e),
                Err(BatchError::NoPack) => tried.push(format!("{url}: lacks a serving pack")),
                Err(BatchError::Server(e)) => {
                    tried.push(e.to_string());
                    self.record(i, Err(e.to_string()));
                }
                Ok(()) => {
                    self.record(i, Ok(()));
                    if !missing.is_empty() {
                        // It answered but lacks some: a missing object means "try the next".
                        tried.push(format!("{url}: lacks {} of them", missing.len()));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
        }
        Err(FetchError::Unavailable { missing: missing.len(), tried: tried.join("; ") })
    }

    /// One batch request: stores every record that verifies (noting it in `landed`); stops at
    /// the first that does not.
    fn batch(&self, url: &str, digests: &[Digest], landed: &mut Landed<'_>) -> Result<(), BatchError> {
        use std::sync::atomic::Ordering::Relaxed;
        let wanted: HashSet<Digest> = digests.iter().copied().collect();
        let body = api::objects::DigestList { digests: digests.to_vec() };
        self.requests.fetch_add(1, Relaxed);
        let resp = self
            .client
            .post(format!("{url}/v1/objects/batch"))
            .json(&body)
            .send()
            .map_err(|e| BatchError::Server(RemoteError::Transport { url: url.into(), why: e.to_string() }))?;
        if !resp.status().is_success() {
            return Err(BatchError::Server(RemoteError::status(url, resp)));
        }
        self.take_records(url, url, resp, &wanted, Take::Exactly, digests.len(), landed)
    }

    /// Objects from one server: ranged GETs of its serving packs for what a loaded layout
    /// places, the batch request for the rest (and for what a range did not bring).
    fn from_server(&self, url: &str, digests: &[Digest], landed: &mut Landed<'_>) -> Result<(), BatchError> {
        let placed: Vec<(Digest, layout::Placed)> = {
            let l = self.layouts.read().unwrap();
            digests
                .iter()
                .filter_map(|d| {
                    let p = layout::prefix(d);
                    l.at.get(&p).map(|(pack, offset, len)| {
                        (l.packs[*pack as usize], layout::Placed { prefix: p, pack: 0, offset: *offset, len: u64::from(*len), inner: None })
                    })
                })
                .collect()
        };
        if !placed.is_empty() {
            let wanted: HashSet<Digest> = digests.iter().copied().collect();
            let ranges = layout::plan(&placed, RANGE_GAP, RANGE_MAX);
            if let [r] = ranges.as_slice() {
                // One range (a read's miss, most often): on this thread.
                return match self.ranged(url, r, &wanted, Take::Asked, landed) {
                    Ok(()) | Err(BatchError::NoPack) => self.batch_rest(url, digests, landed),
                    Err(e) => Err(e),
                };
            }
            // Several ranges go over a few connections at once; each lands in its own set,
            // merged after.
            let lanes = ranges.len().min(RANGE_LANES);
            let keep = landed.decoded.is_some();
            let outcomes: Vec<(Result<(), BatchError>, HashSet<Digest>, HashMap<Digest, Vec<u8>>)> = std::thread::scope(|sc| {
                let handles: Vec<_> = (0..lanes)
                    .map(|lane| {
                        let (ranges, wanted) = (&ranges, &wanted);
                        sc.spawn(move || {
                            let (mut stored, mut decoded) = (HashSet::new(), HashMap::new());
                            let mut landed = Landed { stored: &mut stored, decoded: keep.then_some(&mut decoded) };
                            let mut result = Ok(());
                            for r in ranges.iter().skip(lane).step_by(lanes) {
                                match self.ranged(url, r, wanted, Take::Asked, &mut landed) {
                                    // A server without this pack (another primary builds its
                                    // own) still has the objects: the batch request asks.
                                    Ok(()) | Err(BatchError::NoPack) => {}
                                    Err(e) => {
                                        result = Err(e);
                                        break;
                                    }
                                }
                            }
                            (result, stored, decoded)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a range fetch does not panic")).collect()
            });
            let mut failed = None;
            for (result, stored, decoded) in outcomes {
                for d in stored {
                    landed.note(d, None);
                }
                if let Some(map) = landed.decoded.as_deref_mut() {
                    map.extend(decoded);
                }
                if let Err(e) = result {
                    failed.get_or_insert(e);
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.batch_rest(url, digests, landed)
    }

    /// The batch request for what of `digests` has not landed (nothing if all has).
    fn batch_rest(&self, url: &str, digests: &[Digest], landed: &mut Landed<'_>) -> Result<(), BatchError> {
        let rest: Vec<Digest> = digests.iter().filter(|d| !landed.stored.contains(*d)).copied().collect();
        if rest.is_empty() {
            return Ok(());
        }
        self.batch(url, &rest, landed)
    }

    /// One ranged GET of a serving pack: stores the records in it that were asked for (every
    /// record, with `Take::All`), skipping the others.
    fn ranged(&self, url: &str, r: &layout::Range, wanted: &HashSet<Digest>, take: Take, landed: &mut Landed<'_>) -> Result<(), BatchError> {
        use std::sync::atomic::Ordering::Relaxed;
        let pack_url = format!("{url}/v1/packs/{}", r.pack.to_hex());
        self.requests.fetch_add(1, Relaxed);
        let resp = self
            .client
            .get(&pack_url)
            .header(reqwest::header::RANGE, format!("bytes={}-{}", r.start, r.end - 1))
            .send()
            .map_err(|e| BatchError::Server(RemoteError::Transport { url: pack_url.clone(), why: e.to_string() }))?;
        let mut resp = match resp.status() {
            reqwest::StatusCode::PARTIAL_CONTENT => {
                // The answer must be the range asked for.
                let content_range = resp.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
                if !content_range.starts_with(&format!("bytes {}-{}/", r.start, r.end - 1)) {
                    let why = format!("answered range {content_range:?} for bytes {}-{}", r.start, r.end - 1);
                    return Err(BatchError::Server(RemoteError::BadAnswer { url: pack_url, why }));
                }
                resp
            }
            // A server or proxy may ignore a range and send the whole pack (RFC 9110 14.2):
            // the bytes before the range are read and dropped.
            reqwest::StatusCode::OK => {
                let mut resp = resp;
                let skipped = std::io::copy(&mut (&mut resp).take(r.start), &mut std::io::sink())
                    .map_err(|e| BatchError::Server(RemoteError::reading(&pack_url, e)))?;
                self.bytes.fetch_add(skipped, Relaxed);
                if skipped < r.start {
                    let why = format!("the pack ends at {skipped} bytes, before the range asked for at {}", r.start);
                    return Err(BatchError::Server(RemoteError::BadAnswer { url: pack_url, why }));
                }
                resp
            }
            reqwest::StatusCode::NOT_FOUND => return Err(BatchError::NoPack),
            _ => return Err(BatchError::Server(RemoteError::status(&pack_url, resp))),
        };
        self.take_records(url, &pack_url, (&mut resp).take(r.end - r.start), wanted, take, wanted.len(), landed)
    }

    /// Loads the layout of the generation whose manifest is `manifest` from the first server
    /// that has it, so its objects come by ranged GETs of immutable packs. False when none has
    /// one (yet): fetches then go through the batch request, and the servers are asked again
    /// after a while. A layout is a hint; nothing fetched through it escapes verification.
    pub fn use_layout(&self, manifest: &Digest) -> bool {
        {
            let l = self.layouts.read().unwrap();
            if l.loaded.contains_key(manifest) {
                return true;
            }
            if l.absent.get(manifest).is_some_and(|t| t.elapsed() < LAYOUT_RETRY) {
                return false;
            }
        }
        for (i, url) in self.servers_in_order() {
            match self.get_file(i, &format!("/v1/layouts/{}", manifest.to_hex()), format::layout::MAX_LAYOUT) {
                Ok(Some(bytes)) => match Layout::decode(&bytes) {
                    Ok(l) if l.manifest == *manifest => {
                        self.layouts.write().unwrap().add(&l);
                        return true;
                    }
                    Ok(_) => tracing::warn!(server = %url, %manifest, "the layout served is another generation's; ignored"),
                    Err(e) => tracing::warn!(server = %url, %manifest, error = %e, "the layout served does not decode; ignored"),
                },
                Ok(None) => {}
                Err(e) => tracing::debug!(server = %url, error = %e, "asking for a layout failed"),
            }
        }
        self.layouts.write().unwrap().absent.insert(*manifest, Instant::now());
        false
    }

    /// Fetches the metadata region of each pack of `manifest`'s layout (side objects and trees,
    /// one range per pack), keeping every record that verifies: what a mount reads before
    /// anything else, in a request or two instead of one per level of the tree. A pack whose
    /// origin generation's manifest the store holds is skipped (that generation was here, so
    /// were its trees), as is one this process fetched. Best effort: what does not arrive is
    /// fetched when needed.
    pub fn prefetch_metadata(&self, manifest: &Digest) {
        let regions: Vec<(Digest, u64)> = {
            let l = self.layouts.read().unwrap();
            let Some(packs) = l.loaded.get(manifest) else { return };
            packs
                .iter()
                .filter(|(p, end, origin)| *end > layout::PACK_HEADER_LEN && !l.regions.contains(p) && !self.store.contains(origin))
                .map(|(p, end, _)| (*p, *end))
                .collect()
        };
        let mut stored = HashSet::new();
        for (pack, end) in regions {
            for (i, url) in self.servers_in_order() {
                let mut landed = Landed { stored: &mut stored, decoded: None };
                let r = layout::Range { pack, start: layout::PACK_HEADER_LEN, end };
                match self.ranged(&url, &r, &HashSet::new(), Take::All, &mut landed) {
                    Ok(()) => {
                        self.record(i, Ok(()));
                        self.layouts.write().unwrap().regions.insert(pack);
                        break;
                    }
                    Err(BatchError::NoPack) => continue,
                    Err(BatchError::Server(e)) => {
                        tracing::debug!(error = %e, "prefetching a pack's metadata failed");
                        self.record(i, Err(e.to_string()));
                    }
                    Err(BatchError::Store(e)) => {
                        tracing::warn!(error = %e, "storing a pack's metadata failed");
                        return;
                    }
                }
            }
        }
    }

    /// Reads a body of records from `url` on server `server`, verifying and storing them (in
    /// one cache pack when there may be several) and noting them in `landed`; `take` says
    /// which. Stops at the first record that does not verify.
    #[allow(clippy::too_many_arguments)]
    fn take_records(
        &self,
        server: &str,
        url: &str,
        body: impl Read,
        wanted: &HashSet<Digest>,
        take: Take,
        expected: usize,
        landed: &mut Landed<'_>,
    ) -> Result<(), BatchError> {
        use std::sync::atomic::Ordering::Relaxed;
        let bad = |why: String| BatchError::Server(RemoteError::BadAnswer { url: url.into(), why });
        let mut reader = RecordReader::new(RateReader { inner: body, start: Instant::now(), bytes: 0, limits: &self.limits });
        // An answer of several objects is kept as one pack, filled as it streams in; what
        // arrived before a failure is kept either way.
        let mut pack = (expected >= PACK_MIN || take == Take::All).then(|| self.store.cache_pack(false));
        let mut in_pack = Vec::new();
        let keep = landed.decoded.is_some();
        let mut deferred = Vec::new();
        let ended = 'records: loop {
            let header = match reader.next_header() {
                Ok(Some(header)) => header,
                Ok(None) => break Ok(()),
                Err(ReadRecordError::TruncatedHeader { .. }) => break Err(bad("the answer stopped inside a record".into())),
                Err(ReadRecordError::Io { source, .. }) => break Err(BatchError::Server(RemoteError::reading(url, source))),
                Err(e) => break Err(bad(e.to_string())),
            };
            let digest = header.digest;
            if header.check(MAX_FETCHED_OBJECT).is_err() {
                break Err(bad(format!("announced {} bytes for object {digest}", header.len)));
            }
            // A group record (a loaded layout says so): several objects compressed together.
            let members = match take {
                Take::Exactly => None,
                _ => self.layouts.read().unwrap().groups.get(&layout::prefix(&digest)).cloned(),
            };
            let asked = take == Take::All || wanted.contains(&digest);
            if !asked && take == Take::Exactly {
                break Err(bad(format!("sent object {digest}, which was not asked for")));
            }
            // A record between two asked for (a range spans gaps up to `RANGE_GAP`) is kept when
            // a loaded layout places it, that is when it belongs to a generation this endpoint
            // reads: it came over the link already, and is most often read soon after.
            let neighbour = !asked && self.layouts.read().unwrap().at.contains_key(&layout::prefix(&digest));
            let framed = match reader.read_framed(&header) {
                Ok(framed) => framed,
                Err(ReadRecordError::TruncatedBody { .. }) => break Err(bad(format!("the answer stopped inside object {digest}"))),
                Err(ReadRecordError::Io { source, .. }) => break Err(BatchError::Server(RemoteError::reading(url, source))),
                Err(e) => break Err(bad(e.to_string())),
            };
            // What this record gives: itself, or each member of a group, each with whether it
            // was asked for and whether it is a neighbour worth keeping.
            let items: Vec<(Digest, Vec<u8>, bool, bool)> = match members {
                None => {
                    if (!asked && !neighbour) || landed.stored.contains(&digest) || ((take == Take::All || neighbour) && self.store.contains(&digest)) {
                        continue;
                    }
                    vec![(digest, framed, asked, neighbour)]
                }
                Some(members) => {
                    // The group is checked against its digest as a whole; each member is then
                    // named by the digest of its own bytes, which a read looks it up by, and
                    // kept framed alone (at a fast level: the cache holds no group).
                    let Ok((_, content)) = self.store.verify_decoded(&digest, &framed, MAX_FETCHED_OBJECT) else {
                        // What was asked for from it comes by the batch request, or fails there.
                        continue;
                    };
                    let l = self.layouts.read().unwrap();
                    members
                        .iter()
                        .filter_map(|&(offset, len)| content.get(offset as usize..offset as usize + len as usize))
                        .filter_map(|bytes| {
                            let d = Digest::of(bytes);
                            let asked = take == Take::All || wanted.contains(&d);
                            let neighbour = !asked && l.at.contains_key(&layout::prefix(&d));
                            let wanted_here = (asked || neighbour) && !landed.stored.contains(&d) && !self.store.contains(&d);
                            wanted_here.then(|| (d, format::object::encode(bytes, MEMBER_LEVEL), asked, neighbour))
                        })
                        .collect()
                }
            };
            for (digest, framed, asked, neighbour) in items {
                let (verified, content) = match self.store.verify_decoded(&digest, &framed, MAX_FETCHED_OBJECT) {
                    Ok(ok) => ok,
                    // Compressed with a dictionary this cache lacks (a chunk first stored by another
                    // image): checked once the dictionary is here.
                    Err(cache::InsertError::Invalid { source: format::object::ObjectError::NeedsDictionary(dict), .. }) => {
                        if !neighbour {
                            deferred.push((digest, framed, dict));
                        }
                        continue;
                    }
                    // A neighbour that does not verify is dropped as if it had been skipped: what
                    // was asked for is judged on its own records.
                    Err(_) if neighbour => continue,
                    Err(e) => break 'records self.stored(url, digest, Err(e)).map(|_| ()),
                };
                let content = (keep && asked).then_some(content);
                // A pack that could not take it (a full disk) is closed with what it has; the rest
                // of the answer goes loose, after the cache made room.
                if let Some(p) = pack.as_mut().filter(|p| !p.broken()) {
                    if p.append(verified).is_ok() {
                        in_pack.push((digest, content));
                        continue;
                    }
                }
                let result = self.with_room(|| self.store.insert_verified(verified)).map(|i| (i, None));
                if let Err(e) = self.stored(url, digest, result) {
                    break 'records Err(e);
                }
                landed.note(digest, content);
            }
        };
        self.bytes.fetch_add(reader.get_ref().bytes, Relaxed);
        if let Some(p) = pack {
            match p.commit() {
                Ok(_) => in_pack.into_iter().for_each(|(d, c)| landed.note(d, c)),
                Err(e) => {
                    // Lost with the pack: a full disk makes room for the next try.
                    if matches!(&e, cache::InsertError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)) {
                        if let Some(make_room) = self.make_room.get() {
                            make_room();
                        }
                    }
                    let digest = in_pack.first().map_or(Digest([0; 32]), |(d, _)| *d);
                    return Err(BatchError::Store(FetchError::Store { digest, why: e.to_string() }));
                }
            }
        }
        ended?;
        if deferred.is_empty() {
            return Ok(());
        }
        let mut dictionaries: Vec<Digest> = deferred.iter().map(|(_, _, d)| *d).filter(|d| !self.store.contains(d)).collect();
        dictionaries.sort();
        dictionaries.dedup();
        if !dictionaries.is_empty() {
            // Dictionaries are plain objects, never compressed with another dictionary.
            let mut stored = HashSet::new();
            self.from_server(server, &dictionaries, &mut Landed { stored: &mut stored, decoded: None })?;
        }
        for (digest, framed, _) in deferred {
            let result = self.insert(&digest, &framed);
            landed.note(digest, self.stored(url, digest, result)?);
        }
        Ok(())
    }

    fn stored(
        &self,
        url: &str,
        digest: Digest,
        result: Result<(cache::Inserted, Option<Vec<u8>>), cache::InsertError>,
    ) -> Result<Option<Vec<u8>>, BatchError> {
        match result {
            Ok((_, content)) => Ok(content),
            Err(cache::InsertError::Invalid { source, .. }) => Err(BatchError::Server(RemoteError::BadAnswer {
                url: url.into(),
                why: format!("sent object {digest} that does not verify: {source}"),
            })),
            Err(e) => Err(BatchError::Store(FetchError::Store { digest, why: e.to_string() })),
        }
    }
}

/// Fewest objects of one answer stored together in a pack (fewer go loose).
const PACK_MIN: usize = 4;

/// What a batch stored: every object (present now), and the content of the new ones for a
/// caller that wants it.
struct Landed<'a> {
    stored: &'a mut HashSet<Digest>,
    decoded: Option<&'a mut HashMap<Digest, Vec<u8>>>,
}

impl Landed<'_> {
    fn note(&mut self, digest: Digest, content: Option<Vec<u8>>) {
        self.stored.insert(digest);
        if let (Some(map), Some(content)) = (self.decoded.as_deref_mut(), content) {
            map.insert(digest, content);
        }
    }
}

enum BatchError {
    Server(RemoteError),
    Store(FetchError),
    /// The server has no such serving pack.
    NoPack,
}

/// Which records of an answer to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Those asked for, and any other is a bad answer (a batch request's).
    Exactly,
    /// Those asked for, and the neighbours a loaded layout places (a range of a pack holds
    /// them too); the others are skipped.
    Asked,
    /// Every one that verifies (a pack's metadata region).
    All,
}

impl Layouts {
    fn add(&mut self, l: &Layout) {
        let index: Vec<u32> = l
            .packs
            .iter()
            .map(|p| match self.packs.iter().position(|q| *q == p.digest) {
                Some(n) => n as u32,
                None => {
                    self.packs.push(p.digest);
                    (self.packs.len() - 1) as u32
                }
            })
            .collect();
        // Entries come sorted: a group record's own entry, then its members.
        let mut group = 0;
        for e in &l.entries {
            // A record past 4 GiB is no object (decode caps them at 1 GiB): left to the batch.
            if let Ok(len) = u32::try_from(e.len) {
                self.at.entry(e.prefix).or_insert((index[e.pack as usize], e.offset, len));
            }
            match e.inner {
                None => group = e.prefix,
                Some(inner) => {
                    self.group_at.insert((index[e.pack as usize], e.offset));
                    let members = self.groups.entry(group).or_default();
                    if !members.contains(&(inner.offset, inner.len)) {
                        members.push((inner.offset, inner.len));
                    }
                }
            }
        }
        self.loaded.insert(l.manifest, l.packs.iter().map(|p| (p.digest, p.meta_end, p.origin)).collect());
        self.absent.remove(&l.manifest);
    }
}

/// A body reader that gives up when the transfer drips below the minimum rate.
struct RateReader<'a, R> {
    inner: R,
    start: Instant,
    bytes: u64,
    limits: &'a Limits,
}

impl<R: Read> Read for RateReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        let elapsed = self.start.elapsed();
        if elapsed > self.limits.rate_grace && (self.bytes as f64) < self.limits.min_rate as f64 * elapsed.as_secs_f64() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} bytes in {:.1} s is below the minimum rate of {} B/s", self.bytes, elapsed.as_secs_f64(), self.limits.min_rate),
            ));
        }
        Ok(n)
    }
}
