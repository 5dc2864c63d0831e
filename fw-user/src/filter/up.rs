//! Attaching: `fw up` and `fw restore` — a fresh attach, an upgrade of the programs on the
//! running links (the policy kept unless one is given), or healing a filter whose interface was
//! deleted and recreated.

use aya::Ebpf;
use fw_policy::Policy;

use super::{Filter, write_record};
use crate::{
    Error,
    attach::{self, EgressMode, LinkHealth, Mode},
    guard::Guard,
    lock::Lock,
    maps::PinnedMaps,
    paths::{self, IfaceName, IfacePaths},
    sockets::seed_flows,
    state::{AttachMode, EgressAttach, Entry, Record, STATE_VERSION, State},
};

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
    /// Share the XDP hook through a libxdp dispatcher (`--multiprog`, `--priority`).
    pub share: crate::multiprog::Share,
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
    /// Attach, upgrade or heal (`fw up`, `fw restore`).
    pub fn up(iface: &IfaceName, opts: &UpOptions<'_>) -> Result<(Filter, UpReport, Ebpf), Error> {
        let ifindex = check_iface(iface)?;
        paths::ensure_bpffs()?;
        if let Some((found, dir)) = paths::other_layout(iface)? {
            return Self::migrate(iface, ifindex, &found, &dir, opts);
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
                LinkHealth::Missing if State::exists(&paths) && paths.prog().exists() => {
                    let why = "fw's program was no longer in the libxdp dispatcher (removed by another tool?)".to_string();
                    return Self::heal(iface, ifindex, paths, lock, opts, why);
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
        if f.state.multiprog.is_some() && policy.options.syn_cookies != fw_policy::SynCookies::Off {
            report.notes.push(format!(
                "{iface}: syn_cookies = \"{}\" has no effect in a libxdp dispatcher (its SYN cookie step cannot be loaded there): the kernel answers SYNs itself",
                policy.options.syn_cookies.name()
            ));
        }
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
        let mut joined = None;
        let r = (|| {
            let max_flows = record.current.policy.options.max_flows;
            let join = crate::multiprog::choose(ifindex, opts.share)?;
            let (joining, mut ebpf) = match join {
                Some(priority) => {
                    let (j, e) = crate::multiprog::Joining::load(
                        ifindex, priority, None, &paths, opts.log, max_flows,
                    )?;
                    (Some(j), e)
                }
                None => (
                    None,
                    crate::loader::load_object(&paths, opts.log, max_flows)?,
                ),
            };
            let mut maps = PinnedMaps::open(&paths)?;
            write_record(&mut maps, &paths, &record, None)?;
            super::flood::sync_from_maps(&mut maps, &paths, &record.current.policy)?;
            maps.set_active(record.generation)?;
            // Order matters for connections that exist or start meanwhile: the egress recorder
            // first (flows opened from now on get recorded), then the sockets that exist, then
            // the filter, then the sockets once more for those that completed in between.
            let egress = attach::attach_egress(&mut ebpf, &paths, opts.egress)?;
            egress_done = Some(egress);
            seed_flows(&mut maps)?;
            let mut why = None;
            let (mode, multiprog) = match joining {
                Some(j) => {
                    let (mode, mp) = j.commit(&mut ebpf, &paths, opts.mode, &mut why)?;
                    joined = Some(mp);
                    (mode, Some(mp))
                }
                None => (
                    attach::attach_xdp(&mut ebpf, &paths, opts.mode, &mut why)?,
                    None,
                ),
            };
            seed_flows(&mut maps)?;
            let mut state = State {
                version: STATE_VERSION,
                iface: iface.to_string(),
                ifindex,
                mode,
                variant: crate::loader::loaded_variant(&ebpf),
                multiprog,
                why_not_native: why.clone(),
                egress,
                record: record.clone(),
                txn: None,
                log: log.clone(),
            };
            state.note(format!(
                "up: attached (xdp {}{}), policy {}",
                mode.name(),
                multiprog.map_or(String::new(), |m| format!(
                    ", libxdp dispatcher priority {}",
                    m.priority
                )),
                record.current.source
            ));
            state.save(&paths)?;
            crate::obs::sync_policy_log(&paths, &record.current.policy.options)?;
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
                if let Some(mp) = joined
                    && let Err(e2) = crate::dispatcher::leave(ifindex, mp.prog_id)
                {
                    log::warn!("{iface}: leaving the dispatcher after a failed attach: {e2}");
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
        let old_multiprog = old.as_ref().and_then(|o| o.multiprog);
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
        if let (Some(o), Some(mp)) = (&old, old_multiprog)
            && let Err(e) = crate::dispatcher::forget_stale(o.ifindex, mp.prog_id)
        {
            log::warn!(
                "{iface}: removing the pins of the dispatcher that was on the deleted interface: {e}"
            );
        }
        paths.remove_pins()?;
        let mut log = old.map(|o| o.log).unwrap_or_default();
        crate::syslog::operation(iface.as_str(), &format!("heal: {why}"));
        log.push(crate::state::LogEntry {
            at: crate::state::unix_now(),
            what: format!("heal: {why}"),
        });
        // A filter that shared its interface through a dispatcher joins one again.
        let share = match (opts.share, old_multiprog) {
            (crate::multiprog::Share::Auto, Some(mp)) => crate::multiprog::Share::Dispatcher {
                priority: Some(mp.priority),
            },
            (s, _) => s,
        };
        let opts = UpOptions { share, ..*opts };
        let (f, mut report, ebpf) = Self::fresh(iface, ifindex, paths, lock, &opts, record, log)?;
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
        // In a dispatcher, the new program is loaded against a new dispatcher's slot, which
        // replaces the old dispatcher (with the old program) in one swap.
        let (joining, mut ebpf) = match (state.multiprog, iface.index()) {
            (Some(mp), Some(ifindex)) => {
                let priority = crate::multiprog::upgrade_priority(opts.share, &mp);
                let (j, e) = crate::multiprog::Joining::load(
                    ifindex,
                    priority,
                    Some(mp.prog_id),
                    &paths,
                    opts.log,
                    max_flows,
                )?;
                (Some(j), e)
            }
            _ => (
                None,
                crate::loader::load_object(&paths, opts.log, max_flows)?,
            ),
        };
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
        // The new programs read the host facts too (an MTU or a sysctl may have changed).
        crate::syncookie::write_cfg(&f.paths, &f.state.current().policy.options)?;
        let asked = match opts.mode {
            Mode::Native => Some(AttachMode::Native),
            Mode::Skb => Some(AttachMode::Skb),
            Mode::Auto => None,
        };
        if f.state.multiprog.is_none()
            && let crate::multiprog::Share::Dispatcher { .. } = opts.share
        {
            notes.push(format!(
                "fw stays attached alone (its own bpf_link): moving into a libxdp dispatcher cannot be done without a gap. To share {iface}: `fw down --iface {iface}`, then `fw up --iface {iface} --multiprog` (nothing filters in between)"
            ));
        }
        if let Some(m) = asked.filter(|m| *m != f.state.mode) {
            notes.push(format!(
                "the filter stays in {} mode: a link cannot change its XDP mode. To run in {} mode: `fw down --iface {iface}`, then `fw up --iface {iface} --mode {}` (nothing filters in between)",
                f.state.mode.name(),
                m.name(),
                m.name()
            ));
        }
        let egress = attach::replace_egress(&mut ebpf, &f.paths, f.state.egress)?;
        match (joining, f.state.multiprog) {
            (Some(j), Some(_)) => {
                let mut why = None;
                let (_, mp) = j.commit(&mut ebpf, &f.paths, opts.mode, &mut why)?;
                f.state.multiprog = Some(mp);
            }
            _ => attach::replace_xdp(&mut ebpf, &f.paths)?,
        }
        seed_flows(&mut f.maps)?;
        f.state.egress = egress;
        f.state.variant = crate::loader::loaded_variant(&ebpf);
        f.state.note("up: programs replaced on the running links");
        f.state.save(&f.paths)?;
        crate::obs::sync_policy_log(&f.paths, &f.state.current().policy.options)?;
        let changes = match opts.policy {
            Some((p, source)) => {
                let entry = Entry {
                    policy: p.clone(),
                    source: source.to_string(),
                    flushed: false,
                };
                let old = f.state.current().policy.clone();
                let next = 1 - f.state.record.generation;
                // `fw up --policy` and `fw restore` set the policy deliberately: it is
                // confirmed, unless an `fw apply --confirm` is still waiting (its safety net
                // stays).
                let mut after = f.state.record.applied(entry, next, None);
                if after.pending.is_none() {
                    after = after.confirmed_now();
                }
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
}
