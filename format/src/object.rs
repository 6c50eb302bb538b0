//! Object framing: the header that records an object's codec and uncompressed length beside the
//! payload. The same framing is used on disk and on the wire; the digest covers only the
//! uncompressed content, so the codec can change without renaming any object.

use crate::Digest;

/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"IMGO";
const VERSION: u8 = 1;

/// How an object's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    Raw,
    /// A single zstd frame.
    Zstd,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload encoding.
    pub codec: Codec,
    /// Length of the content after decoding.
    pub raw_len: u64,
}

/// Why framed bytes could not be turned back into verified content.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Too short, bad magic, or unknown version or codec.
    #[error("bad object header: {0}")]
    BadHeader(String),
    /// The declared length is above what the caller allows.
    #[error("declared length {declared} exceeds the limit {limit}")]
    TooLarge {
        /// Length in the header.
        declared: u64,
        /// The caller's cap.
        limit: u64,
    },
    /// The payload does not decompress to exactly the declared length.
    #[error("payload does not decode to the declared {declared} bytes: {why}")]
    Decompress {
        /// Length in the header.
        declared: u64,
        /// What the decoder said.
        why: String,
    },
    /// The content's digest is not the expected one.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// What the caller asked for.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
}

/// Parses the header of framed bytes.
pub fn parse_header(framed: &[u8]) -> Result<Header, ObjectError> {
    if framed.len() < HEADER_LEN {
        return Err(ObjectError::BadHeader(format!(
            "{} bytes is shorter than a header",
            framed.len()
        )));
    }
    if &framed[..4] != MAGIC {
        return Err(ObjectError::BadHeader("bad magic".into()));
    }
    if framed[4] != VERSION {
        return Err(ObjectError::BadHeader(format!(
            "unknown version {}",
            framed[4]
        )));
    }
    let codec = match framed[5] {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        c => return Err(ObjectError::BadHeader(format!("unknown codec {c}"))),
    };
    if framed[6] != 0 || framed[7] != 0 {
        return Err(ObjectError::BadHeader("reserved bytes set".into()));
    }
    let raw_len = u64::from_le_bytes(framed[8..16].try_into().unwrap());
    Ok(Header { codec, raw_len })
}

fn header(codec: Codec, raw_len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = codec.code();
    h[8..16].copy_from_slice(&raw_len.to_le_bytes());
    h
}

/// Frames `data`, zstd-compressed at `level` unless that does not make it smaller.
/// `level` 0 stores raw without trying.
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    if level != 0 && data.len() >= 64 {
        if let Ok(compressed) = zstd::bulk::compress(data, level) {
            if compressed.len() + 8 < data.len() {
                let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
                out.extend_from_slice(&header(Codec::Zstd, data.len() as u64));
                out.extend_from_slice(&compressed);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header(Codec::Raw, data.len() as u64));
    out.extend_from_slice(data);
    out
}

/// Decodes framed bytes and checks them against `expected`. The declared length must not exceed
/// `limit`, and decompression stops at the declared length, so a zstd bomb cannot grow past it.
pub fn decode(framed: &[u8], expected: &Digest, limit: u64) -> Result<Vec<u8>, ObjectError> {
    let h = parse_header(framed)?;
    if h.raw_len > limit {
        return Err(ObjectError::TooLarge {
            declared: h.raw_len,
            limit,
        });
    }
    let payload = &framed[HEADER_LEN..];
    let data = match h.codec {
        Codec::Raw => {
            if payload.len() as u64 != h.raw_len {
                return Err(ObjectError::Decompress {
                    declared: h.raw_len,
                    why: format!("{} raw bytes", payload.len()),
                });
            }
            payload.to_vec()
        }
        Codec::Zstd => {
            let data = zstd::bulk::decompress(payload, h.raw_len as usize).map_err(|e| {
                ObjectError::Decompress {
                    declared: h.raw_len,
                    why: e.to_string(),
                }
            })?;
            if data.len() as u64 != h.raw_len {
                return Err(ObjectError::Decompress {
                    declared: h.raw_len,
                    why: format!("got {} bytes", data.len()),
                });
            }
            data
        }
    };
    let actual = Digest::of(&data);
    if actual != *expected {
        return Err(ObjectError::DigestMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(data)
}
