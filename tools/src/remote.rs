//! The HTTP client side of imaged's API, as `imgctl` uses it: every request has a deadline,
//! and server errors come back as their JSON code and message.

use std::time::Duration;

use format::Digest;
use serde_json::{json, Value};

/// A request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error status.
    #[error("{url}: {status} {code}: {message}")]
    Http {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's error code (`missing_objects`, `bad_token`, …).
        code: String,
        /// The server's message.
        message: String,
        /// The whole error body.
        body: Value,
    },
    /// No usable answer: refused, timed out, cut off.
    #[error("{url}: {source}")]
    Transport {
        /// The request URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
}

/// A server and the token to use with it.
pub struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::blocking::Client,
}

impl Remote {
    /// A client for `url` (e.g. `http://127.0.0.1:4640`).
    pub fn new(url: &str, token: Option<String>) -> Result<Remote, RemoteError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|source| RemoteError::Transport { url: url.to_string(), source })?;
        Ok(Remote { base: url.trim_end_matches('/').to_string(), token, client })
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder, url: &str) -> Result<Value, RemoteError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|source| RemoteError::Transport { url: url.to_string(), source })?;
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(RemoteError::Http {
            url: url.to_string(),
            status: status.as_u16(),
            code: body["error"].as_str().unwrap_or("unknown").to_string(),
            message: body["message"].as_str().unwrap_or("").to_string(),
            body,
        })
    }

    /// Which of `digests` the server lacks.
    pub fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, RemoteError> {
        let url = format!("{}/v1/objects/missing", self.base);
        let list: Vec<String> = digests.iter().map(Digest::to_hex).collect();
        let v = self.send(self.client.post(&url).json(&json!({ "digests": list })), &url)?;
        Ok(v["missing"].as_array().into_iter().flatten().filter_map(|d| d.as_str()?.parse().ok()).collect())
    }

    /// Uploads one framed object.
    pub fn put_object(&self, digest: &Digest, framed: Vec<u8>) -> Result<(), RemoteError> {
        let url = format!("{}/v1/objects/{digest}", self.base);
        self.send(self.client.put(&url).body(framed), &url).map(|_| ())
    }

    /// Uploads many framed objects in one request: records of digest, u32 LE length, bytes.
    pub fn upload(&self, records: Vec<u8>) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/objects/upload", self.base);
        self.send(self.client.post(&url).body(records), &url)
    }

    /// Marks (or unmarks) a generation `IMAGE@N` as kept by the server's garbage collection.
    pub fn keep(&self, image: &str, number: u64, keep: bool) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/generations/{image}/{number}/keep", self.base);
        let req = if keep { self.client.put(&url) } else { self.client.delete(&url) };
        self.send(req, &url)
    }

    /// Publishes a generation from its manifest bytes.
    pub fn publish(&self, manifest: Vec<u8>) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/generations", self.base);
        self.send(self.client.post(&url).body(manifest), &url)
    }

    /// Points `channel` at `generation` (`IMAGE@N` or a manifest digest).
    pub fn channel_set(&self, channel: &str, generation: &str) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/channels/{channel}", self.base);
        self.send(self.client.put(&url).json(&json!({ "generation": generation })), &url)
    }

    /// The channel's current version.
    pub fn channel_get(&self, channel: &str) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/channels/{channel}", self.base);
        self.send(self.client.get(&url), &url)
    }

    /// Points `to` at `from`'s generation.
    pub fn promote(&self, from: &str, to: &str) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/promote", self.base);
        self.send(self.client.post(&url).json(&json!({ "from": from, "to": to })), &url)
    }

    /// A new version of `channel` naming `to`, or its previous generation.
    pub fn rollback(&self, channel: &str, to: Option<&str>) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/rollback", self.base);
        self.send(self.client.post(&url).json(&json!({ "channel": channel, "to": to })), &url)
    }

    /// The signed metadata's state and the server's online keys (`GET /v1/tuf`).
    pub fn tuf_status(&self) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/tuf", self.base);
        self.send(self.client.get(&url), &url)
    }

    /// A metadata file as the server publishes it (`ROLE.json`, `N.ROLE.json`; the role
    /// name encoded); `None` if it has none.
    pub fn tuf_file(&self, name: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let url = format!("{}/tuf/{name}", self.base);
        let resp = self.client.get(&url).send().map_err(|source| RemoteError::Transport { url: url.clone(), source })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = resp.status();
        let bytes = resp.bytes().map_err(|source| RemoteError::Transport { url: url.clone(), source })?;
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(RemoteError::Http {
                url,
                status: status.as_u16(),
                code: body["error"].as_str().unwrap_or("unknown").to_string(),
                message: body["message"].as_str().unwrap_or("").to_string(),
                body,
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Uploads a root signed offline.
    pub fn put_root(&self, bytes: Vec<u8>) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/tuf/root", self.base);
        self.send(self.client.put(&url).body(bytes), &url)
    }

    /// Uploads `targets` or an image family's role, signed offline.
    pub fn put_role(&self, role: &str, bytes: Vec<u8>) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/tuf/roles/{role}", self.base);
        self.send(self.client.put(&url).body(bytes), &url)
    }

    /// Has the server make a new key for online role `role`; its public key object.
    pub fn add_online_key(&self, role: &str) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/tuf/keys/{role}", self.base);
        self.send(self.client.post(&url), &url)
    }

    /// Every version of `channel`.
    pub fn history(&self, channel: &str) -> Result<Value, RemoteError> {
        let url = format!("{}/v1/history/{channel}", self.base);
        self.send(self.client.get(&url), &url)
    }
}
