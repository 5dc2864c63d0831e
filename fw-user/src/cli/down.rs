//! `fw down`: detach and remove the pins and state. Idempotent: an interface fw is not on is
//! "nothing to do", exit 0 (so configuration management can run it again).

use anyhow::Context as _;

use crate::{filter, paths::IfaceName};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface to stop filtering (repeat for several; default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let ifaces = if a.ifaces.is_empty() {
        crate::paths::ensure_bpffs()?;
        crate::paths::attached_ifaces()?
    } else {
        a.ifaces
    };
    if ifaces.is_empty() {
        println!("fw is not attached to any interface in this network namespace: nothing to do");
    }
    for iface in ifaces {
        if filter::down(&iface).with_context(|| format!("fw down on {iface}"))? {
            println!("{iface}: filter removed; all incoming traffic passes again");
        } else {
            println!("{iface}: fw is not attached: nothing to do");
        }
    }
    Ok(())
}
