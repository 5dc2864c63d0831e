//! Is the filter doing what its state says? Every part that can fail quietly is checked, so
//! `fw status` (and its exit code) tells the truth: the XDP link attached to this interface
//! (not severed, not left on a deleted one), the egress recorder attached (without it the
//! host's own connections stop getting their replies in), the policy generation the state
//! names in force, a pending confirmation's timer alive and not overdue, native mode.

use serde::Serialize;

use crate::{
    attach::{self, LinkHealth},
    maps::PinnedMaps,
    paths::{IfaceName, IfacePaths},
    state::{AttachMode, EgressAttach, State, unix_now},
    timer,
};

/// One thing that is wrong or worse than it should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Short stable name (for `--json` and scripts).
    pub code: &'static str,
    /// The problem in words, with what to do.
    pub detail: String,
    /// `false`: filtering works, but worse than it could (generic mode).
    pub degraded: bool,
}

fn problem(code: &'static str, detail: String) -> Problem {
    Problem {
        code,
        detail,
        degraded: true,
    }
}

/// The problems of the filter on `iface` (empty: healthy).
pub fn check(
    iface: &IfaceName,
    paths: &IfacePaths,
    state: &State,
    maps: &PinnedMaps,
) -> Vec<Problem> {
    let mut out = Vec::new();
    match attach::xdp_health(paths, iface) {
        LinkHealth::Attached => {}
        LinkHealth::Missing if state.multiprog.is_some() => out.push(problem(
            "xdp-missing",
            format!("fw's program is no longer in the libxdp dispatcher on {iface} (another tool removed it): nothing of fw filters {iface}; `fw up --iface {iface}` puts it back"),
        )),
        LinkHealth::Missing => out.push(problem(
            "xdp-missing",
            format!("the XDP link pin is gone: nothing filters {iface}; `fw up --iface {iface}` attaches the policy again"),
        )),
        LinkHealth::Severed => out.push(problem(
            "xdp-severed",
            format!("{iface} was deleted under the filter: nothing filters {iface}; `fw up --iface {iface}` attaches the policy again"),
        )),
        LinkHealth::Moved { link, now } => out.push(problem(
            "xdp-moved",
            format!(
                "the filter is attached to interface index {link}, but {iface} is now {}: `fw up --iface {iface}` attaches the policy to it",
                now.map_or("gone".to_string(), |n| format!("index {n}"))
            ),
        )),
        LinkHealth::Foreign(why) => out.push(problem("xdp-foreign", format!("the XDP link pin: {why}"))),
    }
    if state.current().policy.options.established {
        check_egress(iface, paths, state, &mut out);
    }
    match maps.active_generation() {
        Ok(g) if g != state.record.generation && state.txn.is_none() => out.push(problem(
            "generation-mismatch",
            format!(
                "the kernel judges by policy generation {g}, the state names {}: something else wrote fw's maps; `fw apply` a policy to set it right",
                state.record.generation
            ),
        )),
        Ok(_) => {}
        Err(e) => out.push(problem("maps-unreadable", format!("reading FW_ACTIVE: {e}"))),
    }
    // A change written ahead while its command still holds the lock is in progress, not
    // interrupted.
    if state.txn.is_some() && !crate::lock::held(paths) {
        out.push(problem(
            "interrupted-change",
            "a policy change was interrupted; the next fw command on this interface completes or undoes it".into(),
        ));
    }
    if let Some(p) = &state.record.pending {
        let now = unix_now();
        let alive = p
            .timer_pid
            .is_some_and(|pid| timer::is_running(pid, p.token));
        if now > p.deadline + 2 {
            out.push(problem(
                "confirm-overdue",
                format!(
                    "an `fw apply --confirm` is {} s past its deadline and was not rolled back (timer {}): the next fw command on {iface} rolls it back, or run `fw confirm` / `fw rollback` now",
                    now - p.deadline,
                    if alive { "running" } else { "gone" }
                ),
            ));
        } else if !alive {
            out.push(problem(
                "timer-gone",
                format!(
                    "the rollback timer of the pending `fw apply --confirm` is not running: at the deadline the next fw command on {iface} rolls back; `fw confirm` keeps the policy"
                ),
            ));
        }
    }
    if state.mode == AttachMode::Skb {
        let why = match &state.why_not_native {
            Some(w) => format!("native mode was not available: {w}"),
            None => "chosen with `--mode skb`".into(),
        };
        out.push(Problem {
            code: "generic-mode",
            detail: format!(
                "XDP runs in generic (skb) mode: packets are judged after the kernel allocated an skb for them (slower); {why}"
            ),
            degraded: false,
        });
    }
    out
}

fn check_egress(iface: &IfaceName, paths: &IfacePaths, state: &State, out: &mut Vec<Problem>) {
    let what = "replies to this host's own connections are no longer let in";
    match state.egress {
        EgressAttach::Tcx => match attach::tcx_health(paths, iface) {
            LinkHealth::Attached => {}
            LinkHealth::Missing => out.push(problem(
                "egress-missing",
                format!("the egress recorder's link pin is gone: new outgoing connections are not recorded and {what}; `fw up --iface {iface}` attaches it again"),
            )),
            other => out.push(problem(
                "egress-severed",
                format!("the egress recorder is not attached to {iface} ({other:?}): {what}; `fw up --iface {iface}` attaches it again"),
            )),
        },
        // A cls_bpf filter has no pin to inspect; it lives and dies with the interface, which
        // the XDP check above covers.
        EgressAttach::Clsact { .. } => {}
    }
}
