//! The one decision. The XDP program calls it with map-backed [`Tables`]; userspace calls it
//! with tables built from the same policy (or read from the pinned maps) — same bytes in, same
//! verdict and counter slot out.
//!
//! Cheapest first: flags-only checks need no lookup; a port lookup is one array read; the LPM
//! trie is consulted only for ports that admit some sources only; a flow lookup (one hash
//! lookup on the common path) only for packets that are not a new connection.

use crate::{
    Reason,
    flow::{
        FlowKey, FlowState, FlowTable, REFRESH_NS, SOURCE_QUOTA, Segment, Step, hint_slot,
        hint_time, state, tcp_ingress,
    },
    maps::{Config, PORT_HAS_SOURCES, PORT_SLOT_MASK, PortProto},
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

    /// Read-modify-write an entry in place (one lookup): `f` gets the entry, the result is
    /// `f`'s, or `None` when there is no entry. The default lends a copy and forgets what `f`
    /// changed, which is right for read-only tables (`fw explain`).
    #[inline(always)]
    fn flow_with<R>(
        &self,
        table: FlowTable,
        key: &FlowKey,
        f: impl FnOnce(&mut FlowState) -> R,
    ) -> Option<R> {
        let mut st = self.flow(table, key)?;
        Some(f(&mut st))
    }

    /// Remove an entry; whether it was there (another CPU may have removed it first).
    #[inline(always)]
    fn flow_take(&self, table: FlowTable, key: &FlowKey) -> bool {
        self.flow_remove(table, key);
        true
    }

    /// How many `In` entries the source of [`source_key`] holds (see [`SOURCE_QUOTA`]).
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
}

/// An Embryo entry of `key` may live until `now + ttl_ns`: extend its hint slot to cover it.
#[inline(always)]
pub(crate) fn hint_embryo<T: Tables>(t: &T, key: &FlowKey, now: u64, ttl_ns: u64) {
    let slot = hint_slot(key);
    let until = hint_time(now.wrapping_add(ttl_ns)).wrapping_add(1);
    if t.embryo_hint(slot) < until {
        t.embryo_hint_set(slot, until);
    }
}

/// The quota key of a flow's remote end: an IPv4 address, or an IPv6 /64 (what one host
/// usually has); the last byte tells the families apart.
#[inline(always)]
pub fn source_key(key: &FlowKey) -> [u8; 16] {
    let mut s = [0u8; 16];
    let n = if key.family == 4 { 4 } else { 8 };
    let mut i = 0;
    while i < n {
        s[i] = key.remote[i];
        i += 1;
    }
    s[15] = key.family;
    s
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

#[inline(always)]
pub fn decide_parsed<T: Tables>(parsed: &Result<Parsed, Reason>, t: &T) -> Decision {
    let cfg = t.config();
    if cfg.has(Config::PASS_ALL) {
        return Decision::reason(Reason::Flushed);
    }
    let ip = match parsed {
        Err(r) => return Decision::reason(*r),
        Ok(Parsed::NonIp { .. }) => return Decision::reason(Reason::NonIp),
        Ok(Parsed::Ip(ip)) => ip,
    };
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
            FlagClass::Syn | FlagClass::Invalid => port_policy(t, ip, PortProto::Tcp, dport),
            FlagClass::Other => {
                if stateful {
                    let key = ingress_key(ip, sport, dport);
                    let seg = Segment {
                        flags,
                        seq,
                        ack,
                        len,
                    };
                    if tcp_established(t, &key, &seg, dport) {
                        return Decision::reason(Reason::Established);
                    }
                    if cfg.has(Config::NEW_REQUIRES_SYN) {
                        return Decision::reason(Reason::TcpNotSyn);
                    }
                }
                port_policy(t, ip, PortProto::Tcp, dport)
            }
        },
        L4::Udp { sport, dport } => {
            if cfg.has(Config::DHCP_CLIENT) && is_dhcp_reply(ip.family, sport, dport) {
                return Decision::reason(Reason::DhcpClient);
            }
            let d = port_policy(t, ip, PortProto::Udp, dport);
            if d.pass || !stateful {
                return d;
            }
            if reply_seen(t, &ingress_key(ip, sport, dport)) {
                return Decision::reason(Reason::Established);
            }
            d
        }
        L4::Icmp { ty, id, quoted, .. } => icmp_policy(t, &cfg, ip, ty, id, quoted),
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

/// What a packet found in a table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A live entry, now updated.
    Hit,
    /// A live entry whose connection this packet ended.
    Ended,
    /// An entry past its timeout.
    Expired,
}

/// Remove an entry that ended or expired; an `In` entry gives its source's quota back.
#[inline(always)]
pub(crate) fn forget<T: Tables>(t: &T, table: FlowTable, key: &FlowKey) {
    if t.flow_take(table, key) && table == FlowTable::In {
        let src = source_key(key);
        let n = t.source_count(&src);
        if n > 0 {
            t.source_count_set(&src, n - 1);
        }
    }
}

/// Apply `step` to a live entry and refresh it: `last_seen` moves when the state changed or
/// once per [`REFRESH_NS`]. The clock is read only on a hit: a miss (a scan) costs the lookup
/// alone.
#[inline(always)]
fn advance<T: Tables>(
    t: &T,
    st: &mut FlowState,
    proto: u8,
    step: impl FnOnce(&mut FlowState) -> Step,
) -> Found {
    let now = t.now();
    if !st.alive(proto, now, &t.config()) {
        return Found::Expired;
    }
    match step(st) {
        Step::Remove => return Found::Ended,
        Step::Moved => st.last_seen = now,
        Step::Keep => {
            if now.wrapping_sub(st.last_seen) > REFRESH_NS {
                st.last_seen = now;
            }
        }
    }
    Found::Hit
}

/// A live entry in `table`, moved on by this packet (`step`); one that expired or whose
/// connection the packet ended is removed. True when the packet belongs to a tracked flow.
#[inline(always)]
fn track<T: Tables>(
    t: &T,
    table: FlowTable,
    key: &FlowKey,
    step: impl FnOnce(&mut FlowState) -> Step,
) -> bool {
    match t.flow_with(table, key, |st| advance(t, st, key.proto, step)) {
        None => false,
        Some(Found::Hit) => true,
        Some(Found::Ended) => {
            forget(t, table, key);
            true
        }
        Some(Found::Expired) => {
            forget(t, table, key);
            false
        }
    }
}

/// Non-SYN TCP: part of a tracked connection? Inbound connections to an allowed port are
/// looked up first in the inbound tables, everything else in the outbound table first, so the
/// common case costs one hash lookup.
#[inline(always)]
fn tcp_established<T: Tables>(t: &T, key: &FlowKey, seg: &Segment, dport: u16) -> bool {
    // Each lookup is its own call site with its own map, written out: the verifier inlines a
    // map lookup only where one map reaches the call (a loop over the tables would make it a
    // helper call), and distinct closures keep LLVM from outlining the shared code into a
    // subprogram with a stack frame of its own (fw_xdp has no room for one).
    let inbound_first = t.port(PortProto::Tcp, dport) != 0;
    if inbound_first {
        if track(t, FlowTable::In, key, |st| tcp_ingress(st, seg))
            || track(t, FlowTable::Out, key, |st| tcp_ingress(st, seg))
        {
            return true;
        }
    } else if track(t, FlowTable::Out, key, |st| tcp_ingress(st, seg))
        || track(t, FlowTable::In, key, |st| tcp_ingress(st, seg))
    {
        return true;
    }
    // Embryos (and connections over their source's quota) exist only for ports the policy
    // admits SYNs to, so other ports skip the lookup; so does a flow whose hint slot no live
    // embryo has (an ACK flood: one array read instead of a hash lookup).
    inbound_first && t.embryo_hint(hint_slot(key)) >= hint_time(t.now()) && embryo(t, key, seg)
}

/// What the Embryo table says about a segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// Not ours: no entry, a wrong acknowledgment number, or an expired entry.
    No,
    /// The client completed the handshake: this is its `In` entry.
    Complete(FlowState),
    /// A connection kept here (over quota), or a handshake the client refused or aborted.
    Found(Found),
}

/// The client's handshake ACK promotes the embryo if it acknowledges our SYN+ACK exactly. A
/// client that did not ask for our SYN+ACK answers it with a bare RST, or aborts with a RST+ACK
/// that acknowledges it: let those through so the host drops the half-open connection at once
/// (and forget the embryo).
#[inline(always)]
fn embryo<T: Tables>(t: &T, key: &FlowKey, seg: &Segment) -> bool {
    let handshake_ack = seg.flags & (SYN | ACK) == ACK;
    let refusal = seg.flags & (SYN | ACK | RST) == RST;
    if !(handshake_ack || refusal) {
        return false;
    }
    let h = t.flow_with(FlowTable::Embryo, key, |e| {
        if e.flags & FlowState::OVERFLOW != 0 {
            return Handshake::Found(advance(t, e, key.proto, |st| tcp_ingress(st, seg)));
        }
        let now = t.now();
        if !e.alive(key.proto, now, &t.config()) {
            return Handshake::No;
        }
        if refusal {
            return Handshake::Found(Found::Ended);
        }
        if e.expect_ack != seg.ack {
            return Handshake::No;
        }
        if seg.flags & RST != 0 {
            return Handshake::Found(Found::Ended);
        }
        // The exact acknowledgment authenticates the segment: its sequence number is the
        // client's, the next this host expects.
        let mut st = FlowState {
            last_seen: now,
            expect_ack: seg.seq,
            state: state::ESTABLISHED,
            flags: (e.flags & FlowState::SEEDED) | FlowState::SEQ,
            _pad: [0; 2],
        };
        // Data or a FIN in the handshake ACK move it on like any segment in order.
        let _ = tcp_ingress(&mut st, seg);
        if t.source_count(&source_key(key)) >= SOURCE_QUOTA {
            st.flags |= FlowState::OVERFLOW;
            *e = st;
            return Handshake::Found(Found::Hit);
        }
        Handshake::Complete(st)
    });
    match h {
        None | Some(Handshake::No) => false,
        Some(Handshake::Found(Found::Hit)) => {
            // An established connection kept here lives as long as it is used (and a policy
            // may lengthen its timeout later): its hint slot never expires.
            t.embryo_hint_set(hint_slot(key), u32::MAX);
            true
        }
        Some(Handshake::Found(Found::Ended)) => {
            forget(t, FlowTable::Embryo, key);
            true
        }
        Some(Handshake::Found(Found::Expired)) => {
            forget(t, FlowTable::Embryo, key);
            false
        }
        Some(Handshake::Complete(st)) => {
            let src = source_key(key);
            t.flow_write(FlowTable::In, key, &st, true);
            t.source_count_set(&src, t.source_count(&src) + 1);
            forget(t, FlowTable::Embryo, key);
            true
        }
    }
}

/// UDP or ICMP echo reply to something this host sent.
#[inline(always)]
fn reply_seen<T: Tables>(t: &T, key: &FlowKey) -> bool {
    track(t, FlowTable::Out, key, |st| {
        if st.state == state::REPLIED {
            Step::Keep
        } else {
            st.state = state::REPLIED;
            Step::Moved
        }
    })
}

#[inline(always)]
fn is_dhcp_reply(family: Family, sport: u16, dport: u16) -> bool {
    match family {
        Family::V4 => sport == 67 && dport == 68,
        Family::V6 => sport == 547 && dport == 546,
    }
}

#[inline(always)]
fn port_policy<T: Tables>(t: &T, ip: &Ip, proto: PortProto, dport: u16) -> Decision {
    let v = t.port(proto, dport);
    let open = v & PORT_SLOT_MASK;
    if open != 0 {
        return Decision::rule(open);
    }
    if v & PORT_HAS_SOURCES == 0 {
        return Decision::reason(Reason::DefaultDrop);
    }
    let slot = match ip.family {
        Family::V4 => t.source_v4(proto, dport, &ip.src_v4()),
        Family::V6 => t.source_v6(proto, dport, &ip.src),
    };
    if slot != 0 {
        Decision::rule(slot)
    } else {
        Decision::reason(Reason::SourceNotAllowed)
    }
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
