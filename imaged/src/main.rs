//! `imaged`: the image server binary. Parses arguments, loads the configuration, serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use imaged::config::Config;

// Small allocations on every request (headers, spans, buffers): mimalloc serves them from
// per-thread pools and measurably raised small-object throughput over glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// imaged: stores image objects and generations and serves channels over HTTP.
#[derive(Parser, Debug)]
#[command(name = "imaged", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct Settings {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides the config).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:4640 (port 0 picks a free one).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

impl Settings {
    fn load(self) -> Result<Config> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(d) = self.data {
            cfg.data = d;
        }
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        Ok(cfg)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP. Runs with embedded defaults; a config file and flags override them.
    Serve {
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete objects no kept generation reaches. Runs in the server when one is serving the
    /// data directory (over HTTP, with the token), else directly on the directory.
    Gc {
        #[command(flatten)]
        settings: Settings,
        /// Report what would be deleted without deleting.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    // Log lines are written by a background thread so a slow terminal or disk never holds up
    // a request; the guard flushes them at exit.
    let (writer, _flush) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "imaged=info".into()))
        .with_writer(writer)
        .init();
    match Cli::parse().command {
        Command::Serve { settings } => serve(settings.load()?),
        Command::Gc { settings, dry_run, json } => {
            let report = gc(settings.load()?, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                println!(
                    "{verb} {} objects ({} bytes) and {} generations; kept {} generations and {} objects ({} pinned by pushes in progress)",
                    report["objects_removed"],
                    report["bytes_freed"],
                    report["generations_removed"].as_array().map_or(0, Vec::len),
                    report["generations_kept"].as_array().map_or(0, Vec::len),
                    report["objects_kept"],
                    report["objects_pinned"],
                );
                for g in report["generations_removed"].as_array().into_iter().flatten() {
                    println!("  {verb} generation {}", g.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
    }
}

/// Collects in this process when the data directory is free, else asks the server using it.
fn gc(cfg: Config, dry_run: bool) -> Result<serde_json::Value> {
    let listen = cfg.listen;
    let data = cfg.data.clone();
    let token_file = data.join("admin.token");
    let configured_token = cfg.token.clone();
    match imaged::open(cfg) {
        Ok((state, _)) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = rt.block_on(imaged::gc::run(&state, dry_run)).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            Ok(serde_json::to_value(report)?)
        }
        Err(imaged::OpenError::Meta(e)) if e.to_string().contains("lock") => {
            let token = match configured_token {
                Some(t) => t,
                None => std::fs::read_to_string(&token_file)
                    .with_context(|| format!("a server holds {}; reading its token from {}", data.display(), token_file.display()))?
                    .trim()
                    .to_string(),
            };
            let url = format!("http://{listen}/v1/gc");
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(3600))
                .build()?;
            let resp = client
                .post(&url)
                .bearer_auth(token)
                .json(&serde_json::json!({ "dry_run": dry_run }))
                .send()
                .with_context(|| format!("a server holds {}; asking it at {url}", data.display()))?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().unwrap_or_default();
            if !status.is_success() {
                anyhow::bail!("{url}: {status}: {}", body["message"].as_str().unwrap_or("no message"));
            }
            Ok(body)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening data directory {}", data.display()))),
    }
}

#[tokio::main]
async fn serve(cfg: Config) -> Result<()> {
    let data = cfg.data.clone();
    let listen = cfg.listen;
    let (state, generated) = imaged::open(cfg).with_context(|| format!("opening data directory {}", data.display()))?;
    if let Some(path) = generated {
        tracing::warn!(
            "no token configured: generated one into {} (mode 0600); imgctl takes it from --token or IMAGED_TOKEN",
            path.display()
        );
    }
    if state.config.gc_interval_seconds > 0 {
        let (st, every) = (state.clone(), std::time::Duration::from_secs(state.config.gc_interval_seconds));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = imaged::gc::run(&st, false).await {
                    tracing::error!(error = %e.message, "scheduled garbage collection failed");
                }
            }
        });
    }
    {
        // The online roles are signed again before they expire, by the server itself.
        let st = state.clone();
        let shortest = st.config.tuf_timestamp_seconds.min(st.config.tuf_snapshot_seconds).min(st.config.tuf_channels_seconds);
        let every = std::time::Duration::from_millis((shortest.max(2) as u64 * 1000 / 4).clamp(500, 60_000));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let s = st.clone();
                match tokio::task::spawn_blocking(move || s.tuf.resign_due(&s.meta)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "re-signing the online roles failed"),
                    Err(e) => tracing::error!(error = %e, "re-signing task failed"),
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port.
    eprintln!("imaged listening on http://{addr}");
    // Responses are written in several pieces (head, then streamed records): without
    // TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~20-40 ms to each.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, imaged::app(state)).with_graceful_shutdown(shutdown()).await.context("serving")?;
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
