//! Keeping the FUSE connection across restarts of imgfs (docs/restart.md). The mount's
//! `/dev/fuse` descriptor is handed to a keeper that outlives the process: systemd's file
//! descriptor store, or `imgfs supervise`, a minimal stand-in that speaks the same protocol
//! (`sd_notify` with `FDSTORE=1`, and back through `LISTEN_FDS`) and starts the command again
//! when it dies. The restarted process takes the descriptor over without a new mount.

use std::ffi::OsString;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// The name the descriptor is stored under.
pub const FD_NAME: &str = "fuse";

/// Consecutive starts that end before they are ready (`READY=1`) after which the supervisor
/// gives up; a start that never gets ready counts after `QUICK`.
const CRASH_LOOP: u32 = 5;
const QUICK: Duration = Duration::from_secs(2);

/// The FUSE descriptor this process was started with (`LISTEN_FDS` naming one `fuse`, for
/// this process), taken out of the environment so that children do not see it.
pub fn inherited_fuse_fd() -> Option<OwnedFd> {
    let pid_matches = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count: usize = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    if !pid_matches || count == 0 {
        return None;
    }
    let index = names.split(':').position(|n| n == FD_NAME)?;
    if index >= count {
        return None;
    }
    let raw: RawFd = 3 + index as RawFd;
    // SAFETY: the protocol hands this process descriptors 3.. 3+LISTEN_FDS, owned by nobody
    // else in it; the environment naming them was removed above, so it is taken once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sets a flag on a descriptor this process owns.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(fd)
}

/// Sends `state` to the service manager (`NOTIFY_SOCKET`), with `fd` attached if given.
/// False when no manager listens.
pub fn notify(state: &str, fd: Option<BorrowedFd<'_>>) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()),
        None => UnixAddr::new(path.as_str()),
    }
    .map_err(std::io::Error::from)?;
    let sock = UnixDatagram::unbound()?;
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&fds)] };
    nix::sys::socket::sendmsg(sock.as_raw_fd(), &[IoSlice::new(state.as_bytes())], &cmsgs, MsgFlags::empty(), Some(&addr))
        .map_err(std::io::Error::from)?;
    Ok(true)
}

/// Why supervising stopped.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The notification socket or the first start failed.
    #[error("starting {program}")]
    Start {
        /// The command.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The command kept dying right after starting.
    #[error("{program} ended {CRASH_LOOP} times in a row within {}s of starting, before it was ready; giving up (the mount's connection is closed)", QUICK.as_secs())]
    CrashLoop {
        /// The command.
        program: String,
    },
}

/// What the supervisor keeps between starts.
struct Stored {
    fd: Option<OwnedFd>,
    /// The process running now said READY=1.
    ready: bool,
}

impl Stored {
    /// Reads every message waiting on `sock` (FDSTORE=1 / FDSTOREREMOVE=1 for `fuse`).
    fn drain(&mut self, sock: &UnixDatagram) {
        loop {
            let mut buf = [0u8; 4096];
            let mut cmsg = nix::cmsg_space!([RawFd; 4]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = match nix::sys::socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT) {
                Ok(m) => m,
                Err(_) => return,
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these descriptors in this process.
                        fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                    }
                }
            }
            let n = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let fields: Vec<&str> = text.lines().collect();
            let named = fields.iter().any(|l| *l == format!("FDNAME={FD_NAME}"));
            if fields.contains(&"FDSTORE=1") && named {
                if let Some(fd) = fds.into_iter().next() {
                    self.fd = Some(fd);
                }
            } else if fields.contains(&"FDSTOREREMOVE=1") && named {
                self.fd = None;
            }
            if fields.contains(&"READY=1") {
                self.ready = true;
            }
        }
    }

    /// Whether the stored connection still works (an unmounted or aborted connection polls
    /// as an error).
    fn alive(&self) -> bool {
        let Some(fd) = &self.fd else { return false };
        let mut p = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::empty())];
        match nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO) {
            Ok(_) => !p[0].revents().is_some_and(|r| r.intersects(nix::poll::PollFlags::POLLERR | nix::poll::PollFlags::POLLNVAL)),
            Err(_) => false,
        }
    }
}

/// Runs `program args` until it ends cleanly, starting it again whenever it dies while the
/// FUSE descriptor it stored is alive, with that descriptor (`LISTEN_FDS`). The program is
/// found by its path at every start, so replacing the file upgrades it. Returns the exit
/// code to end with.
pub fn run(program: &OsString, args: &[OsString]) -> Result<i32, SuperviseError> {
    let name = program.to_string_lossy().into_owned();
    let start_err = |source| SuperviseError::Start { program: name.clone(), source };
    let sock_name = format!("imgfs-supervise/{}", std::process::id());
    let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(sock_name.as_bytes()).map_err(start_err)?;
    let sock = UnixDatagram::bind_addr(&addr).map_err(start_err)?;
    let mut stored = Stored { fd: None, ready: false };
    let mut quick = 0u32;
    loop {
        let mut cmd = Command::new("/bin/sh");
        // The shell learns its pid, which the program keeps across exec: LISTEN_PID names it.
        cmd.arg("-c").arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"").arg(program).args(args);
        cmd.env("NOTIFY_SOCKET", format!("@{sock_name}"));
        if let Some(fd) = &stored.fd {
            let raw = fd.as_raw_fd();
            cmd.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", FD_NAME);
            // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::dup2(raw, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES").env_remove("LISTEN_PID");
        }
        let started = Instant::now();
        stored.ready = false;
        let mut child = cmd.spawn().map_err(start_err)?;
        let status = wait(&mut child, &sock, &mut stored).map_err(start_err)?;
        stored.drain(&sock);
        if status.success() {
            return Ok(0);
        }
        let code = status.code().unwrap_or(1);
        if !stored.alive() {
            tracing::info!(%status, "the command ended and no live mount connection is stored; stopping");
            return Ok(code);
        }
        // Killed after it was serving is a restart; dying before that, again and again, is
        // a crash loop.
        quick = if stored.ready || started.elapsed() >= QUICK { 0 } else { quick + 1 };
        if quick >= CRASH_LOOP {
            return Err(SuperviseError::CrashLoop { program: name });
        }
        tracing::warn!(%status, "the command ended; starting it again on the same mount connection");
    }
}

/// Waits for `child` to end, storing descriptors it sends meanwhile.
fn wait(child: &mut std::process::Child, sock: &UnixDatagram, stored: &mut Stored) -> std::io::Result<std::process::ExitStatus> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this process owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    loop {
        let mut fds = [
            nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(sock.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        stored.drain(sock);
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
    }
}
