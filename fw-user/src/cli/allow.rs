//! `fw allow` / `fw deny`: edit the running filter's policy through single map updates. The
//! program is not reloaded (its id stays), and the next packet sees the change.

use anyhow::{Context as _, bail};

use crate::{
    pinned::PinnedMaps,
    pins::IfacePaths,
    state::{Lock, State},
};
use fw_policy::Compiled;
use fw_policy::{
    Cidr,
    edit::{self, Edit},
};

use super::spec::PortSpec;
use fw_common::maps::rule_slot;

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
    pub ifaces: Vec<String>,
    /// A note shown by `fw status` (allow only).
    #[arg(long)]
    pub comment: Option<String>,
    /// Deny even if the lockout guard objects.
    #[arg(long)]
    pub force: bool,
}

pub fn execute(a: Args, verb: Verb) -> anyhow::Result<()> {
    let ifaces = super::target_ifaces(&a.ifaces)?;
    for iface in ifaces {
        let msg = edit_iface(&iface, &a, verb).with_context(|| iface.to_string())?;
        println!("{iface}: {msg}");
    }
    Ok(())
}

fn edit_iface(iface: &str, a: &Args, verb: Verb) -> anyhow::Result<String> {
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached() {
        bail!(crate::Error::NotAttached(iface.to_string()));
    }
    let _lock = Lock::acquire(&paths)?;
    let mut state = State::load(&paths)?;
    let mut maps = PinnedMaps::open(&paths)?;
    let generation = maps.active_generation()?;
    let mut policy = state.policy.clone();
    let outcome = match verb {
        Verb::Allow => edit::allow(
            &mut policy,
            a.spec.proto,
            a.spec.ports,
            &a.from,
            a.comment.clone(),
        ),
        Verb::Deny => edit::deny(&mut policy, a.spec.proto, a.spec.ports, &a.from),
    }
    .map_err(anyhow::Error::msg)?;
    let msg = match outcome {
        Edit::Unchanged(m) => return Ok(format!("unchanged: {m}")),
        Edit::Changed(m) => m,
    };
    if matches!(verb, Verb::Deny) {
        super::apply::guard_or_refuse(&policy, a.force)?;
    }
    let old = Compiled::new(&state.policy, generation);
    let new = Compiled::new(&policy, generation);
    let old_ids: Vec<u32> = state.policy.rules.iter().map(|r| r.id).collect();
    let new_slots: Vec<u32> = policy
        .rules
        .iter()
        .filter(|r| !old_ids.contains(&r.id))
        .map(|r| rule_slot(generation, r.id))
        .collect();
    maps.apply_diff(&old, &new, &new_slots)?;
    state.policy = policy;
    state.generation = generation;
    state.save(&paths)?;
    Ok(msg)
}
