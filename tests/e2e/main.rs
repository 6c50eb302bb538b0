//! End-to-end tests: the real imgctl, imaged and imgfs on real files, servers and FUSE mounts, as root; and the tidy checks.

mod analysis;
mod attacks;
mod audit;
mod bad_input;
mod cache;
mod datasets;
mod fleet;
mod fleet_agent;
mod fleet_ctl;
mod fleet_server;
mod fleet_window;
mod gate;
mod golden;
mod local_mount;
mod mount;
mod patch;
mod push_limits;
mod roundtrip;
mod server;
mod server_ops;
mod store;
mod tidy;
mod trust;
mod users;
