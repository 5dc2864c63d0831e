//! `fw conns`: the tracked connections, like `conntrack -L`.

use std::net::IpAddr;

use fw_common::{FlowKey, FlowState, flow::state};
use serde::Serialize;

use crate::{
    maps::PinnedMaps,
    paths::{IfaceName, IfacePaths},
    sys::monotonic_coarse_ns,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    #[arg(long)]
    pub json: bool,
}

/// Version of the `--json` shape of `fw conns` (each object carries it, as `fw status` does).
pub const CONNS_SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Conn {
    /// [`CONNS_SCHEMA`]: bumped when a field changes meaning or goes away.
    pub schema: u32,
    pub iface: String,
    pub table: &'static str,
    pub proto: &'static str,
    pub local: String,
    pub remote: String,
    pub state: &'static str,
    /// Seconds since the last packet that refreshed the entry.
    pub idle_secs: u64,
    pub seeded: bool,
}

fn addr(a: &[u8; 16], family: u8) -> IpAddr {
    if family == 4 {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        IpAddr::from(*a)
    }
}

fn endpoint(a: &[u8; 16], port: u16, family: u8, proto: u8) -> String {
    let ip = addr(a, family);
    let icmp = proto == 1 || proto == 58;
    match (ip, icmp) {
        (_, true) if port == 0 => ip.to_string(),
        (_, true) => format!("{ip} id {port}"),
        (IpAddr::V6(_), _) => format!("[{ip}]:{port}"),
        _ => format!("{ip}:{port}"),
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        state::SYN_SENT => "SYN_SENT",
        state::SYN_RECV => "SYN_RECV",
        state::ESTABLISHED => "ESTABLISHED",
        state::CLOSING => "CLOSING",
        state::CLOSED => "CLOSED",
        state::UNREPLIED => "UNREPLIED",
        state::REPLIED => "REPLIED",
        _ => "?",
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        _ => "other",
    }
}

pub fn list(iface: &IfaceName) -> anyhow::Result<Vec<Conn>> {
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached()? {
        anyhow::bail!(crate::Error::NotAttached(iface.to_string()));
    }
    let maps = PinnedMaps::open(&paths)?;
    let now = monotonic_coarse_ns();
    let mut out = Vec::new();
    for (table, name, _, _) in crate::status::TABLES {
        for (k, v) in maps.flows(table)? {
            out.push(conn(iface.as_str(), name, &k, &v, now));
        }
    }
    Ok(out)
}

fn conn(iface: &str, table: &'static str, k: &FlowKey, v: &FlowState, now: u64) -> Conn {
    Conn {
        schema: CONNS_SCHEMA,
        iface: iface.to_string(),
        table,
        proto: proto_name(k.proto),
        local: endpoint(&k.local, k.local_port, k.family, k.proto),
        remote: endpoint(&k.remote, k.remote_port, k.family, k.proto),
        state: state_name(v.state),
        idle_secs: now.saturating_sub(v.last_seen) / 1_000_000_000,
        seeded: v.flags & FlowState::SEEDED != 0,
    }
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for iface in super::target_ifaces(&a.ifaces)? {
        all.extend(list(&iface)?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<7} {:<7} {:<44} {:<44} {:<12} {:>6}",
        "iface", "table", "proto", "local", "remote", "state", "idle"
    );
    for c in &all {
        println!(
            "{:<8} {:<7} {:<7} {:<44} {:<44} {:<12} {:>5}s{}",
            c.iface,
            c.table,
            c.proto,
            c.local,
            c.remote,
            c.state,
            c.idle_secs,
            if c.seeded { " (seeded)" } else { "" }
        );
    }
    println!("{} tracked flows", all.len());
    Ok(())
}
