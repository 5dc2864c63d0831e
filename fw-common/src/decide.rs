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
    flow::{FlowKey, FlowState, FlowTable, Segment},
    limit::{self, BanKey, Bucket, BucketKey, LimitParams},
    maps::{Config, PORT_SLOT_MASK, PortProto, SLOT_LIMITED},
    packet::{Family, Fragment, IPPROTO_ICMP, IPPROTO_ICMPV6, Ip, L4, PacketView, Parsed, parse},
    syncookie::{self, CookieCfg, CookieRate, CookieTuple, Listener, ListenerKey},
    tcp::{FlagClass, classify},
    track::{Tracked, reply_seen, tcp_established},
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

    /// Read-modify-write an entry in place (one lookup): `f` gets the entry, the result is
    /// `f`'s, or `None` when there is no entry. No default: a table that keeps state must
    /// write `f`'s changes back, a read-only one (`fw explain`) lends a copy
    /// ([`lend_copy`]) — each implementation says which it is.
    fn flow_with<R>(
        &self,
        table: FlowTable,
        key: &FlowKey,
        f: impl FnOnce(&mut FlowState) -> R,
    ) -> Option<R>;

    /// Remove an entry; whether it was there (another CPU may have removed it first).
    #[inline(always)]
    fn flow_take(&self, table: FlowTable, key: &FlowKey) -> bool {
        self.flow_remove(table, key);
        true
    }

    /// How many `In` entries the source of [`crate::track::source_key`] holds (see
    /// [`crate::flow::SOURCE_QUOTA`]).
    #[inline(always)]
    fn source_count(&self, _src: &[u8; 16]) -> u32 {
        0
    }

    /// Set that count. Read-only tables ignore it.
    #[inline(always)]
    fn source_count_set(&self, _src: &[u8; 16], _n: u32) {}

    /// Until when (in [`crate::flow::hint_time`] units) an Embryo entry of a flow whose
    /// [`crate::flow::hint_slot`] is `slot` may live: before that, the Embryo table must be
    /// looked up; after it, no entry of that slot can be alive and the lookup is skipped. The
    /// default never skips.
    #[inline(always)]
    fn embryo_hint(&self, _slot: u32) -> u32 {
        u32::MAX
    }

    /// Set a slot's hint. Read-only tables ignore it.
    #[inline(always)]
    fn embryo_hint_set(&self, _slot: u32, _until: u32) {}

    /// Zero only if no `In` or `Out` entry of a flow whose [`crate::flow::flow_hint_slot`] is
    /// `slot` exists: then both lookups are skipped. Tables that keep it count in their own
    /// [`Tables::flow_write`] (up before an entry is created) and [`Tables::flow_take`] (down
    /// after one is removed), so it is never below the truth; entries an LRU evicts leave it
    /// above (a lookup that could have been skipped). The default never skips.
    #[inline(always)]
    fn flow_hint(&self, _slot: u32) -> u64 {
        u64::MAX
    }

    // SYN cookies ([`crate::syncookie`]). The defaults know no listener in cookie mode, so
    // every SYN goes on to the kernel, as without cookies.

    /// What fw knows of this listener's cookie mode.
    #[inline(always)]
    fn listener(&self, _key: &ListenerKey) -> Option<Listener> {
        None
    }

    /// Create or overwrite a listener's entry. Read-only tables ignore it.
    #[inline(always)]
    fn listener_write(&self, _key: &ListenerKey, _l: &Listener) {}

    /// The host's facts for the answers.
    #[inline(always)]
    fn cookie_cfg(&self) -> CookieCfg {
        CookieCfg::default()
    }

    /// Run `f` on this CPU's SYN count (`syn_cookies = "auto"`); `None` without one.
    #[inline(always)]
    fn cookie_rate_with<R>(&self, _f: impl FnOnce(&mut CookieRate) -> R) -> Option<R> {
        None
    }

    /// Whether `c.ack - 1` is a valid SYN cookie for the handshake `c` describes, by the
    /// kernel's own check and secret (`bpf_tcp_raw_check_syncookie_*`). Userspace cannot know:
    /// the default says no.
    #[inline(always)]
    fn syncookie_valid(&self, _c: &CookieTuple) -> bool {
        false
    }

    /// Count an event of the cookie path (an index of [`crate::maps::MAP_COOKIE_STATS`]).
    #[inline(always)]
    fn cookie_event(&self, _stat: u32) {}
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

/// [`Tables::flow_with`] for read-only tables: `f` sees a copy of the entry, and what it changes
/// is forgotten.
#[inline(always)]
pub fn lend_copy<T: Tables + ?Sized, R>(
    t: &T,
    table: FlowTable,
    key: &FlowKey,
    f: impl FnOnce(&mut FlowState) -> R,
) -> Option<R> {
    let mut st = t.flow(table, key)?;
    Some(f(&mut st))
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

    /// The decision a counter slot stands for: a rule's passes, a reason's says.
    #[inline(always)]
    pub fn from_slot(slot: u32) -> Self {
        Decision {
            pass: !(16..crate::maps::RULE_SLOT_BASE).contains(&slot),
            slot,
        }
    }

    /// The reason, when the slot is not a rule's.
    pub fn why(&self) -> Option<Reason> {
        Reason::from_slot(self.slot)
    }

    /// fw answers the packet itself: a SYN cookie (XDP_TX).
    #[inline(always)]
    pub fn answers(&self) -> bool {
        self.slot == Reason::SynCookie.slot()
    }

    /// A connection this packet starts can complete: it passes, or fw answers it for the host.
    #[inline(always)]
    pub fn admits(&self) -> bool {
        self.pass || self.answers()
    }
}

/// Parse `pkt` and decide.
#[inline(always)]
pub fn decide<P: PacketView + ?Sized, T: Tables>(pkt: &P, t: &T) -> Decision {
    decide_parsed(&parse(pkt), t)
}

/// The whole decision: [`decide_base`], then the SYN cookie step for the packets that need it
/// ([`syncookie::needs_step`]). The cookie step comes last: a SYN from a blocked, banned or
/// rate-limited source is dropped, never answered. The XDP program runs the flood step and the
/// cookie step as tail calls of their own (the steps together do not fit one 512-byte stack).
#[inline(always)]
pub fn decide_parsed<T: Tables>(parsed: &Result<Parsed, Reason>, t: &T) -> Decision {
    let d = decide_base(parsed, t);
    if let Ok(Parsed::Ip(ip)) = parsed {
        let cfg = t.config();
        if syncookie::needs_step(&cfg, ip, &d) {
            return syncookie::step(t, &cfg, ip, d);
        }
    }
    d
}

/// The decision without SYN cookies: [`decide_early`] (flush, malformed, non-IP),
/// [`decide_core`] (flags, ports, connection state), then [`crate::flood::decide_flood`] (block
/// lists, bans, rate limits, the default action), which the XDP program runs only when it can
/// change something ([`crate::flood::needs_flood`]).
#[inline(always)]
pub fn decide_base<T: Tables>(parsed: &Result<Parsed, Reason>, t: &T) -> Decision {
    let cfg = t.config();
    if let Some(d) = decide_early(parsed, &cfg) {
        return d;
    }
    let d = decide_core(parsed, t, &cfg);
    match parsed {
        Ok(Parsed::Ip(ip)) => {
            let cookie_syn = syncookie::takes_syn(&cfg, ip);
            crate::flood::decide_flood(t, &cfg, &crate::flood::Source::of(ip), d, cookie_syn)
        }
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
            seq,
            ack,
            len,
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
                    let seg = Segment {
                        flags,
                        seq,
                        ack,
                        len,
                    };
                    match tcp_established(t, &key, &seg, dport) {
                        Tracked::No => {}
                        // The flood step gives a client that completed a handshake its
                        // trusted rate-limit bucket, then counts it as established.
                        Tracked::Handshake => return crate::flood::handshake(dport),
                        Tracked::Yes => return Decision::reason(Reason::Established),
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
