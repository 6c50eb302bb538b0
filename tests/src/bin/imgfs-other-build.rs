//! A second build of `imgfs`: its command line compiled again in this crate, a separate
//! binary from `fs`'s. The restart test (e2e/restart.rs) upgrades and downgrades a running
//! mount between the two, as a package upgrade replaces the binary under a live mount.

#[path = "../../../fs/src/main.rs"]
mod imgfs;

fn main() {
    imgfs::main()
}
