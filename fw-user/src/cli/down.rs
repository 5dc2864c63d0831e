//! `fw down`: detach and remove the pins.

use anyhow::Context as _;

use crate::loader;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface to stop filtering (repeat for several; default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        loader::down(&iface).with_context(|| format!("fw down on {iface}"))?;
        println!("{iface}: filter removed; all incoming traffic passes again");
    }
    Ok(())
}
