//! `imaged`: the image server binary. Parses arguments, loads the configuration, serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use imaged::config::Config;

/// imaged: stores image objects and generations and serves channels over HTTP.
#[derive(Parser, Debug)]
#[command(name = "imaged", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve HTTP. Runs with embedded defaults; a config file and flags override them.
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:4640 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "imaged=info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config, data, listen } => {
            let mut cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            if let Some(d) = data {
                cfg.data = d;
            }
            if let Some(l) = listen {
                cfg.listen = l;
            }
            serve(cfg)
        }
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
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port.
    eprintln!("imaged listening on http://{addr}");
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
