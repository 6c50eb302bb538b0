//! What `imgctl diff` derives on the real Debian root (gen1): the activation policy and the security section.
//!
//! Modified copies of gen1 become generations: a kernel (reboot), a unit's program and a
//! library it loads two steps away (restart), a documentation file (live).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{ok_json, Imgctl};

/// The debootstrapped root, built by `shared/datasets/make-datasets.sh`.
fn gen1() -> PathBuf {
    let dir = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into()));
    assert!(
        dir.join(".gen1.done").exists(),
        "dataset gen1 missing under {}: run shared/datasets/make-datasets.sh (scripts/test.sh does)",
        dir.display()
    );
    dir.join("gen1")
}

/// Puts `bytes` at `path` in the copy by unlinking first: the copy's files are hard links to
/// the dataset's, which must never be written through.
fn replace(copy: &Path, path: &str, bytes: &[u8], mode: u32) {
    let p = copy.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = fs::remove_file(&p);
    fs::write(&p, bytes).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// The real file a path of the copy names inside the image (following the image's links,
/// relative or absolute), as a path relative to the image's root.
fn real_path(copy: &Path, path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path.split('/').rev().map(String::from).collect();
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let here = copy.join(parts.join("/")).join(&part);
        match fs::read_link(&here) {
            Ok(target) => {
                let target = target.to_str().unwrap().to_string();
                if target.starts_with('/') {
                    parts.clear();
                }
                todo.extend(target.split('/').rev().map(String::from));
            }
            Err(_) => parts.push(part),
        }
    }
    parts.join("/")
}

#[test]
fn diff_of_debian_gen1_derives_reboot_restart_live_and_security() {
    let src = gen1();
    let t = Imgctl::new();
    let copy = t.path("gen1");
    // A hard-link copy where the file system allows it (cheap for a 100 MB tree), else a copy.
    let linked = Command::new("cp").arg("-al").arg(&src).arg(&copy).status().unwrap();
    if !linked.success() {
        let _ = fs::remove_dir_all(&copy);
        assert!(Command::new("cp").arg("-a").arg(&src).arg(&copy).status().unwrap().success());
    }
    // minbase has neither cron nor a service running a program we can swap: add a unit for a
    // program gen1 has, named through merged /usr's `bin` link.
    replace(&copy, "etc/systemd/system/imaged-probe.service", b"[Service]\nExecStart=/bin/ls -l /\n", 0o644);
    fs::create_dir_all(copy.join("boot")).unwrap();
    t.import(&copy, "debian"); // @1

    let kernel = fs::read_dir(copy.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("vmlinuz-"))
        .map_or("boot/vmlinuz-6.1.0-test".to_string(), |n| format!("boot/{n}"));
    let verb = if copy.join(&kernel).exists() { "changed" } else { "added" };
    replace(&copy, &kernel, b"not really a kernel", 0o644);
    t.import(&copy, "debian"); // @2

    let ls = real_path(&copy, "bin/ls");
    let mut bytes = fs::read(copy.join(&ls)).unwrap();
    bytes.push(0);
    replace(&copy, &ls, &bytes, 0o4755);
    t.import(&copy, "debian"); // @3

    fs::create_dir_all(copy.join("usr/share/doc/imaged-test")).unwrap();
    fs::set_permissions(copy.join("usr/share/doc/imaged-test"), fs::Permissions::from_mode(0o755)).unwrap();
    replace(&copy, "usr/share/doc/imaged-test/README", b"documentation\n", 0o644);
    t.import(&copy, "debian"); // @4

    let pcre = ["usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu"]
        .iter()
        .map(|d| format!("{d}/libpcre2-8.so.0"))
        .find(|p| copy.join(p).exists())
        .map(|p| real_path(&copy, &p));
    if let Some(pcre) = &pcre {
        let mut bytes = fs::read(copy.join(pcre)).unwrap();
        bytes.push(0);
        replace(&copy, pcre, &bytes, 0o644);
        t.import(&copy, "debian"); // @5
    }

    let diff = |a: &str, b: &str| ok_json(t.run(["--json", "diff", a, b]));
    let d = diff("debian@1", "debian@2");
    assert_eq!(d["activation"]["policy"], serde_json::json!({"kind": "reboot"}), "{}", d["activation"]);
    assert_eq!(d["activation"]["why"], serde_json::json!([format!("{kernel} {verb}")]));
    let text = t.ok(["diff", "debian@1", "debian@2"]);
    assert!(text.contains(&format!("activation: reboot ({kernel} {verb})")), "{text}");

    let d = diff("debian@2", "debian@3");
    assert_eq!(d["activation"]["policy"], serde_json::json!({"kind": "restart", "units": ["imaged-probe.service"]}), "{}", d["activation"]);
    assert_eq!(d["activation"]["why"], serde_json::json!([format!("{ls} changed: imaged-probe.service runs it")]));
    assert_eq!(d["security"]["setid"], serde_json::json!([{"path": ls, "before": "0755", "after": "4755"}]));
    let text = t.ok(["diff", "debian@2", "debian@3"]);
    assert!(text.contains("activation: restart imaged-probe.service") && text.contains("security:\n"), "{text}");

    let d = diff("debian@3", "debian@4");
    assert_eq!(d["activation"], serde_json::json!({"policy": {"kind": "live"}, "why": []}));
    let empty = serde_json::json!({"setid": [], "capabilities": [], "world_writable": [], "units": [], "listening": [], "downgrades": []});
    assert_eq!(d["security"], empty, "the security section is always in the JSON");
    let text = t.ok(["diff", "debian@3", "debian@4"]);
    assert!(text.contains("activation: live\n") && !text.contains("security:"), "{text}");

    // The whole way, a reboot wins over the restart.
    assert_eq!(diff("debian@1", "debian@4")["activation"]["policy"]["kind"], "reboot");

    if let Some(pcre) = pcre {
        // ls loads libselinux, which loads libpcre2: a library two steps away restarts the unit.
        let d = diff("debian@4", "debian@5");
        let units: Vec<&str> = d["activation"]["policy"]["units"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        assert!(units.contains(&"imaged-probe.service"), "{}", d["activation"]);
        let why = d["activation"]["why"].as_array().unwrap();
        assert!(why.iter().any(|w| w.as_str().unwrap().starts_with(&format!("{pcre} changed: imaged-probe.service loads it"))), "{why:?}");
    }
}
