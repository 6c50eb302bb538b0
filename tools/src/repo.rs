//! The engineer's local repository: an object store plus generation refs, the incremental
//! import index and a lock that serialises writers.
//!
//! Layout under the store directory: `objects/` and `tmp/` (the `cache::Store`), `refs/NAME/N`
//! (a manifest digest in hex), `index/NAME` (see `index.rs`), and `lock`.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cache::Store;
use format::{Digest, GenSpec, ImageName, Manifest};

/// Failures of the local repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] cache::OpenError),
    /// A file of the repository could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No generation matches what the user named.
    #[error("no generation {0} in this store")]
    NotFound(String),
    /// A ref names a manifest the store cannot produce or parse.
    #[error("generation {spec}: manifest {digest} is unreadable")]
    BadManifest {
        /// The generation.
        spec: String,
        /// The manifest digest.
        digest: Digest,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// An opened local repository.
pub struct Repo {
    /// The object store.
    pub store: Store,
    root: PathBuf,
}

/// An exclusive hold on the repository; released on drop.
pub struct RepoLock {
    _file: fs::File,
}

/// A generation found in the repository.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The manifest's digest: the generation's identity.
    pub digest: Digest,
    /// The parsed manifest.
    pub manifest: Manifest,
}

impl Generation {
    /// `NAME@NUMBER`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.manifest.image, self.manifest.generation)
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RepoError + 'a {
    move |source| RepoError::Io { action, path: path.to_path_buf(), source }
}

impl Repo {
    /// Opens (creating if needed) the repository at `root`.
    pub fn open(root: &Path) -> Result<Repo, RepoError> {
        let store = Store::open(root)?;
        for sub in ["refs", "index"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("cannot create", &p))?;
        }
        Ok(Repo { store, root: root.to_path_buf() })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the writer lock, waiting for another writer to finish.
    pub fn lock(&self) -> Result<RepoLock, RepoError> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err("cannot open", &path))?;
        // SAFETY: `file` owns an open descriptor for the whole call; the lock is released when
        // the file is closed (the `RepoLock` is dropped).
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(RepoError::Io { action: "cannot lock", path, source: io::Error::last_os_error() });
        }
        Ok(RepoLock { _file: file })
    }

    fn image_refs(&self, image: &ImageName) -> PathBuf {
        self.root.join("refs").join(image.as_str())
    }

    /// Where the incremental import index of `image` lives.
    pub fn index_path(&self, image: &ImageName) -> PathBuf {
        self.root.join("index").join(image.as_str())
    }

    /// Generation numbers of `image`, ascending.
    pub fn numbers(&self, image: &ImageName) -> Result<Vec<u64>, RepoError> {
        let dir = self.image_refs(image);
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(io_err("cannot list", &dir))?;
                    if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                        out.push(n);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot list", &dir)(e)),
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Every image that has at least one generation.
    pub fn images(&self) -> Result<Vec<ImageName>, RepoError> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("cannot list", &dir))? {
            let e = e.map_err(io_err("cannot list", &dir))?;
            if let Some(name) = e.file_name().to_str().and_then(|s| ImageName::new(s).ok()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads and parses a manifest object.
    pub fn manifest(&self, spec: &str, digest: &Digest) -> Result<Manifest, RepoError> {
        let bad =
            |source: Box<dyn std::error::Error + Send + Sync>| RepoError::BadManifest { spec: spec.to_string(), digest: *digest, source };
        let bytes = self.store.get(digest).map_err(|e| bad(Box::new(e)))?;
        Manifest::decode(&bytes).map_err(|e| bad(Box::new(e)))
    }

    /// Finds the generation `spec` names.
    pub fn resolve(&self, spec: &GenSpec) -> Result<Generation, RepoError> {
        let (image, number) = match spec {
            GenSpec::Digest(d) => {
                if !self.store.contains(d) {
                    return Err(RepoError::NotFound(spec.to_string()));
                }
                return Ok(Generation { digest: *d, manifest: self.manifest(&spec.to_string(), d)? });
            }
            GenSpec::Number(image, n) => (image, *n),
            GenSpec::Latest(image) => {
                let n = *self.numbers(image)?.last().ok_or_else(|| RepoError::NotFound(spec.to_string()))?;
                (image, n)
            }
        };
        let path = self.image_refs(image).join(number.to_string());
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RepoError::NotFound(spec.to_string())),
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        let digest: Digest = text.trim().parse().map_err(|e| RepoError::Io {
            action: "corrupt ref",
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        let manifest = self.manifest(&spec.to_string(), &digest)?;
        Ok(Generation { digest, manifest })
    }

    /// Records a generation. The caller has synced the store so every object it names is durable.
    pub fn write_ref(&self, image: &ImageName, number: u64, manifest: &Digest) -> Result<(), RepoError> {
        let dir = self.image_refs(image);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let path = dir.join(number.to_string());
        // The temporary file goes to the store's `tmp/`, which `verify` clears after a crash,
        // so the refs directory only ever holds refs.
        let tmp = self.store.root().join("tmp");
        cache::atomic::write_with(&path, format!("{manifest}\n").as_bytes(), cache::atomic::Options::new().tmp_in(&tmp))
            .map_err(|e| RepoError::Io { action: "cannot write", path: e.path, source: e.source })
    }
}
