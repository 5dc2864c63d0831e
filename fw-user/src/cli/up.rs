//! `fw up`: attach; on an attached interface, upgrade the programs and keep the running policy
//! (replacing it takes `--policy FILE` or `--default`); on one whose interface was recreated,
//! attach the running policy again.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    attach::{EgressMode, Mode},
    filter::{Filter, UpKind, UpOptions},
    guard::Guard,
    paths::IfaceName,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface to filter (repeat for several).
    #[arg(long = "iface", short = 'i', required = true)]
    pub ifaces: Vec<IfaceName>,
    /// Put this policy (TOML) in force. Without it, a running filter keeps its policy, and a
    /// new one starts with the embedded seed policy (`fw policy default` prints it).
    #[arg(long, short = 'p')]
    pub policy: Option<PathBuf>,
    /// Put the embedded seed policy in force, also on a running filter.
    #[arg(long, conflicts_with = "policy")]
    pub default: bool,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// How to attach the egress connection recorder: TCX (Linux ≥ 6.6) or a clsact qdisc.
    #[arg(long, value_enum, default_value_t = EgressMode::Auto)]
    pub egress: EgressMode,
    /// Load even if the lockout guard objects (the policy would cut your SSH access).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub share: ShareArgs,
}

/// Sharing the interface with other XDP programs (the libxdp multi-program protocol).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ShareArgs {
    /// Run fw in a libxdp dispatcher, beside programs loaded with xdp-loader, xdp-filter and
    /// other libxdp tools: joins the dispatcher on the interface or creates one (needs libxdp's
    /// xdp-dispatcher.o). Without it, fw joins a dispatcher that is there and otherwise
    /// attaches alone.
    #[arg(long)]
    pub multiprog: bool,
    /// fw's run priority in the dispatcher (lower runs first; xdp-filter uses 10, libxdp's
    /// default is 50). Implies --multiprog. Default 20; on a running filter, reorders it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub priority: Option<u32>,
}

impl ShareArgs {
    pub fn share(self) -> crate::multiprog::Share {
        if self.multiprog || self.priority.is_some() {
            crate::multiprog::Share::Dispatcher {
                priority: self.priority,
            }
        } else {
            crate::multiprog::Share::Auto
        }
    }
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    // Everything is checked before anything changes: the policy, then every interface.
    let given = match (&a.policy, a.default) {
        (Some(_), _) | (None, true) => Some(super::load_policy(a.policy.as_ref())?),
        (None, false) => None,
    };
    let (seed, seed_source) = super::seed_policy()?;
    for iface in &a.ifaces {
        if iface.index().is_none() && !crate::paths::IfacePaths::new(iface)?.is_attached()? {
            anyhow::bail!(crate::Error::NoSuchInterface(iface.to_string()));
        }
    }
    for iface in &a.ifaces {
        // An fw of another map layout counts as attached: its policy comes along (the seed
        // policy would silently replace it and its live edits).
        let attached = crate::paths::IfacePaths::new(iface)?.is_attached()?
            || crate::paths::other_layout(iface)?.is_some();
        let policy = match (&given, attached) {
            (Some((p, s)), _) => Some((p, s.as_str())),
            (None, false) => Some((&seed, seed_source.as_str())),
            (None, true) => None,
        };
        let opts = UpOptions {
            mode: a.mode,
            egress: a.egress,
            policy,
            guard: if a.force { Guard::Force } else { Guard::Check },
            log: false,
            share: a.share.share(),
        };
        let (f, report, _ebpf) =
            Filter::up(iface, &opts).with_context(|| format!("fw up on {iface}"))?;
        let rules = f.state().current().policy.rules.len();
        match &report.kind {
            UpKind::Attached => println!(
                "{iface}: filter attached (xdp {}{}, egress {}), {rules} rules; incoming traffic not allowed below is dropped",
                report.mode.name(),
                f.state().multiprog.map_or(String::new(), |m| format!(
                    " in a libxdp dispatcher at priority {}",
                    m.priority
                )),
                egress_name(&report.egress)
            ),
            UpKind::Upgraded if report.changes.is_some() => println!(
                "{iface}: policy replaced atomically by {} (programs replaced on the running links, no gap)",
                f.state().current().source
            ),
            UpKind::Upgraded => println!(
                "{iface}: programs replaced on the running links (no gap); counters and connections kept"
            ),
            UpKind::Healed(why) => println!(
                "{iface}: attached again ({why}), with the policy that was in force: {}",
                f.state().current().source
            ),
        }
        if let Some(why) = &report.native_unavailable {
            println!("{iface}: warning: XDP runs in generic (skb) mode, slower than native: {why}");
        }
        match &report.changes {
            Some(c) => super::print_changes(iface, c),
            None if report.kind == UpKind::Upgraded => println!(
                "{iface}: kept the running policy ({}); `fw up --policy FILE` or `fw apply FILE` replaces it",
                f.state().current().source
            ),
            None => {}
        }
        for n in &report.notes {
            println!("{iface}: note: {n}");
        }
        if report.kind == UpKind::Attached {
            println!("Allowed in:");
            for line in f.state().current().policy.describe() {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

pub fn egress_name(e: &crate::state::EgressAttach) -> &'static str {
    match e {
        crate::state::EgressAttach::Tcx => "tcx",
        crate::state::EgressAttach::Clsact { .. } => "clsact",
    }
}
