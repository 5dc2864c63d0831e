//! `fw allow` / `fw deny`: edit the running filter's policy through single map updates. The
//! program is not reloaded (its id stays), and the next packet sees the change.

use anyhow::Context as _;

use crate::{
    filter::{Edited, Filter},
    guard::Guard,
    paths::IfaceName,
};
use fw_policy::{Cidr, edit};

use super::spec::PortSpec;

#[derive(Clone, Copy, Debug)]
pub enum Verb {
    Allow,
    Deny,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// PORT[-PORT][/tcp|/udp], e.g. 8080/tcp, 6000-6010/udp (default protocol: tcp).
    pub spec: PortSpec,
    /// Only these sources (address or CIDR; repeat for several).
    #[arg(long)]
    pub from: Vec<Cidr>,
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// A note shown by `fw status` (allow only).
    #[arg(long)]
    pub comment: Option<String>,
    /// Deny even if the lockout guard objects.
    #[arg(long)]
    pub force: bool,
}

pub fn execute(a: Args, verb: Verb) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        let mut f = Filter::open(&iface)
            .with_context(|| format!("fw {verb:?} on {iface}").to_lowercase())?;
        let (proto, ports) = (a.spec.proto, a.spec.ports);
        let r = match verb {
            // Allowing more cannot lock anyone out.
            Verb::Allow => f.edit(
                |p| edit::allow(p, proto, ports, &a.from, a.comment.clone()),
                Guard::Force,
            ),
            Verb::Deny => f.edit(
                |p| edit::deny(p, proto, ports, &a.from),
                if a.force { Guard::Force } else { Guard::Check },
            ),
        };
        match r.with_context(|| format!("fw {verb:?} on {iface}").to_lowercase())? {
            Edited::Changed(m) => {
                println!("{iface}: {m}");
                if f.state().record.pending.is_some() {
                    println!(
                        "{iface}: note: an `fw apply --confirm` is pending; this edit is kept only if you `fw confirm`"
                    );
                }
                super::note_saved(f.state());
            }
            Edited::Unchanged(m) => println!("{iface}: unchanged: {m}"),
        }
    }
    Ok(())
}
