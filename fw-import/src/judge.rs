//! fw's side of the equivalence check: the one `fw_common::decide_parsed()` over the compiled
//! policy ([`Compiled`]), with flow lookups answered from the modelled conntrack state of the
//! packet being judged. There is no second decision engine: whatever `decide()` does with a
//! packet, the importer sees.
//!
//! Source lookups go through an index of the compiled LPM entries (a hash table per prefix
//! length), so judging a packet costs the same at 10 or 100,000 rules; it answers exactly what
//! [`Compiled`]'s own longest-prefix match answers (tested below).

use std::{
    cell::Cell,
    collections::{BTreeSet, HashMap},
};

use fw_common::{
    Config, Decision, FlowKey, FlowState, FlowTable, Parsed, PortProto, Tables,
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    decide_parsed,
    flow::state,
    maps::{SRC_KEY_PREFIX_BITS, src_key_v4, src_key_v6},
    packet::IPPROTO_TCP,
};
use fw_policy::Compiled;

use crate::model::{Ct, Pkt};

/// Longest-prefix match over LPM entries: one hash table per prefix length in use.
struct Lpm<const N: usize> {
    /// Prefix lengths in use, longest first.
    lens: Vec<u32>,
    map: HashMap<(u32, [u8; N]), u32>,
}

impl<const N: usize> Lpm<N> {
    fn new(entries: &std::collections::BTreeMap<(u32, [u8; N]), u32>) -> Self {
        let lens: BTreeSet<u32> = entries.keys().map(|(l, _)| *l).collect();
        Lpm {
            lens: lens.into_iter().rev().collect(),
            map: entries.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    fn get(&self, key: &[u8; N]) -> u32 {
        for &len in &self.lens {
            if let Some(slot) = self.map.get(&(len, masked(key, len))) {
                return *slot;
            }
        }
        0
    }
}

fn masked<const N: usize>(key: &[u8; N], bits: u32) -> [u8; N] {
    let mut out = *key;
    for (i, b) in out.iter_mut().enumerate() {
        let keep = (bits as usize).saturating_sub(i * 8).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    out
}

/// Source intervals (first, last address as integers) of the LPM entries of one port.
pub(crate) type Bounds = HashMap<(PortProto, u16), Vec<(u128, u128)>>;

fn bounds<const N: usize>(entries: &std::collections::BTreeMap<(u32, [u8; N]), u32>) -> Bounds {
    let mut out: Bounds = HashMap::new();
    for (len, key) in entries.keys() {
        let proto = if key[1] == PortProto::Tcp as u8 {
            PortProto::Tcp
        } else {
            PortProto::Udp
        };
        let port = u16::from_be_bytes([key[2], key[3]]);
        let addr_bits = (N as u32 - 4) * 8;
        let mut v: u128 = 0;
        for b in &key[4..] {
            v = (v << 8) | *b as u128;
        }
        let plen = len - SRC_KEY_PREFIX_BITS;
        let host = if plen >= addr_bits {
            0
        } else {
            (u128::MAX >> (128 - addr_bits)) >> plen
        };
        out.entry((proto, port)).or_default().push((v, v | host));
    }
    out
}

/// The compiled policy, plus the conntrack state of the packet being judged.
pub(crate) struct Judge<'a> {
    compiled: &'a Compiled,
    v4: Lpm<8>,
    v6: Lpm<20>,
    pub(crate) bounds_v4: Bounds,
    pub(crate) bounds_v6: Bounds,
    /// Whether the packet being judged belongs to a connection conntrack (and fw) tracks.
    tracked: Cell<bool>,
    /// Whether the last decision looked at the source address.
    looked_at_source: Cell<bool>,
    /// Decisions made (the check's unit of work).
    pub(crate) decisions: Cell<u64>,
}

impl<'a> Judge<'a> {
    pub(crate) fn new(compiled: &'a Compiled) -> Self {
        Judge {
            compiled,
            v4: Lpm::new(&compiled.src_v4),
            v6: Lpm::new(&compiled.src_v6),
            bounds_v4: bounds(&compiled.src_v4),
            bounds_v6: bounds(&compiled.src_v6),
            tracked: Cell::new(false),
            looked_at_source: Cell::new(false),
            decisions: Cell::new(0),
        }
    }

    /// What fw does with `pkt`, and whether the answer depends on its source address.
    pub(crate) fn decide(&self, pkt: &Pkt) -> (Decision, bool) {
        self.tracked.set(matches!(
            pkt.ct,
            Ct::Established | Ct::InvalidTracked | Ct::Related
        ));
        self.looked_at_source.set(false);
        self.decisions.set(self.decisions.get() + 1);
        let d = decide_parsed(&Ok(Parsed::Ip(pkt.ip)), self);
        (d, self.looked_at_source.get())
    }
}

impl Tables for Judge<'_> {
    fn config(&self) -> Config {
        self.compiled.config
    }

    fn port(&self, proto: PortProto, port: u16) -> u32 {
        self.compiled.port(proto, port)
    }

    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32 {
        self.looked_at_source.set(true);
        self.v4
            .get(&src_key_v4(self.compiled.generation, proto, port, addr))
    }

    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32 {
        self.looked_at_source.set(true);
        self.v6
            .get(&src_key_v6(self.compiled.generation, proto, port, addr))
    }

    fn now(&self) -> u64 {
        0
    }

    // The policy's `[[block]]` entries, as the kernel reads them; a lookup makes the verdict
    // depend on the source (the check then cuts the address space at the blocks' bounds).
    fn block_meta(&self) -> Option<&BlockMeta> {
        (!self.compiled.blocks.is_empty()).then_some(&self.compiled.blocks.meta)
    }

    fn block_v4(&self, key: &BlockKeyV4) -> Option<BlockValue> {
        self.looked_at_source.set(true);
        self.compiled.block_v4(key)
    }

    fn block_v6(&self, key: &BlockKeyV6) -> Option<BlockValue> {
        self.looked_at_source.set(true);
        self.compiled.block_v6(key)
    }

    fn block_lpm_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        self.looked_at_source.set(true);
        self.compiled.block_lpm_v4(addr)
    }

    fn block_lpm_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        self.looked_at_source.set(true);
        self.compiled.block_lpm_v6(addr)
    }

    /// Conntrack's view: a packet of a tracked connection finds its flow, fresh, in whichever
    /// table `decide()` looks; any other packet finds none.
    fn flow(&self, _: FlowTable, key: &FlowKey) -> Option<FlowState> {
        self.tracked.get().then_some(FlowState {
            last_seen: 0,
            expect_ack: 0,
            state: if key.proto == IPPROTO_TCP {
                state::ESTABLISHED
            } else {
                state::REPLIED
            },
            flags: 0,
            _pad: [0; 2],
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_common::{
        Family, decide, egress,
        frame::PacketSpec,
        tcp::{ACK, PSH, SYN},
    };
    use fw_policy::{mirror::Mirror, parse_policy};

    fn policy() -> Compiled {
        Compiled::new(
            &parse_policy(
                "p",
                "[[allow]]\nports=[22]\nfrom=[\"10.0.0.0/8\", \"10.1.0.0/16\", \"192.0.2.7\", \"2001:db8::/32\"]\n[[allow]]\nports=[22]\nfrom=[\"10.1.2.0/24\"]\n[[allow]]\nproto=\"udp\"\nports=[\"5000-5010\"]\nfrom=[\"0.0.0.0/0\"]\n[[allow]]\nports=[80]\n",
            )
            .unwrap(),
            1,
        )
    }

    /// The index answers what the compiled policy's own longest-prefix match answers.
    #[test]
    fn source_index_agrees_with_the_compiled_lookup() {
        let c = policy();
        let j = Judge::new(&c);
        let mut x: u32 = 12345;
        for i in 0..20_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let a = if i % 2 == 0 {
                x.to_be_bytes()
            } else {
                [10, 1, (x >> 8) as u8 % 4, x as u8]
            };
            for (proto, port) in [
                (PortProto::Tcp, 22),
                (PortProto::Udp, 5005),
                (PortProto::Tcp, 80),
            ] {
                assert_eq!(
                    j.source_v4(proto, port, &a),
                    c.source_v4(proto, port, &a),
                    "{a:?} {port}"
                );
            }
            let mut a6 = [0u8; 16];
            a6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, (x >> 24) as u8 % 2 + 0xb8]);
            a6[4..8].copy_from_slice(&x.to_be_bytes());
            assert_eq!(
                j.source_v6(PortProto::Tcp, 22, &a6),
                c.source_v6(PortProto::Tcp, 22, &a6)
            );
        }
        assert_eq!(j.bounds_v4[&(PortProto::Tcp, 22)].len(), 4);
        assert!(j.bounds_v4[&(PortProto::Tcp, 22)].contains(&(0x0a01_0200, 0x0a01_02ff)));
    }

    fn ip(frame: &[u8]) -> fw_common::Ip {
        match fw_common::parse(frame) {
            Ok(Parsed::Ip(ip)) => ip,
            other => panic!("{other:?}"),
        }
    }

    /// A tracked packet as the importer models it gets what the kernel's tables give a packet
    /// of a connection the host opened (the userspace mirror after the egress program recorded
    /// the host's own packets); an untracked one what a stranger's packet gets.
    #[test]
    fn modelled_conntrack_state_decides_like_recorded_flows() {
        let c = policy();
        let j = Judge::new(&c);
        let host = "192.0.2.1";
        let peer = "198.51.100.9";
        let cases = [
            // (the host's packet recorded first, the peer's reply)
            (
                PacketSpec::tcp(host, peer, 40000, 443, SYN).build(),
                PacketSpec::tcp(peer, host, 443, 40000, SYN | ACK).build(),
            ),
            (
                PacketSpec::tcp(host, peer, 40000, 443, SYN).build(),
                PacketSpec::tcp(peer, host, 443, 40000, ACK | PSH).build(),
            ),
            (
                PacketSpec::udp(host, peer, 33333, 53).build(),
                PacketSpec::udp(peer, host, 53, 33333).build(),
            ),
            (
                PacketSpec::icmp(host, peer, 8, 0).build(),
                PacketSpec::icmp(peer, host, 0, 0).build(),
            ),
        ];
        for (out, reply) in cases {
            let m = Mirror::new(c.clone());
            m.now.set(1_000_000_000_000);
            let stranger = decide(reply.as_slice(), &m);
            egress::record(out.as_slice(), &m);
            let known = decide(reply.as_slice(), &m);
            let pkt = |ct| Pkt {
                ip: ip(&reply),
                ct,
                nat_dport: None,
            };
            assert_eq!(j.decide(&pkt(Ct::Established)).0, known, "{reply:?}");
            assert_eq!(j.decide(&pkt(Ct::New)).0, stranger, "{reply:?}");
            assert_eq!(pkt(Ct::New).ip.family, Family::V4);
        }
    }

    #[test]
    fn decisions_say_whether_the_source_mattered() {
        let c = policy();
        let j = Judge::new(&c);
        let p = |port| Pkt {
            ip: ip(&PacketSpec::syn("10.9.9.9", "192.0.2.1", port).build()),
            ct: Ct::New,
            nat_dport: None,
        };
        assert!(j.decide(&p(22)).1);
        assert!(!j.decide(&p(80)).1);
        assert!(!j.decide(&p(81)).1);
    }
}
