//! The Debian packages: built by scripts/package.sh, installed with dpkg, their units' commands run as the units would, an fstab mount, removal that leaves no process, purge.
//!
//! systemd is not PID 1 here (nor in CI), so `systemctl start` has a stand-in, the one
//! docs/packages.md describes: `systemd-analyze verify` of the installed units, then each
//! unit's ExecStart run as the unit would run it (imaged as user imaged, imgfs@ under `imgfs
//! supervise`, systemd's file descriptor store protocol, with its instance's EnvironmentFile).
//!
//! The packages are made of the build the tests run, installed for the test's length only:
//! whatever happens, they are purged at the end. mount(8) runs the package's imgfs while it
//! is installed, so the test holds `tests::mount_helper_lock` as the other mount(8) test does.
//! It refuses to run when imaged or imgfs packages it did not install are present (it would
//! remove them).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tests::{bin, compare_trees, noise, ok_text, Imgctl, Mount, Server};

/// Written before installing, removed after purging: packages found installed with it are
/// this test's, left by a run that could not clean up.
const MARKER: &str = "/var/tmp/imaged-e2e-packages.installed";

/// The binaries the packages install; no process may run them after `dpkg -r`.
const BINARIES: [&str; 3] = ["/usr/bin/imaged", "/usr/bin/imgctl", "/usr/bin/imgfs"];

/// What the test changed on the machine, undone when dropped, also when the test fails.
struct Installed {
    /// /var/lib/imaged did not exist before: the package made it.
    made_state_dir: bool,
    /// The imgfs@ instance's configuration the test wrote.
    instance_conf: Option<PathBuf>,
    /// Mount points to detach if still mounted.
    mounts: Vec<PathBuf>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(conf) = &self.instance_conf {
            let _ = std::fs::remove_file(conf);
        }
        if ["imaged", "imgfs"].iter().any(|p| !status(p).is_empty()) {
            let _ = Command::new("dpkg").args(["--purge", "imgfs", "imaged"]).output();
        }
        if self.made_state_dir {
            let _ = std::fs::remove_dir_all("/var/lib/imaged");
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

/// dpkg's status of `package` ("install ok installed", "deinstall ok config-files"), empty
/// when dpkg does not know it.
fn status(package: &str) -> String {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", package]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes running one of the packages' binaries (also one deleted by the removal): pid and
/// command line.
fn package_processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else { continue };
        let exe = exe.to_string_lossy().trim_end_matches(" (deleted)").to_string();
        if BINARIES.contains(&exe.as_str()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

/// The user id a process runs as.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn is_mounted(point: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == point.to_str() && l.split(' ').nth(2) == Some("fuse.imgfs"))
}

/// A unit file's `[Service]` settings, in order, each key with every value it was given.
fn service_section(unit: &Path) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in std::fs::read_to_string(unit).unwrap().lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{}: {line:?}", unit.display()));
            settings.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    settings
}

/// The one value of `key`.
fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

/// A command line of a unit as systemd expands it: `%i` and `%n`, `${VAR}` as one argument,
/// `$VAR` as a word split at whitespace (unset: nothing).
fn expand(line: &str, instance: &str, unit: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        let word = word.replace("%i", instance).replace("%n", unit);
        if let Some(var) = word.strip_prefix('$').filter(|v| !v.starts_with('{')) {
            argv.extend(env.get(var).map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>()).unwrap_or_default());
            continue;
        }
        let mut out = word.clone();
        while let Some(start) = out.find("${") {
            let end = start + out[start..].find('}').unwrap();
            let value = env.get(&out[start + 2..end]).cloned().unwrap_or_default();
            out.replace_range(start..=end, &value);
        }
        argv.push(out);
    }
    argv
}

/// `KEY=VALUE` lines of an environment file (or of Environment= settings).
fn environment<'a>(lines: impl Iterator<Item = &'a str>, env: &mut BTreeMap<String, String>) {
    for line in lines.map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (k, v) = line.split_once('=').unwrap();
        env.insert(k.to_string(), v.to_string());
    }
}

fn run(argv: &[String], env: &[(&str, &str)]) -> Output {
    Command::new(&argv[0]).args(&argv[1..]).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn packages_install_run_their_units_mount_from_fstab_and_leave_nothing_running_when_removed() {
    let started = Instant::now();
    let _helper = tests::mount_helper_lock();
    let leftover = Path::new(MARKER).exists();
    for p in ["imaged", "imgfs"] {
        let s = status(p);
        assert!(
            s.is_empty() || s.ends_with("not-installed") || leftover,
            "the {p} package is on this machine ({s}) and this test did not install it: it would remove it; `dpkg --purge imgfs imaged` first"
        );
    }
    if leftover {
        // A run that could not clean up: start from nothing.
        let _ = Command::new("dpkg").args(["--purge", "imgfs", "imaged"]).output();
    }
    // Made before the guard, so that it goes after the guard has unmounted what is in it.
    let t = Imgctl::new();
    let made_state_dir = !Path::new("/var/lib/imaged").exists();
    let mut installed = Installed { made_state_dir, instance_conf: None, mounts: Vec::new() };

    // Build the packages from the debug build these tests run.
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The build these tests run: target/debug (profile dev) or target/release.
    let profile_dir = bin("imgfs").parent().unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap().to_path_buf();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_string(),
        other => other.to_string(),
    };
    let debs = t.path("debs");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let built = ok(
        Command::new(workspace.join("scripts/package.sh"))
            .arg(&debs)
            .env("PROFILE", &profile)
            .env("FAST", "1")
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap(),
        "scripts/package.sh",
    );
    let deb = |name: &str| debs.join(format!("{name}_0.1.0-1_amd64.deb"));
    assert!(deb("imaged").exists() && deb("imgfs").exists(), "package.sh made: {built}");

    std::fs::write(MARKER, "imaged and imgfs installed by tests/e2e/packages.rs\n").unwrap();
    ok(Command::new("dpkg").arg("--install").arg(deb("imaged")).arg(deb("imgfs")).output().unwrap(), "dpkg --install");
    assert_eq!(status("imaged"), "install ok installed");
    assert_eq!(status("imgfs"), "install ok installed");
    ok(Command::new("dpkg").args(["--verify", "imaged", "imgfs"]).output().unwrap(), "dpkg --verify (md5sums)");

    // Files in place: binaries, the helper, units, configuration as conffiles, man pages, completions.
    for b in BINARIES {
        let v = ok(Command::new(b).arg("--version").output().unwrap(), b);
        assert!(v.starts_with(Path::new(b).file_name().unwrap().to_str().unwrap()), "{b} --version: {v}");
    }
    assert_eq!(std::fs::read_link("/usr/sbin/mount.fuse.imgfs").unwrap(), Path::new("../bin/imgfs"));
    let units = ["imaged.service", "imgfs@.service", "imgfs-agent.service"].map(|u| PathBuf::from("/usr/lib/systemd/system").join(u));
    for u in &units {
        assert!(u.is_file(), "{} missing", u.display());
    }
    let conffiles = |p: &str| ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", p]).output().unwrap(), "dpkg-query");
    assert!(conffiles("imaged").contains("/etc/imaged/imaged.toml "), "{}", conffiles("imaged"));
    assert!(conffiles("imgfs").contains("/etc/imgfs/agent.toml "), "{}", conffiles("imgfs"));
    assert!(Path::new("/etc/imgfs/mounts").is_dir());
    for b in ["imaged", "imgctl", "imgfs"] {
        let pages = t.path(&format!("man-{b}"));
        ok(Command::new(format!("/usr/bin/{b}")).arg("man").arg(&pages).output().unwrap(), "man");
        let mut names: Vec<String> =
            std::fs::read_dir(&pages).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert!(names.len() > 3 && names.contains(&format!("{b}.1")), "{b}'s man pages: {names:?}");
        for n in &names {
            assert!(Path::new(&format!("/usr/share/man/man1/{n}.gz")).is_file(), "the man page {n} is not installed");
        }
        for f in [
            format!("/usr/share/bash-completion/completions/{b}"),
            format!("/usr/share/zsh/vendor-completions/_{b}"),
            format!("/usr/share/fish/vendor_completions.d/{b}.fish"),
        ] {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(text.contains(b), "{f} does not name {b}");
        }
    }
    assert!(Path::new("/usr/share/man/man8/mount.fuse.imgfs.8.gz").is_file());
    // The system user, and its data directory (made by the package when there was none).
    let passwd = ok(Command::new("getent").args(["passwd", "imaged"]).output().unwrap(), "getent passwd imaged");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!((fields[5], fields[6]), ("/var/lib/imaged", "/usr/sbin/nologin"), "{passwd}");
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert!(uid < 1000, "imaged is not a system user: {passwd}");
    if made_state_dir {
        let meta = std::fs::metadata("/var/lib/imaged").unwrap();
        assert_eq!((std::os::unix::fs::MetadataExt::uid(&meta), meta.permissions().mode() & 0o777), (uid, 0o750));
    }

    // The stand-in for `systemctl start`, part 1: systemd checks the units as it would load them.
    let verify = Command::new("systemd-analyze").arg("verify").args(&units).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    let imgfs_unit = service_section(&units[1]);
    for (k, v) in [("Type", "notify"), ("NotifyAccess", "main"), ("FileDescriptorStoreMax", "1")] {
        assert_eq!(one(&imgfs_unit, k), v, "imgfs@.service {k}");
    }

    // Part 2: imaged.service's ExecStart as the unit runs it: user imaged, its umask, no new
    // privileges; the data directory is the test's (StateDirectory= stands for /var/lib/imaged,
    // which may hold a real server's data) and the port a free one.
    let imaged_unit = service_section(&units[0]);
    assert_eq!((one(&imaged_unit, "User"), one(&imaged_unit, "StateDirectory")), ("imaged", "imaged"));
    let data = t.path("imaged-data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "imaged", "--regid", "imaged", "--init-groups", "--no-new-privs", "sh", "-c"])
        .arg(format!("umask {}; exec \"$0\" \"$@\"", one(&imaged_unit, "UMask")))
        .args(expand(one(&imaged_unit, "ExecStart"), "", "imaged.service", &BTreeMap::new()))
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"]);
    let server = Server::start_command(cmd, &data);
    assert_eq!(uid_of(server.child.id()), uid, "imaged does not run as user imaged");
    let src = t.path("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), noise(300 << 10, 17)).unwrap();
    std::fs::write(src.join("motd"), "packaged\n").unwrap();
    t.publish(&server, &src, "pkg", "pkg/stable");
    let log = ok_text(Command::new("/usr/bin/imgctl").arg("--store").arg(&t.store).args(["log", "pkg"]).output().unwrap());
    assert!(log.contains("pkg@1"), "the package's imgctl: {log}");

    // `mount -t fuse.imgfs` from an fstab line: mount(8) finds /sbin/mount.fuse.imgfs.
    let point = t.path("fstab-mnt");
    std::fs::create_dir_all(&point).unwrap();
    installed.mounts.push(point.clone());
    let fstab = t.path("fstab");
    std::fs::write(
        &fstab,
        format!(
            "pkg/stable {} fuse.imgfs server={},cache={},root={},poll_seconds=3600,_netdev 0 0\n",
            point.display(),
            server.url,
            t.path("fstab-cache").display(),
            t.root_file().display()
        ),
    )
    .unwrap();
    ok(Command::new("mount").arg("-T").arg(&fstab).arg(&point).output().unwrap(), "mount -T fstab");
    assert!(is_mounted(&point));
    let diffs = compare_trees(&src, &point);
    assert!(diffs.is_empty(), "{diffs:?}");
    let serving = package_processes().into_iter().filter(|(_, cmd)| cmd.contains(point.to_str().unwrap())).count();
    assert_eq!(serving, 1, "the fstab mount is not served by the package's imgfs: {:?}", package_processes());

    // Part 3: imgfs@.service's commands for an instance, with its EnvironmentFile, the
    // unit's Environment= defaults and its keeper (`imgfs supervise` speaks systemd's
    // NOTIFY_SOCKET / FDSTORE / LISTEN_FDS protocol, as Type=notify and
    // FileDescriptorStoreMax=1 ask of systemd).
    let instance = format!("e2e-{}", std::process::id());
    let unit_name = format!("imgfs@{instance}.service");
    let unit_point = t.path("unit-mnt");
    installed.mounts.push(unit_point.clone());
    let conf = PathBuf::from(format!("/etc/imgfs/mounts/{instance}.conf"));
    installed.instance_conf = Some(conf.clone());
    std::fs::write(
        &conf,
        format!(
            "SERVER={}\nCHANNEL=pkg/stable\nMOUNTPOINT={}\nCACHE={}\nOPTIONS=--root {} --poll-seconds 3600\n",
            server.url,
            unit_point.display(),
            t.path("unit-cache").display(),
            t.root_file().display()
        ),
    )
    .unwrap();
    let mut env = BTreeMap::new();
    for e in &imgfs_unit["Environment"] {
        environment(std::iter::once(e.replace("%i", &instance).as_str()), &mut env);
    }
    let env_file = one(&imgfs_unit, "EnvironmentFile").replace("%i", &instance);
    assert_eq!(Path::new(&env_file), conf);
    environment(std::fs::read_to_string(&env_file).unwrap().lines(), &mut env);
    ok(run(&expand(one(&imgfs_unit, "ExecStartPre"), &instance, &unit_name, &env), &[]), "ExecStartPre");
    assert!(unit_point.is_dir(), "ExecStartPre did not make the mount point");
    let mut keeper = Command::new("/usr/bin/imgfs");
    keeper.arg("supervise").args(expand(one(&imgfs_unit, "ExecStart"), &instance, &unit_name, &env));
    let mut unit_mount = Mount::start_command(keeper, &unit_point);
    assert!(compare_trees(&src, &unit_point).is_empty());
    // A crash (or `systemctl restart`): the next process takes the connection over, mounted throughout.
    let first = unit_mount.supervised_pid().expect("the keeper runs imgfs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while unit_mount.supervised_pid().map_or(true, |p| p == first)
        || !Command::new(bin("imgfs")).arg("status").arg(&unit_point).output().unwrap().status.success()
    {
        assert!(Instant::now() < until, "imgfs was not started again on the kept connection within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(unit_point.join("motd")).unwrap(), b"packaged\n");
    // ExecStopPost after a crash keeps the mount for the next process; after a stop it unmounts.
    let stop_post = expand(one(&imgfs_unit, "ExecStopPost"), &instance, &unit_name, &env);
    ok(run(&stop_post, &[("SERVICE_RESULT", "signal")]), "ExecStopPost after a crash");
    assert!(is_mounted(&unit_point), "ExecStopPost unmounted after a crash");
    ok(run(&stop_post, &[("SERVICE_RESULT", "success")]), "ExecStopPost after a stop");
    assert!(!is_mounted(&unit_point), "ExecStopPost did not unmount after a stop");
    let ended = unit_mount.child.wait().unwrap();
    assert!(ended.success(), "the keeper ended with {ended} after the mount went");
    std::fs::remove_file(&conf).unwrap();

    // Part 4: imgfs-agent.service's ExecStart, on a configuration of the test's (the
    // shipped /etc/imgfs/agent.toml names example servers). It enrolls and keeps running.
    let agent_unit = service_section(&units[2]);
    assert_eq!(one(&agent_unit, "KillMode"), "process");
    let agent_dir = t.path("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let token = tests::fleet::enroll_token(&server, Some(1), None, serde_json::json!({}));
    let d = |p: &str| agent_dir.join(p).to_str().unwrap().to_string();
    std::fs::write(
        agent_dir.join("agent.toml"),
        format!(
            "servers = [{:?}]\nstate = {:?}\ncache = {:?}\nroot = {:?}\nmount_prefix = {:?}\nenroll_token = {:?}\n",
            server.url,
            d("state"),
            d("cache"),
            t.root_file().to_str().unwrap(),
            d("mnt"),
            token
        ),
    )
    .unwrap();
    let agent_argv: Vec<String> = expand(one(&agent_unit, "ExecStart"), "", "imgfs-agent.service", &BTreeMap::new())
        .into_iter()
        .map(|a| if a == "/etc/imgfs/agent.toml" { d("agent.toml") } else { a })
        .collect();
    let agent_log = std::fs::File::create(agent_dir.join("agent.log")).unwrap();
    let mut agent = Command::new(&agent_argv[0]).args(&agent_argv[1..]).stderr(agent_log).stdout(Stdio::null()).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while !agent_dir.join("state/endpoint.json").exists() {
        assert!(agent.try_wait().unwrap().is_none(), "the agent ended: {}", std::fs::read_to_string(agent_dir.join("agent.log")).unwrap());
        assert!(Instant::now() < until, "the agent did not enroll within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Removal: the running imaged, the agent and the fstab mount's imgfs are stopped by the
    // maintainer scripts (no systemd to stop units); no process of the packages is left.
    let running = package_processes();
    assert!(running.len() >= 3, "expected imaged, the agent and the fstab mount running: {running:?}");
    ok(Command::new("dpkg").args(["--remove", "imgfs", "imaged"]).output().unwrap(), "dpkg --remove");
    let left = package_processes();
    assert!(left.is_empty(), "processes of the packages left after dpkg --remove: {left:?}");
    assert!(!is_mounted(&point), "the fstab mount is still there after dpkg --remove");
    agent.wait().unwrap();
    drop(server);
    for gone in
        BINARIES.iter().chain(&["/usr/sbin/mount.fuse.imgfs", "/usr/lib/systemd/system/imgfs@.service", "/usr/share/man/man1/imgfs.1.gz"])
    {
        assert!(std::fs::symlink_metadata(gone).is_err(), "{gone} is still there after dpkg --remove");
    }
    // Configuration stays until purge.
    assert_eq!(status("imaged"), "deinstall ok config-files");
    assert_eq!(status("imgfs"), "deinstall ok config-files");
    assert!(Path::new("/etc/imaged/imaged.toml").exists() && Path::new("/etc/imgfs/agent.toml").exists());
    ok(Command::new("dpkg").args(["--purge", "imgfs", "imaged"]).output().unwrap(), "dpkg --purge");
    for gone in ["/etc/imaged", "/etc/imgfs"] {
        assert!(!Path::new(gone).exists(), "{gone} is still there after dpkg --purge");
    }
    assert!(status("imaged").is_empty() || status("imaged").ends_with("not-installed"));
    // The system user stays (Debian's rule: a user may own files anywhere).
    assert!(Command::new("getent").args(["passwd", "imaged"]).output().unwrap().status.success());
    drop(installed);
    eprintln!("packages: {:?}", started.elapsed());
}
