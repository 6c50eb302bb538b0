//! Shared server state, passed explicitly to every handler, and the bearer-token check.

use std::sync::Arc;

use axum::http::HeaderMap;
use cache::Store;

use crate::config::Config;
use api::ErrorCode;

use crate::error::AppError;
use crate::meta::Meta;

/// What every handler can reach: one reference-counted `Shared`, cheap to clone per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared state.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The server's state.
pub struct Shared {
    /// Objects.
    pub store: Arc<Store>,
    /// Generations and channels.
    pub meta: Arc<Meta>,
    /// The publishing token.
    pub token: Arc<String>,
    /// Settings.
    pub config: Arc<Config>,
    /// The data directory's lock, held while the state lives.
    pub data_lock: Arc<nix::fcntl::Flock<std::fs::File>>,
    /// Serialises channel writes so versions stay dense and increasing.
    pub channel_writes: Arc<tokio::sync::Mutex<()>>,
    /// Garbage collection holds this for writing; everything that adds objects, publishes or
    /// moves channels holds it for reading, so a collection never races them.
    pub gc_lock: Arc<tokio::sync::RwLock<()>>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Small objects kept in memory.
    pub hot_objects: Arc<crate::hot::HotObjects>,
    /// Current channel versions kept in memory.
    pub hot_channels: Arc<crate::hot::HotChannels>,
    /// The signed metadata (TUF repository) and the online keys.
    pub tuf: Arc<crate::tuf::Repo>,
}

impl Shared {
    /// Requires `Authorization: Bearer TOKEN`.
    pub fn require_token(&self, headers: &HeaderMap) -> Result<(), AppError> {
        let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Ok(()),
            Some(_) => Err(AppError::new(ErrorCode::BadToken, "the bearer token is wrong")),
            None => {
                Err(AppError::new(ErrorCode::TokenRequired, "this request needs Authorization: Bearer TOKEN"))
            }
        }
    }

    /// Whether the request carries the right token (for reads that do more when it does).
    pub fn has_token(&self, headers: &HeaderMap) -> bool {
        self.require_token(headers).is_ok()
    }

    /// Requires the token for reads when the configuration says so.
    pub fn require_read(&self, headers: &HeaderMap) -> Result<(), AppError> {
        if self.config.token_for_reads {
            self.require_token(headers)
        } else {
            Ok(())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs blocking storage work off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AppError> + Send + 'static) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AppError::internal("a storage task", e))?
}
