//! Records: a 32-byte digest, a u32 little-endian length and that many framed bytes. The one
//! codec of pack files (after their header), batch-fetch answers and batch-upload bodies.
//!
//! Encoding appends to a `Vec`; decoding works over a byte slice ([`records`]) or, for a
//! streamed body, one fixed-size header at a time ([`Header::decode`]) with the framed bytes read
//! by the caller (`cache::record_reader` does it over `std::io::Read`). Nothing here checks
//! that the framed bytes decode to the digest: the store does, when it is given them.

use crate::Digest;

/// Bytes before a record's framed bytes: the digest and the length.
pub const HEADER_LEN: usize = 32 + 4;

/// The fixed-size start of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The object's digest.
    pub digest: Digest,
    /// Length of the framed bytes that follow.
    pub len: u32,
}

impl Header {
    /// The header of a record holding `framed` bytes. Panics past 4 GiB, which no object
    /// reaches (the store refuses objects of more than 1 GiB).
    pub fn of(digest: &Digest, framed: &[u8]) -> Header {
        let len = u32::try_from(framed.len()).expect("a record holds less than 4 GiB");
        Header { digest: *digest, len }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(&self.digest.0);
        out[32..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Reads a header. Every 36 bytes are a header; the length is checked by [`Header::check`].
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let digest = Digest(bytes[..32].try_into().expect("32 bytes"));
        let len = u32::from_le_bytes(bytes[32..].try_into().expect("4 bytes"));
        Header { digest, len }
    }

    /// Refuses a record announcing more than `max` framed bytes.
    pub fn check(&self, max: u64) -> Result<(), RecordError> {
        if u64::from(self.len) > max {
            return Err(RecordError::Oversized { digest: self.digest, len: self.len, max });
        }
        Ok(())
    }

    /// Bytes the whole record takes.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Appends one record to `out`.
pub fn encode_into(out: &mut Vec<u8>, digest: &Digest, framed: &[u8]) {
    out.reserve(HEADER_LEN + framed.len());
    out.extend_from_slice(&Header::of(digest, framed).encode());
    out.extend_from_slice(framed);
}

/// One record as its own buffer.
pub fn encode(digest: &Digest, framed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + framed.len());
    encode_into(&mut out, digest, framed);
    out
}

/// Why a sequence of records could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end inside record number `index` (counted from 0), which starts at `at`.
    #[error("record {index} (at byte {at}) is truncated")]
    Truncated {
        /// Which record, counted from 0.
        index: usize,
        /// Where it starts in the input.
        at: u64,
    },
    /// A record announces more framed bytes than the reader allows.
    #[error("record of object {digest} announces {len} bytes, more than the {max} allowed")]
    Oversized {
        /// The record's digest.
        digest: Digest,
        /// The length it announces.
        len: u32,
        /// The limit.
        max: u64,
    },
}

/// A record read from a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The object's digest.
    pub digest: Digest,
    /// Where the framed bytes start in the input.
    pub offset: usize,
    /// The framed bytes.
    pub framed: &'a [u8],
}

/// The records of `bytes`, in order. Yields an error (and then nothing) when the input does
/// not end on a record boundary or a record is larger than allowed ([`Records::with_limit`]).
pub fn records(bytes: &[u8]) -> Records<'_> {
    Records { bytes, pos: 0, index: 0, max: u64::from(u32::MAX), done: false }
}

/// Every record of `bytes`, or the first reason they cannot all be read.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Record<'_>>, RecordError> {
    records(bytes).collect()
}

/// Iterator over the records of a byte slice (see [`records`]).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    index: usize,
    max: u64,
    done: bool,
}

impl<'a> Records<'a> {
    /// Refuses records of more than `max` framed bytes.
    pub fn with_limit(mut self, max: u64) -> Records<'a> {
        self.max = max;
        self
    }

    /// Starts at byte `pos` of the input (after a file's header).
    pub fn starting_at(mut self, pos: usize) -> Records<'a> {
        self.pos = pos;
        self
    }

    /// Where the next record starts: after the last one read, the end of the valid records.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn fail(&mut self, e: RecordError) -> Option<Result<Record<'a>, RecordError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.bytes.len() {
            return None;
        }
        let truncated = RecordError::Truncated { index: self.index, at: self.pos as u64 };
        let Some(head) = self.bytes.get(self.pos..self.pos + HEADER_LEN) else {
            return self.fail(truncated);
        };
        let header = Header::decode(head.try_into().expect("HEADER_LEN bytes"));
        if let Err(e) = header.check(self.max) {
            return self.fail(e);
        }
        let offset = self.pos + HEADER_LEN;
        let Some(framed) = self.bytes.get(offset..offset + header.len as usize) else {
            return self.fail(truncated);
        };
        self.pos = offset + framed.len();
        self.index += 1;
        Some(Ok(Record { digest: header.digest, offset, framed }))
    }
}
