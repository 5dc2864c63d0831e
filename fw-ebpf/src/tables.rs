//! The maps, and `fw_common::Tables` over them. Names and layouts come from `fw_common::maps`.

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_F_NO_PREALLOC, BPF_NOEXIST, iphdr, ipv6hdr, tcphdr},
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
    },
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, lpm_trie::Key},
};
use fw_common::{
    Config, Counter, FlowKey, FlowState, FlowTable, PortProto, Tables,
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    flood::Handoff,
    limit::{BanKey, Bucket, BucketKey, LimitParams},
    maps::{
        BANS_MAX, BLOCK_V4_MAX, BLOCK_V6_MAX, COOKIE_PROGS, COUNTER_SLOTS, EMBRYO_MAX,
        EVENT_BAN_FAILED, EVENT_FLOW_NEW, EVENT_FLOW_REMOVED, FLOW_HINT_SLOTS, FLOWS_IN_MAX,
        FLOWS_OUT_MAX, GENERATIONS, HINT_SLOTS, LISTENERS_MAX, MAX_RULES, PORT_ENTRIES,
        RL_KNOWN_MAX, RL_NEW_MAX, RULE_SLOT_BASE, SOURCES_MAX, SRC_KEY_PREFIX_BITS, SRC_V4_MAX,
        SRC_V6_MAX, SrcKeyV4, SrcKeyV6, port_index, src_key_v4, src_key_v6,
    },
    syncookie::{CookieCfg, CookieRate, CookieTuple, Listener, ListenerKey, STATS},
};

#[map]
static FW_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static FW_CONFIG: Array<Config> = Array::with_max_entries(GENERATIONS, 0);
#[map]
static FW_PORTS: Array<u32> = Array::with_max_entries(PORT_ENTRIES, 0);
#[map]
static FW_SRC_V4: LpmTrie<SrcKeyV4, u32> = LpmTrie::with_max_entries(SRC_V4_MAX, 0);
#[map]
static FW_SRC_V6: LpmTrie<SrcKeyV6, u32> = LpmTrie::with_max_entries(SRC_V6_MAX, 0);
#[map]
static FW_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
#[map]
static FW_FLOWS_OUT: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(FLOWS_OUT_MAX, 0);
#[map]
static FW_FLOWS_IN: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(FLOWS_IN_MAX, 0);
#[map]
static FW_EMBRYO: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(EMBRYO_MAX, 0);
/// Established inbound connections per source in FW_FLOWS_IN (`fw_common::flow::SOURCE_QUOTA`).
/// The Embryo table's "maybe present" hint (`Tables::embryo_hint`).
#[map]
static FW_EMBRYO_HINT: Array<u32> = Array::with_max_entries(HINT_SLOTS, 0);
/// The trusted flows' hint (`Tables::flow_hint`): `In` and `Out` entries per slot.
#[map]
static FW_FLOW_HINT: Array<u64> = Array::with_max_entries(FLOW_HINT_SLOTS, 0);
#[map]
static FW_SOURCES: LruHashMap<[u8; 16], u32> = LruHashMap::with_max_entries(SOURCES_MAX, 0);

#[map]
static FW_BLOCK_META: Array<BlockMeta> = Array::with_max_entries(1, 0);
#[map]
static FW_BLOCK_V4: HashMap<BlockKeyV4, BlockValue> =
    HashMap::with_max_entries(BLOCK_V4_MAX, BPF_F_NO_PREALLOC);
#[map]
static FW_BLOCK_V6: HashMap<BlockKeyV6, BlockValue> =
    HashMap::with_max_entries(BLOCK_V6_MAX, BPF_F_NO_PREALLOC);
#[map]
static FW_BLKLPM_V4: LpmTrie<[u8; 4], BlockValue> = LpmTrie::with_max_entries(BLOCK_V4_MAX, 0);
#[map]
static FW_BLKLPM_V6: LpmTrie<[u8; 16], BlockValue> = LpmTrie::with_max_entries(BLOCK_V6_MAX, 0);
#[map]
static FW_BANS: LruHashMap<BanKey, u64> = LruHashMap::with_max_entries(BANS_MAX, 0);
#[map]
static FW_LIMITS: Array<LimitParams> = Array::with_max_entries(GENERATIONS * MAX_RULES, 0);
#[map]
static FW_RL_KNOWN: LruHashMap<BucketKey, Bucket> = LruHashMap::with_max_entries(RL_KNOWN_MAX, 0);
#[map]
static FW_RL_NEW: LruHashMap<BucketKey, Bucket> = LruHashMap::with_max_entries(RL_NEW_MAX, 0);
#[map]
static FW_RL_TOTAL: Array<u64> = Array::with_max_entries(MAX_RULES, 0);

/// What `fw_xdp` hands to the tail-called `fw_flood`. Pinned like the program array: during
/// a replace, the old `fw_xdp` may tail-call the new `fw_flood`, and both must see one slot.
#[map]
static FW_HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

/// The flood program at index 0 (filled by the loader), in the build whose `xdp.frags` flag
/// matches the loaded XDP program's: the kernel refuses any other in this array.
#[map]
pub static FW_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// This CPU's hand-off slot.
#[inline(always)]
pub fn handoff() -> Option<*mut Handoff> {
    FW_HANDOFF.get_ptr_mut(0)
}

#[inline(always)]
fn buckets(known: bool) -> &'static LruHashMap<BucketKey, Bucket> {
    if known { &FW_RL_KNOWN } else { &FW_RL_NEW }
}

/// `fw_cookie` (fw_common::maps::MAP_COOKIE_PROG).
#[map]
pub static FW_COOKIE_PROG: ProgramArray = ProgramArray::with_max_entries(COOKIE_PROGS, 0);
#[map]
static FW_LISTENERS: LruHashMap<ListenerKey, Listener> =
    LruHashMap::with_max_entries(LISTENERS_MAX, 0);
#[map]
static FW_COOKIE_CFG: Array<CookieCfg> = Array::with_max_entries(1, 0);
#[map]
static FW_COOKIE_RATE: PerCpuArray<CookieRate> = PerCpuArray::with_max_entries(1, 0);
#[map]
static FW_COOKIE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS, 0);
/// The counter slot of `fw_xdp`'s decision, for `fw_cookie` (this CPU's: nothing runs
/// between the tail call and its reader).
#[map]
static FW_COOKIE_HAND: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Hand `slot` to the program `fw_xdp` tail-calls next on this CPU.
#[inline(always)]
pub fn hand_off(slot: u32) {
    if let Some(p) = FW_COOKIE_HAND.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP runs with preemption off.
        unsafe { *p = slot };
    }
}

/// What [`hand_off`] left on this CPU.
#[inline(always)]
pub fn handed() -> u32 {
    FW_COOKIE_HAND.get(0).copied().unwrap_or(0)
}

/// Count a cookie-path event (this CPU's copy).
#[inline(always)]
pub fn cookie_event(stat: u32) {
    if let Some(c) = FW_COOKIE_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU value, preemption off.
        unsafe { *c += 1 };
    }
}

/// The headers the kernel's cookie check reads, made up from the facts: only the addresses,
/// ports and the two sequence numbers matter to `__cookie_v4_check`/`__cookie_v6_check`.
#[repr(C, align(8))]
struct CheckHeaders {
    ip: [u8; 40],
    tcp: [u8; 20],
}

/// Add `delta` (wrapping: `u64::MAX` takes one away) to a trusted-flow hint slot, atomically:
/// CPUs create and end flows of one slot at once. (The BPF target has no `AtomicU64::fetch_add`
/// in Rust — no compare-and-swap — but the instruction, BPF_ATOMIC | BPF_ADD, is in every
/// kernel fw supports.)
#[inline(always)]
fn flow_hint_add(key: &FlowKey, delta: u64) {
    if let Some(p) = FW_FLOW_HINT.get_ptr_mut(fw_common::flow::flow_hint_slot(key)) {
        // SAFETY: `p` is an array element, valid and 8-byte aligned for the program's life;
        // every kernel writer goes through this atomic add (userspace only ORs in
        // FLOW_HINT_STICKY).
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({p} + 0) += {d}",
                p = in(reg) p,
                d = in(reg) delta,
                options(nostack),
            );
        }
    }
}

#[inline(always)]
fn flows(table: FlowTable) -> &'static LruHashMap<FlowKey, FlowState> {
    match table {
        FlowTable::Out => &FW_FLOWS_OUT,
        FlowTable::In => &FW_FLOWS_IN,
        FlowTable::Embryo => &FW_EMBRYO,
    }
}

/// The policy generation in force when the packet arrived, read once per packet.
pub struct MapTables {
    generation: u32,
    config: Config,
}

impl MapTables {
    #[inline(always)]
    pub fn active() -> Self {
        let generation = FW_ACTIVE.get(0).copied().unwrap_or(0) & 1;
        // A missing config reads as all-zero flags: closed, the safe side.
        let config = FW_CONFIG.get(generation).copied().unwrap_or_default();
        MapTables { generation, config }
    }
}

impl Tables for MapTables {
    #[inline(always)]
    fn config(&self) -> Config {
        self.config
    }

    #[inline(always)]
    fn port(&self, proto: PortProto, port: u16) -> u32 {
        FW_PORTS
            .get(port_index(self.generation, proto, port))
            .copied()
            .unwrap_or(0)
    }

    #[inline(always)]
    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32 {
        let key = Key::new(
            SRC_KEY_PREFIX_BITS + 32,
            src_key_v4(self.generation, proto, port, addr),
        );
        FW_SRC_V4.get(&key).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32 {
        let key = Key::new(
            SRC_KEY_PREFIX_BITS + 128,
            src_key_v6(self.generation, proto, port, addr),
        );
        FW_SRC_V6.get(&key).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn now(&self) -> u64 {
        // SAFETY: no arguments; available to XDP and TC programs.
        unsafe { bpf_ktime_get_coarse_ns() }
    }

    #[inline(always)]
    fn flow(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState> {
        // SAFETY: the value is copied out at once; a concurrent update at worst gives an older
        // or newer copy of a 16-byte entry, which every caller tolerates.
        unsafe { flows(table).get(key).copied() }
    }

    /// An `In` or `Out` entry is created only with its hint slot counted up first (and down
    /// again if it existed after all), so the hint never reads zero while it lives; an update
    /// never creates one (an entry another CPU removed meanwhile stays removed, unless `new`).
    #[inline(always)]
    fn flow_write(&self, table: FlowTable, key: &FlowKey, st: &FlowState, new: bool) {
        let m = flows(table);
        if table == FlowTable::Embryo {
            if m.insert(key, st, 0).is_ok() && new {
                count(EVENT_FLOW_NEW + table as u32, 0);
            }
            return;
        }
        if !new {
            let _ = m.insert(key, st, BPF_EXIST as u64);
            return;
        }
        flow_hint_add(key, 1);
        if m.insert(key, st, BPF_NOEXIST as u64).is_ok() {
            count(EVENT_FLOW_NEW + table as u32, 0);
        } else {
            flow_hint_add(key, u64::MAX);
            let _ = m.insert(key, st, BPF_EXIST as u64);
        }
    }

    #[inline(always)]
    fn flow_hint(&self, slot: u32) -> u64 {
        FW_FLOW_HINT.get(slot).copied().unwrap_or(1)
    }

    #[inline(always)]
    fn flow_remove(&self, table: FlowTable, key: &FlowKey) {
        self.flow_take(table, key);
    }

    #[inline(always)]
    fn flow_with<R>(
        &self,
        table: FlowTable,
        key: &FlowKey,
        f: impl FnOnce(&mut FlowState) -> R,
    ) -> Option<R> {
        let p = flows(table).get_ptr_mut(key)?;
        // SAFETY: `p` points at a live map value (RCU keeps it valid while the program runs).
        // `f` changes it in place: other CPUs may write the same entry at once, which at worst
        // loses one of two concurrent refreshes, as the kernel's conntrack tolerates for its
        // timers; no copy, so the BPF stack stays small.
        Some(f(unsafe { &mut *p }))
    }

    #[inline(always)]
    fn flow_take(&self, table: FlowTable, key: &FlowKey) -> bool {
        let ok = flows(table).remove(key).is_ok();
        if ok {
            count(EVENT_FLOW_REMOVED + table as u32, 0);
            if table != FlowTable::Embryo {
                flow_hint_add(key, u64::MAX);
            }
        }
        ok
    }

    #[inline(always)]
    fn source_count(&self, src: &[u8; 16]) -> u32 {
        // SAFETY: copied out at once.
        unsafe { FW_SOURCES.get(src).copied().unwrap_or(0) }
    }

    #[inline(always)]
    fn source_count_set(&self, src: &[u8; 16], n: u32) {
        let _ = FW_SOURCES.insert(src, &n, 0);
    }

    #[inline(always)]
    fn embryo_hint(&self, slot: u32) -> u32 {
        FW_EMBRYO_HINT.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn listener(&self, key: &ListenerKey) -> Option<Listener> {
        // SAFETY: copied out at once.
        unsafe { FW_LISTENERS.get(key).copied() }
    }

    #[inline(always)]
    fn listener_write(&self, key: &ListenerKey, l: &Listener) {
        let _ = FW_LISTENERS.insert(key, l, 0);
    }

    #[inline(always)]
    fn cookie_cfg(&self) -> CookieCfg {
        FW_COOKIE_CFG.get(0).copied().unwrap_or_default()
    }

    #[inline(always)]
    fn cookie_rate_with<R>(&self, f: impl FnOnce(&mut CookieRate) -> R) -> Option<R> {
        let p = FW_COOKIE_RATE.get_ptr_mut(0)?;
        // SAFETY: this CPU's value, preemption off.
        Some(f(unsafe { &mut *p }))
    }

    #[inline(always)]
    fn syncookie_valid(&self, c: &CookieTuple) -> bool {
        let mut h = CheckHeaders {
            ip: [0; 40],
            tcp: [0; 20],
        };
        h.tcp[0..2].copy_from_slice(&c.sport.to_be_bytes());
        h.tcp[2..4].copy_from_slice(&c.dport.to_be_bytes());
        h.tcp[4..8].copy_from_slice(&c.seq.to_be_bytes());
        h.tcp[8..12].copy_from_slice(&c.ack.to_be_bytes());
        h.tcp[12] = 5 << 4;
        h.tcp[13] = fw_common::tcp::ACK;
        let tcp = h.tcp.as_mut_ptr().cast::<tcphdr>();
        let r = if c.family == 4 {
            h.ip[0] = 0x45;
            h.ip[9] = fw_common::packet::IPPROTO_TCP;
            h.ip[12..16].copy_from_slice(&c.src[..4]);
            h.ip[16..20].copy_from_slice(&c.dst[..4]);
            // SAFETY: both point at initialised stack buffers of the sizes the helper reads.
            unsafe { bpf_tcp_raw_check_syncookie_ipv4(h.ip.as_mut_ptr().cast::<iphdr>(), tcp) }
        } else {
            h.ip[0] = 0x60;
            h.ip[6] = fw_common::packet::IPPROTO_TCP;
            h.ip[8..24].copy_from_slice(&c.src);
            h.ip[24..40].copy_from_slice(&c.dst);
            // SAFETY: as above.
            unsafe { bpf_tcp_raw_check_syncookie_ipv6(h.ip.as_mut_ptr().cast::<ipv6hdr>(), tcp) }
        };
        r == 0
    }

    #[inline(always)]
    fn cookie_event(&self, stat: u32) {
        cookie_event(stat);
    }

    #[inline(always)]
    fn embryo_hint_set(&self, slot: u32, until: u32) {
        if let Some(p) = FW_EMBRYO_HINT.get_ptr_mut(slot) {
            // SAFETY: an array element, valid for the program's life; a racing writer at worst
            // stores a smaller value of its own, which only costs a lookup that could have been
            // skipped — except that it could also hide a live entry: see `embryo_hint`'s
            // contract — both writers store `now + ttl` of an entry they just wrote, so the
            // later of two racing stores covers the entry written last.
            unsafe { *p = until };
        }
    }

    #[inline(always)]
    fn block_meta(&self) -> Option<&BlockMeta> {
        FW_BLOCK_META.get(0)
    }

    #[inline(always)]
    fn block_v4(&self, key: &BlockKeyV4) -> Option<BlockValue> {
        // SAFETY: copied out at once; userspace replaces values whole.
        unsafe { FW_BLOCK_V4.get(key).copied() }
    }

    #[inline(always)]
    fn block_v6(&self, key: &BlockKeyV6) -> Option<BlockValue> {
        // SAFETY: as above.
        unsafe { FW_BLOCK_V6.get(key).copied() }
    }

    #[inline(always)]
    fn block_lpm_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        FW_BLKLPM_V4.get(&Key::new(32, *addr)).copied()
    }

    #[inline(always)]
    fn block_lpm_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        FW_BLKLPM_V6.get(&Key::new(128, *addr)).copied()
    }

    #[inline(always)]
    fn ban(&self, key: &BanKey) -> Option<u64> {
        // SAFETY: an 8-byte value copied out at once.
        unsafe { FW_BANS.get(key).copied() }
    }

    #[inline(always)]
    fn ban_write(&self, key: &BanKey, until: u64) {
        if FW_BANS.insert(key, &until, 0).is_err() {
            count(EVENT_BAN_FAILED, 0);
        }
    }

    #[inline(always)]
    fn ban_remove(&self, key: &BanKey) {
        let _ = FW_BANS.remove(key);
    }

    #[inline(always)]
    fn limit(&self, slot: u32) -> Option<LimitParams> {
        FW_LIMITS.get(slot.wrapping_sub(RULE_SLOT_BASE)).copied()
    }

    #[inline(always)]
    fn bucket(&self, known: bool, key: &BucketKey) -> Option<Bucket> {
        // SAFETY: a 16-byte value copied out at once; concurrent updates from another CPU at
        // worst lose one charge (a limit is approximate under contention, never unbounded).
        unsafe { buckets(known).get(key).copied() }
    }

    #[inline(always)]
    fn bucket_write(&self, known: bool, key: &BucketKey, b: &Bucket) {
        let m = buckets(known);
        if let Some(p) = m.get_ptr_mut(key) {
            // SAFETY: a live element of the map; an in-place update avoids an allocation.
            unsafe { *p = *b };
        } else {
            let _ = m.insert(key, b, 0);
        }
    }

    #[inline(always)]
    fn total(&self, rule: u32) -> u64 {
        FW_RL_TOTAL.get(rule).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn total_write(&self, rule: u32, tat: u64) {
        if let Some(p) = FW_RL_TOTAL.get_ptr_mut(rule) {
            // SAFETY: an array element; racing CPUs at worst lose one charge.
            unsafe { *p = tat };
        }
    }

    #[inline(always)]
    fn event(&self, slot: u32) {
        count(slot, 0);
    }
}

/// Add one packet of `len` bytes to counter `slot` (this CPU's copy: no atomics needed).
#[inline(always)]
pub fn count(slot: u32, len: u64) {
    if let Some(c) = FW_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, XDP runs with preemption off on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}
