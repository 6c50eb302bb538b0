//! Helpers shared by the end-to-end tests, one module per thing they drive: `imgctl` (the
//! command runner on a temporary store), `server` (a real imaged), `mount` (a real imgfs
//! mount), `clock` (the time those processes see), `store` (the store's files, directly),
//! `trees` (trees with every kind of file, and their comparison), `proxy` (a repository the
//! test controls), `tunnel` (a TCP tunnel a test cuts), `fleet` (a synthetic fleet endpoint),
//! `agent` (a real `imgfs agent`). Every helper is also reachable at the crate root (`tests::Imgctl`,
//! `tests::bin`, ...).

use std::path::{Path, PathBuf};

pub mod agent;
pub mod clock;
pub mod fleet;
pub mod garage;
pub mod imgctl;
pub mod mount;
pub mod nginx;
pub mod proxy;
pub mod server;
pub mod signer;
pub mod store;
pub mod trees;
pub mod tunnel;

pub use clock::TestClock;
pub use imgctl::{failed, ok_json, ok_text, Imgctl};
pub use mount::{mount_helper_lock, Mount};
pub use server::{client, Server};
pub use store::{corrupt_in_packs, corrupt_object, corrupt_served, framed_raw, store_objects};
pub use trees::{build_special_tree, compare_trees, compare_trees_but_mtimes, noise, sample_acl};

/// Where the workspace's binaries are: next to the test executable's `deps/` folder, or next
/// to the executable itself (a benchmark's binary in `target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.parent().expect("target/<profile>").join(name);
    if beside.exists() && exe.parent().and_then(Path::file_name).is_some_and(|d| d != "deps") {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)", path.display());
    path
}
