//! imaged, the image server: stores objects, publishes generations and moves channels over
//! HTTP. `app(state)` is the whole HTTP surface; `open(config)` builds the state from disk.
#![warn(missing_docs)]

pub mod affected;
pub mod audit;
pub mod backend;
pub mod channels;
pub mod config;
pub mod error;
pub mod exit;
pub mod fleet;
pub mod fleet_api;
pub mod gate;
pub mod gate_api;
pub mod gc;
pub mod generations;
pub mod hot;
pub mod maintenance;
pub mod meta;
pub mod metrics;
pub mod mirror;
pub mod objects;
pub mod rollouts;
pub mod rollouts_api;
pub mod serve;
pub mod state;
pub mod trust_api;
pub mod tuf;
pub mod users;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use api::ErrorCode;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

use crate::config::Config;
use crate::error::AppError;
use crate::state::AppState;

/// The HTTP API (documented in docs/api.md).
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_object_bytes.max(state.config.max_manifest_bytes) as usize + 1024;
    let r = |i: usize| metrics::ROUTES[i];
    Router::new()
        .route(r(0), get(|| async { "ok\n" }))
        .route(r(1), get(metrics_text))
        .route(r(2), post(gc::handle))
        .route(r(3), post(objects::missing))
        .route(r(4), post(objects::batch))
        .route(r(5), post(objects::upload))
        .route(r(6), get(objects::get).put(objects::put))
        .route(r(7), get(generations::list).post(generations::publish))
        .route(r(8), get(generations::get))
        .route(r(9), axum::routing::put(generations::keep).delete(generations::keep))
        .route(r(10), get(channels::get).put(channels::set))
        .route(r(11), get(channels::history))
        .route(r(12), post(channels::promote))
        .route(r(13), post(channels::rollback))
        .route(r(14), get(trust_api::status))
        .route(r(15), post(trust_api::add_key))
        .route(r(16), axum::routing::put(trust_api::put_root))
        .route(r(17), axum::routing::put(trust_api::put_role))
        .route(r(18), get(trust_api::file))
        .route(r(19), get(trust_api::target))
        .route(r(20), get(gate_api::get_policy).put(gate_api::put_policy))
        .route(r(21), post(gate_api::post_evidence))
        .route(r(22), post(gate_api::post_approval))
        .route(r(23), get(gate_api::report))
        .route(r(24), get(affected::handle))
        .route(r(25), get(users::list).post(users::add))
        .route(r(26), axum::routing::delete(users::revoke))
        .route(r(27), get(fleet_api::list_tokens).post(fleet_api::create_token))
        .route(r(28), post(fleet_api::enroll))
        .route(r(29), post(fleet_api::session))
        .route(r(30), get(fleet_api::desired))
        .route(r(31), get(fleet_api::events))
        .route(r(32), post(fleet_api::reports))
        .route(r(33), get(fleet_api::list_endpoints))
        .route(r(34), get(fleet_api::show_endpoint).delete(fleet_api::revoke_endpoint))
        .route(r(35), axum::routing::put(fleet_api::label_endpoint))
        .route(r(36), get(fleet_api::list_groups).post(fleet_api::create_group))
        .route(r(37), get(fleet_api::show_group).put(fleet_api::put_group).delete(fleet_api::remove_group))
        .route(r(38), get(fleet_api::compliance))
        .route(r(39), get(audit::handle))
        .route(r(40), get(rollouts_api::list).post(rollouts_api::start))
        .route(r(41), get(rollouts_api::show))
        .route(r(42), post(rollouts_api::act))
        .route(r(43), post(rollouts_api::withdraw))
        .route(r(44), axum::routing::put(rollouts_api::pin).delete(rollouts_api::pin))
        .route(r(45), axum::routing::put(rollouts_api::hold).delete(rollouts_api::hold))
        .route(r(46), axum::routing::put(rollouts_api::pin_group).delete(rollouts_api::pin_group))
        .route(r(47), get(serve::routes::pack))
        .route(r(48), get(serve::routes::layout))
        .fallback(|| async { AppError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state((state.clone(), limit), around_request))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let st = state.clone();
    if let Ok(Ok(gens)) = tokio::task::spawn_blocking(move || st.meta.generations()).await {
        state.metrics.generations.set(gens.len() as i64);
    }
    let body = state.metrics.encode();
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Around every request: gives it an id (also returned as `x-request-id`) and a span, refuses
/// a body whose declared length is over the limit before reading any of it (`DefaultBodyLimit`
/// still stops bodies without a declared length), turns the framework's plain-text rejections
/// into JSON errors, logs the outcome and counts it in the metrics.
async fn around_request(
    axum::extract::State((state, limit)): axum::extract::State<(AppState, usize)>,
    req: Request,
    next: Next,
) -> Response {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let method = metrics::method_label(req.method());
    let route = metrics::route_label(req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str()));
    let start = std::time::Instant::now();
    let span = tracing::info_span!("request", id, method, route);
    let uri = req.uri().clone();
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut resp = match declared {
        Some(n) if n > limit as u64 => {
            AppError::new(ErrorCode::BodyTooLarge, format!("a body of {n} bytes is over the limit of {limit}"))
                .into_response()
        }
        _ => next.run(req).instrument(span.clone()).await,
    };
    let status = resp.status();
    let failed = status.is_client_error() || status.is_server_error();
    let is_json = resp.headers().get(axum::http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if failed && !is_json {
        // Extractor rejections (bad JSON, oversized body, bad path) arrive as text.
        let body = axum::body::to_bytes(std::mem::take(resp.body_mut()), 64 * 1024).await.unwrap_or_default();
        resp = error::rejection_response(status, &body);
    }
    let elapsed = start.elapsed();
    let micros = elapsed.as_micros() as u64;
    // Changes and failures at info; successful reads, the bulk of the traffic, at debug.
    if failed || !matches!(method, "GET" | "HEAD") {
        tracing::info!(parent: &span, path = uri.path(), status = status.as_u16(), micros, "done");
    } else {
        tracing::debug!(parent: &span, path = uri.path(), status = status.as_u16(), micros, "done");
    }
    state.metrics.latency.get_or_create(&metrics::RouteLabels { route }).observe(elapsed.as_secs_f64());
    state.metrics.requests.get_or_create(&metrics::RequestLabels { route, method, status: status.as_u16() }).inc();
    resp.headers_mut().insert("x-request-id", HeaderValue::from(id));
    resp
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A directory or the token file could not be created or read.
    #[error("cannot prepare {path}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] cache::OpenError),
    /// Another process (a running server) holds the data directory.
    #[error("{path} is in use by another imaged")]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    /// A configuration value that cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The signed metadata or the online keys could not be loaded.
    #[error(transparent)]
    Tuf(#[from] tuf::TufError),
    /// The fleet's records could not be loaded.
    #[error(transparent)]
    Fleet(#[from] fleet::LoadError),
    /// The rollouts could not be loaded.
    #[error(transparent)]
    Rollouts(#[from] rollouts::LoadError),
    /// The serving packs and layouts could not be opened (the bucket, with `[storage]`).
    #[error("serving packs and layouts: {0}")]
    Serving(#[from] serve::ServeError),
}

/// Opens the data directory: `store/`, `meta/`, and the publishing token (generated into
/// `admin.token`, mode 0600, when none is configured). Returns the state and, when a token
/// was generated, the file it was written to.
pub fn open(config: Config) -> Result<(AppState, Option<std::path::PathBuf>), OpenError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    std::fs::create_dir_all(&config.data).map_err(io(&config.data))?;
    // The lock makes this the only process using the data directory, so what a killed
    // predecessor left half-written can go. (rocksdb locks its own directory too; this one
    // lets callers tell "in use" from a failure without reading an error's text.)
    let lock_path = config.data.join("lock");
    let lock_file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
    let data_lock = match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(OpenError::Locked { path: lock_path }),
        Err((_, errno)) => return Err(OpenError::Io { path: lock_path, source: errno.into() }),
    };
    let meta = Arc::new(meta::Meta::open(&config.data.join("meta"))?);
    let store = cache::Store::open(config.data.join("store"))?;
    let store_dir = config.data.join("store");
    store.clean_tmp().map_err(io(&store_dir))?;
    if !store.broken_packs().is_empty() {
        let n = store.repair_packs().map_err(io(&store_dir))?;
        tracing::warn!(recovered = n, "rebuilt the index of packs a killed upload left without one");
    }
    let mut generated = None;
    let token = match &config.token {
        Some(t) => t.clone(),
        None => {
            let path = config.data.join("admin.token");
            match std::fs::read_to_string(&path) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    let bytes: [u8; 32] = rand::random();
                    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    let mut f =
                        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(io(&path))?;
                    f.write_all(format!("{t}\n").as_bytes()).and_then(|_| f.sync_all()).map_err(io(&path))?;
                    generated = Some(path);
                    t
                }
            }
        }
    };
    let lifetimes = tuf::Lifetimes {
        timestamp: config.tuf_timestamp_seconds.max(2),
        snapshot: config.tuf_snapshot_seconds.max(2),
        channels: config.tuf_channels_seconds.max(2),
        key_type: config.tuf_key_type.parse().map_err(|e: trust::keys::KeyError| OpenError::Config(format!("tuf_key_type: {e}")))?,
        poll_seconds: u64::from(config.poll_seconds.max(1)),
    };
    let tuf = tuf::Repo::open(&config.data.join("tuf"), lifetimes)?;
    let fleet = fleet::Fleet::load(meta.clone(), config.fleet())?;
    let serve_dir = config.data.join("serve");
    let metrics = metrics::Metrics::default();
    let serving = match &config.storage {
        None => serve::Serving::open(&serve_dir, config.serve_zstd_level)?,
        Some(bucket) => {
            let blobs = Arc::new(backend::Bucket::open(bucket).map_err(serve::ServeError::from)?);
            let cache_dir = config.data.join("bucket-cache");
            let cached = backend::ReadThrough::open(blobs, &cache_dir, bucket.cache_bytes, metrics.bucket_cache.clone()).map_err(io(&cache_dir))?;
            serve::Serving::open_in(&serve_dir, Arc::new(cached), config.serve_zstd_level)?
        }
    };
    let state = AppState::new(state::Shared {
        tuf: Arc::new(tuf),
        store: Arc::new(store),
        serving: Arc::new(serving),
        fleet: Arc::new(fleet),
        rollouts: Arc::new(rollouts::Engine::load(meta.clone())?),
        meta,
        token: Arc::new(token),
        channel_writes: Arc::new(tokio::sync::Mutex::new(())),
        gc_lock: Arc::new(tokio::sync::RwLock::new(())),
        metrics: Arc::new(metrics),
        hot_objects: Arc::new(hot::HotObjects::new(config.memory_cache_bytes)),
        hot_channels: Arc::new(hot::HotChannels::default()),
        config: Arc::new(config),
        data_lock: Arc::new(data_lock),
    });
    Ok((state, generated))
}

#[cfg(test)]
mod tests;
