//! Connection state: flow keys, what a flow entry holds, timeouts and TCP transitions. The
//! kernel (XDP ingress, TC egress) and the userspace mirror both use these.
//!
//! Three tables, so a flood cannot evict the flows that matter (see the README):
//! - [`FlowTable::Out`]: flows this host opened (recorded by the egress program from its own
//!   SYNs, UDP datagrams and echo requests). Nobody outside can add to it.
//! - [`FlowTable::Embryo`]: inbound TCP handshakes in progress (recorded when the host answers
//!   a SYN with SYN+ACK). Spoofed SYN floods land here, and only here. It also keeps the
//!   connections of a source beyond its quota in `In` ([`FlowState::OVERFLOW`]).
//! - [`FlowTable::In`]: inbound TCP connections whose client completed the handshake with the
//!   right acknowledgment number (promoted from Embryo), at most [`SOURCE_QUOTA`] per source.
//!   A blind attacker cannot get in, and one source cannot fill it.
//!
//! TCP state ends only by what a blind attacker cannot forge: this host's own FIN or RST
//! (egress), or a peer's RST or FIN whose sequence number is exactly the one this host expects
//! next ([`tcp_ingress`]). A connection whose close completed leaves its table at once, so
//! connect/close churn does not fill it.

/// Which flow table.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowTable {
    Out = 0,
    In = 1,
    Embryo = 2,
}

/// A flow as seen from this host: the remote end, the local end, the protocol. For ICMP echo,
/// `local_port` is the echo identifier and `remote_port` is 0. IPv4 addresses fill the first 4
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    pub remote: [u8; 16],
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// TCP/UDP/ICMP state of a flow entry.
pub mod state {
    /// TCP: this host sent a SYN; no answer yet.
    pub const SYN_SENT: u8 = 1;
    /// TCP: this host answered a SYN (Embryo table).
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    /// TCP: a FIN was seen; the connection is closing (covers FIN_WAIT/CLOSE_WAIT/TIME_WAIT).
    pub const CLOSING: u8 = 4;
    /// TCP: a RST was seen. (Entries in this state are no longer kept: an accepted RST removes
    /// the entry. Kept for tables written by older versions and for `fw conns`.)
    pub const CLOSED: u8 = 5;
    /// UDP / ICMP: sent, no reply yet.
    pub const UNREPLIED: u8 = 6;
    /// UDP / ICMP: a reply came back.
    pub const REPLIED: u8 = 7;
}

/// A flow entry (value of the flow maps).
///
/// `expect_ack` is the one sequence number a TCP entry keeps, by state:
/// - SYN_RECV (Embryo): this host's ISN + 1, which the client's handshake ACK must acknowledge;
/// - SYN_SENT: this host's ISN + 1, which the peer's SYN+ACK or RST+ACK must acknowledge
///   (when [`FlowState::SEQ`] is set);
/// - ESTABLISHED / CLOSING: `rcv_nxt`, the sequence number this host expects next from the
///   peer (when [`FlowState::SEQ`] is set): the highest acknowledgment number this host sent,
///   advanced by the peer's segments that arrive exactly in order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the last packet that refreshed the entry.
    pub last_seen: u64,
    /// See above.
    pub expect_ack: u32,
    pub state: u8,
    /// [`FlowState::SEEDED`], [`FlowState::SEQ`], …
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowState>() == 16);
const _: () = assert!(FLOW_HINT_SLOTS == 1 << (32 - 13) && HINT_SLOTS == 1 << (32 - 16));

impl FlowState {
    /// Seeded by `fw up` from sockets that existed before the filter.
    pub const SEEDED: u8 = 1;
    /// `expect_ack` is known (learnt from this host's own segments or a verified handshake).
    /// Seeded entries start without it and learn it from this host's next segment.
    pub const SEQ: u8 = 2;
    /// The peer's FIN was seen, in order.
    pub const FIN_IN: u8 = 4;
    /// This host sent its FIN.
    pub const FIN_OUT: u8 = 8;
    /// An established inbound connection kept in the Embryo table because its source had
    /// [`SOURCE_QUOTA`] connections in `In` already.
    pub const OVERFLOW: u8 = 16;
}

/// Established inbound connections one source (an IPv4 address, an IPv6 /64) may hold in the
/// `In` table; further ones are kept in the Embryo table, where only its own churn and
/// handshakes in progress compete for room.
pub const SOURCE_QUOTA: u32 = 64;

/// Slots of the Embryo table's "maybe present" hint ([`hint_slot`]).
pub const HINT_SLOTS: u32 = 65_536;

/// A multiplicative hash of a flow's remote address and both ports; the hint slots are its top
/// bits.
#[inline(always)]
fn slot_hash(key: &FlowKey) -> u32 {
    let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let h = w(&key.remote, 0)
        ^ w(&key.remote, 12).rotate_left(7)
        ^ (((key.remote_port as u32) << 16) | key.local_port as u32).rotate_left(13);
    h.wrapping_mul(0x9e37_79b1)
}

/// The Embryo hint slot of a flow ([`HINT_SLOTS`]).
#[inline(always)]
pub fn hint_slot(key: &FlowKey) -> u32 {
    slot_hash(key) >> 16
}

/// Slots of the trusted flows' hint ([`flow_hint_slot`]): 4 MiB of 64-bit counts (the BPF
/// target's only atomic width), so that a host with 100,000 connections leaves five slots in
/// six empty and an ACK flood at it costs no hash lookup five times in six.
pub const FLOW_HINT_SLOTS: u32 = 1 << 19;

/// The trusted flows' hint slot of a flow ([`FLOW_HINT_SLOTS`]): how many `In` and `Out`
/// entries may hash there ([`crate::decide::Tables::flow_hint`]).
#[inline(always)]
pub fn flow_hint_slot(key: &FlowKey) -> u32 {
    slot_hash(key) >> 13
}

/// Set in a trusted-flow hint slot by userspace when it writes a flow entry (seeding): it
/// cannot add atomically beside the programs, so it marks the slot for good instead (no run
/// of decrements reaches zero from it).
pub const FLOW_HINT_STICKY: u64 = 1 << 63;

/// Hint values are in units of 2^30 ns (about a second) of CLOCK_MONOTONIC_COARSE.
#[inline(always)]
pub const fn hint_time(ns: u64) -> u32 {
    (ns >> 30) as u32
}

use crate::{
    maps::Config,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    tcp::{ACK, FIN, RST, SYN},
};

const SEC: u64 = 1_000_000_000;

/// How long an entry lives without traffic, in the spirit of Linux conntrack's defaults; the
/// established-TCP, UDP and ICMP timeouts come from the policy ([`Config`]).
#[inline(always)]
pub const fn timeout_ns(proto: u8, st: u8, cfg: &Config) -> u64 {
    let secs = match (proto, st) {
        (IPPROTO_TCP, state::ESTABLISHED) => cfg.tcp_established_timeout as u64,
        (IPPROTO_TCP, state::SYN_SENT) => 120,
        (IPPROTO_TCP, state::SYN_RECV) => 60,
        (IPPROTO_TCP, state::CLOSING) => 120,
        (IPPROTO_TCP, state::CLOSED) => 10,
        (IPPROTO_TCP, _) => 120,
        (IPPROTO_UDP, state::REPLIED) => cfg.udp_stream_timeout as u64,
        (IPPROTO_UDP, _) => cfg.udp_timeout as u64,
        _ => cfg.icmp_timeout as u64,
    };
    secs * SEC
}

/// Entries are refreshed at most this often (a map write per packet would cost every packet).
pub const REFRESH_NS: u64 = SEC;

impl FlowState {
    #[inline(always)]
    pub fn alive(&self, proto: u8, now: u64, cfg: &Config) -> bool {
        now.wrapping_sub(self.last_seen) <= timeout_ns(proto, self.state, cfg)
    }
}

/// What a packet does to the entry it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The entry stays in its state (its sequence number may have moved on).
    Keep,
    /// The entry stays, in another state or with other flags: stamp it with the time.
    Moved,
    /// The connection is over: remove the entry.
    Remove,
}

/// `Keep` becomes `Moved` when the state or flags are no longer `(state, flags)`. Compares two
/// bytes in registers rather than copies of the entry (the BPF stack is small).
#[inline(always)]
fn settle(st: &FlowState, state: u8, flags: u8, step: Step) -> Step {
    if step == Step::Keep && (st.state != state || st.flags != flags) {
        Step::Moved
    } else {
        step
    }
}

/// A TCP segment as the state machine needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Payload bytes.
    pub len: u16,
}

/// An arriving segment of a tracked TCP connection (Out or In entry, or an OVERFLOW one).
///
/// A RST ends the connection only with exactly the sequence number this host expects (RFC 5961
/// §3: the stack itself resets only then and answers any other in-window RST with a challenge
/// ACK, whose answer then carries the exact number); in SYN_SENT, a RST+ACK that acknowledges
/// our SYN. A FIN counts only in order. Anything else leaves the state as it is, so a blind
/// sweep of RSTs or FINs with guessed sequence numbers changes nothing.
#[inline(always)]
pub fn tcp_ingress(st: &mut FlowState, s: &Segment) -> Step {
    let (state, flags) = (st.state, st.flags);
    let step = ingress_step(st, s);
    settle(st, state, flags, step)
}

#[inline(always)]
fn ingress_step(st: &mut FlowState, s: &Segment) -> Step {
    let known = st.flags & FlowState::SEQ != 0;
    if st.state == state::SYN_SENT {
        let acks_syn = s.flags & ACK != 0 && (!known || s.ack == st.expect_ack);
        if s.flags & RST != 0 {
            return if acks_syn && known {
                Step::Remove
            } else {
                Step::Keep
            };
        }
        if s.flags & (SYN | ACK) == SYN | ACK && acks_syn {
            st.state = state::ESTABLISHED;
            // Unverified (seeded: our ISN unknown), the peer's ISN is not learnt from it.
            if known {
                st.expect_ack = s.seq.wrapping_add(1);
            } else {
                st.flags &= !FlowState::SEQ;
            }
        }
        return Step::Keep;
    }
    if !known || st.state == state::SYN_RECV {
        return Step::Keep;
    }
    let next = st.expect_ack;
    if s.flags & RST != 0 {
        // After the peer's FIN, Linux also takes a RST at the FIN's own sequence number.
        let at_fin = st.flags & FlowState::FIN_IN != 0 && s.seq == next.wrapping_sub(1);
        return if s.seq == next || at_fin {
            Step::Remove
        } else {
            Step::Keep
        };
    }
    if s.seq != next {
        return Step::Keep;
    }
    let fin = s.flags & FIN != 0;
    if s.len == 0 && !fin {
        // In order, nothing new: the peer's last ACK once both FINs are through.
        let both = FlowState::FIN_IN | FlowState::FIN_OUT;
        return if st.flags & both == both {
            Step::Remove
        } else {
            Step::Keep
        };
    }
    st.expect_ack = next.wrapping_add(s.len as u32).wrapping_add(fin as u32);
    if fin {
        st.flags |= FlowState::FIN_IN;
        st.state = state::CLOSING;
    }
    Step::Keep
}

/// A leaving segment of a tracked TCP connection: this host's own, so trusted. Its ACK number
/// is the sequence number it expects next; its FIN or RST ends the connection.
#[inline(always)]
pub fn tcp_egress(st: &mut FlowState, s: &Segment) -> Step {
    let (state, flags) = (st.state, st.flags);
    let step = egress_step(st, s);
    settle(st, state, flags, step)
}

#[inline(always)]
fn egress_step(st: &mut FlowState, s: &Segment) -> Step {
    if s.flags & RST != 0 {
        return Step::Remove;
    }
    let both = FlowState::FIN_IN | FlowState::FIN_OUT;
    let closed_before = st.flags & both == both;
    let peer_fin_end = st.expect_ack;
    if s.flags & ACK != 0 {
        // Our acknowledgment number is our rcv_nxt when the segment was made: the truth, also
        // when it is behind what we advanced from the peer's segments (a byte we refused).
        if st.state == state::SYN_SENT {
            // We acknowledge the peer's SYN+ACK: established, whatever we saw of it.
            st.state = state::ESTABLISHED;
        }
        st.expect_ack = s.ack;
        st.flags |= FlowState::SEQ;
    }
    if s.flags & FIN != 0 {
        st.flags |= FlowState::FIN_OUT;
        st.state = state::CLOSING;
        return Step::Keep;
    }
    // Our last ACK, acknowledging the peer's FIN after we had sent ours: we are in TIME_WAIT
    // and the peer is done.
    if closed_before && s.len == 0 && s.flags & ACK != 0 && s.ack == peer_fin_end {
        return Step::Remove;
    }
    Step::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::PSH;

    fn est(next: u32) -> FlowState {
        FlowState {
            expect_ack: next,
            state: state::ESTABLISHED,
            flags: FlowState::SEQ,
            ..Default::default()
        }
    }

    fn seg(flags: u8, seq: u32, ack: u32, len: u16) -> Segment {
        Segment {
            flags,
            seq,
            ack,
            len,
        }
    }

    #[test]
    fn only_the_exact_rst_ends_a_connection() {
        for flags in [RST, RST | ACK] {
            for seq in [99, 101, 100 + 65_535, 100 ^ (1 << 31), 0] {
                let mut st = est(100);
                assert_eq!(tcp_ingress(&mut st, &seg(flags, seq, 7, 0)), Step::Keep);
                assert_eq!(st, est(100), "RST at {seq} changed the entry");
            }
            let mut st = est(100);
            assert_eq!(tcp_ingress(&mut st, &seg(flags, 100, 0, 0)), Step::Remove);
        }
    }

    #[test]
    fn data_in_order_moves_the_expected_number_across_the_wrap() {
        let mut st = est(u32::MAX - 9);
        assert_eq!(
            tcp_ingress(&mut st, &seg(PSH | ACK, u32::MAX - 9, 0, 20)),
            Step::Keep
        );
        assert_eq!(st.expect_ack, 10);
        // Out of order: nothing moves.
        assert_eq!(tcp_ingress(&mut st, &seg(PSH | ACK, 30, 0, 20)), Step::Keep);
        assert_eq!(st.expect_ack, 10);
        assert_eq!(tcp_ingress(&mut st, &seg(RST, 10, 0, 0)), Step::Remove);
    }

    #[test]
    fn a_fin_counts_in_order_only_and_the_last_ack_ends_the_connection() {
        let mut st = est(100);
        assert_eq!(tcp_ingress(&mut st, &seg(FIN | ACK, 101, 0, 0)), Step::Keep);
        assert_eq!(st.state, state::ESTABLISHED);
        assert_eq!(
            tcp_ingress(&mut st, &seg(FIN | ACK, 100, 0, 0)),
            Step::Moved
        );
        assert_eq!((st.state, st.expect_ack), (state::CLOSING, 101));
        // After their FIN, Linux also takes a RST at the FIN's own number.
        let mut rst_at_fin = st;
        assert_eq!(
            tcp_ingress(&mut rst_at_fin, &seg(RST, 100, 0, 0)),
            Step::Remove
        );
        assert_eq!(
            tcp_egress(&mut st, &seg(FIN | ACK, 5000, 101, 0)),
            Step::Moved
        );
        assert_eq!(tcp_ingress(&mut st, &seg(ACK, 100, 5001, 0)), Step::Keep);
        assert_eq!(tcp_ingress(&mut st, &seg(ACK, 101, 5001, 0)), Step::Remove);
    }

    #[test]
    fn our_last_ack_after_both_fins_ends_the_connection() {
        let mut st = est(100);
        assert_eq!(
            tcp_egress(&mut st, &seg(FIN | ACK, 5000, 100, 0)),
            Step::Moved
        );
        assert_eq!(
            tcp_ingress(&mut st, &seg(FIN | ACK, 100, 5001, 0)),
            Step::Moved
        );
        assert_eq!(tcp_egress(&mut st, &seg(ACK, 5001, 101, 0)), Step::Remove);
    }

    #[test]
    fn syn_sent_ends_only_on_a_rst_that_acknowledges_our_syn() {
        let syn_sent = FlowState {
            expect_ack: 1001,
            state: state::SYN_SENT,
            flags: FlowState::SEQ,
            ..Default::default()
        };
        for (flags, ack) in [(RST, 1001), (RST | ACK, 1000), (RST | ACK, 1002)] {
            let mut st = syn_sent;
            assert_eq!(tcp_ingress(&mut st, &seg(flags, 0, ack, 0)), Step::Keep);
            assert_eq!(st, syn_sent);
        }
        let mut st = syn_sent;
        assert_eq!(
            tcp_ingress(&mut st, &seg(RST | ACK, 0, 1001, 0)),
            Step::Remove
        );
        let mut st = syn_sent;
        assert_eq!(
            tcp_ingress(&mut st, &seg(SYN | ACK, 7000, 1001, 0)),
            Step::Moved
        );
        assert_eq!((st.state, st.expect_ack), (state::ESTABLISHED, 7001));
    }

    #[test]
    fn a_seeded_connection_learns_its_number_from_our_next_segment() {
        let mut st = FlowState {
            state: state::ESTABLISHED,
            flags: FlowState::SEEDED,
            ..Default::default()
        };
        assert_eq!(tcp_ingress(&mut st, &seg(RST, 0, 0, 0)), Step::Keep);
        assert_eq!(tcp_ingress(&mut st, &seg(FIN | ACK, 0, 0, 0)), Step::Keep);
        assert_eq!(st.state, state::ESTABLISHED);
        assert_eq!(tcp_egress(&mut st, &seg(ACK, 1, 4242, 0)), Step::Moved);
        assert_eq!(st.expect_ack, 4242);
        assert_eq!(tcp_ingress(&mut st, &seg(RST, 4242, 0, 0)), Step::Remove);
    }
}
