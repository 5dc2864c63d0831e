//! Map names, sizes and the layout of their keys and values. Both sides use these, so a rename
//! or a resize cannot split them. Any change here must bump [`LAYOUT_VERSION`]: pins live under a
//! directory named after it, so an upgrade never reuses maps of another layout.

/// Pins live under `/sys/fs/bpf/fw/v{LAYOUT_VERSION}/…`. 3: the observability maps
/// (`crate::obs::OBS_MAPS`), and rule counter slots by rule id rather than by generation.
pub const LAYOUT_VERSION: u32 = 3;

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

/// The TC egress program that records this host's outbound flows.
pub const PROG_EGRESS: &str = "fw_egress";

/// Every map the programs pin, in the order userspace checks them.
pub const ALL_MAPS: [&str; 11] = [
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
];

/// Entries of the flow tables (LRU: the least recently used entry of a full table goes first).
pub const FLOWS_OUT_MAX: u32 = 262_144;
pub const FLOWS_IN_MAX: u32 = 262_144;
pub const EMBRYO_MAX: u32 = 65_536;
/// Sources with entries in `In`, a quarter of its size like the Embryo table: a source's count
/// is touched whenever it opens or ends a connection, so under pressure the LRU drops the
/// counts of sources long quiet (which hold few entries), not those of a busy one.
pub const SOURCES_MAX: u32 = 65_536;
pub use crate::flow::HINT_SLOTS;

/// Counter slots for flow-table events (not verdicts): entries created in table `t` at
/// `EVENT_FLOW_NEW + t`, entries removed (expired, closed or promoted) at
/// `EVENT_FLOW_REMOVED + t`. Occupancy minus these gives LRU evictions.
/// Above every [`crate::Reason`]'s slot (checked below: a reason counted into an event slot
/// showed up as flows created, and the events as its drops).
pub const EVENT_FLOW_NEW: u32 = 56;
pub const EVENT_FLOW_REMOVED: u32 = 60;
/// Event slots per kind: one per flow table.
pub const EVENT_TABLES: u32 = 4;
const _: () = {
    let mut i = 0;
    while i < crate::Reason::ALL.len() {
        assert!(crate::Reason::ALL[i].slot() < EVENT_FLOW_NEW);
        i += 1;
    }
    assert!((crate::flow::FlowTable::Embryo as u32) < EVENT_TABLES);
    assert!(EVENT_FLOW_NEW + EVENT_TABLES <= EVENT_FLOW_REMOVED);
    assert!(EVENT_FLOW_REMOVED + EVENT_TABLES <= RULE_SLOT_BASE);
};

pub const GENERATIONS: u32 = 2;

/// Counter slots below this belong to [`crate::Reason`]s.
pub const RULE_SLOT_BASE: u32 = 64;
/// Rules a policy may have.
pub const MAX_RULES: u32 = 16_384;
/// Rule ids (counter identities) run below this: twice [`MAX_RULES`], so that a policy
/// replacing another entirely still finds ids the policy in force does not use.
pub const RULE_IDS: u32 = GENERATIONS * MAX_RULES;
pub const COUNTER_SLOTS: u32 = RULE_SLOT_BASE + RULE_IDS;

/// Counter slot of the rule with id `id`. The slot belongs to the rule's id in every
/// generation: a rule that stays in force across a generation flip keeps its slot, so its
/// counters never restart (see `fw_policy::ids`). The generation argument no longer selects
/// anything; it stays so that callers need not change.
pub const fn rule_slot(_generation: u32, id: u32) -> u32 {
    RULE_SLOT_BASE + id
}

/// The rule id of a counter slot (the first value is always 0; it used to be a generation).
pub const fn slot_rule(slot: u32) -> Option<(u32, u32)> {
    if slot < RULE_SLOT_BASE || slot >= COUNTER_SLOTS {
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
/// The counter slot of the rule that opens the port to every source (0 = none).
pub const PORT_SLOT_MASK: u32 = !PORT_HAS_SOURCES;

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
    pub _pad: u16,
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
            _pad: 0,
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
    use crate::flow::{FlowKey, FlowState};
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
