//! The one handle for a running filter. Every change of fw on an interface — attach, upgrade,
//! heal, live edit, apply, confirm, rollback, flush, down — goes through [`Filter`], which owns
//! the interface's lock, its pinned maps and its state; the CLI verbs, the tests and the
//! benchmark call the same methods.
//!
//! Every change the kernel sees is written ahead in the state ([`crate::state`]): a crash or a
//! full /run at any point leaves a state that the next command completes or undoes.

use aya::Ebpf;
use fw_common::maps::rule_slot;
use fw_policy::{Compiled, Policy, edit::Edit};

use crate::{
    Error,
    attach::{self, EgressMode, LinkHealth, Mode},
    guard::Guard,
    lock::Lock,
    maps::PinnedMaps,
    paths::{self, IfaceName, IfacePaths},
    sockets::seed_flows,
    state::{AttachMode, EgressAttach, Entry, Pending, Record, STATE_VERSION, State, Txn},
};

pub struct Filter {
    iface: IfaceName,
    paths: IfacePaths,
    _lock: Lock,
    state: State,
    maps: PinnedMaps,
}

/// What `fw up` is asked to do.
pub struct UpOptions<'a> {
    pub mode: Mode,
    pub egress: EgressMode,
    /// The policy to put in force (with where it came from). `None`: keep the running policy
    /// (upgrade, heal); a fresh attach then needs one.
    pub policy: Option<(&'a Policy, &'a str)>,
    pub guard: Guard,
    /// aya-log drop logging (`fw run --log`).
    pub log: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpKind {
    /// Attached where nothing was.
    Attached,
    /// The programs were replaced on the running links; the maps (policy, counters,
    /// connections) kept.
    Upgraded,
    /// The links had lost their interface (deleted and recreated): attached again with the
    /// policy that was in force.
    Healed(String),
}

#[derive(Debug)]
pub struct UpReport {
    pub kind: UpKind,
    pub mode: AttachMode,
    pub egress: EgressAttach,
    /// Why native XDP was not used, when it was not.
    pub native_unavailable: Option<String>,
    /// What changed, when the policy in force was replaced (`± …` lines).
    pub changes: Option<Vec<String>>,
    /// Notes from the lockout guard (`fw restore`).
    pub notes: Vec<String>,
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

fn check_iface(iface: &IfaceName) -> Result<u32, Error> {
    if iface.as_str() == "lo" {
        return Err(Error::Loopback);
    }
    let idx = iface
        .index()
        .ok_or_else(|| Error::NoSuchInterface(iface.to_string()))?;
    let flags =
        std::fs::read_to_string(format!("/sys/class/net/{iface}/flags")).unwrap_or_default();
    if u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
        .is_ok_and(|f| f & libc::IFF_LOOPBACK as u32 != 0)
    {
        return Err(Error::Loopback);
    }
    Ok(idx)
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

    /// Attach, upgrade or heal (`fw up`, `fw restore`).
    pub fn up(iface: &IfaceName, opts: &UpOptions<'_>) -> Result<(Filter, UpReport, Ebpf), Error> {
        let ifindex = check_iface(iface)?;
        paths::ensure_bpffs()?;
        if let Some((found, dir)) = paths::other_layout(iface)? {
            return Err(Error::OtherLayout {
                iface: iface.to_string(),
                found,
                ours: fw_common::maps::LAYOUT_VERSION,
                dir,
            });
        }
        let paths = IfacePaths::new(iface)?;
        Self::up_at(iface, ifindex, paths, opts)
    }

    /// [`Filter::up`] with explicit paths (tests).
    pub fn up_at(
        iface: &IfaceName,
        ifindex: u32,
        paths: IfacePaths,
        opts: &UpOptions<'_>,
    ) -> Result<(Filter, UpReport, Ebpf), Error> {
        let lock = Lock::acquire(&paths)?;
        if paths.is_attached()? {
            match attach::xdp_health(&paths, iface) {
                LinkHealth::Attached => return Self::upgrade(iface, paths, lock, opts),
                LinkHealth::Severed => {
                    return Self::heal(
                        iface,
                        ifindex,
                        paths,
                        lock,
                        opts,
                        "the interface was deleted".into(),
                    );
                }
                LinkHealth::Moved { link, .. } => {
                    let why = format!(
                        "the filter was attached to interface index {link}, {iface} is now index {ifindex} (recreated)"
                    );
                    return Self::heal(iface, ifindex, paths, lock, opts, why);
                }
                LinkHealth::Foreign(why) => {
                    return Err(Error::UnsafePath {
                        path: paths.link(),
                        why,
                    });
                }
                LinkHealth::Missing => {}
            }
        }
        if let Some(prog) = attach::fw_program_on(ifindex) {
            return Err(Error::Other(format!(
                "{iface}: an fw XDP program (id {prog}) is attached through a link whose pin is not in {}: someone moved fw's pins aside. Detach it (`bpftool net show dev {iface}`, `bpftool link detach id N`), then run fw up again",
                paths.pins.display()
            )));
        }
        let (policy, source) = opts.policy.ok_or_else(|| {
            Error::Other(format!(
                "{iface}: fw is not attached; say which policy to attach"
            ))
        })?;
        let notes = opts.guard.check(policy)?.into_iter().collect();
        let entry = Entry {
            policy: policy.clone(),
            source: source.to_string(),
            flushed: false,
        };
        let (f, mut report, ebpf) = Self::fresh(
            iface,
            ifindex,
            paths,
            lock,
            opts,
            Record::fresh(entry, 0),
            Vec::new(),
        )?;
        report.notes = notes;
        Ok((f, report, ebpf))
    }

    /// Attach where no link exists. `record` is what will be in force (generation 0).
    fn fresh(
        iface: &IfaceName,
        ifindex: u32,
        paths: IfacePaths,
        lock: Lock,
        opts: &UpOptions<'_>,
        record: Record,
        log: Vec<crate::state::LogEntry>,
    ) -> Result<(Filter, UpReport, Ebpf), Error> {
        let had_state = State::exists(&paths);
        let mut egress_done = None;
        let r = (|| {
            let max_flows = record.current.policy.options.max_flows;
            let mut ebpf = crate::loader::load_object(&paths, opts.log, max_flows)?;
            let mut maps = PinnedMaps::open(&paths)?;
            write_record(&mut maps, &record)?;
            crate::filter_flood::sync_from_maps(&mut maps, &paths, &record.current.policy)?;
            maps.set_active(record.generation)?;
            // Order matters for connections that exist or start meanwhile: the egress recorder
            // first (flows opened from now on get recorded), then the sockets that exist, then
            // the filter, then the sockets once more for those that completed in between.
            let egress = attach::attach_egress(&mut ebpf, &paths, opts.egress)?;
            egress_done = Some(egress);
            seed_flows(&mut maps)?;
            let mut why = None;
            let mode = attach::attach_xdp(&mut ebpf, &paths, opts.mode, &mut why)?;
            seed_flows(&mut maps)?;
            let mut state = State {
                version: STATE_VERSION,
                iface: iface.to_string(),
                ifindex,
                mode,
                egress,
                record: record.clone(),
                txn: None,
                log: log.clone(),
            };
            state.note(format!(
                "up: attached (xdp {}), policy {}",
                mode.name(),
                record.current.source
            ));
            state.save(&paths)?;
            let report = UpReport {
                kind: UpKind::Attached,
                mode,
                egress,
                native_unavailable: why,
                changes: None,
                notes: Vec::new(),
            };
            Ok((state, maps, report, ebpf))
        })();
        match r {
            Ok((state, maps, report, ebpf)) => Ok((
                Filter {
                    iface: iface.clone(),
                    paths,
                    _lock: lock,
                    state,
                    maps,
                },
                report,
                ebpf,
            )),
            Err(e) => {
                // Undo what this run made; a state file that existed before is not ours to
                // delete.
                if let Some(EgressAttach::Clsact { priority, handle }) = egress_done {
                    let _ = attach::detach_clsact(iface.as_str(), priority, handle);
                }
                if let Err(e2) = paths.remove_pins() {
                    log::warn!("{iface}: cleaning up after a failed attach: {e2}");
                }
                if !had_state {
                    let _ = paths.remove_state();
                }
                Err(e)
            }
        }
    }

    /// The interface was deleted (and maybe recreated): remove the dead links and maps, and
    /// attach again with the record that was in force — its live edits, history and pending
    /// confirmation included.
    fn heal(
        iface: &IfaceName,
        ifindex: u32,
        paths: IfacePaths,
        lock: Lock,
        opts: &UpOptions<'_>,
        why: String,
    ) -> Result<(Filter, UpReport, Ebpf), Error> {
        let old = State::load(&paths).ok();
        let mut record = match (&old, opts.policy) {
            (_, Some((p, source))) => {
                opts.guard.check(p)?;
                let entry = Entry {
                    policy: p.clone(),
                    source: source.to_string(),
                    flushed: false,
                };
                match &old {
                    Some(o) => o.record.applied(entry, 0, None),
                    None => Record::fresh(entry, 0),
                }
            }
            (Some(o), None) => o.record.clone(),
            (None, None) => {
                return Err(Error::Other(format!(
                    "{iface}: the filter lost its interface and its state is gone; give the policy to attach (fw up --policy FILE, or --default)"
                )));
            }
        };
        record.generation = 0;
        if let Some(EgressAttach::Clsact { priority, handle }) = old.as_ref().map(|o| o.egress) {
            let _ = attach::detach_clsact(iface.as_str(), priority, handle);
        }
        paths.remove_pins()?;
        let mut log = old.map(|o| o.log).unwrap_or_default();
        log.push(crate::state::LogEntry {
            at: crate::state::unix_now(),
            what: format!("heal: {why}"),
        });
        let (f, mut report, ebpf) = Self::fresh(iface, ifindex, paths, lock, opts, record, log)?;
        report.kind = UpKind::Healed(why);
        Ok((f, report, ebpf))
    }

    /// Replace the programs on the running links; keep the maps. With a policy, put it in
    /// force afterwards (confirmed).
    fn upgrade(
        iface: &IfaceName,
        paths: IfacePaths,
        lock: Lock,
        opts: &UpOptions<'_>,
    ) -> Result<(Filter, UpReport, Ebpf), Error> {
        let state = State::load(&paths)?;
        let max_flows = state.current().policy.options.max_flows;
        let mut ebpf = crate::loader::load_object(&paths, opts.log, max_flows)?;
        let maps = PinnedMaps::open(&paths)?;
        let mut f = Filter {
            iface: iface.clone(),
            paths,
            _lock: lock,
            state,
            maps,
        };
        f.reconcile()?;
        let mut notes = Vec::new();
        if let Some((p, _)) = opts.policy {
            notes.extend(opts.guard.check(p)?);
        }
        let egress = attach::replace_egress(&mut ebpf, &f.paths, f.state.egress)?;
        attach::replace_xdp(&mut ebpf, &f.paths)?;
        seed_flows(&mut f.maps)?;
        f.state.egress = egress;
        f.state.note("up: programs replaced on the running links");
        f.state.save(&f.paths)?;
        let changes = match opts.policy {
            Some((p, source)) => {
                let entry = Entry {
                    policy: p.clone(),
                    source: source.to_string(),
                    flushed: false,
                };
                let old = f.state.current().policy.clone();
                let next = 1 - f.state.record.generation;
                let after = f.state.record.applied(entry, next, None);
                f.flip(after, format!("up: policy replaced by {source}"))?;
                Some(fw_policy::diff::changes(&old, p))
            }
            None => None,
        };
        let report = UpReport {
            kind: UpKind::Upgraded,
            mode: f.state.mode,
            egress,
            native_unavailable: None,
            changes,
            notes,
        };
        Ok((f, report, ebpf))
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

    /// Write `after` into the inactive generation, write it ahead, flip, commit.
    fn flip(&mut self, after: Record, note: String) -> Result<(), Error> {
        write_record(&mut self.maps, &after)?;
        if after.current.policy.blocks != self.state.current().policy.blocks {
            crate::filter_flood::sync_from_maps(
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
        self.state.save(&self.paths)
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
                let deadline = crate::state::unix_now() + c.secs;
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
        let before = &self.state.current().policy;
        let old = Compiled::new(before, g);
        let new = Compiled::new(&after.current.policy, g);
        let old_ids: Vec<u32> = before.rules.iter().map(|r| r.id).collect();
        let new_slots: Vec<u32> = after
            .current
            .policy
            .rules
            .iter()
            .filter(|r| !old_ids.contains(&r.id))
            .map(|r| rule_slot(g, r.id))
            .collect();
        self.maps.apply_diff(&old, &new, &new_slots)
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

/// Write `record`'s policy into its generation (not the active one).
fn write_record(maps: &mut PinnedMaps, record: &Record) -> Result<(), Error> {
    let g = record.generation;
    let mut compiled = Compiled::new(&record.current.policy, g);
    if record.current.flushed {
        compiled = compiled.flushed();
    }
    let slots: Vec<u32> = record
        .current
        .policy
        .rules
        .iter()
        .map(|r| rule_slot(g, r.id))
        .collect();
    maps.write_generation(&compiled, &slots)
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
