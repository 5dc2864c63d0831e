//! `fw_common::Tables` over the pinned maps of a running filter: `fw explain` asks the kernel's
//! own tables, the very entries the XDP program reads (read-only: explaining changes nothing).

use fw_common::{
    Config, FlowKey, FlowState, FlowTable, PortProto, Tables,
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    limit::{BanKey, Bucket, BucketKey, LimitParams},
    maps::{SRC_KEY_PREFIX_BITS, port_index, src_key_v4, src_key_v6},
    syncookie::{Listener, ListenerKey},
};

use crate::{Error, maps::PinnedMaps};

pub struct LiveTables<'a> {
    maps: &'a PinnedMaps,
    generation: u32,
    config: Config,
    block_meta: BlockMeta,
}

impl<'a> LiveTables<'a> {
    pub fn new(maps: &'a PinnedMaps) -> Result<Self, Error> {
        let generation = maps.active_generation()?;
        let config = maps.config(generation)?;
        let block_meta = maps.flood.meta()?;
        Ok(LiveTables {
            maps,
            generation,
            config,
            block_meta,
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

    /// Whether fw answers SYNs for a listener is in the kernel's table: `fw explain` says what
    /// the filter does now.
    fn listener(&self, key: &ListenerKey) -> Option<Listener> {
        self.maps.listener(key)
    }

    fn block_meta(&self) -> Option<&BlockMeta> {
        Some(&self.block_meta)
    }

    fn block_v4(&self, key: &BlockKeyV4) -> Option<BlockValue> {
        self.maps.flood.block_v4(key)
    }

    fn block_v6(&self, key: &BlockKeyV6) -> Option<BlockValue> {
        self.maps.flood.block_v6(key)
    }

    fn block_lpm_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        self.maps.flood.block_lpm_v4(addr)
    }

    fn block_lpm_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        self.maps.flood.block_lpm_v6(addr)
    }

    fn ban(&self, key: &BanKey) -> Option<u64> {
        self.maps.flood.ban(key)
    }

    fn limit(&self, slot: u32) -> Option<LimitParams> {
        self.maps.flood.limit(slot).ok()
    }

    /// The bucket as it is now: explaining charges nothing.
    fn bucket(&self, known: bool, key: &BucketKey) -> Option<Bucket> {
        self.maps.flood.bucket(known, key)
    }

    fn total(&self, rule: u32) -> u64 {
        self.maps.flood.total(rule).unwrap_or(0)
    }

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
