//! Probes: one IP datagram each (sent whole or in fragments), with the class it belongs to,
//! what is special about it (its traits, fixed when it is built, never from a result), and
//! what each host made of it.

use std::fmt;

/// The classes of the per-class table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Every combination of the six classic TCP flags, to open, closed and source-restricted
    /// ports.
    TcpFlags,
    /// New connections (SYN) to allowed and disallowed ports.
    TcpPorts,
    /// New connections to source-restricted ports, from sources inside and outside the CIDRs
    /// and at their edges.
    TcpSources,
    /// TCP that belongs to no connection: ACK, FIN, RST, SYN+ACK, data.
    Unrelated,
    Udp,
    /// ICMP and ICMPv6 types, including neighbour discovery and errors about nothing.
    Icmp,
    /// Protocols other than TCP, UDP and ICMP.
    OtherProto,
    Ipv4Options,
    Ipv6ExtHeaders,
    Fragments,
    /// Truncated and malformed headers, bad checksums, impossible addresses.
    Malformed,
    /// Replies to TCP connections the host opened (a real socket), and segments around them.
    ReplyTcp,
    ReplyUdp,
    /// Echo replies to the host's pings, and ICMP errors about its flows.
    ReplyIcmp,
    /// Replies to the host's packets of other protocols.
    ReplyOther,
    /// Connections to the host's listening sockets: handshakes, data, closes.
    InboundTcp,
}

impl Class {
    pub const ALL: [Class; 16] = [
        Class::TcpFlags,
        Class::TcpPorts,
        Class::TcpSources,
        Class::Unrelated,
        Class::Udp,
        Class::Icmp,
        Class::OtherProto,
        Class::Ipv4Options,
        Class::Ipv6ExtHeaders,
        Class::Fragments,
        Class::Malformed,
        Class::ReplyTcp,
        Class::ReplyUdp,
        Class::ReplyIcmp,
        Class::ReplyOther,
        Class::InboundTcp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::TcpFlags => "tcp-flags",
            Class::TcpPorts => "tcp-ports",
            Class::TcpSources => "tcp-sources",
            Class::Unrelated => "tcp-unrelated",
            Class::Udp => "udp",
            Class::Icmp => "icmp",
            Class::OtherProto => "other-proto",
            Class::Ipv4Options => "ipv4-options",
            Class::Ipv6ExtHeaders => "ipv6-ext-headers",
            Class::Fragments => "fragments",
            Class::Malformed => "malformed",
            Class::ReplyTcp => "reply-tcp",
            Class::ReplyUdp => "reply-udp",
            Class::ReplyIcmp => "reply-icmp",
            Class::ReplyOther => "reply-other",
            Class::InboundTcp => "inbound-tcp",
        }
    }

    /// Whether the class needs connection state made by the host's own sockets (its probes
    /// differ per host in ports and sequence numbers).
    pub fn stateful(self) -> bool {
        matches!(
            self,
            Class::ReplyTcp
                | Class::ReplyUdp
                | Class::ReplyIcmp
                | Class::ReplyOther
                | Class::InboundTcp
        )
    }

    /// Share of `--packets` (percent).
    pub fn weight(self) -> usize {
        match self {
            Class::TcpFlags => 14,
            Class::TcpPorts => 7,
            Class::TcpSources => 6,
            Class::Unrelated => 7,
            Class::Udp => 6,
            Class::Icmp => 6,
            Class::OtherProto => 3,
            Class::Ipv4Options => 3,
            Class::Ipv6ExtHeaders => 4,
            Class::Fragments => 9,
            Class::Malformed => 10,
            Class::ReplyTcp => 11,
            Class::ReplyUdp => 3,
            Class::ReplyIcmp => 3,
            Class::ReplyOther => 1,
            Class::InboundTcp => 7,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is special about a probe, decided when it is built.
pub mod traits {
    /// A TCP flag combination no real stack sends (conntrack's `tcp_valid_flags`: NULL, XMAS,
    /// SYN+FIN, FIN without ACK, ...).
    pub const INVALID_FLAGS: u32 = 1 << 0;
    /// A valid TCP flag combination that cannot open a connection (FIN+ACK, RST, SYN+ACK), sent
    /// where no connection exists: conntrack calls it INVALID.
    pub const NO_CONN_CLOSE: u32 = 1 << 1;
    /// A TCP segment of a tracked connection whose sequence or acknowledgment number is not
    /// what the connection expects (outside the window, or a handshake step out of order).
    pub const BAD_SEQ: u32 = 1 << 2;
    /// The transport checksum is wrong (or an IPv6 UDP checksum of zero).
    pub const BAD_L4_CSUM: u32 = 1 << 3;
    /// A first fragment too short to hold the whole transport header (or the IPv6 header
    /// chain).
    pub const TINY_FRAGMENT: u32 = 1 << 4;
    /// More IPv6 extension headers than fw walks (6), or a transport header beyond 512 bytes.
    pub const LONG_EXT_CHAIN: u32 = 1 << 5;
    /// A DHCP / DHCPv6 reply to the host's client port.
    pub const DHCP_REPLY: u32 = 1 << 6;
    /// A reply (or an ICMP error about) a flow of a protocol other than TCP, UDP and ICMP.
    pub const OTHER_PROTO_REPLY: u32 = 1 << 7;
    /// A transport header whose length fields are impossible (TCP data offset beyond the
    /// segment, UDP length beyond the datagram or under 8).
    pub const MALFORMED_L4: u32 = 1 << 8;
    /// Belongs to a connection the host tracks.
    pub const TRACKED: u32 = 1 << 9;
    /// A SYN (without ACK) on an established connection.
    pub const SYN_ON_TRACKED: u32 = 1 << 10;
    /// An IPv6 payload length of 0 behind a hop-by-hop header (a jumbogram without the option).
    pub const JUMBOGRAM: u32 = 1 << 11;
    /// A client's packet during the handshake other than the ACK that completes it (RST,
    /// SYN+ACK, an ACK acknowledging something else).
    pub const HANDSHAKE: u32 = 1 << 12;
    /// An ICMPv6 redirect.
    pub const ICMPV6_REDIRECT: u32 = 1 << 13;
    /// Two first fragments with the same range, the earlier to a closed port.
    pub const DUP_FIRST_FRAGMENT: u32 = 1 << 14;
    /// An IPv6 authentication header (AH) before the transport header.
    pub const V6_AH: u32 = 1 << 15;

    pub fn names(t: u32) -> Vec<&'static str> {
        let all = [
            (INVALID_FLAGS, "invalid-flags"),
            (NO_CONN_CLOSE, "no-conn-close"),
            (BAD_SEQ, "bad-seq"),
            (BAD_L4_CSUM, "bad-l4-checksum"),
            (TINY_FRAGMENT, "tiny-fragment"),
            (LONG_EXT_CHAIN, "long-ext-chain"),
            (DHCP_REPLY, "dhcp-reply"),
            (OTHER_PROTO_REPLY, "other-proto-reply"),
            (MALFORMED_L4, "malformed-l4"),
            (TRACKED, "tracked"),
            (SYN_ON_TRACKED, "syn-on-tracked"),
            (JUMBOGRAM, "jumbogram"),
            (HANDSHAKE, "handshake"),
            (ICMPV6_REDIRECT, "icmpv6-redirect"),
            (DUP_FIRST_FRAGMENT, "duplicate-first-fragment"),
            (V6_AH, "ipv6-ah"),
        ];
        all.iter()
            .filter(|(b, _)| t & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// How a probe's frames are made.
#[derive(Clone, Debug)]
pub enum Body {
    /// The same bytes for both hosts.
    Frames(Vec<Vec<u8>>),
    /// Step `step` of stateful flow `flow`: built per host at send time (ports and sequence
    /// numbers come from that host's own sockets).
    Flow { flow: usize, step: usize },
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub class: Class,
    pub v6: bool,
    /// IPv4 identification / IPv6 flow label: what the observation points read back.
    pub key: u32,
    pub traits: u32,
    /// In words, for the list of differences.
    pub what: String,
    pub body: Body,
}

/// What one host made of a probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Frames that reached IP netfilter (prerouting, before defragmentation).
    pub pre: u16,
    /// fw host only: frames the XDP program passed (seen by a packet socket after XDP).
    pub xdp: u16,
    /// Datagrams that reached the host's INPUT hook after its filter (the verdict compared).
    pub delivered: u16,
}

impl Seen {
    pub fn passed(&self) -> bool {
        self.delivered > 0
    }
}

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub ipt: Seen,
    pub fw: Seen,
    /// Stateless probes: frames BPF_PROG_TEST_RUN passed (the same program, same bytes).
    pub testrun_pass: Option<u16>,
    /// Stateless probes: fw's reason for its verdict on the first frame it dropped (or the last
    /// frame), by the userspace `decide()`.
    pub fw_reason: Option<&'static str>,
    /// The frames sent (per host for stateful probes: the fw host's), for the report.
    pub frames: u16,
}

impl Outcome {
    pub fn differs(&self) -> bool {
        self.ipt.passed() != self.fw.passed()
    }
}
