//! Reads records (`format::record`) from a stream one at a time, so a batch answer is
//! checked and stored as it arrives rather than held whole.

use std::io::{self, Read};

use format::record::{Header, HEADER_LEN};
use format::Digest;

/// Why the next record could not be read from the stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadRecordError {
    /// The stream failed.
    #[error("{source}")]
    Io {
        /// Which record, counted from 0.
        index: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stream ended inside a record's header.
    #[error("the stream ended inside the header of record {index}")]
    TruncatedHeader {
        /// Which record, counted from 0.
        index: usize,
    },
    /// The stream ended inside a record's framed bytes.
    #[error("the stream ended inside object {digest} (record {index})")]
    TruncatedBody {
        /// Which record, counted from 0.
        index: usize,
        /// The object the record holds.
        digest: Digest,
    },
}

/// Records read from `R`: call [`RecordReader::next_header`], decide whether to accept the
/// record (its digest, [`Header::check`] for its length), then [`RecordReader::read_framed`].
#[derive(Debug)]
pub struct RecordReader<R> {
    inner: R,
    index: usize,
}

impl<R: Read> RecordReader<R> {
    /// Reads records from `inner`.
    pub fn new(inner: R) -> RecordReader<R> {
        RecordReader { inner, index: 0 }
    }

    /// The next record's header; `None` when the stream ends on a record boundary.
    pub fn next_header(&mut self) -> Result<Option<Header>, ReadRecordError> {
        let mut head = [0u8; HEADER_LEN];
        match self.fill(&mut head)? {
            0 => Ok(None),
            HEADER_LEN => Ok(Some(Header::decode(&head))),
            _ => Err(ReadRecordError::TruncatedHeader { index: self.index }),
        }
    }

    /// The framed bytes of the record whose header was just read.
    pub fn read_framed(&mut self, header: &Header) -> Result<Vec<u8>, ReadRecordError> {
        let mut framed = vec![0u8; header.len as usize];
        if self.fill(&mut framed)? != framed.len() {
            return Err(ReadRecordError::TruncatedBody { index: self.index, digest: header.digest });
        }
        self.index += 1;
        Ok(framed)
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads until `buf` is full or the stream ends; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ReadRecordError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ReadRecordError::Io { index: self.index, source }),
            }
        }
        Ok(n)
    }
}
