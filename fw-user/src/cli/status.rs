//! `fw status`: what is let in, in plain words, with counters — like `iptables -L -n -v`.

use fw_common::{Reason, maps::rule_slot};
use serde::Serialize;

use crate::{
    Error,
    pinned::PinnedMaps,
    pins::{IfacePaths, attached_ifaces},
    policy::{Options, Rule},
    state::State,
};

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
}

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
    Ok(IfaceStatus {
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
        println!("*** FLUSHED: everything passes (`fw up` or `fw apply` restores the policy) ***");
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
