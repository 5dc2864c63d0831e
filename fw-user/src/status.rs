//! The status of a running filter: rules with counters, drops by reason, connection-table
//! occupancy, the policy history and every problem the health checks find. `fw status`
//! prints it (text or `--json`); metrics and tests read the same.

use fw_common::{
    FlowTable, Reason,
    maps::{
        EVENT_FLOW_NEW, EVENT_FLOW_REMOVED, MAP_EMBRYO, MAP_FLOWS_IN, MAP_FLOWS_OUT, rule_slot,
    },
};
use fw_policy::{Options, Rule};
use serde::Serialize;

use crate::{
    Error,
    health::Problem,
    maps::PinnedMaps,
    paths::{IfaceName, IfacePaths},
    state::{AttachMode, EgressAttach, LogEntry, Pending, State},
};

/// Version of the `--json` shape of `fw status`.
pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    /// [`STATUS_SCHEMA`]: bumped when a field changes meaning or goes away.
    pub schema: u32,
    pub iface: String,
    pub mode: AttachMode,
    /// `frags`: multi-buffer aware (jumbo frames in native mode); `linear`: one buffer.
    pub variant: crate::loader::Variant,
    /// How the XDP program is attached, in words ("native (driver) mode, multi-buffer
    /// program, alone on the interface (its own bpf_link)").
    pub xdp: String,
    /// fw's place in a libxdp dispatcher, when it shares the interface.
    pub multiprog: Option<crate::state::MultiProg>,
    pub mtu: Option<u32>,
    pub egress: EgressAttach,
    pub generation: u32,
    pub flushed: bool,
    /// Where the policy in force came from.
    pub policy_source: String,
    /// What `fw rollback` (or the confirm timer) returns to.
    pub confirmed_source: String,
    pub pending: Option<Pending>,
    /// The running policy compared with /etc/fw/fw.toml.
    pub saved: Saved,
    /// No problem that affects filtering (generic mode alone is not unhealthy).
    pub healthy: bool,
    pub problems: Vec<Problem>,
    /// The last operations on this filter.
    pub log: Vec<LogEntry>,
    pub default_policy: &'static str,
    pub options: Options,
    pub rules: Vec<RuleStatus>,
    pub reasons: Vec<ReasonStatus>,
    pub connections: Vec<TableStatus>,
    /// The SYN cookie path (`None` with `syn_cookies = "off"`).
    pub syn_cookies: Option<crate::syncookie::CookieStatus>,
    /// Rate limits, block lists and bans.
    pub flood: crate::filter::flood::FloodStatus,
}

/// Occupancy of one connection-tracking table.
#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub table: &'static str,
    pub meaning: &'static str,
    pub entries: u64,
    pub max_entries: u32,
    /// Entries created since the filter was attached.
    pub created: u64,
    /// Entries removed (expired, closed, promoted).
    pub removed: u64,
    /// Entries pushed out by the LRU because the table was full (created − removed − entries).
    pub evicted: u64,
}

pub const TABLES: [(FlowTable, &str, &str, &str); 3] = [
    (
        FlowTable::Out,
        "out",
        MAP_FLOWS_OUT,
        "flows this host opened (only this host can add to it)",
    ),
    (
        FlowTable::In,
        "in",
        MAP_FLOWS_IN,
        "inbound TCP connections that completed the handshake",
    ),
    (
        FlowTable::Embryo,
        "embryo",
        MAP_EMBRYO,
        "inbound TCP handshakes in progress (SYN floods land here)",
    ),
];

/// `compute` whose input (what `input` reads) did not change while it ran, tried up to `tries`
/// times; the last try counts if the input never held still.
fn settled<I: PartialEq, T>(
    input: impl Fn() -> I,
    tries: usize,
    mut compute: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut n = 1;
    loop {
        let before = input();
        let out = compute()?;
        if n >= tries || input() == before {
            return Ok(out);
        }
        n += 1;
    }
}

#[derive(Debug, Serialize)]
pub struct RuleStatus {
    #[serde(flatten)]
    pub rule: Rule,
    pub description: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ReasonStatus {
    pub reason: &'static str,
    pub verdict: &'static str,
    pub description: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// How often [`read`] reads the state again when a command changed it during the health checks.
const SETTLE_TRIES: usize = 5;

/// The status of the filter on `iface`, read without taking the lock (state files are replaced
/// atomically, so a concurrent command cannot leave half a state here).
pub fn read(iface: &IfaceName) -> Result<IfaceStatus, Error> {
    crate::paths::ensure_bpffs()?;
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached()? {
        return Err(Error::NotAttached(iface.to_string()));
    }
    let maps = PinnedMaps::open(&paths)?;
    // Some checks look at the world after the state was read (is the lock still held, is the
    // rollback timer alive): a command that finishes in between — a rollback timer's rollback —
    // would leave "interrupted-change" or "timer-gone" true only of the moment before. So the
    // state and its problems count only if the state file did not change meanwhile.
    let read_file = || std::fs::read(paths.state_file()).ok();
    let (state, problems) = settled(read_file, SETTLE_TRIES, || {
        let state = State::load(&paths)?;
        let problems = crate::health::check(iface, &paths, &state, &maps);
        Ok((state, problems))
    })?;
    let generation = maps.active_generation()?;
    let saved = saved_differs(&state);
    // An interrupted change that reached the kernel is what is in force: show that.
    let view = match &state.txn {
        Some(t) if !t.flip || t.after.generation == generation => &t.after,
        _ => &state.record,
    };
    let mut rules = Vec::new();
    for r in &view.current.policy.rules {
        let c = maps.counter(rule_slot(generation, r.id))?;
        rules.push(RuleStatus {
            rule: r.clone(),
            description: r.describe(),
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    let mut reasons = Vec::new();
    for r in Reason::ALL {
        let c = maps.counter(r.slot())?;
        reasons.push(ReasonStatus {
            reason: r.name(),
            verdict: if r.answers() {
                "ANSWER"
            } else if r.passes() {
                "ACCEPT"
            } else {
                "DROP"
            },
            description: r.describe(),
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    let mut connections = Vec::new();
    for (table, name, map, meaning) in TABLES {
        let entries = maps.flows(table)?.len() as u64;
        let max_entries = aya::maps::MapInfo::from_pin(paths.map(map))
            .map(|i| i.max_entries())
            .unwrap_or(0);
        let created = maps.counter(EVENT_FLOW_NEW + table as u32)?.packets;
        let removed = maps.counter(EVENT_FLOW_REMOVED + table as u32)?.packets;
        connections.push(TableStatus {
            table: name,
            meaning,
            entries,
            max_entries,
            created,
            removed,
            evicted: created.saturating_sub(removed).saturating_sub(entries),
        });
    }
    let flushed = view.current.flushed || maps.config(generation)?.has(fw_common::Config::PASS_ALL);
    let options = &view.current.policy.options;
    let syn_cookies = match options.syn_cookies {
        fw_policy::SynCookies::Off => None,
        _ => Some(crate::syncookie::status(&paths, options)?),
    };
    Ok(IfaceStatus {
        syn_cookies,
        schema: STATUS_SCHEMA,
        connections,
        iface: iface.to_string(),
        mode: state.mode,
        variant: state.variant,
        multiprog: state.multiprog,
        xdp: describe_xdp(&state, iface),
        mtu: crate::native::Facts::of(iface.as_str()).mtu,
        egress: state.egress,
        generation,
        flushed,
        policy_source: view.current.source.clone(),
        confirmed_source: view.confirmed.source.clone(),
        pending: view.pending.clone(),
        saved,
        default_policy: if view.current.policy.default == fw_policy::DefaultAction::Accept {
            "ACCEPT"
        } else {
            "DROP"
        },
        flood: crate::filter::flood::flood_status(&paths, &maps, &view.current.policy, generation)?,
        options: view.current.policy.options.clone(),
        rules,
        reasons,
        healthy: problems.iter().all(|p| !p.degraded),
        problems,
        log: state.log.clone(),
    })
}

/// The XDP attachment in plain words.
pub fn describe_xdp(state: &State, iface: &IfaceName) -> String {
    let mode = match state.mode {
        AttachMode::Native => "native (driver) mode",
        AttachMode::Skb => "generic (skb) mode",
    };
    let how = match &state.multiprog {
        Some(mp) => crate::multiprog::describe(iface, mp),
        None => "alone on the interface (its own bpf_link)".into(),
    };
    format!("{mode}, {} program, {how}", state.variant.describe())
}

/// How the running policy compares with the saved one (/etc/fw/fw.toml), which the boot unit
/// restores: live edits that are not saved are lost at reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Saved {
    /// No saved policy.
    None,
    Same,
    Differs,
    /// The saved file does not parse (fw restore would fail at boot).
    Invalid,
}

pub fn saved_differs(state: &State) -> Saved {
    let path = crate::persist::saved_file();
    let path = path.as_path();
    if !path.exists() {
        return Saved::None;
    }
    match fw_policy::parse_policy_file(path) {
        Err(_) => Saved::Invalid,
        Ok(p) => {
            let cur = &state.current().policy;
            if p.rules
                .iter()
                .map(|r| (r.proto, r.ports, &r.from))
                .eq(cur.rules.iter().map(|r| (r.proto, r.ports, &r.from)))
                && p.options == cur.options
            {
                Saved::Same
            } else {
                Saved::Differs
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::settled;

    #[test]
    fn a_status_read_while_a_command_changes_the_state_is_read_again() {
        // The state file changes during the first health check (a rollback finishing).
        let version = Cell::new(0);
        let runs = Cell::new(0);
        let out = settled(
            || version.get(),
            5,
            || {
                runs.set(runs.get() + 1);
                let seen = version.get();
                if runs.get() == 1 {
                    version.set(1);
                }
                Ok(seen)
            },
        )
        .expect("settled");
        assert_eq!(out, 1, "the result of the read after the change counts");
        assert_eq!(runs.get(), 2);
    }

    #[test]
    fn a_state_that_never_holds_still_is_read_a_bounded_number_of_times() {
        let version = Cell::new(0);
        let runs = Cell::new(0);
        let out = settled(
            || version.get(),
            3,
            || {
                runs.set(runs.get() + 1);
                version.set(version.get() + 1);
                Ok(runs.get())
            },
        )
        .expect("settled");
        assert_eq!((out, runs.get()), (3, 3));
    }
}
