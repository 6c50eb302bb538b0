//! How much a cache may hold: a size limit in bytes or as a share of its partition, and a
//! floor of free space the partition must keep. Pure arithmetic over what `statvfs` reports.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A size: bytes, or a percentage of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// So many bytes.
    Bytes(u64),
    /// So many percent (0..=100) of the partition's size.
    Percent(u8),
}

/// A size that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is not a size: give bytes with an optional K, M, G or T suffix (powers of 1024), or a percentage like 25%")]
pub struct SizeError(String);

impl FromStr for Size {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Size, SizeError> {
        let bad = || SizeError(s.to_string());
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let n: u8 = p.trim().parse().map_err(|_| bad())?;
            return if n <= 100 { Ok(Size::Percent(n)) } else { Err(bad()) };
        }
        let upper = t.to_ascii_uppercase();
        let digits = upper.trim_end_matches(['B', 'I']);
        let (num, shift) = match digits.chars().last() {
            Some('K') => (&digits[..digits.len() - 1], 10),
            Some('M') => (&digits[..digits.len() - 1], 20),
            Some('G') => (&digits[..digits.len() - 1], 30),
            Some('T') => (&digits[..digits.len() - 1], 40),
            _ => (digits, 0),
        };
        let n: u64 = num.trim().parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).map(Size::Bytes).ok_or_else(bad)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Bytes(b) => write!(f, "{b}"),
            Size::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Size {
    /// The size in bytes on a partition of `total` bytes.
    pub fn of(self, total: u64) -> u64 {
        match self {
            Size::Bytes(b) => b,
            Size::Percent(p) => (total as u128 * p as u128 / 100) as u64,
        }
    }
}

/// A partition's size and the space left on it for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Size of the partition.
    pub total: u64,
    /// Bytes an unprivileged writer could still write.
    pub available: u64,
}

/// The partition holding `path`.
pub fn disk(path: &Path) -> std::io::Result<Disk> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = st.fragment_size() as u64;
    Ok(Disk { total: st.blocks() as u64 * frag, available: st.blocks_available() as u64 * frag })
}

/// The limits a cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The most the cache may hold.
    pub limit: Size,
    /// The least free space the partition must keep; the cache shrinks to keep it.
    pub min_free: Size,
}

impl Quota {
    /// The most the cache may hold now, using `used` bytes on `disk`: the limit, lowered so
    /// that the partition keeps its free space (every byte evicted frees one on the disk).
    pub fn allowance(&self, used: u64, disk: Disk) -> u64 {
        let limit = self.limit.of(disk.total);
        let floor = self.min_free.of(disk.total);
        limit.min((used + disk.available).saturating_sub(floor))
    }

    /// What to shrink to when `used` exceeds the allowance: 90 % of it, so eviction runs in
    /// rounds rather than once per object. `None` when within the allowance.
    pub fn shrink_to(&self, used: u64, disk: Disk) -> Option<u64> {
        let allowed = self.allowance(used, disk);
        (used > allowed).then(|| allowed / 10 * 9)
    }
}
