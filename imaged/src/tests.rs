//! Unit tests of the server's pure parts and its metadata on a real rocksdb in a temporary
//! directory. The HTTP surface is tested end to end in tests/e2e/server*.rs.

use format::Digest;

use crate::hot::{HotChannels, HotObjects};
use crate::meta::{ChannelVersion, Meta};

fn cv(channel: &str, version: u64, generation: &str) -> ChannelVersion {
    ChannelVersion {
        channel: channel.parse().unwrap(),
        version,
        generation: generation.into(),
        manifest: Digest::of(generation.as_bytes()),
        created: 0,
        action: api::channels::ChannelAction::Set,
    }
}

#[test]
fn a_reader_that_raced_a_writer_cannot_put_back_an_older_channel_version() {
    let hot = HotChannels::default();
    hot.put(&cv("os/stable", 4, "img@4"));
    hot.put(&cv("os/stable", 3, "img@3"));
    assert_eq!(hot.get("os/stable").unwrap().version, 4);
    hot.put(&cv("os/stable", 5, "img@5"));
    assert_eq!(hot.get("os/stable").unwrap().generation, "img@5");
    assert!(hot.get("os/pilot").is_none());
}

#[test]
fn hot_objects_keep_small_objects_and_forget_on_request() {
    let hot = HotObjects::new(1 << 20);
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    hot.put(a, bytes::Bytes::from_static(b"small"));
    hot.put(b, bytes::Bytes::from(vec![0u8; crate::hot::MAX_HOT_OBJECT + 1]));
    assert_eq!(hot.get(&a).as_deref(), Some(&b"small"[..]));
    assert!(hot.get(&b).is_none(), "objects over the size limit stay on disk");
    hot.forget(&[a]);
    assert!(hot.get(&a).is_none());
    let off = HotObjects::new(0);
    off.put(a, bytes::Bytes::from_static(b"x"));
    assert!(off.get(&a).is_none());
}

#[test]
fn records_split_exactly_or_are_refused() {
    let mut body = Vec::new();
    for content in [&b"one"[..], b"two!"] {
        format::record::encode_into(&mut body, &Digest::of(content), content);
    }
    let recs = crate::objects::parse_records(&body).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1], (Digest::of(b"two!"), &b"two!"[..]));
    for cut in [1, 4, 30, body.len() - 1] {
        let e = crate::objects::parse_records(&body[..body.len() - cut]).unwrap_err();
        assert_eq!(e.code(), api::ErrorCode::BadRecords);
    }
    assert!(crate::objects::parse_records(&[]).unwrap().is_empty());
}

#[test]
fn metadata_survives_reopening_and_removes_generations_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let image = format::ImageName::new("img").unwrap();
    {
        let meta = Meta::open(dir.path()).unwrap();
        for n in 1..=3 {
            meta.put_generation(&image, n, &Digest::of(&[n as u8])).unwrap();
        }
        meta.set_keep("img", 2, true).unwrap();
        meta.pin(&[Digest::of(b"pinned")]).unwrap();
        meta.push_channel(&cv("os/stable", 1, "img@1")).unwrap();
        meta.push_channel(&cv("os/stable", 2, "img@3")).unwrap();
    }
    let meta = Meta::open(dir.path()).unwrap();
    assert_eq!(meta.generations().unwrap().len(), 3);
    assert_eq!(meta.kept().unwrap(), vec![("img".to_string(), 2)]);
    assert!(meta.published_at("img", 1).unwrap() > 1_700_000_000);
    assert_eq!(meta.pins().unwrap()[0].0, Digest::of(b"pinned"));
    assert_eq!(meta.channel("os/stable").unwrap().unwrap().generation, "img@3");
    assert_eq!(meta.history("os/stable").unwrap().len(), 2);
    meta.remove_generations(&[("img".into(), 1), ("img".into(), 2)]).unwrap();
    let left: Vec<u64> = meta.generations().unwrap().iter().map(|p| p.generation).collect();
    assert_eq!(left, [3]);
    assert!(meta.kept().unwrap().is_empty(), "a removed generation's keep mark goes with it");
    assert_eq!(meta.published_at("img", 1).unwrap(), 0);
    meta.unpin(&[Digest::of(b"pinned")]).unwrap();
    assert!(meta.pins().unwrap().is_empty());
}

#[test]
fn routes_and_methods_have_bounded_labels() {
    assert_eq!(crate::metrics::route_label(Some("/v1/objects/{digest}")), "/v1/objects/{digest}");
    assert_eq!(crate::metrics::route_label(Some("/something/else")), "unmatched");
    assert_eq!(crate::metrics::route_label(None), "unmatched");
    assert_eq!(crate::metrics::method_label(&axum::http::Method::PATCH), "other");
    let m = crate::metrics::Metrics::default();
    m.requests.get_or_create(&crate::metrics::RequestLabels { route: "/healthz", method: "GET", status: 200 }).inc();
    let text = m.encode();
    assert!(text.contains("imaged_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}
