//! The one handle for a running filter. Every change of fw on an interface — attach, upgrade,
//! heal, live edit, apply, confirm, rollback, flush, down — goes through [`Filter`], which owns
//! the interface's lock, its pinned maps and its state; the CLI verbs, the tests and the
//! benchmark call the same methods.
//!
//! Every change the kernel sees is written ahead in the state ([`crate::state`]): a crash or a
//! full /run at any point leaves a state that the next command completes or undoes.

use fw_policy::{Policy, edit::Edit};

use crate::{
    Error,
    attach::{self, LinkHealth},
    guard::Guard,
    lock::Lock,
    maps::PinnedMaps,
    paths::{self, IfaceName, IfacePaths},
    sockets::seed_flows,
    state::{EgressAttach, Entry, Pending, Record, State, Txn},
};

pub mod flood;
mod migrate;
mod up;

pub use up::{UpKind, UpOptions, UpReport};

pub struct Filter {
    iface: IfaceName,
    paths: IfacePaths,
    _lock: Lock,
    state: State,
    maps: PinnedMaps,
}

/// The result of a live edit.
#[derive(Debug, PartialEq, Eq)]
pub enum Edited {
    Changed(String),
    Unchanged(String),
}

/// The rollback timer of an `fw apply --confirm`: started before the new policy is in force,
/// so a policy in force always has its timer. Returns the timer's pid.
pub type SpawnTimer<'a> = &'a dyn Fn(&IfaceName, u64, u64) -> Result<u32, Error>;

pub struct Confirm<'a> {
    pub secs: u64,
    pub spawn: SpawnTimer<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RolledBack {
    /// The last confirmed policy is in force again; what changed.
    Restored(Vec<String>),
    /// It already was: nothing to do.
    AlreadyConfirmed,
    /// The timer's confirmation was confirmed or superseded meanwhile.
    NotPending,
}

impl Filter {
    /// The filter attached to `iface`, locked, its state reconciled with the kernel.
    pub fn open(iface: &IfaceName) -> Result<Filter, Error> {
        paths::ensure_bpffs()?;
        Self::open_at(iface, IfacePaths::new(iface)?)
    }

    /// [`Filter::open`] with explicit paths (tests).
    pub fn open_at(iface: &IfaceName, paths: IfacePaths) -> Result<Filter, Error> {
        if !paths.is_attached()? {
            return Err(Error::NotAttached(iface.to_string()));
        }
        let lock = Lock::acquire(&paths)?;
        let state = State::load(&paths)?;
        let maps = PinnedMaps::open(&paths)?;
        let mut f = Filter {
            iface: iface.clone(),
            paths,
            _lock: lock,
            state,
            maps,
        };
        f.reconcile()?;
        if crate::blocklist::interrupted(&f.paths) {
            f.resync_blocks(None)?;
        }
        Ok(f)
    }

    pub fn iface(&self) -> &IfaceName {
        &self.iface
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn maps(&self) -> &PinnedMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut PinnedMaps {
        &mut self.maps
    }

    pub fn paths(&self) -> &IfacePaths {
        &self.paths
    }

    /// Refuse to change a filter whose links lost their interface: the change would report
    /// success and filter nothing.
    fn ensure_live(&self) -> Result<(), Error> {
        match attach::xdp_health(&self.paths, &self.iface) {
            LinkHealth::Attached => Ok(()),
            LinkHealth::Severed => Err(Error::LinkSevered {
                iface: self.iface.to_string(),
                detail: "the interface was deleted".into(),
            }),
            LinkHealth::Moved { link, now } => Err(Error::LinkSevered {
                iface: self.iface.to_string(),
                detail: format!(
                    "the filter is on interface index {link}, {} is now {}",
                    self.iface,
                    now.map_or("gone".to_string(), |n| format!("index {n}"))
                ),
            }),
            LinkHealth::Missing => Err(Error::NotAttached(self.iface.to_string())),
            LinkHealth::Foreign(why) => Err(Error::UnsafePath {
                path: self.paths.link(),
                why,
            }),
        }
    }

    /// Write `after` into the inactive generation, write it ahead, flip, commit. Rules that
    /// stay in force keep their ids, hence their counters (see [`fw_policy::ids`]).
    fn flip(&mut self, mut after: Record, note: String) -> Result<(), Error> {
        let fresh = carry_record_ids(&mut after, &self.state.current().policy);
        write_record(&mut self.maps, &self.paths, &after, Some(&fresh))?;
        if after.current.policy.blocks != self.state.current().policy.blocks {
            crate::filter::flood::sync_from_maps(
                &mut self.maps,
                &self.paths,
                &after.current.policy,
            )?;
        }
        self.state.txn = Some(Txn {
            after: after.clone(),
            flip: true,
        });
        self.state.save(&self.paths)?;
        if after.current.policy.options.established {
            seed_flows(&mut self.maps)?;
        }
        self.maps.set_active(after.generation)?;
        self.commit(after, note)
    }

    fn commit(&mut self, after: Record, note: String) -> Result<(), Error> {
        self.state.record = after;
        self.state.txn = None;
        self.state.note(note);
        self.state.save(&self.paths)?;
        crate::obs::sync_policy_log(&self.paths, &self.state.current().policy.options)
    }

    /// Replace the policy in force (`fw apply`). With `confirm`, the last confirmed policy
    /// comes back after `secs` unless `fw confirm` runs first. Returns what changed.
    pub fn apply(
        &mut self,
        entry: Entry,
        confirm: Option<Confirm<'_>>,
        guard: Guard,
    ) -> Result<Vec<String>, Error> {
        self.ensure_live()?;
        guard.check(&entry.policy)?;
        let next = 1 - self.state.record.generation;
        let pending = match &confirm {
            Some(c) => {
                let token = random_token();
                let deadline = crate::state::deadline_after(std::time::SystemTime::now(), c.secs);
                let pid = (c.spawn)(&self.iface, token, deadline)?;
                Some(Pending {
                    token,
                    deadline,
                    timer_pid: Some(pid),
                })
            }
            None => None,
        };
        let changes = entry_changes(self.state.current(), &entry);
        let superseded = self.state.record.pending.clone();
        let note = format!(
            "apply: {}{}",
            entry.source,
            confirm
                .as_ref()
                .map_or(String::new(), |c| format!(" (confirm within {} s)", c.secs))
        );
        let after = self.state.record.applied(entry, next, pending);
        self.flip(after, note)?;
        // An earlier confirmation's timer has nothing left to do once a new one replaced it.
        if let Some(p) = superseded
            && self.state.record.pending.as_ref().map(|n| n.token) != Some(p.token)
        {
            crate::timer::stop(p.timer_pid, p.token);
        }
        Ok(changes)
    }

    /// `fw confirm`: what is in force becomes what a rollback returns to (and a pending
    /// timer stops). Returns false when that was so already.
    pub fn confirm(&mut self) -> Result<bool, Error> {
        if self.state.record.at_confirmed() {
            return Ok(false);
        }
        let pending = self.state.record.pending.clone();
        let after = self.state.record.confirmed_now();
        self.commit(after, "confirm".into())?;
        if let Some(p) = pending {
            crate::timer::stop(p.timer_pid, p.token);
        }
        Ok(true)
    }

    /// Put the last confirmed policy back. With `token` (the timer), only if that
    /// confirmation is still pending.
    pub fn rollback(&mut self, token: Option<u64>) -> Result<RolledBack, Error> {
        let pending = self.state.record.pending.clone();
        if let Some(t) = token
            && pending.as_ref().map(|p| p.token) != Some(t)
        {
            return Ok(RolledBack::NotPending);
        }
        if self.state.record.at_confirmed() {
            return Ok(RolledBack::AlreadyConfirmed);
        }
        self.ensure_live()?;
        let changes = entry_changes(self.state.current(), &self.state.record.confirmed);
        let next = 1 - self.state.record.generation;
        let after = self.state.record.rolled_back(next);
        let what = if token.is_some() {
            "rollback (timer: not confirmed in time)"
        } else {
            "rollback"
        };
        self.flip(after, what.into())?;
        if token.is_none()
            && let Some(p) = pending
        {
            crate::timer::stop(p.timer_pid, p.token);
        }
        Ok(RolledBack::Restored(changes))
    }

    /// `fw flush`: everything passes, the program stays. Returns false if already flushed.
    pub fn flush(&mut self) -> Result<bool, Error> {
        if self.state.current().flushed {
            return Ok(false);
        }
        self.ensure_live()?;
        let next = 1 - self.state.record.generation;
        let after = self.state.record.flushed(next);
        self.flip(after, "flush".into())?;
        Ok(true)
    }

    /// A live edit of the policy in force (`fw allow`, `fw deny`): single map updates in an
    /// order where every intermediate state is sound; the program and the counters of the
    /// other rules are untouched.
    pub fn edit(
        &mut self,
        change: impl FnOnce(&mut Policy) -> Result<Edit, String>,
        guard: Guard,
    ) -> Result<Edited, Error> {
        self.ensure_live()?;
        if self.state.current().flushed {
            return Err(Error::Refused(format!(
                "{}: fw is flushed (everything passes); `fw rollback` first, then edit the policy",
                self.iface
            )));
        }
        let mut policy = self.state.current().policy.clone();
        let msg = match change(&mut policy).map_err(Error::Edit)? {
            Edit::Unchanged(m) => return Ok(Edited::Unchanged(m)),
            Edit::Changed(m) => m,
        };
        guard.check(&policy)?;
        let after = self.state.record.edited(policy);
        self.state.txn = Some(Txn {
            after: after.clone(),
            flip: false,
        });
        self.state.save(&self.paths)?;
        self.apply_edit(&after)?;
        self.commit(after, format!("edit: {msg}"))?;
        Ok(Edited::Changed(msg))
    }

    /// Bring the active generation from the committed record to `after` in place.
    fn apply_edit(&mut self, after: &Record) -> Result<(), Error> {
        let g = self.state.record.generation;
        self.maps
            .edit_policy(g, &self.state.current().policy, &after.current.policy)
    }

    /// Finish or forget a change a crash interrupted (see [`crate::state`]); and if a pending
    /// confirmation is past its deadline with no timer left to act on it, roll back now — the
    /// promise of `--confirm` does not depend on one process staying alive.
    fn reconcile(&mut self) -> Result<(), Error> {
        self.resolve_txn()?;
        if let Some(p) = self.state.record.pending.clone()
            && crate::state::unix_now() > p.deadline + 2
            && !p
                .timer_pid
                .is_some_and(|pid| crate::timer::is_running(pid, p.token))
            && self.ensure_live().is_ok()
        {
            log::warn!(
                "{}: a pending `fw apply --confirm` is past its deadline and its timer is gone: rolling back now",
                self.iface
            );
            let next = 1 - self.state.record.generation;
            let after = self.state.record.rolled_back(next);
            self.flip(
                after,
                "rollback (overdue confirmation; its timer was gone)".into(),
            )?;
        }
        Ok(())
    }

    fn resolve_txn(&mut self) -> Result<(), Error> {
        let Some(txn) = self.state.txn.clone() else {
            return Ok(());
        };
        let active = self.maps.active_generation()?;
        if txn.flip {
            if active == txn.after.generation {
                self.commit(
                    txn.after,
                    "recovered: an interrupted change was in force; recorded".into(),
                )?;
            } else {
                self.state.txn = None;
                self.state
                    .note("recovered: an interrupted change never took effect; dropped");
                self.state.save(&self.paths)?;
            }
        } else {
            self.apply_edit(&txn.after)?;
            self.commit(
                txn.after,
                "recovered: an interrupted live edit, completed".into(),
            )?;
        }
        Ok(())
    }

    /// Detach and remove every pin and the state.
    pub fn down(self) -> Result<(), Error> {
        let Filter {
            iface,
            paths,
            _lock,
            state,
            maps,
        } = self;
        drop(maps);
        remove_all(&iface, &paths, Some(&state))?;
        crate::syslog::operation(iface.as_str(), "down: filter removed");
        drop(_lock);
        let _ = paths.remove_state();
        Ok(())
    }
}

/// Remove the links (the programs detach), the clsact filter, the pins; then check that no fw
/// program is left on the interface.
fn remove_all(iface: &IfaceName, paths: &IfacePaths, state: Option<&State>) -> Result<(), Error> {
    if let Some(p) = state.and_then(|s| s.record.pending.clone()) {
        crate::timer::stop(p.timer_pid, p.token);
    }
    if let Some(EgressAttach::Clsact { priority, handle }) = state.map(|s| s.egress) {
        attach::detach_clsact(iface.as_str(), priority, handle)?;
    }
    crate::multiprog::leave(iface, paths, state)?;
    paths.remove_pins()?;
    if let Some(prog) = iface.index().and_then(attach::fw_program_on) {
        return Err(Error::Other(format!(
            "{iface}: the pins are removed but an fw XDP program (id {prog}) is still attached through another link (pins moved elsewhere?); detach it with `bpftool link detach id N` (`bpftool link` lists them)"
        )));
    }
    Ok(())
}

/// `fw down`: detach and remove everything fw has for `iface`. `Ok(false)`: nothing was there.
pub fn down(iface: &IfaceName) -> Result<bool, Error> {
    paths::ensure_bpffs()?;
    let paths = IfacePaths::new(iface)?;
    if !paths.has_anything()? {
        return Ok(false);
    }
    let lock = Lock::acquire(&paths)?;
    let state = State::load(&paths).ok();
    remove_all(iface, &paths, state.as_ref())?;
    crate::syslog::operation(iface.as_str(), "down: filter removed");
    drop(lock);
    paths.remove_state()?;
    Ok(true)
}

/// What replacing `old` by `new` changes, flush included.
fn entry_changes(old: &Entry, new: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    match (old.flushed, new.flushed) {
        (true, false) => out.push("~ flush ends: the policy below is enforced again".to_string()),
        (false, true) => out.push("~ flushed: everything passes".to_string()),
        _ => {}
    }
    out.extend(fw_policy::diff::changes(&old.policy, &new.policy));
    out
}

/// Give `after`'s policy the ids of the rules it shares with the policy in force (its confirmed
/// entry too, when that is the same entry). Returns the ids new to the counters.
fn carry_record_ids(after: &mut Record, in_force: &Policy) -> Vec<u32> {
    let same = after.confirmed == after.current;
    let avoid = after.confirmed.policy.clone();
    let fresh = fw_policy::ids::carry_ids(&mut after.current.policy, in_force, &avoid);
    if same {
        after.confirmed = after.current.clone();
    }
    fresh
}

/// Write `record`'s policy into its generation (not the active one), zeroing the counters of
/// the rule ids in `fresh_ids` (`None`: of every rule, for a fresh attach), and the host facts
/// its SYN cookie answers need.
fn write_record(
    maps: &mut PinnedMaps,
    paths: &IfacePaths,
    record: &Record,
    fresh_ids: Option<&[u32]>,
) -> Result<(), Error> {
    let p = &record.current.policy;
    crate::syncookie::write_cfg(paths, &p.options)?;
    let all: Vec<u32>;
    let fresh = match fresh_ids {
        Some(ids) => ids,
        None => {
            all = p.rules.iter().map(|r| r.id).collect();
            &all
        }
    };
    maps.write_policy_carrying(p, record.generation, record.current.flushed, fresh)
        .map(|_| ())
}

fn random_token() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: valid buffer; getrandom fills at most its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        let t = crate::sys::monotonic_coarse_ns() ^ u64::from(std::process::id()) << 32;
        return t;
    }
    u64::from_le_bytes(b)
}
