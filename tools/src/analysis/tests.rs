//! Tests of the analyses of a diff: each activation rule and each part of the security summary
//! on small trees imported into a temporary repository, with real programs and libraries copied
//! from the host for the ELF cases; and the pure helpers (unit paths, unit settings, ELF
//! headers, capability text).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use format::{Activation, ImageName, Manifest};

use super::activation::needs_reboot;
use super::security::describe_capabilities;
use super::units::{exec_start_programs, listen_lines, unit_of_path, UnitFile};
use super::*;
use crate::import::{import, ImportOptions};
use crate::Repo;

/// Directories a host keeps its libraries in, multiarch first.
const HOST_LIB_DIRS: [&str; 4] = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"];

fn host_lib(name: &str) -> PathBuf {
    HOST_LIB_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).unwrap_or_else(|| panic!("host lacks {name}"))
}

/// Copies the host file `host` into `tree` at the same path, recreating the symlinks on the way
/// to it (their targets as written); directories above it are made real directories, unless
/// `tree` already has them (as links of a merged /usr).
fn copy_from_host(tree: &Path, host: &Path) {
    let parent = host.parent().unwrap().canonicalize().unwrap();
    let host = parent.join(host.file_name().unwrap());
    let dest = tree.join(host.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let md = fs::symlink_metadata(&host).unwrap();
    if dest.symlink_metadata().is_ok() {
        return;
    }
    if md.file_type().is_symlink() {
        let target = fs::read_link(&host).unwrap();
        symlink(&target, &dest).unwrap();
        copy_from_host(tree, &parent.join(target));
    } else {
        fs::copy(&host, &dest).unwrap();
    }
}

fn write(tree: &Path, path: &str, text: &str) {
    let p = tree.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    // Replace rather than write through: the file may be a link into another tree.
    let _ = fs::remove_file(&p);
    fs::write(p, text).unwrap();
}

/// Rewrites a file with one more byte at the end (a new content, a new size).
fn alter(tree: &Path, path: &str) {
    let p = tree.join(path);
    let mut bytes = fs::read(&p).unwrap();
    bytes.push(0);
    fs::remove_file(&p).unwrap();
    fs::write(&p, bytes).unwrap();
}

const STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n\
Package: less\nStatus: install ok installed\nVersion: 590-2\n";

/// A merged-/usr Debian-like tree: `ls` (libselinux → libpcre2 → libc) run by `probe.service`
/// through the `bin` link, `true` (libc only) run by `other.service`, a shell script run by
/// `scripted.service`, a masked service that runs `ls`, a template, a timer, a socket and a
/// target; a dpkg status file.
fn base_tree(tree: &Path) {
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        fs::create_dir_all(tree.join(target)).unwrap();
        symlink(target, tree.join(link)).unwrap();
    }
    for program in ["/usr/bin/ls", "/usr/bin/true", "/usr/bin/dash", "/usr/bin/sh"] {
        copy_from_host(tree, Path::new(program));
    }
    for lib in ["libc.so.6", "libselinux.so.1", "libpcre2-8.so.0"] {
        copy_from_host(tree, &host_lib(lib));
    }
    let ls = fs::read("/usr/bin/ls").unwrap();
    let interp =
        parse_elf(&mut |o, l| Ok(ls.get(o as usize..).unwrap_or(&[]).iter().take(l).copied().collect())).unwrap().unwrap().interp.unwrap();
    copy_from_host(tree, Path::new(&interp));
    write(tree, "usr/sbin/scripted", "#!/bin/sh\nexec sleep infinity\n");
    write(tree, "etc/systemd/system/probe.service", "[Unit]\nDescription=probe\n\n[Service]\nExecStart=/bin/ls -l /\n");
    write(tree, "usr/lib/systemd/system/other.service", "[Service]\nType=oneshot\nExecStart=-true\n");
    write(tree, "usr/lib/systemd/system/scripted.service", "[Service]\nExecStart=/usr/sbin/scripted\n");
    write(tree, "usr/lib/systemd/system/masked.service", "[Service]\nExecStart=/usr/bin/ls\n");
    symlink("/dev/null", tree.join("etc/systemd/system/masked.service")).unwrap();
    write(tree, "usr/lib/systemd/system/getty@.service", "[Service]\nExecStart=/usr/bin/true %I\n");
    write(tree, "usr/lib/systemd/system/tick.timer", "[Timer]\nOnCalendar=daily\n");
    write(tree, "usr/lib/systemd/system/web.socket", "[Socket]\nListenStream=80\n");
    write(tree, "usr/lib/systemd/system/multi-user.target", "[Unit]\nDescription=multi\n");
    fs::create_dir_all(tree.join("usr/lib/systemd/system/multi-user.target.wants")).unwrap();
    symlink("../probe.service", tree.join("usr/lib/systemd/system/multi-user.target.wants/probe.service")).unwrap();
    write(tree, "var/lib/dpkg/status", STATUS);
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("usr/share/doc")).unwrap();
}

/// A temporary repository holding the base tree as its first generation.
struct Fixture {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    repo: Repo,
    base: Manifest,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        base_tree(&tree);
        let repo = Repo::open(&dir.path().join("store")).unwrap();
        let base = import_tree(&repo, &tree);
        Fixture { _dir: dir, tree, repo, base }
    }

    /// Applies `edit` to the tree and imports it as the next generation.
    fn next(&self, edit: impl FnOnce(&Path)) -> Manifest {
        edit(&self.tree);
        import_tree(&self.repo, &self.tree)
    }
}

fn import_tree(repo: &Repo, tree: &Path) -> Manifest {
    let opts = ImportOptions {
        image: ImageName::new("t").unwrap(),
        message: String::new(),
        chunking: None,
        level: Some(1),
        created: 0,
        change: None,
        progress: None,
    };
    import(repo, tree, &opts).unwrap().generation.manifest
}

/// The activation from the base to the base after `edit`, as `live`, `reboot` or
/// `restart:UNITS`, and its reasons.
fn check_activation(edit: impl FnOnce(&Path), expect: &str, why: &[&str]) {
    let f = Fixture::new();
    let new = f.next(edit);
    let (activation, reasons) = derive_activation(&f.repo.store, &f.base, &new).unwrap();
    assert_eq!(activation.to_arg(), expect, "reasons: {reasons:#?}");
    assert_eq!(reasons, why);
}

#[test]
fn a_documentation_file_is_live() {
    check_activation(|t| write(t, "usr/share/doc/x/README", "hello"), "live", &[]);
}

#[test]
fn a_kernel_is_a_reboot() {
    check_activation(|t| write(t, "boot/vmlinuz-6.1.0-test", "kernel"), "reboot", &["boot/vmlinuz-6.1.0-test added"]);
}

#[test]
fn new_modules_are_one_reboot_reason_for_the_whole_tree() {
    check_activation(
        |t| {
            write(t, "usr/lib/modules/6.1.0-test/kernel/a.ko", "a");
            write(t, "usr/lib/modules/6.1.0-test/kernel/b.ko", "b");
        },
        "reboot",
        &["usr/lib/modules added"],
    );
}

#[test]
fn firmware_through_the_merged_usr_link_is_a_reboot() {
    check_activation(|t| write(t, "lib/firmware/x.bin", "fw"), "reboot", &["usr/lib/firmware added"]);
}

#[test]
fn a_reboot_wins_over_restarts() {
    check_activation(
        |t| {
            write(t, "initrd.img", "i");
            alter(t, "usr/bin/ls");
        },
        "reboot",
        &["initrd.img added"],
    );
}

#[test]
fn a_changed_program_restarts_the_service_that_runs_it() {
    check_activation(|t| alter(t, "usr/bin/ls"), "restart:probe.service", &["usr/bin/ls changed: probe.service runs it"]);
}

#[test]
fn a_changed_library_restarts_the_services_that_load_it_transitively() {
    let lib = host_lib("libpcre2-8.so.0").canonicalize().unwrap();
    let rel = lib.strip_prefix("/").unwrap().to_str().unwrap().to_string();
    check_activation(
        |t| alter(t, &rel),
        "restart:probe.service",
        &[format!("{rel} changed: probe.service loads it (needed by {})", {
            let selinux = host_lib("libselinux.so.1").canonicalize().unwrap();
            selinux.strip_prefix("/").unwrap().to_str().unwrap().to_string()
        })
        .as_str()],
    );
}

#[test]
fn libc_restarts_every_service_but_masked_ones_and_templates_by_pattern() {
    let libc = host_lib("libc.so.6").canonicalize().unwrap();
    let rel = libc.strip_prefix("/").unwrap().to_str().unwrap().to_string();
    let f = Fixture::new();
    let new = f.next(|t| alter(t, &rel));
    let (activation, why) = derive_activation(&f.repo.store, &f.base, &new).unwrap();
    assert_eq!(activation.to_arg(), "restart:getty@*.service,other.service,probe.service,scripted.service", "{why:#?}");
    assert!(
        why.iter()
            .any(|w| w.contains("scripted.service runs it as the interpreter of usr/sbin/scripted")
                || w.contains("scripted.service loads it")),
        "{why:#?}"
    );
}

#[test]
fn a_script_restarts_with_its_interpreter() {
    check_activation(
        |t| alter(t, "usr/bin/dash"),
        "restart:scripted.service",
        &["usr/bin/dash changed: scripted.service runs it as the interpreter of usr/sbin/scripted"],
    );
}

#[test]
fn unit_files_and_drop_ins_restart_their_unit() {
    check_activation(
        |t| {
            write(t, "etc/systemd/system/other.service.d/override.conf", "[Service]\nNice=5\n");
            write(t, "usr/lib/systemd/system/tick.timer", "[Timer]\nOnCalendar=hourly\n");
            write(t, "usr/lib/systemd/system/multi-user.target", "[Unit]\nDescription=changed\n");
            fs::remove_file(t.join("usr/lib/systemd/system/multi-user.target.wants/probe.service")).unwrap();
        },
        "restart:other.service,tick.timer",
        &[
            "etc/systemd/system/other.service.d/override.conf added: a drop-in of other.service",
            "usr/lib/systemd/system/tick.timer changed: the unit file of tick.timer",
        ],
    );
}

#[test]
fn a_touch_alone_is_live() {
    check_activation(
        |t| {
            let p = t.join("usr/bin/ls");
            let f = fs::File::options().write(true).open(p).unwrap();
            f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
        },
        "live",
        &[],
    );
}

#[test]
fn security_summary_reports_each_kind_of_change() {
    let f = Fixture::new();
    let new = f.next(|t| {
        fs::set_permissions(t.join("usr/bin/ls"), fs::Permissions::from_mode(0o4755)).unwrap();
        // cap_net_raw, effective and permitted (vfs_cap_data revision 2).
        let mut cap = Vec::new();
        for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
            cap.extend_from_slice(&w.to_le_bytes());
        }
        xattr::set(t.join("usr/bin/true"), "security.capability", &cap).unwrap();
        write(t, "etc/open", "x");
        fs::set_permissions(t.join("etc/open"), fs::Permissions::from_mode(0o666)).unwrap();
        fs::create_dir_all(t.join("srv/drop")).unwrap();
        fs::set_permissions(t.join("srv/drop"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::create_dir_all(t.join("srv/tmp")).unwrap();
        fs::set_permissions(t.join("srv/tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        write(t, "usr/lib/systemd/system/web.socket", "[Socket]\nListenStream=80\nListenStream=0.0.0.0:8080\n");
        write(t, "usr/lib/systemd/system/new.service", "[Service]\nExecStart=/usr/bin/true\n");
        write(t, "var/lib/dpkg/status", &STATUS.replace("2.36-9", "2.36-8").replace("590-2", "590-3"));
    });
    let s = security_summary(&f.repo.store, &f.base, &new).unwrap();
    assert_eq!(s.setid, [SetidChange { path: "usr/bin/ls".into(), before: Some("0755".into()), after: Some("4755".into()) }]);
    assert_eq!(s.capabilities, [CapabilityChange { path: "usr/bin/true".into(), before: None, after: Some("cap_net_raw=ep".into()) }]);
    assert_eq!(
        s.world_writable,
        [
            WorldWritable { path: "etc/open".into(), mode: "0666".into(), directory: false },
            WorldWritable { path: "srv/drop".into(), mode: "0777".into(), directory: true },
        ]
    );
    assert_eq!(
        s.units,
        [UnitChange { unit: "new.service".into(), change: "added" }, UnitChange { unit: "web.socket".into(), change: "changed" }]
    );
    assert_eq!(
        s.listening,
        [ListenChange {
            unit: "web.socket".into(),
            before: vec!["ListenStream=80".into()],
            after: vec!["ListenStream=0.0.0.0:8080".into(), "ListenStream=80".into()]
        }]
    );
    assert_eq!(s.downgrades.len(), 1);
    assert_eq!((s.downgrades[0].package.as_str(), s.downgrades[0].new.as_deref()), ("libc6", Some("2.36-8")));
    assert!(!s.is_empty());

    let same = security_summary(&f.repo.store, &new, &new).unwrap();
    assert!(same.is_empty(), "{same:?}");
}

#[test]
fn elf_headers_of_a_host_program_name_its_loader_and_libraries() {
    let ls = fs::read("/usr/bin/ls").unwrap();
    let mut read =
        |o: u64, l: usize| -> Result<Vec<u8>, ReadError> { Ok(ls.get(o as usize..).unwrap_or(&[]).iter().take(l).copied().collect()) };
    let info = parse_elf(&mut read).unwrap().unwrap();
    assert!(info.interp.as_deref().is_some_and(|i| i.contains("ld-linux")), "{info:?}");
    assert!(info.needed.iter().any(|n| n == "libc.so.6") && info.needed.iter().any(|n| n == "libselinux.so.1"), "{info:?}");
    for junk in [&b"#!/bin/sh\n"[..], b"\x7fELF", b"\x7fELF\x02\x01\x01", &ls[..200]] {
        let mut read = |o: u64, l: usize| -> Result<Vec<u8>, ReadError> {
            Ok(junk.get(o as usize..).unwrap_or(&[]).iter().take(l).copied().collect())
        };
        let parsed = parse_elf(&mut read).unwrap();
        assert!(parsed.as_ref().is_none_or(|i| i.needed.is_empty()), "{parsed:?}");
    }
}

#[test]
fn paths_and_unit_settings_are_read_as_systemd_reads_them() {
    let unit = |p: &str| unit_of_path(p).map(|u: UnitFile| (u.unit, u.dropin));
    assert_eq!(unit("etc/systemd/system/cron.service"), Some(("cron.service".into(), false)));
    assert_eq!(unit("usr/lib/systemd/system/ssh.service.d/x.conf"), Some(("ssh.service".into(), true)));
    assert_eq!(unit("lib/systemd/system/getty@.service"), Some(("getty@.service".into(), false)));
    assert_eq!(unit("etc/systemd/system/multi-user.target.wants/cron.service"), None);
    assert_eq!(unit("etc/systemd/system/service.d/x.conf"), None);
    assert_eq!(unit("etc/systemd/systemd.conf"), None);
    assert_eq!(unit("usr/lib/systemd/user/x.service"), None);

    for (path, reboot) in [
        ("boot/System.map-6.1.0", true),
        ("boot", true),
        ("vmlinuz.old", true),
        ("usr/lib/modules/6.1.0/modules.dep", true),
        ("usr/lib/grub/x86_64-efi/normal.mod", true),
        ("etc/modprobe.d/blacklist.conf", true),
        ("usr/lib/x86_64-linux-gnu/libc.so.6", false),
        ("bootstrap", false),
        ("usr/share/doc/vmlinuz", false),
    ] {
        assert_eq!(needs_reboot(path), reboot, "{path}");
    }

    let text = "[Service]\nExecStartPre=/bin/pre\nExecStart=-@/usr/sbin/a arg \\\n  more\nExecStart=\"/opt/with space/b\" x\n\
# ExecStart=/commented\n[Install]\nExecStart=/not/a/service/setting\n[Service]\nExecStart=\nExecStart=+/usr/bin/c\nExecStart=/usr/bin/c again\n";
    assert_eq!(exec_start_programs(text), ["/usr/bin/c"]);
    assert_eq!(
        exec_start_programs("[Service]\nExecStart=-@/usr/sbin/a arg\nExecStart=\"/opt/with space/b\" x\n"),
        ["/usr/sbin/a", "/opt/with space/b"]
    );
    assert_eq!(
        listen_lines("[Socket]\nListenStream=22\nListenDatagram=514\n[Socket]\nListenStream=\nListenStream=[::]:22\n"),
        ["ListenStream=[::]:22"]
    );

    assert_eq!(describe_capabilities(&[1, 0, 0, 1, 0, 0x30, 0, 0, 0, 0, 0, 0]), "cap_net_admin,cap_net_raw=ep");
    assert_eq!(describe_capabilities(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 0]), "cap_net_bind_service+i");
    assert_eq!(describe_capabilities(b"junk"), "hex:6a756e6b");
}

#[test]
fn activation_parses_back_from_its_argument_form() {
    let f = Fixture::new();
    let new = f.next(|t| alter(t, "usr/bin/true"));
    let (a, _) = derive_activation(&f.repo.store, &f.base, &new).unwrap();
    assert_eq!(Activation::parse(&a.to_arg()).unwrap(), a);
}
