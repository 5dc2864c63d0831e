//! `fw`: an XDP host firewall. This library owns everything about a running filter — loading
//! and attaching the programs, the pins, the state and its history, live edits, health — behind
//! one handle, [`filter::Filter`]; `src/bin/fw.rs` and `cli/` are a thin front-end that parses,
//! calls it and prints. The policy model is the `fw-policy` crate; the decision is
//! `fw_common::decide()`.

pub mod attach;
pub mod bench_programs;
pub mod blocklist;
pub mod blockmaps;
pub mod cli;
mod error;
pub mod filter;
pub mod filter_flood;
pub mod guard;
pub mod health;
pub mod iptables;
pub mod live_tables;
pub mod loader;
pub mod lock;
pub mod maps;
pub mod paths;
pub mod persist;
pub mod sockets;
pub mod state;
pub mod status;
pub mod sys;
pub mod timer;

pub use error::Error;
