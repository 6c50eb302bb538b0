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
use crate::dictionary::{self, Dictionary};
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
    /// zstd level for new objects; None picks `FIRST_LEVEL` or `PATCH_LEVEL`.
    pub level: Option<i32>,
    /// Creation time to record (seconds since the epoch).
    pub created: i64,
    /// The change record to sign with the generation.
    pub change: Option<format::ChangeRecord>,
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

/// Default zstd level of an image's first generation: fast, for bulk data.
pub const FIRST_LEVEL: i32 = 3;
/// Default zstd level of later generations: their new objects are few (a patch) and are
/// downloaded by every endpoint, so a slower, tighter level pays off.
pub const PATCH_LEVEL: i32 = 9;

/// Imports `src` (a directory or a tar archive) as the next generation of `opts.image`.
pub fn import(repo: &Repo, src: &Path, opts: &ImportOptions) -> Result<ImportReport, ImportError> {
    let _lock = repo.lock()?;
    let parent = match repo.resolve(&GenSpec::Latest(opts.image.clone())) {
        Ok(g) => Some(g),
        Err(RepoError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let chunking = opts.chunking.or(parent.as_ref().map(|p| p.manifest.chunking)).unwrap_or_default();
    chunking.validate().map_err(|why| ImportError::Unsupported { path: src.to_path_buf(), what: why })?;
    // Everything the import writes goes into one pack, committed by the first `sync` below.
    repo.store.start_pack().map_err(|source| ImportError::Commit { path: repo.root().join("tmp"), source })?;
    let level = opts.level.unwrap_or(if parent.is_some() { PATCH_LEVEL } else { FIRST_LEVEL });
    let counters = Counters::default();
    let plain = Storing { store: &repo.store, chunking, level, counters: &counters, dict: None };
    let parent_dict = parent.as_ref().and_then(|p| dictionary::of_manifest(&repo.store, &p.manifest));
    let progress = |p: Progress| {
        if let Some(f) = &opts.progress {
            f(p)
        }
    };

    let md = std::fs::metadata(src).map_err(|source| ImportError::Read { path: src.to_path_buf(), source })?;
    let ingested = if md.is_dir() {
        ingest_dir(repo, src, &opts.image, &plain, parent_dict, &progress)?
    } else {
        let storing = Storing { dict: parent_dict.as_ref(), ..plain };
        let scan = scan_tar(src, &storing, &|n| progress(Progress::Advance(n)))?;
        let contents = take_ready(&scan);
        let files_read = contents.len() as u64;
        Ingested { scan, contents, files_read, files_reused: 0, dict: parent_dict }
    };

    let built = build_trees(&ingested.scan.root, &ingested.contents, &plain)?;
    let mut stats = built.stats;
    let mut extensions = Vec::new();
    if let Some(dict) = &ingested.dict {
        extensions.push((dictionary::DICT_EXTENSION.to_string(), dict.digest.0.to_vec()));
        stats.objects += 1;
    }
    let sync_err = |source| ImportError::Commit { path: repo.root().to_path_buf(), source };
    repo.store.sync().map_err(sync_err)?;
    let mut manifest = Manifest {
        image: opts.image.clone(),
        generation: parent.as_ref().map_or(1, |p| p.manifest.generation + 1),
        root: built.root,
        root_meta: ingested.scan.root.meta.clone(),
        parent: parent.as_ref().map(|p| p.digest),
        created: opts.created,
        message: opts.message.clone(),
        chunking,
        stats,
        extensions,
    };
    crate::diff::index_packages(&repo.store, &mut manifest, level)?;
    if let Some(change) = &opts.change {
        let mut change = change.clone();
        change.normalize();
        if let (Some(p), format::ActivationSource::Derived) = (&parent, change.activation_source) {
            let (activation, why) = crate::analysis::derive_activation(&repo.store, &p.manifest, &manifest).map_err(ImportError::Base)?;
            change.activation = activation;
            change.activation_why = why;
        }
        manifest.set_extension(format::change::CHANGE_EXTENSION, change.encode());
    }
    let bytes = manifest.encode();
    let ins = repo.store.insert(&bytes, level).map_err(|source| ImportError::Store { path: "(manifest)".into(), source })?;
    repo.store.sync().map_err(sync_err)?;
    repo.write_ref(&manifest.image, manifest.generation, &ins.digest)?;
    Ok(ImportReport {
        generation: Generation { digest: ins.digest, manifest },
        files_read: ingested.files_read,
        files_reused: ingested.files_reused,
        read_bytes: counters.read_bytes.load(Ordering::Relaxed),
        stored_bytes: counters.stored_bytes.load(Ordering::Relaxed),
    })
}

/// What reading the source produced.
struct Ingested {
    scan: Scan,
    /// Size and extents of each entry of `scan.files`.
    contents: Vec<(u64, Vec<Extent>)>,
    files_read: u64,
    files_reused: u64,
    /// The dictionary used for small files, to be named in the manifest.
    dict: Option<Dictionary>,
}

type FileResult = Result<((u64, Vec<Extent>), bool), ImportError>;

fn ingest_dir(
    repo: &Repo,
    src: &Path,
    image: &ImageName,
    plain: &Storing<'_>,
    parent_dict: Option<Dictionary>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Ingested, ImportError> {
    let scan_start_ns = cache::clock::now_system().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let scan = scan_dir(src)?;
    let index_path = repo.index_path(image);
    let mut index = Index::load(&index_path, plain.chunking, scan_start_ns);
    let size_of = |i: usize| if let FileSource::Path { key, .. } = &scan.files[i] { key.size } else { 0 };
    progress(Progress::Total((0..scan.files.len()).map(size_of).sum()));

    // Largest files first, so the last to finish are small ones and no core idles while
    // another works through a huge file alone.
    let mut order: Vec<usize> = (0..scan.files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size_of(i)));
    let split = order.partition_point(|&i| size_of(i) > u64::from(plain.chunking.max));
    let (large, small) = order.split_at(split);

    let process = |ids: &[usize], storing: &Storing<'_>| -> Vec<(usize, FileResult)> {
        ids.par_iter()
            .map(|&i| {
                let FileSource::Path { path, rel, key } = &scan.files[i] else { unreachable!("a directory scan yields paths") };
                let out = match index.lookup(rel, key, storing.store) {
                    Some(hit) => Ok((hit, true)),
                    None => storing.ingest_file(path).map(|v| (v, false)),
                };
                progress(Progress::Advance(key.size));
                (i, out)
            })
            .collect()
    };

    // Without a dictionary from the parent, one is trained on a sample of the small files while
    // the large files, which never use it, are stored on the other core.
    let (dict, mut computed) = match parent_dict {
        Some(d) => (Some(d), Vec::new()),
        None if plain.level > 0 => {
            let (trained, large_done) = rayon::join(|| dictionary::train(&scan.files, small), || process(large, plain));
            let dict = match trained {
                Some(bytes) => {
                    let ins = repo
                        .store
                        .insert(&bytes, plain.level)
                        .map_err(|source| ImportError::Store { path: "(dictionary)".into(), source })?;
                    if ins.new {
                        plain.counters.new_objects.fetch_add(1, Ordering::Relaxed);
                        plain.counters.new_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        plain.counters.stored_bytes.fetch_add(ins.stored_len, Ordering::Relaxed);
                    }
                    Some(Dictionary { digest: ins.digest, bytes })
                }
                None => None,
            };
            (dict, large_done)
        }
        None => (None, Vec::new()),
    };
    let with_dict = Storing { dict: dict.as_ref(), ..*plain };
    let rest = if computed.is_empty() { &order[..] } else { small };
    computed.extend(process(rest, &with_dict));

    let mut results: Vec<Option<FileResult>> = (0..scan.files.len()).map(|_| None).collect();
    for (i, r) in computed {
        results[i] = Some(r);
    }
    let mut contents = Vec::with_capacity(results.len());
    let (mut files_read, mut files_reused) = (0, 0);
    for (f, r) in scan.files.iter().zip(results) {
        let ((size, extents), hit) = r.expect("every file was processed")?;
        if hit {
            files_reused += 1;
        } else {
            files_read += 1;
        }
        if let FileSource::Path { rel, key, .. } = f {
            index.record(rel.clone(), *key, size, &extents);
        }
        contents.push((size, extents));
    }
    // The index only saves work; failing to write it must not fail the import.
    if !index.is_unchanged(files_read) {
        let _ = index.save(&index_path);
    }
    Ok(Ingested { scan, contents, files_read, files_reused, dict })
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
