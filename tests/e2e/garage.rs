//! Garage smoke test: a real 3-node cluster stores and serves objects (Range GETs too) and keeps doing so with one node SIGKILLed.

use std::fs;
use std::process::Command;

use tests::garage::Garage;
use tests::noise;

/// Runs curl, writing the body to `out`; returns the HTTP status.
fn curl_status(mut cmd: Command, out: &std::path::Path) -> u16 {
    let res = cmd.arg("-o").arg(out).args(["-w", "%{http_code}"]).output().expect("curl runs");
    assert!(res.status.success(), "curl: {}", String::from_utf8_lossy(&res.stderr));
    String::from_utf8_lossy(&res.stdout).trim().parse().expect("curl prints the status")
}

fn put(g: &Garage, node: usize, key: &str, file: &std::path::Path) {
    let mut c = g.s3_curl();
    c.arg("-T").arg(file).arg(format!("{}/{}/{key}", g.node_s3_url(node), g.bucket));
    let out = file.with_extension("put-response");
    let status = curl_status(c, &out);
    assert_eq!(status, 200, "PUT {key} on node {node}: {}", fs::read_to_string(&out).unwrap_or_default());
}

/// GETs `key` from node `node`'s S3 API, with a Range header if given: (status, body).
fn get(g: &Garage, node: usize, key: &str, range: Option<&str>, scratch: &std::path::Path) -> (u16, Vec<u8>) {
    let mut c = g.s3_curl();
    if let Some(r) = range {
        c.args(["-H", &format!("Range: {r}")]);
    }
    c.arg(format!("{}/{}/{key}", g.node_s3_url(node), g.bucket));
    let out = scratch.join("get-response");
    let status = curl_status(c, &out);
    (status, fs::read(&out).unwrap())
}

#[test]
fn three_nodes_serve_objects_and_survive_one_node_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Garage::start(&dir.path().join("garage"), "e2e-bucket");
    let scratch = dir.path();

    let body = noise(300_000, 7);
    let file = scratch.join("object");
    fs::write(&file, &body).unwrap();
    put(&g, 0, "dir/object", &file);
    assert_eq!(get(&g, 0, "dir/object", None, scratch), (200, body.clone()));
    assert_eq!(get(&g, 1, "dir/object", Some("bytes=1000-1999"), scratch), (206, body[1000..2000].to_vec()));

    // The web endpoint: the bucket comes from the Host header; ranges work there too.
    let out = scratch.join("web-response");
    let mut c = Command::new("curl");
    c.args(["-sS", "-H", &format!("Host: {}", g.web_host), "-H", "Range: bytes=-100"]).arg(format!("{}/dir/object", g.web_url));
    assert_eq!(curl_status(c, &out), 206);
    assert_eq!(fs::read(&out).unwrap(), body[body.len() - 100..]);

    // One node of three down: reads and writes still reach a quorum of two.
    g.kill(2);
    assert_eq!(get(&g, 0, "dir/object", None, scratch), (200, body.clone()));
    let body2 = noise(50_000, 8);
    let file2 = scratch.join("object2");
    fs::write(&file2, &body2).unwrap();
    put(&g, 1, "object2", &file2);
    assert_eq!(get(&g, 0, "object2", None, scratch), (200, body2.clone()));

    g.restart(2);
    let status = g.status(0);
    assert_eq!(g.healthy(0).len(), 3, "{status}");
    assert!(!status.contains("FAILED"), "{status}");
    assert_eq!(get(&g, 2, "object2", None, scratch), (200, body2));
}
