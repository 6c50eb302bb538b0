//! `verify`: re-hash every object in the store, move corrupt ones aside, clear leftovers of
//! killed writers, and report each generation that is missing objects.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;

use cache::GetError;
use format::{Digest, EntryKind, GenSpec, Tree};
use rayon::prelude::*;

use crate::repo::{Repo, RepoError};

/// Why verification could not run (not what it found).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Listing or moving files failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What verification found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Objects re-hashed.
    pub objects_checked: u64,
    /// Objects that failed, with the reason.
    pub corrupt: Vec<(Digest, String)>,
    /// Corrupt objects moved to `quarantine/` (so a later import or fetch can restore them).
    pub quarantined: u64,
    /// Temporary files of killed writers removed.
    pub tmp_removed: u64,
    /// Packs found without a valid index.
    pub broken_packs: Vec<String>,
    /// Objects recovered from those packs by rebuilding their index.
    pub pack_objects_recovered: u64,
    /// Generations checked for completeness.
    pub generations_checked: u64,
    /// Generations that miss objects: label and the missing digests.
    pub incomplete: Vec<(String, Vec<Digest>)>,
}

impl VerifyReport {
    /// True when the repository is whole: every generation complete and, unless they were moved
    /// aside (`repaired`), no corrupt objects.
    pub fn healthy(&self, repaired: bool) -> bool {
        self.incomplete.is_empty() && (repaired || (self.corrupt.is_empty() && self.broken_packs.is_empty()))
    }
}

/// Verifies the whole repository; with `repair`, quarantines corrupt objects.
pub fn verify(repo: &Repo, repair: bool) -> Result<VerifyReport, VerifyError> {
    let _lock = repo.lock()?;
    let mut report = VerifyReport::default();
    let tmp = repo.root().join("tmp");
    if repair {
        report.tmp_removed = repo.store.clean_tmp().map_err(|source| VerifyError::Io { action: "clean", path: tmp, source })? as u64;
    }
    report.broken_packs = repo.store.broken_packs().iter().map(|p| p.display().to_string()).collect();
    if repair && !report.broken_packs.is_empty() {
        let packs = repo.root().join("packs");
        report.pack_objects_recovered =
            repo.store.repair_packs().map_err(|source| VerifyError::Io { action: "repair packs in", path: packs, source })? as u64;
    }
    let objects_dir = repo.root().join("objects");
    let all = repo.store.list().map_err(|source| VerifyError::Io { action: "list", path: objects_dir, source })?;
    report.objects_checked = all.len() as u64;
    let corrupt: Vec<(Digest, String)> = all
        .par_iter()
        .filter_map(|d| match repo.store.get(d) {
            // A missing dictionary is not damage to this object; the generations that need the
            // dictionary are reported incomplete below.
            Ok(_) | Err(GetError::NotFound(_)) | Err(GetError::MissingDictionary { .. }) => None,
            Err(e) => Some((*d, format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()))),
        })
        .collect();
    if repair && !corrupt.is_empty() {
        let q = repo.root().join("quarantine");
        fs::create_dir_all(&q).map_err(|source| VerifyError::Io { action: "create", path: q.clone(), source })?;
        for (d, _) in &corrupt {
            // Keep the damaged bytes for inspection, then take the object out of the store.
            let dest = q.join(d.to_hex());
            let bytes = repo.store.get_framed(d).unwrap_or_default();
            fs::write(&dest, bytes).map_err(|source| VerifyError::Io { action: "quarantine to", path: dest, source })?;
        }
        let digests: Vec<Digest> = corrupt.iter().map(|(d, _)| *d).collect();
        repo.store.remove(&digests).map_err(|source| VerifyError::Io {
            action: "remove corrupt objects from",
            path: repo.root().to_path_buf(),
            source,
        })?;
        report.quarantined = digests.len() as u64;
    }
    report.corrupt = corrupt;
    let bad: HashSet<Digest> = report.corrupt.iter().map(|(d, _)| *d).collect();

    let mut complete_trees: HashSet<Digest> = HashSet::new();
    for image in repo.images()? {
        for n in repo.numbers(&image)? {
            report.generations_checked += 1;
            let label = format!("{image}@{n}");
            let mut missing = Vec::new();
            match repo.resolve(&GenSpec::Number(image.clone(), n)) {
                Ok(gen) => {
                    if let Some(dict) = crate::dictionary::digest_of(&gen.manifest) {
                        if bad.contains(&dict) || !repo.store.contains(&dict) {
                            missing.push(dict);
                        }
                    }
                    check_tree(repo, &gen.manifest.root, &bad, &mut complete_trees, &mut missing)
                }
                Err(RepoError::BadManifest { digest, .. }) => missing.push(digest),
                Err(e) => return Err(e.into()),
            }
            if !missing.is_empty() {
                missing.sort();
                missing.dedup();
                report.incomplete.push((label, missing));
            }
        }
    }
    Ok(report)
}

/// Adds to `missing` every object under `digest` that is absent or corrupt.
fn check_tree(repo: &Repo, digest: &Digest, bad: &HashSet<Digest>, complete: &mut HashSet<Digest>, missing: &mut Vec<Digest>) {
    if complete.contains(digest) {
        return;
    }
    let tree = match repo.store.get(digest).ok().and_then(|b| Tree::decode(&b).ok()) {
        Some(t) => t,
        None => {
            missing.push(*digest);
            return;
        }
    };
    let before = missing.len();
    for e in &tree.entries {
        match &e.kind {
            EntryKind::Directory { tree } => check_tree(repo, tree, bad, complete, missing),
            EntryKind::Regular { extents, .. } => {
                for x in extents {
                    if bad.contains(&x.digest) || !repo.store.contains(&x.digest) {
                        missing.push(x.digest);
                    }
                }
            }
            _ => {}
        }
    }
    if missing.len() == before {
        complete.insert(*digest);
    }
}
