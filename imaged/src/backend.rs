//! Where the served repository lives: serving packs (`v1/packs/HEX`), layouts
//! (`v1/layouts/HEX`) and, in a bucket, the signed metadata (`tuf/NAME`), at the paths a static
//! copy uses, behind one trait with two implementations: a directory on the server's disk
//! (`DATA/serve/`, the default) and an S3-compatible bucket through `object_store`
//! (`[storage]` in imaged.toml). Calls block; the server makes them off its async threads.
//! Every object is written whole: a reader sees it complete or not at all.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, PutPayload};

/// Why a call to the storage failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The local directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The bucket (the key, and the client's error).
    #[error("bucket object {key}: {why}")]
    Bucket {
        /// The object's key.
        key: String,
        /// Why.
        why: String,
    },
}

/// Immutable blobs by key (`v1/packs/HEX`, `v1/layouts/HEX`, `tuf/NAME`).
pub trait Blobs: Send + Sync {
    /// The length of `key`; `None` if it is absent.
    fn len(&self, key: &str) -> Result<Option<u64>, BlobError>;
    /// Fills `buf` from `key` at `offset`.
    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), BlobError>;
    /// The whole of `key`; `None` if it is absent.
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError>;
    /// Makes the file at `path` (durable, in the server's `tmp/`) the content of `key`; the
    /// file is gone afterwards.
    fn put_file(&self, key: &str, path: &Path) -> Result<(), BlobError>;
    /// Makes `bytes` the content of `key`.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError>;
    /// The keys under `prefix` (which ends with `/`), without the prefix.
    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError>;
    /// Removes `key` (absent is fine).
    fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Whether this is a bucket (which also holds the signed metadata).
    fn is_bucket(&self) -> bool;
}

/// A directory: `v1/packs/HEX` is `DIR/packs/HEX` (the layout of `DATA/serve/` since it exists).
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// Blobs under `root` (created if needed).
    pub fn open(root: &Path) -> io::Result<LocalDir> {
        fs::create_dir_all(root)?;
        Ok(LocalDir { root: root.to_path_buf() })
    }

    /// The file of `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key.strip_prefix("v1/").unwrap_or(key))
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

impl Blobs for LocalDir {
    fn len(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let path = self.path(key);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        let path = self.path(key);
        fs::File::open(&path).and_then(|f| f.read_exact_at(buf, offset)).map_err(io_at(&path))
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<(), BlobError> {
        let to = self.path(key);
        let dir = to.parent().expect("a key names a file in a directory");
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        cache::fault::point(cache::fault::Kind::Write);
        fs::rename(path, &to).map_err(io_at(&to))?;
        cache::atomic::sync_dir(dir).map_err(|e| BlobError::Io { path: e.path, source: e.source })
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let to = self.path(key);
        let dir = to.parent().expect("a key names a file in a directory");
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        cache::atomic::write(&to, bytes).map_err(|e| BlobError::Io { path: e.path, source: e.source })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let dir = self.path(prefix);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            if let Some(n) = e.map_err(io_at(&dir))?.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&path)(e)),
            _ => Ok(()),
        }
    }

    fn is_bucket(&self) -> bool {
        false
    }
}

/// `[storage]` in imaged.toml: an S3-compatible bucket. Credentials come from here or from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; they are never logged.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The S3 endpoint, e.g. `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region (Garage's default is `garage`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Key prefix inside the bucket (`""`: the bucket's root is the static copy's root).
    #[serde(default)]
    pub prefix: String,
    /// The access key id (else `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret key (else `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Deadline of one request, seconds (a part of an upload, a range of a read).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Bytes of the read-through cache of packs and layouts on the server's disk
    /// (`DATA/bucket-cache/`; 0: every read goes to the bucket).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("cache_bytes", &self.cache_bytes)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "(set)"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

fn default_region() -> String {
    "garage".into()
}

fn default_timeout() -> u64 {
    30
}

fn default_cache_bytes() -> u64 {
    8 << 30
}

/// Bytes per part of a multipart upload.
const PART: usize = 16 << 20;

/// An S3-compatible bucket.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// A runtime of its own: calls come from any thread, async or not, and wait here.
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    /// A client for the bucket `c` names (nothing is sent yet).
    pub fn open(c: &BucketConfig) -> Result<Bucket, BlobError> {
        let bad = |why: String| BlobError::Bucket { key: String::new(), why };
        let env = |v: &str| std::env::var(v).ok();
        let id = c.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID")).ok_or_else(|| bad("no access_key_id in [storage] and no AWS_ACCESS_KEY_ID".into()))?;
        let secret = c
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| bad("no secret_access_key in [storage] and no AWS_SECRET_ACCESS_KEY".into()))?;
        let options = object_store::ClientOptions::new()
            .with_timeout(Duration::from_secs(c.timeout_seconds.max(1)))
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(c.endpoint.starts_with("http://"));
        let retry = object_store::RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(c.timeout_seconds.max(1) * 2), ..Default::default() };
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&c.endpoint)
            .with_bucket_name(&c.bucket)
            .with_region(&c.region)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bucket")
            .enable_all()
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let prefix = match c.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(Bucket { store: Arc::new(store), prefix, rt })
    }

    /// The bucket key of `key`, as it is (a `%` in a metadata file's name stays one: a static
    /// copy's names).
    fn path(&self, key: &str) -> object_store::path::Path {
        let full = format!("{}{key}", self.prefix);
        object_store::path::Path::parse(&full).unwrap_or_else(|_| object_store::path::Path::from(full))
    }

    /// Runs `f` on the bucket's runtime and waits for it (from any thread).
    fn wait<T: Send + 'static>(&self, f: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the bucket's runtime runs until the bucket is dropped")
    }

    fn err(key: &str) -> impl FnOnce(object_store::Error) -> BlobError + '_ {
        move |e| BlobError::Bucket { key: key.to_string(), why: e.to_string() }
    }
}

impl Blobs for Bucket {
    fn len(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let (s, p) = (self.store.clone(), self.path(key));
        match self.wait(async move { s.head(&p).await }) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Bucket::err(key)(e)),
        }
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        let (s, p, end) = (self.store.clone(), self.path(key), offset + buf.len() as u64);
        let got = self.wait(async move { s.get_range(&p, offset..end).await }).map_err(Bucket::err(key))?;
        if got.len() != buf.len() {
            return Err(BlobError::Bucket { key: key.into(), why: format!("{} bytes where {} were asked", got.len(), buf.len()) });
        }
        buf.copy_from_slice(&got);
        Ok(())
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let (s, p) = (self.store.clone(), self.path(key));
        match self.wait(async move {
            match s.get(&p).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            }
        }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Bucket::err(key)(e)),
        }
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<(), BlobError> {
        let len = fs::metadata(path).map_err(io_at(path))?.len();
        if len <= PART as u64 {
            let bytes = fs::read(path).map_err(io_at(path))?;
            self.put(key, &bytes)?;
        } else {
            // A multipart upload: the object appears only when it completes; a failed one is
            // aborted (what a killed server leaves, the bucket's lifecycle rule removes).
            let (s, p, file) = (self.store.clone(), self.path(key), path.to_path_buf());
            self.wait(async move {
                let mut up = s.put_multipart(&p).await?;
                let f = fs::File::open(&file).map_err(|e| object_store::Error::Generic { store: "file", source: Box::new(e) })?;
                let mut at = 0u64;
                let r: object_store::Result<()> = async {
                    while at < len {
                        let mut part = vec![0u8; (len - at).min(PART as u64) as usize];
                        f.read_exact_at(&mut part, at).map_err(|e| object_store::Error::Generic { store: "file", source: Box::new(e) })?;
                        up.put_part(PutPayload::from(part)).await?;
                        at += PART as u64;
                    }
                    up.complete().await.map(|_| ())
                }
                .await;
                if r.is_err() {
                    let _ = up.abort().await;
                }
                r
            })
            .map_err(Bucket::err(key))?;
        }
        fs::remove_file(path).map_err(io_at(path))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let (s, p, b) = (self.store.clone(), self.path(key), PutPayload::from(bytes.to_vec()));
        self.wait(async move { s.put(&p, b).await }).map(|_| ()).map_err(Bucket::err(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        use futures::StreamExt;
        let (s, p) = (self.store.clone(), self.path(prefix.trim_end_matches('/')));
        let metas: Vec<object_store::Result<object_store::ObjectMeta>> = self.wait(async move { s.list(Some(&p)).collect().await });
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(Bucket::err(prefix))?;
            if let Some(name) = m.location.filename() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        let (s, p) = (self.store.clone(), self.path(key));
        match self.wait(async move { s.delete(&p).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Bucket::err(key)(e)),
        }
    }

    fn is_bucket(&self) -> bool {
        true
    }
}

/// Bytes per block of the read-through cache: the unit fetched from the bucket.
pub const BLOCK: u64 = 4 << 20;

/// Counters of a [`ReadThrough`] (shared with the server's metrics).
#[derive(Clone, Default)]
pub struct CacheCounters {
    /// Blocks read from the disk cache.
    pub hits: prometheus_client::metrics::counter::Counter,
    /// Blocks fetched from the bucket (one ranged GET each).
    pub fetches: prometheus_client::metrics::counter::Counter,
    /// Blocks evicted to stay under the cap.
    pub evictions: prometheus_client::metrics::counter::Counter,
}

/// The bucket's immutable objects (serving packs and layouts, `v1/...`) read through a cache
/// of [`BLOCK`]-sized pieces on the server's disk (`DATA/bucket-cache/KEY/INDEX`), least
/// recently used evicted above a cap; everything else goes to the bucket as it is. A bucket's
/// GET costs tens of milliseconds; an endpoint's full read makes a thousand ranged requests,
/// most within a few blocks of each other. A block is written whole and fsynced before its
/// rename, so after a crash a cached block is complete or absent; its length is checked at
/// each read. What the cache holds is not verified again: the bucket is the server's own
/// storage, and endpoints verify every object they get.
pub struct ReadThrough {
    inner: Arc<dyn Blobs>,
    dir: PathBuf,
    cap: u64,
    used: std::sync::atomic::AtomicU64,
    /// Lengths of immutable objects seen (a present object never changes).
    lens: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// One fetch of a block at a time (striped by the block's name).
    fetching: Vec<std::sync::Mutex<()>>,
    evicting: std::sync::Mutex<()>,
    counters: CacheCounters,
}

/// The cache's files under `dir` (not `tmp/`), with their size and last use.
fn cached_files(dir: &Path) -> Vec<(std::time::SystemTime, u64, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                if e.file_name() != "tmp" || d != dir {
                    stack.push(e.path());
                }
            } else {
                out.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len(), e.path()));
            }
        }
    }
    out
}

impl ReadThrough {
    /// A cache of at most `cap` bytes in `dir` in front of `inner`; what an earlier run left
    /// there is kept (and counted), its unfinished temporary files removed.
    pub fn open(inner: Arc<dyn Blobs>, dir: &Path, cap: u64, counters: CacheCounters) -> io::Result<ReadThrough> {
        let tmp = dir.join("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        let used: u64 = cached_files(dir).iter().map(|f| f.1).sum();
        Ok(ReadThrough {
            inner,
            dir: dir.to_path_buf(),
            cap,
            used: used.into(),
            lens: Default::default(),
            fetching: (0..64).map(|_| Default::default()).collect(),
            evicting: Default::default(),
            counters,
        })
    }

    /// Whether `key` is one of the immutable objects the cache keeps.
    fn cached(&self, key: &str) -> bool {
        self.cap > 0 && key.starts_with("v1/")
    }

    fn block_path(&self, key: &str, index: u64) -> PathBuf {
        self.dir.join(key).join(index.to_string())
    }

    /// Reads `buf.len()` bytes at `at` of block `index` of `key` (of length `len`) into `buf`,
    /// from the disk cache or else fetched whole from the bucket first.
    fn read_block(&self, key: &str, len: u64, index: u64, at: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        let path = self.block_path(key, index);
        let want = BLOCK.min(len - index * BLOCK);
        let hit = |path: &Path, buf: &mut [u8]| -> Option<()> {
            let f = fs::File::open(path).ok()?;
            if f.metadata().ok()?.len() != want {
                return None;
            }
            f.read_exact_at(buf, at).ok()?;
            let _ = f.set_modified(std::time::SystemTime::now());
            Some(())
        };
        if hit(&path, buf).is_some() {
            self.counters.hits.inc();
            return Ok(());
        }
        let stripe = blake3::hash(path.as_os_str().as_encoded_bytes()).as_bytes()[0] as usize % self.fetching.len();
        let _one = self.fetching[stripe].lock().unwrap_or_else(|e| e.into_inner());
        if hit(&path, buf).is_some() {
            self.counters.hits.inc();
            return Ok(());
        }
        let mut block = vec![0u8; want as usize];
        self.inner.read_at(key, index * BLOCK, &mut block)?;
        self.counters.fetches.inc();
        buf.copy_from_slice(&block[at as usize..at as usize + buf.len()]);
        let dir = path.parent().expect("a block is in its object's directory");
        let stored = fs::create_dir_all(dir)
            .map_err(|source| cache::atomic::WriteError { path: dir.to_path_buf(), source })
            .and_then(|()| cache::atomic::write_with(&path, &block, cache::atomic::Options::new().defer_dir_sync().tmp_in(&self.dir.join("tmp"))));
        match stored {
            Ok(()) => {
                let used = self.used.fetch_add(want, std::sync::atomic::Ordering::Relaxed) + want;
                if used > self.cap {
                    self.evict();
                }
            }
            // The read is served anyway; a full disk only costs the cache.
            Err(e) => tracing::warn!("bucket cache: {e}"),
        }
        Ok(())
    }

    /// Removes the least recently used blocks until the cache holds 90% of its cap.
    fn evict(&self) {
        let Ok(_one) = self.evicting.try_lock() else { return };
        let mut files = cached_files(&self.dir);
        files.sort();
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        for (_, size, path) in files {
            if used <= self.cap / 10 * 9 {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                used -= size;
                self.counters.evictions.inc();
            }
        }
        self.used.store(used, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets `key`'s length and blocks (it was deleted or written again).
    fn forget(&self, key: &str) {
        self.lens.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        if self.cached(key) {
            let dir = self.dir.join(key);
            let freed: u64 = cached_files(&dir).iter().map(|f| f.1).sum();
            if fs::remove_dir_all(&dir).is_ok() {
                self.used.fetch_sub(freed.min(self.used.load(std::sync::atomic::Ordering::Relaxed)), std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Blobs for ReadThrough {
    fn len(&self, key: &str) -> Result<Option<u64>, BlobError> {
        if let Some(&n) = self.lens.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(Some(n));
        }
        let n = self.inner.len(key)?;
        if let (Some(n), true) = (n, self.cached(key)) {
            self.lens.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), n);
        }
        Ok(n)
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        if !self.cached(key) {
            return self.inner.read_at(key, offset, buf);
        }
        let len = self.len(key)?.ok_or_else(|| BlobError::Bucket { key: key.into(), why: "not in the bucket".into() })?;
        let end = offset + buf.len() as u64;
        if end > len {
            return Err(BlobError::Bucket { key: key.into(), why: format!("bytes {offset}..{end} asked of {len}") });
        }
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let upto = end.min((index + 1) * BLOCK);
            let part = &mut buf[(at - offset) as usize..(upto - offset) as usize];
            self.read_block(key, len, index, at - index * BLOCK, part)?;
            at = upto;
        }
        Ok(())
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        self.inner.read(key)
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<(), BlobError> {
        self.forget(key);
        self.inner.put_file(key, path)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        self.forget(key);
        self.inner.put(key, bytes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.forget(key);
        self.inner.delete(key)
    }

    fn is_bucket(&self) -> bool {
        self.inner.is_bucket()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A bucket in memory that counts its ranged reads.
    #[derive(Default)]
    struct Memory {
        objects: Mutex<HashMap<String, Vec<u8>>>,
        reads: AtomicUsize,
    }

    impl Blobs for Memory {
        fn len(&self, key: &str) -> Result<Option<u64>, BlobError> {
            Ok(self.objects.lock().unwrap().get(key).map(|b| b.len() as u64))
        }
        fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let o = self.objects.lock().unwrap();
            let b = o.get(key).ok_or_else(|| BlobError::Bucket { key: key.into(), why: "absent".into() })?;
            buf.copy_from_slice(&b[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
            Ok(self.objects.lock().unwrap().get(key).cloned())
        }
        fn put_file(&self, key: &str, path: &Path) -> Result<(), BlobError> {
            self.put(key, &fs::read(path).unwrap())
        }
        fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
            self.objects.lock().unwrap().insert(key.into(), bytes.to_vec());
            Ok(())
        }
        fn list(&self, _: &str) -> Result<Vec<String>, BlobError> {
            Ok(Vec::new())
        }
        fn delete(&self, key: &str) -> Result<(), BlobError> {
            self.objects.lock().unwrap().remove(key);
            Ok(())
        }
        fn is_bucket(&self) -> bool {
            true
        }
    }

    fn bytes(n: u64) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn read(c: &ReadThrough, key: &str, at: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        c.read_at(key, at, &mut buf).unwrap();
        buf
    }

    #[test]
    fn reads_cross_blocks_fetch_each_block_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(Memory::default());
        let data = bytes(2 * BLOCK + 1000);
        mem.put("v1/packs/p", &data).unwrap();
        let c = ReadThrough::open(mem.clone(), dir.path(), 1 << 30, CacheCounters::default()).unwrap();
        // Across the first two blocks, then the short last one.
        let at = BLOCK - 10;
        assert_eq!(read(&c, "v1/packs/p", at, 30), &data[at as usize..at as usize + 30]);
        assert_eq!(read(&c, "v1/packs/p", 2 * BLOCK + 900, 100), &data[(2 * BLOCK + 900) as usize..]);
        assert_eq!(mem.reads.load(Ordering::Relaxed), 3);
        assert_eq!(read(&c, "v1/packs/p", 0, data.len()), data);
        assert_eq!(mem.reads.load(Ordering::Relaxed), 3, "all three blocks were cached");
        assert_eq!(c.counters.fetches.get(), 3);
        // Past the end: an error, not a short read.
        assert!(c.read_at("v1/packs/p", data.len() as u64 - 5, &mut [0; 10]).is_err());
        // A block cut short (a disk that lost it) is fetched again.
        let block = dir.path().join("v1/packs/p/1");
        fs::write(&block, b"short").unwrap();
        let c = ReadThrough::open(mem.clone(), dir.path(), 1 << 30, CacheCounters::default()).unwrap();
        assert_eq!(read(&c, "v1/packs/p", 0, data.len()), data);
        assert_eq!(mem.reads.load(Ordering::Relaxed), 4, "only the damaged block again");
        assert_eq!(fs::metadata(&block).unwrap().len(), BLOCK);
        // Not cached: the metadata, which changes.
        mem.put("tuf/timestamp.json", b"{}").unwrap();
        read(&c, "tuf/timestamp.json", 0, 2);
        read(&c, "tuf/timestamp.json", 0, 2);
        assert_eq!(mem.reads.load(Ordering::Relaxed), 6);
        // A deleted object leaves nothing cached.
        c.delete("v1/packs/p").unwrap();
        assert!(!dir.path().join("v1/packs/p").exists());
        assert!(c.read_at("v1/packs/p", 0, &mut [0; 1]).is_err());
    }

    #[test]
    fn the_least_recently_used_blocks_go_above_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(Memory::default());
        for k in ["a", "b", "c"] {
            mem.put(&format!("v1/packs/{k}"), &bytes(BLOCK)).unwrap();
        }
        let c = ReadThrough::open(mem.clone(), dir.path(), 2 * BLOCK + BLOCK / 2, CacheCounters::default()).unwrap();
        read(&c, "v1/packs/a", 0, 1);
        read(&c, "v1/packs/b", 0, 1);
        // Last used long ago, a before b (the clock of the test is the files' times).
        let aged = |k: &str, secs: u64| {
            let f = fs::File::options().write(true).open(dir.path().join(format!("v1/packs/{k}/0"))).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
        };
        aged("a", 1_000);
        aged("b", 2_000);
        read(&c, "v1/packs/a", 0, 1); // a is used again: b is now the oldest
        read(&c, "v1/packs/c", 0, 1);
        assert_eq!(c.counters.evictions.get(), 1);
        assert!(dir.path().join("v1/packs/a/0").exists() && dir.path().join("v1/packs/c/0").exists());
        assert!(!dir.path().join("v1/packs/b/0").exists());
        assert_eq!(c.used.load(Ordering::Relaxed), 2 * BLOCK);
        // A cap of 0 turns the cache off.
        let off = ReadThrough::open(mem.clone(), &dir.path().join("off"), 0, CacheCounters::default()).unwrap();
        let before = mem.reads.load(Ordering::Relaxed);
        read(&off, "v1/packs/a", 0, 1);
        read(&off, "v1/packs/a", 0, 1);
        assert_eq!(mem.reads.load(Ordering::Relaxed), before + 2);
    }
}
