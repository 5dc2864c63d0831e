//! A policy turned into exactly the map entries the XDP program reads, for one generation.
//! The kernel maps are written from this, and the userspace mirror of `decide()` looks things
//! up in this: both sides are the same data.

use std::collections::BTreeMap;

use fw_common::{
    Config, FlowKey, FlowState, FlowTable, PortProto, Tables,
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    limit::LimitParams,
    maps::{
        PORT_HAS_SOURCES, PORT_SLOT_MASK, RULE_SLOT_BASE, SLOT_LIMITED, SRC_KEY_PREFIX_BITS,
        SrcKeyV4, SrcKeyV6, rule_slot, src_key_v4, src_key_v6,
    },
};

use crate::{
    Cidr, Policy,
    blocks::{BlockSet, POLICY_LIST},
};

/// An LPM trie entry: prefix length over the whole key, key data, rule slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LpmEntry<K> {
    pub prefix_len: u32,
    pub data: K,
    pub slot: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub generation: u32,
    pub config: Config,
    /// Nonzero `FW_PORTS` values, by (protocol, port).
    pub ports: BTreeMap<(PortProto, u16), u32>,
    pub src_v4: BTreeMap<(u32, SrcKeyV4), u32>,
    pub src_v6: BTreeMap<(u32, SrcKeyV6), u32>,
    /// Rate limits by rule slot (the slot's [`SLOT_LIMITED`] bit is set where they apply).
    pub limits: BTreeMap<u32, LimitParams>,
    /// The block lists: the policy's `[[block]]` entries (list [`POLICY_LIST`]), plus whatever
    /// the caller adds (`fw block` lists live beside the policy).
    pub blocks: BlockSet,
}

impl Compiled {
    /// Compile `policy` for `generation`. Earlier rules win where two cover the same port and
    /// source, and count the packet (as the first matching iptables rule does).
    pub fn new(policy: &Policy, generation: u32) -> Self {
        let mut ports: BTreeMap<(PortProto, u16), u32> = BTreeMap::new();
        let mut src_v4 = BTreeMap::new();
        let mut src_v6 = BTreeMap::new();
        let mut limits = BTreeMap::new();
        for rule in &policy.rules {
            let mut slot = rule_slot(generation, rule.id);
            if let Some(l) = policy.limits.get(&rule.id) {
                limits.insert(slot, l.params());
                slot |= SLOT_LIMITED;
            }
            let proto = rule.proto.port_proto();
            for port in rule.ports.iter() {
                let v = ports.entry((proto, port)).or_insert(0);
                if *v & PORT_SLOT_MASK != 0 {
                    // An earlier rule already opens this port to everyone: it matches first.
                    continue;
                }
                let everyone = [Cidr::V4([0; 4], 0), Cidr::V6([0; 16], 0)];
                let from: &[Cidr] = if rule.from.is_empty() {
                    if *v & PORT_HAS_SOURCES == 0 {
                        *v |= slot;
                        continue;
                    }
                    // Earlier rules admit some sources here: they must keep matching (and
                    // counting) first, so everyone else goes through the trie's /0 entry.
                    &everyone
                } else {
                    &rule.from
                };
                *v |= PORT_HAS_SOURCES;
                for cidr in from {
                    match cidr {
                        Cidr::V4(a, len) => {
                            let key = (
                                SRC_KEY_PREFIX_BITS + *len as u32,
                                src_key_v4(generation, proto, port, a),
                            );
                            src_v4.entry(key).or_insert(slot);
                        }
                        Cidr::V6(a, len) => {
                            let key = (
                                SRC_KEY_PREFIX_BITS + *len as u32,
                                src_key_v6(generation, proto, port, a),
                            );
                            src_v6.entry(key).or_insert(slot);
                        }
                    }
                }
            }
        }
        let mut blocks = BlockSet::default();
        for c in policy.block_sources() {
            blocks.add(POLICY_LIST, c, 0);
        }
        blocks.finish();
        Compiled {
            generation,
            config: policy.config(),
            ports,
            src_v4,
            src_v6,
            limits,
            blocks,
        }
    }

    /// This policy with `fw flush` in force.
    pub fn flushed(mut self) -> Self {
        self.config.flags |= Config::PASS_ALL;
        self
    }
}

/// Longest-prefix match over key data, as the kernel's LPM trie does it.
fn lpm<const N: usize>(entries: &BTreeMap<(u32, [u8; N]), u32>, key: &[u8; N]) -> u32 {
    let mut best: Option<(u32, u32)> = None;
    for ((len, data), slot) in entries {
        if prefix_matches(data, key, *len) && best.is_none_or(|(l, _)| *len > l) {
            best = Some((*len, *slot));
        }
    }
    best.map_or(0, |(_, s)| s)
}

fn prefix_matches(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// The userspace mirror of the policy alone: `decide()` over the compiled policy with no
/// connection state (every flow lookup misses). [`crate::mirror::Mirror`] adds state.
impl Tables for Compiled {
    fn now(&self) -> u64 {
        0
    }

    fn flow(&self, _: FlowTable, _: &FlowKey) -> Option<FlowState> {
        None
    }

    fn flow_write(&self, _: FlowTable, _: &FlowKey, _: &FlowState, _: bool) {}

    fn flow_remove(&self, _: FlowTable, _: &FlowKey) {}

    /// Read-only: judging a packet changes nothing.
    fn flow_with<R>(
        &self,
        table: FlowTable,
        key: &FlowKey,
        f: impl FnOnce(&mut FlowState) -> R,
    ) -> Option<R> {
        fw_common::decide::lend_copy(self, table, key, f)
    }

    fn config(&self) -> Config {
        self.config
    }

    fn port(&self, proto: PortProto, port: u16) -> u32 {
        self.ports.get(&(proto, port)).copied().unwrap_or(0)
    }

    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32 {
        lpm(
            &self.src_v4,
            &src_key_v4(self.generation, proto, port, addr),
        )
    }

    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32 {
        lpm(
            &self.src_v6,
            &src_key_v6(self.generation, proto, port, addr),
        )
    }

    fn block_meta(&self) -> Option<&BlockMeta> {
        Some(&self.blocks.meta)
    }

    fn block_v4(&self, key: &BlockKeyV4) -> Option<BlockValue> {
        self.blocks.v4.get(key).copied()
    }

    fn block_v6(&self, key: &BlockKeyV6) -> Option<BlockValue> {
        self.blocks.v6.get(key).copied()
    }

    fn block_lpm_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        self.blocks.longest_v4(addr)
    }

    fn block_lpm_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        self.blocks.longest_v6(addr)
    }

    fn limit(&self, slot: u32) -> Option<LimitParams> {
        debug_assert!(slot >= RULE_SLOT_BASE);
        self.limits.get(&slot).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SEED_POLICY, parse_policy};

    #[test]
    fn seed_opens_exactly_the_seed_ports() {
        let p = parse_policy("seed", SEED_POLICY).unwrap();
        let c = Compiled::new(&p, 0);
        let open: Vec<u16> = c
            .ports
            .iter()
            .filter(|(_, v)| **v & PORT_SLOT_MASK != 0)
            .map(|((_, port), _)| *port)
            .collect();
        assert_eq!(open, [22, 25, 80, 110, 143, 443, 465, 993, 995]);
        assert!(c.src_v4.is_empty() && c.src_v6.is_empty());
    }

    #[test]
    fn source_rules_use_the_lpm_and_longest_prefix_wins() {
        let p = parse_policy(
            "p",
            "[[allow]]\nports=[22]\nfrom=[\"10.0.0.0/8\"]\n[[allow]]\nports=[22]\nfrom=[\"10.1.0.0/16\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        let c = Compiled::new(&p, 1);
        assert_eq!(c.port(PortProto::Tcp, 22), PORT_HAS_SOURCES);
        assert_eq!(
            c.source_v4(PortProto::Tcp, 22, &[10, 1, 2, 3]),
            rule_slot(1, 1)
        );
        assert_eq!(
            c.source_v4(PortProto::Tcp, 22, &[10, 2, 2, 3]),
            rule_slot(1, 0)
        );
        assert_eq!(c.source_v4(PortProto::Tcp, 22, &[11, 0, 0, 1]), 0);
        assert_eq!(c.source_v4(PortProto::Tcp, 23, &[10, 1, 2, 3]), 0);
        assert_eq!(c.source_v4(PortProto::Udp, 22, &[10, 1, 2, 3]), 0);
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(c.source_v6(PortProto::Tcp, 22, &a), rule_slot(1, 1));
    }

    #[test]
    fn source_rule_before_an_open_rule_keeps_counting_its_sources() {
        let p = parse_policy(
            "p",
            "[[allow]]\nports=[22]\nfrom=[\"10.0.0.1\"]\n[[allow]]\nports=[22]\n",
        )
        .unwrap();
        let c = Compiled::new(&p, 0);
        assert_eq!(c.port(PortProto::Tcp, 22), PORT_HAS_SOURCES);
        assert_eq!(
            c.source_v4(PortProto::Tcp, 22, &[10, 0, 0, 1]),
            rule_slot(0, 0)
        );
        assert_eq!(
            c.source_v4(PortProto::Tcp, 22, &[10, 0, 0, 2]),
            rule_slot(0, 1)
        );
        assert_eq!(
            c.source_v6(PortProto::Tcp, 22, &[0xfe; 16]),
            rule_slot(0, 1)
        );
    }

    #[test]
    fn open_rule_and_source_rule_on_one_port() {
        let p = parse_policy(
            "p",
            "[[allow]]\nports=[22]\nfrom=[\"10.0.0.1\"]\n[[allow]]\nports=[\"20-30\"]\n",
        )
        .unwrap();
        let c = Compiled::new(&p, 0);
        assert_eq!(c.port(PortProto::Tcp, 22), PORT_HAS_SOURCES);
        assert_eq!(
            c.source_v4(PortProto::Tcp, 22, &[10, 0, 0, 9]),
            rule_slot(0, 1)
        );
        assert_eq!(c.port(PortProto::Tcp, 21), rule_slot(0, 1));
        assert_eq!(c.port(PortProto::Tcp, 31), 0);
    }
}
