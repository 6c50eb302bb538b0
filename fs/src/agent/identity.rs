//! The endpoint's identity: its ed25519 key (`STATE/endpoint.key`, mode 0600, made here and
//! never sent anywhere), its enrollment (`STATE/endpoint.json`: id and servers), and the
//! sessions it opens by signing `api::fleet::session_message` with that key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use api::fleet::{enroll_message, session_message, EndpointId, Enroll, Facts, Labels, SessionRequest};
use trust::keys::SecretKey;

use super::client::{Client, ClientError};

/// Why the identity could not be read, made or registered.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file of the state directory.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not an ed25519 secret key.
    #[error("{}: {why}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// `endpoint.json` does not read.
    #[error("{}: {why}", path.display())]
    BadEndpointFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The server refused or could not be reached.
    #[error("enrolling")]
    Enroll(#[source] ClientError),
    /// The server answered an id that is not the one of this key.
    #[error("the server answered endpoint id {answered}, but this key's id is {expected}")]
    WrongId {
        /// What the server said.
        answered: EndpointId,
        /// The key's id.
        expected: EndpointId,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

/// The key file of a state directory.
pub fn key_path(state: &Path) -> PathBuf {
    state.join("endpoint.key")
}

/// The enrollment file of a state directory.
pub fn endpoint_path(state: &Path) -> PathBuf {
    state.join("endpoint.json")
}

/// Reads the endpoint's key, or makes one: 32 random bytes, written to a temporary file
/// created 0600 with `O_EXCL`, synced, then linked to `endpoint.key` (which fails if another
/// process made the key first: that key is then read and used).
pub fn load_or_create_key(state: &Path) -> Result<SecretKey, IdentityError> {
    let path = key_path(state);
    match std::fs::read(&path) {
        Ok(bytes) => return read_key(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    std::fs::create_dir_all(state).map_err(io(state))?;
    let mut secret = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").map_err(io(Path::new("/dev/urandom")))?, &mut secret)
        .map_err(io(Path::new("/dev/urandom")))?;
    let key = SecretKey::from_bytes(&secret);
    let tmp = state.join(format!(".endpoint.key.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(&trust::keys::secret_to_file(&key)).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            cache::atomic::sync_dir(state).map_err(|e| IdentityError::Io { path: e.path, source: e.source })?;
            Ok(key)
        }
        // Another process made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            read_key(&path, &bytes)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

fn read_key(path: &Path, bytes: &[u8]) -> Result<SecretKey, IdentityError> {
    let key = trust::keys::secret_from_file(bytes).map_err(|e| IdentityError::BadKey { path: path.into(), why: e.to_string() })?;
    if key.public().ed25519_bytes().is_none() {
        return Err(IdentityError::BadKey { path: path.into(), why: format!("an endpoint's key is ed25519, this one is {}", key.public().keytype()) });
    }
    Ok(key)
}

/// The id of the endpoint holding `key`.
pub fn endpoint_id(key: &SecretKey) -> EndpointId {
    EndpointId::of_key(key.public().ed25519_bytes().expect("an endpoint's key is ed25519 (read_key)"))
}

/// What `endpoint.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointFile {
    /// The id the server gave (the key's).
    pub endpoint: EndpointId,
    /// The servers it enrolled with.
    pub servers: Vec<String>,
}

/// Reads `endpoint.json`; `None` if the endpoint has not enrolled.
pub fn read_endpoint(state: &Path) -> Result<Option<EndpointFile>, IdentityError> {
    let path = endpoint_path(state);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| IdentityError::BadEndpointFile { path, why: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Writes `endpoint.json` atomically (temporary file, fsync, rename).
pub fn write_endpoint(state: &Path, file: &EndpointFile) -> Result<(), IdentityError> {
    let mut bytes = serde_json::to_vec_pretty(file).expect("serialises");
    bytes.push(b'\n');
    cache::atomic::write(&endpoint_path(state), &bytes).map_err(|e| IdentityError::Io { path: e.path, source: e.source })
}

/// The body that enrolls `key` with enrollment token `token`.
pub fn enroll_request(key: &SecretKey, token: &str, facts: Facts, labels: Labels) -> Enroll {
    let public_key = hex::encode(key.public().ed25519_bytes().expect("an endpoint's key is ed25519 (read_key)"));
    let signature = key.sign(&enroll_message(token, &public_key));
    Enroll { token: token.to_string(), public_key, signature, facts, labels }
}

/// The body that opens a session at `time` (seconds since the epoch).
pub fn session_request(key: &SecretKey, time: i64) -> SessionRequest {
    let endpoint = endpoint_id(key);
    let signature = key.sign(&session_message(&endpoint, time));
    SessionRequest { endpoint, time, signature }
}

/// Enrolls: the key (made if there is none), the facts of a cache at `cache`, the request,
/// then `endpoint.json`. Enrolling again with the same key answers the same id.
pub fn enroll(state: &Path, servers: &[String], token: &str, labels: Labels, cache: &Path) -> Result<EndpointFile, IdentityError> {
    let key = load_or_create_key(state)?;
    let facts = super::facts::collect(cache);
    let client = Client::new(servers);
    let answered = client.enroll(&enroll_request(&key, token, facts, labels)).map_err(IdentityError::Enroll)?;
    let expected = endpoint_id(&key);
    if answered.endpoint != expected {
        return Err(IdentityError::WrongId { answered: answered.endpoint, expected });
    }
    let file = EndpointFile { endpoint: expected, servers: servers.to_vec() };
    write_endpoint(state, &file)?;
    Ok(file)
}

/// Seconds before its expiry a session is renewed.
const RENEW_BEFORE: i64 = 60;

/// The endpoint's session, opened when needed and shared by the agent's threads.
pub struct Sessions {
    key: SecretKey,
    current: Mutex<Option<api::fleet::Session>>,
}

impl Sessions {
    /// Sessions of the endpoint holding `key`.
    pub fn new(key: SecretKey) -> Sessions {
        Sessions { key, current: Mutex::new(None) }
    }

    /// A session token valid at `now` (seconds since the epoch): the one held, or a new one.
    pub fn token(&self, client: &Client, now: i64) -> Result<String, ClientError> {
        let mut current = self.current.lock().unwrap();
        if let Some(s) = current.as_ref().filter(|s| s.expires - RENEW_BEFORE > now) {
            return Ok(s.token.clone());
        }
        let s = client.session(&session_request(&self.key, now))?;
        let token = s.token.clone();
        *current = Some(s);
        Ok(token)
    }

    /// Forgets `token` (the server said it expired): the next `token` opens a new session.
    pub fn expired(&self, token: &str) {
        let mut current = self.current.lock().unwrap();
        if current.as_ref().is_some_and(|s| s.token == token) {
            *current = None;
        }
    }

    /// Runs `f` with a session token; once more with a new session if the server says the
    /// token expired.
    pub fn with<T>(&self, client: &Client, now: i64, f: impl Fn(&str) -> Result<T, ClientError>) -> Result<T, ClientError> {
        let token = self.token(client, now)?;
        match f(&token) {
            Err(e) if e.code() == Some(api::ErrorCode::SessionExpired) => {
                self.expired(&token);
                let token = self.token(client, now)?;
                f(&token)
            }
            other => other,
        }
    }
}
