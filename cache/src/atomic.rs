//! Replacing a whole file atomically: the bytes go to a temporary file (in the same directory,
//! or a chosen one on the same filesystem), which is fsynced, renamed over the target, and the
//! target's directory fsynced. A reader sees the old file or the new one, never a mix, and
//! once `write` returns the new one survives a crash. Every step is a fault point
//! (`crate::fault`).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fault::{self, Kind};

/// How to write.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    mode: u32,
    durable: bool,
    sync_dir: bool,
    tmp_dir: Option<&'a Path>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { mode: 0o666, durable: true, sync_dir: true, tmp_dir: None }
    }
}

impl<'a> Options<'a> {
    /// Durable, mode 0666 less the umask, temporary file beside the target.
    pub fn new() -> Options<'a> {
        Options::default()
    }

    /// The new file's permission bits (less the umask), e.g. 0o600 for a secret.
    pub fn mode(mut self, mode: u32) -> Options<'a> {
        self.mode = mode;
        self
    }

    /// Skips both fsyncs: still atomic, but a crash may lose the new file (for caches that
    /// are rebuilt when lost).
    pub fn not_durable(mut self) -> Options<'a> {
        self.durable = false;
        self
    }

    /// Leaves the directory's fsync to the caller, who replaces several files of one
    /// directory and then calls [`sync_dir`] once.
    pub fn defer_dir_sync(mut self) -> Options<'a> {
        self.sync_dir = false;
        self
    }

    /// Writes the temporary file in `dir` (same filesystem as the target), e.g. a store's
    /// `tmp/`, whose leftovers are cleared in one place.
    pub fn tmp_in(mut self, dir: &'a Path) -> Options<'a> {
        self.tmp_dir = Some(dir);
        self
    }
}

/// Why a file could not be replaced; `path` is the file the failing step touched.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct WriteError {
    /// The temporary file, the target, or its directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `bytes`, durably, with default options.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_with(path, bytes, Options::new())
}

/// Replaces `path` with `bytes` as `options` say. On failure the temporary file is removed
/// and the target is left as it was (or, past the rename, already replaced).
pub fn write_with(path: &Path, bytes: &[u8], options: Options<'_>) -> Result<(), WriteError> {
    write_from(path, options, |file, tmp| file.write_all(bytes).map_err(|source| WriteError { path: tmp.to_path_buf(), source }))
}

/// Replaces `path` with what `fill` writes into the temporary file (given with its path, for
/// messages), as `options` say; for content produced piece by piece. `fill`'s error, or any
/// later step's as `E::from(WriteError)`, leaves the target as it was and no temporary file.
pub fn write_from<E: From<WriteError>>(
    path: &Path,
    options: Options<'_>,
    fill: impl FnOnce(&mut fs::File, &Path) -> Result<(), E>,
) -> Result<(), E> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name =
        path.file_name().ok_or_else(|| WriteError { path: path.to_path_buf(), source: io::Error::from(io::ErrorKind::InvalidInput) })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = options.tmp_dir.unwrap_or(dir).join(format!(".{}.tmp.{}.{n}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let io_err = |source| E::from(WriteError { path: tmp.clone(), source });
        fault::point(Kind::Write);
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(options.mode).open(&tmp).map_err(io_err)?;
        fill(&mut f, &tmp)?;
        if options.durable {
            fault::point(Kind::Sync);
            f.sync_all().map_err(io_err)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fault::point(Kind::Write);
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(WriteError { path: path.to_path_buf(), source }.into());
    }
    if options.durable && options.sync_dir {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the renames done in `dir` durable (after writes with `Options::defer_dir_sync`).
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    fault::point(Kind::Sync);
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| WriteError { path: dir.to_path_buf(), source })
}
