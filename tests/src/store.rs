//! The store on disk, driven directly: its objects listed, one corrupted in place, and an
//! object framed by hand as format.md spells it.

use std::fs;
use std::path::{Path, PathBuf};

/// `content` framed as an uncompressed object (codec 0), spelled out byte by byte as
/// format.md documents it, so tests do not trust the encoder they check.
pub fn framed_raw(content: &[u8]) -> Vec<u8> {
    let mut f = b"IMGO\x01\x00\x00\x00".to_vec();
    f.extend_from_slice(&(content.len() as u64).to_le_bytes());
    f.extend_from_slice(content);
    f
}

/// Every object digest (hex) in the store at `store`, loose or packed.
pub fn store_objects(store: &Path) -> std::collections::HashSet<String> {
    cache::Store::open(store).unwrap().list().unwrap().iter().map(|d| d.to_hex()).collect()
}

/// Flips one byte inside the stored bytes of object `hex`, wherever the store keeps it.
/// Flips a byte of object `hex` in every serving pack under server data directory `data`
/// (`serve/packs/`): a server whose disk went bad everywhere it keeps the object. Returns how
/// many copies it changed.
pub fn corrupt_served(data: &Path, hex: &str) -> usize {
    corrupt_in_packs(&data.join("serve/packs"), hex)
}

/// Flips a byte of object `hex` in every serving pack in directory `packs`; returns how many
/// copies it changed.
pub fn corrupt_in_packs(packs: &Path, hex: &str) -> usize {
    let digest: format::Digest = hex.parse().unwrap();
    let mut changed = 0;
    for e in fs::read_dir(packs).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = fs::read(&path).unwrap();
        let mut at = 8;
        while at + 36 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 32..at + 36].try_into().unwrap()) as usize;
            if bytes[at..at + 32] == digest.0 {
                bytes[at + 36 + len.min(40) / 2] ^= 0x40;
                changed += 1;
            }
            at += 36 + len;
        }
        fs::write(&path, &bytes).unwrap();
    }
    changed
}

pub fn corrupt_object(store: &Path, hex: &str) {
    use std::os::unix::fs::FileExt;
    let digest: format::Digest = hex.parse().unwrap();
    let location = cache::Store::open(store).unwrap().location_name(&digest);
    let text = location.to_string_lossy().into_owned();
    let (path, offset) = match text.rsplit_once('@') {
        Some((p, off)) => (PathBuf::from(p), off.parse::<u64>().unwrap() + 20),
        None => (location.clone(), fs::metadata(&location).unwrap().len() - 1),
    };
    let f = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

