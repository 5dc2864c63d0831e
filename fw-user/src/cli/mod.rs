//! The `fw` command line: one module per subcommand, each with `execute()`.

pub mod allow;
pub mod conns;
pub mod down;
pub mod explain;
pub mod policy_cmd;
pub mod run;
pub mod spec;
pub mod status;
pub mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    Error,
    policy::{Policy, SEED_POLICY, parse_policy, parse_policy_file},
};

#[derive(Debug, Parser)]
#[command(
    name = "fw",
    version,
    about = "XDP host firewall: default DROP for incoming traffic, allowed ports, scans dropped before the kernel allocates anything",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the filter to interfaces (or replace the running one atomically).
    Up(up::Args),
    /// Detach the filter and remove its pins.
    Down(down::Args),
    /// Rules with packet/byte counters, drops by reason (like `iptables -L -n -v`).
    Status(status::Args),
    /// Allow a port on the running filter, live (map update; no reload).
    Allow(allow::Args),
    /// Remove an allowed port (or one source of it) from the running filter, live.
    Deny(allow::Args),
    /// Tracked connections (like `conntrack -L`).
    Conns(conns::Args),
    /// Say what the filter does with one packet, and why.
    Explain(explain::Args),
    /// Check or print policy files.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Load in the foreground, print live counters (and drops with --log), detach on Ctrl-C.
    Run(run::Args),
}

impl Cli {
    pub fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up(a) => up::execute(a),
            Command::Down(a) => down::execute(a),
            Command::Status(a) => status::execute(a),
            Command::Allow(a) => allow::execute(a, allow::Verb::Allow),
            Command::Deny(a) => allow::execute(a, allow::Verb::Deny),
            Command::Conns(a) => conns::execute(a),
            Command::Explain(a) => explain::execute(a),
            Command::Policy(c) => policy_cmd::execute(c),
            Command::Run(a) => run::execute(a),
        }
    }
}

/// A policy from `--policy FILE`, or the embedded seed policy. Returns it and its source name.
pub fn load_policy(file: Option<&PathBuf>) -> Result<(Policy, String), Error> {
    match file {
        Some(f) => Ok((parse_policy_file(f)?, f.display().to_string())),
        None => Ok((
            parse_policy("<embedded seed policy>", SEED_POLICY)?,
            "embedded seed policy".to_string(),
        )),
    }
}

/// `--iface` values, or every interface fw is attached to in this namespace.
pub fn target_ifaces(given: &[String]) -> Result<Vec<String>, Error> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let all = crate::pins::attached_ifaces()?;
    if all.is_empty() {
        return Err(Error::Other(
            "fw is not attached to any interface in this network namespace (start it with `fw up --iface IF`)".into(),
        ));
    }
    Ok(all)
}
