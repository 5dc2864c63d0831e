//! `fw status`: what is let in, in plain words, with counters — like `iptables -L -n -v`.

use fw_common::{
    FlowTable, Reason,
    maps::{
        EVENT_FLOW_NEW, EVENT_FLOW_REMOVED, MAP_EMBRYO, MAP_FLOWS_IN, MAP_FLOWS_OUT, rule_slot,
    },
};
use serde::Serialize;

use crate::{
    Error,
    pinned::PinnedMaps,
    pins::{IfacePaths, attached_ifaces},
    state::State,
};
use fw_policy::{Options, Rule};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    pub iface: String,
    pub mode: String,
    pub generation: u32,
    pub flushed: bool,
    pub policy_source: String,
    pub default_policy: &'static str,
    pub options: Options,
    pub rules: Vec<RuleStatus>,
    pub reasons: Vec<ReasonStatus>,
    pub connections: Vec<TableStatus>,
}

/// Occupancy of one connection-tracking table.
#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub table: &'static str,
    pub meaning: &'static str,
    pub entries: u64,
    pub max_entries: u32,
    /// Entries created since the filter was attached.
    pub created: u64,
    /// Entries removed (expired, closed, promoted).
    pub removed: u64,
    /// Entries pushed out by the LRU because the table was full (created − removed − entries).
    pub evicted: u64,
}

pub const TABLES: [(FlowTable, &str, &str, &str); 3] = [
    (
        FlowTable::Out,
        "out",
        MAP_FLOWS_OUT,
        "flows this host opened (only this host can add to it)",
    ),
    (
        FlowTable::In,
        "in",
        MAP_FLOWS_IN,
        "inbound TCP connections that completed the handshake",
    ),
    (
        FlowTable::Embryo,
        "embryo",
        MAP_EMBRYO,
        "inbound TCP handshakes in progress (SYN floods land here)",
    ),
];

#[derive(Debug, Serialize)]
pub struct RuleStatus {
    #[serde(flatten)]
    pub rule: Rule,
    pub description: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ReasonStatus {
    pub reason: &'static str,
    pub verdict: &'static str,
    pub description: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read(iface: &str) -> Result<IfaceStatus, Error> {
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached() {
        return Err(Error::NotAttached(iface.to_string()));
    }
    let state = State::load(&paths)?;
    let maps = PinnedMaps::open(&paths)?;
    let generation = maps.active_generation()?;
    let mut rules = Vec::new();
    for r in &state.policy.rules {
        let c = maps.counter(rule_slot(generation, r.id))?;
        rules.push(RuleStatus {
            rule: r.clone(),
            description: r.describe(),
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    let mut reasons = Vec::new();
    for r in Reason::ALL {
        let c = maps.counter(r.slot())?;
        reasons.push(ReasonStatus {
            reason: r.name(),
            verdict: if r.passes() { "ACCEPT" } else { "DROP" },
            description: r.describe(),
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    let mut connections = Vec::new();
    for (table, name, map, meaning) in TABLES {
        let entries = maps.flows(table)?.len() as u64;
        let max_entries = aya::maps::MapInfo::from_pin(paths.map(map))
            .map(|i| i.max_entries())
            .unwrap_or(0);
        let created = maps.counter(EVENT_FLOW_NEW + table as u32)?.packets;
        let removed = maps.counter(EVENT_FLOW_REMOVED + table as u32)?.packets;
        connections.push(TableStatus {
            table: name,
            meaning,
            entries,
            max_entries,
            created,
            removed,
            evicted: created.saturating_sub(removed).saturating_sub(entries),
        });
    }
    Ok(IfaceStatus {
        connections,
        iface: iface.to_string(),
        mode: state.mode,
        generation,
        flushed: state.flushed || maps.config(generation)?.has(fw_common::Config::PASS_ALL),
        policy_source: state.source,
        default_policy: "DROP",
        options: state.policy.options,
        rules,
        reasons,
    })
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let ifaces = if a.ifaces.is_empty() {
        attached_ifaces()?
    } else {
        a.ifaces.clone()
    };
    let mut all = Vec::new();
    for iface in &ifaces {
        all.push(read(iface)?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!(
            "fw is not attached to any interface in this network namespace: nothing is filtered."
        );
        return Ok(());
    }
    for s in &all {
        print_text(s);
    }
    Ok(())
}

fn print_text(s: &IfaceStatus) {
    println!(
        "fw on {} (xdp {}), policy: {}, generation {}",
        s.iface, s.mode, s.policy_source, s.generation
    );
    if s.flushed {
        println!("*** FLUSHED: everything passes (`fw rollback` restores the policy) ***");
    }
    let drops: u64 = s
        .reasons
        .iter()
        .filter(|r| r.verdict == "DROP")
        .map(|r| r.packets)
        .sum();
    println!(
        "Incoming: policy DROP ({drops} packets dropped); outgoing: not filtered; loopback: not filtered"
    );
    println!();
    println!(
        "{:>10} {:>12}  {:<7} {:<5} {:<12} {:<24} comment",
        "pkts", "bytes", "target", "prot", "dport", "source"
    );
    for r in &s.rules {
        let src = if r.rule.from.is_empty() {
            "anywhere".to_string()
        } else {
            r.rule
                .from
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{:>10} {:>12}  {:<7} {:<5} {:<12} {:<24} {}",
            r.packets,
            r.bytes,
            "ACCEPT",
            r.rule.proto.name(),
            r.rule.ports.to_string(),
            src,
            r.rule.comment.as_deref().unwrap_or("")
        );
    }
    let o = &s.options;
    println!();
    println!(
        "Options: strict_tcp_flags={} icmp_echo={} fragments={:?} dhcp_client={}",
        o.strict_tcp_flags, o.icmp_echo, o.fragments, o.dhcp_client
    );
    if o.established {
        println!();
        println!(
            "Connection tracking (ESTABLISHED/RELATED{}):",
            if o.new_requires_syn {
                "; TCP not starting with SYN and not tracked is dropped"
            } else {
                ""
            }
        );
        for t in &s.connections {
            println!(
                "  {:<7} {:>8}/{:<8} created {:>8}  removed {:>8}  evicted {:>6}   {}",
                t.table, t.entries, t.max_entries, t.created, t.removed, t.evicted, t.meaning
            );
        }
    }
    println!();
    println!(
        "{:>10} {:>12}  {:<7} {:<20} meaning",
        "pkts", "bytes", "target", "reason"
    );
    for r in &s.reasons {
        println!(
            "{:>10} {:>12}  {:<7} {:<20} {}",
            r.packets, r.bytes, r.verdict, r.reason, r.description
        );
    }
    println!();
}
