//! Tests of `imgfs defer`'s library side: refused without a known policy, beyond it or where it
//! forbids deferring; recorded, found by local or namespace path, and cleared.

use std::path::Path;

use api::fleet::{Desired, DesiredMount, EndpointId, GroupName, NamespaceMount, Source, Window};

use super::*;

const NOW: i64 = 1_800_000_000;

fn mount(path: &str, max_defer: Option<u64>) -> DesiredMount {
    DesiredMount {
        mount: NamespaceMount {
            path: path.into(),
            source: Source::Pinned("app@1".into()),
            cache_share: None,
            passthrough: false,
            health: None,
            writable: None,
        },
        group: GroupName::new("kiosks").unwrap(),
        generation: None,
        rollout: None,
        soak_seconds: None,
        ignore_windows: false,
        window: max_defer.map(|m| Window {
            cron: "0 2 * * *".into(),
            duration_seconds: 3600,
            timezone: "UTC".into(),
            max_defer_seconds: m,
        }),
        activation: None,
    }
}

/// An agent configuration in `dir` with a mount prefix, and its desired state holding `mounts`.
fn setup(dir: &Path, mounts: Option<Vec<DesiredMount>>) -> AgentConfig {
    let text = format!("servers = [\"http://a:4640\"]\nstate = {:?}\nmount_prefix = {:?}\n", dir.join("state"), dir.join("mnt"));
    let config = AgentConfig::parse(&text).unwrap();
    std::fs::create_dir_all(&config.state).unwrap();
    if let Some(mounts) = mounts {
        let desired = Desired {
            endpoint: EndpointId::new("ep-0123456789abcdef").unwrap(),
            groups: vec![],
            mounts,
            conflicts: vec![],
            interval_seconds: 60,
            withdrawn: vec![],
            labels: Default::default(),
        };
        std::fs::write(config.state.join("desired.json"), serde_json::to_vec(&desired).unwrap()).unwrap();
    }
    config
}

#[test]
fn refused_without_a_known_policy_or_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), None);
    let os = dir.path().join("mnt/os");
    assert!(matches!(defer(&config, &os, Some(60), NOW), Err(DeferError::NoDesiredState { .. })));
    let config = setup(dir.path(), Some(vec![mount("/os", Some(7200)), mount("/free", None), mount("/strict", Some(0))]));
    assert!(matches!(defer(&config, &dir.path().join("mnt/free"), Some(60), NOW), Err(DeferError::NoPolicy { path }) if path == "/free"));
    assert!(
        matches!(defer(&config, &dir.path().join("mnt/strict"), Some(60), NOW), Err(DeferError::Forbidden { path }) if path == "/strict")
    );
    assert!(matches!(
        defer(&config, &os, Some(7201), NOW),
        Err(DeferError::TooLong { path, asked: 7201, max: 7200 }) if path == "/os"
    ));
    assert!(matches!(defer(&config, &dir.path().join("mnt/elsewhere"), Some(60), NOW), Err(DeferError::NotAMount { .. })));
    // Nothing was recorded.
    assert_eq!(read(&config.state).unwrap(), Deferrals::default());
}

#[test]
fn recorded_found_by_either_path_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), Some(vec![mount("/os", Some(7200)), mount("/opt/app", Some(600))]));
    let done = defer(&config, &dir.path().join("mnt/os"), Some(3600), NOW).unwrap();
    assert_eq!(done, Deferred { path: "/os".into(), deferral: Some(Deferral { made: NOW, until: NOW + 3600 }) });
    // The namespace path works too; a trailing slash or `.` does not matter.
    defer(&config, Path::new("/opt/app/."), Some(600), NOW).unwrap();
    let kept = read(&config.state).unwrap();
    assert_eq!(kept.deferrals.keys().collect::<Vec<_>>(), ["/opt/app", "/os"]);
    assert_eq!(defer(&config, &dir.path().join("mnt/os/"), None, NOW).unwrap().deferral, None);
    assert_eq!(read(&config.state).unwrap().deferrals.keys().collect::<Vec<_>>(), ["/opt/app"]);
    // Ended deferrals are dropped when the file is next written.
    defer(&config, &dir.path().join("mnt/os"), Some(60), NOW + 700).unwrap();
    assert_eq!(read(&config.state).unwrap().deferrals.keys().collect::<Vec<_>>(), ["/os"]);
}
