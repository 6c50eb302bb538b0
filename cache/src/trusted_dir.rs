//! A directory of trusted TUF metadata, as the endpoint (`CACHE/trust/`) and the conformance
//! client (`--metadata-dir`) keep it: one file per role under its unversioned name
//! (`trust::sign::metadata_file`), holding the exact bytes received, each replaced
//! atomically. `trust` decides what is trusted; this module only reads and writes the files.
//! It lives in `cache`, the crate that owns local-disk formats, because `trust` does no IO.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use trust::client::Trusted;
use trust::sign::{metadata_file, role_of_file};

use crate::atomic;

/// Roles whose file is removed once no longer trusted (their keys rotated). A targets role's
/// file stays until a newer one verifies, so it is never removed here.
const DROPPED_WHEN_UNTRUSTED: [&str; 2] = ["timestamp", "snapshot"];

/// Why the metadata directory could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TrustedDirError {
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl From<atomic::WriteError> for TrustedDirError {
    fn from(e: atomic::WriteError) -> Self {
        TrustedDirError { path: e.path, source: e.source }
    }
}

/// The metadata files of one directory, and what was last written there.
#[derive(Debug)]
pub struct TrustedDir {
    dir: PathBuf,
    root: Option<Vec<u8>>,
    /// Every role file on disk but root's, by role: what `update::load` is given, and what
    /// `persist` compares against to write only what changed.
    written: BTreeMap<String, Vec<u8>>,
}

impl TrustedDir {
    /// Opens `dir`, creating it if needed, and reads every role file in it. Files named in
    /// `reserved` (the caller's own files, e.g. `local.json`) and hidden files (temporary
    /// files of a write cut short) are not roles.
    pub fn open(dir: &Path, reserved: &[&str]) -> Result<TrustedDir, TrustedDirError> {
        fn err(path: &Path) -> impl FnOnce(io::Error) -> TrustedDirError + '_ {
            move |source| TrustedDirError { path: path.to_path_buf(), source }
        }
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let root_path = dir.join(metadata_file("root", None));
        let root = match std::fs::read(&root_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(&root_path)(e)),
        };
        let mut written = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(err(dir))? {
            let entry = entry.map_err(err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || reserved.contains(&name.as_str()) {
                continue;
            }
            let Some(role) = role_of_file(&name).filter(|r| r != "root") else { continue };
            let bytes = std::fs::read(entry.path()).map_err(err(&entry.path()))?;
            written.insert(role, bytes);
        }
        Ok(TrustedDir { dir: dir.to_path_buf(), root, written })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored root's bytes, if there is one.
    pub fn root(&self) -> Option<&[u8]> {
        self.root.as_deref()
    }

    /// The stored roles other than root, with their bytes, for `trust::update::load`.
    pub fn others(&self) -> Vec<(String, Vec<u8>)> {
        self.written.iter().map(|(r, b)| (r.clone(), b.clone())).collect()
    }

    /// Makes the directory hold what `trusted` trusts: writes every role whose bytes changed
    /// (root included), and removes a timestamp or snapshot no longer trusted. A targets
    /// role no longer trusted keeps its file.
    pub fn persist(&mut self, trusted: &Trusted) -> Result<(), TrustedDirError> {
        let files = trusted.files();
        let mut renamed = false;
        for (role, bytes) in &files {
            let on_disk = if role == "root" { self.root.as_deref() } else { self.written.get(role).map(Vec::as_slice) };
            if on_disk != Some(*bytes) {
                // One directory fsync for all the files of this update, after the loop.
                atomic::write_with(&self.dir.join(metadata_file(role, None)), bytes, atomic::Options::new().defer_dir_sync())?;
                renamed = true;
                if role == "root" {
                    self.root = Some(bytes.to_vec());
                } else {
                    self.written.insert(role.clone(), bytes.to_vec());
                }
            }
        }
        for role in DROPPED_WHEN_UNTRUSTED {
            if !files.iter().any(|(f, _)| f == role) {
                // A file that cannot be removed is harmless: the next load drops it again.
                let _ = std::fs::remove_file(self.dir.join(metadata_file(role, None)));
                self.written.remove(role);
            }
        }
        if renamed {
            atomic::sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
