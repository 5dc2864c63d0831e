//! Connection state: flow keys, what a flow entry holds, timeouts and TCP transitions. The
//! kernel (XDP ingress, TC egress) and the userspace mirror both use these.
//!
//! Three tables, so a flood cannot evict the flows that matter (see the README):
//! - [`FlowTable::Out`]: flows this host opened (recorded by the egress program from its own
//!   SYNs, UDP datagrams and echo requests). Nobody outside can add to it.
//! - [`FlowTable::Embryo`]: inbound TCP handshakes in progress (recorded when the host answers
//!   a SYN with SYN+ACK). Spoofed SYN floods land here, and only here.
//! - [`FlowTable::In`]: inbound TCP connections whose client completed the handshake with the
//!   right acknowledgment number (promoted from Embryo). A blind attacker cannot get in.

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
    /// TCP: a RST was seen.
    pub const CLOSED: u8 = 5;
    /// UDP / ICMP: sent, no reply yet.
    pub const UNREPLIED: u8 = 6;
    /// UDP / ICMP: a reply came back.
    pub const REPLIED: u8 = 7;
}

/// A flow entry (value of the flow maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the last packet that refreshed the entry.
    pub last_seen: u64,
    /// Embryo: the acknowledgment number the client's handshake ACK must carry.
    pub expect_ack: u32,
    pub state: u8,
    /// [`FlowState::SEEDED`] …
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowState>() == 16);

impl FlowState {
    /// Seeded by `fw up` from sockets that existed before the filter.
    pub const SEEDED: u8 = 1;
}

use crate::{
    maps::Config,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
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

/// The TCP state after a packet with `flags` (either direction) on an entry in `cur`.
#[inline(always)]
pub const fn tcp_next(cur: u8, flags: u8) -> u8 {
    use crate::tcp::{ACK, FIN, RST, SYN};
    if flags & RST != 0 {
        state::CLOSED
    } else if flags & FIN != 0 {
        state::CLOSING
    } else if cur == state::SYN_SENT && flags & (SYN | ACK) == SYN | ACK {
        state::ESTABLISHED
    } else {
        cur
    }
}
