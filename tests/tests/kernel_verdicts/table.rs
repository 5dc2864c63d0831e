//! A verdict table ([`Table`]: named frames and what the policy does with each), how one is
//! run against the kernel and `decide()`, and the addresses the tables use.

use fw_common::Config;
use fw_lab::frames::PacketSpec;
use fw_policy::Policy;
use fw_testrun::{Expect, KernelFilter, MIN_FRAME, Tally, require_root};

pub const S4: &str = "198.51.100.77";
pub const D4: &str = "192.0.2.1";
pub const S6: &str = "2001:db8:ff::77";
pub const D6: &str = "2001:db8::1";

pub fn syn4(dport: u16) -> PacketSpec {
    PacketSpec::syn(S4, D4, dport)
}

pub fn syn6(dport: u16) -> PacketSpec {
    PacketSpec::syn(S6, D6, dport)
}

/// A named packet and what the policy does with it.
pub struct Case {
    pub name: String,
    pub frame: Vec<u8>,
    pub expect: Expect,
    /// Every strict prefix must be dropped as truncated (a well-formed datagram, no padding).
    pub prefixes_truncated: bool,
}

#[derive(Default)]
pub struct Table(pub Vec<Case>);

impl Table {
    /// A well-formed packet: its every prefix is a truncated datagram.
    pub fn ok(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect) {
        self.push(name, frame, expect, true);
    }

    /// A packet whose prefixes need only kernel/userspace agreement.
    pub fn odd(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect) {
        self.push(name, frame, expect, false);
    }

    fn push(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect, pt: bool) {
        assert!(frame.len() >= MIN_FRAME);
        self.0.push(Case {
            name: name.into(),
            frame,
            expect,
            prefixes_truncated: pt,
        });
    }
}

/// Every case, then every prefix of every case.
pub fn run_table(tally: &mut Tally, f: &KernelFilter, t: &Table) {
    for c in &t.0 {
        tally.packet(f, &c.name, &c.frame, c.expect);
    }
    for c in &t.0 {
        let pt = c.prefixes_truncated && !f.mirror().config.has(Config::PASS_ALL);
        tally.truncations(f, &c.name, &c.frame, pt);
    }
    // Nothing here belongs to a connection: neither side may have recorded one.
    tally.flows(f, "after the table");
    match f.kernel_flows() {
        Ok(k) if k.is_empty() => {}
        Ok(k) => tally.fail(format!("the table left {} kernel flow entries", k.len())),
        Err(e) => tally.fail(format!("{e:#}")),
    }
}

pub fn load(p: &Policy) -> KernelFilter {
    require_root();
    KernelFilter::load(p).unwrap_or_else(|e| panic!("loading the fw XDP program: {e:#}"))
}
