//! Unit tests of the pure helpers behind imgctl: archive path safety, PAX records, dpkg status
//! parsing, the text shown by ls, and the audit log's client-side check.

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

/// A log of `n` entries as a server would send it, sealed into a chain.
fn audit_log(n: u64) -> api::audit::AuditLog {
    let mut prev = api::audit::GENESIS.to_string();
    let mut entries = Vec::new();
    for seq in 1..=n {
        let actor = if seq % 2 == 0 { "alice" } else { "admin" };
        let mut e = api::audit::AuditEntry::new(actor, "channel set", "os/stable", "").at(1_000 * seq as i64).before("img@1").after("img@2");
        e.seal(seq, &prev);
        prev.clone_from(&e.hash);
        entries.push(e);
    }
    api::audit::AuditLog { head: entries.last().map(|e| api::audit::AuditHead { seq: e.seq, hash: e.hash.clone() }), entries, broken_at: None }
}

/// Runs the client's check on `log` after `doctor` changed its JSON, as a server would send it.
fn check_audit(doctor: impl FnOnce(&mut serde_json::Value), expect: Result<u64, api::audit::ChainBreak>) {
    use crate::commands::audit::{select, AuditPlan};
    let mut json = serde_json::to_value(audit_log(5)).unwrap();
    doctor(&mut json);
    let log: api::audit::AuditLog = serde_json::from_value(json).unwrap();
    assert_eq!(select(&log, &AuditPlan::default()).map(|o| o.entries.len() as u64), expect);
}

#[test]
fn the_audit_check_names_the_first_entry_a_doctored_log_breaks() {
    use api::audit::{BreakKind::*, ChainBreak};
    check_audit(|_| {}, Ok(5));
    check_audit(|j| j["entries"][2]["actor"] = "mallory".into(), Err(ChainBreak { seq: 3, kind: Hash }));
    check_audit(|j| j["entries"][3]["reason"] = "late excuse".into(), Err(ChainBreak { seq: 4, kind: Hash }));
    check_audit(|j| j["entries"][1]["time"] = 1.into(), Err(ChainBreak { seq: 2, kind: Hash }));
    check_audit(|j| drop(j["entries"].as_array_mut().unwrap().remove(1)), Err(ChainBreak { seq: 2, kind: Gap }));
    check_audit(|j| j["entries"].as_array_mut().unwrap().swap(1, 2), Err(ChainBreak { seq: 2, kind: Gap }));
    // An entry renumbered and re-hashed after a removal still does not follow its predecessor.
    check_audit(
        |j| {
            let entries = j["entries"].as_array_mut().unwrap();
            entries.remove(1);
            let mut e: api::audit::AuditEntry = serde_json::from_value(entries[1].clone()).unwrap();
            let prev = e.prev.clone();
            e.seal(2, &prev);
            entries[1] = serde_json::to_value(e).unwrap();
        },
        Err(ChainBreak { seq: 2, kind: Prev }),
    );
    check_audit(|j| j["broken_at"] = 6.into(), Err(ChainBreak { seq: 6, kind: Gap }));
}

#[test]
fn the_audit_check_filters_only_after_verifying_the_whole_log() {
    use crate::commands::audit::{select, AuditPlan};
    let log = audit_log(6);
    let shown = |plan: AuditPlan| select(&log, &plan).unwrap().entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(shown(AuditPlan { actor: Some("alice".into()), since: None }), [2, 4, 6]);
    assert_eq!(shown(AuditPlan { actor: None, since: Some(4_000) }), [4, 5, 6]);
    assert_eq!(shown(AuditPlan { actor: Some("admin".into()), since: Some(2_000) }), [3, 5]);
    assert_eq!(select(&log, &AuditPlan::default()).unwrap().head.unwrap().seq, 6);
}

#[test]
fn since_takes_epoch_seconds_dates_and_utc_times() {
    use crate::commands::audit::{parse_since, BadSince};
    assert_eq!(parse_since("1700000000"), Ok(1_700_000_000));
    assert_eq!(parse_since("2026-12-03"), Ok(1_796_256_000));
    assert_eq!(parse_since("2026-12-03T01:00:00Z"), Ok(1_796_259_600));
    for bad in ["", "yesterday", "2026-13-01", "-5", "2026-12-03 01:00"] {
        assert_eq!(parse_since(bad), Err(BadSince(bad.into())), "{bad}");
    }
}
