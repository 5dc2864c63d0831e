//! [`MemTables`]: the smallest [`Tables`] that can answer everything `decide()` asks — open
//! ports, source-restricted ports (a longest-prefix scan over a list), and flow tables in a
//! map — so the decision can be tested without a compiled policy or a kernel.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    net::IpAddr,
    vec::Vec,
};

use crate::{
    Config, FlowKey, FlowState, FlowTable, PortProto, Tables,
    maps::{PORT_HAS_SOURCES, rule_slot},
};

/// A source restriction: (proto, port, network as 16 bytes, prefix bits of the family, IPv6?, slot).
type Source = (PortProto, u16, [u8; 16], u8, bool, u32);

pub struct MemTables {
    pub config: Config,
    ports: BTreeMap<(PortProto, u16), u32>,
    sources: Vec<Source>,
    pub flows: RefCell<BTreeMap<(FlowTable, FlowKey), FlowState>>,
    pub now: Cell<u64>,
    /// How often the clock was read (in the kernel, a helper call each).
    pub clock_reads: Cell<u32>,
    /// What every embryo hint slot holds (the kernel's array; `u32::MAX`: always look).
    pub embryo_hint: Cell<u32>,
}

/// The counter slot of rule `id` (generation 0).
pub const fn slot(id: u32) -> u32 {
    rule_slot(0, id)
}

impl MemTables {
    /// Nothing open, these option flags, the default timeouts, the clock at 1,000 s.
    pub fn new(flags: u32) -> Self {
        MemTables {
            config: Config {
                flags,
                ..Config::default()
            },
            ports: BTreeMap::new(),
            sources: Vec::new(),
            flows: RefCell::new(BTreeMap::new()),
            now: Cell::new(1_000_000_000_000),
            clock_reads: Cell::new(0),
            embryo_hint: Cell::new(u32::MAX),
        }
    }

    /// The seed policy's options: established, new_requires_syn, strict_tcp_flags,
    /// dhcp_client, fragments pass; no echo.
    pub fn seed_options() -> Self {
        Self::new(
            Config::ESTABLISHED
                | Config::NEW_REQUIRES_SYN
                | Config::STRICT_TCP_FLAGS
                | Config::DHCP_CLIENT
                | Config::FRAGMENTS_PASS,
        )
    }

    /// `port` open to everyone under rule `id`.
    pub fn open(mut self, proto: PortProto, port: u16, id: u32) -> Self {
        let v = self.ports.entry((proto, port)).or_insert(0);
        *v = (*v & PORT_HAS_SOURCES) | slot(id);
        self
    }

    /// `port` open to `cidr` ("203.0.113.0/24", "2001:db8::/48") under rule `id`.
    pub fn restrict(mut self, proto: PortProto, port: u16, cidr: &str, id: u32) -> Self {
        let (addr, bits) = cidr.split_once('/').expect("a CIDR");
        let (net, v6) = match addr.parse::<IpAddr>().expect("an address") {
            IpAddr::V4(a) => {
                let mut n = [0u8; 16];
                n[..4].copy_from_slice(&a.octets());
                (n, false)
            }
            IpAddr::V6(a) => (a.octets(), true),
        };
        *self.ports.entry((proto, port)).or_insert(0) |= PORT_HAS_SOURCES;
        let bits = bits.parse().expect("prefix bits");
        self.sources.push((proto, port, net, bits, v6, slot(id)));
        self
    }

    /// A flow entry, `age_s` seconds old.
    pub fn with_flow(self, table: FlowTable, key: FlowKey, mut st: FlowState, age_s: u64) -> Self {
        st.last_seen = self.now.get() - age_s * 1_000_000_000;
        self.flows.borrow_mut().insert((table, key), st);
        self
    }

    pub fn flow_in(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState> {
        self.flows.borrow().get(&(table, *key)).copied()
    }

    fn source(&self, proto: PortProto, port: u16, addr: &[u8], v6: bool) -> u32 {
        let matches = |net: &[u8; 16], bits: u8| {
            let full = usize::from(bits / 8);
            let rest = bits % 8;
            addr[..full] == net[..full]
                && (rest == 0 || (addr[full] ^ net[full]) & (0xff << (8 - rest)) == 0)
        };
        self.sources
            .iter()
            .filter(|s| s.0 == proto && s.1 == port && s.4 == v6 && matches(&s.2, s.3))
            .max_by_key(|s| s.3)
            .map_or(0, |s| s.5)
    }
}

impl Tables for MemTables {
    fn config(&self) -> Config {
        self.config
    }

    fn port(&self, proto: PortProto, port: u16) -> u32 {
        self.ports.get(&(proto, port)).copied().unwrap_or(0)
    }

    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32 {
        self.source(proto, port, addr, false)
    }

    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32 {
        self.source(proto, port, addr, true)
    }

    fn now(&self) -> u64 {
        self.clock_reads.set(self.clock_reads.get() + 1);
        self.now.get()
    }

    fn embryo_hint(&self, _slot: u32) -> u32 {
        self.embryo_hint.get()
    }

    fn flow(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState> {
        self.flow_in(table, key)
    }

    fn flow_write(&self, table: FlowTable, key: &FlowKey, st: &FlowState, _new: bool) {
        self.flows.borrow_mut().insert((table, *key), *st);
    }

    fn flow_remove(&self, table: FlowTable, key: &FlowKey) {
        self.flows.borrow_mut().remove(&(table, *key));
    }

    fn flow_with<R>(
        &self,
        table: FlowTable,
        key: &FlowKey,
        f: impl FnOnce(&mut FlowState) -> R,
    ) -> Option<R> {
        let mut st = self.flow_in(table, key)?;
        let r = f(&mut st);
        self.flows.borrow_mut().insert((table, *key), st);
        Some(r)
    }

    fn flow_take(&self, table: FlowTable, key: &FlowKey) -> bool {
        self.flows.borrow_mut().remove(&(table, *key)).is_some()
    }
}
