//! Unit tests: the wire spelling of every code, and old records still read.

use crate::channels::{ChannelAction, ChannelVersion};
use crate::{ErrorBody, ErrorCode};

#[test]
fn every_code_is_spelled_on_the_wire_as_as_str_says_and_reads_back() {
    for code in ErrorCode::ALL {
        let wire = serde_json::to_value(code).unwrap();
        assert_eq!(wire, serde_json::Value::String(code.as_str().into()));
        assert_eq!(serde_json::from_value::<ErrorCode>(wire).unwrap(), *code);
        assert!((400..600).contains(&code.http_status()), "{code}");
    }
}

#[test]
fn a_code_from_a_newer_server_reads_as_unknown() {
    let body: ErrorBody = serde_json::from_str(r#"{"error":"quota_exceeded","message":"m"}"#).unwrap();
    assert_eq!(body.error, ErrorCode::Unknown);
    assert_eq!(body.message, "m");
}

#[test]
fn missing_objects_details_travel_with_the_error() {
    let d = format::Digest::of(b"x");
    let text = format!(r#"{{"error":"missing_objects","message":"m","missing_count":7,"missing":["{d}"]}}"#);
    let body: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!((body.error, body.missing_count, body.missing), (ErrorCode::MissingObjects, Some(7), Some(vec![d])));
    let plain = serde_json::to_string(&ErrorBody::new(ErrorCode::NotFound, "gone")).unwrap();
    assert_eq!(plain, r#"{"error":"not_found","message":"gone"}"#);
}

#[test]
fn a_channel_version_recorded_before_the_api_crate_still_reads() {
    let d = format::Digest::of(b"m");
    let stored = format!(r#"{{"channel":"os/stable","version":3,"generation":"os@2","manifest":"{d}","created":5,"action":"promote"}}"#);
    let v: ChannelVersion = serde_json::from_str(&stored).unwrap();
    assert_eq!((v.channel.as_str(), v.manifest, v.action), ("os/stable", d, ChannelAction::Promote));
    assert_eq!(serde_json::to_string(&v).unwrap(), stored);
}

#[test]
fn channel_names_are_checked_when_read() {
    assert!(serde_json::from_str::<crate::ChannelName>(r#""os/Stable""#).is_err());
    assert!(serde_json::from_str::<crate::ChannelName>(r#""os/../x""#).is_err());
    assert!(serde_json::from_str::<crate::ChannelName>(r#""os/stable-2.x""#).is_ok());
}

#[test]
fn docs_api_md_lists_every_code_with_its_status() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {}", code.as_str(), code.http_status());
        assert!(doc.contains(&row), "docs/api.md has no row {row:?}");
    }
}
