//! Little-endian binary writer and bounds-checked reader shared by the tree and manifest codecs.

use crate::Digest;

/// Why bytes could not be decoded as a tree, manifest or object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the field at this offset.
    #[error("truncated at byte {at} while reading {what}")]
    Truncated {
        /// Offset of the field that did not fit.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// The first bytes are not the expected magic.
    #[error("bad magic: expected {expected:?}")]
    BadMagic {
        /// The magic that was expected.
        expected: &'static str,
    },
    /// A version this build does not understand.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// The kind of record.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// A field holds a value the format forbids.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Why it is invalid.
        why: String,
    },
    /// Bytes remain after the record.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer { buf: Vec::new() }
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn digest(&mut self, d: &Digest) {
        self.buf.extend_from_slice(&d.0);
    }
    /// A byte string with a u16 length prefix. Callers have validated the length.
    pub(crate) fn bytes16(&mut self, b: &[u8]) {
        self.u16(b.len() as u16);
        self.bytes(b);
    }
    /// A byte string with a u32 length prefix.
    pub(crate) fn bytes32(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.bytes(b);
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::Truncated { at: self.pos, what });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub(crate) fn magic(&mut self, magic: &'static str) -> Result<(), DecodeError> {
        let got = self.take(magic.len(), "magic")?;
        if got != magic.as_bytes() {
            return Err(DecodeError::BadMagic { expected: magic });
        }
        Ok(())
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    pub(crate) fn digest(&mut self, what: &'static str) -> Result<Digest, DecodeError> {
        Ok(Digest(self.take(32, what)?.try_into().unwrap()))
    }
    pub(crate) fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    pub(crate) fn bytes32(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::Invalid { what, why: format!("length {n} exceeds {max}") });
        }
        self.take(n, what)
    }
    pub(crate) fn string16(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes16(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid { what, why: "not UTF-8".into() })
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}
