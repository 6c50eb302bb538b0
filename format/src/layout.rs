//! Layouts: where each object of one generation lies in the server's immutable serving packs,
//! so that an endpoint (or a mirror) fetches with ranged GETs that any HTTP cache can keep.
//!
//! A serving pack is a pack file (`PACK_MAGIC`, then records: digest, length, framed bytes)
//! named by the blake3 digest of all its bytes, so its name says what it holds and it never
//! changes. A layout names the packs one generation's objects are in and, per pack in file
//! order, each object as an 8-byte digest prefix, the gap since the previous record and the
//! record's length. A layout is a hint, not trust: every record fetched through it is still
//! verified against the full digest the signed trees name, so a wrong layout can only make a
//! fetch fail (and fall back), never make wrong data readable. [`plan`] turns the locations of
//! the wanted objects into few coalesced ranges. Byte layout in `docs/format.md`.

use crate::Digest;

/// File header: "IMGL", version 1.
pub const MAGIC: &[u8; 8] = b"IMGL\x01\0\0\0";
/// File header of version 2 (written only when a record is a group: [`Inner`]).
pub const MAGIC_V2: &[u8; 8] = b"IMGL\x02\0\0\0";
/// Most objects one group record may hold.
pub const MAX_MEMBERS: usize = 1 << 16;
/// Bytes a pack file starts with before its first record (`cache::pack::PACK_MAGIC`).
pub const PACK_HEADER_LEN: u64 = 8;
/// Most objects one layout may list.
pub const MAX_ENTRIES: usize = 1 << 24;
/// Most packs one layout may name.
pub const MAX_PACKS: usize = 1 << 16;
/// Most bytes a decoded layout body may take (checked before decompressing).
pub const MAX_BODY: usize = 1 << 29;
/// Largest layout file a client accepts (the rust tree's 61k objects take under 1 MiB).
pub const MAX_LAYOUT: usize = 64 << 20;
/// Largest record a layout may place (the largest object the server takes, framed, plus a
/// record header).
pub const MAX_RECORD: u64 = (1 << 30) + 36;

/// One serving pack a layout refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackRef {
    /// blake3 of the whole pack file, which is also its name.
    pub digest: Digest,
    /// Length of the pack file.
    pub len: u64,
    /// End of the pack's metadata region: the records from the pack's start up to here are
    /// the side objects and trees of the generation the pack was written for, which a mount
    /// reads before anything else, so an endpoint fetches them with one range per pack.
    pub meta_end: u64,
    /// The manifest of the generation the pack was written for (the first record of its
    /// metadata region): an endpoint that holds it has most of that region already.
    pub origin: Digest,
}

/// Where one object's record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The first 8 bytes of the object's digest, big-endian.
    pub prefix: u64,
    /// Index into [`Layout::packs`].
    pub pack: u32,
    /// Offset of the record (its header) in the pack file.
    pub offset: u64,
    /// Length of the whole record (header and framed bytes).
    pub len: u64,
    /// For an object inside a group record: where its content lies in the record's decoded
    /// content. A group record is an ordinary record whose object is several objects'
    /// contents one after the other, compressed together; the layout places the group
    /// (with `inner` None) and then each member at the same record.
    pub inner: Option<Inner>,
}

/// Where a member of a group lies in the group's decoded content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inner {
    /// Offset in the decoded content.
    pub offset: u32,
    /// Length: the member object's length.
    pub len: u32,
}

impl Placed {
    /// The byte after the record.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Where the objects of one generation are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The generation's manifest, whose digest names the layout.
    pub manifest: Digest,
    /// The packs, in the order `Placed::pack` counts them.
    pub packs: Vec<PackRef>,
    /// Every object, sorted by pack and offset (as [`Layout::encode`] writes them and
    /// [`Layout::decode`] returns them).
    pub entries: Vec<Placed>,
}

/// The 8-byte prefix a layout keys an object by.
pub fn prefix(d: &Digest) -> u64 {
    u64::from_be_bytes(d.0[..8].try_into().expect("8 bytes"))
}

/// Why a layout was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Not a version 1 or 2 layout.
    #[error("not a version 1 or 2 layout")]
    Magic,
    /// A member of a group that does not follow its group's record, or members out of order.
    #[error("layout entry {index} is a group member without its group")]
    Member {
        /// The entry's position.
        index: usize,
    },
    /// The compressed body does not decode.
    #[error("layout body does not decompress: {0}")]
    Compression(String),
    /// The body ends early, or has bytes left over.
    #[error("layout is truncated or has trailing bytes")]
    Truncated,
    /// A count or length past its limit.
    #[error("layout {what} {value} is past the limit {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A record that does not fit in its pack, or overlaps the one before it.
    #[error("layout entry {index} does not fit in pack {pack}")]
    OutOfPack {
        /// The entry's position.
        index: usize,
        /// Its pack's position.
        pack: u32,
    },
    /// Entries out of pack and offset order (encoding only).
    #[error("layout entries overlap or are out of order at {index}")]
    Order {
        /// The entry's position after sorting.
        index: usize,
    },
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], LayoutError> {
        if self.b.len() < n {
            return Err(LayoutError::Truncated);
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, LayoutError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, LayoutError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn digest(&mut self) -> Result<Digest, LayoutError> {
        Ok(Digest(self.take(32)?.try_into().unwrap()))
    }
    fn varint(&mut self) -> Result<u64, LayoutError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(LayoutError::Truncated)
    }
}

fn limit(what: &'static str, value: u64, limit: u64) -> Result<(), LayoutError> {
    if value > limit {
        return Err(LayoutError::TooLarge { what, value, limit });
    }
    Ok(())
}

impl Layout {
    /// Sorts the entries by pack and offset and checks that each record fits in its pack
    /// without overlapping the one before.
    pub fn normalize(&mut self) -> Result<(), LayoutError> {
        if let Some(n) = self.packs.iter().position(|p| !(PACK_HEADER_LEN..=p.len).contains(&p.meta_end)) {
            return Err(LayoutError::OutOfPack { index: 0, pack: n as u32 });
        }
        self.entries.sort_by_key(|e| (e.pack, e.offset, e.inner));
        let mut end = (u32::MAX, 0u64);
        let mut group: Option<(Placed, Inner)> = None;
        for (index, e) in self.entries.iter().enumerate() {
            let pack = self.packs.get(e.pack as usize).ok_or(LayoutError::OutOfPack { index, pack: e.pack })?;
            if let Some(inner) = e.inner {
                // A member: at its group's record, after the members before it.
                match group {
                    Some((g, last)) if g.pack == e.pack && g.offset == e.offset && g.len == e.len && last.offset + last.len <= inner.offset => {
                        group = Some((g, inner));
                        continue;
                    }
                    _ => return Err(LayoutError::Member { index }),
                }
            }
            group = Some((*e, Inner { offset: 0, len: 0 }));
            let start = if end.0 == e.pack { end.1 } else { PACK_HEADER_LEN };
            if e.offset < start || e.len < 36 || e.len > MAX_RECORD {
                return Err(LayoutError::Order { index });
            }
            if e.end() > pack.len {
                return Err(LayoutError::OutOfPack { index, pack: e.pack });
            }
            end = (e.pack, e.end());
        }
        Ok(())
    }

    /// The layout file: the magic, the body's length (u32) and the body, zstd-compressed.
    pub fn encode(&self) -> Result<Vec<u8>, LayoutError> {
        let mut me = self.clone();
        me.normalize()?;
        limit("entry count", me.entries.len() as u64, MAX_ENTRIES as u64)?;
        limit("pack count", me.packs.len() as u64, MAX_PACKS as u64)?;
        let v2 = me.entries.iter().any(|e| e.inner.is_some());
        let mut body = Vec::with_capacity(48 + me.packs.len() * 80 + me.entries.len() * 12);
        body.extend_from_slice(&me.manifest.0);
        body.extend_from_slice(&(me.packs.len() as u32).to_le_bytes());
        for p in &me.packs {
            body.extend_from_slice(&p.digest.0);
            body.extend_from_slice(&p.len.to_le_bytes());
            body.extend_from_slice(&p.meta_end.to_le_bytes());
            body.extend_from_slice(&p.origin.0);
        }
        for (n, _) in me.packs.iter().enumerate() {
            let of: Vec<&Placed> = me.entries.iter().filter(|e| e.pack as usize == n && e.inner.is_none()).collect();
            body.extend_from_slice(&(of.len() as u32).to_le_bytes());
            let mut end = PACK_HEADER_LEN;
            for e in of {
                body.extend_from_slice(&e.prefix.to_be_bytes());
                put_varint(&mut body, e.offset - end);
                put_varint(&mut body, e.len);
                end = e.end();
                if v2 {
                    // Version 2: the record's members, each a prefix and where it lies in
                    // the decoded content (its offset after the previous member's end).
                    let members: Vec<&Placed> = me.entries.iter().filter(|m| m.pack == e.pack && m.offset == e.offset && m.inner.is_some()).collect();
                    limit("member count", members.len() as u64, MAX_MEMBERS as u64)?;
                    put_varint(&mut body, members.len() as u64);
                    let mut at = 0u64;
                    for m in members {
                        let inner = m.inner.expect("members have an inner place");
                        body.extend_from_slice(&m.prefix.to_be_bytes());
                        put_varint(&mut body, u64::from(inner.offset) - at);
                        put_varint(&mut body, u64::from(inner.len));
                        at = u64::from(inner.offset) + u64::from(inner.len);
                    }
                }
            }
        }
        let packed = zstd::bulk::compress(&body, 19).map_err(|e| LayoutError::Compression(e.to_string()))?;
        let mut out = Vec::with_capacity(12 + packed.len());
        out.extend_from_slice(if v2 { MAGIC_V2 } else { MAGIC });
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
        Ok(out)
    }

    /// Reads a layout file, refusing anything malformed or past the limits before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Layout, LayoutError> {
        if bytes.len() < 12 || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V2) {
            return Err(LayoutError::Magic);
        }
        let v2 = &bytes[..8] == MAGIC_V2;
        let body_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        limit("body length", body_len as u64, MAX_BODY as u64)?;
        let body = zstd::bulk::decompress(&bytes[12..], body_len).map_err(|e| LayoutError::Compression(e.to_string()))?;
        if body.len() != body_len {
            return Err(LayoutError::Truncated);
        }
        let mut r = Reader { b: &body };
        let manifest = r.digest()?;
        let npacks = r.u32()? as usize;
        limit("pack count", npacks as u64, MAX_PACKS as u64)?;
        if r.b.len() < npacks * 80 {
            return Err(LayoutError::Truncated);
        }
        let mut packs = Vec::with_capacity(npacks);
        for n in 0..npacks {
            let p = PackRef { digest: r.digest()?, len: r.u64()?, meta_end: r.u64()?, origin: r.digest()? };
            if !(PACK_HEADER_LEN..=p.len).contains(&p.meta_end) {
                return Err(LayoutError::OutOfPack { index: 0, pack: n as u32 });
            }
            packs.push(p);
        }
        let mut entries = Vec::new();
        for (n, pack) in packs.iter().enumerate() {
            let count = r.u32()? as usize;
            // Each entry takes at least 10 bytes, so a count the body cannot hold is refused
            // before anything is allocated for it.
            if count > MAX_ENTRIES || count.saturating_mul(10) > r.b.len() || entries.len() + count > MAX_ENTRIES {
                return Err(LayoutError::TooLarge { what: "entry count", value: count as u64, limit: MAX_ENTRIES as u64 });
            }
            entries.reserve(count);
            let mut end = PACK_HEADER_LEN;
            for _ in 0..count {
                let index = entries.len();
                let prefix = u64::from_be_bytes(r.take(8)?.try_into().unwrap());
                let offset = end.checked_add(r.varint()?).ok_or(LayoutError::OutOfPack { index, pack: n as u32 })?;
                let len = r.varint()?;
                if !(36..=MAX_RECORD).contains(&len) || offset.checked_add(len).is_none_or(|e| e > pack.len) {
                    return Err(LayoutError::OutOfPack { index, pack: n as u32 });
                }
                entries.push(Placed { prefix, pack: n as u32, offset, len, inner: None });
                end = offset + len;
                if v2 {
                    let members = r.varint()?;
                    // Each member takes at least 10 bytes.
                    if members > MAX_MEMBERS as u64 || members.saturating_mul(10) > r.b.len() as u64 || entries.len() as u64 + members > MAX_ENTRIES as u64 {
                        return Err(LayoutError::TooLarge { what: "member count", value: members, limit: MAX_MEMBERS as u64 });
                    }
                    let mut at = 0u64;
                    for _ in 0..members {
                        let index = entries.len();
                        let prefix = u64::from_be_bytes(r.take(8)?.try_into().unwrap());
                        let start = at.checked_add(r.varint()?).filter(|s| *s <= u64::from(u32::MAX)).ok_or(LayoutError::Member { index })?;
                        let mlen = r.varint()?;
                        at = start.checked_add(mlen).filter(|e| *e <= u64::from(u32::MAX)).ok_or(LayoutError::Member { index })?;
                        entries.push(Placed { prefix, pack: n as u32, offset, len, inner: Some(Inner { offset: start as u32, len: mlen as u32 }) });
                    }
                }
            }
        }
        if !r.b.is_empty() {
            return Err(LayoutError::Truncated);
        }
        Ok(Layout { manifest, packs, entries })
    }
}

/// One ranged GET: bytes `start..end` of pack `pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The pack's digest (its name).
    pub pack: Digest,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Groups the records `wanted` (each with its pack's digest) into ranges: records of a pack
/// in offset order, merged while the gap between two is at most `gap` bytes and the range stays
/// within `max` bytes (a single record longer than `max` is a range of its own). Fewer requests
/// at the price of the gap bytes, which the caller skips.
pub fn plan(wanted: &[(Digest, Placed)], gap: u64, max: u64) -> Vec<Range> {
    let mut sorted: Vec<&(Digest, Placed)> = wanted.iter().collect();
    sorted.sort_by_key(|(p, e)| (*p, e.offset));
    let mut out: Vec<Range> = Vec::new();
    for (pack, e) in sorted {
        match out.last_mut() {
            Some(r) if r.pack == *pack && e.offset >= r.start && e.offset <= r.end.saturating_add(gap) && e.end().max(r.end) - r.start <= max => {
                r.end = r.end.max(e.end());
            }
            _ => out.push(Range { pack: *pack, start: e.offset, end: e.end() }),
        }
    }
    out
}
