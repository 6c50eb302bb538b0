//! imgfs restarted, killed and upgraded under `imgfs supervise` while programs read, run and walk the mount, and after a switch: none sees an error or the wrong generation.
//!
//! The Debian root with a 48 MiB file added is mounted under the supervisor. A reader keeps
//! one descriptor of the big file open and reads it whole again and again (its pages dropped
//! before each pass, so every pass asks imgfs), a second loop runs `ls` from the mount in a
//! chroot, a third walks the whole tree; meanwhile imgfs is killed 20 times, half with
//! SIGKILL, and every fourth start runs a different build of the binary. A second test kills
//! imgfs after a switch: a file and a shell held in the old generation keep it, and rollback
//! still has its target.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::{Imgctl, Mount, Server};

/// Longest any one call may take.
const HANG: Duration = Duration::from_secs(2);

/// Every path under `root` with its kind and, for files, size.
fn walk(root: &Path, errors: &Mutex<Vec<String>>) -> BTreeMap<PathBuf, (char, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let t = Instant::now();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e.collect::<Result<Vec<_>, _>>(),
            Err(e) => Err(e),
        };
        if t.elapsed() > HANG {
            errors.lock().unwrap().push(format!("listing {} took {:?}", dir.display(), t.elapsed()));
        }
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                errors.lock().unwrap().push(format!("listing {}: {e}", dir.display()));
                continue;
            }
        };
        for e in entries {
            let path = e.path();
            let t = Instant::now();
            let meta = std::fs::symlink_metadata(&path);
            if t.elapsed() > HANG {
                errors.lock().unwrap().push(format!("lstat {} took {:?}", path.display(), t.elapsed()));
            }
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    errors.lock().unwrap().push(format!("lstat {}: {e}", path.display()));
                    continue;
                }
            };
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path);
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'o'
            };
            out.insert(rel, (kind, if kind == 'f' { meta.len() } else { 0 }));
        }
    }
    out
}

/// Runs `work` in a loop on a thread until `stop`, counting passes.
fn worker(stop: &Arc<AtomicBool>, passes: &Arc<AtomicU64>, mut work: impl FnMut() + Send + 'static) -> std::thread::JoinHandle<()> {
    let (stop, passes) = (stop.clone(), passes.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            work();
            passes.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn twenty_restarts_kills_and_upgrades_under_busy_programs_go_unnoticed() {
    let gen2 = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into())).join("gen2");
    assert!(gen2.join("usr/bin/ls").exists(), "dataset gen2 missing: run shared/datasets/make-datasets.sh");
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    let cp = std::process::Command::new("cp").arg("-a").arg(&gen2).arg(&src).status().unwrap();
    assert!(cp.success());
    let big = tests::noise(48 << 20, 17);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let big_hash = blake3::hash(&big);
    t.publish(&server, &src, "debian", "os/stable");
    let quiet = Mutex::new(Vec::new());
    let expected = walk(&src, &quiet);

    // The supervisor runs whatever this link names at each start: the upgrade is a rename.
    let builds = [tests::bin("imgfs"), tests::bin("imgfs-other-build")];
    let program = t.path("imgfs-now");
    std::os::unix::fs::symlink(&builds[0], &program).unwrap();
    let mnt = Mount::start_supervised(
        &[&server.url],
        "os/stable",
        &t.path("cache"),
        &t.path("mnt"),
        &["--poll-seconds", "3600"],
        &program,
    );
    assert!(mnt.banner.contains("debian@1"), "{}", mnt.banner);
    let point = mnt.point.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let passes: [Arc<AtomicU64>; 3] = Default::default();
    let mut threads = Vec::new();

    // One descriptor held across every restart, read whole with its pages dropped first.
    let file = std::fs::File::open(point.join("big.bin")).unwrap();
    let errs = errors.clone();
    threads.push(worker(&stop, &passes[0], move || {
        // SAFETY: advice on a descriptor this closure owns.
        unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let t = Instant::now();
            let n = match file.read_at(&mut buf, offset) {
                Ok(n) => n,
                Err(e) => {
                    errs.lock().unwrap().push(format!("reading big.bin at {offset}: {e}"));
                    return;
                }
            };
            if t.elapsed() > HANG {
                errs.lock().unwrap().push(format!("reading big.bin at {offset} took {:?}", t.elapsed()));
            }
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        if hasher.finalize() != big_hash {
            errs.lock().unwrap().push(format!("big.bin read wrong bytes ({offset} bytes)"));
        }
    }));

    // A binary of the mount run again and again (its pages dropped first, so exec reads it).
    let (errs, root) = (errors.clone(), point.clone());
    threads.push(worker(&stop, &passes[1], move || {
        if let Ok(f) = std::fs::File::open(root.join("usr/bin/ls")) {
            // SAFETY: advice on a descriptor held here.
            unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        let t = Instant::now();
        let out = std::process::Command::new("chroot").arg(&root).args(["/usr/bin/ls", "/usr/lib"]).output();
        let took = t.elapsed();
        match out {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("x86_64-linux-gnu") => {}
            Ok(o) => errs.lock().unwrap().push(format!("ls from the mount: {} {}", o.status, String::from_utf8_lossy(&o.stderr))),
            Err(e) => errs.lock().unwrap().push(format!("running ls from the mount: {e}")),
        }
        if took > HANG {
            errs.lock().unwrap().push(format!("ls from the mount took {took:?}"));
        }
    }));

    // The whole tree, listed and stat'ed.
    let (errs, root) = (errors.clone(), point.clone());
    threads.push(worker(&stop, &passes[2], move || {
        let seen = walk(&root, &errs);
        if seen != expected {
            let missing = expected.keys().filter(|k| !seen.contains_key(*k)).count();
            let wrong = expected.iter().filter(|(k, v)| seen.get(*k).is_some_and(|s| s != *v)).count();
            errs.lock().unwrap().push(format!("tree walk: {missing} missing, {wrong} differ, {} seen", seen.len()));
        }
    }));

    let passed = |p: &[Arc<AtomicU64>; 3]| p.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();
    wait_for("the first pass of every program", 120, || passed(&passes).iter().all(|n| *n > 0));
    let mut exes = Vec::new();
    for i in 0..20 {
        // Every fourth start a different build: the link is replaced, then the process killed.
        let build = &builds[(i / 4) % 2];
        let tmp = t.path("imgfs-next");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(build, &tmp).unwrap();
        std::fs::rename(&tmp, &program).unwrap();
        let signal = if i % 2 == 0 { nix::sys::signal::Signal::SIGKILL } else { nix::sys::signal::Signal::SIGTERM };
        if i % 5 == 0 {
            // Forget cached names (once the process is gone): the new one is asked to look
            // them up again.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
            });
        }
        let before = passed(&passes);
        let killed = Instant::now();
        let new = mnt.restart_supervised(signal);
        let back = killed.elapsed();
        let exe = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
        assert_eq!(&exe, build, "restart {i} runs the build the link names");
        exes.push(exe);
        wait_for(&format!("restart {i}: a pass of every program"), 60, || {
            passed(&passes).iter().zip(&before).all(|(now, then)| now > then)
        });
        let errs = errors.lock().unwrap().clone();
        if !errs.is_empty() {
            stop.store(true, Ordering::Relaxed);
        }
        assert!(errs.is_empty(), "after restart {i} ({signal}): {} errors, first: {:#?}", errs.len(), &errs[..errs.len().min(10)]);
        eprintln!("restart {i} ({signal}, {}): answering again after {back:?}", build.display());
    }
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    let errs = errors.lock().unwrap().clone();
    assert!(errs.is_empty(), "{} errors, first: {:#?}", errs.len(), &errs[..errs.len().min(10)]);
    assert!(exes.contains(&builds[0]) && exes.contains(&builds[1]), "both builds served");
    // Still the one mount, serving the right generation.
    let status = mnt.control("status");
    assert_eq!(status["current"]["generation"], "debian@1", "{status}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point_str = point.to_str().unwrap();
    assert_eq!(mounts.lines().filter(|l| l.split(' ').nth(4) == Some(point_str)).count(), 1, "one mount at {point_str}");
}

#[test]
fn a_restart_after_a_switch_keeps_both_generations_and_rollback() {
    use std::io::Read;
    let t = Imgctl::new();
    let server = Server::start(&t.path("server"));
    let src = t.path("src");
    std::fs::create_dir_all(src.join("app/lib")).unwrap();
    let (one, two) = (tests::noise(2 << 20, 1), tests::noise(2 << 20, 2));
    std::fs::write(src.join("app/lib/data.bin"), &one).unwrap();
    std::fs::write(src.join("app/version"), b"one\n").unwrap();
    t.publish(&server, &src, "office", "office/pilot");
    let program = tests::bin("imgfs");
    let mnt = Mount::start_supervised(&[&server.url], "office/pilot", &t.path("cache"), &t.path("mnt"), &["--poll-seconds", "3600"], &program);
    let p = mnt.point.clone();

    // A program holds gen 1's data.bin and sits in gen 1's app/lib.
    let mut held = std::fs::File::open(p.join("app/lib/data.bin")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    held.read_exact(&mut first).unwrap();
    let mut shell = std::process::Command::new("sh").arg("-c").arg("read line; cat version; cat lib/../version").current_dir(p.join("app")).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();

    std::fs::write(src.join("app/lib/data.bin"), &two).unwrap();
    std::fs::write(src.join("app/version"), b"two\n").unwrap();
    t.publish(&server, &src, "office", "office/pilot");
    let up = mnt.control("update");
    assert_eq!(up["generation"], "office@2", "{up}");

    // Killed after the switch: both generations come back under their numbers.
    mnt.restart_supervised(nix::sys::signal::Signal::SIGKILL);
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert!(first == one, "the file opened in gen 1 reads gen 1 to the end across the restart");
    assert_eq!(std::fs::read_to_string(p.join("app/version")).unwrap(), "two\n");
    assert!(std::fs::read(p.join("app/lib/data.bin")).unwrap() == two);
    {
        use std::io::Write;
        writeln!(shell.stdin.take().unwrap()).unwrap();
    }
    let out = shell.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\none\n", "a shell in gen 1's directory still sees gen 1");

    // The previous generation was restored too: rollback works, and survives another restart.
    let back = mnt.control("rollback");
    assert_eq!(back["generation"], "office@1", "{back}");
    mnt.restart_supervised(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(std::fs::read_to_string(p.join("app/version")).unwrap(), "one\n");
    let status = mnt.control("status");
    assert_eq!(status["current"]["generation"], "office@1", "{status}");
    assert_eq!(status["previous"]["generation"], "office@2", "{status}");
}
