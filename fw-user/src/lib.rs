//! `fw`: an XDP host firewall. This library holds the policy model, the loader, the pinned-map
//! sync and the userspace mirror of the kernel's decision; `src/bin/fw.rs` is a thin CLI on top.

pub mod apply;
pub mod cli;
mod error;
pub mod guard;
pub mod iptables;
pub mod live;
pub mod loader;
pub mod pinned;
pub mod pins;
pub mod seed;
pub mod state;
pub mod sys;

pub use error::Error;
