//! The server's background work and the `imaged gc` command: scheduled collections, the
//! online roles signed again before they expire, and a collection run in this process or,
//! when a server holds the data directory, asked of that server over HTTP.

use std::time::Duration;

use api::server::{GcReport, GcRequest};
use api::ErrorBody;

use crate::config::Config;
use crate::state::AppState;

/// Starts the background loops of a serving process (on the current tokio runtime).
pub fn spawn(state: &AppState) {
    if state.config.gc_interval_seconds > 0 {
        let (st, every) = (state.clone(), Duration::from_secs(state.config.gc_interval_seconds));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = crate::gc::run(&st, false, "imaged").await {
                    tracing::error!(error = %e, "scheduled garbage collection failed");
                }
            }
        });
    }
    crate::rollouts_api::spawn(state);
    crate::serve::spawn_missing(state);
    if state.serving.blobs().is_bucket() {
        spawn_bucket(state);
    }
    // Last-seen times of endpoints, kept in memory by check-ins, reach the disk in batches.
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let f = st.fleet.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || f.flush_seen()).await {
                tracing::error!(error = %e, "writing endpoints' last-seen times failed");
            }
        }
    });
    // The online roles are signed again before they expire, by the server itself.
    let st = state.clone();
    let shortest = st.config.tuf_timestamp_seconds.min(st.config.tuf_snapshot_seconds).min(st.config.tuf_channels_seconds);
    let every = Duration::from_millis((shortest.max(2) as u64 * 1000 / 4).clamp(500, 60_000));
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

/// Why `imaged gc` could not collect.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The data directory could not be opened.
    #[error("opening data directory {data}")]
    Open {
        /// The data directory.
        data: std::path::PathBuf,
        /// The cause.
        #[source]
        source: crate::OpenError,
    },
    /// A server holds the directory and its token could not be read.
    #[error("a server holds {data}; reading its token from {token_file}")]
    Token {
        /// The data directory.
        data: std::path::PathBuf,
        /// Where the token was looked for.
        token_file: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server using the directory could not be reached.
    #[error("a server holds {data}; asking it at {url}")]
    Transport {
        /// The data directory.
        data: std::path::PathBuf,
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server refused or failed the collection.
    #[error("{url}: {status}: {}", body.message)]
    Refused {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's error.
        body: ErrorBody,
    },
    /// The collection failed in this process.
    #[error("garbage collection: {0}")]
    Failed(crate::error::AppError),
}

/// Collects garbage in this process when the data directory is free, else asks the server
/// that holds it (`POST /v1/gc` on the configured address, with the token).
pub fn collect(cfg: Config, dry_run: bool) -> Result<GcReport, CollectError> {
    let (listen, data) = (cfg.listen, cfg.data.clone());
    let token_file = data.join("admin.token");
    let configured_token = cfg.token.clone();
    match crate::open(cfg) {
        Ok((state, _)) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|source| CollectError::Open {
                data: data.clone(),
                source: crate::OpenError::Io { path: data.clone(), source },
            })?;
            rt.block_on(crate::gc::run(&state, dry_run, "local")).map_err(CollectError::Failed)
        }
        Err(crate::OpenError::Locked { .. }) => {
            let token = match configured_token {
                Some(t) => t,
                None => std::fs::read_to_string(&token_file)
                    .map_err(|source| CollectError::Token { data: data.clone(), token_file: token_file.clone(), source })?
                    .trim()
                    .to_string(),
            };
            let url = format!("http://{listen}/v1/gc");
            let transport = |source| CollectError::Transport { data: data.clone(), url: url.clone(), source };
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(3600))
                .build()
                .map_err(transport)?;
            let resp = client.post(&url).bearer_auth(token).json(&GcRequest { dry_run }).send().map_err(transport)?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.json::<ErrorBody>().unwrap_or_else(|_| ErrorBody::new(api::ErrorCode::Unknown, "no message"));
                return Err(CollectError::Refused { url, status: status.as_u16(), body });
            }
            resp.json::<GcReport>().map_err(transport)
        }
        Err(source) => Err(CollectError::Open { data, source }),
    }
}

/// With the served repository in a bucket: every second, the signed metadata goes there once
/// the generations it may name are served (`serve::sync_bucket_metadata`); every 30 s, a
/// generation still without its layout (a build the bucket failed) is built again.
fn spawn_bucket(state: &AppState) {
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let sent = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let mut round = 0u64;
        let mut failing = false;
        loop {
            tick.tick().await;
            round += 1;
            if round % 30 == 0 {
                crate::serve::spawn_missing(&st);
            }
            let (s, sent) = (st.clone(), sent.clone());
            match tokio::task::spawn_blocking(move || crate::serve::sync_bucket_metadata(&s, &mut sent.lock().unwrap())).await {
                Ok(Ok(n)) => {
                    if n > 0 || failing {
                        tracing::info!(files = n, "signed metadata in the bucket");
                    }
                    failing = false;
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::error!(error = %anyhow::Error::from(e), "putting the signed metadata in the bucket failed; retrying every second");
                    }
                    failing = true;
                }
                Err(e) => tracing::error!(error = %e, "the bucket's metadata task failed"),
            }
        }
    });
}
