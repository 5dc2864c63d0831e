//! Map names, sizes and the layout of their keys and values. Both sides use these, so a rename
//! or a resize cannot split them. Any change here must bump [`LAYOUT_VERSION`]: pins live under a
//! directory named after it, so an upgrade never reuses maps of another layout.

/// Pins live under `/sys/fs/bpf/fw/v{LAYOUT_VERSION}/…`. 3: the observability maps
/// (`crate::obs::OBS_MAPS`), rule counter slots by rule id rather than by generation, the flood
/// defence maps, counter slots for events and rate-limit drops, and the SYN cookie maps. 4: the
/// trusted flows' hint ([`MAP_FLOW_HINT`]).
pub const LAYOUT_VERSION: u32 = 4;

/// The XDP program's name in the object file: multi-buffer aware (`xdp.frags`, Linux ≥ 5.18).
pub const PROG_XDP: &str = "fw_xdp";
/// The same program without multi-buffer support, for kernels before 5.18.
pub const PROG_XDP_LINEAR: &str = "fw_xdp_linear";

/// `Array<u32>`, 1 entry: the policy generation (0 or 1) packets are judged by. Userspace fills
/// the other generation, then flips this one value: no packet sees half a policy.
pub const MAP_ACTIVE: &str = "FW_ACTIVE";
/// `Array<Config>`, one entry per generation.
pub const MAP_CONFIG: &str = "FW_CONFIG";
/// `Array<u32>`, [`PORT_ENTRIES`] entries indexed by [`port_index`]: see [`port_value`].
pub const MAP_PORTS: &str = "FW_PORTS";
/// `LpmTrie<[u8; 8], u32>`: [`SrcKeyV4`] → rule slot, for ports that admit only some sources.
pub const MAP_SRC_V4: &str = "FW_SRC_V4";
/// `LpmTrie<[u8; 20], u32>`: [`SrcKeyV6`] → rule slot.
pub const MAP_SRC_V6: &str = "FW_SRC_V6";
/// `PerCpuArray<Counter>`, [`COUNTER_SLOTS`] entries: one per reason, then one per rule slot.
pub const MAP_COUNTERS: &str = "FW_COUNTERS";
/// `LruHashMap<FlowKey, FlowState>`: flows this host opened ([`crate::flow::FlowTable::Out`]).
pub const MAP_FLOWS_OUT: &str = "FW_FLOWS_OUT";
/// `LruHashMap<FlowKey, FlowState>`: inbound TCP connections that completed the handshake.
pub const MAP_FLOWS_IN: &str = "FW_FLOWS_IN";
/// `LruHashMap<FlowKey, FlowState>`: inbound TCP handshakes in progress (and connections of a
/// source beyond its quota in `In`).
pub const MAP_EMBRYO: &str = "FW_EMBRYO";
/// `LruHashMap<[u8; 16], u32>`: how many `In` entries each source holds
/// ([`crate::track::source_key`] → count; see [`crate::flow::SOURCE_QUOTA`]).
pub const MAP_SOURCES: &str = "FW_SOURCES";
/// `Array<u32>`, [`crate::flow::HINT_SLOTS`] entries: until when an Embryo entry may live in
/// each hint slot ([`crate::decide::Tables::embryo_hint`]); lets an ACK flood skip the lookup.
pub const MAP_EMBRYO_HINT: &str = "FW_EMBRYO_HINT";
/// `Array<u64>`, [`crate::flow::FLOW_HINT_SLOTS`] entries: how many `In` and `Out` entries may
/// hash to each slot ([`crate::decide::Tables::flow_hint`]); lets a packet of no tracked flow
/// (an ACK flood, UDP at closed ports) skip both lookups.
pub const MAP_FLOW_HINT: &str = "FW_FLOW_HINT";

/// `Array<BlockMeta>`, 1 entry: which blocklist representation is in use, and the prefix
/// lengths present in the hash tables (see [`crate::block`]).
pub const MAP_BLOCK_META: &str = "FW_BLOCK_META";
/// `HashMap<BlockKeyV4, BlockValue>` (no prealloc): blocked IPv4 prefixes, one entry per prefix,
/// keyed by (prefix length, masked address).
pub const MAP_BLOCK_V4: &str = "FW_BLOCK_V4";
/// `HashMap<BlockKeyV6, BlockValue>`.
pub const MAP_BLOCK_V6: &str = "FW_BLOCK_V6";
/// `LpmTrie<[u8; 4], BlockValue>`: the blocklist when it uses too many prefix lengths for the
/// hash tables (see [`crate::block`]).
pub const MAP_BLOCK_LPM_V4: &str = "FW_BLKLPM_V4";
/// `LpmTrie<[u8; 16], BlockValue>`.
pub const MAP_BLOCK_LPM_V6: &str = "FW_BLKLPM_V6";
/// `LruHashMap<BanKey, u64>`: automatic bans (expiry, CLOCK_MONOTONIC_COARSE ns).
pub const MAP_BANS: &str = "FW_BANS";
/// `Array<LimitParams>`, one entry per rule slot of both generations (index = slot -
/// [`RULE_SLOT_BASE`]).
pub const MAP_LIMITS: &str = "FW_LIMITS";
/// `LruHashMap<BucketKey, Bucket>`: per-source buckets of sources that completed a TCP
/// handshake with this host (only that trusted event creates entries here).
pub const MAP_RL_KNOWN: &str = "FW_RL_KNOWN";
/// `LruHashMap<BucketKey, Bucket>`: per-source buckets of every other source. A spoofed flood
/// churns this table and only this one.
pub const MAP_RL_NEW: &str = "FW_RL_NEW";
/// `Array<u64>`, [`MAX_RULES`] entries: each rule's aggregate bucket (GCRA theoretical arrival
/// time), indexed by rule id.
pub const MAP_RL_TOTAL: &str = "FW_RL_TOTAL";

/// The program the XDP program tail-calls for block lists, bans and rate limits, multi-buffer
/// aware like [`PROG_XDP`].
pub const PROG_FLOOD: &str = "fw_flood";
/// The same without multi-buffer support, tail-called by [`PROG_XDP_LINEAR`] and by `fw_xdp`
/// loaded as a libxdp extension (which is loaded without `xdp.frags`).
pub const PROG_FLOOD_LINEAR: &str = "fw_flood_linear";
/// `ProgramArray`: the flood program at index 0. Pinned: the kernel empties a program array
/// when the last user reference to it goes (fw exits), and the XDP program would then fail
/// closed. The kernel takes only programs whose `xdp.frags` flag matches the array's first
/// user's, so the array is pinned under this name for the multi-buffer build and under
/// [`PIN_PROGS_LINEAR`] for the other: a switch between the two on the same pins needs no
/// array the other build owns.
pub const MAP_PROGS: &str = "FW_PROGS";
/// Where [`MAP_PROGS`] is pinned for the single-buffer build.
pub const PIN_PROGS_LINEAR: &str = "FW_PROGS_LIN";
/// `PerCpuArray<Handoff>`, 1 entry: the packet's source and the decision so far, from the XDP
/// program to the flood program ([`crate::flood::Handoff`]). Pinned, so that during a replace
/// the old XDP program and the new flood program share it.
pub const MAP_HANDOFF: &str = "FW_HANDOFF";

/// The TC egress program that records this host's outbound flows.
pub const PROG_EGRESS: &str = "fw_egress";

/// The XDP program `fw_xdp` tail-calls for the SYN cookie step (answer a SYN, check an ACK):
/// its stack is its own ([`crate::syncookie`]). Multi-buffer build (`xdp.frags`).
pub const PROG_COOKIE: &str = "fw_cookie";
/// The same step for `fw_xdp_linear` (a program array takes only programs of one kind).
pub const PROG_COOKIE_LINEAR: &str = "fw_cookie_linear";
/// The XDP program `fw_cookie` tail-calls to build a SYN+ACK answer in place (its own stack
/// again).
pub const PROG_COOKIE_TX: &str = "fw_cookie_tx";
/// The same for `fw_cookie_linear`.
pub const PROG_COOKIE_TX_LINEAR: &str = "fw_cookie_tx_linear";
/// `ProgramArray`, 2 entries: the cookie step at [`COOKIE_PROG_INDEX`], the answer at
/// [`COOKIE_TX_INDEX`]. Pinned: a program array loses its entries when the last user reference
/// (an fd or a pin) goes, and `fw up` exits. One map in the object, pinned under one of three
/// names by how `fw_xdp` is loaded, because an array keeps the kind of its first program:
/// this name for `fw_xdp` (`xdp.frags`), [`MAP_COOKIE_PROG_LINEAR`] for `fw_xdp_linear`,
/// [`MAP_COOKIE_PROG_EXT`] for `fw_xdp` as an extension of a libxdp dispatcher.
pub const MAP_COOKIE_PROG: &str = "FW_COOKIE_PROG";
pub const MAP_COOKIE_PROG_LINEAR: &str = "FW_COOKIE_LIN";
pub const MAP_COOKIE_PROG_EXT: &str = "FW_COOKIE_EXT";
/// The pins of [`MAP_COOKIE_PROG`] under its other names (not in [`ALL_MAPS`]).
pub const COOKIE_PROG_PINS: [&str; 2] = [MAP_COOKIE_PROG_LINEAR, MAP_COOKIE_PROG_EXT];
pub const COOKIE_PROG_INDEX: u32 = 0;
pub const COOKIE_TX_INDEX: u32 = 1;
pub const COOKIE_PROGS: u32 = 2;
/// `LruHashMap<ListenerKey, Listener>`: what fw knows about each local TCP listener's SYN
/// cookie mode ([`crate::syncookie::Listener`]). Only this host's own SYN+ACKs create entries.
pub const MAP_LISTENERS: &str = "FW_LISTENERS";
/// `Array<CookieCfg>`, 1 entry: the host's facts the SYN cookie answer needs (MSS, window
/// scale, which TCP options the kernel can decode from a cookie, the `auto` threshold).
pub const MAP_COOKIE_CFG: &str = "FW_COOKIE_CFG";
/// `PerCpuArray<CookieRate>`, 1 entry: each CPU's SYN count for `syn_cookies = "auto"`.
pub const MAP_COOKIE_RATE: &str = "FW_COOKIE_RATE";
/// `PerCpuArray<u64>`, [`crate::syncookie::STATS`] entries: events of the cookie path.
pub const MAP_COOKIE_STATS: &str = "FW_COOKIE_STATS";
/// `PerCpuArray<u32>`, 1 entry: the counter slot of `fw_xdp`'s decision, handed to `fw_cookie`
/// across the tail call.
pub const MAP_COOKIE_HANDOFF: &str = "FW_COOKIE_HAND";

/// Every map the programs pin, in the order userspace checks them.
pub const ALL_MAPS: [&str; 30] = [
    MAP_ACTIVE,
    MAP_CONFIG,
    MAP_PORTS,
    MAP_SRC_V4,
    MAP_SRC_V6,
    MAP_COUNTERS,
    MAP_FLOWS_OUT,
    MAP_FLOWS_IN,
    MAP_EMBRYO,
    MAP_SOURCES,
    MAP_EMBRYO_HINT,
    MAP_FLOW_HINT,
    MAP_COOKIE_PROG,
    MAP_LISTENERS,
    MAP_COOKIE_CFG,
    MAP_COOKIE_RATE,
    MAP_COOKIE_STATS,
    MAP_COOKIE_HANDOFF,
    MAP_BLOCK_META,
    MAP_BLOCK_V4,
    MAP_BLOCK_V6,
    MAP_BLOCK_LPM_V4,
    MAP_BLOCK_LPM_V6,
    MAP_BANS,
    MAP_LIMITS,
    MAP_RL_KNOWN,
    MAP_RL_NEW,
    MAP_RL_TOTAL,
    MAP_PROGS,
    MAP_HANDOFF,
];

/// Blocklist capacity per family: room for a list of a million entries and its replacement
/// side by side (a replace inserts the new entries before it removes the old ones).
pub const BLOCK_V4_MAX: u32 = 1 << 21;
pub const BLOCK_V6_MAX: u32 = 1 << 20;
/// Automatic bans held at once (LRU: the oldest ban goes first when full).
pub const BANS_MAX: u32 = 65_536;
/// Per-source buckets per table.
pub const RL_KNOWN_MAX: u32 = 262_144;
pub const RL_NEW_MAX: u32 = 262_144;

/// Entries of the flow tables (LRU: the least recently used entry of a full table goes first).
pub const FLOWS_OUT_MAX: u32 = 262_144;
pub const FLOWS_IN_MAX: u32 = 262_144;
pub const EMBRYO_MAX: u32 = 65_536;
/// Sources with entries in `In`, a quarter of its size like the Embryo table: a source's count
/// is touched whenever it opens or ends a connection, so under pressure the LRU drops the
/// counts of sources long quiet (which hold few entries), not those of a busy one.
pub const SOURCES_MAX: u32 = 65_536;
pub use crate::flow::{FLOW_HINT_SLOTS, HINT_SLOTS};
/// Listeners (local address and port) whose SYN cookie mode fw tracks.
pub const LISTENERS_MAX: u32 = 4096;

/// Counter slots for flow-table events (not verdicts): entries created in table `t` at
/// `EVENT_FLOW_NEW + t`, entries removed (expired, closed or promoted) at
/// `EVENT_FLOW_REMOVED + t`. Occupancy minus these gives LRU evictions.
/// Above every [`crate::Reason`]'s slot (checked below: a reason counted into an event slot
/// showed up as flows created, and the events as its drops).
pub const EVENT_FLOW_NEW: u32 = 64;
pub const EVENT_FLOW_REMOVED: u32 = 68;
/// Event slots per kind: one per flow table.
pub const EVENT_TABLES: u32 = 4;
/// Counter slot of automatic bans issued.
pub const EVENT_BAN: u32 = 72;
/// Counter slot of sources whose bucket moved to the trusted table (completed handshake).
pub const EVENT_RL_KNOWN: u32 = 73;
/// Counter slot of bans the ban table refused (full and not LRU-evictable: never, but counted).
pub const EVENT_BAN_FAILED: u32 = 74;
/// Packets dropped by block list `i` (0..[`BLOCK_LISTS`]) are also counted at
/// `EVENT_BLOCK_LIST + i`.
pub const EVENT_BLOCK_LIST: u32 = 80;
/// Block lists that have their own hit counter (list ids 0..16).
pub const BLOCK_LISTS: u32 = 16;
/// Reasons count below this; events from here to [`RULE_SLOT_BASE`].
pub const REASON_SLOTS: u32 = 64;
const _: () = {
    let mut i = 0;
    while i < crate::Reason::ALL.len() {
        assert!(crate::Reason::ALL[i].slot() < REASON_SLOTS);
        i += 1;
    }
    assert!((crate::flow::FlowTable::Embryo as u32) < EVENT_TABLES);
    assert!(REASON_SLOTS <= EVENT_FLOW_NEW);
    assert!(EVENT_FLOW_NEW + EVENT_TABLES <= EVENT_FLOW_REMOVED);
    assert!(EVENT_FLOW_REMOVED + EVENT_TABLES <= EVENT_BAN);
    assert!(EVENT_BAN_FAILED < EVENT_BLOCK_LIST);
    assert!(EVENT_BLOCK_LIST + BLOCK_LISTS <= RULE_SLOT_BASE);
};

pub const GENERATIONS: u32 = 2;

/// Counter slots below this belong to [`crate::Reason`]s (below [`REASON_SLOTS`]) and events.
pub const RULE_SLOT_BASE: u32 = 128;
/// Rules a policy may have.
pub const MAX_RULES: u32 = 16_384;
/// Rule ids (counter identities) run below this: twice [`MAX_RULES`], so that a policy
/// replacing another entirely still finds ids the policy in force does not use.
pub const RULE_IDS: u32 = GENERATIONS * MAX_RULES;
/// After the rule slots, one slot per rule id for its packets dropped by rate limits.
pub const COUNTER_SLOTS: u32 = RULE_SLOT_BASE + 2 * RULE_IDS;

/// The counter slot of rate-limit drops of the rule counted at `slot`.
pub const fn limited_slot(slot: u32) -> u32 {
    slot + RULE_IDS
}

/// The rule id (stable across live edits and generations) of a rule slot.
pub const fn rule_id(slot: u32) -> u32 {
    slot.wrapping_sub(RULE_SLOT_BASE)
}

/// Counter slot of the rule with id `id`. The slot belongs to the rule's id in every
/// generation: a rule that stays in force across a generation flip keeps its slot, so its
/// counters never restart (see `fw_policy::ids`). The generation argument no longer selects
/// anything; it stays so that callers need not change.
pub const fn rule_slot(_generation: u32, id: u32) -> u32 {
    RULE_SLOT_BASE + id
}

/// The rule id of a counter slot (the first value is always 0; it used to be a generation).
pub const fn slot_rule(slot: u32) -> Option<(u32, u32)> {
    if slot < RULE_SLOT_BASE || slot >= RULE_SLOT_BASE + RULE_IDS {
        return None;
    }
    Some((0, slot - RULE_SLOT_BASE))
}

/// Protocols with port rules.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortProto {
    Tcp = 0,
    Udp = 1,
}

impl PortProto {
    pub const fn name(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

pub const PORT_ENTRIES: u32 = GENERATIONS * 2 * 65_536;

/// Index into [`MAP_PORTS`].
#[inline(always)]
pub const fn port_index(generation: u32, proto: PortProto, port: u16) -> u32 {
    ((generation & 1) << 17) | ((proto as u32) << 16) | port as u32
}

/// Set in a [`MAP_PORTS`] value when the port has source-restricted rules in the LPM tries.
pub const PORT_HAS_SOURCES: u32 = 1 << 31;
/// Set in a rule slot (a [`MAP_PORTS`] value or a source-trie value) when the rule has a rate
/// limit in [`MAP_LIMITS`]: rules without one cost no extra lookup.
pub const SLOT_LIMITED: u32 = 1 << 30;
/// Set in a decision's slot (never in a map) when the packet completed an inbound TCP
/// handshake: the flood step then gives its source a trusted rate-limit bucket.
pub const SLOT_HANDSHAKE: u32 = 1 << 29;
/// The counter slot of the rule that opens the port to every source (0 = none).
pub const PORT_SLOT_MASK: u32 = !(PORT_HAS_SOURCES | SLOT_LIMITED);

/// A [`MAP_PORTS`] value: the open-to-all rule's slot (or 0) and whether source rules exist.
pub const fn port_value(open_slot: u32, has_sources: bool) -> u32 {
    (open_slot & PORT_SLOT_MASK) | if has_sources { PORT_HAS_SOURCES } else { 0 }
}

/// Bits of the LPM key before the address: generation, protocol, port.
pub const SRC_KEY_PREFIX_BITS: u32 = 32;

/// LPM key data for IPv4: `[generation, proto, port_hi, port_lo, a, b, c, d]`; the prefix
/// length is [`SRC_KEY_PREFIX_BITS`] + the CIDR length.
pub type SrcKeyV4 = [u8; 8];
/// LPM key data for IPv6: `[generation, proto, port_hi, port_lo, addr[16]]`.
pub type SrcKeyV6 = [u8; 20];

#[inline(always)]
pub fn src_key_v4(generation: u32, proto: PortProto, port: u16, addr: &[u8; 4]) -> SrcKeyV4 {
    let p = port.to_be_bytes();
    [
        generation as u8,
        proto as u8,
        p[0],
        p[1],
        addr[0],
        addr[1],
        addr[2],
        addr[3],
    ]
}

#[inline(always)]
pub fn src_key_v6(generation: u32, proto: PortProto, port: u16, addr: &[u8; 16]) -> SrcKeyV6 {
    let p = port.to_be_bytes();
    let mut k = [0u8; 20];
    k[0] = generation as u8;
    k[1] = proto as u8;
    k[2] = p[0];
    k[3] = p[1];
    let mut i = 0;
    while i < 16 {
        k[4 + i] = addr[i];
        i += 1;
    }
    k
}

pub const SRC_V4_MAX: u32 = 1 << 21;
pub const SRC_V6_MAX: u32 = 1 << 21;

/// Per-generation options (a [`MAP_CONFIG`] value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
    /// Seconds an established TCP connection may stay idle.
    pub tcp_established_timeout: u32,
    /// Seconds a UDP flow may stay idle before any reply came back.
    pub udp_timeout: u16,
    /// Seconds a UDP flow that got replies may stay idle.
    pub udp_stream_timeout: u16,
    /// Seconds an ICMP echo may wait for its reply.
    pub icmp_timeout: u16,
    /// Prefix length of automatic bans of IPv4 sources (0: no rule bans IPv4 sources).
    pub ban_len4: u8,
    /// Prefix length of automatic bans of IPv6 sources (0: none).
    pub ban_len6: u8,
}
const _: () = assert!(size_of::<Config>() == 16);

impl Default for Config {
    /// All flags off (closed: the safe side), conntrack's default timeouts.
    fn default() -> Self {
        Config {
            flags: 0,
            tcp_established_timeout: 5 * 24 * 3600,
            udp_timeout: 30,
            udp_stream_timeout: 120,
            icmp_timeout: 30,
            ban_len4: 0,
            ban_len6: 0,
        }
    }
}

impl Config {
    /// Drop every TCP flag combination no real stack sends, not only NULL and XMAS.
    pub const STRICT_TCP_FLAGS: u32 = 1 << 0;
    /// Answer pings: ICMP echo request and ICMPv6 echo request pass.
    pub const ICMP_ECHO: u32 = 1 << 1;
    /// Non-first fragments pass (the kernel reassembles them only with a first fragment that
    /// passed); without it they are dropped.
    pub const FRAGMENTS_PASS: u32 = 1 << 2;
    /// DHCP (67→68) and DHCPv6 (547→546) replies to this host's client pass.
    pub const DHCP_CLIENT: u32 = 1 << 3;
    /// `fw flush`: everything passes.
    pub const PASS_ALL: u32 = 1 << 4;
    /// Accept replies to this host's connections and ICMP errors about them (ESTABLISHED,
    /// RELATED).
    pub const ESTABLISHED: u32 = 1 << 5;
    /// Drop TCP that is not a plain SYN and matches no tracked connection.
    pub const NEW_REQUIRES_SYN: u32 = 1 << 6;
    /// `syn_cookies = "always"` or `"auto"`: SYNs to allowed TCP ports may be answered with
    /// SYN cookies from XDP, and ACKs of no connection are checked for one
    /// ([`crate::syncookie`]).
    pub const SYN_COOKIES: u32 = 1 << 8;
    /// With [`Config::SYN_COOKIES`]: answer only while SYNs arrive faster than the threshold
    /// (`syn_cookies = "auto"`).
    pub const SYN_COOKIES_AUTO: u32 = 1 << 9;
    /// `default = "accept"`: what no rule admits passes, except blocked and banned sources,
    /// scan/flag drops and rate limits.
    pub const DEFAULT_ACCEPT: u32 = 1 << 7;

    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// One per-CPU counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::{Config, Counter};
    use crate::block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue};
    use crate::flood::Handoff;
    use crate::flow::{FlowKey, FlowState};
    use crate::syncookie::{CookieCfg, CookieRate, Listener, ListenerKey};
    // SAFETY (the four below): repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for Listener {}
    unsafe impl aya::Pod for CookieCfg {}
    unsafe impl aya::Pod for CookieRate {}
    use crate::limit::{BanKey, Bucket, BucketKey, LimitParams};
    // SAFETY (all below): repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for BlockKeyV4 {}
    unsafe impl aya::Pod for BlockKeyV6 {}
    unsafe impl aya::Pod for BlockMeta {}
    unsafe impl aya::Pod for BlockValue {}
    unsafe impl aya::Pod for BanKey {}
    unsafe impl aya::Pod for Handoff {}
    unsafe impl aya::Pod for Bucket {}
    unsafe impl aya::Pod for BucketKey {}
    unsafe impl aya::Pod for LimitParams {}
    // SAFETY: repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowState {}
    // SAFETY: repr(C), no padding, every bit pattern valid.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: as above.
    unsafe impl bytemuck::Zeroable for Config {}
    // SAFETY: as above.
    unsafe impl bytemuck::Pod for Config {}
    // SAFETY: as above.
    unsafe impl bytemuck::Zeroable for Counter {}
    // SAFETY: as above.
    unsafe impl bytemuck::Pod for Counter {}
}
