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
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
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
