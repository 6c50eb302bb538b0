//! `imaged mirror`: a copy of a primary's repository, Stratum 1 style, that checks every signed
//! file and every object before it serves them and never signs anything itself.
//!
//! A round of `sync`: the upstream's metadata is updated from the mirror's own trusted state
//! (`DIR/trust/`, as an endpoint keeps it) with the one verification core; the generations to
//! keep are chosen (every signed one, or those of some channels and the N before them); their
//! layouts and serving packs are fetched, each pack checked against the blake3 that names it
//! and every record in it decoded against its digest, each layout checked against the packs
//! and the signed manifest; only then the signed files are written, the timestamp last. The
//! result, `DIR/site/`, is a static copy (`serve::export_static`'s layout) that `run` serves
//! and any web server could. A round that fails anywhere writes no metadata: the mirror goes
//! on serving the last good state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache::trusted_dir::TrustedDir;
use format::layout::{self, Layout};
use format::{object, record, Digest};
use trust::client::{Limits, Trusted, UpdateError};
use trust::metadata::TargetFile;
use trust::policy::{self, GenerationRecord, CHANNELS_ROLE};
use trust::update::{self, RefreshError, Remote};

/// What to copy from where.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// The upstream: a primary, another mirror or a static copy (its base URL).
    pub from: String,
    /// The mirror's directory: `trust/` (what it trusts), `site/` (what it serves), `tmp/`.
    pub dir: PathBuf,
    /// The root to start trusting, needed only while `DIR/trust/` holds none.
    pub root: Option<PathBuf>,
    /// Copy only these channels' generations (and the `keep - 1` before each); none: every
    /// signed generation of every family.
    pub channels: Vec<String>,
    /// Generations kept per channel, the current one included.
    pub keep: u64,
}

/// What one round copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Synced {
    /// The generations served after the round (`IMAGE@N`).
    pub generations: Vec<String>,
    /// Packs fetched and checked in this round.
    pub packs: u64,
    /// Their bytes.
    pub pack_bytes: u64,
    /// Layouts fetched in this round.
    pub layouts: u64,
    /// Signed metadata files written in this round.
    pub metadata: u64,
    /// Layouts removed after the round: generations no longer chosen (older than the `keep`
    /// newest of a channel, or gone from the upstream's signed metadata).
    pub pruned_layouts: u64,
    /// Packs removed after the round: those no remaining layout names.
    pub pruned_packs: u64,
}

/// Why a round stopped. Nothing it fetched is served then, but for packs and layouts that
/// were checked whole (immutable files nobody names yet).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// No trusted root yet.
    #[error("{dir} holds no trusted root: give --root the first time")]
    NoRoot {
        /// The trust directory.
        dir: PathBuf,
    },
    /// The root to start from does not verify.
    #[error("the trusted root does not verify: {0}")]
    BadRoot(#[source] UpdateError),
    /// The upstream's signed metadata was refused or could not be fetched.
    #[error("upstream metadata: {0}")]
    Metadata(#[from] RefreshError),
    /// A signed record is not what a generation or channel target must carry.
    #[error("{target}: {why}")]
    Target {
        /// The target path.
        target: String,
        /// Why.
        why: String,
    },
    /// A request to the upstream failed.
    #[error("{url}: {why}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A layout was refused.
    #[error("layout of manifest {manifest}: {why}")]
    Layout {
        /// The generation's manifest.
        manifest: Digest,
        /// Why.
        why: String,
    },
    /// A pack was refused.
    #[error("pack {digest}: {why}")]
    Pack {
        /// The pack.
        digest: Digest,
        /// Why.
        why: String,
    },
    /// Writing the signed files into the copy failed.
    #[error("writing the signed metadata: {0}")]
    Publish(#[from] crate::serve::ServeError),
    /// The mirror's own disk.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MirrorError + '_ {
    move |source| MirrorError::Io { path: path.to_path_buf(), source }
}

/// Deadline of a metadata or layout request; a pack's grows with its length.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// Slowest upstream a pack download is given time for (bytes per second).
const SLOWEST_LINK: u64 = 1 << 20;

/// GETs under the upstream's base URL, every one with a deadline and a size cap.
struct Upstream {
    base: String,
    client: reqwest::blocking::Client,
}

impl Upstream {
    fn new(base: &str) -> Result<Upstream, MirrorError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_DEADLINE)
            .build()
            .map_err(|e| MirrorError::Fetch { url: base.into(), why: e.to_string() })?;
        Ok(Upstream { base: base.trim_end_matches('/').to_string(), client })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// `path`'s answer, `Ok(None)` on 404.
    fn get(&self, path: &str, deadline: Duration) -> Result<Option<reqwest::blocking::Response>, String> {
        let url = self.url(path);
        let resp = self.client.get(&url).timeout(deadline).send().map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(resp)),
            s => Err(format!("answered {s}")),
        }
    }

    /// The body of `path`, at most `max` bytes.
    fn bytes(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        let Some(resp) = self.get(path, REQUEST_DEADLINE)? else { return Ok(None) };
        let mut body = Vec::new();
        resp.take(max + 1).read_to_end(&mut body).map_err(|e| e.to_string())?;
        if body.len() as u64 > max {
            return Err(format!("more than the {max} bytes allowed"));
        }
        Ok(Some(body))
    }
}

/// The upstream's `tuf/` as a `trust::update::Remote`, keeping every file it fetched (the
/// name as asked, the exact bytes) to be served once the whole round has verified.
struct Metadata<'a> {
    up: &'a Upstream,
    fetched: BTreeMap<String, Vec<u8>>,
}

impl Remote for Metadata<'_> {
    fn fetch(&mut self, name: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        let b = self.up.bytes(&format!("tuf/{name}"), max as u64).map_err(|why| format!("{}: {why}", self.up.url(&format!("tuf/{name}"))))?;
        if let Some(b) = &b {
            self.fetched.insert(name.to_string(), b.clone());
        }
        Ok(b)
    }
}

/// One generation to serve.
struct Chosen {
    image: String,
    n: u64,
    manifest: Digest,
}

/// Runs one round (see the module's doc).
pub fn sync(o: &MirrorOptions) -> Result<Synced, MirrorError> {
    let (trust_dir, site, tmp) = (o.dir.join("trust"), o.dir.join("site"), o.dir.join("tmp"));
    for d in [&site, &tmp] {
        fs::create_dir_all(d).map_err(io_at(d))?;
    }
    let mut files = TrustedDir::open(&trust_dir, &[]).map_err(|e| MirrorError::Io { path: e.path, source: e.source })?;
    let root = match (files.root(), &o.root) {
        (Some(b), _) => b.to_vec(),
        (None, Some(p)) => fs::read(p).map_err(io_at(p))?,
        (None, None) => return Err(MirrorError::NoRoot { dir: trust_dir }),
    };
    let mut t = update::load(&root, &files.others(), Limits::default()).map_err(MirrorError::BadRoot)?;
    let up = Upstream::new(&o.from)?;
    let mut meta = Metadata { up: &up, fetched: BTreeMap::new() };
    let now = cache::clock::now();
    update::refresh(&mut t, &mut meta, now)?;
    update::load_delegated(&mut t, &mut meta, CHANNELS_ROLE, now)?;
    let chosen = choose(&mut t, &mut meta, o, now)?;

    let mut done = Synced::default();
    for g in &chosen {
        copy_generation(&up, &site, &tmp, g, &mut done)?;
    }
    // Every root version an endpoint may still start from, checked as a chain ending at the
    // trusted root.
    let mut published: Vec<(String, Vec<u8>)> = older_roots(&up, &t, &site.join("tuf"))?;
    published.extend(meta.fetched);
    let root_now = t.files()[0].1.to_vec();
    published.push((trust::sign::metadata_file("root", Some(t.root().common.version)), root_now.clone()));
    published.push(("root.json".into(), root_now));
    done.metadata = crate::serve::publish_metadata(published, &site.join("tuf"))?;
    files.persist(&t).map_err(|e| MirrorError::Io { path: e.path, source: e.source })?;
    done.generations = chosen.iter().map(|g| format!("{}@{}", g.image, g.n)).collect();
    (done.pruned_layouts, done.pruned_packs) = prune(&site, &chosen.iter().map(|g| g.manifest).collect())?;
    Ok(done)
}

/// Removes from `site` the layouts of generations not in `keep`, then the packs no remaining
/// layout names; returns how many of each. Runs after the round's metadata is written, so
/// what the new metadata names stays; files of other names are left alone.
fn prune(site: &Path, keep: &HashSet<Digest>) -> Result<(u64, u64), MirrorError> {
    let names = |dir: &Path| -> Result<Vec<(Digest, PathBuf)>, MirrorError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io_at(dir))?;
            if let Some(d) = e.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) {
                out.push((d, e.path()));
            }
        }
        Ok(out)
    };
    let (mut layouts, mut packs) = (0, 0);
    let mut named = HashSet::new();
    for (m, path) in names(&site.join("v1/layouts"))? {
        if !keep.contains(&m) {
            fs::remove_file(&path).map_err(io_at(&path))?;
            layouts += 1;
            continue;
        }
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        // Checked when it was copied; one that no longer decodes keeps every pack.
        let Ok(l) = Layout::decode(&bytes) else { return Ok((layouts, 0)) };
        named.extend(l.packs.iter().map(|p| p.digest));
    }
    for (d, path) in names(&site.join("v1/packs"))? {
        if !named.contains(&d) {
            fs::remove_file(&path).map_err(io_at(&path))?;
            packs += 1;
        }
    }
    Ok((layouts, packs))
}

/// The generations to serve, newest of each family or channel first.
fn choose(t: &mut Trusted, meta: &mut Metadata, o: &MirrorOptions, now: i64) -> Result<Vec<Chosen>, MirrorError> {
    // (family, newest generation to keep or None for all of them, how many)
    let mut wanted: Vec<(String, Option<u64>, u64)> = Vec::new();
    if o.channels.is_empty() {
        let families: Vec<String> = t
            .snapshot()
            .map(|s| s.meta.keys().filter_map(|f| f.strip_prefix("images/")?.strip_suffix(".json").map(String::from)).collect())
            .unwrap_or_default();
        wanted.extend(families.into_iter().map(|f| (f, None, u64::MAX)));
    }
    for channel in &o.channels {
        let path = policy::channel_path(channel);
        let (file, role) = update::find(t, meta, &path, now)?.ok_or_else(|| MirrorError::Target { target: path.clone(), why: "not signed upstream".into() })?;
        let rec = policy::channel_record(channel, &file, &role).map_err(|e| MirrorError::Target { target: path.clone(), why: e.to_string() })?;
        let (family, n) = parse_generation_path(&rec.target).ok_or_else(|| MirrorError::Target { target: path, why: format!("names {}", rec.target) })?;
        wanted.push((family, Some(n), o.keep.max(1)));
    }
    let mut chosen: Vec<Chosen> = Vec::new();
    for (family, newest, count) in wanted {
        // Loads the family's role (any path under it will do).
        update::find(t, meta, &policy::generation_path(&family, newest.unwrap_or(0)), now)?;
        let Some(role) = t.targets(&policy::family_role(&family)) else { continue };
        let mut signed: Vec<(u64, &str, &TargetFile)> = role
            .targets
            .iter()
            .filter_map(|(p, f)| parse_generation_path(p).filter(|(fam, _)| *fam == family).map(|(_, n)| (n, p.as_str(), f)))
            .filter(|(n, _, _)| newest.is_none_or(|top| *n <= top))
            .collect();
        signed.sort_by(|a, b| b.0.cmp(&a.0));
        for (n, path, file) in signed.into_iter().take(count.min(usize::MAX as u64) as usize) {
            if chosen.iter().any(|c| c.image == family && c.n == n) {
                continue;
            }
            let bad = |why: String| MirrorError::Target { target: path.to_string(), why };
            let rec: GenerationRecord = file
                .custom
                .clone()
                .and_then(|c| serde_json::from_value(c).ok())
                .ok_or_else(|| bad("its signed record does not parse".into()))?;
            let manifest = policy::manifest_of(file, &rec).ok_or_else(|| bad("names no manifest".into()))?;
            let manifest = manifest.parse().map_err(|_| bad(format!("names manifest {manifest:?}")))?;
            chosen.push(Chosen { image: family.clone(), n, manifest });
        }
    }
    Ok(chosen)
}

/// `images/FAMILY/N` → (FAMILY, N).
fn parse_generation_path(p: &str) -> Option<(String, u64)> {
    let (family, n) = p.strip_prefix("images/")?.rsplit_once('/')?;
    Some((family.to_string(), n.parse().ok()?))
}

/// Fetches and checks the layout and the packs of generation `g` that `site` lacks.
fn copy_generation(up: &Upstream, site: &Path, tmp: &Path, g: &Chosen, done: &mut Synced) -> Result<(), MirrorError> {
    let layout_path = site.join("v1/layouts").join(g.manifest.to_hex());
    if layout_path.exists() {
        return Ok(());
    }
    let bad_layout = |why: String| MirrorError::Layout { manifest: g.manifest, why };
    let url_path = format!("v1/layouts/{}", g.manifest.to_hex());
    let bytes = up
        .bytes(&url_path, layout::MAX_LAYOUT as u64)
        .map_err(|why| MirrorError::Fetch { url: up.url(&url_path), why })?
        .ok_or_else(|| bad_layout("the upstream has none (its packs may not be written yet)".into()))?;
    let l = Layout::decode(&bytes).map_err(|e| bad_layout(e.to_string()))?;
    if l.manifest != g.manifest {
        return Err(bad_layout(format!("it is the layout of {}", l.manifest)));
    }
    let packs_dir = site.join("v1/packs");
    for d in [&packs_dir, &site.join("v1/layouts")] {
        fs::create_dir_all(d).map_err(io_at(d))?;
    }
    // Each pack of the layout: where it is on disk, and whether it is new (in tmp/).
    let mut at: Vec<(PathBuf, bool)> = Vec::with_capacity(l.packs.len());
    for p in &l.packs {
        let served = packs_dir.join(p.digest.to_hex());
        if served.exists() {
            at.push((served, false));
            continue;
        }
        let part = tmp.join(format!("{}.part", p.digest.to_hex()));
        fetch_pack(up, p, &part)?;
        done.packs += 1;
        done.pack_bytes += p.len;
        at.push((part, true));
    }
    let files: Vec<File> = at.iter().map(|(p, _)| File::open(p).map_err(io_at(p))).collect::<Result<_, _>>()?;
    let index: HashMap<u64, layout::Placed> = l.entries.iter().filter(|e| e.inner.is_none()).map(|e| (e.prefix, *e)).collect();
    let mut dicts: HashMap<Digest, Vec<u8>> = HashMap::new();
    for (i, (path, new)) in at.iter().enumerate() {
        if *new {
            check_records(&l.packs[i].digest, path, &files, &index, &mut dicts)?;
        }
    }
    // Every entry must point at a record of the object it names.
    let mut names_manifest = false;
    // The decoded content of the last group record a member entry pointed into.
    let mut group: Option<((u32, u64), Vec<u8>)> = None;
    for e in &l.entries {
        let file = files.get(e.pack as usize).ok_or_else(|| bad_layout(format!("entry in pack {} of {}", e.pack, l.packs.len())))?;
        let mismatch = || bad_layout(format!("the entry at {}@{} does not match its record", e.pack, e.offset));
        if let Some(inner) = e.inner {
            // A member of a group record: the bytes it names inside the group must hash to it.
            if group.as_ref().is_none_or(|(at, _)| *at != (e.pack, e.offset)) {
                let mut rec = vec![0u8; e.len as usize];
                file.read_exact_at(&mut rec, e.offset).map_err(|_| bad_layout(format!("an entry past the end of pack {}", e.pack)))?;
                let h = record::Header::decode(rec[..record::HEADER_LEN].try_into().expect("a record is longer than its header"));
                let content = object::decode(&rec[record::HEADER_LEN..], &h.digest, cache::MAX_OBJECT).map_err(|_| mismatch())?;
                group = Some(((e.pack, e.offset), content));
            }
            let content = &group.as_ref().expect("just set").1;
            let bytes = content.get(inner.offset as usize..inner.offset as usize + inner.len as usize).ok_or_else(mismatch)?;
            if layout::prefix(&Digest::of(bytes)) != e.prefix {
                return Err(mismatch());
            }
            continue;
        }
        let mut head = [0u8; record::HEADER_LEN];
        file.read_exact_at(&mut head, e.offset).map_err(|_| bad_layout(format!("an entry past the end of pack {}", e.pack)))?;
        let h = record::Header::decode(&head);
        if layout::prefix(&h.digest) != e.prefix || h.record_len() != e.len {
            return Err(mismatch());
        }
        names_manifest |= h.digest == g.manifest;
    }
    if !names_manifest {
        return Err(bad_layout("it places no record of the manifest".into()));
    }
    for (i, (path, new)) in at.iter().enumerate() {
        if *new {
            let to = packs_dir.join(l.packs[i].digest.to_hex());
            fs::rename(path, &to).map_err(io_at(&to))?;
        }
    }
    cache::atomic::write_with(&layout_path, &bytes, cache::atomic::Options::new().tmp_in(tmp))
        .map_err(|e| MirrorError::Io { path: e.path, source: e.source })?;
    done.layouts += 1;
    Ok(())
}

/// Downloads pack `p` into `part`: its length, and the blake3 that names it.
fn fetch_pack(up: &Upstream, p: &layout::PackRef, part: &Path) -> Result<(), MirrorError> {
    let url_path = format!("v1/packs/{}", p.digest.to_hex());
    let fetch_err = |why: String| MirrorError::Fetch { url: up.url(&url_path), why };
    let deadline = REQUEST_DEADLINE + Duration::from_secs(p.len / SLOWEST_LINK);
    let resp = up.get(&url_path, deadline).map_err(fetch_err)?.ok_or_else(|| fetch_err("not found".into()))?;
    let mut out = File::create(part).map_err(io_at(part))?;
    let mut hasher = blake3::Hasher::new();
    let mut body = resp.take(p.len + 1);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| fetch_err(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_at(part))?;
        len += n as u64;
    }
    let refused = |why: String| {
        let _ = fs::remove_file(part);
        MirrorError::Pack { digest: p.digest, why }
    };
    if len != p.len {
        return Err(refused(format!("{len} bytes, the layout says {}", p.len)));
    }
    if Digest(*hasher.finalize().as_bytes()) != p.digest {
        return Err(refused("its bytes do not hash to its name".into()));
    }
    out.sync_all().map_err(io_at(part))
}

/// Decodes every record of pack `path` against the digest it names. Objects compressed with a
/// dictionary find it through the layout (`index`, `files`).
fn check_records(
    digest: &Digest,
    path: &Path,
    files: &[File],
    index: &HashMap<u64, layout::Placed>,
    dicts: &mut HashMap<Digest, Vec<u8>>,
) -> Result<(), MirrorError> {
    let refused = |why: String| MirrorError::Pack { digest: *digest, why };
    let mut f = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_at(path))?);
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).map_err(|_| refused("shorter than a pack header".into()))?;
    if &magic != cache::pack::PACK_MAGIC {
        return Err(refused("not a pack".into()));
    }
    f.seek(SeekFrom::Start(8)).map_err(io_at(path))?;
    let mut reader = cache::record_reader::RecordReader::new(f);
    let mut decompressors: HashMap<Digest, zstd::bulk::Decompressor<'static>> = HashMap::new();
    while let Some(h) = reader.next_header().map_err(|e| refused(e.to_string()))? {
        h.check(layout::MAX_RECORD).map_err(|e| refused(e.to_string()))?;
        let framed = reader.read_framed(&h).map_err(|e| refused(e.to_string()))?;
        let header = object::parse_header(&framed).map_err(|e| refused(format!("object {}: {e}", h.digest)))?;
        let checked = match header.dict {
            None => object::decode(&framed, &h.digest, cache::MAX_OBJECT),
            Some(dict) => {
                if !decompressors.contains_key(&dict) {
                    let bytes = dictionary(&dict, files, index, dicts).map_err(|why| refused(format!("object {}: {why}", h.digest)))?;
                    let d = zstd::bulk::Decompressor::with_dictionary(&bytes).map_err(|e| refused(format!("dictionary {dict}: {e}")))?;
                    decompressors.insert(dict, d);
                }
                object::decode_with_dict(&framed, &h.digest, cache::MAX_OBJECT, decompressors.get_mut(&dict).expect("inserted"))
            }
        };
        checked.map_err(|e| refused(format!("object {}: {e}", h.digest)))?;
    }
    Ok(())
}

/// Dictionary `d`, read through the layout and checked.
fn dictionary(d: &Digest, files: &[File], index: &HashMap<u64, layout::Placed>, dicts: &mut HashMap<Digest, Vec<u8>>) -> Result<Vec<u8>, String> {
    if let Some(b) = dicts.get(d) {
        return Ok(b.clone());
    }
    let e = index.get(&layout::prefix(d)).ok_or_else(|| format!("its dictionary {d} is not in the layout"))?;
    let file = files.get(e.pack as usize).ok_or_else(|| format!("dictionary {d}: no pack {}", e.pack))?;
    let mut rec = vec![0u8; e.len as usize];
    file.read_exact_at(&mut rec, e.offset).map_err(|err| format!("dictionary {d}: {err}"))?;
    let r = record::records(&rec).next().ok_or_else(|| format!("dictionary {d}: no record"))?.map_err(|err| err.to_string())?;
    if r.digest != *d {
        return Err(format!("dictionary {d}: the layout points at {}", r.digest));
    }
    let bytes = object::decode(r.framed, d, cache::MAX_DICTIONARY).map_err(|err| format!("dictionary {d}: {err}"))?;
    dicts.insert(*d, bytes.clone());
    Ok(bytes)
}

/// Root versions 1 to the trusted one's predecessor that `tuf` lacks, fetched and checked as
/// one chain that ends at the trusted root (each signed by its predecessor and itself).
fn older_roots(up: &Upstream, t: &Trusted, tuf: &Path) -> Result<Vec<(String, Vec<u8>)>, MirrorError> {
    let top = t.root().common.version;
    let name = |v: u64| trust::sign::metadata_file("root", Some(v));
    if (1..top).all(|v| tuf.join(name(v)).exists()) {
        return Ok(Vec::new());
    }
    let mut chain = Vec::new();
    for v in 1..top {
        let n = name(v);
        let bytes = match fs::read(tuf.join(&n)) {
            Ok(b) => b,
            Err(_) => up
                .bytes(&format!("tuf/{n}"), t.root_limit() as u64)
                .map_err(|why| MirrorError::Fetch { url: up.url(&format!("tuf/{n}")), why })?
                .ok_or_else(|| MirrorError::Metadata(RefreshError::Absent { file: n.clone() }))?,
        };
        chain.push((n, bytes));
    }
    let refused = |file: &str| {
        let file = file.to_string();
        move |source| MirrorError::Metadata(RefreshError::Refused { file, source })
    };
    let mut walk = Trusted::new(&chain[0].1, Limits::default()).map_err(refused(&chain[0].0))?;
    for (n, b) in chain.iter().skip(1) {
        walk.update_root(b).map_err(refused(n))?;
    }
    let top_bytes = t.files()[0].1.to_vec();
    walk.update_root(&top_bytes).map_err(refused(&name(top)))?;
    Ok(chain)
}

/// The state of the last rounds, for `GET /v1/mirror`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// The upstream.
    pub from: String,
    /// When the last round that succeeded ended (seconds since the epoch).
    pub last_ok: Option<i64>,
    /// What it copied.
    pub last_synced: Option<Synced>,
    /// Why the last round failed, if it did (the mirror serves the last good state).
    pub last_error: Option<String>,
}

/// Syncs every `interval` on a thread of its own and serves `DIR/site/` on `listener` until
/// the process is stopped.
pub async fn run(
    o: MirrorOptions,
    listener: impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr>,
    interval: Duration,
) -> anyhow::Result<()> {
    let status = Arc::new(Mutex::new(Status { from: o.from.clone(), ..Status::default() }));
    let st = status.clone();
    let site = o.dir.join("site");
    std::thread::Builder::new().name("mirror-sync".into()).spawn(move || loop {
        let r = sync(&o);
        {
            let mut s = st.lock().unwrap();
            match r {
                Ok(done) => {
                    if done.packs + done.layouts + done.metadata > 0 {
                        tracing::info!(packs = done.packs, bytes = done.pack_bytes, layouts = done.layouts, metadata = done.metadata, "synced");
                    }
                    s.last_ok = Some(cache::clock::now());
                    s.last_synced = Some(done);
                    s.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sync failed; serving the last good state");
                    s.last_error = Some(e.to_string());
                }
            }
        }
        std::thread::sleep(interval);
    })?;
    axum::serve(listener, routes::router(site, status)?).await?;
    Ok(())
}

/// The mirror's HTTP side: the files of a static copy, at the paths a server answers.
mod routes {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{header, HeaderMap};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{any, get};
    use axum::{Json, Router};
    use format::Digest;

    use super::Status;
    use crate::error::AppError;

    #[derive(Clone)]
    struct Mirror {
        site: Arc<PathBuf>,
        /// `site/v1/`: packs and layouts at the keys a server uses.
        blobs: Arc<dyn crate::backend::Blobs>,
        status: Arc<Mutex<Status>>,
    }

    pub(super) fn router(site: PathBuf, status: Arc<Mutex<Status>>) -> std::io::Result<Router> {
        let blobs = Arc::new(crate::backend::LocalDir::open(&site.join("v1"))?);
        let router = Router::new()
            .route("/tuf/{*file}", get(tuf))
            .route("/v1/packs/{digest}", get(pack))
            .route("/v1/layouts/{manifest}", get(layout))
            .route("/v1/mirror", get(mirror))
            .route("/v1/fleet/{*rest}", any(not_here))
            .with_state(Mirror { site: Arc::new(site), blobs, status });
        Ok(router)
    }

    /// The fleet's routes: 502, which an agent takes as "try the next server" (a 404 would be
    /// an answer), so that a mirror listed first never stops an agent's check-ins.
    async fn not_here() -> Response {
        let body = serde_json::json!({"code": "unknown", "message": "a mirror: the fleet's control plane is on the primary"});
        (axum::http::StatusCode::BAD_GATEWAY, Json(body)).into_response()
    }

    fn digest(hex: &str) -> Result<Digest, AppError> {
        hex.parse().map_err(|_| AppError::not_found(format!("{hex:?} names no pack or layout (64 hex characters)")))
    }

    async fn pack(State(m): State<Mirror>, Path(hex): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
        let d = digest(&hex)?;
        let key = crate::serve::Serving::pack_key(&d);
        crate::serve::routes::serve_blob(None, m.blobs.clone(), key, None, &d, &headers, "application/vnd.imaged.pack").await
    }

    async fn layout(State(m): State<Mirror>, Path(hex): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
        let d = digest(&hex)?;
        let key = crate::serve::Serving::layout_key(&d);
        crate::serve::routes::serve_blob(None, m.blobs.clone(), key, None, &d, &headers, "application/vnd.imaged.layout").await
    }

    /// `GET /tuf/{file}`: a signed file as the upstream served it.
    async fn tuf(State(m): State<Mirror>, Path(file): Path<String>) -> Result<Response, AppError> {
        let name = crate::trust_api::stored_name(&file);
        if name.contains('/') || name.starts_with('.') {
            return Err(AppError::not_found(format!("no metadata file {file}")));
        }
        let path = m.site.join("tuf").join(&name);
        let bytes = tokio::fs::read(&path).await.map_err(|_| AppError::not_found(format!("no metadata file {name}")))?;
        let cache = if name.starts_with(|c: char| c.is_ascii_digit()) { "public, max-age=31536000, immutable" } else { "no-cache" };
        Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, cache)], bytes).into_response())
    }

    /// `GET /v1/mirror`: the upstream and the last rounds.
    async fn mirror(State(m): State<Mirror>) -> Json<Status> {
        Json(m.status.lock().unwrap().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest([n; 32])
    }

    /// A site holding the layout of generation `m` naming `packs`, and those packs.
    fn put(site: &Path, m: u8, packs: &[u8]) {
        let refs = packs.iter().map(|&p| layout::PackRef { digest: digest(p), len: 8, meta_end: 8, origin: digest(m) }).collect();
        let l = Layout { manifest: digest(m), packs: refs, entries: Vec::new() };
        for d in ["v1/layouts", "v1/packs"] {
            fs::create_dir_all(site.join(d)).unwrap();
        }
        fs::write(site.join("v1/layouts").join(digest(m).to_hex()), l.encode().unwrap()).unwrap();
        for &p in packs {
            fs::write(site.join("v1/packs").join(digest(p).to_hex()), b"IMGP\x01\0\0\0").unwrap();
        }
    }

    #[test]
    fn pruning_removes_the_layouts_not_kept_and_the_packs_only_they_named() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path();
        put(site, 1, &[11]);
        put(site, 2, &[11, 12]); // gen 2 shares gen 1's pack
        put(site, 3, &[13]);
        fs::write(site.join("v1/packs/README"), b"not a pack").unwrap();
        assert_eq!(prune(site, &HashSet::from([digest(2)])).unwrap(), (2, 1));
        let left = |d: &str| {
            let mut v: Vec<String> = fs::read_dir(site.join(d)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };
        assert_eq!(left("v1/layouts"), [digest(2).to_hex()]);
        assert_eq!(left("v1/packs"), [digest(11).to_hex(), digest(12).to_hex(), "README".to_string()]);
        // Nothing more to remove the second time.
        assert_eq!(prune(site, &HashSet::from([digest(2)])).unwrap(), (0, 0));
    }
}
