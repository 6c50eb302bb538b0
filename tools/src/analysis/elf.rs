//! A minimal ELF reader: what the dynamic loader needs to know about a program or library (its
//! class and machine, `PT_INTERP`, and the dynamic section's `DT_NEEDED`, `DT_RPATH` and
//! `DT_RUNPATH`). It reads byte ranges on demand, so only the headers and the dynamic string
//! table of a file are fetched from the store, never its code.

use crate::browse::ReadError;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
/// Caps on what a header may make us read, so a hostile file cannot make us allocate much.
const MAX_PHNUM: usize = 1024;
const MAX_DYNAMIC: u64 = 1 << 20;
const MAX_STRTAB: u64 = 4 << 20;
const MAX_INTERP: u64 = 4096;

/// What the dynamic loader reads from an ELF file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElfInfo {
    /// 64-bit (`ELFCLASS64`) rather than 32-bit.
    pub class64: bool,
    /// `e_machine` (62 is x86-64, 183 AArch64).
    pub machine: u16,
    /// The program interpreter (`/lib64/ld-linux-x86-64.so.2`), for executables.
    pub interp: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` directories.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` directories.
    pub runpath: Vec<String>,
}

impl ElfInfo {
    /// Debian's multiarch directory name for the machine (`x86_64-linux-gnu`).
    pub fn multiarch(&self) -> Option<&'static str> {
        Some(match (self.machine, self.class64) {
            (62, true) => "x86_64-linux-gnu",
            (62, false) => "x86_64-linux-gnux32",
            (3, false) => "i386-linux-gnu",
            (183, true) => "aarch64-linux-gnu",
            (40, false) => "arm-linux-gnueabihf",
            (243, true) => "riscv64-linux-gnu",
            (21, true) => "powerpc64le-linux-gnu",
            (22, true) => "s390x-linux-gnu",
            _ => return None,
        })
    }
}

/// Parses the ELF file read through `read(offset, len)` (which returns fewer bytes at the end
/// of the file). None when it is not an ELF file or its headers do not hold together: such a
/// file loads nothing the analysis could follow.
pub fn parse_elf(read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, ReadError>) -> Result<Option<ElfInfo>, ReadError> {
    let header = read(0, 64)?;
    if header.len() < 52 || header[..4] != *b"\x7fELF" {
        return Ok(None);
    }
    let class64 = match header[4] {
        1 => false,
        2 => true,
        _ => return Ok(None),
    };
    let le = match header[5] {
        1 => true,
        2 => false,
        _ => return Ok(None),
    };
    let f = Fields { le };
    if class64 && header.len() < 64 {
        return Ok(None);
    }
    let machine = f.u16(&header, 18);
    let (phoff, phentsize, phnum) = if class64 {
        (f.u64(&header, 32), f.u16(&header, 54) as usize, f.u16(&header, 56) as usize)
    } else {
        (u64::from(f.u32(&header, 28)), f.u16(&header, 42) as usize, f.u16(&header, 44) as usize)
    };
    let min_entry = if class64 { 56 } else { 32 };
    if phnum == 0 || phnum > MAX_PHNUM || phentsize < min_entry {
        return Ok(Some(ElfInfo { class64, machine, ..ElfInfo::default() }));
    }
    let table = read(phoff, phentsize * phnum)?;
    if table.len() < phentsize * phnum {
        return Ok(None);
    }
    // (type, offset, vaddr, filesz) of each program header.
    let headers: Vec<(u32, u64, u64, u64)> = table
        .chunks_exact(phentsize)
        .map(|p| {
            if class64 {
                (f.u32(p, 0), f.u64(p, 8), f.u64(p, 16), f.u64(p, 32))
            } else {
                (f.u32(p, 0), u64::from(f.u32(p, 4)), u64::from(f.u32(p, 8)), u64::from(f.u32(p, 16)))
            }
        })
        .collect();
    let mut info = ElfInfo { class64, machine, ..ElfInfo::default() };
    if let Some(&(_, off, _, size)) = headers.iter().find(|h| h.0 == PT_INTERP) {
        let bytes = read(off, size.min(MAX_INTERP) as usize)?;
        info.interp = Some(c_string(&bytes, 0));
    }
    let Some(&(_, dyn_off, _, dyn_size)) = headers.iter().find(|h| h.0 == PT_DYNAMIC) else { return Ok(Some(info)) };
    let dynamic = read(dyn_off, dyn_size.min(MAX_DYNAMIC) as usize)?;
    let entry = if class64 { 16 } else { 8 };
    let mut tags = Vec::new();
    for d in dynamic.chunks_exact(entry) {
        let (tag, val) = if class64 { (f.u64(d, 0), f.u64(d, 8)) } else { (u64::from(f.u32(d, 0)), u64::from(f.u32(d, 4))) };
        if tag == DT_NULL {
            break;
        }
        tags.push((tag, val));
    }
    let find = |t: u64| tags.iter().find(|d| d.0 == t).map(|d| d.1);
    let (Some(strtab), Some(strsz)) = (find(DT_STRTAB), find(DT_STRSZ)) else { return Ok(Some(info)) };
    // DT_STRTAB is an address: the loadable segment that maps it says where it is in the file.
    let Some(&(_, seg_off, seg_addr, _)) = headers.iter().find(|h| h.0 == PT_LOAD && h.2 <= strtab && strtab - h.2 < h.3) else {
        return Ok(None);
    };
    let Some(at) = seg_off.checked_add(strtab - seg_addr) else { return Ok(None) };
    let strings = read(at, strsz.min(MAX_STRTAB) as usize)?;
    for &(tag, val) in &tags {
        let s = || c_string(&strings, val as usize);
        match tag {
            DT_NEEDED => info.needed.push(s()),
            DT_RPATH => info.rpath.extend(s().split(':').filter(|p| !p.is_empty()).map(String::from)),
            DT_RUNPATH => info.runpath.extend(s().split(':').filter(|p| !p.is_empty()).map(String::from)),
            _ => {}
        }
    }
    Ok(Some(info))
}

struct Fields {
    le: bool,
}

impl Fields {
    fn bytes<const N: usize>(&self, b: &[u8], at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = b.get(at..at + N) {
            a.copy_from_slice(s);
        }
        a
    }
    fn u16(&self, b: &[u8], at: usize) -> u16 {
        let a = self.bytes(b, at);
        if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }
    fn u32(&self, b: &[u8], at: usize) -> u32 {
        let a = self.bytes(b, at);
        if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }
    fn u64(&self, b: &[u8], at: usize) -> u64 {
        let a = self.bytes(b, at);
        if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }
}

/// The NUL-terminated string at `at` (empty when out of range).
fn c_string(b: &[u8], at: usize) -> String {
    let tail = b.get(at..).unwrap_or(&[]);
    let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end]).into_owned()
}
