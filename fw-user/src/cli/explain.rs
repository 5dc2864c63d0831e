//! `fw explain`: what the filter does with one packet, and why — computed by the same
//! `decide()` the kernel runs, over the live maps (or a policy file).

use std::{net::IpAddr, path::PathBuf};

use anyhow::bail;
use fw_common::{
    Decision, decide_parsed,
    frame::{L4Spec, PacketSpec, describe, parse_hex},
    maps::slot_rule,
    parse,
};
use fw_policy::{Compiled, Policy};

use crate::{
    live_tables::LiveTables,
    maps::PinnedMaps,
    paths::{IfaceName, IfacePaths, attached_ifaces},
    state::State,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The frame as hex bytes, starting with the Ethernet header (e.g. from `tcpdump -xx`).
    #[arg(long, conflicts_with_all = ["proto"])]
    pub hex: Option<String>,
    /// Describe the packet instead: tcp, udp or icmp.
    #[arg(long)]
    pub proto: Option<String>,
    #[arg(long, default_value = "198.51.100.7")]
    pub src: IpAddr,
    /// Destination address (default: a documentation address of the source's family).
    #[arg(long)]
    pub dst: Option<IpAddr>,
    #[arg(long, default_value_t = 40000)]
    pub sport: u16,
    #[arg(long, default_value_t = 0)]
    pub dport: u16,
    /// TCP flags as letters (S, SA, FPU, none, all).
    #[arg(long, default_value = "S", value_parser = super::spec::parse_tcp_flags)]
    pub flags: u8,
    #[arg(long, default_value_t = 8)]
    pub icmp_type: u8,
    /// Judge by this policy file instead of the running filter.
    #[arg(long, short = 'p', conflicts_with = "iface")]
    pub policy: Option<PathBuf>,
    /// Judge by the running filter on this interface (default: the only one attached, else
    /// the embedded seed policy).
    #[arg(long, short = 'i')]
    pub iface: Option<IfaceName>,
}

fn frame(a: &Args) -> anyhow::Result<Vec<u8>> {
    if let Some(h) = &a.hex {
        return parse_hex(h).map_err(anyhow::Error::msg);
    }
    let Some(proto) = &a.proto else {
        bail!("give the packet: --hex BYTES, or --proto tcp|udp|icmp with --dport and friends");
    };
    let dst = a.dst.unwrap_or(match a.src {
        IpAddr::V4(_) => "192.0.2.1".parse()?,
        IpAddr::V6(_) => "2001:db8::1".parse()?,
    });
    if a.src.is_ipv4() != dst.is_ipv4() {
        bail!("--src and --dst must both be IPv4 or both IPv6");
    }
    let l4 = match proto.as_str() {
        "tcp" => L4Spec::Tcp {
            sport: a.sport,
            dport: a.dport,
            flags: a.flags,
        },
        "udp" => L4Spec::Udp {
            sport: a.sport,
            dport: a.dport,
        },
        "icmp" | "icmpv6" => L4Spec::Icmp {
            ty: a.icmp_type,
            code: 0,
        },
        other => bail!("--proto {other:?}: expected tcp, udp or icmp"),
    };
    let mut spec = PacketSpec::new("0.0.0.0", "0.0.0.0", l4);
    spec.src = a.src;
    spec.dst = dst;
    Ok(spec.build())
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let bytes = frame(&a)?;
    let parsed = parse(bytes.as_slice());
    println!("packet: {}", describe(&parsed));
    let iface = match (&a.iface, &a.policy) {
        (Some(i), _) => Some(i.clone()),
        (None, Some(_)) => None,
        (None, None) => {
            let all = if crate::paths::ensure_bpffs().is_ok() {
                attached_ifaces()?
            } else {
                Vec::new()
            };
            (all.len() == 1).then(|| all[0].clone())
        }
    };
    if let Some(iface) = iface {
        let paths = IfacePaths::new(&iface)?;
        if !paths.is_attached()? {
            bail!(crate::Error::NotAttached(iface.to_string()));
        }
        let state = State::load(&paths)?;
        let maps = PinnedMaps::open(&paths)?;
        let t = LiveTables::new(&maps)?;
        println!("judged by: the running filter on {iface}");
        let d = decide_parsed(&parsed, &t);
        report(&d, &state.current().policy);
        let store = crate::blocklist::BlockStore::load(&paths).ok();
        for line in crate::filter::flood::explain_detail(
            &parsed,
            &d,
            &t,
            &state.current().policy,
            store.as_ref(),
        ) {
            println!("  {line}");
        }
    } else {
        let (policy, source) = super::load_policy(a.policy.as_ref())?;
        let t = Compiled::new(&policy, 0);
        println!("judged by: {source}");
        let d = decide_parsed(&parsed, &t);
        report(&d, &policy);
        for line in crate::filter::flood::explain_detail(&parsed, &d, &t, &policy, None) {
            println!("  {line}");
        }
    }
    Ok(())
}

fn report(d: &Decision, policy: &Policy) {
    let verdict = if d.answers() {
        "ANSWER (XDP_TX)"
    } else if d.pass {
        "PASS"
    } else {
        "DROP"
    };
    if d.why() == Some(fw_common::Reason::SynCookieBad) {
        println!(
            "note: a SYN cookie is checked with the kernel's own secret, which fw explain cannot read: an ACK that carries a valid cookie passes (syn-cookie-ack)"
        );
    }
    if let Some(r) = d.why() {
        println!("verdict: {verdict}: {} [{}]", r.describe(), r.name());
    } else if let Some((_, id)) = slot_rule(d.slot) {
        let rule = policy.rules.iter().find(|r| r.id == id);
        match rule {
            Some(r) => println!("verdict: {verdict}: allowed by rule {id}: {}", r.describe()),
            None => println!("verdict: {verdict}: allowed by rule {id}"),
        }
    } else {
        println!("verdict: {verdict} (counter slot {})", d.slot);
    }
}
