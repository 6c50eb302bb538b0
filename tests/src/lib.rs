//! Helpers shared by the end-to-end tests: locating the built binaries, running `imgctl`
//! against a temporary store, building a tree with every kind of file, and comparing two trees
//! field by field.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod proxy;

/// Where the workspace's binaries are: next to the test executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)", path.display());
    path
}

/// A temporary store and the means to run `imgctl` on it.
pub struct Imgctl {
    /// Holds the temporary directory alive.
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: PathBuf,
    /// The (server URL, image family) pairs whose signing is set up.
    trusted: std::cell::RefCell<std::collections::HashSet<(String, String)>>,
}

impl Default for Imgctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Imgctl {
    /// A fresh store in a new temporary directory.
    pub fn new() -> Imgctl {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Imgctl { dir, store, trusted: Default::default() }
    }

    /// Runs `imgctl --store STORE ARGS...`.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(bin("imgctl")).arg("--store").arg(&self.store).args(args).env_remove("IMGCTL_STORE").output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert!(out.status.success(), "imgctl failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Imports `src` with `--json` and returns the parsed report.
    pub fn import(&self, src: &Path, image: &str) -> serde_json::Value {
        let out = self.ok([OsStr::new("--json"), OsStr::new("import"), src.as_os_str(), OsStr::new("--image"), OsStr::new(image)]);
        serde_json::from_str(&out).unwrap()
    }

    /// Imports `src` as the next generation of `image`, pushes it to `server` signed with the
    /// family key (setting up the server's signed repository first if needed) and points
    /// `channel` at it.
    pub fn publish(&self, server: &Server, src: &Path, image: &str, channel: &str) {
        self.import(src, image);
        self.push_signed(server, &format!("{image}@latest"));
        ok_json(self.remote(server, &["--json", "channel", "set", channel, &format!("{image}@latest")]));
    }

    /// Pushes `generation` (`IMAGE@N`) to `server`, signed with the family key.
    pub fn push_signed(&self, server: &Server, generation: &str) -> serde_json::Value {
        let image = generation.split('@').next().unwrap();
        self.trust(server, image);
        let key = self.key("images");
        ok_json(self.remote(server, &["--json", "push", generation, "--key", key.to_str().unwrap()]))
    }

    /// This test's offline key `name` (`root`, `targets`, `images`: one key signs every
    /// image family here), generated on first use; `NAME.key.pub` is its public half.
    pub fn key(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("keys");
        let path = dir.join(format!("{name}.key"));
        if !path.exists() {
            fs::create_dir_all(&dir).unwrap();
            self.ok([OsStr::new("key"), OsStr::new("generate"), path.as_os_str()]);
        }
        path
    }

    /// The root written by `trust init` (what endpoints are provisioned with).
    pub fn root_file(&self) -> PathBuf {
        self.dir.path().join("root.json")
    }

    /// Sets up `server`'s signed repository for `image`: `trust init` the first time, a
    /// delegation of the family to the `images` key after that.
    pub fn trust(&self, server: &Server, image: &str) {
        if !self.trusted.borrow_mut().insert((server.url.clone(), image.to_string())) {
            return;
        }
        let (root, targets, images) = (self.key("root"), self.key("targets"), self.key("images"));
        let status: serde_json::Value = client().get(format!("{}/v1/tuf", server.url)).send().unwrap().json().unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        if status["initialised"] != true {
            let family = format!("{image}={}.pub", s(&images));
            let root_out = s(&self.root_file());
            ok_json(self.remote(
                server,
                &[
                    "--json",
                    "trust",
                    "init",
                    "--root-key",
                    &s(&root),
                    "--targets-key",
                    &s(&targets),
                    "--image",
                    &family,
                    "--out",
                    &root_out,
                ],
            ));
        } else if status["roles"].get(format!("images/{image}")).is_none() {
            let list = ok_json(self.remote(server, &["--json", "key", "list"]));
            let delegated = list["targets"]["delegations"].as_array().unwrap().iter().any(|d| d["name"] == format!("images/{image}"));
            if !delegated {
                let add = format!("{}.pub", s(&images));
                let role = format!("images/{image}");
                ok_json(self.remote(server, &["--json", "key", "rotate", &role, "--add", &add, "--sign-with", &s(&targets)]));
            }
        }
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `imgctl --store STORE ARGS...` against `server`, with its token.
    pub fn remote(&self, server: &Server, args: &[&str]) -> Output {
        Command::new(bin("imgctl"))
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .env("IMAGED_SERVER", &server.url)
            .env("IMAGED_TOKEN", server.token())
            .output()
            .unwrap()
    }
}

/// Asserts a command succeeded and parses its standard output as JSON.
pub fn ok_json(out: Output) -> serde_json::Value {
    assert!(out.status.success(), "command failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `content` framed as an uncompressed object (codec 0), spelled out byte by byte as
/// format.md documents it, so tests do not trust the encoder they check.
pub fn framed_raw(content: &[u8]) -> Vec<u8> {
    let mut f = b"IMGO\x01\x00\x00\x00".to_vec();
    f.extend_from_slice(&(content.len() as u64).to_le_bytes());
    f.extend_from_slice(content);
    f
}

/// An HTTP client with a deadline on every request.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}

/// Every object digest (hex) in the store at `store`, loose or packed.
pub fn store_objects(store: &Path) -> std::collections::HashSet<String> {
    cache::Store::open(store).unwrap().list().unwrap().iter().map(|d| d.to_hex()).collect()
}

/// Flips one byte inside the stored bytes of object `hex`, wherever the store keeps it.
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

/// A real `imaged` on 127.0.0.1 and a free port, killed (SIGKILL) when dropped.
pub struct Server {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    /// The token its configuration sets, if any.
    pub token: Option<String>,
}

impl Server {
    /// Starts `imaged serve --data DATA --listen 127.0.0.1:PORT` (0 = any free port) and waits
    /// until it listens (at most 30 s).
    pub fn start_on(data: &Path, port: u16) -> Server {
        Server::start_with(data, port, None)
    }

    /// Starts with a configuration file (the command line's `--data` and `--listen` still win).
    pub fn start_with(data: &Path, port: u16, config: Option<&Path>) -> Server {
        use std::io::BufRead;
        let mut cmd = Command::new(bin("imaged"));
        cmd.args(["serve", "--data"]).arg(data).args(["--listen", &format!("127.0.0.1:{port}")]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let (false, Some(url)) = (sent, line.strip_prefix("imaged listening on ")) {
                    let _ = tx.send(url.to_string());
                    sent = true;
                }
            }
        });
        let url = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("imaged did not start listening within 30 s");
        Server { child, url, data: data.to_path_buf(), token: None }
    }

    /// Starts on any free port.
    pub fn start(data: &Path) -> Server {
        Server::start_on(data, 0)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Runs `imaged ARGS --data DATA` (a maintenance command on the same data directory).
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("imaged")).args(args).arg("--data").arg(&self.data).output().unwrap()
    }

    /// The token: the configured one, else the generated `admin.token`.
    pub fn token(&self) -> String {
        if let Some(t) = &self.token {
            return t.clone();
        }
        fs::read_to_string(self.data.join("admin.token")).unwrap().trim().to_string()
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `imgfs mount`, unmounted and killed when dropped.
pub struct Mount {
    /// The process.
    pub child: std::process::Child,
    /// Where it is mounted.
    pub point: PathBuf,
    /// Its `mounted ...` line.
    pub banner: String,
}

impl Mount {
    /// Mounts `channel` from `servers` at `point` with cache `cache`; waits (at most 60 s) for
    /// the mount to be up.
    pub fn start(servers: &[&str], channel: &str, cache: &Path, point: &Path) -> Mount {
        Mount::start_with(servers, channel, cache, point, &[])
    }

    /// Like `start`, with more `imgfs mount` options. Unless `extra` gives `--root` or the
    /// cache already trusts one, the endpoint is provisioned with the first server's root
    /// version 1 (as an operator would install the file `imgctl trust init` wrote).
    pub fn start_with(servers: &[&str], channel: &str, cache: &Path, point: &Path, extra: &[&str]) -> Mount {
        use std::io::BufRead;
        fs::create_dir_all(point).unwrap();
        let mut provision = Vec::new();
        if !extra.contains(&"--root") && !cache.join("trust/root.json").exists() {
            let resp = client().get(format!("{}/tuf/1.root.json", servers[0])).send();
            if let Ok(r) = resp.and_then(|r| r.error_for_status()) {
                let file = PathBuf::from(format!("{}.root.json", cache.display()));
                fs::write(&file, r.bytes().unwrap()).unwrap();
                provision = vec!["--root".to_string(), file.to_str().unwrap().to_string()];
            }
        }
        let mut child = Command::new(bin("imgfs"))
            .args(["mount", "--server", &servers.join(","), "--channel", channel, "--cache"])
            .arg(cache)
            .args(extra)
            .args(&provision)
            .arg(point)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("imgfs: mounted ") {
                    let _ = tx.send(Ok(line.clone()));
                }
                lines.push(line);
            }
            let _ = tx.send(Err(lines.join("\n")));
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Ok(banner)) => Mount { child, point: point.to_path_buf(), banner },
            Ok(Err(log)) => panic!("imgfs exited before mounting:\n{log}"),
            Err(_) => panic!("imgfs did not mount within 60 s"),
        }
    }
}

impl Mount {
    /// Runs `imgfs COMMAND MOUNTPOINT` and parses its JSON answer; panics if it fails.
    pub fn control(&self, command: &str) -> serde_json::Value {
        self.control_with(command, &[])
    }

    /// Runs `imgfs COMMAND MOUNTPOINT ARGS...` and parses its JSON answer; panics if it fails.
    pub fn control_with(&self, command: &str, args: &[&str]) -> serde_json::Value {
        let out = Command::new(bin("imgfs")).arg(command).arg(&self.point).args(args).arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "imgfs {command} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Kills imgfs with SIGKILL, as a crash would, and detaches the dead mount.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.point, nix::mount::MntFlags::MNT_DETACH);
    }

    /// Polls `imgfs status` until `done` holds for it (at most `secs`); the last status.
    pub fn wait_status(&self, secs: u64, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let st = self.control("status");
            if done(&st) || std::time::Instant::now() > until {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.point, nix::mount::MntFlags::MNT_DETACH);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let (fa, fb) = (facts(&pa, ma), facts(&pb, mb));
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
