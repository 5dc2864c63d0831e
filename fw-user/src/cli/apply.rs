//! `fw apply`, `fw confirm`, `fw rollback`, `fw flush`: replace the whole running policy
//! atomically, with a way back to the last confirmed policy that does not depend on the caller
//! staying alive.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    filter::{Confirm, Filter, RolledBack},
    guard::Guard,
    paths::IfaceName,
    state::Entry,
    timer,
};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The new policy (TOML).
    pub file: PathBuf,
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Bring the last confirmed policy back after SECS seconds unless `fw confirm` runs first —
    /// also if this process or your SSH session dies.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub confirm: Option<u64>,
    /// Apply even if the lockout guard objects.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IfaceArgs {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
}

/// The detached rollback timer (started by `fw apply --confirm`).
#[derive(Debug, clap::Args)]
pub struct TimerArgs {
    #[arg(long)]
    pub iface: IfaceName,
    #[arg(long)]
    pub token: u64,
    /// Unix time at which to roll back.
    #[arg(long)]
    pub deadline: u64,
}

pub fn execute_apply(a: ApplyArgs) -> anyhow::Result<()> {
    let (policy, source) = super::load_policy(Some(&a.file))?;
    let guard = if a.force { Guard::Force } else { Guard::Check };
    // Refuse before touching any interface.
    guard.check(&policy)?;
    for iface in &super::target_ifaces(&a.ifaces)? {
        let mut f = Filter::open(iface).with_context(|| format!("fw apply on {iface}"))?;
        let was_pending = f.state().record.pending.is_some();
        let entry = Entry {
            policy: policy.clone(),
            source: source.clone(),
            flushed: false,
        };
        let confirm = a.confirm.map(|secs| Confirm {
            secs,
            spawn: &timer::spawn,
        });
        let changes = f
            .apply(entry, confirm, Guard::Force)
            .with_context(|| format!("fw apply on {iface}"))?;
        println!(
            "{iface}: policy from {source} in force (generation {}), {} rules",
            f.state().record.generation,
            policy.rules.len()
        );
        super::print_changes(iface, &changes);
        super::print_syncookie_notes(iface, &policy.options);
        let back = f.state().record.confirmed.source.clone();
        match (a.confirm, was_pending) {
            (Some(secs), _) => println!(
                "{iface}: the last confirmed policy ({back}) comes back in {secs} s unless you run `fw confirm`"
            ),
            (None, true) => println!(
                "{iface}: note: an earlier `--confirm` is still pending: unless you run `fw confirm` before its deadline, {back} comes back"
            ),
            (None, false) => println!(
                "{iface}: `fw rollback` returns to the last confirmed policy ({back}); `fw confirm` makes this one it"
            ),
        }
        super::note_saved(f.state());
    }
    Ok(())
}

pub fn execute_timer(a: TimerArgs) -> anyhow::Result<()> {
    let msg = timer::run(&a.iface, a.token, a.deadline)?;
    println!("{msg}");
    Ok(())
}

pub fn execute_confirm(a: IfaceArgs) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        let mut f = Filter::open(&iface).with_context(|| format!("fw confirm on {iface}"))?;
        if f.confirm()? {
            println!(
                "{iface}: confirmed; the policy in force ({}) stays, and `fw rollback` returns to it",
                f.state().current().source
            );
            super::note_saved(f.state());
        } else {
            println!("{iface}: nothing to confirm");
        }
    }
    Ok(())
}

pub fn execute_rollback(a: IfaceArgs) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        let mut f = Filter::open(&iface).with_context(|| format!("fw rollback on {iface}"))?;
        match f
            .rollback(None)
            .with_context(|| format!("fw rollback on {iface}"))?
        {
            RolledBack::Restored(changes) => {
                println!(
                    "{iface}: the last confirmed policy is back ({})",
                    f.state().current().source
                );
                super::print_changes(&iface, &changes);
            }
            RolledBack::AlreadyConfirmed | RolledBack::NotPending => println!(
                "{iface}: the last confirmed policy ({}) is already in force: nothing to roll back",
                f.state().current().source
            ),
        }
    }
    Ok(())
}

pub fn execute_flush(a: IfaceArgs) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        let mut f = Filter::open(&iface).with_context(|| format!("fw flush on {iface}"))?;
        if f.flush().with_context(|| format!("fw flush on {iface}"))? {
            println!(
                "{iface}: FLUSHED — all incoming traffic passes; the program stays attached. `fw rollback` puts the last confirmed policy back."
            );
        } else {
            println!("{iface}: already flushed: nothing to do");
        }
    }
    Ok(())
}
