//! `fw up`: attach, or replace the running filter without a gap.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::loader::{self, Mode, Up};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface to filter (repeat for several).
    #[arg(long = "iface", short = 'i', required = true)]
    pub ifaces: Vec<String>,
    /// Policy file (TOML); default: the embedded seed policy (`fw policy default` prints it).
    #[arg(long, short = 'p')]
    pub policy: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Load even if the lockout guard objects (the policy would cut your SSH access).
    #[arg(long)]
    pub force: bool,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    // Everything is checked before anything changes: the policy, then every interface.
    let (policy, source) = super::load_policy(a.policy.as_ref())?;
    super::apply::guard_or_refuse(&policy, a.force)?;
    for iface in &a.ifaces {
        loader::check_iface(iface)?;
    }
    for iface in &a.ifaces {
        let (report, _ebpf) = loader::up(&Up {
            iface,
            mode: a.mode,
            policy: &policy,
            source: &source,
            log: false,
        })
        .with_context(|| format!("fw up on {iface}"))?;
        if report.replaced {
            println!(
                "{iface}: policy replaced atomically ({} rules, generation {}, xdp {})",
                policy.rules.len(),
                report.generation,
                report.mode
            );
        } else {
            println!(
                "{iface}: filter attached (xdp {}), {} rules; incoming traffic not allowed below is dropped",
                report.mode,
                policy.rules.len()
            );
        }
    }
    println!("Allowed in:");
    for line in policy.describe() {
        println!("  {line}");
    }
    Ok(())
}
