//! `import`: a directory or tar archive becomes the next generation of an image.
//!
//! Order of durability: objects (file chunks, then trees) are written and synced first, then the
//! manifest object, then the ref. A crash before the ref leaves the previous generation as the
//! latest and only unreferenced objects behind.

use std::path::Path;
use std::sync::atomic::Ordering;

use format::{ChunkParams, Extent, GenSpec, ImageName, Manifest};
use rayon::prelude::*;

use crate::build::build_trees;
use crate::index::Index;
use crate::ingest::{Counters, Storing};
use crate::repo::{Generation, Repo, RepoError};
use crate::scan::{scan_dir, FileSource, Scan};
use crate::tar_scan::scan_tar;
use crate::ImportError;

/// What to import and how.
pub struct ImportOptions {
    /// Image to add a generation to.
    pub image: ImageName,
    /// Message recorded in the manifest.
    pub message: String,
    /// Chunking; defaults to the parent generation's, else `ChunkParams::default()`.
    pub chunking: Option<ChunkParams>,
    /// zstd level for new objects.
    pub level: i32,
    /// Creation time to record (seconds since the epoch).
    pub created: i64,
    /// Called with bytes of file content processed, and once with the total when known.
    pub progress: Option<Box<dyn Fn(Progress) + Sync>>,
}

/// A progress event.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Total bytes that will be read.
    Total(u64),
    /// Bytes just processed.
    Advance(u64),
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The new generation.
    pub generation: Generation,
    /// Files whose content was read.
    pub files_read: u64,
    /// Files taken unchanged from the incremental index.
    pub files_reused: u64,
    /// Bytes of content read.
    pub read_bytes: u64,
    /// Compressed bytes newly written to the store.
    pub stored_bytes: u64,
}

/// Imports `src` (a directory or a tar archive) as the next generation of `opts.image`.
pub fn import(repo: &Repo, src: &Path, opts: &ImportOptions) -> Result<ImportReport, ImportError> {
    let _lock = repo.lock()?;
    let parent = match repo.resolve(&GenSpec::Latest(opts.image.clone())) {
        Ok(g) => Some(g),
        Err(RepoError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let chunking = opts
        .chunking
        .or(parent.as_ref().map(|p| p.manifest.chunking))
        .unwrap_or_default();
    chunking
        .validate()
        .map_err(|why| ImportError::Unsupported {
            path: src.to_path_buf(),
            what: why,
        })?;
    let counters = Counters::default();
    let storing = Storing {
        store: &repo.store,
        chunking,
        level: opts.level,
        counters: &counters,
    };
    let progress = |p: Progress| {
        if let Some(f) = &opts.progress {
            f(p)
        }
    };

    let md = std::fs::metadata(src).map_err(|source| ImportError::Read {
        path: src.to_path_buf(),
        source,
    })?;
    let (scan, contents, files_read, files_reused) = if md.is_dir() {
        ingest_dir(repo, src, &opts.image, &storing, &progress)?
    } else {
        let scan = scan_tar(src, &storing, &|n| progress(Progress::Advance(n)))?;
        let contents = take_ready(&scan);
        let n = contents.len() as u64;
        (scan, contents, n, 0)
    };

    let built = build_trees(&scan.root, &contents, &storing)?;
    repo.store.sync().map_err(|source| ImportError::Read {
        path: repo.root().to_path_buf(),
        source,
    })?;
    let manifest = Manifest {
        image: opts.image.clone(),
        generation: parent.as_ref().map_or(1, |p| p.manifest.generation + 1),
        root: built.root,
        root_meta: scan.root.meta.dir_meta(),
        parent: parent.as_ref().map(|p| p.digest),
        created: opts.created,
        message: opts.message.clone(),
        chunking,
        stats: built.stats,
        extensions: Vec::new(),
    };
    let bytes = manifest.encode();
    let ins = repo
        .store
        .insert(&bytes, opts.level)
        .map_err(|source| ImportError::Store {
            path: "(manifest)".into(),
            source,
        })?;
    repo.store.sync().map_err(|source| ImportError::Read {
        path: repo.root().to_path_buf(),
        source,
    })?;
    repo.write_ref(&manifest.image, manifest.generation, &ins.digest)?;
    Ok(ImportReport {
        generation: Generation {
            digest: ins.digest,
            manifest,
        },
        files_read,
        files_reused,
        read_bytes: counters.read_bytes.load(Ordering::Relaxed),
        stored_bytes: counters.stored_bytes.load(Ordering::Relaxed),
    })
}

type Ingested = (Scan, Vec<(u64, Vec<Extent>)>, u64, u64);

fn ingest_dir(
    repo: &Repo,
    src: &Path,
    image: &ImageName,
    storing: &Storing<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Ingested, ImportError> {
    let scan_start_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let scan = scan_dir(src)?;
    let index_path = repo.index_path(image);
    let mut index = Index::load(&index_path, storing.chunking, scan_start_ns);
    let total: u64 = scan
        .files
        .iter()
        .map(|f| {
            if let FileSource::Path { key, .. } = f {
                key.size
            } else {
                0
            }
        })
        .sum();
    progress(Progress::Total(total));
    let results: Vec<Result<((u64, Vec<Extent>), bool), ImportError>> = scan
        .files
        .par_iter()
        .map(|f| {
            let FileSource::Path { path, rel, key } = f else {
                unreachable!("a directory scan yields paths")
            };
            let out = match index.lookup(rel, key, storing.store) {
                Some(hit) => (hit, true),
                None => (storing.ingest_file(path)?, false),
            };
            progress(Progress::Advance(key.size));
            Ok(out)
        })
        .collect();
    let mut contents = Vec::with_capacity(results.len());
    let (mut read, mut reused) = (0, 0);
    for (f, r) in scan.files.iter().zip(results) {
        let ((size, extents), hit) = r?;
        if hit {
            reused += 1;
        } else {
            read += 1;
        }
        if let FileSource::Path { rel, key, .. } = f {
            index.record(rel.clone(), *key, size, &extents);
        }
        contents.push((size, extents));
    }
    // The index only saves work; failing to write it must not fail the import.
    let _ = index.save(&index_path);
    Ok((scan, contents, read, reused))
}

fn take_ready(scan: &Scan) -> Vec<(u64, Vec<Extent>)> {
    scan.files
        .iter()
        .map(|f| match f {
            FileSource::Ready { size, extents } => (*size, extents.clone()),
            FileSource::Path { .. } => unreachable!("an archive scan stores content as it reads"),
        })
        .collect()
}
