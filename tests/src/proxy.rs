//! A repository the test controls: an HTTP proxy in front of a real `imaged` that passes
//! requests through unless a rule for the path says to answer otherwise (other bytes, a 404,
//! bytes dripped at a rate, an endless body), and a forger holding the server's online keys
//! (as a thief of them would) to sign timestamp, snapshot and channel records of its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use trust::keys::SecretKey;

/// What the proxy answers for a path.
#[derive(Clone)]
pub enum Rule {
    /// These bytes, status 200.
    Bytes(Vec<u8>),
    /// 404.
    Missing,
    /// The upstream's answer, one byte per `Duration`.
    Drip(Duration),
    /// An endless body of `{` bytes (a declared length of 1 GiB).
    Endless,
    /// Computed from the request body: (status, body).
    Func(Arc<dyn Fn(&[u8]) -> (u16, Vec<u8>) + Send + Sync>),
    /// A ranged GET (`Range: bytes=A-B`) answered 206 for bytes A-B with the body computed
    /// from (A, B): a serving pack's range with records of the test's choosing.
    Range(Arc<dyn Fn(u64, u64) -> Vec<u8> + Send + Sync>),
    /// A request body over this many bytes gets 413 with a plain-text page, as a proxy with
    /// a body limit (nginx's `client_max_body_size`) answers; smaller ones pass through.
    BodyLimit(usize),
}

/// The proxy.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    rules: Arc<Mutex<HashMap<String, Rule>>>,
    /// Paths requested, in order.
    pub log: Arc<Mutex<Vec<String>>>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0usize);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request { method, path, headers, body })
}

fn respond(s: &TcpStream, status: u16, body: &[u8], drip: Option<Duration>) {
    respond_with(s, status, "", body, drip)
}

/// `respond`, with `extra` header lines (each ending in CRLF).
fn respond_with(mut s: &TcpStream, status: u16, extra: &str, body: &[u8], drip: Option<Duration>) {
    let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", body.len());
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    match drip {
        None => {
            let _ = s.write_all(body);
        }
        Some(every) => {
            for b in body {
                if s.write_all(&[*b]).and_then(|_| s.flush()).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        }
    }
}

fn serve(stream: TcpStream, upstream: &str, rules: &Mutex<HashMap<String, Rule>>, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&stream) else { return };
    log.lock().unwrap().push(req.path.clone());
    let rule = rules.lock().unwrap().get(&req.path).cloned();
    // A range asked is passed on, and the answer's Content-Range passed back.
    let content_range = Mutex::new(String::new());
    let forward = || -> (u16, Vec<u8>) {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut b = client.request(method, format!("{upstream}{}", req.path)).body(req.body.clone());
        for (k, v) in &req.headers {
            if matches!(k.as_str(), "authorization" | "content-type" | "range") {
                b = b.header(k, v);
            }
        }
        match b.send() {
            Ok(r) => {
                if let Some(v) = r.headers().get("content-range").and_then(|v| v.to_str().ok()) {
                    *content_range.lock().unwrap() = format!("Content-Range: {v}\r\n");
                }
                (r.status().as_u16(), r.bytes().map(|b| b.to_vec()).unwrap_or_default())
            }
            Err(_) => (502, Vec::new()),
        }
    };
    match rule {
        None => {
            let (status, body) = forward();
            respond_with(&stream, status, &content_range.lock().unwrap(), &body, None);
        }
        Some(Rule::Bytes(b)) => respond(&stream, 200, &b, None),
        Some(Rule::Missing) => respond(&stream, 404, b"{\"error\":\"not_found\"}", None),
        Some(Rule::Drip(every)) => {
            let (status, body) = forward();
            respond(&stream, status, &body, Some(every));
        }
        Some(Rule::Func(f)) => {
            let (status, body) = f(&req.body);
            respond(&stream, status, &body, None);
        }
        Some(Rule::Range(f)) => {
            let range = req.headers.iter().find(|(k, _)| k == "range").and_then(|(_, v)| v.strip_prefix("bytes="));
            let Some((a, b)) = range.and_then(|r| r.split_once('-')).and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))) else {
                return respond(&stream, 416, b"", None);
            };
            respond_with(&stream, 206, &format!("Content-Range: bytes {a}-{b}/*\r\n"), &f(a, b), None);
        }
        Some(Rule::BodyLimit(max)) if req.body.len() > max => respond(&stream, 413, b"413 Request Entity Too Large\n", None),
        Some(Rule::BodyLimit(_)) => {
            let (status, body) = forward();
            respond(&stream, status, &body, None);
        }
        Some(Rule::Endless) => {
            let mut s = &stream;
            let head = format!("HTTP/1.1 200 X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 1u64 << 30);
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b'{'; 64 << 10];
            for _ in 0..(1 << 14) {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
    }
}

impl Proxy {
    /// A proxy on a free port in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rules: Arc<Mutex<HashMap<String, Rule>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, l, up) = (rules.clone(), log.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (r, l, up) = (r.clone(), l.clone(), up.clone());
                std::thread::spawn(move || serve(stream, &up, &r, &l));
            }
        });
        Proxy { url, rules, log }
    }

    /// Answers `path` (e.g. `/tuf/timestamp.json`) by `rule` from now on.
    pub fn set(&self, path: &str, rule: Rule) {
        self.rules.lock().unwrap().insert(path.to_string(), rule);
    }

    /// Passes `path` through again.
    pub fn clear(&self, path: &str) {
        self.rules.lock().unwrap().remove(path);
    }

    /// Passes every path through again.
    pub fn clear_all(&self) {
        self.rules.lock().unwrap().clear();
    }
}

/// One who holds the server's online keys: signs timestamp, snapshot and channel records of
/// its own over the server's current files.
pub struct Forger {
    keys: HashMap<String, SecretKey>,
    server: String,
}

/// The signed part of a metadata file.
pub fn signed(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes).unwrap()["signed"].clone()
}

impl Forger {
    /// Takes the online keys from the server's data directory.
    pub fn steal(data: &Path, server: &str) -> Forger {
        let mut keys = HashMap::new();
        for e in std::fs::read_dir(data.join("tuf/keys")).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let role = name.split('-').next().unwrap().to_string();
            keys.insert(role, trust::keys::secret_from_file(&std::fs::read(&path).unwrap()).unwrap());
        }
        Forger { keys, server: server.to_string() }
    }

    /// The server's current file `name` (unversioned).
    pub fn current(&self, name: &str) -> Vec<u8> {
        super::client().get(format!("{}/tuf/{name}", self.server)).send().unwrap().error_for_status().unwrap().bytes().unwrap().to_vec()
    }

    /// `signed` signed with the stolen key of `role`.
    pub fn sign(&self, role: &str, signed: &Value) -> Vec<u8> {
        trust::sign::sign(signed, &[&self.keys[role]]).unwrap()
    }

    /// A snapshot of `version` over the server's current one with the files `changes`
    /// (file name in the snapshot, bytes, version) replaced, and a timestamp of
    /// `ts_version` naming it; both served by `proxy` from now on.
    pub fn serve_snapshot(&self, proxy: &Proxy, version: u64, ts_version: u64, changes: &[(&str, &[u8], u64)]) {
        let mut snap = signed(&self.current("snapshot.json"));
        for (file, bytes, v) in changes {
            snap["meta"][*file] = trust::sign::meta_info(bytes, *v);
        }
        snap["version"] = json!(version);
        let snap_bytes = self.sign("snapshot", &snap);
        proxy.set(&format!("/tuf/{version}.snapshot.json"), Rule::Bytes(snap_bytes.clone()));
        let mut ts = signed(&self.current("timestamp.json"));
        ts["version"] = json!(ts_version);
        ts["meta"]["snapshot.json"] = trust::sign::meta_info(&snap_bytes, version);
        proxy.set("/tuf/timestamp.json", Rule::Bytes(self.sign("timestamp", &ts)));
    }

    /// A channels role of `version` in which `channel` names `target` (epoch `epoch`),
    /// served by `proxy` with a snapshot and timestamp `bump` versions ahead of the server's.
    pub fn point_channel(&self, proxy: &Proxy, channel: &str, target: &str, epoch: u64, bump: u64) {
        let mut ch = signed(&self.current("channels.json"));
        let version = ch["version"].as_u64().unwrap() + bump;
        let path = format!("channels/{channel}");
        let mut rec = ch["targets"][&path]["custom"].clone();
        rec["target"] = json!(target);
        rec["epoch"] = json!(epoch);
        rec["version"] = json!(rec["version"].as_u64().unwrap_or(0) + bump);
        let content = trust::canonical::encode(&rec).unwrap();
        ch["targets"][&path] = json!({"length": content.len(), "hashes": {"sha256": trust::sign::sha256_hex(&content)}, "custom": rec});
        ch["version"] = json!(version);
        let bytes = self.sign("channels", &ch);
        proxy.set(&format!("/tuf/{version}.channels.json"), Rule::Bytes(bytes.clone()));
        let snap_v = signed(&self.current("snapshot.json"))["version"].as_u64().unwrap() + bump;
        let ts_v = signed(&self.current("timestamp.json"))["version"].as_u64().unwrap() + bump;
        self.serve_snapshot(proxy, snap_v, ts_v, &[("channels.json", &bytes, version)]);
    }
}
