//! A real 3-node Garage cluster (S3-compatible object storage) on 127.0.0.1: replication factor 3, one zone per node, one bucket with a fixed key.
//!
//! Each node is a `garage server` process with its own config, metadata, data and log under
//! the test's folder. The nodes are joined with `garage node connect` (the node IDs exist only
//! once the servers have started), then every config gets `bootstrap_peers` naming the other
//! two, so a restarted node finds the cluster at once; [`Garage::restart`] also has the others
//! `node connect` to it (each counts a peer up only on its own connection, retried every 30 s).
//! The key is imported with a fixed ID and secret, so tests know them without parsing output.
//!
//! Garage's quirks, as of 2.5.0: the S3 API rejects requests without `x-amz-content-sha256`
//! (curl's `--aws-sigv4` sends none: [`Garage::s3_curl`] adds `UNSIGNED-PAYLOAD`); the web
//! endpoint takes the bucket from the Host header only (`BUCKET.web.garage.localhost`, or a
//! bare host equal to the bucket's name), never from the path; both endpoints serve Range GETs
//! (206 with Content-Range; 416 past the end). After a SIGKILL, reads that ask the dead node
//! stall until the others' next ping to it fails (up to 15 s; see [`Garage::wait_down`]);
//! writes go to all three at once and do not wait for it.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The key every cluster is given (`garage key import`: at least 8 characters of
/// `[A-Za-z0-9-_.]`; this one has the shape of the IDs Garage makes itself).
pub const KEY_ID: &str = "GK00000000000000000000e2e0";
/// Its secret (at least 16 printable ASCII characters).
pub const SECRET: &str = "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0";
/// The S3 region of the cluster (what SigV4 signs with).
pub const REGION: &str = "garage";
/// The web endpoint's root domain: `BUCKET.web.garage.localhost` serves BUCKET.
pub const WEB_ROOT_DOMAIN: &str = ".web.garage.localhost";
/// How long forming the cluster, or a node's coming back, may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// Environment variables `garage` reads that would override the configs written here.
const GARAGE_ENV: &[&str] = &[
    "GARAGE_CONFIG_FILE",
    "GARAGE_RPC_HOST",
    "GARAGE_RPC_SECRET",
    "GARAGE_RPC_SECRET_FILE",
    "GARAGE_ADMIN_TOKEN",
    "GARAGE_ADMIN_TOKEN_FILE",
    "GARAGE_METRICS_TOKEN",
    "GARAGE_METRICS_TOKEN_FILE",
    "GARAGE_LOG_TO_SYSLOG",
    "GARAGE_LOG_TO_JOURNALD",
    "GARAGE_LOG_FORMAT",
    "RUST_LOG",
];

/// One `garage server` of the cluster.
struct Node {
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// `127.0.0.1:PORT` of its RPC.
    rpc: String,
    /// Its full node ID (hex public key), known once it has started.
    id: String,
    s3_url: String,
    web_url: String,
}

/// A running 3-node Garage cluster with one bucket, readable and writable with
/// [`KEY_ID`]/[`SECRET`], website access allowed.
pub struct Garage {
    /// `http://127.0.0.1:PORT`: the S3 API of node 0 (path-style: `{s3_url}/{bucket}/{key}`).
    pub s3_url: String,
    /// `http://127.0.0.1:PORT`: the web endpoint of node 0; send `Host: {web_host}`.
    pub web_url: String,
    /// The Host header that selects the bucket on the web endpoint (`BUCKET.web.garage.localhost`;
    /// curl resolves `*.localhost` to 127.0.0.1 itself, so `http://{web_host}:PORT/` works too).
    pub web_host: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    nodes: Vec<Node>,
    bin: PathBuf,
}

/// The garage binary: `$GARAGE`, or `garage` on PATH, or where scripts/setup.sh and this
/// project's machines put it.
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GARAGE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let on_path =
        std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join("garage"));
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"));
    on_path
        .chain([PathBuf::from("/var/tmp/garage-bin/bin/garage")])
        .chain(home)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("garage missing: run scripts/setup.sh"))
}

/// A port of 127.0.0.1 free now (its listener is held by the caller until all are picked).
fn free_port(held: &mut Vec<TcpListener>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    held.push(l);
    port
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The node IDs (16-hex prefixes) listed under `==== HEALTHY NODES ====` in `garage status`
/// output, with whether each has a role in the layout.
fn healthy_in(status: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut in_healthy = false;
    for line in status.lines() {
        if line.starts_with("====") {
            in_healthy = line.contains("HEALTHY NODES");
            continue;
        }
        let Some(first) = line.split_whitespace().next() else { continue };
        if in_healthy && first != "ID" {
            out.push((first.to_string(), !line.contains("NO ROLE ASSIGNED")));
        }
    }
    out
}

impl Garage {
    /// Starts the cluster under `dir` (one folder per node) with `bucket` in it, and returns
    /// once every node sees all three healthy with their roles and the bucket and key exist.
    pub fn start(dir: &Path, bucket: &str) -> Garage {
        let bin = garage_bin();
        let seed = format!("{}{:?}{:?}", std::process::id(), SystemTime::now(), dir);
        let rpc_secret = blake3::hash(seed.as_bytes()).to_hex().to_string();
        // sqlite when the build has it (the default features do), else lmdb.
        let version =
            Command::new(&bin).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let db_engine = if version.contains("sqlite") { "sqlite" } else { "lmdb" };
        let mut held = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let ndir = dir.join(format!("node{i}"));
            fs::create_dir_all(&ndir).unwrap();
            let (rpc, s3, web, admin) = (free_port(&mut held), free_port(&mut held), free_port(&mut held), free_port(&mut held));
            let conf = ndir.join("garage.toml");
            let d = ndir.display();
            let text = format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "{db_engine}"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"
bootstrap_peers = []

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "{REGION}"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:{web}"
root_domain = "{WEB_ROOT_DOMAIN}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{rpc_secret}"
"#
            );
            fs::write(&conf, text).unwrap();
            nodes.push(Node {
                conf,
                log: ndir.join("garage.log"),
                child: None,
                rpc: format!("127.0.0.1:{rpc}"),
                id: String::new(),
                s3_url: format!("http://127.0.0.1:{s3}"),
                web_url: format!("http://127.0.0.1:{web}"),
            });
        }
        drop(held);
        let mut g = Garage {
            s3_url: nodes[0].s3_url.clone(),
            web_url: nodes[0].web_url.clone(),
            web_host: format!("{bucket}{WEB_ROOT_DOMAIN}"),
            region: REGION.to_string(),
            bucket: bucket.to_string(),
            key_id: KEY_ID.to_string(),
            secret: SECRET.to_string(),
            nodes,
            bin,
        };
        for i in 0..3 {
            g.spawn(i);
        }
        let deadline = Instant::now() + DEADLINE;
        for i in 0..3 {
            let id = g.retry(i, &["node", "id", "-q"], deadline);
            g.nodes[i].id = id.trim().split('@').next().unwrap().to_string();
        }
        // For restarts: each node bootstraps from the other two.
        for i in 0..3 {
            let peers: Vec<String> = (0..3).filter(|&j| j != i).map(|j| format!("\"{}@{}\"", g.nodes[j].id, g.nodes[j].rpc)).collect();
            let text = fs::read_to_string(&g.nodes[i].conf).unwrap();
            fs::write(&g.nodes[i].conf, text.replace("bootstrap_peers = []", &format!("bootstrap_peers = [{}]", peers.join(", "))))
                .unwrap();
        }
        for j in 1..3 {
            let peer = format!("{}@{}", g.nodes[j].id, g.nodes[j].rpc);
            g.retry(0, &["node", "connect", &peer], deadline);
        }
        for i in 0..3 {
            let id = g.nodes[i].id.clone();
            g.retry(0, &["layout", "assign", "-z", &format!("z{i}"), "-c", "1G", &id], deadline);
        }
        g.retry(0, &["layout", "apply", "--version", "1"], deadline);
        for i in 0..3 {
            g.wait(deadline, &format!("node {i} to see all three nodes healthy with their roles"), |g| {
                let healthy = healthy_in(&g.status(i));
                healthy.len() == 3 && healthy.iter().all(|(_, role)| *role)
            });
        }
        g.retry(0, &["key", "import", "--yes", "-n", "e2e", KEY_ID, SECRET], deadline);
        g.retry(0, &["bucket", "create", bucket], deadline);
        g.retry(0, &["bucket", "allow", "--read", "--write", "--owner", bucket, "--key", KEY_ID], deadline);
        g.retry(0, &["bucket", "website", "--allow", bucket], deadline);
        g
    }

    /// The S3 API of node `i`.
    pub fn node_s3_url(&self, i: usize) -> &str {
        &self.nodes[i].s3_url
    }

    /// The web endpoint of node `i`.
    pub fn node_web_url(&self, i: usize) -> &str {
        &self.nodes[i].web_url
    }

    /// Node `i`'s log (Garage's stderr).
    pub fn log(&self, i: usize) -> PathBuf {
        self.nodes[i].log.clone()
    }

    /// A curl that signs with the cluster's key (SigV4, region [`REGION`]) and sends the
    /// `x-amz-content-sha256` header Garage insists on; add the method, body and URL.
    pub fn s3_curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.args(["-sS", "--aws-sigv4", &format!("aws:amz:{}:s3", self.region), "--user", &format!("{}:{}", self.key_id, self.secret)]);
        c.args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        c
    }

    /// Runs `garage -c CONF_i ARGS`: its stdout, or the failure's whole story.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.nodes[i].conf).args(args).env("NO_COLOR", "1").stdin(Stdio::null());
        for v in GARAGE_ENV {
            cmd.env_remove(v);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("garage {} on node {i}: {}\n{stdout}{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `garage status` as node `i` sees it (empty if node `i` does not answer).
    pub fn status(&self, i: usize) -> String {
        self.cli(i, &["status"]).unwrap_or_default()
    }

    /// The IDs (16-hex prefixes) node `i` lists as healthy.
    pub fn healthy(&self, i: usize) -> Vec<String> {
        healthy_in(&self.status(i)).into_iter().map(|(id, _)| id).collect()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every running node counts node `i` (killed) as failed. Until then, a read
    /// that picked node `i` for its quorum hangs: Garage notices a dead peer only when its
    /// next ping (every 15 s) fails to send, not when the connection closes.
    pub fn wait_down(&mut self, i: usize) {
        let prefix: String = self.nodes[i].id.chars().take(16).collect();
        let running: Vec<usize> = (0..3).filter(|&j| j != i && self.nodes[j].child.is_some()).collect();
        self.wait(Instant::now() + DEADLINE, &format!("the other nodes to count node {i} as failed"), |g| {
            running.iter().all(|&j| !g.healthy(j).contains(&prefix))
        });
    }

    /// Starts node `i` again with the same config and data, and returns once it and every
    /// other running node list it as healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        let prefix: String = self.nodes[i].id.chars().take(16).collect();
        let running: Vec<usize> = (0..3).filter(|&j| self.nodes[j].child.is_some()).collect();
        // The restarted node connects to the others at once (bootstrap_peers), but each of them
        // counts it up only once its own connection to it is back: without a `node connect`,
        // that is Garage's next retry, up to 30 s later.
        let deadline = Instant::now() + DEADLINE;
        let peer = format!("{}@{}", self.nodes[i].id, self.nodes[i].rpc);
        for &j in running.iter().filter(|&&j| j != i) {
            self.retry(j, &["node", "connect", &peer], deadline);
        }
        self.wait(deadline, &format!("node {i} to be back in `garage status`"), |g| {
            running.iter().all(|&j| g.healthy(j).contains(&prefix))
        });
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new().create(true).append(true).open(&node.log).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&node.conf).arg("server").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        for v in GARAGE_ENV {
            cmd.env_remove(v);
        }
        cmd.env("NO_COLOR", "1").env("RUST_LOG", "netapp=info,garage=info");
        node.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display())));
    }

    /// Panics with what went wrong, the last error and the tail of every node's log.
    fn fail(&mut self, what: &str, last: &str) -> ! {
        let mut msg = format!("garage cluster: {what}\nlast: {last}\n");
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let state = match node.child.as_mut().map(Child::try_wait) {
                None => "killed".to_string(),
                Some(Ok(None)) => "running".to_string(),
                Some(Ok(Some(st))) => format!("exited: {st}"),
                Some(Err(e)) => format!("unknown: {e}"),
            };
            msg += &format!("--- node {i} ({state}), {}:\n{}\n", node.log.display(), tail(&node.log, 15));
        }
        panic!("{msg}");
    }

    /// Runs a CLI command on node `i` until it succeeds (the cluster may not be ready yet).
    fn retry(&mut self, i: usize, args: &[&str], deadline: Instant) -> String {
        loop {
            match self.cli(i, args) {
                Ok(out) => return out,
                Err(e) if Instant::now() >= deadline => {
                    self.fail(&format!("`garage {}` on node {i} still fails after {DEADLINE:?}", args.join(" ")), &e)
                }
                Err(_) => {
                    self.check_alive();
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn wait(&mut self, deadline: Instant, what: &str, done: impl Fn(&Garage) -> bool) {
        while !done(self) {
            if Instant::now() >= deadline {
                let last = self.status(0);
                self.fail(&format!("gave up waiting {DEADLINE:?} for {what}"), &format!("node 0's status:\n{last}"));
            }
            self.check_alive();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fails at once if a node that should run has exited (a bad config, a port taken).
    fn check_alive(&mut self) {
        let exited = self.nodes.iter_mut().any(|n| n.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))));
        if exited {
            self.fail("a node exited", "see its log");
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
