//! `fw log`: follow the drop log (reason, rule, addresses, ports, flags, interface), like
//! `journalctl -f`; `--json` for one JSON object a line (schema `droplog::LOG_SCHEMA`).

use fw_policy::Cidr;

use crate::{
    droplog::{Filter, text_line},
    follow::{FollowSpec, follow},
    paths::IfaceName,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only these reasons (as `fw status` names them; repeatable).
    #[arg(long = "reason", value_parser = parse_reason)]
    pub reasons: Vec<String>,
    /// Only packets to or from this port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only packets from this address or CIDR.
    #[arg(long)]
    pub from: Option<Cidr>,
    /// Exit after N records.
    #[arg(short = 'n', long = "count")]
    pub count: Option<u64>,
    /// Records per second while following (default: the policy's log_rate).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: Option<u32>,
}

pub fn parse_reason(s: &str) -> Result<String, String> {
    crate::capture::reason_by_name(s).map(|r| r.name().to_string())
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let ifaces = super::target_ifaces(&a.ifaces)?;
    let spec = FollowSpec {
        filter: Filter {
            reasons: a.reasons,
            port: a.port,
            from: a.from,
        },
        count: a.count,
        rate: a.rate,
    };
    crate::serve::install_stop_handler();
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let names: Vec<String> = ifaces.iter().map(ToString::to_string).collect();
    let ready = || {
        eprintln!(
            "fw: following the drop log of {} (Ctrl-C stops)",
            names.join(", ")
        );
    };
    follow(&ifaces, &spec, &crate::serve::stopped, &ready, &mut |e| {
        let line = if a.json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            text_line(e)
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })?;
    Ok(())
}
