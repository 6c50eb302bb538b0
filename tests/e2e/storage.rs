//! imaged with its served repository in a real 3-node Garage cluster: publishes gen1, gen2 and the rust tree into the bucket, endpoints read them all through it, and a node killed in the middle of a publish loses nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tests::garage::Garage;
use tests::{compare_trees, ok_json, Imgctl, Mount, Server};

fn dataset(name: &str) -> PathBuf {
    let dir = PathBuf::from(std::env::var("IMAGED_DATASETS").unwrap_or_else(|_| "/var/tmp/imgbench".into())).join(name);
    assert!(std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()), "dataset {name} missing: run shared/datasets/make-datasets.sh");
    dir
}

/// The block of imaged's read-through bucket cache (`imaged::backend::BLOCK`).
const BLOCK: u64 = 4 << 20;

/// The bucket's object `key` (through node `node`'s S3 API), `None` on 404.
fn bucket_get(g: &Garage, node: usize, key: &str, scratch: &Path) -> Option<Vec<u8>> {
    let out = scratch.join("bucket-get");
    let mut c = g.s3_curl();
    c.arg("-o").arg(&out).args(["-w", "%{http_code}"]).arg(format!("{}/{}/{key}", g.node_s3_url(node), g.bucket));
    let res = c.output().unwrap();
    assert!(res.status.success(), "curl: {}", String::from_utf8_lossy(&res.stderr));
    match String::from_utf8_lossy(&res.stdout).trim() {
        "200" => Some(std::fs::read(&out).unwrap()),
        "404" => None,
        other => panic!("GET {key}: {other} {}", String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default())),
    }
}

/// The server's counter `name` (`imaged_NAME_total` in `/metrics`).
fn counter(server: &Server, name: &str) -> u64 {
    let text = tests::client().get(format!("{}/metrics", server.url)).send().unwrap().text().unwrap();
    let line = format!("imaged_{name}_total ");
    text.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or_else(|| panic!("no {line}in /metrics")).trim().parse().unwrap()
}

/// The manifests of the server's generations, by label (`IMAGE@N`).
fn manifests(server: &Server) -> Vec<(String, String)> {
    let list: serde_json::Value = tests::client().get(format!("{}/v1/generations", server.url)).send().unwrap().json().unwrap();
    list["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["label"].as_str().unwrap().to_string(), g["manifest"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn imaged_serves_from_a_garage_bucket_and_a_node_killed_mid_publish_loses_nothing() {
    let (gen1, gen2) = (dataset("gen1"), dataset("gen2"));
    let t0 = Instant::now();
    let mark = |what: &str| eprintln!("{:>7.1} s  {what}", t0.elapsed().as_secs_f64());
    let t = Imgctl::new();
    let scratch = t.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut g = Garage::start(&t.path("garage"), "imaged");
    let config = t.path("imaged.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            g.s3_url, g.bucket, g.region, g.key_id, g.secret
        ),
    )
    .unwrap();
    let server = Server::start_with(&t.path("server"), 0, Some(&config));
    mark("garage and imaged up");

    // gen1: its pack and layout go into the bucket, then the signed metadata, the timestamp
    // last; the server's data directory holds no serving pack.
    t.publish(&server, &gen1, "debian", "os/stable");
    server.wait_for_layouts();
    let m1 = manifests(&server)[0].1.clone();
    let layout = bucket_get(&g, 0, &format!("v1/layouts/{m1}"), &scratch).expect("gen1's layout is in the bucket");
    let layout = format::layout::Layout::decode(&layout).unwrap();
    for p in &layout.packs {
        let pack = bucket_get(&g, 1, &format!("v1/packs/{}", p.digest), &scratch).expect("its pack too");
        assert_eq!(blake3::hash(&pack).to_hex().as_str(), p.digest.to_hex(), "named by its bytes, whole");
    }
    assert_eq!(std::fs::read_dir(server.data.join("serve/packs")).map(|d| d.count()).unwrap_or(0), 0);
    mark("gen1 served from the bucket");
    let timestamp = |g: &Garage| bucket_get(g, 2, "tuf/timestamp.json", &scratch);
    let served_ts = || tests::client().get(format!("{}/tuf/timestamp.json", server.url)).send().unwrap().bytes().unwrap().to_vec();
    let deadline = Instant::now() + Duration::from_secs(30);
    while timestamp(&g).as_deref() != Some(&served_ts()[..]) {
        assert!(Instant::now() < deadline, "the bucket's timestamp never caught up with the server's");
        std::thread::sleep(Duration::from_millis(200));
    }

    // An endpoint reads all of gen1 through the server, whose packs are in the bucket.
    let mnt = Mount::start_with(&[&server.url], "os/stable", &t.path("cache1"), &t.path("mnt1"), &["--poll-seconds", "3600"]);
    let diffs = compare_trees(&gen1, &mnt.point);
    assert!(diffs.is_empty(), "{} differences, first: {:?}", diffs.len(), diffs.first());
    // Through the server's read-through cache: each block of gen1's pack and layout came from
    // the bucket once at most, and the endpoint's many ranged reads mostly hit the disk.
    let blocks: u64 = layout.packs.iter().map(|p| p.len.div_ceil(BLOCK)).sum::<u64>() + 1;
    let (fetches, hits) = (counter(&server, "bucket_cache_fetches"), counter(&server, "bucket_cache_hits"));
    assert!(fetches > 0 && fetches <= blocks, "{fetches} blocks fetched from the bucket for {blocks}");
    assert!(hits > fetches, "{hits} cache hits, {fetches} fetches");
    mark(&format!("gen1 read through imaged from the bucket ({fetches} blocks fetched, {hits} hits)"));

    // gen2 is published while a Garage node is killed in the middle of it: the push, the
    // channel move and the background build all run with one node of three down.
    let before = timestamp(&g).unwrap();
    t.import(&gen2, "debian");
    std::thread::scope(|s| {
        let killer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            g.kill(1);
        });
        t.push_signed(&server, "debian@2");
        killer.join().unwrap();
    });
    ok_json(t.remote(&server, &["--json", "channel", "set", "os/stable", "debian@2"]));
    mark("gen2 pushed and the channel moved, node 1 down");
    let m2 = manifests(&server).into_iter().find(|(l, _)| l == "debian@2").unwrap().1;
    // Until gen2's layout (and so its packs) is in the bucket, the bucket's metadata stays
    // the old one: no generation is visible there with objects missing.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if timestamp(&g).unwrap() != before {
            // Read after the timestamp: the layout was put before the metadata that names gen2.
            assert!(bucket_get(&g, 0, &format!("v1/layouts/{m2}"), &scratch).is_some(), "new metadata before gen2's layout");
            break;
        }
        assert!(Instant::now() < deadline, "gen2 never reached the bucket with a node down:\n{}", server.log().join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    mark("gen2 in the bucket, metadata after it");
    // Reads go on with the node down: a cold endpoint mounts gen2 and runs dpkg from it.
    let cold = Mount::start_with(&[&server.url], "os/stable", &t.path("cache2"), &t.path("mnt2"), &["--poll-seconds", "3600"]);
    let dpkg = std::process::Command::new("chroot").arg(&cold.point).args(["/usr/bin/dpkg", "-l"]).output().unwrap();
    assert!(dpkg.status.success(), "{}", String::from_utf8_lossy(&dpkg.stderr));
    let status = std::fs::read(gen2.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(std::fs::read(cold.point.join("var/lib/dpkg/status")).unwrap(), status);
    drop(cold);
    mark("gen2 read from cold with node 1 down");
    // The node comes back and rejoins; the first endpoint moves to gen2.
    g.restart(1);
    assert_eq!(g.healthy(0).len(), 3, "{}", g.status(0));
    assert_eq!(mnt.control("update")["generation"], "debian@2");
    let diffs = compare_trees(&gen2, &mnt.point);
    assert!(diffs.is_empty(), "{} differences, first: {:?}", diffs.len(), diffs.first());
    drop(mnt);
    mark("node 1 back; gen2 read by the first endpoint");

    // The rust tree (1.4 GB, 40,000 files) goes into the bucket too, and an endpoint reads
    // every file of it back, byte for byte.
    let rust = dataset("rust");
    t.import(&rust, "rust");
    t.push_signed(&server, "rust@1");
    ok_json(t.remote(&server, &["--json", "channel", "set", "tools/rust", "rust@1"]));
    let m3 = manifests(&server).into_iter().find(|(l, _)| l == "rust@1").unwrap().1;
    let deadline = Instant::now() + Duration::from_secs(300);
    while bucket_get(&g, 2, &format!("v1/layouts/{m3}"), &scratch).is_none() {
        assert!(Instant::now() < deadline, "the rust tree's layout never reached the bucket:\n{}", server.log().join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
    mark("the rust tree pushed and in the bucket");
    let mnt = Mount::start_with(&[&server.url], "tools/rust", &t.path("cache3"), &t.path("mnt3"), &["--poll-seconds", "3600"]);
    let diffs = compare_trees(&rust, &mnt.point);
    assert!(diffs.is_empty(), "{} differences, first: {:?}", diffs.len(), diffs.first());
    mark("the rust tree read whole through imaged from the bucket");
}
