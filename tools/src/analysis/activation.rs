//! The activation policy a diff calls for: reboot when what the kernel or the boot loader reads
//! at boot changed, restart the systemd units whose files, programs or loaded libraries changed,
//! else live. The rules are listed in `docs/patching.md`.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use cache::Store;
use format::{Activation, Entry, EntryKind, Manifest};

use super::elf::{parse_elf, ElfInfo};
use super::units::{all_units, exec_start_programs, restart_name, restartable, unit_of_path, unit_text, unit_type};
use super::{Changed, Image, RangeReader};
use crate::browse::ReadError;

/// Reasons kept in full; more are summed up in one last line (the change record keeps a list).
const MAX_WHY: usize = 64;

/// Trees that only the kernel, the boot loader or early boot read: a change there takes effect
/// at the next boot and not before.
const BOOT_TREES: [&str; 15] = [
    // Kernels, initramfs images, System.map, config, the boot loader's files, the ESP.
    "boot",
    // Kernel modules (the running kernel may load one at any time: it must match the kernel).
    "lib/modules",
    "usr/lib/modules",
    // Firmware, loaded by drivers when a device is probed (at boot).
    "lib/firmware",
    "usr/lib/firmware",
    // Module options and lists, read when modules are loaded at boot.
    "etc/modprobe.d",
    "lib/modprobe.d",
    "usr/lib/modprobe.d",
    "etc/modules",
    "etc/modules-load.d",
    "lib/modules-load.d",
    "usr/lib/modules-load.d",
    // Boot loaders' platform files and EFI binaries (GRUB, shim, systemd-boot).
    "usr/lib/grub",
    "usr/lib/shim",
    "usr/lib/systemd/boot",
];

/// Names at the image's root that are kernels or initramfs images (Debian's `vmlinuz`,
/// `initrd.img` and their `.old` links).
const ROOT_BOOT_PREFIXES: [&str; 2] = ["vmlinuz", "initrd.img"];

/// Directories a bare `ExecStart=` program name is looked up in, as systemd does.
const EXEC_SEARCH: [&str; 6] = ["usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"];

/// Whether a change to `path` needs a reboot.
pub fn needs_reboot(path: &str) -> bool {
    let under = |tree: &str| path == tree || path.strip_prefix(tree).is_some_and(|r| r.starts_with('/'));
    BOOT_TREES.iter().any(|t| under(t)) || (!path.contains('/') && ROOT_BOOT_PREFIXES.iter().any(|p| path.starts_with(p)))
}

/// What an endpoint must do to activate `new` when it comes from `parent`, and why: one line
/// per path that decided it. A reboot wins over restarts (and then only its reasons are
/// given); changes of mtime or link count alone decide nothing.
pub fn derive_activation(store: &Store, parent: &Manifest, new: &Manifest) -> Result<(Activation, Vec<String>), ReadError> {
    let changes = super::changes(store, parent, new)?;
    let mut why = Why::default();
    // An added or removed directory stands for everything below it.
    let mut covered: Option<&str> = None;
    for c in &changes {
        if covered.is_some_and(|d| c.path.strip_prefix(d).is_some_and(|r| r.starts_with('/'))) {
            continue;
        }
        if needs_reboot(&c.path) {
            why.push(format!("{} {}", c.path, c.verb));
            if c.verb != "changed" && is_dir(c) {
                covered = Some(&c.path);
            }
        }
    }
    if !why.lines.is_empty() {
        return Ok((Activation::Reboot, why.finish()));
    }

    let mut units = Vec::new();
    for c in &changes {
        let Some(u) = unit_of_path(&c.path) else { continue };
        if restartable(&u.unit) {
            units.push(restart_name(&u.unit));
            let what = if u.dropin { "a drop-in" } else { "the unit file" };
            why.push(format!("{} {}: {what} of {}", c.path, c.verb, u.unit));
        }
    }

    // Programs and libraries only matter if a file (not just a directory) changed.
    if changes.iter().any(|c| !is_dir(c)) {
        let mut changed: HashMap<&str, &str> = HashMap::new();
        for c in &changes {
            // A type change is a removal and an addition of the same path: a change.
            changed.entry(c.path.as_str()).and_modify(|v| *v = "changed").or_insert(c.verb);
        }
        let mut image = Image::new(store, new);
        let mut deps = Deps::default();
        // One reason per changed path and unit, the first way the unit reaches it.
        let mut explained: HashSet<(String, String)> = HashSet::new();
        for unit in all_units(&mut image)? {
            if unit_type(&unit) != "service" {
                continue;
            }
            let Some(text) = unit_text(&mut image, &unit)? else { continue };
            for program in exec_start_programs(&text) {
                for dep in deps.of_program(&mut image, &program)?.iter() {
                    for p in std::iter::once(&dep.path).chain(&dep.via) {
                        let Some(verb) = changed.get(p.as_str()) else { continue };
                        if !explained.insert((p.clone(), unit.clone())) {
                            continue;
                        }
                        units.push(restart_name(&unit));
                        why.push(match &dep.role {
                            Role::Program => format!("{p} {verb}: {unit} runs it"),
                            Role::Interpreter(script) => format!("{p} {verb}: {unit} runs it as the interpreter of {script}"),
                            Role::Library(by) => format!("{p} {verb}: {unit} loads it (needed by {by})"),
                        });
                    }
                }
            }
        }
    }
    Ok((Activation::restart(units), why.finish()))
}

fn is_dir(c: &Changed) -> bool {
    c.new.as_ref().or(c.old.as_ref()).is_some_and(|e| matches!(e.kind, EntryKind::Directory { .. }))
}

/// The reasons, without repeats, in the order found.
#[derive(Default)]
struct Why {
    lines: Vec<String>,
    seen: HashSet<String>,
}

impl Why {
    fn push(&mut self, line: String) {
        if self.seen.insert(line.clone()) {
            self.lines.push(line);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.lines.len() > MAX_WHY {
            let more = self.lines.len() - (MAX_WHY - 1);
            self.lines.truncate(MAX_WHY - 1);
            self.lines.push(format!("and {more} more"));
        }
        self.lines
    }
}

/// A file a unit's program depends on while it runs.
#[derive(Debug, Clone)]
struct Dep {
    /// Its real path in the image.
    path: String,
    /// The symlinks followed to reach it.
    via: Vec<String>,
    role: Role,
}

#[derive(Debug, Clone)]
enum Role {
    /// The program itself.
    Program,
    /// The interpreter of this script (`#!`).
    Interpreter(String),
    /// A shared library or the dynamic loader, needed by this file.
    Library(String),
}

/// The dependencies of programs, worked out once per program and per file.
#[derive(Default)]
struct Deps {
    programs: HashMap<String, Rc<Vec<Dep>>>,
    elves: HashMap<String, Option<Rc<ElfInfo>>>,
    ld_conf: Option<Vec<String>>,
}

impl Deps {
    /// The program `ExecStart=` names, its interpreter if it is a script, and every library
    /// either loads, transitively, as the image's dynamic loader would find them.
    fn of_program(&mut self, image: &mut Image<'_>, program: &str) -> Result<Rc<Vec<Dep>>, ReadError> {
        if let Some(d) = self.programs.get(program) {
            return Ok(d.clone());
        }
        let mut out = Vec::new();
        if let Some((r, entry)) = find_program(image, program)? {
            let head = RangeReader::new(image.store(), &entry).map(|mut rr| rr.read(0, 256)).transpose()?.unwrap_or_default();
            out.push(Dep { path: r.path.clone(), via: r.via, role: Role::Program });
            if let Some(interpreter) = shebang(&head) {
                if let Some((i, ientry)) = find_program(image, &interpreter)? {
                    out.push(Dep { path: i.path.clone(), via: i.via, role: Role::Interpreter(r.path.clone()) });
                    self.libraries(image, &i.path, &ientry, &mut out)?;
                }
            } else {
                self.libraries(image, &r.path, &entry, &mut out)?;
            }
        }
        let out = Rc::new(out);
        self.programs.insert(program.to_string(), out.clone());
        Ok(out)
    }

    /// Adds the dynamic loader and the libraries `path` needs, breadth first.
    fn libraries(&mut self, image: &mut Image<'_>, path: &str, entry: &Entry, out: &mut Vec<Dep>) -> Result<(), ReadError> {
        let mut seen: HashSet<String> = HashSet::from([path.to_string()]);
        let mut queue = std::collections::VecDeque::from([(path.to_string(), entry.clone())]);
        while let Some((object, entry)) = queue.pop_front() {
            let Some(info) = self.elf(image, &object, &entry)? else { continue };
            if let Some(interp) = &info.interp {
                if let Some((r, e)) = regular(image, interp)? {
                    if seen.insert(r.path.clone()) {
                        out.push(Dep { path: r.path.clone(), via: r.via, role: Role::Library(object.clone()) });
                        queue.push_back((r.path, e));
                    }
                }
            }
            for name in &info.needed {
                let Some((r, e)) = self.find_library(image, &object, &info, name)? else { continue };
                if seen.insert(r.path.clone()) {
                    out.push(Dep { path: r.path.clone(), via: r.via.clone(), role: Role::Library(object.clone()) });
                    queue.push_back((r.path, e));
                } else if !r.via.is_empty() {
                    // The same library reached through other links: those links count too.
                    out.push(Dep { path: r.path, via: r.via, role: Role::Library(object.clone()) });
                }
            }
        }
        Ok(())
    }

    fn elf(&mut self, image: &mut Image<'_>, path: &str, entry: &Entry) -> Result<Option<Rc<ElfInfo>>, ReadError> {
        if let Some(i) = self.elves.get(path) {
            return Ok(i.clone());
        }
        let info = match RangeReader::new(image.store(), entry) {
            Some(mut rr) => parse_elf(&mut |offset, len| rr.read(offset, len))?.map(Rc::new),
            None => None,
        };
        self.elves.insert(path.to_string(), info.clone());
        Ok(info)
    }

    /// Where the dynamic loader finds `name` for `object`: its `DT_RPATH` (when it has no
    /// `DT_RUNPATH`), its `DT_RUNPATH`, the directories of `etc/ld.so.conf`, then the default
    /// directories (multiarch first). A candidate of another class or machine is passed over.
    fn find_library(
        &mut self,
        image: &mut Image<'_>,
        object: &str,
        info: &ElfInfo,
        name: &str,
    ) -> Result<Option<(super::Resolved, Entry)>, ReadError> {
        if name.contains('/') {
            return regular(image, name);
        }
        let origin = object.rsplit_once('/').map_or("", |(d, _)| d);
        let mut dirs: Vec<String> = Vec::new();
        let own = if info.runpath.is_empty() { &info.rpath } else { &info.runpath };
        dirs.extend(own.iter().map(|d| d.replace("${ORIGIN}", &format!("/{origin}")).replace("$ORIGIN", &format!("/{origin}"))));
        dirs.extend(self.ld_conf(image)?.iter().cloned());
        if let Some(triplet) = info.multiarch() {
            dirs.push(format!("lib/{triplet}"));
            dirs.push(format!("usr/lib/{triplet}"));
        }
        dirs.extend(["lib".to_string(), "usr/lib".to_string()]);
        for dir in dirs {
            let Some((r, e)) = regular(image, &format!("{dir}/{name}"))? else { continue };
            match self.elf(image, &r.path, &e)? {
                Some(lib) if lib.class64 == info.class64 && lib.machine == info.machine => return Ok(Some((r, e))),
                _ => continue,
            }
        }
        Ok(None)
    }

    /// The library directories `etc/ld.so.conf` names, following its `include` lines one level
    /// deep (a `*` in the last component only, as Debian's `include /etc/ld.so.conf.d/*.conf`).
    fn ld_conf(&mut self, image: &mut Image<'_>) -> Result<&[String], ReadError> {
        if self.ld_conf.is_none() {
            let mut dirs = Vec::new();
            let top = image.read("etc/ld.so.conf")?.unwrap_or_default();
            for line in String::from_utf8_lossy(&top).lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
                    let (dir, glob) = pattern.rsplit_once('/').unwrap_or(("", pattern));
                    let (prefix, suffix) = glob.split_once('*').unwrap_or((glob, ""));
                    let Some((_, tree)) = image.list(dir)? else { continue };
                    for e in &tree.entries {
                        let n = crate::browse::display_bytes(&e.name);
                        if n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= prefix.len() + suffix.len() {
                            let text = image.read(&format!("{dir}/{n}"))?.unwrap_or_default();
                            for l in String::from_utf8_lossy(&text).lines() {
                                let l = l.split('#').next().unwrap_or("").trim();
                                if l.starts_with('/') {
                                    dirs.push(l.to_string());
                                }
                            }
                        }
                    }
                } else if line.starts_with('/') {
                    dirs.push(line.to_string());
                }
            }
            self.ld_conf = Some(dirs);
        }
        Ok(self.ld_conf.as_deref().unwrap_or(&[]))
    }
}

/// The regular file a path names in the image, symlinks followed.
fn regular(image: &mut Image<'_>, path: &str) -> Result<Option<(super::Resolved, Entry)>, ReadError> {
    Ok(match image.resolve(path, true)? {
        Some(r) => match r.entry.clone() {
            Some(e) if matches!(e.kind, EntryKind::Regular { .. }) => Some((r, e)),
            _ => None,
        },
        None => None,
    })
}

/// The program an `ExecStart=` or `#!` line names: a path, or a bare name looked up in the
/// directories systemd searches.
fn find_program(image: &mut Image<'_>, program: &str) -> Result<Option<(super::Resolved, Entry)>, ReadError> {
    if program.contains('/') {
        return regular(image, program);
    }
    for dir in EXEC_SEARCH {
        if let Some(found) = regular(image, &format!("{dir}/{program}"))? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The interpreter a script's `#!` line names (for `/usr/bin/env NAME`, NAME).
fn shebang(head: &[u8]) -> Option<String> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interpreter = words.next()?;
    if interpreter.rsplit('/').next() == Some("env") {
        return words.find(|w| !w.starts_with('-') && !w.contains('=')).map(String::from);
    }
    Some(interpreter.to_string())
}
