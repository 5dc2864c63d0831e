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
    /// The clock the mirror's `decide()` sees (CLOCK_MONOTONIC_COARSE nanoseconds).
    pub now: Cell<u64>,
}

impl Mirror {
    pub fn new(policy: Compiled) -> Self {
        Mirror {
            policy,
            flows: RefCell::new(BTreeMap::new()),
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
}
