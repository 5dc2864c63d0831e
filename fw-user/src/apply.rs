//! Replacing the running policy without touching the program: fill the inactive generation,
//! flip one value. No packet sees half an old and half a new policy. Used by `fw apply`,
//! `fw rollback`, `fw flush` and the confirm-or-rollback timer.

use fw_common::maps::rule_slot;

use crate::{
    Error,
    loader::seed_flows,
    pinned::PinnedMaps,
    pins::IfacePaths,
    state::{Lock, Pending, Previous, State},
};
use fw_policy::Compiled;
use fw_policy::Policy;

#[derive(Debug)]
pub struct Applied {
    pub iface: String,
    pub generation: u32,
}

/// Make `policy` (flushed: everything passes) the running policy of `iface`. The policy in
/// force before becomes `previous` (what `fw rollback` restores). `pending` is recorded as the
/// confirmation this apply waits for.
pub fn apply_policy(
    iface: &str,
    policy: &Policy,
    source: &str,
    flushed: bool,
    pending: Option<Pending>,
) -> Result<Applied, Error> {
    let paths = attached(iface)?;
    let lock = Lock::acquire(&paths)?;
    apply_locked(&paths, &lock, policy, source, flushed, pending)
}

/// The paths of `iface`, which fw must be attached to.
pub fn attached(iface: &str) -> Result<IfacePaths, Error> {
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached() {
        return Err(Error::NotAttached(iface.to_string()));
    }
    Ok(paths)
}

/// [`apply_policy`] for a caller that already holds the interface's lock (`fw apply --confirm`
/// starts its rollback timer under it, before the new policy is in force).
pub fn apply_locked(
    paths: &IfacePaths,
    _lock: &Lock,
    policy: &Policy,
    source: &str,
    flushed: bool,
    pending: Option<Pending>,
) -> Result<Applied, Error> {
    let state = State::load(paths)?;
    let generation = swap_in(paths, policy, flushed)?;
    State {
        generation,
        flushed,
        policy: policy.clone(),
        source: source.to_string(),
        previous: Some(Previous {
            policy: state.policy,
            source: state.source,
            flushed: state.flushed,
        }),
        pending,
        ..state
    }
    .save(paths)?;
    Ok(Applied {
        iface: paths.iface.clone(),
        generation,
    })
}

/// Write `policy` into the inactive generation and flip to it. Returns the new generation.
fn swap_in(paths: &IfacePaths, policy: &Policy, flushed: bool) -> Result<u32, Error> {
    let mut maps = PinnedMaps::open(paths)?;
    let next = 1 - maps.active_generation()?;
    let mut compiled = Compiled::new(policy, next);
    if flushed {
        compiled = compiled.flushed();
    }
    let slots: Vec<u32> = policy.rules.iter().map(|r| rule_slot(next, r.id)).collect();
    maps.write_generation(&compiled, &slots)?;
    if policy.options.established {
        seed_flows(&mut maps)?;
    }
    maps.set_active(next)?;
    Ok(next)
}

/// Put the previous policy back now. With `token`, only if that confirmation is still pending
/// (the rollback timer); returns whether anything was rolled back.
pub fn rollback(iface: &str, token: Option<u64>) -> Result<bool, Error> {
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached() {
        return Err(Error::NotAttached(iface.to_string()));
    }
    let _lock = Lock::acquire(&paths)?;
    let state = State::load(&paths)?;
    if let Some(t) = token
        && state.pending.as_ref().map(|p| p.token) != Some(t)
    {
        return Ok(false);
    }
    let Some(prev) = state.previous.clone() else {
        return Err(Error::Other(format!(
            "{iface}: no previous policy to roll back to"
        )));
    };
    let generation = swap_in(&paths, &prev.policy, prev.flushed)?;
    State {
        generation,
        flushed: prev.flushed,
        policy: prev.policy,
        source: prev.source,
        previous: Some(Previous {
            policy: state.policy.clone(),
            source: state.source.clone(),
            flushed: state.flushed,
        }),
        pending: None,
        ..state
    }
    .save(&paths)?;
    Ok(true)
}

/// Clear a pending confirmation; returns whether one was pending.
pub fn confirm(iface: &str) -> Result<bool, Error> {
    let paths = IfacePaths::new(iface)?;
    let _lock = Lock::acquire(&paths)?;
    let mut state = State::load(&paths)?;
    let was = state.pending.take().is_some();
    state.save(&paths)?;
    Ok(was)
}
