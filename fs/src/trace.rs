//! Recording what a mount serves (`imgfs trace start|stop`): each READ of the current
//! generation, in order, turned at the end into a `Trace` of paths and ranges (adjacent and
//! overlapping reads of a file merged), the order a boot or an application start reads its
//! files in. What the kernel serves from its page cache is not seen: record on a cold mount.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use api::control::{Trace, TraceRead, TRACE_VERSION};

use crate::endpoint::Endpoint;

/// Most READs one trace keeps (a boot reads tens of thousands); later ones are dropped.
pub const MAX_READS: usize = 1 << 20;

/// The READs seen while a trace runs.
#[derive(Debug, Default)]
pub struct Tracer {
    active: AtomicBool,
    /// The slot traced and its reads: (inode, offset, length).
    reads: Mutex<Option<(u64, Vec<(u64, u64, u32)>)>>,
}

impl Tracer {
    /// Starts recording the reads of slot `slot`; false if a trace already runs.
    pub fn start(&self, slot: u64) -> bool {
        let mut r = self.reads.lock().unwrap();
        if r.is_some() {
            return false;
        }
        *r = Some((slot, Vec::new()));
        self.active.store(true, Ordering::Release);
        true
    }

    /// Notes a READ (one atomic load when no trace runs).
    pub fn record(&self, ino: u64, offset: u64, len: u32) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Some((slot, reads)) = &mut *self.reads.lock().unwrap() {
            if crate::image::Image::slot_of(ino) == *slot && reads.len() < MAX_READS {
                reads.push((ino, offset, len));
            }
        }
    }

    /// Stops recording: the slot traced and its reads, or `None` if no trace ran.
    pub fn stop(&self) -> Option<(u64, Vec<(u64, u64, u32)>)> {
        self.active.store(false, Ordering::Release);
        self.reads.lock().unwrap().take()
    }
}

/// The trace of `reads` (of slot `slot`, in order) as paths and merged ranges; `None` if the
/// generation is no longer loaded. Reads of numbers without a path, and past a file's end,
/// are left out.
pub fn build(ep: &Endpoint, slot: u64, reads: &[(u64, u64, u32)]) -> Option<Trace> {
    let image = ep.image_of(slot << crate::image::SLOT_SHIFT)?;
    let mut out: Vec<TraceRead> = Vec::new();
    // Path and size of each file seen.
    let mut paths: HashMap<u64, (String, u64)> = HashMap::new();
    // Per file, the index in `out` of its last range.
    let mut last: HashMap<u64, usize> = HashMap::new();
    for &(ino, offset, len) in reads {
        let (path, size) = match paths.get(&ino) {
            Some(p) => p.clone(),
            None => match (image.path_of(ino), image.read(ino, |size, _| size)) {
                (Some(p), Ok(Some(size))) => {
                    let p = (api::control::escape_path(&p), size);
                    paths.insert(ino, p.clone());
                    p
                }
                _ => continue,
            },
        };
        // The kernel asks in whole pages: only what the file has counts.
        let end = size.min(offset + len as u64);
        if offset >= end {
            continue;
        }
        if let Some(&i) = last.get(&ino) {
            let r = &mut out[i];
            if offset <= r.offset + r.len && end >= r.offset {
                let start = r.offset.min(offset);
                r.len = (r.offset + r.len).max(end) - start;
                r.offset = start;
                continue;
            }
        }
        last.insert(ino, out.len());
        out.push(TraceRead { path, offset, len: end - offset });
    }
    Some(Trace { version: TRACE_VERSION, generation: image.label(), reads: out })
}
