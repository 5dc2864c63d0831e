//! The full userspace mirror of the kernel: the compiled policy plus in-memory flow tables,
//! rate-limit buckets, bans and event counters, with the same side effects the XDP and egress
//! programs have on their maps. Tests replay packet sequences through both and compare.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
};

use fw_common::{
    Config, FlowKey, FlowState, FlowTable, PortProto, Tables,
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    limit::{BanKey, Bucket, BucketKey, LimitParams},
    syncookie::{CookieCfg, CookieRate, CookieTuple, Listener, ListenerKey},
};

use crate::Compiled;

pub struct Mirror {
    pub policy: Compiled,
    pub flows: RefCell<BTreeMap<(FlowTable, FlowKey), FlowState>>,
    /// Per-source buckets, by (known table?, key).
    pub buckets: RefCell<BTreeMap<(bool, BucketKey), Bucket>>,
    /// Aggregate buckets by rule id.
    pub totals: RefCell<BTreeMap<u32, u64>>,
    pub bans: RefCell<BTreeMap<BanKey, u64>>,
    /// Events counted (counter slot → count).
    pub events: RefCell<BTreeMap<u32, u64>>,
    /// In-table connections per source (the kernel's `FW_SOURCES`).
    pub sources: RefCell<BTreeMap<[u8; 16], u32>>,
    /// The Embryo table's hint slots (the kernel's `FW_EMBRYO_HINT`; absent = 0).
    pub embryo_hints: RefCell<BTreeMap<u32, u32>>,
    /// The clock the mirror's `decide()` sees (CLOCK_MONOTONIC_COARSE nanoseconds).
    pub now: Cell<u64>,
    /// Listeners' SYN cookie mode (the kernel's `FW_LISTENERS`).
    pub listeners: RefCell<BTreeMap<ListenerKey, Listener>>,
    /// The host's facts for cookie answers (the kernel's `FW_COOKIE_CFG`).
    pub cookie_cfg: Cell<CookieCfg>,
    /// The SYN count of `auto` (the kernel keeps one per CPU: a test that compares it runs on
    /// one CPU).
    pub cookie_rate: RefCell<CookieRate>,
    /// The handshakes whose ACK carries a valid cookie: userspace cannot compute the kernel's
    /// cookies (its secret), so tests teach the mirror the ones the kernel answered with.
    pub valid_cookies: RefCell<BTreeSet<CookieTuple>>,
}

impl Mirror {
    pub fn new(policy: Compiled) -> Self {
        Mirror {
            policy,
            flows: RefCell::new(BTreeMap::new()),
            buckets: RefCell::new(BTreeMap::new()),
            totals: RefCell::new(BTreeMap::new()),
            bans: RefCell::new(BTreeMap::new()),
            events: RefCell::new(BTreeMap::new()),
            sources: RefCell::new(BTreeMap::new()),
            embryo_hints: RefCell::new(BTreeMap::new()),
            now: Cell::new(0),
            listeners: RefCell::new(BTreeMap::new()),
            cookie_cfg: Cell::new(CookieCfg::default()),
            cookie_rate: RefCell::new(CookieRate::default()),
            valid_cookies: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn events_at(&self, slot: u32) -> u64 {
        self.events.borrow().get(&slot).copied().unwrap_or(0)
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

    fn block_meta(&self) -> Option<&BlockMeta> {
        self.policy.block_meta()
    }

    fn block_v4(&self, key: &BlockKeyV4) -> Option<BlockValue> {
        self.policy.block_v4(key)
    }

    fn block_v6(&self, key: &BlockKeyV6) -> Option<BlockValue> {
        self.policy.block_v6(key)
    }

    fn block_lpm_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        self.policy.block_lpm_v4(addr)
    }

    fn block_lpm_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        self.policy.block_lpm_v6(addr)
    }

    fn ban(&self, key: &BanKey) -> Option<u64> {
        self.bans.borrow().get(key).copied()
    }

    fn ban_write(&self, key: &BanKey, until: u64) {
        self.bans.borrow_mut().insert(*key, until);
    }

    fn ban_remove(&self, key: &BanKey) {
        self.bans.borrow_mut().remove(key);
    }

    fn limit(&self, slot: u32) -> Option<LimitParams> {
        self.policy.limit(slot)
    }

    fn bucket(&self, known: bool, key: &BucketKey) -> Option<Bucket> {
        self.buckets.borrow().get(&(known, *key)).copied()
    }

    fn bucket_write(&self, known: bool, key: &BucketKey, b: &Bucket) {
        self.buckets.borrow_mut().insert((known, *key), *b);
    }

    fn total(&self, rule: u32) -> u64 {
        self.totals.borrow().get(&rule).copied().unwrap_or(0)
    }

    fn total_write(&self, rule: u32, tat: u64) {
        self.totals.borrow_mut().insert(rule, tat);
    }

    fn event(&self, slot: u32) {
        *self.events.borrow_mut().entry(slot).or_default() += 1;
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

    fn listener(&self, key: &ListenerKey) -> Option<Listener> {
        self.listeners.borrow().get(key).copied()
    }

    fn listener_write(&self, key: &ListenerKey, l: &Listener) {
        self.listeners.borrow_mut().insert(*key, *l);
    }

    fn cookie_cfg(&self) -> CookieCfg {
        self.cookie_cfg.get()
    }

    fn cookie_rate_with<R>(&self, f: impl FnOnce(&mut CookieRate) -> R) -> Option<R> {
        Some(f(&mut self.cookie_rate.borrow_mut()))
    }

    fn syncookie_valid(&self, c: &CookieTuple) -> bool {
        self.valid_cookies.borrow().contains(c)
    }
}
