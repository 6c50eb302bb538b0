//! `imgfs`: mounts an image channel from one or more imaged servers through FUSE.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use cache::quota::{Quota, Size};
use clap::{Parser, Subcommand};
use fs::control::Control;
use fs::endpoint::{load_metadata, Endpoint};
use fs::fetch::{Fetcher, Limits};
use fs::keeper::{Keeper, Pin};

/// imgfs: run an OS or application image from the network, verified and cached.
#[derive(Parser, Debug)]
#[command(name = "imgfs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to mount: everything `imgfs mount` and the `mount -t fuse.imgfs` helper share.
#[derive(clap::Args, Debug, Clone)]
struct MountArgs {
    /// Servers, comma-separated, tried in order: http://a:4640,http://b:4640.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// Channel, e.g. os/stable.
    #[arg(long)]
    channel: String,
    /// Cache directory (objects and the endpoint's state).
    #[arg(long)]
    cache: PathBuf,
    /// Most the cache may hold: bytes (K, M, G, T suffixes) or a share of its partition (25%).
    #[arg(long, default_value = "25%")]
    cache_size: Size,
    /// Free space the cache's partition must keep; the cache shrinks to keep it.
    #[arg(long, default_value = "5%")]
    min_free: Size,
    /// Worker threads serving the kernel's requests.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Open files through imgfs and hand fully cached files of 32 KiB or more to the kernel
    /// (FUSE passthrough to plain copies kept in CACHE/files). Faster reads of big files whose
    /// pages the kernel has dropped; slower opens (a round trip each). Default: the kernel
    /// opens files without asking imgfs.
    #[arg(long)]
    passthrough: bool,
    /// Seconds between channel checks (default: what the server says, else 300).
    #[arg(long)]
    poll_seconds: Option<u64>,
    /// Detach once mounted; logs go to --log.
    #[arg(long)]
    daemon: bool,
    /// Log file of a daemon (default: CACHE/imgfs.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The repository's root.json to start trusting from (`imgctl trust init --out`); needed
    /// the first time only: the cache keeps the trusted metadata after that.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The image family this endpoint runs (default: the channel's first generation's,
    /// then kept); a channel moved to another family is refused.
    #[arg(long)]
    image: Option<String>,
    /// The architecture this endpoint runs (default: this machine's).
    #[arg(long)]
    arch: Option<String>,
    /// Where to mount.
    mountpoint: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount CHANNEL at MOUNTPOINT (in the foreground until unmounted, unless --daemon).
    Mount(MountArgs),
    /// Unmount MOUNTPOINT.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Show the mount's generations, channel version, cache use, pins, servers and whether it
    /// is offline.
    Status {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Check the channel now and switch if it moved.
    Update {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Switch back to the previous generation at once (works offline).
    Rollback {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Keep GEN whole in the cache (fetching what it lacks) until unpinned.
    Pin {
        /// The mount point.
        mountpoint: PathBuf,
        /// IMAGE@N, a manifest digest, current or previous.
        generation: String,
        /// Most bytes per second to fetch at (K, M, G suffixes).
        #[arg(long)]
        max_rate: Option<Size>,
    },
    /// Let eviction take GEN's objects again.
    Unpin {
        /// The mount point.
        mountpoint: PathBuf,
        /// As given to pin: IMAGE@N or a manifest digest.
        generation: String,
    },
    /// Fetch everything of GEN the cache lacks, for offline use. Resumes where an interrupted
    /// prefetch stopped; the mount finishes it even if this command is interrupted.
    Prefetch {
        /// The mount point.
        mountpoint: PathBuf,
        /// IMAGE@N, a manifest digest, current or previous.
        generation: String,
        /// Most bytes per second to fetch at (K, M, G suffixes).
        #[arg(long)]
        max_rate: Option<Size>,
    },
}

/// Sends a control command and prints the answer; fails if the mount reports an error.
fn control(mountpoint: &Path, command: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::hidden();
    let mut progress = |p: &serde_json::Value| {
        if bar.is_hidden() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("a valid template"),
            );
        }
        bar.set_message(format!("{} objects", p["objects_done"]));
        bar.set_length(p["bytes_total"].as_u64().unwrap_or(0));
        bar.set_position(p["bytes_done"].as_u64().unwrap_or(0));
    };
    let answer = fs::control::request(mountpoint, command, &mut progress)?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&answer)?);
    if let Some(e) = answer["error"].as_str() {
        anyhow::bail!("{command} on {}: {e}", mountpoint.display());
    }
    Ok(())
}

fn rate_arg(max_rate: Option<Size>) -> Result<String> {
    match max_rate {
        None => Ok(String::new()),
        Some(Size::Bytes(b)) if b > 0 => Ok(format!(" {b}")),
        Some(other) => anyhow::bail!("--max-rate {other}: give bytes per second, like 10M"),
    }
}

fn main() -> Result<()> {
    // `mount -t fuse.imgfs CHANNEL MOUNTPOINT -o ...` runs `imgfs CHANNEL MOUNTPOINT -o ...`.
    let argv: Vec<String> = std::env::args().collect();
    let command = match fs::mount_helper::parse(&argv[1..]) {
        Some(parsed) => Command::Mount(helper_args(parsed?)?),
        None => Cli::parse().command,
    };
    let daemon = matches!(&command, Command::Mount(a) if a.daemon);
    // A daemon forks before any thread starts; the parent waits for the child's word.
    let ready = if daemon {
        let Command::Mount(a) = &command else { unreachable!() };
        Some(daemonize(a)?)
    } else {
        None
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "fs=info,imgfs=info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(!daemon)
        .init();
    match command {
        Command::Mount(args) => {
            let mut ready = ready;
            let result = mount(&args, &mut ready);
            if let (Err(e), Some(w)) = (&result, ready.as_mut()) {
                let _ = writeln!(w, "error: {e:#}");
            }
            result
        }
        Command::Status { mountpoint } => control(&mountpoint, "status"),
        Command::Update { mountpoint } => control(&mountpoint, "update"),
        Command::Rollback { mountpoint } => control(&mountpoint, "rollback"),
        Command::Pin { mountpoint, generation, max_rate } => control(&mountpoint, &format!("pin {generation}{}", rate_arg(max_rate)?)),
        Command::Unpin { mountpoint, generation } => control(&mountpoint, &format!("unpin {generation}")),
        Command::Prefetch { mountpoint, generation, max_rate } => {
            control(&mountpoint, &format!("prefetch {generation}{}", rate_arg(max_rate)?))
        }
        Command::Umount { mountpoint } => {
            nix::mount::umount2(&mountpoint, nix::mount::MntFlags::empty()).with_context(|| format!("unmounting {}", mountpoint.display()))
        }
    }
}

/// Mount arguments from the `mount -t fuse.imgfs` helper form.
fn helper_args(h: fs::mount_helper::Helper) -> Result<MountArgs> {
    let mut argv = vec!["imgfs".to_string(), "mount".to_string(), "--channel".into(), h.channel];
    for (k, v) in h.options {
        argv.push(format!("--{}", k.replace('_', "-")));
        if let Some(v) = v {
            argv.push(v);
        }
    }
    if !h.foreground {
        argv.push("--daemon".into());
    }
    argv.push(h.mountpoint);
    match Cli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("mount options: {e}"))?.command {
        Command::Mount(a) => Ok(a),
        _ => unreachable!("built as a mount command"),
    }
}

/// Forks: the parent waits until the child has mounted (or failed) and exits with its word;
/// the child starts a session, sends its output to the log and returns the pipe to report on.
fn daemonize(a: &MountArgs) -> Result<std::fs::File> {
    use nix::unistd::{fork, ForkResult};
    let log = a.log.clone().unwrap_or_else(|| a.cache.join("imgfs.log"));
    std::fs::create_dir_all(&a.cache).with_context(|| format!("creating {}", a.cache.display()))?;
    let log_file =
        std::fs::OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("opening {}", log.display()))?;
    let (r, w) = nix::unistd::pipe().context("making a pipe")?;
    // SAFETY: no other thread exists yet (nothing has been started before this point).
    match unsafe { fork() }.context("forking")? {
        ForkResult::Parent { child } => {
            drop(w);
            let mut word = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut word);
            match word.lines().next() {
                Some(line) if line.starts_with("imgfs: mounted") => {
                    eprintln!("{line} (daemon pid {child}, log {})", log.display());
                    std::process::exit(0)
                }
                Some(line) => {
                    eprintln!("imgfs: {}", line.trim_start_matches("error: "));
                    std::process::exit(1)
                }
                None => {
                    eprintln!("imgfs: the daemon ended before mounting; see {}", log.display());
                    std::process::exit(1)
                }
            }
        }
        ForkResult::Child => {
            drop(r);
            nix::unistd::setsid().context("starting a session")?;
            let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1)?;
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&log_file), 2)?;
            std::env::set_current_dir("/")?;
            Ok(std::fs::File::from(w))
        }
    }
}

fn mount(a: &MountArgs, ready: &mut Option<std::fs::File>) -> Result<()> {
    let (servers, channel, cache, mountpoint) = (&a.server, a.channel.as_str(), a.cache.as_path(), a.mountpoint.as_path());
    let start = std::time::Instant::now();
    let store = Arc::new(cache::Store::open(cache.join("store")).with_context(|| format!("opening the cache {}", cache.display()))?);
    let fetcher = Arc::new(Fetcher::new(servers, store, Limits::default()));
    let arch = a.arch.clone().unwrap_or_else(|| trust::policy::host_arch().to_string());
    let trust =
        Arc::new(fs::trusted::TrustState::open(cache, a.root.as_deref(), a.image.clone(), arch).context("loading the trusted metadata")?);
    // The channel as the signed metadata resolves it; if that fails (no server reachable,
    // or metadata expired or refused), the last verified generation this cache served.
    let state = fs::state::load(cache);
    let saved = state.clone().filter(|s| s.channel == channel);
    let mut server_poll = None;
    let resolved = trust.resolve_channel(&fetcher, channel);
    let (digest, label, version, offline, length) = match resolved {
        Ok(r) => {
            server_poll = r.channel.poll_seconds;
            (r.digest(), r.label(), r.channel.version, false, Some(r.generation.length))
        }
        Err(e) => {
            let st = saved
                .clone()
                .ok_or_else(|| anyhow::anyhow!("{e}; and the cache {} holds no verified generation of {channel}", cache.display()))?;
            tracing::warn!(error = %e, generation = %st.current.generation, "mounting the last verified generation from the cache");
            let digest = st.current.manifest.parse().context("state file names a bad digest")?;
            (digest, st.current.generation, st.current.channel_version, true, None)
        }
    };
    let digest: format::Digest = digest;
    let mut complete = std::collections::HashSet::new();
    let manifest = load_metadata(&fetcher, digest, &mut complete).with_context(|| format!("loading {label} ({digest})"))?;
    if let Some(len) = length {
        fs::endpoint::check_length(&fetcher, digest, len).with_context(|| format!("loading {label}"))?;
    }
    let ep = Arc::new(Endpoint::new(fetcher.clone(), digest, manifest, complete, 256 << 20));
    // The generation served before, so rollback works offline: kept if its metadata loads.
    let mut previous_version = 0;
    if let Some(st) = &saved {
        let candidates = [Some(&st.current), st.previous.as_ref()];
        if let Some(p) = candidates.into_iter().flatten().find(|p| p.manifest != digest.to_hex()) {
            match p.manifest.parse().map_err(|_| ()).and_then(|d| ep.load(d).map(|m| (d, m)).map_err(|_| ())) {
                Ok((d, m)) => {
                    ep.set_previous(d, m);
                    previous_version = p.channel_version;
                }
                Err(()) => tracing::warn!(generation = %p.generation, "the previous generation is not available; rollback has no target"),
            }
        }
    }
    let fs_ep = ep.clone();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("imgfs:{channel}")),
        fuser::MountOption::Subtype("imgfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(a.threads.max(1));
    cfg.clone_fd = true;
    // Plain copies of cached files, for passthrough reads.
    let files = cache.join("files");
    let materialiser = if a.passthrough {
        match cache::plain::Plain::open(&files) {
            Ok(plain) => {
                ep.enable_plain(plain);
                Some(fs::materialise::Materialiser::start(ep.clone()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no plain copies (reads go through FUSE)");
                None
            }
        }
    } else {
        // Copies left by a passthrough mount would only take space.
        if files.exists() {
            if let Err(e) = std::fs::remove_dir_all(&files) {
                tracing::warn!(path = %files.display(), error = %e, "cannot remove the plain copies of a passthrough mount");
            }
        }
        None
    };
    let imgfs = fs::fuse::ImgFs::new(fs_ep, materialiser);
    let fsname = format!("imgfs:{channel}");
    let session = match fs::kernel_mount::mount(mountpoint, &fsname) {
        Ok(dev) => fuser::Session::from_fd(imgfs, dev, cfg.acl, cfg),
        // Not privileged to mount(2): fuser goes through fusermount3 (type `fuse`).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fuser::Session::new(imgfs, mountpoint, &cfg),
        Err(e) => Err(e),
    }
    .with_context(|| format!("mounting {}", mountpoint.display()))?;
    let quota = Quota { limit: a.cache_size, min_free: a.min_free };
    let pins: Vec<Pin> = state
        .iter()
        .flat_map(|s| &s.pins)
        .filter_map(|p| Some(Pin { generation: p.generation.clone(), manifest: p.manifest.parse().ok()? }))
        .collect();
    let keeper = Keeper::new(ep.clone(), quota, pins).with_context(|| format!("reading the cache {}", cache.display()))?;
    keeper.run();
    let dev = std::os::fd::AsFd::as_fd(&session).try_clone_to_owned().ok();
    let invalidate = fs::invalidate::Invalidator::new(session.notifier(), dev);
    let control = Arc::new(Control::new(
        ep,
        keeper.clone(),
        trust,
        channel.to_string(),
        (version, previous_version),
        cache.to_path_buf(),
        invalidate,
    ));
    control.save_state();
    let socket = fs::control::socket_path(mountpoint);
    control.serve(&socket).with_context(|| format!("listening on {}", socket.display()))?;
    control.poll(std::time::Duration::from_secs(a.poll_seconds.or(server_poll).unwrap_or(300).max(1)));
    // Prefetches a restart interrupted, and pins, resume in the background (pins are
    // prefetched so that they hold the whole generation).
    let resume: Vec<String> = state.iter().flat_map(|s| s.prefetching.iter().chain(&s.pins)).map(|p| p.manifest.clone()).collect();
    for manifest in resume {
        if let Err(e) = control.start_prefetch(&manifest, false, None) {
            tracing::warn!(manifest, error = %e, "cannot resume a prefetch");
        }
    }
    let traffic = fetcher.traffic();
    // Scripts and tests wait for this line.
    let line = format!(
        "imgfs: mounted {label} (channel {channel} v{version}{}) at {} in {} ms, {} requests",
        if offline { ", not verified now: from the cache" } else { "" },
        mountpoint.display(),
        start.elapsed().as_millis(),
        traffic.requests
    );
    eprintln!("{line}");
    if let Some(mut w) = ready.take() {
        let _ = writeln!(w, "{line}");
    }
    session.run().context("serving the mount")?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
