//! What a diff changes for security: setuid and setgid bits, file capabilities, world-writable
//! files, systemd units, listening sockets and Debian package downgrades.

use std::collections::{BTreeMap, BTreeSet};

use cache::Store;
use format::{Entry, EntryKind, Manifest};

use super::units::{listen_lines, unit_of_path, unit_text, unit_type};
use super::Image;
use crate::browse::ReadError;
use crate::diff::{self, PackageChange};

/// The extended attribute holding a file's capabilities.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// What a diff changes for security. Every list is in path or name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SecuritySummary {
    /// Regular files whose setuid or setgid bits were added or removed (directories are left
    /// out: there setgid only picks the group of new files).
    pub setid: Vec<SetidChange>,
    /// Files whose `security.capability` was added, removed or changed.
    pub capabilities: Vec<CapabilityChange>,
    /// Regular files, and directories without the sticky bit, that became world-writable or
    /// were added world-writable.
    pub world_writable: Vec<WorldWritable>,
    /// systemd units added or whose effective text changed (removed units are left out).
    pub units: Vec<UnitChange>,
    /// Socket units whose listening addresses changed.
    pub listening: Vec<ListenChange>,
    /// Debian packages whose version went down (dpkg's ordering).
    pub downgrades: Vec<PackageChange>,
}

impl SecuritySummary {
    /// Nothing to report.
    pub fn is_empty(&self) -> bool {
        self.setid.is_empty()
            && self.capabilities.is_empty()
            && self.world_writable.is_empty()
            && self.units.is_empty()
            && self.listening.is_empty()
            && self.downgrades.is_empty()
    }
}

/// A change of setuid or setgid bits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetidChange {
    /// Path.
    pub path: String,
    /// Permission bits before (four octal digits); None when the file was not there.
    pub before: Option<String>,
    /// Permission bits after; None when the file is gone.
    pub after: Option<String>,
}

/// A change of file capabilities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CapabilityChange {
    /// Path.
    pub path: String,
    /// Capabilities before, as `getcap` shows them (`cap_net_raw=ep`); None when there were none.
    pub before: Option<String>,
    /// Capabilities after; None when there are none.
    pub after: Option<String>,
}

/// A file or directory that became world-writable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorldWritable {
    /// Path.
    pub path: String,
    /// Permission bits (four octal digits).
    pub mode: String,
    /// Whether it is a directory.
    pub directory: bool,
}

/// A systemd unit added or changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitChange {
    /// The unit's name.
    pub unit: String,
    /// `added` or `changed`.
    pub change: &'static str,
}

/// A socket unit whose listening addresses changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenChange {
    /// The socket unit.
    pub unit: String,
    /// `ListenStream=…` (and datagram, sequential-packet) lines before, sorted.
    pub before: Vec<String>,
    /// The same lines after.
    pub after: Vec<String>,
}

/// What the change from `a` to `b` means for security.
pub fn security_summary(store: &Store, a: &Manifest, b: &Manifest) -> Result<SecuritySummary, ReadError> {
    let changes = super::changes(store, a, b)?;
    // A type change is a removal and an addition of the same path: pair them again.
    let mut paths: BTreeMap<&str, (Option<&Entry>, Option<&Entry>)> = BTreeMap::new();
    let mut unit_names = BTreeSet::new();
    for c in &changes {
        let slot = paths.entry(c.path.as_str()).or_default();
        if c.old.is_some() {
            slot.0 = c.old.as_ref();
        }
        if c.new.is_some() {
            slot.1 = c.new.as_ref();
        }
        if let Some(u) = unit_of_path(&c.path) {
            unit_names.insert(u.unit);
        }
    }
    let mut out = SecuritySummary::default();
    for (path, (old, new)) in paths {
        let (so, sn) = (old.map_or(0, setid_bits), new.map_or(0, setid_bits));
        if so != sn {
            out.setid.push(SetidChange { path: path.to_string(), before: old.map(mode4), after: new.map(mode4) });
        }
        let (co, cn) = (old.and_then(capability), new.and_then(capability));
        if co != cn {
            out.capabilities.push(CapabilityChange {
                path: path.to_string(),
                before: co.map(describe_capabilities),
                after: cn.map(describe_capabilities),
            });
        }
        if let Some(n) = new {
            if world_writable(n) && !old.is_some_and(world_writable) {
                out.world_writable.push(WorldWritable {
                    path: path.to_string(),
                    mode: mode4(n),
                    directory: matches!(n.kind, EntryKind::Directory { .. }),
                });
            }
        }
    }
    let (mut old_image, mut new_image) = (Image::new(store, a), Image::new(store, b));
    for unit in unit_names {
        let Some(after) = unit_text(&mut new_image, &unit)? else { continue };
        let before = unit_text(&mut old_image, &unit)?;
        if before.as_deref() == Some(after.as_str()) {
            continue;
        }
        out.units.push(UnitChange { unit: unit.clone(), change: if before.is_some() { "changed" } else { "added" } });
        if unit_type(&unit) == "socket" {
            let (lb, la) = (before.as_deref().map(listen_lines).unwrap_or_default(), listen_lines(&after));
            if lb != la {
                out.listening.push(ListenChange { unit, before: lb, after: la });
            }
        }
    }
    if let (Some(pa), Some(pb)) = (diff::installed_packages(store, a)?, diff::installed_packages(store, b)?) {
        out.downgrades = diff::package_changes(&pa, &pb).into_iter().filter(is_downgrade).collect();
    }
    Ok(out)
}

fn is_downgrade(p: &PackageChange) -> bool {
    let (Some(old), Some(new)) = (&p.old, &p.new) else { return false };
    match (old.parse::<debversion::Version>(), new.parse::<debversion::Version>()) {
        (Ok(o), Ok(n)) => n < o,
        _ => false,
    }
}

fn setid_bits(e: &Entry) -> u16 {
    match e.kind {
        EntryKind::Regular { .. } => e.mode & 0o6000,
        _ => 0,
    }
}

fn mode4(e: &Entry) -> String {
    format!("{:04o}", e.mode)
}

fn world_writable(e: &Entry) -> bool {
    match e.kind {
        EntryKind::Regular { .. } => e.mode & 0o002 != 0,
        EntryKind::Directory { .. } => e.mode & 0o002 != 0 && e.mode & 0o1000 == 0,
        _ => false,
    }
}

fn capability(e: &Entry) -> Option<&[u8]> {
    e.xattrs.iter().find(|x| x.name == CAPABILITY_XATTR).map(|x| x.value.as_slice())
}

/// Capability names by number (`linux/capability.h`).
const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// A `security.capability` value (`vfs_cap_data`, little-endian) as `getcap` shows it:
/// `cap_net_admin,cap_net_raw=ep`, inheritable ones as `cap_x+i`, a namespaced file's root id
/// as `[rootid=N]`. A value that does not parse is shown in hex.
pub fn describe_capabilities(value: &[u8]) -> String {
    let word = |i: usize| value.get(i * 4..i * 4 + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let hex = || format!("hex:{}", value.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let Some(magic) = word(0) else { return hex() };
    let (words, rootid) = match (magic & 0xff00_0000, value.len()) {
        (0x0100_0000, 12) => (1, None),
        (0x0200_0000, 20) => (2, None),
        (0x0300_0000, 24) => (2, word(5)),
        _ => return hex(),
    };
    let effective = magic & 1 != 0;
    let (mut permitted, mut inheritable) = (0u64, 0u64);
    for i in 0..words {
        permitted |= u64::from(word(1 + 2 * i).unwrap_or(0)) << (32 * i);
        inheritable |= u64::from(word(2 + 2 * i).unwrap_or(0)) << (32 * i);
    }
    let names = |set: u64| -> String {
        (0..64)
            .filter(|b| set & (1u64 << b) != 0)
            .map(|b| CAPABILITIES.get(b).map_or(format!("cap_{b}"), |n| format!("cap_{n}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut parts = Vec::new();
    if permitted != 0 {
        parts.push(format!("{}={}p", names(permitted), if effective { "e" } else { "" }));
    }
    if inheritable != 0 {
        parts.push(format!("{}+i", names(inheritable)));
    }
    if parts.is_empty() {
        parts.push("=".into());
    }
    if let Some(id) = rootid {
        parts.push(format!("[rootid={id}]"));
    }
    parts.join(" ")
}
