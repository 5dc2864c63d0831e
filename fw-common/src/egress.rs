//! What the TC egress program records about this host's own outgoing packets, so replies can
//! come back in (ESTABLISHED). It never drops: outgoing traffic is not filtered.

use crate::{
    Tables,
    decide::{ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, family_byte},
    flow::{
        FlowKey, FlowState, FlowTable, REFRESH_NS, Segment, Step, state, tcp_egress, timeout_ns,
    },
    maps::{Config, PortProto},
    packet::{Family, Fragment, Ip, L4, PacketView, Parsed, parse},
    tcp::{ACK, FIN, RST, SYN},
};

/// The flow key of a leaving packet: its destination is the remote end.
#[inline(always)]
pub fn egress_key(ip: &Ip, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        remote: ip.dst,
        local: ip.src,
        remote_port: dport,
        local_port: sport,
        proto: ip.proto,
        family: family_byte(ip.family),
        _pad: [0; 2],
    }
}

/// Record what a leaving frame means for the flow tables. A TCP segment of a tracked
/// connection costs a lookup: its acknowledgment number is the sequence number this host
/// expects next, which is what a peer's RST or FIN must carry to end the connection.
#[inline(always)]
pub fn record<P: PacketView + ?Sized, T: Tables>(pkt: &P, t: &T) {
    if !t.config().has(Config::ESTABLISHED) {
        return;
    }
    let Ok(Parsed::Ip(ip)) = parse(pkt) else {
        return;
    };
    if ip.frag == Fragment::Later {
        return;
    }
    let now = t.now();
    match ip.l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
            len,
        } => {
            let key = egress_key(&ip, sport, dport);
            if flags & (SYN | ACK | RST | FIN) == SYN {
                // Our SYN: its answer must acknowledge exactly seq + 1.
                let mut st = fresh(now, state::SYN_SENT);
                st.expect_ack = seq.wrapping_add(1);
                st.flags = FlowState::SEQ;
                t.flow_write(
                    FlowTable::Out,
                    &key,
                    &st,
                    t.flow(FlowTable::Out, &key).is_none(),
                );
            } else if flags & (SYN | ACK | RST) == SYN | ACK {
                // This host accepts an inbound connection: wait for the client's ACK of it.
                if t.flow(FlowTable::Out, &key).is_none() {
                    let mut st = fresh(now, state::SYN_RECV);
                    st.expect_ack = seq.wrapping_add(1);
                    let new = t.flow(FlowTable::Embryo, &key).is_none();
                    t.flow_write(FlowTable::Embryo, &key, &st, new);
                    let ttl = timeout_ns(key.proto, state::SYN_RECV, &t.config());
                    crate::track::hint_embryo(t, &key, now, ttl);
                }
            } else {
                let seg = Segment {
                    flags,
                    seq,
                    ack,
                    len,
                };
                tcp_segment(t, &key, &seg, sport, now);
            }
        }
        L4::Udp { sport, dport } => {
            // Answers of a UDP service this host offers are not flows it opened: recording
            // them would let anyone who sends queries fill the table.
            if t.port(PortProto::Udp, sport) != 0 {
                return;
            }
            refresh_out(t, &egress_key(&ip, sport, dport), now);
        }
        L4::Icmp { ty, id, .. } => {
            let req = match ip.family {
                Family::V4 => ICMP_ECHO_REQUEST,
                Family::V6 => ICMPV6_ECHO_REQUEST,
            };
            if ty == req {
                refresh_out(t, &egress_key(&ip, id, 0), now);
            }
        }
        L4::None => {}
    }
}

#[inline(always)]
fn fresh(now: u64, s: u8) -> FlowState {
    FlowState {
        last_seen: now,
        expect_ack: 0,
        state: s,
        flags: 0,
        _pad: [0; 2],
    }
}

/// One of this host's segments on a tracked connection (looked up in the table its local port
/// suggests first): learn the sequence number it acknowledges, and end the connection on its
/// RST or after its last ACK. Each lookup is written out with its own map (see
/// `decide::tcp_established`: the verifier inlines lookups only at single-map call sites).
#[inline(always)]
fn tcp_segment<T: Tables>(t: &T, key: &FlowKey, seg: &Segment, sport: u16, now: u64) {
    if t.port(PortProto::Tcp, sport) != 0 {
        // Connections over their source's quota wait in the Embryo table.
        let _ = egress_step(t, FlowTable::In, key, seg, now)
            || egress_step(t, FlowTable::Out, key, seg, now)
            || egress_step(t, FlowTable::Embryo, key, seg, now);
    } else {
        let _ = egress_step(t, FlowTable::Out, key, seg, now)
            || egress_step(t, FlowTable::In, key, seg, now);
    }
}

/// Our segment on `table`'s entry for `key`, if there is one (in the Embryo table only an
/// OVERFLOW entry, an established connection). True when it was found there.
#[inline(always)]
fn egress_step<T: Tables>(t: &T, table: FlowTable, key: &FlowKey, seg: &Segment, now: u64) -> bool {
    let r = t.flow_with(table, key, |st| {
        if table == FlowTable::Embryo && st.flags & FlowState::OVERFLOW == 0 {
            return None;
        }
        let step = tcp_egress(st, seg);
        if step == Step::Moved {
            st.last_seen = now;
        }
        Some(step)
    });
    match r {
        None => false,
        Some(None) => true,
        Some(Some(Step::Keep | Step::Moved)) => true,
        Some(Some(Step::Remove)) => {
            crate::track::forget(t, table, key);
            true
        }
    }
}

/// Create an Out entry, or refresh it if it is more than [`REFRESH_NS`] old.
#[inline(always)]
fn refresh_out<T: Tables>(t: &T, key: &FlowKey, now: u64) {
    match t.flow(FlowTable::Out, key) {
        Some(mut st) => {
            if now.wrapping_sub(st.last_seen) > REFRESH_NS {
                st.last_seen = now;
                t.flow_write(FlowTable::Out, key, &st, false);
            }
        }
        None => t.flow_write(FlowTable::Out, key, &fresh(now, state::UNREPLIED), true),
    }
}
