//! The agent's HTTP client for `/v1/fleet/`: enroll, session, desired (conditional GET),
//! reports and the event stream. Every request has a deadline; servers are tried in order
//! (a transport failure or a 5xx moves on to the next); `429`/`503` with `Retry-After` is
//! returned as such, to be honoured. Bodies are the `api::fleet` types both ways.

use std::io::BufRead;
use std::time::Duration;

use api::fleet::{Desired, Enroll, Enrolled, ReportAck, ReportBatch, Session, SessionRequest, ACTUAL_HEADER};
use api::ErrorCode;

/// Deadline of one request (connect, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of the connection itself.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one event stream is held before it is opened again: a stream that died without
/// the connection noticing is found within this time (the check-ins do not depend on it).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);

/// Why a request to the servers failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server answered (the last one's error).
    #[error("no server reachable ({url}): {source}")]
    Unreachable {
        /// The last server tried.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server refused the request with an error code.
    #[error("{url} answered {status} {}: {message}", code.as_str())]
    Refused {
        /// The request's URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: ErrorCode,
        /// Its message for people.
        message: String,
    },
    /// The server is busy: ask again after this many seconds.
    #[error("{url} is busy: retry after {seconds} s")]
    RetryAfter {
        /// The request's URL.
        url: String,
        /// Seconds to wait.
        seconds: u64,
    },
    /// An answer that is not what the route answers.
    #[error("{url} answered something unreadable: {why}")]
    BadAnswer {
        /// The request's URL.
        url: String,
        /// Why.
        why: String,
    },
}

impl ClientError {
    /// The server's error code, if it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the server says this endpoint may not go on: revoked, unknown, or (enrolling)
    /// a bad enrollment token.
    pub fn locked_out(&self) -> bool {
        matches!(self.code(), Some(ErrorCode::EndpointRevoked | ErrorCode::UnknownEndpoint | ErrorCode::BadEnrollToken))
    }
}

/// Answer of a check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredAnswer {
    /// 304: nothing changed since the ETag given.
    NotModified,
    /// The desired state and its ETag.
    Changed {
        /// The desired state.
        desired: Desired,
        /// Its ETag, for the next `If-None-Match`.
        etag: Option<String>,
    },
}

/// The fleet routes of a list of servers.
pub struct Client {
    http: reqwest::blocking::Client,
    stream: reqwest::blocking::Client,
    servers: Vec<String>,
    /// The server that answered last: tried first.
    preferred: std::sync::atomic::AtomicUsize,
}

impl Client {
    /// A client of `servers` (base URLs), tried in order.
    pub fn new(servers: &[String]) -> Client {
        let build = |timeout| {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("imgfs-agent/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("a client with rustls builds")
        };
        Client {
            http: build(REQUEST_TIMEOUT),
            stream: build(STREAM_LIFETIME),
            servers: servers.iter().map(|s| s.trim_end_matches('/').to_string()).collect(),
            preferred: Default::default(),
        }
    }

    /// Sends the request `build` makes for each server in turn, from the preferred one, until
    /// one answers without a transport failure or a 5xx (busy servers: `RetryAfter`).
    fn send(
        &self,
        path: &str,
        build: impl Fn(&reqwest::blocking::Client, &str) -> reqwest::blocking::RequestBuilder,
        stream: bool,
    ) -> Result<(String, reqwest::blocking::Response), ClientError> {
        use std::sync::atomic::Ordering;
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut last = None;
        for i in 0..n {
            let index = (first + i) % n;
            let url = format!("{}{path}", self.servers[index]);
            let client = if stream { &self.stream } else { &self.http };
            match build(client, &url).send() {
                Err(source) => last = Some(ClientError::Unreachable { url, source }),
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 429 || status == 503 {
                        if let Some(seconds) = retry_after(&r) {
                            return Err(ClientError::RetryAfter { url, seconds });
                        }
                    }
                    if r.status().is_server_error() {
                        last = Some(refusal(url, r));
                        continue;
                    }
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((url, r));
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::BadAnswer { url: path.into(), why: "no servers configured".into() }))
    }

    /// `POST /v1/fleet/enroll`.
    pub fn enroll(&self, body: &Enroll) -> Result<Enrolled, ClientError> {
        let (url, r) = self.send("/v1/fleet/enroll", |c, u| c.post(u).json(body), false)?;
        json(url, r)
    }

    /// `POST /v1/fleet/session`.
    pub fn session(&self, body: &SessionRequest) -> Result<Session, ClientError> {
        let (url, r) = self.send("/v1/fleet/session", |c, u| c.post(u).json(body), false)?;
        json(url, r)
    }

    /// `GET /v1/fleet/desired`, conditional on `etag`, carrying what each mount runs.
    pub fn desired(&self, token: &str, actual: &str, etag: Option<&str>) -> Result<DesiredAnswer, ClientError> {
        let (url, r) = self.send(
            "/v1/fleet/desired",
            |c, u| {
                let mut rb = c.get(u).bearer_auth(token).header(ACTUAL_HEADER, actual);
                if let Some(e) = etag {
                    rb = rb.header(reqwest::header::IF_NONE_MATCH, e);
                }
                rb
            },
            false,
        )?;
        if r.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(DesiredAnswer::NotModified);
        }
        let etag = r.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(String::from);
        let desired = json(url, r)?;
        Ok(DesiredAnswer::Changed { desired, etag })
    }

    /// `POST /v1/fleet/reports`.
    pub fn report(&self, token: &str, batch: &ReportBatch) -> Result<ReportAck, ClientError> {
        let (url, r) = self.send("/v1/fleet/reports", |c, u| c.post(u).bearer_auth(token).json(batch), false)?;
        json(url, r)
    }

    /// `GET /v1/fleet/events`: calls `on_check` for every `check` event until the stream
    /// ends (the server closed it, it failed, or `STREAM_LIFETIME` passed). Ok once it was open.
    pub fn events(&self, token: &str, on_check: &mut dyn FnMut()) -> Result<(), ClientError> {
        let (url, r) =
            self.send("/v1/fleet/events", |c, u| c.get(u).bearer_auth(token).header(reqwest::header::ACCEPT, "text/event-stream"), true)?;
        if !r.status().is_success() {
            return Err(refusal(url, r));
        }
        let mut parser = SseParser::default();
        for line in std::io::BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(event) = parser.line(&line) {
                if event == "check" {
                    on_check();
                }
            }
        }
        Ok(())
    }
}

/// Reads a server-sent event stream line by line: the name of each event (`message` if it
/// has none) when the blank line that ends it comes. Comments (`: keepalive`) are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    name: Option<String>,
    has_data: bool,
}

impl SseParser {
    /// Takes one line (without its end); the event it completes, if any.
    pub fn line(&mut self, line: &str) -> Option<String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let had = self.name.is_some() || self.has_data;
            let name = self.name.take().unwrap_or_else(|| "message".into());
            self.has_data = false;
            return had.then_some(name);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => self.has_data = true,
            _ => {}
        }
        None
    }
}

/// `Retry-After` in seconds (the number form; a date is read as a minute).
fn retry_after(r: &reqwest::blocking::Response) -> Option<u64> {
    let v = r.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(v.trim().parse().unwrap_or(60))
}

/// The error of a non-success answer.
fn refusal(url: String, r: reqwest::blocking::Response) -> ClientError {
    let status = r.status().as_u16();
    let body = r.bytes().unwrap_or_default();
    match serde_json::from_slice::<api::ErrorBody>(&body) {
        Ok(b) => ClientError::Refused { url, status, code: b.error, message: b.message },
        Err(_) => ClientError::Refused {
            url,
            status,
            code: ErrorCode::Unknown,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// The JSON body of a success, else the error.
fn json<T: serde::de::DeserializeOwned>(url: String, r: reqwest::blocking::Response) -> Result<T, ClientError> {
    if !r.status().is_success() {
        return Err(refusal(url, r));
    }
    let body = r.bytes().map_err(|source| ClientError::Unreachable { url: url.clone(), source })?;
    serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer { url, why: e.to_string() })
}
