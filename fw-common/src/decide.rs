//! The one decision. The XDP program calls it with map-backed [`Tables`]; userspace calls it
//! with tables built from the same policy (or read from the pinned maps) — same bytes in, same
//! verdict and counter slot out.
//!
//! Cheapest first: flags-only checks need no lookup; a port lookup is one array read; the LPM
//! trie is consulted only for ports that admit some sources only; a flow lookup (one hash
//! lookup on the common path) only for packets that are not a new connection.

use crate::{
    Reason,
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    flow::{FlowKey, FlowState, FlowTable, REFRESH_NS, state, tcp_next},
    limit::{self, BanKey, Bucket, BucketKey, LimitParams},
    maps::{Config, PORT_SLOT_MASK, PortProto, SLOT_LIMITED},
    packet::{Family, Fragment, IPPROTO_ICMP, IPPROTO_ICMPV6, Ip, L4, PacketView, Parsed, parse},
    tcp::{ACK, FlagClass, RST, SYN, classify},
};

/// What the policy and the connection state say, however they are stored.
pub trait Tables {
    /// The options of the generation in force.
    fn config(&self) -> Config;
    /// The [`crate::maps::MAP_PORTS`] value for this port (0 = closed).
    fn port(&self, proto: PortProto, port: u16) -> u32;
    /// The rule slot whose source CIDR holds `addr` for this port (0 = none).
    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32;
    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32;

    /// CLOCK_MONOTONIC_COARSE nanoseconds.
    fn now(&self) -> u64;
    fn flow(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState>;
    /// Insert (`new`) or overwrite a flow entry. Read-only tables (`fw explain`) ignore it.
    fn flow_write(&self, table: FlowTable, key: &FlowKey, st: &FlowState, new: bool);
    fn flow_remove(&self, table: FlowTable, key: &FlowKey);

    // Block lists, bans and rate limits ([`crate::block`], [`crate::limit`]). The defaults are
    // "nothing blocked, no limits", for tables that only judge the policy's ports.

    /// Which block list representation is in use (`None`: no block list).
    fn block_meta(&self) -> Option<&BlockMeta> {
        None
    }
    fn block_v4(&self, _key: &BlockKeyV4) -> Option<BlockValue> {
        None
    }
    fn block_v6(&self, _key: &BlockKeyV6) -> Option<BlockValue> {
        None
    }
    fn block_lpm_v4(&self, _addr: &[u8; 4]) -> Option<BlockValue> {
        None
    }
    fn block_lpm_v6(&self, _addr: &[u8; 16]) -> Option<BlockValue> {
        None
    }
    /// A ban's expiry (CLOCK_MONOTONIC_COARSE ns).
    fn ban(&self, _key: &BanKey) -> Option<u64> {
        None
    }
    fn ban_write(&self, _key: &BanKey, _until: u64) {}
    fn ban_remove(&self, _key: &BanKey) {}
    /// The limits of the rule counted at `slot` (no flag bits).
    fn limit(&self, _slot: u32) -> Option<LimitParams> {
        None
    }
    /// A per-source bucket: in the `known` table (sources that completed a handshake) or the
    /// `new` one.
    fn bucket(&self, _known: bool, _key: &BucketKey) -> Option<Bucket> {
        None
    }
    fn bucket_write(&self, _known: bool, _key: &BucketKey, _b: &Bucket) {}
    /// A rule's aggregate bucket (GCRA theoretical arrival time).
    fn total(&self, _rule: u32) -> u64 {
        0
    }
    fn total_write(&self, _rule: u32, _tat: u64) {}
    /// Count one event (not a verdict) at counter `slot`.
    fn event(&self, _slot: u32) {}
}

/// A verdict and the counter slot that accounts for it (a [`Reason`] or a rule slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub pass: bool,
    pub slot: u32,
}

impl Decision {
    #[inline(always)]
    pub const fn reason(r: Reason) -> Self {
        Decision {
            pass: r.passes(),
            slot: r.slot(),
        }
    }

    #[inline(always)]
    pub const fn rule(slot: u32) -> Self {
        Decision { pass: true, slot }
    }

    /// The reason, when the slot is not a rule's.
    pub fn why(&self) -> Option<Reason> {
        Reason::from_slot(self.slot)
    }
}

/// Parse `pkt` and decide.
#[inline(always)]
pub fn decide<P: PacketView + ?Sized, T: Tables>(pkt: &P, t: &T) -> Decision {
    decide_parsed(&parse(pkt), t)
}

/// The whole decision: [`decide_early`] (flush, malformed, non-IP), [`decide_core`] (flags,
/// ports, connection state), then [`crate::flood::decide_flood`] (block lists, bans, rate
/// limits, the default action). The XDP program runs the last step as a tail call, and only
/// when it can change something ([`crate::flood::needs_flood`]): the steps together do not fit
/// one 512-byte BPF stack.
#[inline(always)]
pub fn decide_parsed<T: Tables>(parsed: &Result<Parsed, Reason>, t: &T) -> Decision {
    let cfg = t.config();
    if let Some(d) = decide_early(parsed, &cfg) {
        return d;
    }
    let d = decide_core(parsed, t, &cfg);
    match parsed {
        Ok(Parsed::Ip(ip)) => crate::flood::decide_flood(t, &cfg, &crate::flood::Source::of(ip), d),
        _ => d,
    }
}

/// Everything decided before the policy's rules: `fw flush`, parse errors, non-IP frames.
#[inline(always)]
pub fn decide_early(parsed: &Result<Parsed, Reason>, cfg: &Config) -> Option<Decision> {
    if cfg.has(Config::PASS_ALL) {
        return Some(Decision::reason(Reason::Flushed));
    }
    match parsed {
        Err(r) => Some(Decision::reason(*r)),
        Ok(Parsed::NonIp { .. }) => Some(Decision::reason(Reason::NonIp)),
        Ok(Parsed::Ip(_)) => None,
    }
}

/// The policy's rules and connection state. A new connection admitted by a rule with limits
/// comes back with [`crate::maps::SLOT_LIMITED`] still set, for the flood step.
#[inline(always)]
pub fn decide_core<T: Tables>(parsed: &Result<Parsed, Reason>, t: &T, cfg: &Config) -> Decision {
    match parsed {
        Ok(Parsed::Ip(ip)) => decide_ip(t, cfg, ip),
        _ => Decision::reason(Reason::DefaultDrop),
    }
}

#[inline(always)]
fn decide_ip<T: Tables>(t: &T, cfg: &Config, ip: &Ip) -> Decision {
    if ip.frag == Fragment::Later {
        return Decision::reason(if cfg.has(Config::FRAGMENTS_PASS) {
            Reason::FragmentPassed
        } else {
            Reason::FragmentDropped
        });
    }
    let stateful = cfg.has(Config::ESTABLISHED);
    match ip.l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            ack,
            ..
        } => match classify(flags) {
            FlagClass::Null => Decision::reason(Reason::TcpNull),
            FlagClass::Xmas => Decision::reason(Reason::TcpXmas),
            FlagClass::Invalid if cfg.has(Config::STRICT_TCP_FLAGS) => {
                Decision::reason(Reason::TcpBadFlags)
            }
            // Without strict checks, an impossible combination is what conntrack calls
            // INVALID: neither part of a connection nor a new one, so only the port rules
            // judge it — exactly the seed's iptables rules.
            FlagClass::Syn => port_policy(t, ip, PortProto::Tcp, dport, true),
            FlagClass::Invalid => port_policy(t, ip, PortProto::Tcp, dport, false),
            FlagClass::Other => {
                if stateful {
                    let key = ingress_key(ip, sport, dport);
                    match tcp_established(t, &key, flags, ack, dport) {
                        MISS => {}
                        // The flood step gives a client that completed a handshake its
                        // trusted rate-limit bucket, then counts it as established.
                        HANDSHAKE => return crate::flood::handshake(dport),
                        _ => return Decision::reason(Reason::Established),
                    }
                    if cfg.has(Config::NEW_REQUIRES_SYN) {
                        return Decision::reason(Reason::TcpNotSyn);
                    }
                }
                port_policy(t, ip, PortProto::Tcp, dport, false)
            }
        },
        L4::Udp { sport, dport } => {
            if cfg.has(Config::DHCP_CLIENT) && is_dhcp_reply(ip.family, sport, dport) {
                return Decision::reason(Reason::DhcpClient);
            }
            let d = port_policy(t, ip, PortProto::Udp, dport, true);
            if d.pass || !stateful {
                return d;
            }
            if reply_seen(t, &ingress_key(ip, sport, dport)) {
                return Decision::reason(Reason::Established);
            }
            d
        }
        L4::Icmp { ty, id, quoted, .. } => icmp_policy(t, cfg, ip, ty, id, quoted),
        L4::None => Decision::reason(Reason::DefaultDrop),
    }
}

/// The flow key of an arriving packet: its source is the remote end.
#[inline(always)]
pub fn ingress_key(ip: &Ip, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        remote: ip.src,
        local: ip.dst,
        remote_port: sport,
        local_port: dport,
        proto: ip.proto,
        family: family_byte(ip.family),
        _pad: [0; 2],
    }
}

#[inline(always)]
pub const fn family_byte(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

/// A live entry in `table`, refreshed (and moved to `next` state) as this packet requires; an
/// expired one is removed.
#[inline(always)]
fn touch<T: Tables>(t: &T, table: FlowTable, key: &FlowKey, next: impl Fn(u8) -> u8) -> bool {
    let Some(mut st) = t.flow(table, key) else {
        return false;
    };
    // The clock is read only on a hit: a miss (a scan) costs the lookup alone.
    let now = t.now();
    if !st.alive(key.proto, now, &t.config()) {
        t.flow_remove(table, key);
        return false;
    }
    let n = next(st.state);
    if n != st.state || now.wrapping_sub(st.last_seen) > REFRESH_NS {
        st.state = n;
        st.last_seen = now;
        t.flow_write(table, key, &st, false);
    }
    true
}

const MISS: u8 = 0;
const HIT: u8 = 1;
/// A hit that completed an inbound handshake (the embryo was promoted).
const HANDSHAKE: u8 = 2;

/// Non-SYN TCP: part of a tracked connection? ([`HIT`], [`HANDSHAKE`] or [`MISS`]) Inbound connections to an allowed port are
/// looked up first in the inbound tables, everything else in the outbound table first, so the
/// common case costs one hash lookup.
#[inline(always)]
fn tcp_established<T: Tables>(t: &T, key: &FlowKey, flags: u8, ack: u32, dport: u16) -> u8 {
    let next = |s: u8| tcp_next(s, flags);
    let inbound_first = t.port(PortProto::Tcp, dport) != 0;
    if inbound_first && touch(t, FlowTable::In, key, next) {
        return HIT;
    }
    if touch(t, FlowTable::Out, key, next) {
        return HIT;
    }
    if !inbound_first && touch(t, FlowTable::In, key, next) {
        return HIT;
    }
    // The client's handshake ACK: promote the embryo if it acknowledges our SYN+ACK. Embryos
    // exist only for ports the policy admits SYNs to, so other ports skip the lookup.
    let handshake_ack = flags & (SYN | ACK) == ACK;
    // A client that did not ask for our SYN+ACK answers it with a bare RST; let it through so
    // the host drops the half-open connection at once (and forget the embryo).
    let refusal = flags & (SYN | ACK | RST) == RST;
    if !inbound_first || !(handshake_ack || refusal) {
        return MISS;
    }
    let Some(e) = t.flow(FlowTable::Embryo, key) else {
        return MISS;
    };
    if !e.alive(key.proto, t.now(), &t.config()) {
        return MISS;
    }
    if refusal {
        t.flow_remove(FlowTable::Embryo, key);
        return HIT;
    }
    if e.expect_ack == ack {
        let now = t.now();
        let st = FlowState {
            last_seen: now,
            expect_ack: 0,
            state: tcp_next(state::ESTABLISHED, flags),
            flags: e.flags,
            _pad: [0; 2],
        };
        t.flow_write(FlowTable::In, key, &st, true);
        t.flow_remove(FlowTable::Embryo, key);
        return HANDSHAKE;
    }
    MISS
}

/// UDP or ICMP echo reply to something this host sent.
#[inline(always)]
fn reply_seen<T: Tables>(t: &T, key: &FlowKey) -> bool {
    touch(t, FlowTable::Out, key, |_| state::REPLIED)
}

#[inline(always)]
fn is_dhcp_reply(family: Family, sport: u16, dport: u16) -> bool {
    match family {
        Family::V4 => sport == 67 && dport == 68,
        Family::V6 => sport == 547 && dport == 546,
    }
}

/// The rule that admits this packet, if any. For a new connection (`new`: SYN, UDP datagram)
/// the slot keeps [`SLOT_LIMITED`], so the flood step holds it to the rule's limits.
#[inline(always)]
fn port_policy<T: Tables>(t: &T, ip: &Ip, proto: PortProto, dport: u16, new: bool) -> Decision {
    let slot = limit::rule_for(t, ip.family, &ip.src, proto, dport);
    if slot & PORT_SLOT_MASK == 0 {
        return Decision::reason(if slot == 0 {
            Reason::DefaultDrop
        } else {
            Reason::SourceNotAllowed
        });
    }
    let keep = if new { SLOT_LIMITED } else { 0 };
    Decision::rule(slot & (PORT_SLOT_MASK | keep))
}

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// ICMPv6 types the link needs: multicast listener query/report/done (130–132), router
/// solicitation/advertisement, neighbour solicitation/advertisement, redirect (133–137), MLDv2
/// report (143).
#[inline(always)]
pub const fn is_icmpv6_link_essential(ty: u8) -> bool {
    matches!(ty, 130..=137 | 143)
}

#[inline(always)]
fn icmp_policy<T: Tables>(
    t: &T,
    cfg: &Config,
    ip: &Ip,
    ty: u8,
    id: u16,
    quoted: Option<crate::packet::Quoted>,
) -> Decision {
    let v6 = ip.family == Family::V6;
    if v6 && is_icmpv6_link_essential(ty) {
        return Decision::reason(Reason::Ndp);
    }
    let (echo_req, echo_rep) = if v6 {
        (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    } else {
        (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    };
    if ty == echo_req {
        return Decision::reason(if cfg.has(Config::ICMP_ECHO) {
            Reason::IcmpEcho
        } else {
            Reason::DefaultDrop
        });
    }
    if !cfg.has(Config::ESTABLISHED) {
        return Decision::reason(Reason::DefaultDrop);
    }
    if ty == echo_rep {
        return if reply_seen(t, &ingress_key(ip, 0, id)) {
            Decision::reason(Reason::Established)
        } else {
            Decision::reason(Reason::DefaultDrop)
        };
    }
    let Some(q) = quoted else {
        return Decision::reason(Reason::DefaultDrop);
    };
    // RELATED: the error quotes a packet this host sent; find its flow in any table.
    let key = FlowKey {
        remote: q.dst,
        local: q.src,
        remote_port: q.dport,
        local_port: q.sport,
        proto: q.proto,
        family: family_byte(ip.family),
        _pad: [0; 2],
    };
    let known = |table| {
        t.flow(table, &key)
            .is_some_and(|s| s.alive(key.proto, t.now(), cfg))
    };
    let icmp_inner = q.proto == IPPROTO_ICMP || q.proto == IPPROTO_ICMPV6;
    if known(FlowTable::Out) || (!icmp_inner && (known(FlowTable::In) || known(FlowTable::Embryo)))
    {
        Decision::reason(Reason::Related)
    } else {
        Decision::reason(Reason::IcmpUnrelated)
    }
}
