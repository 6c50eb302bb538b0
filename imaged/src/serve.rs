//! The read path of immutable files: after a publish, a generation's objects are written in the
//! order an endpoint reads them (side objects and trees first, then data) into a serving pack
//! named by the blake3 digest of its bytes, objects an earlier serving pack holds are pointed at
//! there, and the generation's layout (`format::layout`) says where each one is. `GET
//! /v1/packs/{digest}` (ranges) and `GET /v1/layouts/{manifest}` serve them with immutable
//! caching headers, so an HTTP cache in front can answer a whole site (docs/scale.md).
//!
//! Packs and layouts live in the server's `Blobs` (`backend.rs`): on disk under `DATA/serve/`
//! (`packs/HEX`, `layouts/HEX`, the manifest's digest), or in a bucket (`v1/packs/HEX`,
//! `v1/layouts/HEX`); packs are written in the local `DATA/serve/tmp/` first. A pack is put
//! in place only once it is durable and whole, and a layout only after its packs, so
//! nothing half written is ever served. Packs are never rewritten: garbage collection removes
//! a layout with its generation and a pack when no layout names it any more.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::backend::{BlobError, Blobs};

use format::layout::{self, Layout, PackRef, Placed};
use format::{record, Digest, Manifest};

/// Why a generation's layout could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading the generation's objects failed.
    #[error("walking generation {manifest}")]
    Walk {
        /// The manifest.
        manifest: Digest,
        /// Why.
        #[source]
        source: cache::ReachError,
    },
    /// An object the generation reaches could not be read.
    #[error("reading object {digest}")]
    Object {
        /// The object.
        digest: Digest,
        /// Why.
        #[source]
        source: cache::GetError,
    },
    /// An object does not match its digest.
    #[error("object {digest} does not verify: {why}")]
    Corrupt {
        /// The object.
        digest: Digest,
        /// Why.
        why: String,
    },
    /// The manifest does not parse.
    #[error("manifest {0} is malformed")]
    BadManifest(Digest),
    /// The storage of packs and layouts failed.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// Listing the published generations failed.
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    /// Writing a pack or a layout failed.
    #[error("writing {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The layout could not be encoded (a generation past the format's limits).
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
}

/// What one build did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Built {
    /// Objects the layout lists.
    pub objects: u64,
    /// Of them, written into the new pack.
    pub new_objects: u64,
    /// Bytes of the new pack (0 when every object was in an earlier one).
    pub pack_bytes: u64,
}

/// Where a served object is: its pack and record.
#[derive(Debug, Clone, Copy)]
struct At {
    pack: PackRef,
    offset: u64,
    len: u64,
    /// For a member of a group record: where it is in the group, and the group's prefix.
    inner: Option<(layout::Inner, u64)>,
}

/// Decoded bytes of new data objects a group record gathers (when recompressing) before it
/// is written: about the block size of squashfs, whose compression it is after.
const GROUP_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Known {
    /// Object digest prefix → where its record is (verified against the pack before reuse).
    at: HashMap<u64, At>,
    /// Manifest → the packs its layout names.
    layouts: HashMap<Digest, Vec<Digest>>,
    /// Pack → its length.
    packs: HashMap<Digest, u64>,
}

/// The serving packs and layouts of a server.
pub struct Serving {
    blobs: Arc<dyn Blobs>,
    tmp: PathBuf,
    known: RwLock<Known>,
    /// One build at a time: two builds must not both write an object the other lacks.
    build: Mutex<()>,
    /// zstd level objects are recompressed at (0: as stored).
    level: i32,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ServeError + '_ {
    move |source| ServeError::Io { path: path.to_path_buf(), source }
}

impl Serving {
    /// Opens the serving packs and layouts on the server's disk, in `dir` (created if needed).
    /// New objects are written recompressed at zstd `level` when that makes them smaller (0:
    /// as stored).
    pub fn open(dir: &Path, level: i32) -> Result<Serving, ServeError> {
        let local = crate::backend::LocalDir::open(dir).map_err(io_at(dir))?;
        Serving::open_in(dir, Arc::new(local), level)
    }

    /// Opens the serving packs and layouts kept in `blobs`, writing packs in `dir/tmp/` first:
    /// clears what a killed build left there and reads every layout; a layout that does not
    /// decode or names a missing pack is removed, to be built again.
    pub fn open_in(dir: &Path, blobs: Arc<dyn Blobs>, level: i32) -> Result<Serving, ServeError> {
        let s = Serving { blobs, tmp: dir.join("tmp"), known: RwLock::new(Known::default()), build: Mutex::new(()), level };
        fs::create_dir_all(&s.tmp).map_err(io_at(&s.tmp))?;
        for e in fs::read_dir(&s.tmp).map_err(io_at(&s.tmp))? {
            let path = e.map_err(io_at(&s.tmp))?.path();
            fs::remove_file(&path).map_err(io_at(&path))?;
        }
        let mut known = Known::default();
        for name in s.blobs.list("v1/layouts/")? {
            let Ok(manifest) = name.parse::<Digest>() else { continue };
            let key = Serving::layout_key(&manifest);
            let l = s.blobs.read(&key)?.and_then(|b| Layout::decode(&b).ok()).filter(|l| l.manifest == manifest);
            match l {
                Some(l) if s.packs_present(&l)? => known.add(&l),
                _ => {
                    tracing::warn!(layout = %key, "removing a layout that does not read back; it is built again");
                    s.blobs.delete(&key)?;
                }
            }
        }
        *s.known.write().unwrap() = known;
        Ok(s)
    }

    fn packs_present(&self, l: &Layout) -> Result<bool, ServeError> {
        for p in &l.packs {
            if self.blobs.len(&Serving::pack_key(&p.digest))? != Some(p.len) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The length of serving pack `digest`, if a layout names it (packs never change: no need
    /// to ask the storage).
    pub fn pack_len(&self, digest: &Digest) -> Option<u64> {
        self.known.read().unwrap().packs.get(digest).copied()
    }

    /// Where packs and layouts are kept.
    pub fn blobs(&self) -> &Arc<dyn Blobs> {
        &self.blobs
    }

    /// The key of serving pack `digest`.
    pub fn pack_key(digest: &Digest) -> String {
        format!("v1/packs/{}", digest.to_hex())
    }

    /// The key of the layout of the generation whose manifest is `manifest`.
    pub fn layout_key(manifest: &Digest) -> String {
        format!("v1/layouts/{}", manifest.to_hex())
    }

    /// Whether `manifest` has its layout.
    pub fn has_layout(&self, manifest: &Digest) -> bool {
        self.known.read().unwrap().layouts.contains_key(manifest)
    }

    /// Builds the layout of the generation whose manifest is `manifest` (nothing when it has
    /// one): its objects in reading order, those already served pointed at, the others written
    /// into one new pack.
    pub fn build(&self, store: &cache::Store, manifest: &Digest) -> Result<Built, ServeError> {
        let _one = self.build.lock().unwrap();
        if self.has_layout(manifest) {
            return Ok(Built::default());
        }
        let bytes = store.get(manifest).map_err(|source| ServeError::Object { digest: *manifest, source })?;
        let m = Manifest::decode(&bytes).map_err(|_| ServeError::BadManifest(*manifest))?;
        let mut seen = HashSet::from([*manifest]);
        let (mut metadata, data) =
            cache::metadata_and_data(store, &m, &mut seen).map_err(|source| ServeError::Walk { manifest: *manifest, source })?;
        // The manifest first: an endpoint reads it before anything else.
        metadata.insert(0, *manifest);
        let metadata_count = metadata.len();
        let order: Vec<Digest> = metadata.into_iter().chain(data).collect();

        let mut packs: Vec<PackRef> = Vec::new();
        let mut entries: Vec<Placed> = Vec::with_capacity(order.len());
        // Entries in the new pack, whose name is known only once it is written.
        let mut fresh: Vec<Placed> = Vec::new();
        let mut writer: Option<NewPack> = None;
        let mut meta_end = cache::pack::PACK_MAGIC.len() as u64;
        let mut compressors = HashMap::new();
        let (mut group, mut group_bytes) = (Vec::new(), 0usize);
        let mut groups_placed = HashSet::new();
        for (i, d) in order.iter().enumerate() {
            if i == metadata_count {
                meta_end = writer.as_ref().map_or(meta_end, |w| w.pos);
            }
            if let Some(at) = self.served(d) {
                let n = match packs.iter().position(|p| p.digest == at.pack.digest) {
                    Some(n) => n,
                    None => {
                        packs.push(at.pack);
                        packs.len() - 1
                    }
                };
                let place = Placed { prefix: layout::prefix(d), pack: n as u32, offset: at.offset, len: at.len, inner: None };
                if let Some((inner, group)) = at.inner {
                    // A member of an earlier group: placed inside it, beside the group's own
                    // entry (once per layout).
                    if groups_placed.insert((n, at.offset)) {
                        entries.push(Placed { prefix: group, ..place });
                    }
                    entries.push(Placed { inner: Some(inner), ..place });
                } else {
                    entries.push(place);
                }
                continue;
            }
            let framed = store.get_framed(d).map_err(|source| ServeError::Object { digest: *d, source })?;
            // Checked before it is served: a copy gone bad on this disk is not copied on.
            let data = store.decode(&framed, d, layout::MAX_RECORD).map_err(|e| ServeError::Corrupt { digest: *d, why: e.to_string() })?;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(NewPack::create(&self.tmp)?),
            };
            if self.level > 0 && i >= metadata_count {
                // Data recompressed: gathered into group records of about GROUP_BYTES.
                group_bytes += data.len();
                group.push((*d, data));
                if group_bytes >= GROUP_BYTES {
                    write_group(w, &mut group, self.level, &mut fresh)?;
                    group_bytes = 0;
                }
                continue;
            }
            let framed = match self.level {
                0 => framed,
                level => recompressed(store, framed, &data, level, &mut compressors),
            };
            let (offset, len) = w.append(d, &framed)?;
            fresh.push(Placed { prefix: layout::prefix(d), pack: u32::MAX, offset, len, inner: None });
        }
        if let Some(w) = writer.as_mut() {
            write_group(w, &mut group, self.level, &mut fresh)?;
        }
        let mut built = Built { objects: order.len() as u64, new_objects: fresh.len() as u64, pack_bytes: 0 };
        if let Some(w) = writer {
            if metadata_count == order.len() {
                meta_end = w.pos;
            }
            let pack = w.commit(self.blobs.as_ref(), meta_end, *manifest)?;
            built.pack_bytes = pack.len;
            packs.push(pack);
            let n = (packs.len() - 1) as u32;
            entries.extend(fresh.into_iter().map(|e| Placed { pack: n, ..e }));
        }
        let l = Layout { manifest: *manifest, packs, entries };
        let encoded = l.encode()?;
        self.blobs.put(&Serving::layout_key(manifest), &encoded)?;
        let decoded = Layout::decode(&encoded)?;
        self.known.write().unwrap().add(&decoded);
        Ok(built)
    }

    /// Where `d` is served, if a pack holds it: on disk the record there is read back and must
    /// name `d` (a layout keys objects by a prefix of their digest). In a bucket that would be
    /// one request per object a generation shares with earlier ones (thousands, each stalled
    /// while a node is down), so the prefix is taken as it is: two objects of 64-bit prefixes
    /// alike are about 3 in 100 million at a million objects, and an endpoint still refuses a
    /// record that does not verify.
    fn served(&self, d: &Digest) -> Option<At> {
        let at = *self.known.read().unwrap().at.get(&layout::prefix(d))?;
        if self.blobs.is_bucket() {
            return Some(at);
        }
        let mut head = [0u8; record::HEADER_LEN];
        self.blobs.read_at(&Serving::pack_key(&at.pack.digest), at.offset, &mut head).ok()?;
        let h = record::Header::decode(&head);
        // A member's record is its group's.
        let names_it = match at.inner {
            None => h.digest == *d,
            Some((_, group)) => layout::prefix(&h.digest) == group,
        };
        (names_it && h.record_len() == at.len).then_some(at)
    }

    /// Removes the layouts of generations not in `live` and then every pack no remaining layout
    /// names. Returns (layouts, packs) removed.
    pub fn collect(&self, live: &HashSet<Digest>) -> Result<(usize, usize), ServeError> {
        let _one = self.build.lock().unwrap();
        let mut known = self.known.write().unwrap();
        let dead: Vec<Digest> = known.layouts.keys().filter(|m| !live.contains(*m)).copied().collect();
        for m in &dead {
            self.blobs.delete(&Serving::layout_key(m))?;
            known.layouts.remove(m);
        }
        let named: HashSet<Digest> = known.layouts.values().flatten().copied().collect();
        known.at.retain(|_, at| named.contains(&at.pack.digest));
        known.packs.retain(|d, _| named.contains(d));
        let mut removed = 0;
        for name in self.blobs.list("v1/packs/")? {
            let Ok(d) = name.parse::<Digest>() else { continue };
            if !named.contains(&d) {
                self.blobs.delete(&Serving::pack_key(&d))?;
                removed += 1;
            }
        }
        Ok((dead.len(), removed))
    }
}

impl Known {
    fn add(&mut self, l: &Layout) {
        // Entries come sorted: a group's own entry, then its members.
        let mut group = 0;
        for e in &l.entries {
            let inner = match e.inner {
                None => {
                    group = e.prefix;
                    None
                }
                Some(inner) => Some((inner, group)),
            };
            self.at.entry(e.prefix).or_insert(At { pack: l.packs[e.pack as usize], offset: e.offset, len: e.len, inner });
        }
        self.layouts.insert(l.manifest, l.packs.iter().map(|p| p.digest).collect());
        self.packs.extend(l.packs.iter().map(|p| (p.digest, p.len)));
    }
}

/// A serving pack being written in `tmp/`, hashed as it goes.
struct NewPack {
    tmp: PathBuf,
    out: io::BufWriter<File>,
    hash: blake3::Hasher,
    pos: u64,
}

impl NewPack {
    fn create(tmp_dir: &Path) -> Result<NewPack, ServeError> {
        let nonce: u64 = rand::random();
        let tmp = tmp_dir.join(format!("pack-{nonce:016x}"));
        let file = File::options().write(true).create_new(true).open(&tmp).map_err(io_at(&tmp))?;
        let mut p = NewPack { out: io::BufWriter::with_capacity(1 << 20, file), hash: blake3::Hasher::new(), pos: 0, tmp };
        p.write(cache::pack::PACK_MAGIC)?;
        Ok(p)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), ServeError> {
        self.out.write_all(b).map_err(io_at(&self.tmp))?;
        self.hash.update(b);
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Appends one record; returns its offset and length.
    fn append(&mut self, d: &Digest, framed: &[u8]) -> Result<(u64, u64), ServeError> {
        let start = self.pos;
        self.write(&record::Header::of(d, framed).encode())?;
        self.write(framed)?;
        Ok((start, self.pos - start))
    }

    /// fsync, then put in `blobs` under its digest.
    fn commit(mut self, blobs: &dyn Blobs, meta_end: u64, origin: Digest) -> Result<PackRef, ServeError> {
        self.out.flush().map_err(io_at(&self.tmp))?;
        cache::fault::point(cache::fault::Kind::Sync);
        self.out.get_ref().sync_all().map_err(io_at(&self.tmp))?;
        let digest = Digest(*self.hash.finalize().as_bytes());
        blobs.put_file(&Serving::pack_key(&digest), &self.tmp)?;
        Ok(PackRef { digest, len: self.pos, meta_end, origin })
    }
}

impl Drop for NewPack {
    /// A pack not committed (a failed build) leaves nothing behind; after a commit the
    /// temporary name no longer exists.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Writes the objects gathered in `group` (emptied) as one group record, recompressed at
/// `level`, and places them in it (`fresh`); a lone object is a record of its own.
fn write_group(w: &mut NewPack, group: &mut Vec<(Digest, Vec<u8>)>, level: i32, fresh: &mut Vec<Placed>) -> Result<(), ServeError> {
    match group.len() {
        0 => {}
        1 => {
            let (d, data) = group.pop().expect("one");
            let (offset, len) = w.append(&d, &format::object::encode(&data, level))?;
            fresh.push(Placed { prefix: layout::prefix(&d), pack: u32::MAX, offset, len, inner: None });
        }
        _ => {
            let mut content = Vec::with_capacity(group.iter().map(|(_, b)| b.len()).sum());
            let mut members = Vec::with_capacity(group.len());
            for (d, data) in group.drain(..) {
                members.push((d, layout::Inner { offset: content.len() as u32, len: data.len() as u32 }));
                content.extend_from_slice(&data);
            }
            let g = Digest::of(&content);
            let (offset, len) = w.append(&g, &format::object::encode(&content, level))?;
            let place = Placed { prefix: layout::prefix(&g), pack: u32::MAX, offset, len, inner: None };
            fresh.push(place);
            fresh.extend(members.into_iter().map(|(d, inner)| Placed { prefix: layout::prefix(&d), inner: Some(inner), ..place }));
        }
    }
    Ok(())
}

/// Builds the layouts of `manifests` that lack one, one after the other, in the background,
/// holding the collection lock shared so no collection removes objects meanwhile. A failed
/// build is logged and tried again at the next publish or start; until then endpoints fetch
/// that generation with the batch request.
pub fn spawn_builds(state: &crate::state::AppState, manifests: Vec<Digest>) {
    let st = state.clone();
    tokio::spawn(async move {
        for m in manifests {
            if st.serving.has_layout(&m) {
                continue;
            }
            let gc = st.gc_lock.clone().read_owned().await;
            let s = st.clone();
            let started = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                let _gc = gc;
                s.serving.build(&s.store, &m)
            })
            .await;
            match r {
                Ok(Ok(b)) => tracing::info!(
                    manifest = %m, objects = b.objects, new_objects = b.new_objects, pack_bytes = b.pack_bytes,
                    millis = started.elapsed().as_millis() as u64, "serving layout built"
                ),
                Ok(Err(e)) => tracing::error!(manifest = %m, error = %anyhow::Error::from(e), "building the serving layout failed"),
                Err(e) => tracing::error!(manifest = %m, error = %e, "building the serving layout panicked"),
            }
        }
    });
}

/// Starts building the layout of every published generation that lacks one (at start: a
/// server that was killed mid-build, or a data directory from before layouts).
pub fn spawn_missing(state: &crate::state::AppState) {
    match state.meta.generations() {
        Ok(all) => spawn_builds(state, all.into_iter().map(|p| p.manifest).filter(|m| !state.serving.has_layout(m)).collect()),
        Err(e) => tracing::error!(error = %e, "listing generations for their serving layouts failed"),
    }
}

/// The HTTP side: `GET /v1/packs/{digest}` and `GET /v1/layouts/{manifest}`.
pub mod routes {
    use axum::body::{Body, Bytes};
    use axum::extract::{Path, State};
    use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};
    use format::Digest;

    use crate::error::AppError;
    use crate::state::AppState;

    /// Bytes read from a file per chunk of a streamed answer.
    const CHUNK: u64 = 1 << 20;
    /// From a bucket, where each read is a request: most ranges an endpoint asks for in one.
    const BUCKET_CHUNK: u64 = 4 << 20;

    fn parse(hex: &str) -> Result<Digest, AppError> {
        hex.parse().map_err(|_| AppError::not_found(format!("{hex:?} names no pack or layout (64 hex characters)")))
    }

    /// `GET|HEAD /v1/packs/{digest}`: a serving pack, whole or one range of it.
    pub async fn pack(State(state): State<AppState>, Path(hex): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
        state.require_read(&headers)?;
        let d = parse(&hex)?;
        let blobs = state.serving.blobs().clone();
        let key = crate::serve::Serving::pack_key(&d);
        serve_blob(Some(&state.metrics.object_bytes_sent), blobs, key, state.serving.pack_len(&d), &d, &headers, "application/vnd.imaged.pack").await
    }

    /// `GET|HEAD /v1/layouts/{manifest}`: where the objects of a generation are; 404 until its
    /// packs are written (a client fetches with `POST /v1/objects/batch` meanwhile).
    pub async fn layout(State(state): State<AppState>, Path(hex): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
        state.require_read(&headers)?;
        let d = parse(&hex)?;
        if !state.serving.has_layout(&d) {
            return Err(AppError::not_found(format!("no layout for manifest {d} (yet)")));
        }
        let blobs = state.serving.blobs().clone();
        let key = crate::serve::Serving::layout_key(&d);
        serve_blob(Some(&state.metrics.object_bytes_sent), blobs, key, None, &d, &headers, "application/vnd.imaged.layout").await
    }

    /// Immutable blob `key` named by digest `d`, whole or one `Range`, streamed off the async
    /// threads; the bytes sent are counted in `sent`.
    pub(crate) async fn serve_blob(
        sent: Option<&prometheus_client::metrics::counter::Counter>,
        blobs: std::sync::Arc<dyn crate::backend::Blobs>,
        key: String,
        len: Option<u64>,
        d: &Digest,
        headers: &HeaderMap,
        kind: &'static str,
    ) -> Result<Response, AppError> {
        let (b, k) = (blobs.clone(), key.clone());
        let total = match tokio::task::spawn_blocking(move || len.map_or_else(|| b.len(&k), |l| Ok(Some(l)))).await {
            Ok(Ok(Some(len))) => len,
            Ok(Ok(None)) => return Err(AppError::not_found(format!("no {key}"))),
            Ok(Err(e)) => return Err(AppError::internal("reading a served blob", e)),
            Err(e) => return Err(AppError::internal("reading a served blob", e)),
        };
        let mut h = match crate::objects::immutable(headers, &format!("\"{d}\""), kind) {
            Ok(h) => h,
            Err(not_modified) => return Ok(not_modified),
        };
        let (status, start, end) = match headers.get(header::RANGE) {
            None => (StatusCode::OK, 0, total),
            Some(r) => match crate::objects::parse_range(r.to_str().unwrap_or(""), total) {
                Some((a, b)) => {
                    h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {a}-{b}/{total}")).expect("digits"));
                    (StatusCode::PARTIAL_CONTENT, a, b + 1)
                }
                None => {
                    h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{total}")).expect("digits"));
                    return Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response());
                }
            },
        };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        if let Some(sent) = sent {
            sent.inc_by(end - start);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        tokio::task::spawn_blocking(move || {
            let chunk = if blobs.is_bucket() { BUCKET_CHUNK } else { CHUNK };
            let mut at = start;
            while at < end {
                let mut buf = vec![0u8; (end - at).min(chunk) as usize];
                let r = blobs.read_at(&key, at, &mut buf).map(|_| Bytes::from(buf)).map_err(std::io::Error::other);
                let failed = r.is_err();
                if tx.blocking_send(r).is_err() || failed {
                    return;
                }
                at += chunk;
            }
        });
        let body = Body::from_stream(crate::objects::tokio_stream_from(rx));
        Ok((status, h, body).into_response())
    }
}

/// `framed` (an object whose bytes are `data`) compressed again at `level`, with the same
/// dictionary if it had one, when that is smaller; else `framed` as it is. `compressors` keeps
/// one compressor per dictionary for the build.
fn recompressed(
    store: &cache::Store,
    framed: Vec<u8>,
    data: &[u8],
    level: i32,
    compressors: &mut HashMap<Digest, zstd::bulk::Compressor<'static>>,
) -> Vec<u8> {
    let again = match format::object::parse_header(&framed).ok().and_then(|h| h.dict) {
        None => format::object::encode(data, level),
        Some(dict) => {
            let compressor = match compressors.entry(dict) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let Some(c) = store.get(&dict).ok().and_then(|bytes| zstd::bulk::Compressor::with_dictionary(level, &bytes).ok()) else {
                        return framed;
                    };
                    e.insert(c)
                }
            };
            format::object::encode_with_dict(data, compressor, &dict)
        }
    };
    if again.len() < framed.len() {
        again
    } else {
        framed
    }
}

/// What `export_static` copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// Serving packs new in the copy.
    pub packs: u64,
    /// Layouts new in the copy.
    pub layouts: u64,
    /// Signed metadata files written.
    pub metadata: u64,
}

/// Brings a static copy of the repository in `data` (a server's data directory) up to date in
/// `out`, for any web server or bucket to serve to endpoints with no `imaged` behind it:
/// `v1/packs/`, `v1/layouts/` and `tuf/`, at the paths the server answers. Immutable files first
/// (packs, layouts, versioned metadata; hard links where `out` is on the same filesystem), the
/// files that name them last, each replaced whole, `timestamp.json` at the very end: a reader
/// of the copy while it is updated sees the old repository or the new one, never a timestamp
/// naming what is not there yet. Nothing is deleted (an endpoint may still read an old version).
pub fn export_static(data: &Path, out: &Path) -> Result<Exported, ServeError> {
    let mut done = Exported::default();
    for (from, to, count) in [("serve/packs", "v1/packs", &mut done.packs), ("serve/layouts", "v1/layouts", &mut done.layouts)] {
        let (from, to) = (data.join(from), out.join(to));
        fs::create_dir_all(&to).map_err(io_at(&to))?;
        for e in fs::read_dir(&from).map_err(io_at(&from))? {
            let src = e.map_err(io_at(&from))?.path();
            let Some(name) = src.file_name() else { continue };
            let dst = to.join(name);
            if dst.exists() {
                continue;
            }
            copy_whole(&src, &dst)?;
            *count += 1;
        }
    }
    done.metadata = publish_metadata(metadata_files(data)?, &out.join("tuf"))?;
    Ok(done)
}

/// Writes signed metadata files (name as the server stores it, exact bytes) into `to` (a
/// static copy's `tuf/`): versioned files (`N.role.json`) first and only if absent, then the
/// current ones that changed, each replaced whole, `timestamp.json` at the very end, so that a
/// reader sees the old repository or the new one. Returns how many files were written.
pub fn publish_metadata(files: Vec<(String, Vec<u8>)>, to: &Path) -> Result<u64, ServeError> {
    fs::create_dir_all(to).map_err(io_at(to))?;
    let mut written = 0;
    for (n, bytes) in in_publish_order(files) {
        let dst = to.join(&n);
        let versioned = n.starts_with(|c: char| c.is_ascii_digit());
        if versioned && dst.exists() {
            continue;
        }
        if !versioned && fs::read(&dst).is_ok_and(|b| b == bytes) {
            continue;
        }
        for name in names_served(&n) {
            let dst = to.join(name);
            if let Some(dir) = dst.parent() {
                fs::create_dir_all(dir).map_err(io_at(dir))?;
            }
            cache::atomic::write(&dst, &bytes).map_err(|e| ServeError::Io { path: e.path, source: e.source })?;
        }
        written += 1;
    }
    Ok(written)
}

/// `publish_metadata` into a bucket's `tuf/`: `sent` holds what this server already put there
/// (by name), so only what changed is sent.
pub fn publish_metadata_to(files: Vec<(String, Vec<u8>)>, blobs: &dyn Blobs, sent: &mut HashMap<String, Vec<u8>>) -> Result<u64, ServeError> {
    let mut written = 0;
    for (n, bytes) in in_publish_order(files) {
        if sent.get(&n) == Some(&bytes) {
            continue;
        }
        for name in names_served(&n) {
            blobs.put(&format!("tuf/{name}"), &bytes)?;
        }
        sent.insert(n, bytes);
        written += 1;
    }
    Ok(written)
}

/// Versioned files (`N.role.json`) first, then the current ones, `timestamp.json` last.
fn in_publish_order(mut files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    files.sort_by_key(|(n, _)| (!n.starts_with(|c: char| c.is_ascii_digit()), n == "timestamp.json", n.clone()));
    files
}

/// The names a metadata file is served under: its own, and for a delegated role (whose name is
/// percent-encoded in the file name, `1.images%2Fapp.json`) the decoded path too, where web
/// servers look after decoding the request's path (`1.images/app.json`).
fn names_served(n: &str) -> Vec<String> {
    let decoded = percent_decode(n);
    let mut names = vec![n.to_string()];
    if decoded != n && !decoded.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        names.push(decoded);
    }
    names
}

/// The signed metadata files of a server's data directory (`DATA/tuf/repo/`), by name.
fn metadata_files(data: &Path) -> Result<Vec<(String, Vec<u8>)>, ServeError> {
    let from = data.join("tuf/repo");
    let mut files = Vec::new();
    if !from.exists() {
        // An unsigned server: nothing an endpoint would accept (docs/trust.md).
        return Ok(files);
    }
    for e in fs::read_dir(&from).map_err(io_at(&from))? {
        let Some(n) = e.ok().and_then(|e| e.file_name().into_string().ok()) else { continue };
        if !n.ends_with(".json") || n.starts_with('.') {
            continue;
        }
        let src = from.join(&n);
        files.push((n, fs::read(&src).map_err(io_at(&src))?));
    }
    Ok(files)
}

/// With the serving packs in a bucket: puts the signed metadata there too, so the bucket is a
/// whole static copy, but only while every published generation has its layout (and so its
/// packs) in the bucket: metadata never names a generation whose objects are not there yet.
/// Returns the files sent (0 when it must wait for a build).
pub fn sync_bucket_metadata(state: &crate::state::AppState, sent: &mut HashMap<String, Vec<u8>>) -> Result<u64, ServeError> {
    let generations = state.meta.generations()?;
    if generations.iter().any(|g| !state.serving.has_layout(&g.manifest)) {
        return Ok(0);
    }
    publish_metadata_to(metadata_files(&state.config.data)?, state.serving.blobs().as_ref(), sent)
}

/// `%XX` sequences of a file name decoded (anything else kept as it is).
fn percent_decode(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| name.to_string())
}

/// Puts `src` at `dst` whole: a hard link, else a copy renamed into place.
fn copy_whole(src: &Path, dst: &Path) -> Result<(), ServeError> {
    if fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    let tmp = dst.with_extension("part");
    fs::copy(src, &tmp).map_err(io_at(&tmp))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_at(&tmp))?;
    fs::rename(&tmp, dst).map_err(io_at(dst))
}
