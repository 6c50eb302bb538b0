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
    /// A single zstd frame made with a dictionary, itself an object named in the header.
    ZstdDict,
}

impl Codec {
    fn code(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
            Codec::ZstdDict => 2,
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
    /// The dictionary object, for `Codec::ZstdDict`.
    pub dict: Option<Digest>,
}

impl Header {
    /// Bytes before the payload: 16, or 48 with a dictionary digest.
    pub fn len(&self) -> usize {
        HEADER_LEN + if self.dict.is_some() { Digest::LEN } else { 0 }
    }

    /// Never empty; present for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }
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
    /// The object was made with a dictionary the caller did not supply.
    #[error("object needs zstd dictionary {0}")]
    NeedsDictionary(Digest),
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
        return Err(ObjectError::BadHeader(format!("{} bytes is shorter than a header", framed.len())));
    }
    if &framed[..4] != MAGIC {
        return Err(ObjectError::BadHeader("bad magic".into()));
    }
    if framed[4] != VERSION {
        return Err(ObjectError::BadHeader(format!("unknown version {}", framed[4])));
    }
    let codec = match framed[5] {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        2 => Codec::ZstdDict,
        c => return Err(ObjectError::BadHeader(format!("unknown codec {c}"))),
    };
    if framed[6] != 0 || framed[7] != 0 {
        return Err(ObjectError::BadHeader("reserved bytes set".into()));
    }
    let raw_len = u64::from_le_bytes(framed[8..16].try_into().unwrap());
    let dict = if codec == Codec::ZstdDict {
        let d =
            framed.get(HEADER_LEN..HEADER_LEN + Digest::LEN).ok_or_else(|| ObjectError::BadHeader("dictionary digest truncated".into()))?;
        Some(Digest(d.try_into().unwrap()))
    } else {
        None
    };
    Ok(Header { codec, raw_len, dict })
}

fn header(codec: Codec, raw_len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = codec.code();
    h[8..16].copy_from_slice(&raw_len.to_le_bytes());
    h
}

/// Frames `data` compressed by `compressor`, which holds the dictionary `dict`; raw when that
/// does not make it smaller.
pub fn encode_with_dict(data: &[u8], compressor: &mut zstd::bulk::Compressor<'_>, dict: &Digest) -> Vec<u8> {
    if data.len() >= 64 {
        if let Ok(compressed) = compressor.compress(data) {
            if compressed.len() + 8 + Digest::LEN < data.len() {
                let mut out = Vec::with_capacity(HEADER_LEN + Digest::LEN + compressed.len());
                out.extend_from_slice(&header(Codec::ZstdDict, data.len() as u64));
                out.extend_from_slice(&dict.0);
                out.extend_from_slice(&compressed);
                return out;
            }
        }
    }
    encode(data, 0)
}

thread_local! {
    /// One compression context per thread and level: creating one per object costs more than
    /// compressing a small object.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
}

/// Frames `data`, zstd-compressed at `level` unless that does not make it smaller.
/// `level` 0 stores raw without trying.
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    if level != 0 && data.len() >= 64 {
        let compressed = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if !matches!(&*cell, Some((l, _)) if *l == level) {
                *cell = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
            }
            cell.as_mut().and_then(|(_, c)| c.compress(data).ok())
        });
        if let Some(compressed) = compressed {
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
/// Objects made with a dictionary need `decode_with_dict`.
pub fn decode(framed: &[u8], expected: &Digest, limit: u64) -> Result<Vec<u8>, ObjectError> {
    decode_inner(framed, expected, limit, None)
}

/// Like `decode`, for an object that may need a dictionary: `dict` is a decompressor loaded
/// with the dictionary the header names (`Header::dict`).
pub fn decode_with_dict(
    framed: &[u8],
    expected: &Digest,
    limit: u64,
    dict: &mut zstd::bulk::Decompressor<'_>,
) -> Result<Vec<u8>, ObjectError> {
    decode_inner(framed, expected, limit, Some(dict))
}

thread_local! {
    /// A decompression context per thread: making one per object costs more than small
    /// objects take to decode.
    static PLAIN_DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

fn decode_inner(
    framed: &[u8],
    expected: &Digest,
    limit: u64,
    dict: Option<&mut zstd::bulk::Decompressor<'_>>,
) -> Result<Vec<u8>, ObjectError> {
    let h = parse_header(framed)?;
    if h.raw_len > limit {
        return Err(ObjectError::TooLarge { declared: h.raw_len, limit });
    }
    let payload = &framed[h.len()..];
    let decompress_err = |why: String| ObjectError::Decompress { declared: h.raw_len, why };
    let data = match h.codec {
        Codec::Raw => {
            if payload.len() as u64 != h.raw_len {
                return Err(decompress_err(format!("{} raw bytes", payload.len())));
            }
            payload.to_vec()
        }
        Codec::Zstd | Codec::ZstdDict => {
            let data = match (h.dict, dict) {
                (None, _) => PLAIN_DECOMPRESSOR.with(|d| match d.borrow_mut().as_mut() {
                    Some(d) => d.decompress(payload, h.raw_len as usize),
                    None => zstd::bulk::decompress(payload, h.raw_len as usize),
                }),
                (Some(_), Some(d)) => d.decompress(payload, h.raw_len as usize),
                (Some(d), None) => return Err(ObjectError::NeedsDictionary(d)),
            }
            .map_err(|e| decompress_err(e.to_string()))?;
            if data.len() as u64 != h.raw_len {
                return Err(decompress_err(format!("got {} bytes", data.len())));
            }
            data
        }
    };
    let actual = Digest::of(&data);
    if actual != *expected {
        return Err(ObjectError::DigestMismatch { expected: *expected, actual });
    }
    Ok(data)
}
