//! Unit tests of the pure helpers behind imgctl: archive path safety, PAX records, dpkg status
//! parsing, and the text shown by ls.

use std::path::Path;

use crate::browse::{display_bytes, mode_string, split_path, utc_string};
use crate::diff::{package_changes, parse_dpkg_status, PackageChange};
use crate::tar_scan::{components, parse_pax, Pending};

fn check_components(raw: &str, expect: Result<&[&str], &str>) {
    match (components(raw.as_bytes(), Path::new("a.tar")), expect) {
        (Ok(parts), Ok(want)) => assert_eq!(parts, want.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>(), "{raw}"),
        (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{raw}: {e}"),
        (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn archive_paths_are_normalised_or_refused() {
    check_components("./usr/bin/env", Ok(&["usr", "bin", "env"]));
    check_components("usr//lib/./x", Ok(&["usr", "lib", "x"]));
    check_components("./", Ok(&[]));
    check_components("../etc/passwd", Err("'..'"));
    check_components("a/b/../../..", Err("'..'"));
    check_components("/etc/passwd", Err("absolute"));
}

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        // The length counts itself, so find the fixed point.
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[test]
fn pax_values_may_hold_newlines_and_binary() {
    let acl = b"user::rwx\nuser:1000:r--\ngroup::r-x\n";
    let cap = [1u8, 0, 0, 2, 0x0a, 0, 0, 0];
    let data = pax(&[
        ("path", b"long/name"),
        ("mtime", b"1700000000.5"),
        ("SCHILY.xattr.system.posix_acl_access", acl),
        ("SCHILY.xattr.security.capability", &cap),
    ]);
    let mut p = Pending::default();
    parse_pax(&data, &mut p).unwrap();
    assert_eq!(p.path.as_deref(), Some(&b"long/name"[..]));
    assert_eq!(p.mtime, Some((1_700_000_000, 500_000_000)));
    assert_eq!(p.xattrs.len(), 2);
    assert_eq!(p.xattrs[0].value, acl);
    assert_eq!(p.xattrs[1].value, cap);
}

#[test]
fn malformed_pax_records_are_errors() {
    for bad in [&b"99 path=x\n"[..], b"x path=y\n", b"10 novalue\n", b"12 path=abc"] {
        assert!(parse_pax(bad, &mut Pending::default()).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let mut p = Pending::default();
    parse_pax(&pax(&[("GNU.sparse.map", b"0,10")]), &mut p).unwrap();
    assert!(p.sparse, "GNU sparse PAX keys must be noticed so the entry is refused");
}

const STATUS: &str = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
Package: less\nStatus: install ok installed\nVersion: 590-2\n";

#[test]
fn dpkg_status_lists_installed_packages_only() {
    let p = parse_dpkg_status(STATUS);
    assert_eq!(
        p.into_iter().collect::<Vec<_>>(),
        vec![("less".to_string(), "590-2".to_string()), ("libc6".to_string(), "2.36-9".to_string())]
    );
}

#[test]
fn package_changes_show_added_removed_and_upgraded() {
    let a = parse_dpkg_status(STATUS);
    let b = parse_dpkg_status("Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u1\n\nPackage: procps\nStatus: install ok installed\nVersion: 4.0\n");
    let changes = package_changes(&a, &b);
    let row =
        |p: &str, o: Option<&str>, n: Option<&str>| PackageChange { package: p.into(), old: o.map(Into::into), new: n.map(Into::into) };
    assert_eq!(
        changes,
        vec![row("less", Some("590-2"), None), row("libc6", Some("2.36-9"), Some("2.36-9+deb12u1")), row("procps", None, Some("4.0"))]
    );
}

#[test]
fn listing_text_is_as_ls_shows_it() {
    assert_eq!(mode_string('-', 0o4755), "-rwsr-xr-x");
    assert_eq!(mode_string('d', 0o1777), "drwxrwxrwt");
    assert_eq!(mode_string('d', 0o2750), "drwxr-s---");
    assert_eq!(mode_string('-', 0o4644), "-rwSr--r--");
    assert_eq!(utc_string(0), "1970-01-01 00:00:00");
    assert_eq!(utc_string(1_700_000_000), "2023-11-14 22:13:20");
    assert_eq!(utc_string(951_782_400), "2000-02-29 00:00:00");
    assert_eq!(display_bytes(b"caf\xe9"), "caf\\xe9");
    assert_eq!(split_path(b"/usr//bin/./"), vec![&b"usr"[..], b"bin"]);
}

#[test]
fn server_answers_become_the_error_callers_act_on() {
    use crate::remote::{error_of, RemoteError};
    use api::ErrorCode;
    let url = "http://x/v1/objects/upload";
    let e = error_of(url, 413, 5000, b"<html>413 Request Entity Too Large</html>");
    assert!(matches!(&e, RemoteError::TooLarge { bytes: 5000, .. }), "{e:?}");
    assert!(e.to_string().contains("client_max_body_size"), "the message names the proxy's limit: {e}");
    let e = error_of(url, 413, 7, br#"{"error":"body_too_large","message":"a body of 7 bytes is over the limit of 6"}"#);
    assert!(matches!(&e, RemoteError::TooLarge { bytes: 7, .. }), "{e:?}");
    let e = error_of(url, 413, 7, br#"{"error":"too_many_digests","message":"m"}"#);
    assert_eq!(e.code(), Some(ErrorCode::TooManyDigests));
    let e = error_of(url, 409, 7, br#"{"error":"version_not_newer","message":"m"}"#);
    assert!(matches!(e, RemoteError::Http { status: 409, code: ErrorCode::VersionNotNewer, .. }), "{e:?}");
    let e = error_of(url, 502, 7, b"Bad Gateway");
    assert!(matches!(&e, RemoteError::NotServerJson { status: 502, quoted, .. } if quoted == "Bad Gateway"), "{e:?}");
    assert_eq!(e.status(), Some(502));
}

#[test]
fn has_shell_resolves_bin_sh_inside_the_image() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/sh"), b"").unwrap();
    assert!(!crate::sandbox::has_shell(root), "only usr/bin/sh: the chroot has no /bin/sh");
    std::fs::create_dir(root.join("bin")).unwrap();
    symlink("/usr/bin/dash", root.join("bin/sh")).unwrap();
    assert!(!crate::sandbox::has_shell(root), "an absolute link to what the image lacks");
    std::fs::write(root.join("usr/bin/dash"), b"").unwrap();
    assert!(crate::sandbox::has_shell(root), "an absolute link, resolved inside the image");
    std::fs::remove_file(root.join("bin/sh")).unwrap();
    symlink("../usr/bin/dash", root.join("bin/sh")).unwrap();
    assert!(crate::sandbox::has_shell(root), "a relative link");
}
