//! The kernel test tier's harness: the real fw programs run with BPF_PROG_TEST_RUN next to the
//! userspace mirror, in a private pin directory, attached to nothing.
//!
//! - [`LoadedFw`]: the object loaded with its maps pinned in `/sys/fs/bpf/<prefix>-<pid>-<n>`
//!   (state in `/run/<prefix>-<pid>-<n>`), a policy written into a generation as `fw up` does.
//! - [`KernelFilter`]: that, plus the mirror; one frame through both, compared.
//! - [`Tally`]: counts what a test checked and collects every failure; [`Expect`]: what a table
//!   entry says the policy does with a packet.
//!
//! Dropping a filter (also while a test panics) removes both directories; directories left by
//! a killed run of another process are swept on the next load. It needs `fw-user` (the loader
//! and the embedded XDP object), so it is a crate apart from `fw-lab`, which xtask uses before
//! the BPF toolchain is installed.

mod filter;
mod loaded;
mod tally;

pub use filter::{
    Egress, Flows, KernelFilter, LAST_SEEN_SLACK_NS, Mismatch, flow_name, tc_test_run_refuses,
};
pub use fw_lab::Rng;
pub use loaded::LoadedFw;
pub use tally::Tally;

use fw::paths::ensure_bpffs;
use fw_common::{Decision, Reason, maps::rule_slot};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// What the egress recorder must always return: it never drops.
pub const TC_ACT_OK: u32 = 0;

/// The kernel refuses XDP test buffers shorter than an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// Fail loudly (never skip) when the kernel tier cannot run here.
#[track_caller]
pub fn require_root() {
    assert!(
        fw_lab::proc::is_root(),
        "the kernel test tier loads an XDP program and pins maps: run it as root \
         (e.g. `sudo -E cargo test -p tests --test kernel_verdicts`)"
    );
    if let Err(e) = ensure_bpffs() {
        panic!("bpffs is needed for the kernel test tier: {e}");
    }
}

/// The XDP verdict `decide()` implies.
pub fn expected_action(d: &Decision) -> u32 {
    if d.pass { XDP_PASS } else { XDP_DROP }
}

pub fn action_name(ret: u32) -> &'static str {
    match ret {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "XDP_?",
    }
}

/// A counter slot in words: a reason's name or "gen G rule I".
pub fn slot_name(slot: u32) -> String {
    if let Some(r) = Reason::from_slot(slot) {
        return r.name().to_string();
    }
    match fw_common::maps::slot_rule(slot) {
        Some((g, i)) => format!("gen {g} rule {i}"),
        None => format!("slot {slot}"),
    }
}

pub fn describe(d: &Decision) -> String {
    format!(
        "{} [{}]",
        if d.pass { "PASS" } else { "DROP" },
        slot_name(d.slot)
    )
}

/// Hex of a frame, 32 bytes a line, for failure messages.
pub fn hex(frame: &[u8]) -> String {
    let mut s = String::new();
    for (i, c) in frame.chunks(32).enumerate() {
        s.push_str(&format!("\n    {:04x}:", i * 32));
        for b in c {
            s.push_str(&format!(" {b:02x}"));
        }
    }
    s
}

/// What a table entry says the policy does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Passed by the rule with this id (its counter slot in the active generation).
    Rule(u32),
    /// Counted under this reason (passes or drops as the reason does).
    Is(Reason),
}

impl Expect {
    pub fn slot(self, generation: u32) -> u32 {
        match self {
            Expect::Rule(id) => rule_slot(generation, id),
            Expect::Is(r) => r.slot(),
        }
    }

    pub fn pass(self) -> bool {
        match self {
            Expect::Rule(_) => true,
            Expect::Is(r) => r.passes(),
        }
    }

    pub fn decision(self, generation: u32) -> Decision {
        Decision {
            pass: self.pass(),
            slot: self.slot(generation),
        }
    }
}
