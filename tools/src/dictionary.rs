//! The image's zstd dictionary: trained once, on a sample of its small files, and reused by
//! every later generation. It is an object like any other, named in the manifest under
//! `DICT_EXTENSION`, and used only for whole small files, never for trees, manifests or chunks
//! of large files, so metadata decodes without it.

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;

use cache::Store;
use format::{Digest, Manifest};

use crate::scan::FileSource;

pub use format::manifest::DICT_EXTENSION;
/// Dictionary size (zstd's default).
const DICT_SIZE: usize = 112_640;
/// At most this many samples, of at most `SAMPLE_CAP` bytes each: enough for a good dictionary
/// in well under a second.
const MAX_SAMPLES: usize = 1500;
const SAMPLE_CAP: usize = 16 * 1024;
const MIN_SAMPLES: usize = 100;

/// A dictionary and its digest.
pub struct Dictionary {
    /// The object holding it.
    pub digest: Digest,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The digest of the dictionary a manifest names, if any.
pub fn digest_of(m: &Manifest) -> Option<Digest> {
    m.dictionary()
}

/// The dictionary a manifest names, if the store has it.
pub fn of_manifest(store: &Store, m: &Manifest) -> Option<Dictionary> {
    let digest = digest_of(m)?;
    let bytes = store.get(&digest).ok()?;
    Some(Dictionary { digest, bytes })
}

/// Trains a dictionary on an evenly spread sample of the small files (`small` indexes into
/// `files`), or None when there are too few to be worth it.
pub fn train(files: &[FileSource], small: &[usize]) -> Option<Vec<u8>> {
    if small.len() < MIN_SAMPLES {
        return None;
    }
    let step = small.len().div_ceil(MAX_SAMPLES);
    let mut samples = Vec::new();
    for &i in small.iter().step_by(step) {
        if let FileSource::Path { path, .. } = &files[i] {
            let mut buf = Vec::with_capacity(SAMPLE_CAP);
            if File::open(path).and_then(|f| f.take(SAMPLE_CAP as u64).read_to_end(&mut buf)).is_ok() && buf.len() >= 64 {
                samples.push(buf);
            }
        }
    }
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    zstd::dict::from_samples(&samples, DICT_SIZE).ok()
}

thread_local! {
    /// One compressor per worker thread, loaded with the current dictionary and level.
    static COMPRESSOR: RefCell<Option<(Digest, i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Frames `data` compressed with the dictionary at `level`.
pub fn frame(dict: &Dictionary, level: i32, data: &[u8]) -> Vec<u8> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if !matches!(&*cell, Some((d, l, _)) if *d == dict.digest && *l == level) {
            match zstd::bulk::Compressor::with_dictionary(level, &dict.bytes) {
                Ok(c) => *cell = Some((dict.digest, level, c)),
                Err(_) => return format::object::encode(data, level),
            }
        }
        let (_, _, compressor) = cell.as_mut().expect("set above");
        format::object::encode_with_dict(data, compressor, &dict.digest)
    })
}
