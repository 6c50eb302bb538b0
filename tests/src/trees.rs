//! Trees on disk: one with every kind of file and metadata imaged must keep
//! (`build_special_tree`), their field-by-field comparison (`compare_trees`), and the bytes
//! tests fill files with (`noise`, `sample_acl`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Sets an xattr, panicking with the path on failure.
fn setx(path: &Path, name: &str, value: &[u8]) {
    xattr::set(path, name, value).unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(None, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

/// A POSIX access ACL granting user 1000 read, in the kernel's xattr encoding.
pub fn sample_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [(1u16, 7u16, u32::MAX), (2, 4, 1000), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 5, u32::MAX)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Pseudo-random bytes that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Builds under `root` a tree with every kind of file and metadata imaged must keep: hard
/// links, setuid/setgid/sticky, xattrs (user, security.capability, ACL), devices, a fifo, a
/// socket, a symlink loop, a non-UTF-8 name, a sparse 100 MB file, odd owners, ns mtimes.
/// Needs root (CI runs as root).
pub fn build_special_tree(root: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("small.txt"), b"hello imaged\n").unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("dir/big.bin"), noise(3 << 20, 7)).unwrap();
    fs::write(root.join("dir/sub/text"), "line\n".repeat(50_000)).unwrap();
    // Hard links: a group of three and a group of two.
    fs::write(root.join("dir/linked"), b"shared inode").unwrap();
    fs::hard_link(root.join("dir/linked"), root.join("link-a")).unwrap();
    fs::hard_link(root.join("dir/linked"), root.join("dir/sub/link-b")).unwrap();
    fs::write(root.join("pair1"), b"pair").unwrap();
    fs::hard_link(root.join("pair1"), root.join("pair2")).unwrap();
    // Special modes.
    fs::write(root.join("setuid-bin"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("setuid-bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("setgid-dir")).unwrap();
    fs::set_permissions(root.join("setgid-dir"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    // Ownership.
    fs::write(root.join("owned"), b"owned by 1234:5678").unwrap();
    nix::unistd::chown(&root.join("owned"), Some(1234.into()), Some(5678.into())).unwrap();
    // Extended attributes: user, file capability (cap_net_raw, v2 format), ACL.
    setx(&root.join("small.txt"), "user.comment", b"a value");
    setx(&root.join("small.txt"), "user.empty", b"");
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    cap.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted: CAP_NET_RAW
    cap.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    cap.extend_from_slice(&[0; 8]); // upper halves
    fs::write(root.join("cap-bin"), b"binary with a capability").unwrap();
    setx(&root.join("cap-bin"), "security.capability", &cap);
    setx(&root.join("dir"), "system.posix_acl_access", &sample_acl());
    // Devices, fifo, socket.
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(&root.join("null"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), libc::makedev(1, 3)).unwrap();
    mknod(&root.join("loop0"), SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), libc::makedev(7, 0)).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
    // Symlinks: a loop, a dangling absolute one, a relative one.
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    symlink("dir/sub/text", root.join("rel-link")).unwrap();
    // A name that is not UTF-8.
    fs::write(root.join(OsStr::from_bytes(b"caf\xe9-\xff")), b"latin-1 name").unwrap();
    // A sparse 100 MB file with data at both ends and the middle.
    let f = fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(100 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&noise(10_000, 3), 50 << 20).unwrap();
    f.write_all_at(b"end", (100 << 20) - 3).unwrap();
    drop(f);
    // Nanosecond mtimes, on a file, a symlink and a directory (last, after its children).
    set_mtime(&root.join("small.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("loop-a"), 1_500_000_000, 987_654_321);
    set_mtime(&root.join("dir/sub"), 1_400_000_000, 5);
}

/// Everything compared about one path.
#[derive(Debug, PartialEq)]
struct Facts {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    rdev: u64,
    target: Option<Vec<u8>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    sparse: bool,
}

fn facts(path: &Path, md: &fs::Metadata) -> Facts {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for n in names {
            if let Ok(Some(v)) = xattr::get(path, &n) {
                xattrs.insert(n.as_bytes().to_vec(), v);
            }
        }
    }
    Facts {
        kind,
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        // A directory's size and a symlink's mtime are filesystem details on some systems, but
        // Linux keeps symlink mtimes, so they are compared too.
        mtime: (md.mtime(), md.mtime_nsec()),
        size: if ft.is_dir() { 0 } else { md.size() },
        rdev: if ft.is_char_device() || ft.is_block_device() { md.rdev() } else { 0 },
        target: ft.is_symlink().then(|| fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec()),
        xattrs,
        sparse: ft.is_file() && md.blocks() * 512 < md.size(),
    }
}

/// Compares two trees: type, mode, owner, mtime, size, content, xattrs, link targets, device
/// numbers, sparseness and hard-link groups. Returns every difference found.
pub fn compare_trees(a: &Path, b: &Path) -> Vec<String> {
    compare(a, b, true)
}

/// Like [`compare_trees`] but without modification times: for trees made by the same commands
/// at different moments.
pub fn compare_trees_but_mtimes(a: &Path, b: &Path) -> Vec<String> {
    compare(a, b, false)
}

fn compare(a: &Path, b: &Path, mtimes: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let la = list(a);
    let lb = list(b);
    let (mut groups_a, mut groups_b): (HashMap<u64, Vec<PathBuf>>, HashMap<u64, Vec<PathBuf>>) = Default::default();
    for rel in la.keys().filter(|k| !lb.contains_key(*k)) {
        diffs.push(format!("only in {}: {}", a.display(), rel.display()));
    }
    for rel in lb.keys().filter(|k| !la.contains_key(*k)) {
        diffs.push(format!("only in {}: {}", b.display(), rel.display()));
    }
    for (rel, ma) in &la {
        let Some(mb) = lb.get(rel) else { continue };
        let (pa, pb) = (a.join(rel), b.join(rel));
        let (mut fa, mut fb) = (facts(&pa, ma), facts(&pb, mb));
        if !mtimes {
            (fa.mtime, fb.mtime) = ((0, 0), (0, 0));
        }
        if fa != fb {
            diffs.push(format!("{}: {:?} != {:?}", rel.display(), fa, fb));
            continue;
        }
        if ma.is_file() {
            if ma.nlink() > 1 {
                groups_a.entry(ma.ino()).or_default().push(rel.clone());
            }
            if mb.nlink() > 1 {
                groups_b.entry(mb.ino()).or_default().push(rel.clone());
            }
            if !same_content(&pa, &pb) {
                diffs.push(format!("{}: content differs", rel.display()));
            }
            // An exported sparse file must not take much more space than its source.
            if fa.sparse && mb.blocks() > ma.blocks() * 2 + 64 {
                diffs.push(format!("{}: {} blocks exported for {} in source", rel.display(), mb.blocks(), ma.blocks()));
            }
        }
    }
    let norm = |g: HashMap<u64, Vec<PathBuf>>| {
        let mut v: Vec<Vec<PathBuf>> = g
            .into_values()
            .filter(|v| v.len() > 1)
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        v.sort();
        v
    };
    let (ga, gb) = (norm(groups_a), norm(groups_b));
    if ga != gb {
        diffs.push(format!("hard-link groups differ: {ga:?} != {gb:?}"));
    }
    diffs
}

fn list(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    out.insert(PathBuf::new(), fs::symlink_metadata(root).unwrap());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path().strip_prefix(root).unwrap().to_path_buf(), md);
        }
    }
    out
}

fn same_content(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
    fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).unwrap() {
                0 => break,
                k => n += k,
            }
        }
        n
    }
}
