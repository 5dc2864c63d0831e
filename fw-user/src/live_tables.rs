//! `fw_common::Tables` over the pinned maps of a running filter: `fw explain` asks the kernel's
//! own tables, the very entries the XDP program reads (read-only: explaining changes nothing).

use fw_common::{
    Config, FlowKey, FlowState, FlowTable, PortProto, Tables,
    maps::{SRC_KEY_PREFIX_BITS, port_index, src_key_v4, src_key_v6},
};

use crate::{Error, maps::PinnedMaps};

pub struct LiveTables<'a> {
    maps: &'a PinnedMaps,
    generation: u32,
    config: Config,
}

impl<'a> LiveTables<'a> {
    pub fn new(maps: &'a PinnedMaps) -> Result<Self, Error> {
        let generation = maps.active_generation()?;
        let config = maps.config(generation)?;
        Ok(LiveTables {
            maps,
            generation,
            config,
        })
    }
}

impl Tables for LiveTables<'_> {
    fn config(&self) -> Config {
        self.config
    }

    fn port(&self, proto: PortProto, port: u16) -> u32 {
        self.maps
            .port(port_index(self.generation, proto, port))
            .unwrap_or(0)
    }

    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32 {
        let key = src_key_v4(self.generation, proto, port, addr);
        self.maps
            .source_v4(SRC_KEY_PREFIX_BITS + 32, key)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32 {
        let key = src_key_v6(self.generation, proto, port, addr);
        self.maps
            .source_v6(SRC_KEY_PREFIX_BITS + 128, key)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn now(&self) -> u64 {
        crate::sys::monotonic_coarse_ns()
    }

    fn flow(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState> {
        self.maps.flow(table, key).ok().flatten()
    }

    /// `fw explain` only looks: it never changes the running filter's state.
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
