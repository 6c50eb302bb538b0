//! The endpoint's facts (`api::fleet::Facts`): host name, machine id, architecture, OS
//! release, kernel, CPUs, memory, the cache partition's size and free space, and the
//! addresses of its interfaces. Collected from the system here; parsing and the rule for
//! "changed enough to report" are pure.

use std::path::Path;

use api::fleet::{Facts, MAX_TEXT};

/// The facts of this machine, the cache partition being the one holding `cache` (or its
/// nearest existing parent). What cannot be read is left empty or zero.
pub fn collect(cache: &Path) -> Facts {
    let (kernel, arch) = uname();
    let (disk, free) = disk(cache);
    Facts {
        hostname: clean(&nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()),
        machine_id: clean(std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim()),
        arch: clean(&arch),
        os_release: clean(&std::fs::read_to_string("/etc/os-release").ok().and_then(|t| pretty_name(&t)).unwrap_or_default()),
        kernel: clean(&kernel),
        // SAFETY: sysconf has no preconditions.
        cpus: u32::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(0),
        memory_bytes: std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_total(&t)).unwrap_or(0),
        cache_disk_bytes: disk,
        cache_free_bytes: free,
        addresses: addresses(),
    }
}

/// Text a fact may carry: control characters dropped, at most `MAX_TEXT` bytes.
pub fn clean(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    while out.len() > MAX_TEXT {
        out.pop();
    }
    out
}

/// `PRETTY_NAME` of an os-release file (quotes removed).
pub fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    let v = value.trim();
    let unquoted =
        v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
    Some(unquoted.unwrap_or(v).replace("\\\"", "\""))
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `new` differs from `old` enough to report: any field but the free space, or the
/// free space by more than 5 % of the partition (free space moves all the time).
pub fn changed(old: &Facts, new: &Facts) -> bool {
    let without_free = |f: &Facts| Facts { cache_free_bytes: 0, ..f.clone() };
    if without_free(old) != without_free(new) {
        return true;
    }
    old.cache_free_bytes.abs_diff(new.cache_free_bytes) > new.cache_disk_bytes / 20
}

/// Kernel release and machine (`uname -r`, `uname -m`).
fn uname() -> (String, String) {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), std::env::consts::ARCH.to_string());
    }
    let text = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (text(&u.release), text(&u.machine))
}

/// Size and free bytes of the partition holding `dir` (its nearest existing parent).
fn disk(dir: &Path) -> (u64, u64) {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(existing) {
        Ok(s) => {
            let frag = s.fragment_size() as u64;
            (s.blocks() as u64 * frag, s.blocks_available() as u64 * frag)
        }
        Err(_) => (0, 0),
    }
}

/// The addresses of the interfaces, loopback left out, sorted, at most 64.
fn addresses() -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out: Vec<String> = addrs
        .filter(|a| !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK))
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(v4.ip().to_string())
            } else {
                addr.as_sockaddr_in6().map(|v6| v6.ip().to_string())
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(64);
    out
}
