//! A mount's writable layer as a whole: the upper directory (`local`), the drift policy
//! (globs of protected paths) and its restore, the three-way merge of local changes at a
//! switch, `imgfs reset`, and the event log (`DIR/events.jsonl`). The rules:
//!
//! - A protected path the layer holds (changed, added or removed on this machine) is dropped
//!   from it, so that the image's version shows again, and a `restored` event is recorded;
//!   at once after a change made through the mount, and on every interval for changes made
//!   behind its back.
//! - At a switch, each local change of an unprotected path is weighed against the previous
//!   generation (base) and the new one: kept if the new generation did not change the path;
//!   dropped if the local version equals the new one; otherwise kept, and a `conflict` event
//!   recorded (OSTree's `/etc` merge: the machine's edit wins; `imgfs reset` takes the
//!   image's). A local removal is kept the same way.
//! - Two versions are the same when their kind, permission bits, owner, group and content
//!   (bytes, link target, device number) are; times are not compared.

use std::fs::Metadata;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use api::control::{DriftEvent, DriftKind, WritableReport};
use format::Digest;

use crate::endpoint::Endpoint;
use crate::image::{Attr, Image, Kind};
use crate::invalidate::Invalidator;
use crate::local::{self, Local, State};

/// Events kept in a mount's status.
const RECENT: usize = 20;

/// Why a drift policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A pattern is not a glob.
    #[error("bad protected pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        source: globset::Error,
    },
    /// The policy file cannot be read.
    #[error("reading the drift policy {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Which paths are protected: shell-style globs relative to the mount's root (`etc/ssh/**`,
/// `usr/**`; a leading `/` is ignored), `*` and `?` not crossing `/`, `**` any depth.
#[derive(Debug, Clone)]
pub struct Policy {
    patterns: Vec<String>,
    set: globset::GlobSet,
}

impl Policy {
    /// A policy protecting `patterns`.
    pub fn new(patterns: &[String]) -> Result<Policy, PolicyError> {
        let mut b = globset::GlobSetBuilder::new();
        let mut kept = Vec::new();
        for p in patterns {
            let p = p.trim().trim_start_matches('/').to_string();
            if p.is_empty() {
                continue;
            }
            let glob = globset::GlobBuilder::new(&p)
                .literal_separator(true)
                .build()
                .map_err(|source| PolicyError::Pattern { pattern: p.clone(), source })?;
            b.add(glob);
            kept.push(p);
        }
        let set = b.build().map_err(|source| PolicyError::Pattern { pattern: kept.join(" "), source })?;
        Ok(Policy { patterns: kept, set })
    }

    /// Patterns from a file, one per line (`#` comments and blank lines skipped), added to
    /// `more`.
    pub fn from_file(path: &Path, more: &[String]) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.into(), source })?;
        let mut all: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
        all.extend_from_slice(more);
        Policy::new(&all)
    }

    /// Whether `rel` is protected.
    pub fn protects(&self, rel: &[u8]) -> bool {
        !self.patterns.is_empty() && self.set.is_match(Path::new(std::ffi::OsStr::from_bytes(rel)))
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// What a version of a path is, for comparing: kind and content, permission bits, owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    content: Content,
    perm: u32,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    File(Digest),
    Symlink(Vec<u8>),
    Directory,
    Other { kind: u32, rdev: u64 },
}

impl Fingerprint {
    /// The digest events carry: a file's bytes, a symlink's target.
    pub fn digest(&self) -> Option<Digest> {
        match &self.content {
            Content::File(d) => Some(*d),
            Content::Symlink(t) => Some(Digest::of(t)),
            _ => None,
        }
    }
}

/// The fingerprint of a local entry.
pub fn local_fingerprint(path: &Path, m: &Metadata) -> io::Result<Fingerprint> {
    let ft = m.file_type();
    let content = if ft.is_file() {
        let mut h = blake3::Hasher::new();
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Content::File(Digest(*h.finalize().as_bytes()))
    } else if ft.is_symlink() {
        Content::Symlink(std::fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    } else if ft.is_dir() {
        Content::Directory
    } else {
        Content::Other { kind: m.mode() & libc::S_IFMT, rdev: m.rdev() }
    };
    Ok(Fingerprint { content, perm: m.mode() & 0o7777, uid: m.uid(), gid: m.gid() })
}

/// The entry of `img` at `rel` (walked from its root), if it has one.
pub fn image_at(ep: &Endpoint, img: &Image, rel: &[u8]) -> Option<Attr> {
    let mut ino = img.root_ino();
    let mut attr = img.attr(ep, ino).ok()?;
    if rel.is_empty() {
        return Some(attr);
    }
    for name in rel.split(|&b| b == b'/') {
        attr = img.lookup(ep, ino, name).ok()??;
        ino = attr.ino;
    }
    Some(attr)
}

/// The fingerprint of `img`'s entry `a` (`Err` if its data cannot be read).
pub fn image_fingerprint(ep: &Endpoint, img: &Image, a: &Attr) -> io::Result<Fingerprint> {
    let content = match a.kind {
        Kind::File => {
            let read = img.read(a.ino, |size, extents| -> io::Result<Digest> {
                let mut h = blake3::Hasher::new();
                let mut off = 0;
                while off < size {
                    let data = crate::read::read_range(size, extents, off, 1 << 20, ep).map_err(io::Error::other)?;
                    if data.is_empty() {
                        break;
                    }
                    off += data.len() as u64;
                    h.update(&data);
                }
                Ok(Digest(*h.finalize().as_bytes()))
            });
            Content::File(read.map_err(io::Error::other)?.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))??)
        }
        Kind::Symlink => Content::Symlink(img.readlink(a.ino).map_err(io::Error::other)?.unwrap_or_default()),
        Kind::Directory => Content::Directory,
        k => Content::Other {
            kind: match k {
                Kind::CharDevice => libc::S_IFCHR,
                Kind::BlockDevice => libc::S_IFBLK,
                Kind::Fifo => libc::S_IFIFO,
                _ => libc::S_IFSOCK,
            },
            rdev: a.rdev as u64,
        },
    };
    Ok(Fingerprint { content, perm: a.perm as u32, uid: a.uid, gid: a.gid })
}

/// What the merge at a switch does with one local change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Keep the local version (the new generation did not change the path).
    Keep,
    /// Drop the local version: it equals the new generation's, or removes what the new
    /// generation removed too.
    Drop,
    /// Both changed it differently: keep the local version and record a conflict.
    Conflict,
}

/// The three-way rule: `base` and `new` are the previous and the new generation's versions,
/// `local` the machine's (`None`: removed on this machine).
pub fn merge_rule(base: Option<&Fingerprint>, local: Option<&Fingerprint>, new: Option<&Fingerprint>) -> Merge {
    if base == new {
        Merge::Keep
    } else if local == new || local == base {
        // The same change, or a copy that changed nothing (opened for writing, touched).
        Merge::Drop
    } else {
        Merge::Conflict
    }
}

/// What the kernel must forget after a change made behind the mount's back: a path, and the
/// upper inode number it had.
type Forget = (Vec<u8>, Option<u64>);

/// The layer of one mount.
pub struct Writable {
    /// The upper directory.
    pub local: Local,
    policy: Policy,
    /// How often the whole layer is checked against the policy.
    interval: Duration,
    /// Mutations through the mount hold it shared; restore, merge and reset hold it alone
    /// (and tell the kernel only after letting it go: the kernel may hold a directory's lock
    /// while it waits for a mutation blocked here).
    pub(crate) changing: RwLock<()>,
    /// Copies up run one at a time.
    pub(crate) copying: Mutex<()>,
    /// Paths open for writing through the mount, and how many times.
    writing: Mutex<std::collections::HashMap<Vec<u8>, u32>>,
    events: Mutex<()>,
    wake: Mutex<Option<SyncSender<()>>>,
    invalidate: OnceLock<Invalidator>,
}

impl Writable {
    /// The layer kept in `dir`, protected by `policy`, checked every `interval`.
    pub fn open(dir: &Path, policy: Policy, interval: Duration) -> io::Result<Writable> {
        Ok(Writable {
            local: Local::open(dir)?,
            policy,
            interval,
            changing: RwLock::new(()),
            copying: Mutex::new(()),
            writing: Mutex::default(),
            events: Mutex::new(()),
            wake: Mutex::new(None),
            invalidate: OnceLock::new(),
        })
    }

    /// The drift policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Gives the layer the mount's kernel connection, to make the kernel forget what it
    /// changes behind the mount's back.
    pub fn set_invalidator(&self, inv: Invalidator) {
        let _ = self.invalidate.set(inv);
    }

    /// Starts the drift check: every interval, and at once when `changed` is called for a
    /// protected path.
    pub fn run(self: &Arc<Self>, ep: Arc<Endpoint>) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        *self.wake.lock().unwrap() = Some(tx);
        let me = Arc::downgrade(self);
        let interval = self.interval;
        // A first check at once: changes made while the mount was down.
        let _ = std::thread::Builder::new().name("imgfs-drift".into()).spawn(move || loop {
            match me.upgrade() {
                Some(me) => drop(me.restore(&ep)),
                None => return,
            }
            match rx.recv_timeout(interval) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        });
    }

    /// Counts opens for writing of `rel` (`delta` 1 at an open, -1 at its release).
    pub fn opened(&self, rel: &[u8], delta: i32) {
        let mut w = self.writing.lock().unwrap();
        let n = w.entry(rel.to_vec()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            w.remove(rel);
        }
    }

    /// Whether `rel` is open for writing through the mount.
    pub fn is_open_for_writing(&self, rel: &[u8]) -> bool {
        self.writing.lock().unwrap().contains_key(rel)
    }

    /// The entry of `img` at `rel` as the mount shows it under the layer: none if a directory
    /// above it was removed, replaced or made opaque on this machine.
    pub fn image_at(&self, ep: &Endpoint, img: &Image, rel: &[u8]) -> Option<Attr> {
        let mut prefix: &[u8] = rel;
        loop {
            let (parent, _) = local::split(prefix);
            if parent.is_empty() {
                break;
            }
            match self.local.state(parent) {
                State::Whiteout => return None,
                State::Present(m) if !m.is_dir() => return None,
                State::Present(_) if self.local.opaque(parent) => return None,
                _ => {}
            }
            prefix = parent;
        }
        image_at(ep, img, rel)
    }

    /// The fingerprint of the image's version of `rel` as the mount shows it (`None`: no
    /// entry there).
    fn image_fingerprint(&self, ep: &Endpoint, img: &Image, rel: &[u8]) -> io::Result<Option<Fingerprint>> {
        self.image_at(ep, img, rel).map(|a| image_fingerprint(ep, img, &a)).transpose()
    }

    /// Whether `rel`, or (for a directory of the image) any path of the image below it, is
    /// protected: removing or replacing such a directory changes protected paths.
    fn protects_at(&self, ep: &Endpoint, img: &Image, rel: &[u8]) -> bool {
        if self.policy.protects(rel) {
            return true;
        }
        let Some(a) = image_at(ep, img, rel).filter(|a| a.kind == Kind::Directory) else { return false };
        let mut stack = vec![(rel.to_vec(), a.ino)];
        let mut seen = 0;
        while let Some((dir, ino)) = stack.pop() {
            for e in img.readdir(ep, ino).unwrap_or_default() {
                let p = local::join(&dir, &e.name);
                if self.policy.protects(&p) {
                    return true;
                }
                seen += 1;
                if e.kind == Kind::Directory && seen < 100_000 {
                    stack.push((p, e.ino));
                }
            }
        }
        false
    }

    /// Hears that the mount changed `rel`: a protected path is restored at once.
    pub fn changed(&self, rel: &[u8]) {
        tracing::debug!(path = %api::control::escape_path(rel), "changed through the mount");
        if self.policy.protects(rel) {
            if let Some(tx) = self.wake.lock().unwrap().as_ref() {
                let _ = tx.try_send(());
            }
        }
    }

    /// Restores every protected path the layer holds to the current generation's version;
    /// the events recorded.
    pub fn restore(&self, ep: &Endpoint) -> Vec<DriftEvent> {
        let img = ep.current();
        let mut forget: Vec<Forget> = Vec::new();
        let alone = self.changing.write().unwrap();
        let mut events = Vec::new();
        for (rel, m) in self.local.walk() {
            let protected = if m.is_dir() || local::is_whiteout(&m) { self.protects_at(ep, &img, &rel) } else { self.policy.protects(&rel) };
            if !protected {
                continue;
            }
            let image = self.image_fingerprint(ep, &img, &rel);
            let image = match image {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(path = %api::control::escape_path(&rel), error = %e, "cannot read the image's version; restoring later");
                    continue;
                }
            };
            let (mut local, mut drifted) = (None, true);
            match self.local.state(&rel) {
                State::Absent => continue,
                State::Whiteout => drifted = image.is_some(),
                State::Present(m) if m.is_dir() => {
                    if image.as_ref().is_some_and(|f| f.content == Content::Directory) {
                        // A directory of the image: its children are weighed one by one;
                        // one the machine replaced whole shows the image's children again.
                        if self.local.opaque(&rel) {
                            if let Err(e) = self.local.set_opaque(&rel, false) {
                                tracing::warn!(error = %e, "cannot restore a directory");
                                continue;
                            }
                            forget.push((rel.clone(), None));
                            events.push(self.event(DriftKind::Restored, &rel, &img, None, None, None));
                        }
                        continue;
                    }
                }
                State::Present(m) => match local_fingerprint(&self.local.path(&rel), &m) {
                    Ok(f) => {
                        drifted = Some(&f) != image.as_ref();
                        local = Some(f);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a local file; restoring it unread");
                    }
                },
            }
            let ino = match self.local.state(&rel) {
                State::Present(m) => Some(m.ino()),
                _ => None,
            };
            if let Err(e) = self.local.remove(&rel) {
                tracing::warn!(path = %api::control::escape_path(&rel), error = %e, "cannot restore a protected path");
                continue;
            }
            self.local.forget(&rel);
            forget.push((rel.clone(), ino));
            if drifted {
                let ev = self.event(DriftKind::Restored, &rel, &img, image.as_ref(), local.as_ref(), None);
                tracing::warn!(path = %ev.path, "a protected path drifted from the image: restored");
                events.push(ev);
            }
        }
        drop(alone);
        self.forget_all(ep, &img, &forget);
        self.record(&events);
        events
    }

    /// Weighs every local change of an unprotected path against `old` and `new` (the switch
    /// from one to the other is under way), dropping what converged; the conflicts recorded.
    pub fn merge(&self, ep: &Endpoint, old: &Image, new: &Image) -> Vec<DriftEvent> {
        let mut forget: Vec<Forget> = Vec::new();
        let alone = self.changing.write().unwrap();
        let mut events = Vec::new();
        let writing = self.writing.lock().unwrap().clone();
        for (rel, _) in self.local.walk() {
            if self.policy.protects(&rel) {
                continue;
            }
            let (local, ino) = match self.local.state(&rel) {
                State::Absent => continue,
                State::Present(m) if m.is_dir() => continue,
                State::Whiteout => (None, None),
                State::Present(m) => match local_fingerprint(&self.local.path(&rel), &m) {
                    Ok(f) => (Some(f), Some(m.ino())),
                    Err(_) => continue,
                },
            };
            let (Ok(base), Ok(next)) = (self.image_fingerprint(ep, old, &rel), self.image_fingerprint(ep, new, &rel)) else {
                tracing::warn!(path = %api::control::escape_path(&rel), "cannot read the image's versions; keeping the local one");
                continue;
            };
            match merge_rule(base.as_ref(), local.as_ref(), next.as_ref()) {
                Merge::Keep => {}
                // A file open for writing stays: its writer would write into a removed copy.
                Merge::Drop if writing.contains_key(&rel) => {}
                Merge::Drop => {
                    if self.local.remove(&rel).is_ok() {
                        self.local.forget(&rel);
                        forget.push((rel.clone(), ino));
                    }
                }
                Merge::Conflict => {
                    let ev = self.event(DriftKind::Conflict, &rel, new, next.as_ref(), local.as_ref(), base.as_ref());
                    tracing::warn!(path = %ev.path, "the new generation changed a path this machine changed: keeping the local version");
                    events.push(ev);
                }
            }
        }
        drop(alone);
        self.forget_all(ep, new, &forget);
        self.record(&events);
        events
    }

    /// Drops the local changes at and below `rel` (all of them for the root), recording an
    /// event for each (a file, link, removal or empty directory); how many.
    pub fn reset(&self, ep: &Endpoint, rel: &[u8]) -> io::Result<u64> {
        let img = ep.current();
        let mut forget: Vec<Forget> = Vec::new();
        let alone = self.changing.write().unwrap();
        let targets: Vec<Vec<u8>> = if rel.is_empty() {
            self.local.names(b"").into_iter().map(|(n, _)| n).collect()
        } else {
            vec![rel.to_vec()]
        };
        let all = self.local.walk();
        let mut events = Vec::new();
        for t in targets {
            if matches!(self.local.state(&t), State::Absent) {
                continue;
            }
            let below = |r: &[u8]| r == t.as_slice() || (r.starts_with(&t) && r.get(t.len()) == Some(&b'/'));
            let entries: Vec<&(Vec<u8>, Metadata)> = all.iter().filter(|(r, _)| below(r)).collect();
            for (r, m) in &entries {
                // A directory of the image, copied up to hold changes below it, is not one.
                let leaf = !m.is_dir()
                    || (!entries.iter().any(|(c, _)| c.starts_with(r) && c.get(r.len()) == Some(&b'/'))
                        && (self.local.opaque(r) || !image_at(ep, &img, r).is_some_and(|a| a.kind == Kind::Directory)));
                if leaf {
                    let local = (!local::is_whiteout(m)).then(|| local_fingerprint(&self.local.path(r), m).ok()).flatten();
                    let image = self.image_fingerprint(ep, &img, r).ok().flatten();
                    events.push(self.event(DriftKind::Reset, r, &img, image.as_ref(), local.as_ref(), None));
                }
            }
            if let Err(e) = self.local.remove(&t) {
                drop(alone);
                self.forget_all(ep, &img, &forget);
                self.record(&events);
                return Err(e);
            }
            // What lay below goes with it: the kernel forgets those names too.
            for (r, m) in entries.iter().rev() {
                self.local.forget(r);
                forget.push((r.clone(), Some(m.ino())));
            }
        }
        drop(alone);
        self.forget_all(ep, &img, &forget);
        self.record(&events);
        Ok(events.len() as u64)
    }

    /// Has the kernel look `rel` up again (its entry now names a local file).
    pub fn expire(&self, ep: &Endpoint, rel: &[u8]) {
        self.invalidate_entry(ep, &ep.current(), rel, false);
    }

    /// Marks `rel` expired under each directory the kernel may know it by (the generation's
    /// and the local one), and with `listings`, drops those directories' cached listings.
    fn invalidate_entry(&self, ep: &Endpoint, img: &Image, rel: &[u8], listings: bool) {
        let Some(inv) = self.invalidate.get() else { return };
        let (parent, name) = local::split(rel);
        let name = std::ffi::OsStr::from_bytes(name);
        let mut dirs = Vec::with_capacity(2);
        if parent.is_empty() {
            dirs.push(crate::fuse::ROOT);
        } else {
            dirs.extend(image_at(ep, img, parent).map(|a| a.ino));
            if let State::Present(m) = self.local.state(parent) {
                dirs.push(local::UPPER_BIT | m.ino());
            }
        }
        for d in dirs {
            inv.entry(d, name);
            if listings {
                inv.inode(d);
            }
        }
    }

    fn forget_all(&self, ep: &Endpoint, img: &Image, paths: &[Forget]) {
        for (rel, ino) in paths {
            self.forget(ep, img, rel, *ino);
        }
    }

    /// Makes the kernel look `rel` up again (under the current generation's directory and
    /// the local one) and drop what it cached of the entry and of its directory's listing.
    fn forget(&self, ep: &Endpoint, img: &Image, rel: &[u8], upper_ino: Option<u64>) {
        let Some(inv) = self.invalidate.get() else { return };
        self.invalidate_entry(ep, img, rel, true);
        if let Some(a) = image_at(ep, img, rel) {
            inv.inode(a.ino);
        }
        if let Some(i) = upper_ino {
            inv.inode(local::UPPER_BIT | i);
        }
    }

    fn event(
        &self,
        kind: DriftKind,
        rel: &[u8],
        img: &Image,
        image: Option<&Fingerprint>,
        local: Option<&Fingerprint>,
        base: Option<&Fingerprint>,
    ) -> DriftEvent {
        DriftEvent {
            at: jiff::Timestamp::now().to_string(),
            kind,
            path: api::control::escape_path(rel),
            generation: img.label(),
            image: image.and_then(Fingerprint::digest),
            local: local.and_then(Fingerprint::digest),
            base: base.and_then(Fingerprint::digest),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.local.dir().join("events.jsonl")
    }

    /// Appends events to the log, each line written whole and synced (a torn last line, from
    /// a crash, is skipped when read).
    fn record(&self, events: &[DriftEvent]) {
        if events.is_empty() {
            return;
        }
        let _one = self.events.lock().unwrap();
        let mut text = String::new();
        for e in events {
            text.push_str(&serde_json::to_string(e).expect("events serialise"));
            text.push('\n');
        }
        let written = std::fs::OpenOptions::new().create(true).append(true).read(true).open(self.log_path()).and_then(|mut f| {
            // After a torn last line (a crash mid-write), start on a line of its own.
            let len = f.metadata()?.len();
            let mut last = [0u8; 1];
            if len > 0 && std::os::unix::fs::FileExt::read_at(&f, &mut last, len - 1)? == 1 && last[0] != b'\n' {
                text.insert(0, '\n');
            }
            f.write_all(text.as_bytes())?;
            f.sync_data()
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record drift events");
        }
    }

    /// Every event recorded, oldest first.
    pub fn events(&self) -> Vec<DriftEvent> {
        let _one = self.events.lock().unwrap();
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The layer's part of the mount's status.
    pub fn report(&self) -> WritableReport {
        let events = self.events();
        let recent = events[events.len().saturating_sub(RECENT)..].to_vec();
        WritableReport {
            dir: self.local.dir().display().to_string(),
            protected: self.policy.patterns().to_vec(),
            changes: self.local.walk().iter().filter(|(_, m)| !m.is_dir() || m.file_type().is_char_device()).count() as u64,
            events: events.len() as u64,
            recent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(content: &[u8], perm: u32) -> Fingerprint {
        Fingerprint { content: Content::File(Digest::of(content)), perm, uid: 0, gid: 0 }
    }

    #[test]
    fn the_three_way_rule() {
        let (a, b, c) = (fp(b"a", 0o644), fp(b"b", 0o644), fp(b"c", 0o644));
        // The new generation left the path alone: the local edit stays.
        assert_eq!(merge_rule(Some(&a), Some(&b), Some(&a)), Merge::Keep);
        assert_eq!(merge_rule(None, Some(&b), None), Merge::Keep);
        assert_eq!(merge_rule(Some(&a), None, Some(&a)), Merge::Keep);
        // Both made the same change, or the local copy changed nothing: nothing local is left.
        assert_eq!(merge_rule(Some(&a), Some(&c), Some(&c)), Merge::Drop);
        assert_eq!(merge_rule(Some(&a), Some(&a), Some(&c)), Merge::Drop);
        assert_eq!(merge_rule(Some(&a), None, None), Merge::Drop);
        // Both changed it differently: the local version stays, a conflict is recorded.
        assert_eq!(merge_rule(Some(&a), Some(&b), Some(&c)), Merge::Conflict);
        assert_eq!(merge_rule(Some(&a), None, Some(&c)), Merge::Conflict);
        assert_eq!(merge_rule(None, Some(&b), Some(&c)), Merge::Conflict);
        // A mode change is a change.
        assert_eq!(merge_rule(Some(&a), Some(&fp(b"a", 0o600)), Some(&c)), Merge::Conflict);
    }

    #[test]
    fn protected_patterns_match_paths_from_the_root() {
        let p = Policy::new(&["/etc/ssh/**".into(), "etc/passwd".into(), "usr/lib/*.so".into(), "  ".into()]).unwrap();
        assert_eq!(p.patterns(), ["etc/ssh/**", "etc/passwd", "usr/lib/*.so"]);
        assert!(p.protects(b"etc/ssh/sshd_config"));
        assert!(p.protects(b"etc/ssh/ssh_config.d/x.conf"));
        assert!(p.protects(b"etc/passwd"));
        assert!(!p.protects(b"etc/passwd-"));
        assert!(p.protects(b"usr/lib/libc.so"));
        assert!(!p.protects(b"usr/lib/x/libc.so"));
        assert!(!p.protects(b"etc/hostname"));
        assert!(!Policy::new(&[]).unwrap().protects(b"etc/passwd"));
        assert!(matches!(Policy::new(&["etc/[".into()]), Err(PolicyError::Pattern { .. })));
    }
}
