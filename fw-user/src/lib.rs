//! `fw`: an XDP host firewall. This library owns everything about a running filter — loading
//! and attaching the programs, the pins, the state and its history, live edits, health — behind
//! one handle, [`filter::Filter`]; `src/bin/fw.rs` and `cli/` are a thin front-end that parses,
//! calls it and prints. The policy model is the `fw-policy` crate; the decision is
//! `fw_common::decide()`.

pub mod attach;
pub mod blocklist;
pub mod blockmaps;
pub mod capture;
pub mod cli;
pub mod dispatcher;
mod dispatcher_sys;
pub mod droplog;
mod error;
pub mod filter;
pub mod follow;
pub mod guard;
pub mod health;
pub mod live_tables;
pub mod loader;
pub mod lock;
pub mod maps;
pub mod metrics;
pub mod multiprog;
pub mod native;
pub mod obs;
pub mod paths;
pub mod pcap;
pub mod persist;
pub mod probe;
pub mod serve;
pub mod sockets;
pub mod state;
pub mod status;
pub mod syncookie;
pub mod sys;
pub mod syslog;
pub mod timer;
pub mod watch;
pub mod xdp_netlink;

pub use error::Error;
