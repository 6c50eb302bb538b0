//! `imgfs`: mounts an image channel from one or more imaged servers through FUSE.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fs::control::Control;
use fs::endpoint::{load_metadata, Endpoint};
use fs::fetch::{Fetcher, Limits};

/// imgfs: run an OS or application image from the network, verified and cached.
#[derive(Parser, Debug)]
#[command(name = "imgfs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount CHANNEL at MOUNTPOINT (in the foreground until unmounted).
    Mount {
        /// Servers, comma-separated, tried in order: http://a:4640,http://b:4640.
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<String>,
        /// Channel, e.g. os/stable.
        #[arg(long)]
        channel: String,
        /// Cache directory (objects and the endpoint's state).
        #[arg(long)]
        cache: PathBuf,
        /// Worker threads serving the kernel's requests.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Seconds between channel checks (default: what the server says, else 300).
        #[arg(long)]
        poll_seconds: Option<u64>,
        /// Where to mount.
        mountpoint: PathBuf,
    },
    /// Unmount MOUNTPOINT.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Show the mount's generations, channel version, servers and whether it is offline.
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
}

/// Sends a control command and prints the answer; fails if the mount reports an error.
fn control(mountpoint: &std::path::Path, command: &str) -> Result<()> {
    let answer = fs::control::request(mountpoint, command)?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    if let Some(e) = answer["error"].as_str() {
        anyhow::bail!("{command} on {}: {e}", mountpoint.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "fs=info,imgfs=info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Mount { server, channel, cache, threads, poll_seconds, mountpoint } => {
            mount(&server, &channel, &cache, threads, poll_seconds, &mountpoint)
        }
        Command::Status { mountpoint } => control(&mountpoint, "status"),
        Command::Update { mountpoint } => control(&mountpoint, "update"),
        Command::Rollback { mountpoint } => control(&mountpoint, "rollback"),
        Command::Umount { mountpoint } => {
            nix::mount::umount2(&mountpoint, nix::mount::MntFlags::empty()).with_context(|| format!("unmounting {}", mountpoint.display()))
        }
    }
}

fn mount(
    servers: &[String],
    channel: &str,
    cache: &std::path::Path,
    threads: usize,
    poll_seconds: Option<u64>,
    mountpoint: &std::path::Path,
) -> Result<()> {
    let start = std::time::Instant::now();
    let store = Arc::new(cache::Store::open(cache.join("store")).with_context(|| format!("opening the cache {}", cache.display()))?);
    let fetcher = Arc::new(Fetcher::new(servers, store, Limits::default()));
    // The channel from a server; with none reachable, the last generation this cache served.
    let saved = fs::state::load(cache).filter(|s| s.channel == channel);
    let mut server_poll = None;
    let (digest, label, version, offline) = match fetcher.channel(channel) {
        Ok(doc) => {
            server_poll = doc.poll_seconds;
            (
                doc.manifest.parse().with_context(|| format!("channel {channel} names a bad manifest digest"))?,
                doc.generation,
                doc.version,
                false,
            )
        }
        Err(e) => {
            let st =
                saved.clone().ok_or_else(|| anyhow::anyhow!("{e}; and the cache {} holds no generation of {channel}", cache.display()))?;
            tracing::warn!(error = %e, generation = %st.current.generation, "no server reachable: mounting from the cache");
            (st.current.manifest.parse().context("state file names a bad digest")?, st.current.generation, st.current.channel_version, true)
        }
    };
    let digest: format::Digest = digest;
    let mut complete = std::collections::HashSet::new();
    let manifest = load_metadata(&fetcher, digest, &mut complete).with_context(|| format!("loading {label} ({digest})"))?;
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
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = true;
    let session =
        fuser::Session::new(fs::fuse::ImgFs::new(fs_ep), mountpoint, &cfg).with_context(|| format!("mounting {}", mountpoint.display()))?;
    let control = Arc::new(Control::new(ep, channel.to_string(), (version, previous_version), cache.to_path_buf(), session.notifier()));
    control.save_state();
    let socket = fs::control::socket_path(mountpoint);
    control.serve(&socket).with_context(|| format!("listening on {}", socket.display()))?;
    control.poll(std::time::Duration::from_secs(poll_seconds.or(server_poll).unwrap_or(300).max(1)));
    let traffic = fetcher.traffic();
    // Scripts and tests wait for this line.
    eprintln!(
        "imgfs: mounted {label} (channel {channel} v{version}{}) at {} in {} ms, {} requests",
        if offline { ", offline, from the cache" } else { "" },
        mountpoint.display(),
        start.elapsed().as_millis(),
        traffic.requests
    );
    session.run().context("serving the mount")?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
