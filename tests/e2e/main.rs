//! End-to-end tests: the real `imgctl` binary on real files, as root.

mod attacks;
mod bad_input;
mod cache;
mod datasets;
mod golden;
mod mount;
mod push_limits;
mod roundtrip;
mod server;
mod server_ops;
mod store;
mod trust;
