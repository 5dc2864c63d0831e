//! `fw limit PORTS/PROTO RATE [--burst N] [--per /24] [--per6 /48] [--total RATE]
//! [--ban-after N --ban-for 10m]`, and `fw limit PORTS/PROTO --remove`.

use anyhow::Context as _;

use crate::{
    filter::{Edited, Filter},
    guard::Guard,
    paths::IfaceName,
};
use fw_policy::{Limit, Rate, limit};

use super::spec::PortSpec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// PORT[-PORT][/tcp|/udp], e.g. 22/tcp.
    pub spec: PortSpec,
    /// New connections per source per period: 6/30s, 100/s, 10/1m.
    pub rate: Option<Rate>,
    /// Connections a source may open at once (default: the rate's count).
    #[arg(long)]
    pub burst: Option<u32>,
    /// IPv4 sources in one prefix share a bucket (default /32).
    #[arg(long, value_parser = |s: &str| limit::parse_prefix(s, 32))]
    pub per: Option<u8>,
    /// IPv6 sources in one prefix share a bucket (default /64).
    #[arg(long, value_parser = |s: &str| limit::parse_prefix(s, 128))]
    pub per6: Option<u8>,
    /// All sources together.
    #[arg(long)]
    pub total: Option<Rate>,
    /// Ban a source (every port) after this many over-limit connection attempts.
    #[arg(long)]
    pub ban_after: Option<u32>,
    /// How long a ban lasts (default 10m).
    #[arg(long, value_parser = limit::parse_duration)]
    pub ban_for: Option<u64>,
    /// Remove the limit.
    #[arg(long, conflicts_with_all = ["rate", "burst", "per", "per6", "total", "ban_after", "ban_for"])]
    pub remove: bool,
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Limit even if the lockout guard objects.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    pub fn limit(&self) -> Limit {
        let mut l = Limit {
            rate: self.rate,
            burst: self.burst,
            total: self.total,
            ban_after: self.ban_after,
            ..Limit::default()
        };
        if let Some(p) = self.per {
            l.per4 = p;
        }
        if let Some(p) = self.per6 {
            l.per6 = p;
        }
        if let Some(d) = self.ban_for {
            l.ban_secs = d;
        }
        l
    }
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    if !a.remove && a.rate.is_none() && a.total.is_none() {
        anyhow::bail!("say the limit (e.g. `fw limit 22/tcp 6/30s`), or --remove it");
    }
    for iface in super::target_ifaces(&a.ifaces)? {
        let mut f = Filter::open(&iface).with_context(|| format!("fw limit on {iface}"))?;
        let (proto, ports) = (a.spec.proto, a.spec.ports);
        let guard = if a.force { Guard::Force } else { Guard::Check };
        let r = if a.remove {
            f.limit_remove(proto, ports)
        } else {
            f.limit_set(proto, ports, a.limit(), guard)
        };
        match r.with_context(|| format!("fw limit on {iface}"))? {
            Edited::Changed(m) => {
                println!("{iface}: {m}");
                super::note_saved(f.state());
            }
            Edited::Unchanged(m) => println!("{iface}: unchanged: {m}"),
        }
    }
    Ok(())
}
