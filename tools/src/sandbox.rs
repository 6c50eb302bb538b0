//! The sandbox `imgctl patch` and `imgctl test` run commands in: a generation mounted read-only
//! through FUSE, an overlayfs writable layer over it, and each command in a chroot of the
//! overlay with its own mount, PID, UTS, IPC (and, with `--network none`, network) namespaces.
//!
//! Everything mounted lives in a private mount namespace of the imgctl process itself
//! ([`private_mounts`]), so a `kill -9` at any moment leaves no mount behind: the kernel drops the
//! namespace with its last process. Each command's process tree gets `PR_SET_PDEATHSIG`, so it
//! dies with imgctl; when the command's shell (PID 1 of its namespace) exits, the kernel kills
//! whatever it left running (a daemon a maintainer script started despite `policy-rc.d`).
//!
//! Inside: `/proc`, a read-only `/sys`, a small `/dev` (null, zero, full, random, urandom, tty,
//! a private devpts), tmpfs `/run`, `/tmp` and `/dev/shm`, the host's resolv.conf when the
//! network is on, and Debian's `policy-rc.d` answering 101 so no service starts.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// The hidden first argument that makes `imgctl` the sandbox's init (see [`init_main`]).
pub const INIT_ARG: &str = "__sandbox";

/// Mount points the sandbox mounts over, relative to the root. Missing ones are created before
/// the first command and left out of the commit.
pub const MOUNT_POINTS: [&str; 5] = ["proc", "sys", "dev", "run", "tmp"];
/// Where Debian's maintainer scripts ask whether they may start a service.
pub const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";
/// The resolver configuration bound from the host when the network is on.
pub const RESOLV_CONF: &str = "etc/resolv.conf";

/// Why the sandbox could not be set up or a command could not be started. A command that runs
/// and fails is not an error: see [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Entering a private mount namespace failed (not root, or no namespaces in this kernel).
    #[error("cannot create a private mount namespace (imgctl patch and test need root)")]
    Namespace(#[source] nix::Error),
    /// A mount failed.
    #[error("cannot mount {what} at {path}")]
    Mount {
        /// What was mounted.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The work directory could not be prepared.
    #[error("preparing {path}")]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command could not be started.
    #[error("cannot start the sandbox")]
    Spawn(#[source] io::Error),
}

/// Moves this process into its own mount namespace with private propagation, so what it mounts
/// from here on is invisible to the host and disappears with the process. Call it from the main
/// thread before mounting anything: threads and children created afterwards inherit it.
pub fn private_mounts() -> Result<(), SandboxError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(SandboxError::Namespace)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).map_err(SandboxError::Namespace)
}

/// Mounts an overlay of `lower` (read-only) with `upper` and `work` at `merged`. No index, no
/// redirects, no metacopy: every change lands in `upper` as a plain file, directory, whiteout
/// (a 0/0 character device) or opaque directory (`trusted.overlay.opaque`), which is what
/// `commit` reads.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<(), SandboxError> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off,xino=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(Some("imgctl-overlay"), merged, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
        .map_err(|e| SandboxError::Mount { what: "overlay", path: merged.to_path_buf(), source: e.into() })
}

/// Detaches the mount at `path`; a path that is not mounted is fine.
pub fn unmount(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
}

/// How to run one command.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Give the command the host's network (and resolv.conf); otherwise a network namespace
    /// with only a loopback device that is down.
    pub network: bool,
    /// Kill the command (and everything it started) after this long.
    pub timeout: Option<Duration>,
    /// Host file bound over `usr/sbin/policy-rc.d` (see [`write_policy_rc_d`]).
    pub policy_rc_d: PathBuf,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Exit status; -N when killed by signal N.
    pub exit: i32,
    /// Wall time.
    pub duration: Duration,
    /// Killed at the timeout.
    pub timed_out: bool,
}

impl Outcome {
    /// Exit 0 within the time allowed.
    pub fn success(&self) -> bool {
        self.exit == 0 && !self.timed_out
    }
}

/// Writes Debian's `policy-rc.d` (exit 101: action forbidden) to `path`, mode 0755.
pub fn write_policy_rc_d(path: &Path) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Prepare { path: path.to_path_buf(), source };
    fs::write(path, "#!/bin/sh\n# imgctl sandbox: no service starts while an image is patched or tested.\nexit 101\n").map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(err)
}

/// Whether the image has a shell to chroot into. An application tree without one (a toolchain,
/// say) runs its commands with the host's tools, in the same namespaces, with the image's root
/// as working directory and no chroot.
pub fn has_shell(root: &Path) -> bool {
    // `/bin/sh` as the chroot will see it: symbolic links resolved inside the image.
    let mut path = PathBuf::from("bin/sh");
    for _ in 0..16 {
        let Ok(meta) = fs::symlink_metadata(root.join(&path)) else { return false };
        if !meta.file_type().is_symlink() {
            return meta.is_file();
        }
        let Ok(target) = fs::read_link(root.join(&path)) else { return false };
        path = match target.strip_prefix("/") {
            Ok(absolute) => absolute.to_path_buf(),
            Err(_) => path.parent().unwrap_or(Path::new("")).join(target),
        };
    }
    false
}

/// Creates, under `root` (the overlay), the mount points and files the sandbox mounts over
/// that the image lacks. Returns the paths created (relative), which a commit leaves out.
pub fn prepare_root(root: &Path, network: bool) -> Result<Vec<String>, SandboxError> {
    let mut created = Vec::new();
    if !has_shell(root) {
        return Ok(created);
    }
    for dir in MOUNT_POINTS {
        let p = root.join(dir);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).map_err(|source| SandboxError::Prepare { path: p.clone(), source })?;
            created.push(dir.to_string());
        }
    }
    let mut files = vec![POLICY_RC_D];
    if network {
        files.push(RESOLV_CONF);
    }
    for file in files {
        let p = root.join(file);
        if fs::symlink_metadata(&p).is_err() && p.parent().is_some_and(|d| d.is_dir()) {
            File::create(&p).map_err(|source| SandboxError::Prepare { path: p.clone(), source })?;
            created.push(file.to_string());
        }
    }
    Ok(created)
}

/// Runs `sh -c command` in the sandbox rooted at `root`, its output (stdout and stderr) copied
/// to `log` and, when `echo` is set, to this process's standard error. `stdin` feeds the
/// command (for `--apply-tar`), else it reads /dev/null.
pub fn run(
    root: &Path,
    command: &str,
    opts: &RunOptions,
    stdin: Option<Box<dyn Read + Send>>,
    log: Arc<std::sync::Mutex<File>>,
    echo: bool,
) -> Result<Outcome, SandboxError> {
    let exe = std::env::current_exe().map_err(SandboxError::Spawn)?;
    let (reader, writer) = std::io::pipe().map_err(SandboxError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.arg(INIT_ARG)
        .arg(root)
        .arg(if opts.network { "host" } else { "none" })
        .arg(&opts.policy_rc_d)
        .arg(command)
        .env_clear()
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(writer.try_clone().map_err(SandboxError::Spawn)?)
        .stderr(writer);
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if !opts.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // SAFETY: between fork and exec only async-signal-safe system calls run: prctl and unshare.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            nix::sched::unshare(flags).map_err(io::Error::from)
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(SandboxError::Spawn)?;
    drop(cmd); // closes our copies of the pipe's write end
    let feeder = match (stdin, child.stdin.take()) {
        (Some(mut input), Some(mut pipe)) => Some(std::thread::spawn(move || {
            let _ = io::copy(&mut input, &mut pipe);
        })),
        _ => None,
    };
    let copier = std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut f) = log.lock() {
                        let _ = f.write_all(&buf[..n]);
                    }
                    if echo {
                        let _ = io::stderr().write_all(&buf[..n]);
                    }
                }
            }
        }
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(SandboxError::Spawn)? {
            break status;
        }
        if opts.timeout.is_some_and(|t| start.elapsed() >= t) {
            // The init dies, its PID-1 child follows (parent-death signal), the kernel kills
            // the rest of the namespace.
            let _ = child.kill();
            timed_out = true;
            break child.wait().map_err(SandboxError::Spawn)?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let duration = start.elapsed();
    let _ = copier.join();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    use std::os::unix::process::ExitStatusExt;
    let exit = status.code().unwrap_or_else(|| -status.signal().unwrap_or(0));
    Ok(Outcome { exit, duration, timed_out })
}

/// `imgctl __sandbox ROOT host|none POLICY_RC_D COMMAND`: the sandbox's init. Runs in the new
/// namespaces (the caller unshared them); forks the command's shell, which becomes PID 1 of the
/// new PID namespace, and exits with its status (128 + N when killed by signal N). Never returns.
pub fn init_main(args: &[OsString]) -> ! {
    let code = match args {
        [root, network, policy, command] => match init(Path::new(root), network == "host", Path::new(policy), command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("imgctl sandbox: {e}");
                125
            }
        },
        _ => {
            eprintln!("imgctl sandbox: internal use only");
            125
        }
    };
    std::process::exit(code)
}

fn init(root: &Path, network: bool, policy: &Path, command: &OsStr) -> io::Result<i32> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    // Everything the child needs is prepared before fork: after it, only system calls.
    let shell = CString::new("/bin/sh").expect("no NUL");
    let argv = [shell.clone(), CString::new("-c").expect("no NUL"), CString::new(command.as_bytes())?];
    let env: Vec<CString> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LC_ALL=C",
        "DEBIAN_FRONTEND=noninteractive",
        "SYSTEMD_OFFLINE=1",
        "TERM=dumb",
    ]
    .iter()
    .map(|s| CString::new(*s).expect("no NUL"))
    .collect();
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let chrooted = has_shell(root);
            let setup = if chrooted { child(root, network, policy) } else { host_tools(root) };
            let code = match setup {
                Ok(()) => match nix::unistd::execve(&shell, &argv, &env) {
                    Ok(never) => match never {},
                    Err(e) => {
                        eprintln!("imgctl sandbox: cannot run /bin/sh in the image: {e}");
                        127
                    }
                },
                Err(e) => {
                    eprintln!("imgctl sandbox: {e}");
                    125
                }
            };
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match nix::sys::wait::waitpid(child, None)? {
                nix::sys::wait::WaitStatus::Exited(_, code) => return Ok(code),
                nix::sys::wait::WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
                _ => continue,
            }
        },
    }
}

/// In the child of an image without a shell: a root of its own on a tmpfs (next to the
/// overlay, under the work directory) with the host's `/usr`, `/bin`, `/lib*`, `/etc` bound
/// read-only, a fresh `/proc`, `/dev`, `/tmp` and `/run`, and the image's overlay at `/image`,
/// the working directory. The command uses the host's tools but can write only to the image.
fn host_tools(root: &Path) -> io::Result<()> {
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let new = root.with_file_name("tools-root");
    fs::create_dir_all(&new)?;
    let ctx = |what: &'static str| move |e: nix::Error| io::Error::new(io::Error::from(e).kind(), format!("mounting {what}: {e}"));
    mount(Some("tmpfs"), &new, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755,size=16m")).map_err(ctx("the tools root"))?;
    for name in HOST_TOOLS {
        let host = Path::new("/").join(name);
        let Ok(meta) = fs::symlink_metadata(&host) else { continue };
        let target = new.join(name);
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&host)?, &target)?;
        } else if meta.is_dir() {
            fs::create_dir(&target)?;
            mount(Some(&host), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(ctx("a host directory"))?;
            mount(None::<&str>, &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
                .map_err(ctx("a host directory read-only"))?;
        }
    }
    for dir in ["proc", "dev", "tmp", "run", "image"] {
        fs::create_dir(new.join(dir))?;
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("proc"), &new.join("proc"), Some("proc"), nosuid | MsFlags::MS_NOEXEC, None::<&str>).map_err(ctx("/proc"))?;
    populate_dev(&new.join("dev"))?;
    for dir in ["tmp", "run"] {
        mount(Some("tmpfs"), &new.join(dir), Some("tmpfs"), nosuid, Some("mode=1777")).map_err(ctx("a tmpfs"))?;
    }
    mount(Some(root), &new.join("image"), None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(ctx("the image"))?;
    nix::unistd::sethostname("imgctl-sandbox")?;
    nix::unistd::chroot(&new)?;
    nix::unistd::chdir("/image")?;
    Ok(())
}

/// What a shell-less image's commands get from the host, read-only.
const HOST_TOOLS: [&str; 9] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt"];

/// A tmpfs at `dev` with the host's harmless device nodes bound in, a private devpts and the
/// usual links.
fn populate_dev(dev: &Path) -> io::Result<()> {
    let ctx = |what: &'static str| move |e: nix::Error| io::Error::new(io::Error::from(e).kind(), format!("mounting {what}: {e}"));
    mount(Some("tmpfs"), dev, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=0755,size=64m")).map_err(ctx("/dev"))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        File::create(&target)?;
        mount(Some(&Path::new("/dev").join(node)), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(ctx("a device"))?;
    }
    fs::create_dir(dev.join("pts"))?;
    mount(Some("devpts"), &dev.join("pts"), Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=620"))
        .map_err(ctx("/dev/pts"))?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    std::os::unix::fs::symlink("/proc/self/fd", dev.join("fd"))?;
    for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        std::os::unix::fs::symlink(format!("/proc/self/fd/{i}"), dev.join(name))?;
    }
    fs::create_dir(dev.join("shm"))?;
    Ok(())
}

/// In the child, PID 1 of the new namespace: the mounts, then chroot.
fn child(root: &Path, network: bool, policy: &Path) -> io::Result<()> {
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let at = |p: &str| root.join(p);
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let ctx = |what: &'static str| move |e: nix::Error| io::Error::new(io::Error::from(e).kind(), format!("mounting {what}: {e}"));
    mount(Some("proc"), &at("proc"), Some("proc"), nosuid | MsFlags::MS_NOEXEC, None::<&str>).map_err(ctx("/proc"))?;
    mount(Some("sysfs"), &at("sys"), Some("sysfs"), nosuid | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(ctx("/sys"))?;
    populate_dev(&at("dev"))?;
    for dir in ["dev/shm", "run", "tmp"] {
        mount(Some("tmpfs"), &at(dir), Some("tmpfs"), nosuid, Some("mode=1777")).map_err(ctx("a tmpfs"))?;
    }
    fs::create_dir(at("run/lock"))?;
    if at(POLICY_RC_D).is_file() {
        mount(Some(policy), &at(POLICY_RC_D), None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(ctx("policy-rc.d"))?;
    }
    if network && at(RESOLV_CONF).is_file() {
        mount(Some("/etc/resolv.conf"), &at(RESOLV_CONF), None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(ctx("resolv.conf"))?;
    }
    nix::unistd::sethostname("imgctl-sandbox")?;
    nix::unistd::chroot(root)?;
    nix::unistd::chdir("/")?;
    Ok(())
}
