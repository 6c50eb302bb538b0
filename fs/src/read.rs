//! Reading a byte range of a file from its extents: holes read as zeros, each chunk comes
//! from a `Chunks` source that may fetch it, and a miss names the chunks that follow so the
//! source can fetch them in the same request.

use std::sync::Arc;

use format::{Digest, Extent};

/// How many following chunks of the same file a miss asks for along with the one it needs.
pub const READ_AHEAD_CHUNKS: usize = 32;

/// Where verified, decompressed chunk contents come from.
pub trait Chunks: Send + Sync {
    /// The content of `digest`, verified. `then` lists the chunks the reader will want next;
    /// a source that has to fetch `digest` fetches what it lacks of them in the same request.
    fn chunk(&self, digest: &Digest, then: &[Digest]) -> Result<Arc<Vec<u8>>, ChunkError>;
}

/// A chunk could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("chunk {digest}: {why}")]
pub struct ChunkError {
    /// The chunk.
    pub digest: Digest,
    /// Why (unreachable servers, deadline, corrupt everywhere).
    pub why: String,
}

/// Reads `len` bytes at `offset` of a file of `size` bytes made of `extents` (sorted, not
/// overlapping). Short only at the end of the file.
pub fn read_range(size: u64, extents: &[Extent], offset: u64, len: u32, chunks: &dyn Chunks) -> Result<Vec<u8>, ChunkError> {
    if offset >= size {
        return Ok(Vec::new());
    }
    let end = size.min(offset + len as u64);
    let mut out = vec![0u8; (end - offset) as usize];
    // The first extent that ends after `offset`.
    let first = extents.partition_point(|x| x.offset + x.len as u64 <= offset);
    for (i, x) in extents.iter().enumerate().skip(first) {
        if x.offset >= end {
            break;
        }
        let then: Vec<Digest> = extents[i + 1..].iter().take(READ_AHEAD_CHUNKS).map(|x| x.digest).collect();
        let data = chunks.chunk(&x.digest, &then)?;
        if data.len() != x.len as usize {
            return Err(ChunkError { digest: x.digest, why: format!("{} bytes where the tree says {}", data.len(), x.len) });
        }
        let from = offset.max(x.offset);
        let to = end.min(x.offset + x.len as u64);
        out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(&data[(from - x.offset) as usize..(to - x.offset) as usize]);
    }
    Ok(out)
}
