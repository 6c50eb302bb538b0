//! systemd units inside an image: which paths are unit files, the effective text of a unit (its
//! file and drop-ins, in systemd's order of precedence), and the settings the analyses read.

use std::collections::BTreeSet;

use format::{Entry, EntryKind};

use super::Image;
use crate::browse::{display_bytes, ReadError};

/// The system unit directories an image carries, highest precedence first (`run/` is the
/// endpoint's tmpfs, never the image's).
pub const UNIT_DIRS: [&str; 4] = ["etc/systemd/system", "usr/local/lib/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"];

/// Unit types that are a running thing an endpoint can restart. Targets and slices only group
/// other units; devices and scopes are not made from files.
const RESTARTABLE: [&str; 7] = ["service", "socket", "timer", "path", "mount", "automount", "swap"];

/// Every unit type suffix systemd knows.
const UNIT_TYPES: [&str; 11] = ["service", "socket", "timer", "path", "mount", "automount", "swap", "target", "slice", "scope", "device"];

/// What a path in a unit directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// The unit's name (`cron.service`, `getty@.service`).
    pub unit: String,
    /// A drop-in (`NAME.d/*.conf`) rather than the unit file itself.
    pub dropin: bool,
}

/// The unit a path belongs to, when it is a unit file (`DIR/NAME`) or a drop-in
/// (`DIR/NAME.d/FILE.conf`) directly in one of the unit directories. Enablement links
/// (`*.wants/`, `*.requires/`) and type-wide drop-ins (`service.d/`) are not a unit's files.
pub fn unit_of_path(path: &str) -> Option<UnitFile> {
    let rest = UNIT_DIRS.iter().find_map(|d| path.strip_prefix(d)?.strip_prefix('/'))?;
    match rest.split('/').collect::<Vec<_>>()[..] {
        [name] if is_unit_name(name) => Some(UnitFile { unit: name.to_string(), dropin: false }),
        [dir, file] if file.ends_with(".conf") => {
            let name = dir.strip_suffix(".d")?;
            is_unit_name(name).then(|| UnitFile { unit: name.to_string(), dropin: true })
        }
        _ => None,
    }
}

/// `NAME.TYPE` with a known type and a non-empty name.
pub fn is_unit_name(name: &str) -> bool {
    match name.rsplit_once('.') {
        Some((stem, ty)) => !stem.is_empty() && !stem.ends_with('-') && UNIT_TYPES.contains(&ty),
        None => false,
    }
}

/// The unit's type (`service`).
pub fn unit_type(unit: &str) -> &str {
    unit.rsplit_once('.').map_or("", |(_, t)| t)
}

/// Whether restarting the unit means anything (see `RESTARTABLE`).
pub fn restartable(unit: &str) -> bool {
    RESTARTABLE.contains(&unit_type(unit))
}

/// The name to restart: a template (`getty@.service`) becomes the pattern of its instances
/// (`getty@*.service`), which `systemctl restart` matches against the loaded units.
pub fn restart_name(unit: &str) -> String {
    match unit.split_once("@.") {
        Some((stem, ty)) => format!("{stem}@*.{ty}"),
        None => unit.to_string(),
    }
}

/// Every unit with a file in the image's unit directories, aliases left out (a symlink whose
/// target has another unit name: the unit is listed under its own name).
pub(crate) fn all_units(image: &mut Image<'_>) -> Result<BTreeSet<String>, ReadError> {
    let mut seen_dirs = BTreeSet::new();
    let mut out = BTreeSet::new();
    for dir in UNIT_DIRS {
        // With a merged /usr, lib/systemd/system is usr/lib/systemd/system.
        let Some((real, tree)) = image.list(dir)? else { continue };
        if !seen_dirs.insert(real) {
            continue;
        }
        for e in &tree.entries {
            let name = display_bytes(&e.name);
            if !is_unit_name(&name) {
                continue;
            }
            if let EntryKind::Symlink { target } = &e.kind {
                let target = display_bytes(target);
                let base = target.rsplit('/').next().unwrap_or("");
                if base != name && is_unit_name(base) {
                    continue;
                }
            }
            out.insert(name);
        }
    }
    Ok(out)
}

/// The unit's effective text: its file from the unit directory of highest precedence that has
/// it, then its drop-ins (`NAME.d/*.conf` of every directory; a name in a directory of higher
/// precedence hides the same name below) in file-name order. None when the unit has no file
/// or is masked (linked to `/dev/null`).
pub(crate) fn unit_text(image: &mut Image<'_>, unit: &str) -> Result<Option<String>, ReadError> {
    let mut main = None;
    for dir in UNIT_DIRS {
        let path = format!("{dir}/{unit}");
        let Some(r) = image.resolve(&path, false)? else { continue };
        if let Some(Entry { kind: EntryKind::Symlink { target }, .. }) = &r.entry {
            if target.as_slice() == b"/dev/null" {
                return Ok(None);
            }
        }
        if let Some(bytes) = image.read(&path)? {
            main = Some(bytes);
            break;
        }
    }
    let Some(main) = main else { return Ok(None) };
    let mut dropins = std::collections::BTreeMap::new();
    for dir in UNIT_DIRS.iter().rev() {
        let Some((real, tree)) = image.list(&format!("{dir}/{unit}.d"))? else { continue };
        for e in &tree.entries {
            let name = display_bytes(&e.name);
            if name.ends_with(".conf") {
                dropins.insert(name.clone(), format!("{real}/{name}"));
            }
        }
    }
    let mut text = String::from_utf8_lossy(&main).into_owned();
    for path in dropins.values() {
        if let Some(bytes) = image.read(path)? {
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    Ok(Some(text))
}

/// The `KEY=VALUE` settings of `section` in a unit's text, in order, with continued lines
/// joined and comments left out.
pub fn settings(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut line = line.trim().to_string();
        while line.ends_with('\\') {
            line.pop();
            line.push(' ');
            match lines.next() {
                Some(next) => line.push_str(next.trim()),
                None => break,
            }
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            current = line[1..line.len() - 1].to_string();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The programs a service's `ExecStart=` lines run (an empty assignment resets the list, as
/// in a drop-in that replaces the command). Prefixes (`-@:+!`) are dropped; the program is the
/// first word, unquoted.
pub fn exec_start_programs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in settings(text, "Service") {
        if k != "ExecStart" {
            continue;
        }
        if v.is_empty() {
            out.clear();
            continue;
        }
        let v = v.trim_start_matches(['-', '@', ':', '+', '!']);
        let first = match v.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or(""),
            None => v.split_whitespace().next().unwrap_or(""),
        };
        if !first.is_empty() && !out.iter().any(|p| p == first) {
            out.push(first.to_string());
        }
    }
    out
}

/// A socket unit's listening addresses (`ListenStream=`, `ListenDatagram=`,
/// `ListenSequentialPacket=`), each as `KEY=VALUE`, sorted; an empty assignment resets them.
pub fn listen_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in settings(text, "Socket") {
        if !matches!(k.as_str(), "ListenStream" | "ListenDatagram" | "ListenSequentialPacket") {
            continue;
        }
        if v.is_empty() {
            out.clear();
        } else {
            out.push(format!("{k}={v}"));
        }
    }
    out.sort();
    out.dedup();
    out
}
