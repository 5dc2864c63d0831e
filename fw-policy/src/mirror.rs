//! The full userspace mirror of the kernel: the compiled policy plus in-memory flow tables, with
//! the same side effects the XDP and egress programs have on their maps. Tests replay packet
//! sequences through both and compare.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
};

use fw_common::{Config, FlowKey, FlowState, FlowTable, PortProto, Tables};

use crate::Compiled;

pub struct Mirror {
    pub policy: Compiled,
    pub flows: RefCell<BTreeMap<(FlowTable, FlowKey), FlowState>>,
    /// In-table connections per source (the kernel's `FW_SOURCES`).
    pub sources: RefCell<BTreeMap<[u8; 16], u32>>,
    /// The Embryo table's hint slots (the kernel's `FW_EMBRYO_HINT`; absent = 0).
    pub embryo_hints: RefCell<BTreeMap<u32, u32>>,
    /// The clock the mirror's `decide()` sees (CLOCK_MONOTONIC_COARSE nanoseconds).
    pub now: Cell<u64>,
}

impl Mirror {
    pub fn new(policy: Compiled) -> Self {
        Mirror {
            policy,
            flows: RefCell::new(BTreeMap::new()),
            sources: RefCell::new(BTreeMap::new()),
            embryo_hints: RefCell::new(BTreeMap::new()),
            now: Cell::new(0),
        }
    }
}

impl Tables for Mirror {
    fn config(&self) -> Config {
        self.policy.config()
    }

    fn port(&self, proto: PortProto, port: u16) -> u32 {
        self.policy.port(proto, port)
    }

    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32 {
        self.policy.source_v4(proto, port, addr)
    }

    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32 {
        self.policy.source_v6(proto, port, addr)
    }

    fn now(&self) -> u64 {
        self.now.get()
    }

    fn flow(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState> {
        self.flows.borrow().get(&(table, *key)).copied()
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
        // A copy, so `f` may read the tables (the kernel's lookups do too).
        let mut st = self.flow(table, key)?;
        let r = f(&mut st);
        self.flows.borrow_mut().insert((table, *key), st);
        Some(r)
    }

    fn flow_take(&self, table: FlowTable, key: &FlowKey) -> bool {
        self.flows.borrow_mut().remove(&(table, *key)).is_some()
    }

    fn source_count(&self, src: &[u8; 16]) -> u32 {
        self.sources.borrow().get(src).copied().unwrap_or(0)
    }

    fn source_count_set(&self, src: &[u8; 16], n: u32) {
        self.sources.borrow_mut().insert(*src, n);
    }

    fn embryo_hint(&self, slot: u32) -> u32 {
        self.embryo_hints.borrow().get(&slot).copied().unwrap_or(0)
    }

    fn embryo_hint_set(&self, slot: u32, until: u32) {
        self.embryo_hints.borrow_mut().insert(slot, until);
    }
}
