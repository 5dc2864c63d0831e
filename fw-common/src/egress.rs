//! What the TC egress program records about this host's own outgoing packets, so replies can
//! come back in (ESTABLISHED). It never drops: outgoing traffic is not filtered.

use crate::{
    Tables,
    decide::{ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, family_byte},
    flow::{FlowKey, FlowState, FlowTable, REFRESH_NS, state, tcp_next},
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

/// Record what a leaving frame means for the flow tables. Only packets that open, answer or
/// close something cost a map operation; plain TCP data and ACKs cost none.
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
            ..
        } => {
            let key = egress_key(&ip, sport, dport);
            if flags & (SYN | ACK | RST | FIN) == SYN {
                let st = fresh(now, state::SYN_SENT);
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
                }
            } else if flags & (FIN | RST) != 0 {
                for table in [FlowTable::Out, FlowTable::In] {
                    if let Some(mut st) = t.flow(table, &key) {
                        st.state = tcp_next(st.state, flags);
                        st.last_seen = now;
                        t.flow_write(table, &key, &st, false);
                        break;
                    }
                }
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
