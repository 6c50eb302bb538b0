//! Server metadata in rocksdb: which generations are published and every version of every
//! channel. Calls block; handlers run them on the blocking pool.
//!
//! Keys (all in the default column family, big-endian numbers so keys sort numerically):
//! `g/IMAGE/\0` + u64 generation → 32-byte manifest digest;
//! `c/CHANNEL` → u64 current version;
//! `v/CHANNEL/\0` + u64 version → `ChannelVersion` as JSON;
//! `t/IMAGE/\0` + u64 generation → u64 publish time (seconds since the epoch);
//! `k/IMAGE/\0` + u64 generation → empty: the generation is marked `keep`;
//! `p/` + 32-byte digest → u64 time a push last uploaded the object or was told it is present;
//! garbage collection keeps it for the grace period after that;
//! `policy/CHANNEL` → `api::gate::ChannelPolicy` as JSON;
//! `evidence/` + manifest hex + `/` + u64 sequence → `api::gate::Evidence` as JSON (every run,
//! in arrival order);
//! `approval/` + manifest hex + `/` + key id → `api::gate::Approval` as JSON (one per key);
//! `user/NAME` → `StoredUser` as JSON; `tok/` + hex BLAKE3 of a user's token → the user's
//! name (deleted when the token is revoked);
//! `audit/` + u64 sequence → `AuditEntry` as JSON, a hash chain (`api::audit`). Every change
//! lands in the same batch as its audit entry (`Meta::commit`), numbered under one lock.

use std::path::Path;

use format::{Digest, ImageName};
use rocksdb::{IteratorMode, Options, WriteBatch, DB};

/// A user as stored: what the API shows, and the hash of its token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredUser {
    /// The user.
    pub user: api::users::User,
    /// Hex BLAKE3 of the bearer token.
    pub token_hash: String,
}

/// Failures of the metadata database.
#[derive(Debug, thiserror::Error)]
#[error("metadata database: {0}")]
pub struct MetaError(#[from] rocksdb::Error);

/// A published generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Image name.
    pub image: String,
    /// Generation number.
    pub generation: u64,
    /// Manifest digest.
    pub manifest: Digest,
}

/// One version of a channel: stored as the JSON of the API's record.
pub use api::channels::ChannelVersion;

/// One entry of the audit log, stored as its JSON: the wire type (`api::audit`), so what the
/// server hashes is what clients check.
pub use api::audit::AuditEntry;

/// The newest entry of the audit log, kept in memory under the lock every audited write
/// takes, so the next entry's number and `prev` never race and cost no read.
#[derive(Debug)]
struct AuditTail {
    seq: u64,
    hash: String,
}

fn evidence_prefix(manifest: &Digest) -> Vec<u8> {
    format!("evidence/{manifest}/").into_bytes()
}

fn approval_prefix(manifest: &Digest) -> Vec<u8> {
    format!("approval/{manifest}/").into_bytes()
}

/// The metadata database.
pub struct Meta {
    db: DB,
    /// Held from numbering an audit entry until its batch is written: the one lock of every
    /// audited write, whoever the caller is.
    audit: std::sync::Mutex<AuditTail>,
}

/// Where an audit entry is stored.
fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = b"audit/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn gen_key(image: &str, generation: u64) -> Vec<u8> {
    let mut k = format!("g/{image}/").into_bytes();
    k.push(0);
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

fn version_key(channel: &str, version: u64) -> Vec<u8> {
    numbered_key('v', channel, version)
}

fn numbered_key(kind: char, name: &str, n: u64) -> Vec<u8> {
    let mut k = format!("{kind}/{name}/").into_bytes();
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Splits a `X/NAME/\0` + u64 key into the name and number.
fn split_numbered(key: &[u8]) -> Option<(String, u64)> {
    let rest = key.get(2..)?;
    let split = rest.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(rest.get(..split.checked_sub(1)?)?).ok()?;
    Some((name.to_string(), u64::from_be_bytes(rest.get(split + 1..)?.try_into().ok()?)))
}

fn pin_key(d: &Digest) -> Vec<u8> {
    let mut k = b"p/".to_vec();
    k.extend_from_slice(&d.0);
    k
}

/// Seconds since the epoch by the workspace's clock (`cache::clock`).
fn now_secs() -> u64 {
    cache::clock::now().max(0) as u64
}

/// The audit log's newest entry, for the in-memory tail; first seals the entries of a
/// database written before the log was a chain (format.md, log entry 12): when no entry
/// carries a hash, each gets `prev` and `hash` in order, once. A log where some entries carry
/// a hash is left as it is, so an entry whose hash was removed shows as broken instead of
/// being sealed again. An entry that does not read cannot be chained to: the tail takes its
/// number with an empty hash, and verification reports it.
fn seal_legacy_entries(db: &DB) -> Result<AuditTail, MetaError> {
    // The usual case costs one read: the newest entry carries its hash.
    let newest = match last_audit_entry(db)? {
        None => return Ok(AuditTail { seq: 0, hash: api::audit::GENESIS.into() }),
        Some((seq, Some(e))) if !e.hash.is_empty() => return Ok(AuditTail { seq, hash: e.hash }),
        Some((seq, None)) => return Ok(AuditTail { seq, hash: String::new() }),
        Some((seq, Some(_))) => seq,
    };
    let mut entries: Vec<AuditEntry> = Vec::new();
    for item in db.iterator(IteratorMode::From(b"audit/", rocksdb::Direction::Forward)) {
        let (k, v) = item?;
        if !k.starts_with(b"audit/") {
            break;
        }
        match serde_json::from_slice::<AuditEntry>(&v) {
            Ok(mut e) => {
                e.seq = audit_seq(&k);
                entries.push(e);
            }
            // Older entries are hashless and this one does not read: leave it all for
            // verification to report.
            Err(_) => return Ok(AuditTail { seq: newest, hash: String::new() }),
        }
    }
    let Some(last) = entries.last() else { return Ok(AuditTail { seq: 0, hash: api::audit::GENESIS.into() }) };
    if entries.iter().any(|e| !e.hash.is_empty()) {
        return Ok(AuditTail { seq: last.seq, hash: last.hash.clone() });
    }
    let mut batch = WriteBatch::default();
    let mut prev = api::audit::GENESIS.to_string();
    for e in &mut entries {
        let seq = e.seq;
        e.seal(seq, &prev);
        prev.clone_from(&e.hash);
        batch.put(audit_key(e.seq), serde_json::to_vec(&e).expect("serialisable"));
    }
    db.write_opt(batch, &synced())?;
    tracing::info!(entries = entries.len(), "sealed the audit entries of an older server into the chain");
    Ok(AuditTail { seq: entries.last().map_or(0, |e| e.seq), hash: prev })
}

/// The newest audit entry's number and the entry (None when it does not read), if any.
fn last_audit_entry(db: &DB) -> Result<Option<(u64, Option<AuditEntry>)>, MetaError> {
    let mut end = b"audit/".to_vec();
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    let Some(item) = db.iterator(IteratorMode::From(&end, rocksdb::Direction::Reverse)).next() else { return Ok(None) };
    let (k, v) = item?;
    if !k.starts_with(b"audit/") {
        return Ok(None);
    }
    Ok(Some((audit_seq(&k), serde_json::from_slice(&v).ok())))
}

/// The sequence number of an `audit/` key.
fn audit_seq(key: &[u8]) -> u64 {
    key.get(b"audit/".len()..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes)
}

fn synced() -> rocksdb::WriteOptions {
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    wo
}

impl Meta {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, path)?;
        let tail = seal_legacy_entries(&db)?;
        Ok(Meta { db, audit: std::sync::Mutex::new(tail) })
    }

    /// Writes `batch` and `entry`, appended to the audit log, as one synced rocksdb write:
    /// the change and its record land together or not at all. The entry gets the next
    /// sequence number, the time (unless set), `prev` and its hash here, under the audit lock,
    /// so concurrent writers keep the chain dense. Returns the entry as stored.
    pub fn commit(&self, batch: WriteBatch, entry: AuditEntry) -> Result<AuditEntry, MetaError> {
        let mut tail = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_locked(&mut tail, batch, entry)
    }

    /// Appends an entry alone (for changes stored elsewhere: the signed metadata's files).
    pub fn record(&self, entry: AuditEntry) -> Result<AuditEntry, MetaError> {
        self.commit(WriteBatch::default(), entry)
    }

    /// Writes `batch` with several entries, chained in order, as one synced write: for bulk
    /// changes (many enrollments at once) that would otherwise pay one sync per entry.
    pub fn commit_all(&self, batch: WriteBatch, entries: Vec<AuditEntry>) -> Result<Vec<AuditEntry>, MetaError> {
        let mut tail = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_entries(&mut tail, batch, entries)
    }

    fn commit_locked(&self, tail: &mut AuditTail, batch: WriteBatch, entry: AuditEntry) -> Result<AuditEntry, MetaError> {
        Ok(self.commit_entries(tail, batch, vec![entry])?.remove(0))
    }

    /// Seals `entries` after the tail and writes them with `batch`; the tail moves only once
    /// the write succeeded, so a failed write leaves no hole in the numbering.
    fn commit_entries(&self, tail: &mut AuditTail, mut batch: WriteBatch, mut entries: Vec<AuditEntry>) -> Result<Vec<AuditEntry>, MetaError> {
        let now = cache::clock::now();
        let (mut seq, mut prev) = (tail.seq, tail.hash.clone());
        for entry in &mut entries {
            if entry.time == 0 {
                entry.time = now;
            }
            seq += 1;
            entry.seal(seq, &prev);
            prev.clone_from(&entry.hash);
            batch.put(audit_key(entry.seq), serde_json::to_vec(&entry).expect("serialisable"));
        }
        self.db.write_opt(batch, &synced())?;
        (tail.seq, tail.hash) = (seq, prev);
        Ok(entries)
    }

    /// Runs `f` under the audit lock, then writes what it returns (when it returns a batch
    /// and an entry): for a check and its write that must not interleave with another writer
    /// (publishing `IMAGE@N` twice at once, a keep mark set twice). Keep `f` short: every
    /// audited write waits for it.
    pub fn commit_if<T>(&self, f: impl FnOnce(&DB) -> Result<(T, Option<(WriteBatch, AuditEntry)>), MetaError>) -> Result<T, MetaError> {
        let mut tail = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let (out, write) = f(&self.db)?;
        if let Some((batch, entry)) = write {
            self.commit_locked(&mut tail, batch, entry)?;
        }
        Ok(out)
    }

    /// Records a published generation and when, with its audit entry (durably, atomically),
    /// unless `image@generation` is published already: then nothing is written and the
    /// manifest it has is returned. The check and the write hold the audit lock, so two
    /// publishes of one generation cannot both record it.
    pub fn put_generation(&self, image: &ImageName, generation: u64, manifest: &Digest, audit: AuditEntry) -> Result<Option<Digest>, MetaError> {
        self.commit_if(|db| {
            if let Some(existing) = db.get(gen_key(image.as_str(), generation))?.and_then(|v| v.try_into().ok().map(Digest)) {
                return Ok((Some(existing), None));
            }
            let mut batch = WriteBatch::default();
            batch.put(gen_key(image.as_str(), generation), manifest.0);
            batch.put(numbered_key('t', image.as_str(), generation), now_secs().to_be_bytes());
            // The publish commit: a crash test can stop just before it (`cache::fault`).
            cache::fault::point(cache::fault::Kind::Sync);
            Ok((None, Some((batch, audit))))
        })
    }

    /// When `image@generation` was published (0 if unknown).
    pub fn published_at(&self, image: &str, generation: u64) -> Result<u64, MetaError> {
        let v = self.db.get(numbered_key('t', image, generation))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()).map_or(0, u64::from_be_bytes))
    }

    /// Marks or unmarks `image@generation` as kept by garbage collection, with its audit
    /// entry; false (nothing written) when the mark is already so.
    pub fn set_keep(&self, image: &str, generation: u64, keep: bool, audit: AuditEntry) -> Result<bool, MetaError> {
        let key = numbered_key('k', image, generation);
        self.commit_if(|db| {
            if db.get(&key)?.is_some() == keep {
                return Ok((false, None));
            }
            let mut batch = WriteBatch::default();
            if keep {
                batch.put(&key, []);
            } else {
                batch.delete(&key);
            }
            Ok((true, Some((batch, audit))))
        })
    }

    /// Every generation marked `keep`.
    pub fn kept(&self) -> Result<Vec<(String, u64)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(b"k/") {
            let (k, _) = item?;
            if !k.starts_with(b"k/") {
                break;
            }
            out.extend(split_numbered(&k));
        }
        Ok(out)
    }

    /// Removes generations from the published list (with their keep marks and times) and
    /// records the collection that did it, durably and at once.
    pub fn remove_generations(&self, gens: &[(String, u64)], audit: AuditEntry) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for (image, n) in gens {
            batch.delete(gen_key(image, *n));
            batch.delete(numbered_key('t', image, *n));
            batch.delete(numbered_key('k', image, *n));
        }
        self.commit(batch, audit)?;
        Ok(())
    }

    /// Records that a push needs these objects now, so collection keeps them for a while.
    pub fn pin(&self, digests: &[Digest]) -> Result<(), MetaError> {
        let now = now_secs();
        let mut batch = WriteBatch::default();
        for d in digests {
            batch.put(pin_key(d), now.to_be_bytes());
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Every pinned object and when it was pinned.
    pub fn pins(&self) -> Result<Vec<(Digest, u64)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(b"p/") {
            let (k, v) = item?;
            if !k.starts_with(b"p/") {
                break;
            }
            if let (Ok(d), Ok(t)) = (<[u8; 32]>::try_from(&k[2..]), <[u8; 8]>::try_from(&v[..])) {
                out.push((Digest(d), u64::from_be_bytes(t)));
            }
        }
        Ok(out)
    }

    /// Forgets pins.
    pub fn unpin(&self, digests: &[Digest]) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for d in digests {
            batch.delete(pin_key(d));
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// The manifest of `image@generation`, if published.
    pub fn generation(&self, image: &str, generation: u64) -> Result<Option<Digest>, MetaError> {
        Ok(self.db.get(gen_key(image, generation))?.and_then(|v| v.try_into().ok().map(Digest)))
    }

    /// Every published generation, by image then number.
    pub fn generations(&self) -> Result<Vec<Published>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(b"g/") {
            let (k, v) = item?;
            if !k.starts_with(b"g/") {
                break;
            }
            let (Some((image, generation)), Ok(d)) = (split_numbered(&k), <[u8; 32]>::try_from(&v[..])) else { continue };
            out.push(Published { image, generation, manifest: Digest(d) });
        }
        Ok(out)
    }

    /// The current version of a channel.
    pub fn channel(&self, channel: &str) -> Result<Option<ChannelVersion>, MetaError> {
        let Some(v) = self.db.get(format!("c/{channel}"))? else { return Ok(None) };
        let Ok(n) = <[u8; 8]>::try_from(&v[..]) else { return Ok(None) };
        self.channel_version(channel, u64::from_be_bytes(n))
    }

    /// One version of a channel.
    pub fn channel_version(&self, channel: &str, version: u64) -> Result<Option<ChannelVersion>, MetaError> {
        Ok(self.db.get(version_key(channel, version))?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every version of a channel, oldest first.
    pub fn history(&self, channel: &str) -> Result<Vec<ChannelVersion>, MetaError> {
        let mut prefix = format!("v/{channel}/").into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&prefix, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Ok(cv) = serde_json::from_slice(&v) {
                out.push(cv);
            }
        }
        Ok(out)
    }

    /// Every channel name.
    pub fn channels(&self) -> Result<Vec<String>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator(b"c/") {
            let (k, _) = item?;
            if !k.starts_with(b"c/") {
                break;
            }
            out.push(String::from_utf8_lossy(&k[2..]).into_owned());
        }
        Ok(out)
    }

    /// Appends a channel version and makes it current, with its audit entry, atomically and
    /// durably. The caller
    /// serialises writers of one channel so versions stay dense and increasing.
    pub fn push_channel(&self, cv: &ChannelVersion, audit: AuditEntry) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        batch.put(version_key(cv.channel.as_str(), cv.version), serde_json::to_vec(cv).expect("serialisable"));
        batch.put(format!("c/{}", cv.channel), cv.version.to_be_bytes());
        self.commit(batch, audit)?;
        Ok(())
    }

    /// Every value under `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Box<[u8]>, Box<[u8]>)>, MetaError> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(prefix, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// The last sequence number under `prefix` (keys `prefix` + u64), 0 if none.
    fn last_seq(&self, prefix: &[u8]) -> Result<u64, MetaError> {
        let mut end = prefix.to_vec();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        let Some(item) = self.db.iterator(IteratorMode::From(&end, rocksdb::Direction::Reverse)).next() else { return Ok(0) };
        let (k, _) = item?;
        if !k.starts_with(prefix) {
            return Ok(0);
        }
        Ok(k.get(prefix.len()..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes))
    }

    /// Every key and value under `prefix` (the fleet's records), in key order.
    pub fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        Ok(self
            .scan(prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.into_vec()))
            .collect())
    }

    /// Writes `puts` and `deletes` in one batch, with `audit` when given (then always synced,
    /// numbered and chained under the audit lock: `commit`); without, synced when `sync`.
    pub fn write_records(&self, puts: &[(String, Vec<u8>)], deletes: &[String], audit: Option<AuditEntry>, sync: bool) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for (k, v) in puts {
            batch.put(k.as_bytes(), v);
        }
        for k in deletes {
            batch.delete(k.as_bytes());
        }
        if let Some(entry) = audit {
            self.commit(batch, entry)?;
            return Ok(());
        }
        match sync {
            true => self.db.write_opt(batch, &synced())?,
            false => self.db.write(batch)?,
        }
        Ok(())
    }

    /// Writes `puts` and deletes every key in each `[from, to)` range, synced, in one batch
    /// (the fleet's reports and the events they trim).
    pub fn write_ranges(&self, puts: &[(String, Vec<u8>)], ranges: &[(String, String)]) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        for (k, v) in puts {
            batch.put(k.as_bytes(), v);
        }
        for (from, to) in ranges {
            batch.delete_range(from.as_bytes(), to.as_bytes());
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Adds a user and the hash of its token, with its audit entry, durably; false (and
    /// nothing written) when the name is taken.
    pub fn add_user(&self, stored: &StoredUser, audit: AuditEntry) -> Result<bool, MetaError> {
        let key = format!("user/{}", stored.user.name);
        self.commit_if(|db| {
            if db.get(&key)?.is_some() {
                return Ok((false, None));
            }
            let mut batch = WriteBatch::default();
            batch.put(&key, serde_json::to_vec(stored).expect("serialisable"));
            batch.put(format!("tok/{}", stored.token_hash), stored.user.name.as_str());
            Ok((true, Some((batch, audit))))
        })
    }

    /// A user, if it exists.
    pub fn user(&self, name: &str) -> Result<Option<StoredUser>, MetaError> {
        Ok(self.db.get(format!("user/{name}"))?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The (unrevoked) user whose token hashes to `hash`.
    pub fn user_by_token(&self, hash: &str) -> Result<Option<api::users::User>, MetaError> {
        let Some(name) = self.db.get(format!("tok/{hash}"))? else { return Ok(None) };
        let stored = self.user(&String::from_utf8_lossy(&name))?;
        Ok(stored.filter(|s| s.token_hash == hash && s.user.revoked.is_none()).map(|s| s.user))
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<api::users::User>, MetaError> {
        Ok(self.scan(b"user/")?.iter().filter_map(|(_, v)| serde_json::from_slice::<StoredUser>(v).ok()).map(|s| s.user).collect())
    }

    /// Revokes a user's token at `time`, with its audit entry, durably.
    pub fn revoke_user(&self, mut stored: StoredUser, time: i64, audit: AuditEntry) -> Result<api::users::User, MetaError> {
        stored.user.revoked = Some(time);
        let mut batch = WriteBatch::default();
        batch.put(format!("user/{}", stored.user.name), serde_json::to_vec(&stored).expect("serialisable"));
        batch.delete(format!("tok/{}", stored.token_hash));
        self.commit(batch, audit)?;
        Ok(stored.user)
    }

    /// The audit log, oldest first. An entry that does not read is left out (verification
    /// then reports the gap).
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, MetaError> {
        Ok(self.scan(b"audit/")?.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect())
    }

    /// The newest entry's number and hash, from memory (0 and `GENESIS` for an empty log).
    pub fn audit_head(&self) -> (u64, String) {
        let tail = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        (tail.seq, tail.hash.clone())
    }

    /// Sets a channel's policy, with its audit entry, durably.
    pub fn put_policy(&self, policy: &api::gate::ChannelPolicy, audit: AuditEntry) -> Result<(), MetaError> {
        let mut batch = WriteBatch::default();
        batch.put(format!("policy/{}", policy.channel), serde_json::to_vec(policy).expect("serialisable"));
        self.commit(batch, audit)?;
        Ok(())
    }

    /// A channel's policy, if it has one.
    pub fn policy(&self, channel: &str) -> Result<Option<api::gate::ChannelPolicy>, MetaError> {
        Ok(self.db.get(format!("policy/{channel}"))?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every channel policy, by channel name.
    pub fn policies(&self) -> Result<Vec<api::gate::ChannelPolicy>, MetaError> {
        Ok(self.scan(b"policy/")?.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect())
    }

    /// Appends a test run of the generation `manifest`, with its audit entry, durably.
    pub fn add_evidence(&self, manifest: &Digest, evidence: &api::gate::Evidence, audit: AuditEntry) -> Result<(), MetaError> {
        let prefix = evidence_prefix(manifest);
        let mut key = prefix.clone();
        key.extend_from_slice(&(self.last_seq(&prefix)? + 1).to_be_bytes());
        let mut batch = WriteBatch::default();
        batch.put(key, serde_json::to_vec(evidence).expect("serialisable"));
        self.commit(batch, audit)?;
        Ok(())
    }

    /// Every test run of the generation `manifest`, in arrival order.
    pub fn evidence(&self, manifest: &Digest) -> Result<Vec<api::gate::Evidence>, MetaError> {
        Ok(self.scan(&evidence_prefix(manifest))?.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect())
    }

    /// The log objects of every test run recorded (garbage collection keeps them).
    pub fn evidence_logs(&self) -> Result<Vec<Digest>, MetaError> {
        let rows = self.scan(b"evidence/")?;
        Ok(rows.iter().filter_map(|(_, v)| serde_json::from_slice::<api::gate::Evidence>(v).ok()).map(|e| e.statement.log).collect())
    }

    /// Records the approval of `keyid` (replacing its earlier one), with its audit entry.
    pub fn put_approval(&self, manifest: &Digest, keyid: &str, approval: &api::gate::Approval, audit: AuditEntry) -> Result<(), MetaError> {
        let mut key = approval_prefix(manifest);
        key.extend_from_slice(keyid.as_bytes());
        let mut batch = WriteBatch::default();
        batch.put(key, serde_json::to_vec(approval).expect("serialisable"));
        self.commit(batch, audit)?;
        Ok(())
    }

    /// Every approval of the generation `manifest`, oldest first.
    pub fn approvals(&self, manifest: &Digest) -> Result<Vec<api::gate::Approval>, MetaError> {
        let mut out: Vec<api::gate::Approval> =
            self.scan(&approval_prefix(manifest))?.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect();
        out.sort_by_key(|a| a.statement.time);
        Ok(out)
    }
}
