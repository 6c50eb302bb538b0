//! Shared server state, passed explicitly to every handler, and who may do what: bearer tokens
//! (the bootstrap `admin.token` and users' tokens) checked against roles.

use std::sync::Arc;

use axum::http::HeaderMap;
use cache::Store;

use crate::config::Config;
use api::users::{Permission, Role};
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
    /// The serving packs and layouts (the read path of immutable files).
    pub serving: Arc<crate::serve::Serving>,
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
    /// Enrolled endpoints, groups, enrollment tokens.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// Rollouts and withdrawn generations.
    pub rollouts: Arc<crate::rollouts::Engine>,
}

/// Who made a request: the bootstrap admin (`admin.token`) or a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `admin` for the bootstrap token, else the user's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Actor {
    /// Nobody: a read without a token on a server that does not require one.
    pub fn anonymous() -> Actor {
        Actor { name: "anonymous".into(), role: Role::Viewer }
    }
}

impl Shared {
    /// The actor behind `Authorization: Bearer TOKEN`, which must be allowed `p`: 401
    /// `token_required` without a token, 403 `bad_token` for an unknown or revoked one, 403
    /// `forbidden` when its role does not allow `p`.
    pub fn authorize(&self, headers: &HeaderMap, p: Permission) -> Result<Actor, AppError> {
        let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let Some(given) = given else {
            return Err(AppError::new(ErrorCode::TokenRequired, "this request needs Authorization: Bearer TOKEN"));
        };
        let actor = if constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            Actor { name: "admin".into(), role: Role::Admin }
        } else {
            let hash = format::Digest::of(given.as_bytes()).to_hex();
            match self.meta.user_by_token(&hash).map_err(|e| AppError::internal("reading users", e))? {
                Some(u) => Actor { name: u.name.to_string(), role: u.role },
                None => return Err(AppError::new(ErrorCode::BadToken, "the bearer token is wrong or revoked")),
            }
        };
        if !actor.role.allows(p) {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                format!("{} is a {} and may not do this ({p:?} is needed)", actor.name, actor.role.as_str()),
            ));
        }
        Ok(actor)
    }

    /// Whether the request carries a token allowed `p` (for reads that do more when it does).
    pub fn allowed(&self, headers: &HeaderMap, p: Permission) -> bool {
        self.authorize(headers, p).is_ok()
    }

    /// Read access: anyone, unless the configuration requires a token for reads.
    pub fn require_read(&self, headers: &HeaderMap) -> Result<Actor, AppError> {
        if self.config.token_for_reads {
            self.authorize(headers, Permission::Read)
        } else {
            Ok(Actor::anonymous())
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
