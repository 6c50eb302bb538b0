//! `imaged`: the image server binary. Parses arguments, loads the configuration, serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
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
    /// Bring a static copy of the repository (serving packs, layouts, signed metadata) up to
    /// date in OUT, for any web server or bucket to serve to endpoints without imaged
    /// (docs/scale.md). Safe while the server runs; deletes nothing.
    ExportStatic {
        #[command(flatten)]
        settings: Settings,
        /// The directory the web server serves (created if needed).
        out: std::path::PathBuf,
    },
    /// Keep a copy of a primary's repository, or of some of its channels, checking every signed
    /// file and every object before serving it, and serve it to endpoints (they list it in
    /// `--server` like a primary). Signs nothing; serves the last good state when the upstream
    /// fails or lies (docs/scale.md).
    Mirror {
        /// The upstream's base URL: a primary, another mirror or a static copy.
        #[arg(long)]
        from: String,
        /// The mirror's directory (`trust/`, `site/`, `tmp/`).
        #[arg(long)]
        dir: PathBuf,
        /// The root to trust, as endpoints get it; needed the first time only.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Copy only this channel's generations (repeat); without it, every signed generation.
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// With --channel: generations kept per channel, the current one included.
        #[arg(long, default_value_t = 3)]
        keep: u64,
        /// Address to serve on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:4641")]
        listen: SocketAddr,
        /// Seconds between two rounds.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// One round, print what it copied, and exit (serve `DIR/site/` with any web server).
        #[arg(long)]
        once: bool,
    },
    #[command(flatten)]
    Docs(cache::cli_docs::DocsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Completions and man pages: no logging, no seams.
    if let Command::Docs(docs) = &cli.command {
        return ExitCode::from(docs.run(Cli::command()) as u8);
    }
    // Log lines are written by a background thread so a slow terminal or disk never holds up
    // a request; the guard flushes them at exit.
    let (writer, _flush) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "imaged=info".into()))
        .with_writer(writer)
        .init();
    cache::seams::warn_if_set("imaged");
    let result = match cli.command {
        Command::Serve { settings } => settings.load().and_then(serve),
        Command::Gc { settings, dry_run, json } => settings.load().and_then(|cfg| gc(cfg, dry_run, json)),
        Command::ExportStatic { settings, out } => settings.load().and_then(|cfg| {
            let done = imaged::serve::export_static(&cfg.data, &out)?;
            println!("{}: {} new packs, {} new layouts, {} metadata files written", out.display(), done.packs, done.layouts, done.metadata);
            Ok(())
        }),
        Command::Mirror { from, dir, root, channels, keep, listen, interval, once } => {
            let o = imaged::mirror::MirrorOptions { from, dir, root, channels, keep };
            if once {
                imaged::mirror::sync(&o).map_err(anyhow::Error::from).map(|done| {
                    println!(
                        "{}: {} generations served; fetched {} packs ({} bytes), {} layouts; wrote {} metadata files; removed {} layouts, {} packs",
                        o.dir.display(),
                        done.generations.len(),
                        done.packs,
                        done.pack_bytes,
                        done.layouts,
                        done.metadata,
                        done.pruned_layouts,
                        done.pruned_packs
                    )
                })
            } else {
                mirror(o, listen, std::time::Duration::from_secs(interval.max(1)))
            }
        }
        Command::Docs(_) => unreachable!("answered before logging starts"),
    };
    match result {
        Ok(()) => ExitCode::from(imaged::exit::OK),
        Err(e) => {
            eprintln!("imaged: {e:#}");
            ExitCode::from(imaged::exit::code_of(&e))
        }
    }
}

fn gc(cfg: Config, dry_run: bool, json: bool) -> Result<()> {
    let report = imaged::maintenance::collect(cfg, dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} objects ({} bytes) and {} generations; kept {} generations and {} objects ({} pinned by pushes in progress)",
        report.objects_removed,
        report.bytes_freed,
        report.generations_removed.len(),
        report.generations_kept.len(),
        report.objects_kept,
        report.objects_pinned,
    );
    for g in &report.generations_removed {
        println!("  {verb} generation {g}");
    }
    Ok(())
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
    imaged::maintenance::spawn(&state);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port.
    eprintln!("imaged listening on http://{addr}");
    let listener = nodelay(listener);
    let fleet = state.fleet.clone();
    let stopping = async move {
        shutdown().await;
        fleet.close();
    };
    axum::serve(listener, imaged::app(state)).with_graceful_shutdown(stopping).await.context("serving")?;
    Ok(())
}

#[tokio::main]
async fn mirror(o: imaged::mirror::MirrorOptions, listen: SocketAddr, interval: std::time::Duration) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    // Scripts and tests read this line to learn the port.
    eprintln!("imaged listening on http://{}", listener.local_addr()?);
    eprintln!("imaged mirrors {} into {}", o.from, o.dir.display());
    tokio::select! {
        r = imaged::mirror::run(o, nodelay(listener), interval) => r,
        _ = shutdown() => Ok(()),
    }
}

/// Responses are written in several pieces (head, then streamed records or file chunks):
/// without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~20-40 ms to each.
fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
