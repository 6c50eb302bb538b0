//! `imgctl patch` on the real Debian root (gen1) and the Rust toolchain tree.
//!
//! The apt patch that built gen2, sandbox semantics against the same commands on a plain copy,
//! failure and kill -9, the network switch, the activation policy, and the small patch on the
//! large tree.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{bin, compare_trees_but_mtimes, ok_json, Imgctl};

fn datasets() -> PathBuf {
    let dir = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into()));
    for set in ["gen1", "gen2", "rust"] {
        assert!(dir.join(format!(".{set}.done")).exists(), "dataset {set} missing under {}: run scripts/test.sh", dir.display());
    }
    dir
}

/// A store holding gen1 as `os@1`.
fn with_gen1() -> Imgctl {
    let t = Imgctl::new();
    t.import(&datasets().join("gen1"), "os");
    t
}

fn patch(t: &Imgctl, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "patch"];
    all.extend_from_slice(args);
    ok_json(t.run(all))
}

fn export(t: &Imgctl, gen: &str, name: &str) -> PathBuf {
    let dir = t.path(name);
    t.ok(["export", gen, dir.to_str().unwrap()]);
    dir
}

fn refs(t: &Imgctl) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(t.store.join("refs/os")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn dpkg_list(root: &Path) -> String {
    let out = Command::new("chroot").arg(root).args(["dpkg-query", "-W", "-f", "${Package} ${Version} ${Architecture} ${Status}\n"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Paths whose content differs by nature between two runs of the same apt commands: logs,
/// apt and ldconfig state with timestamps. Listed in docs/patching.md.
const DIFFER_BY_NATURE: [&str; 5] = ["var/log/", "var/cache/ldconfig/aux-cache", "etc/ld.so.cache", "var/cache/debconf/", "var/lib/dpkg/"];

#[test]
fn the_apt_patch_of_gen1_gives_gen2() {
    let d = datasets();
    let t = with_gen1();
    let r = patch(&t, &["os@1", "--run", "apt-get update && apt-get install -y --no-install-recommends python3-minimal less procps && apt-get clean"]);
    assert_eq!(r["generation"], "os@2");
    let excluded: Vec<&str> = r["excluded"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(excluded.iter().any(|p| p.starts_with("var/lib/apt/lists/")), "apt lists are left out: {excluded:?}");
    // The patch record: base, the step with its exit status, the full log as an object.
    let shown = ok_json(t.run(["--json", "show", "os@2"]));
    let record = &shown["patch"];
    assert_eq!(record["base_generation"], 1, "{record}");
    assert_eq!(record["steps"][0]["kind"], "run");
    assert_eq!(record["steps"][0]["exit"], 0);
    let log = t.ok(["show", "os@2", "--log"]);
    assert!(log.contains("Setting up python3-minimal"), "the log object holds apt's output");
    let patched = export(&t, "os@2", "patched");
    assert_eq!(dpkg_list(&patched), dpkg_list(&d.join("gen2")));
    let diffs: Vec<String> = compare_trees_but_mtimes(&d.join("gen2"), &patched)
        .into_iter()
        .filter(|line| !DIFFER_BY_NATURE.iter().any(|p| line.starts_with(p)))
        .collect();
    assert!(diffs.is_empty(), "the patched tree differs from gen2 beyond the documented paths:\n{}", diffs.join("\n"));

    // Bytes: no more than gen2 imported after gen1 stores, plus the paths above and the log.
    let imported = Imgctl::new();
    imported.import(&d.join("gen1"), "os");
    let next = imported.import(&d.join("gen2"), "os");
    let import_new = next["stats"]["new_bytes"].as_u64().unwrap();
    let shown = ok_json(t.run(["--json", "log", "os"]));
    let patch_new = shown.as_array().unwrap().iter().find(|g| g["generation"] == "os@2").unwrap()["stats"]["new_bytes"].as_u64().unwrap();
    assert!(patch_new <= import_new + 1_000_000, "patch stored {patch_new} new bytes, a re-import {import_new}");
}

/// The commands of the sandbox test, run in the patch and in a plain copy alike.
const EDITS: &str = "set -e
rm -r usr/share/doc/apt
rm etc/issue.net
rm -r etc/default && echo now-a-file > etc/default
echo x > etc/issue && rm etc/issue && mkdir etc/issue && echo in-dir > etc/issue/f
rm -r etc/issue && echo back-to-file > etc/issue
chmod 0600 etc/hostname
chmod 4755 usr/bin/touch
ln usr/bin/touch usr/bin/touch-linked
echo new > srv/new1 && ln srv/new1 srv/new2 && ln srv/new1 srv/new3 && rm srv/new3
mkfifo srv/fifo
ln -s ../etc/hostname srv/link";

#[test]
fn the_sandbox_commits_what_the_same_commands_do_on_a_plain_copy() {
    let d = datasets();
    let t = with_gen1();
    // The applied directory brings xattrs and a hard link the image's tools cannot make.
    let extra = t.path("extra");
    fs::create_dir_all(extra.join("opt/x")).unwrap();
    fs::write(extra.join("opt/x/data"), b"with attributes").unwrap();
    xattr::set(extra.join("opt/x/data"), "user.origin", b"test").unwrap();
    fs::hard_link(extra.join("opt/x/data"), extra.join("opt/x/data-link")).unwrap();

    let r = patch(&t, &["os@1", "--network", "none", "--run", &format!("cd / && {EDITS}"), "--apply-dir", extra.to_str().unwrap()]);
    assert_eq!(r["generation"], "os@2");
    assert_eq!(r["steps"].as_array().unwrap().len(), 2);
    assert!(r["steps"][1]["input"].is_string(), "the applied directory's digest is recorded");

    let plain = t.path("plain");
    assert!(Command::new("cp").arg("-a").arg(d.join("gen1")).arg(&plain).status().unwrap().success());
    let ran = Command::new("chroot").arg(&plain).args(["/bin/sh", "-c", &format!("cd / && {EDITS}")]).status().unwrap();
    assert!(ran.success());
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C {} --xattrs --xattrs-include='*' -cf - . | tar -C {} --xattrs --xattrs-include='*' -xpf -", extra.display(), plain.display()))
        .status()
        .unwrap();
    assert!(tar.success());
    let patched = export(&t, "os@2", "patched");
    let diffs = compare_trees_but_mtimes(&plain, &patched);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // The links above are in the layer; the base's own link groups are untouched.
    assert_eq!(fs::metadata(patched.join("usr/bin/touch")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert_eq!(xattr::get(patched.join("opt/x/data"), "user.origin").unwrap().as_deref(), Some(&b"test"[..]));

    // A failing command leaves no generation and keeps its log.
    let before = refs(&t);
    let out = t.run(["patch", "os@2", "--run", "echo partial > /etc/partial; echo the-reason; exit 3"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited with status 3"), "{err}");
    let log = err.rsplit("log: ").next().unwrap().trim();
    assert!(fs::read_to_string(log).unwrap().contains("the-reason"));
    assert_eq!(refs(&t), before);
    assert_eq!(fs::read_dir(t.store.join("work")).unwrap().count(), 0, "no work directory is left");
}

#[test]
fn no_service_starts_nothing_outlives_a_step_and_the_network_switch_holds() {
    let t = with_gen1();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // perl-base is in minbase: a TCP connection to the host's loopback.
    let connect = format!("perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"127.0.0.1:{port}\", Timeout => 3) or exit 7'");
    let marker = format!("sleep 3{}", std::process::id() % 1000 + 1000);
    let r = patch(
        &t,
        &[
            "os@1",
            "--run",
            "/usr/sbin/policy-rc.d cron start; echo $? > /root/policy",
            "--run",
            &format!("({marker} &) ; true"),
            "--run",
            &connect,
        ],
    );
    let g = r["generation"].as_str().unwrap().to_string();
    assert_eq!(t.ok(["cat", &format!("{g}:root/policy")]).trim(), "101", "policy-rc.d forbids starting services");
    let left = Command::new("pgrep").args(["-f", &marker]).output().unwrap();
    assert!(left.stdout.is_empty(), "a process a step started outlived it");
    let ls = t.ok(["ls", &format!("{g}:usr/sbin")]);
    assert!(!ls.contains("policy-rc.d"), "the sandbox's policy-rc.d is not committed");

    let out = t.run(["patch", "os@1", "--network", "none", "--run", &connect]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with status 7"));
}

#[test]
fn a_patch_killed_mid_step_leaves_nothing_and_the_next_one_works() {
    let t = with_gen1();
    let marker = format!("sleep 4{}", std::process::id() % 1000 + 1000);
    let mut child = Command::new(bin("imgctl"))
        .arg("--store")
        .arg(&t.store)
        .args(["patch", "os@1", "--run", &format!("echo started; echo x > /etc/half; {marker}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("imgctl patch said nothing").unwrap();
        if line == "started" {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("pgrep").args(["-f", &marker]).output().unwrap().stdout.is_empty() {
        assert!(Instant::now() < deadline, "the step's processes outlived imgctl");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(t.store.to_str().unwrap()), "a mount of the killed patch is visible");
    assert_eq!(refs(&t), ["1"], "no half generation");
    let r = patch(&t, &["os@1", "--run", "echo fine > /etc/fine"]);
    assert_eq!(r["generation"], "os@2");
    assert_eq!(t.ok(["cat", "os@2:etc/fine"]), "fine\n");
    assert!(t.run(["cat", "os@2:etc/half"]).status.code() != Some(0), "the killed run's change is not in the next");
    assert_eq!(fs::read_dir(t.store.join("work")).unwrap().count(), 0, "the killed run's work directory was removed");
}

fn activation(t: &Imgctl, gen: &str) -> serde_json::Value {
    ok_json(t.run(["--json", "show", gen]))["change"]["activation"].clone()
}

#[test]
fn the_activation_policy_follows_the_diff() {
    let t = with_gen1();
    let kernel = patch(&t, &["os@1", "--run", "mkdir -p /boot && echo kernel > /boot/vmlinuz-6.1.0-99-amd64"]);
    assert_eq!(activation(&t, kernel["generation"].as_str().unwrap())["kind"], "reboot");
    // A unit for a program of the image, then a new build of that program.
    let unit = patch(
        &t,
        &["os@1", "--run", "mkdir -p /etc/systemd/system && printf '[Service]\\nExecStart=/usr/sbin/cron -f\\n' > /etc/systemd/system/cron.service && cp /usr/bin/true /usr/sbin/cron"],
    );
    let unit_gen = unit["generation"].as_str().unwrap().to_string();
    let replaced = patch(&t, &[&unit_gen, "--run", "cp /usr/bin/false /usr/sbin/cron"]);
    let a = activation(&t, replaced["generation"].as_str().unwrap());
    assert_eq!(a["kind"], "restart", "{a}");
    assert_eq!(a["units"], serde_json::json!(["cron.service"]));
    let doc = patch(&t, &["os@1", "--run", "echo notes > /usr/share/doc/NOTES"]);
    assert_eq!(activation(&t, doc["generation"].as_str().unwrap())["kind"], "live");
    let forced = patch(&t, &["os@1", "--activation", "reboot", "--run", "echo notes > /usr/share/doc/NOTES"]);
    assert_eq!(activation(&t, forced["generation"].as_str().unwrap())["kind"], "reboot");
}

#[test]
fn a_small_patch_of_the_large_tree_reads_only_what_changed() {
    let d = datasets();
    let t = Imgctl::new();
    let start = Instant::now();
    t.import(&d.join("rust"), "rust");
    let import_time = start.elapsed();
    let r = patch(&t, &["rust@1", "--network", "none", "--run", "rm bin/rustdoc && echo x > new-file"]);
    assert_eq!(r["files_read"], 1, "only new-file is read: {r}");
    let commit = Duration::from_millis(r["commit_ms"].as_u64().unwrap());
    assert!(commit * 10 < import_time, "commit {commit:?} vs import {import_time:?}");
    assert!(t.run(["cat", "rust@2:bin/rustdoc"]).status.code() != Some(0));
    assert_eq!(t.ok(["cat", "rust@2:new-file"]), "x\n");
}

#[test]
fn a_shell_less_image_gets_the_host_s_tools_read_only_and_only_itself_writable() {
    let t = Imgctl::new();
    let src = t.path("app");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/tool"), "v1\n").unwrap();
    t.import(&src, "app");
    let input = t.path("input");
    fs::create_dir_all(input.join("share")).unwrap();
    fs::write(input.join("share/data"), "from a tar\n").unwrap();
    let tar = t.path("input.tar");
    assert!(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&input).arg(".").status().unwrap().success());
    let r = patch(&t, &["app@1", "--network", "none", "--run", "echo v2 > bin/tool", "--apply-tar", tar.to_str().unwrap()]);
    assert_eq!(r["generation"], "app@2");
    assert_eq!(t.ok(["cat", "app@2:bin/tool"]), "v2\n");
    assert_eq!(t.ok(["cat", "app@2:share/data"]), "from a tar\n", "the tar lands in the image, not on the host");
    assert!(!Path::new("/share/data").exists());
    let escape = format!("/etc/imgctl-escape-{}", std::process::id());
    let out = t.run(["patch", "app@2", "--network", "none", "--run", &format!("touch {escape}")]);
    assert!(!out.status.success(), "the host's /etc is read-only to the step");
    assert!(!Path::new(&escape).exists());
}
