//! Map names, sizes and the layout of their keys and values. Both sides use these, so a rename
//! or a resize cannot split them. Any change here must bump [`LAYOUT_VERSION`]: pins live under a
//! directory named after it, so an upgrade never reuses maps of another layout.

/// Pins live under `/sys/fs/bpf/fw/v{LAYOUT_VERSION}/…`.
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
pub const ALL_MAPS: [&str; 17] = [
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
    MAP_COOKIE_PROG,
    MAP_LISTENERS,
    MAP_COOKIE_CFG,
    MAP_COOKIE_RATE,
    MAP_COOKIE_STATS,
    MAP_COOKIE_HANDOFF,
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
/// Listeners (local address and port) whose SYN cookie mode fw tracks.
pub const LISTENERS_MAX: u32 = 4096;

/// Counter slots for flow-table events (not verdicts): entries created in table `t` at
/// `EVENT_FLOW_NEW + t`, entries removed (expired, closed or promoted) at
/// `EVENT_FLOW_REMOVED + t`. Occupancy minus these gives LRU evictions.
pub const EVENT_FLOW_NEW: u32 = 40;
pub const EVENT_FLOW_REMOVED: u32 = 44;

pub const GENERATIONS: u32 = 2;

/// Counter slots below this belong to [`crate::Reason`]s.
pub const RULE_SLOT_BASE: u32 = 64;
/// Rule slots per generation.
pub const MAX_RULES: u32 = 16_384;
pub const COUNTER_SLOTS: u32 = RULE_SLOT_BASE + GENERATIONS * MAX_RULES;

/// Counter slot of rule `i` (0-based) of generation `gen`.
pub const fn rule_slot(generation: u32, i: u32) -> u32 {
    RULE_SLOT_BASE + generation * MAX_RULES + i
}

/// Generation and index of a rule slot.
pub const fn slot_rule(slot: u32) -> Option<(u32, u32)> {
    if slot < RULE_SLOT_BASE || slot >= COUNTER_SLOTS {
        return None;
    }
    let r = slot - RULE_SLOT_BASE;
    Some((r / MAX_RULES, r % MAX_RULES))
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
    /// `syn_cookies = "always"` or `"auto"`: SYNs to allowed TCP ports may be answered with
    /// SYN cookies from XDP, and ACKs of no connection are checked for one
    /// ([`crate::syncookie`]).
    pub const SYN_COOKIES: u32 = 1 << 8;
    /// With [`Config::SYN_COOKIES`]: answer only while SYNs arrive faster than the threshold
    /// (`syn_cookies = "auto"`).
    pub const SYN_COOKIES_AUTO: u32 = 1 << 9;

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
    use crate::syncookie::{CookieCfg, CookieRate, Listener, ListenerKey};
    // SAFETY (the four below): repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for Listener {}
    unsafe impl aya::Pod for CookieCfg {}
    unsafe impl aya::Pod for CookieRate {}
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
