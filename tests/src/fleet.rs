//! A synthetic fleet endpoint (`Synthetic`): an ed25519 key and the fleet routes spoken over
//! HTTP by hand, for tests of the server's side without running an agent.

use serde_json::{json, Value};

use crate::{client, ok_json, Imgctl, Server};

/// An endpoint the test drives request by request.
pub struct Synthetic {
    /// Its key.
    pub key: trust::keys::SecretKey,
    /// Its id once enrolled.
    pub id: String,
    /// Its session token once opened.
    pub session: String,
    /// The server's URL.
    pub url: String,
}

/// An enrollment token from `server` (admin): `uses`, `lifetime` seconds, labels as JSON.
pub fn enroll_token(server: &Server, uses: Option<u32>, lifetime: Option<u64>, labels: Value) -> String {
    let r = client()
        .post(format!("{}/v1/fleet/enroll-tokens", server.url))
        .bearer_auth(server.token())
        .json(&json!({ "uses": uses, "lifetime_seconds": lifetime, "labels": labels }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string()
}

/// `GET PATH` with the admin token: the JSON answer; panics unless 200.
pub fn get(server: &Server, path: &str) -> Value {
    let r = client().get(format!("{}{path}", server.url)).bearer_auth(server.token()).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().unwrap()
}

/// `POST PATH` with the admin token and a JSON body: the JSON answer; panics unless 2xx.
pub fn post(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = call(server, "POST", path, body);
    assert!(status < 300, "{path}: {status} {v}");
    v
}

/// A request (`POST`, `PUT`, `DELETE`) with the admin token and a JSON body: the status and
/// the JSON answer (null if there is none).
pub fn call(server: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let r = client().request(method, format!("{}{path}", server.url)).bearer_auth(server.token()).json(&body).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Facts with this host name.
pub fn facts(hostname: &str) -> Value {
    json!({ "hostname": hostname, "machine_id": "m", "arch": "x86_64", "os_release": "Debian", "kernel": "6.1",
            "cpus": 2, "memory_bytes": 1u64 << 30, "cache_disk_bytes": 1u64 << 34, "cache_free_bytes": 1u64 << 33, "addresses": ["10.0.0.1"] })
}

impl Synthetic {
    /// A new key (seeded, so tests are reproducible) for `server`.
    pub fn new(server: &Server, seed: u8) -> Synthetic {
        Synthetic { key: trust::keys::SecretKey::from_bytes(&[seed; 32]), id: String::new(), session: String::new(), url: server.url.clone() }
    }

    /// The public key, hex.
    pub fn public(&self) -> String {
        self.key.public().ed25519_bytes().expect("ed25519").iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `POST /v1/fleet/enroll`: the status and body; keeps the id on success.
    pub fn enroll(&mut self, token: &str, hostname: &str, labels: Value) -> (u16, Value) {
        let public = self.public();
        let sig = self.key.sign(format!("imaged-enroll-v1\n{token}\n{public}").as_bytes());
        let body = json!({ "token": token, "public_key": public, "signature": sig, "facts": facts(hostname), "labels": labels });
        let r = client().post(format!("{}/v1/fleet/enroll", self.url)).json(&body).send().unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap();
        if status == 201 {
            self.id = v["endpoint"].as_str().unwrap().to_string();
        }
        (status, v)
    }

    /// `POST /v1/fleet/session` at `time`: the status and body; keeps the token on success.
    pub fn open_session(&mut self, time: i64) -> (u16, Value) {
        let sig = self.key.sign(format!("imaged-session-v1\n{}\n{time}", self.id).as_bytes());
        let r = client().post(format!("{}/v1/fleet/session", self.url)).json(&json!({ "endpoint": self.id, "time": time, "signature": sig })).send().unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap();
        if status == 200 {
            self.session = v["token"].as_str().unwrap().to_string();
        }
        (status, v)
    }

    /// `GET /v1/fleet/desired` with `actual` and `etag`: status, ETag, body (Null on 304).
    pub fn check_in(&self, actual: &str, etag: Option<&str>) -> (u16, String, Value) {
        let mut req = client().get(format!("{}/v1/fleet/desired", self.url)).bearer_auth(&self.session).header("x-imaged-actual", actual);
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let etag = r.headers().get("etag").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = if status == 304 { Value::Null } else { r.json().unwrap() };
        (status, etag, body)
    }

    /// `POST /v1/fleet/reports` with `events` (JSON array) and `mounts`.
    pub fn report(&self, events: Value, mounts: Value) -> (u16, Value) {
        let r = client().post(format!("{}/v1/fleet/reports", self.url)).bearer_auth(&self.session).json(&json!({ "events": events, "mounts": mounts })).send().unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }
}

/// The rollout tests' starting point: image `img` at generations 1-3 pushed (unsigned),
/// channel `img/stable` on `img@1`, and four endpoints (`host0`-`host3`, labelled `site=x`)
/// enrolled, in session, and checked in running `/os=img@1`.
pub fn three_generations_and_four_endpoints(t: &Imgctl, server: &Server) -> Vec<Synthetic> {
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, v) in ["one", "two", "three"].iter().enumerate() {
        std::fs::write(src.join("f"), v).unwrap();
        t.import(&src, "img");
        ok_json(t.remote(server, &["--json", "push", &format!("img@{}", i + 1)]));
    }
    ok_json(t.remote(server, &["--json", "channel", "set", "img/stable", "img@1"]));
    let token = enroll_token(server, None, None, json!({ "site": "x" }));
    let mut eps: Vec<Synthetic> = (1..=4).map(|i| Synthetic::new(server, i)).collect();
    for (i, e) in eps.iter_mut().enumerate() {
        assert_eq!(e.enroll(&token, &format!("host{i}"), json!({})).0, 201);
        assert_eq!(e.open_session(now()).0, 200);
        assert_eq!(e.check_in("/os=img@1", None).0, 200);
    }
    eps
}
