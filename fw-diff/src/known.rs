//! The documented, intentional differences between fw and iptables. Each is a kind of packet,
//! fixed by the traits the generator gave it when it built it (never by the result), plus the
//! policy options it depends on and a direction. A difference that matches none of them fails
//! the test. The README section "Differential test against iptables" explains each one.

use fw_policy::Policy;

use super::probes::{Outcome, Probe, traits as tr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Known {
    TcpWindow,
    Handshake,
    NoConnDropped,
    NoConnPassed,
    StrictFlags,
    BadChecksum,
    MalformedL4,
    TinyFragment,
    DupFirstFragment,
    LongExtChain,
    Jumbogram,
    Icmpv6Redirect,
    DhcpReply,
    OtherProtoReply,
    NftAh,
}

impl Known {
    pub const ALL: [Known; 15] = [
        Known::TcpWindow,
        Known::Handshake,
        Known::NoConnDropped,
        Known::NoConnPassed,
        Known::StrictFlags,
        Known::BadChecksum,
        Known::MalformedL4,
        Known::TinyFragment,
        Known::DupFirstFragment,
        Known::LongExtChain,
        Known::Jumbogram,
        Known::Icmpv6Redirect,
        Known::DhcpReply,
        Known::OtherProtoReply,
        Known::NftAh,
    ];

    /// Short name (the report's key, and the README's).
    pub fn id(self) -> &'static str {
        match self {
            Known::TcpWindow => "tcp-window",
            Known::Handshake => "inbound-handshake",
            Known::NoConnDropped => "fin-rst-without-connection-dropped",
            Known::NoConnPassed => "fin-rst-without-connection-passed",
            Known::StrictFlags => "strict-tcp-flags",
            Known::BadChecksum => "bad-checksum",
            Known::MalformedL4 => "malformed-transport-header",
            Known::TinyFragment => "tiny-first-fragment",
            Known::DupFirstFragment => "duplicate-first-fragment",
            Known::LongExtChain => "long-ipv6-header-chain",
            Known::Jumbogram => "ipv6-jumbogram",
            Known::Icmpv6Redirect => "icmpv6-redirect",
            Known::DhcpReply => "dhcp-reply",
            Known::OtherProtoReply => "other-protocol-reply",
            Known::NftAh => "ipv6-ah-iptables-nft",
        }
    }

    /// Who lets the packets through: true = fw passes what iptables drops.
    pub fn fw_passes(self) -> bool {
        match self {
            Known::TcpWindow
            | Known::NoConnPassed
            | Known::BadChecksum
            | Known::Icmpv6Redirect
            | Known::DupFirstFragment
            | Known::DhcpReply
            | Known::NftAh => true,
            Known::Handshake
            | Known::NoConnDropped
            | Known::StrictFlags
            | Known::MalformedL4
            | Known::TinyFragment
            | Known::LongExtChain
            | Known::Jumbogram
            | Known::OtherProtoReply => false,
        }
    }

    /// What and why, in one paragraph.
    pub fn why(self) -> &'static str {
        match self {
            Known::TcpWindow => {
                "A segment of a tracked TCP connection whose sequence or acknowledgment number \
                 is outside the window, or a handshake step the connection is not at (a SYN+ACK \
                 acknowledging the wrong number, a SYN+ACK from the client): conntrack marks it \
                 INVALID, so it is not ESTABLISHED and the rules drop it. fw tracks connections, \
                 not windows: the segment belongs to a connection, it passes, and the host's TCP \
                 stack discards it (answering with an ACK or a RST at most)."
            }
            Known::Handshake => {
                "A client's packet during the handshake other than the ACK that completes it or \
                 a bare RST refusing it: a RST+ACK or SYN+ACK, or an ACK that acknowledges the \
                 wrong number. fw admits an inbound connection only with the ACK that \
                 acknowledges the host's SYN+ACK (a blind attacker cannot guess it); before \
                 that, with new_requires_syn, other non-SYN packets are dropped (a bare RST \
                 passes and ends the handshake). conntrack accepts a RST in the window as \
                 ESTABLISHED, and under rules without an INVALID drop the port's ACCEPT takes \
                 the others. Effect: the host keeps the half-open connection until its SYN+ACK \
                 retries run out, as for a lost packet."
            }
            Known::NoConnDropped => {
                "FIN, RST or SYN+ACK that belongs to no connection, to an open port, under the \
                 tutorial's rules (`! --syn -m state --state NEW -j DROP`, no INVALID drop): \
                 conntrack calls these INVALID, not NEW, so that rule misses them and the port's \
                 ACCEPT takes them. fw (new_requires_syn) drops every non-SYN packet that \
                 belongs to no connection, as the tutorial meant."
            }
            Known::NoConnPassed => {
                "FIN, RST or SYN+ACK that belongs to no connection, to an open port, under rules \
                 that accept new connections by state (`--state NEW`) or drop INVALID, without \
                 the `! --syn` rule (imported with new_requires_syn = false): conntrack calls a \
                 plain ACK without connection NEW (it picks up connections mid-stream), but FIN, \
                 RST and SYN+ACK INVALID, so iptables drops them. fw has one setting for all \
                 non-SYN TCP without a connection, and with new_requires_syn = false the port \
                 rule passes them; the host's stack answers them with a RST or ignores them."
            }
            Known::StrictFlags => {
                "A TCP flag combination no stack sends (SYN+FIN, FIN without ACK, ...) to an \
                 open port, where the iptables rules drop only NULL and XMAS (the tutorial's): \
                 conntrack calls it INVALID, no rule drops INVALID, and the port's ACCEPT takes \
                 it. fw with strict_tcp_flags = true drops it. (With strict_tcp_flags = false fw \
                 judges it by the port, exactly like those rules.)"
            }
            Known::BadChecksum => {
                "A wrong TCP, UDP or ICMP checksum (or a zero UDP checksum over IPv6): conntrack \
                 marks the packet INVALID and `--ctstate INVALID -j DROP` drops it. fw does not \
                 verify checksums (XDP runs before the kernel does), so it judges the packet by \
                 its ports; the host's transport layer then discards it. No socket receives it \
                 either way."
            }
            Known::MalformedL4 => {
                "A TCP data offset under 5 or beyond the segment, a UDP length under 8 or \
                 beyond the datagram, or (iptables-nft) a TCP header cut short by the IP length, \
                 under rules without an INVALID drop: iptables passes it to the host's stack \
                 (the port match still reads the ports), which discards it. fw drops it as a bad \
                 or truncated header."
            }
            Known::TinyFragment => {
                "An IPv4 first fragment too short to hold the whole TCP header (8 or 16 bytes \
                 of it): fw drops it (RFC 1858: it could hide the flags or ports from the \
                 filter), so the datagram is never completed; iptables judges the reassembled \
                 datagram and lets it in when its port is open. No stack sends such fragments. \
                 (For IPv6 the kernel drops such first fragments itself, RFC 8200, so both \
                 agree.)"
            }
            Known::DupFirstFragment => {
                "Two first fragments with the same range, the earlier to a closed port, the \
                 later to an open one, then the rest: the kernel keeps the first fragment it \
                 receives for a range. fw drops the closed-port one, so the fw host assembles \
                 the datagram from the one fw let through and delivers it, to the open port, \
                 as the policy allows; the iptables host assembles it from the closed-port one, \
                 which its rules drop. Either way only a datagram the policy allows gets in."
            }
            Known::LongExtChain => {
                "An IPv6 packet with more than 6 extension headers, or with its transport header \
                 beyond byte 512: fw drops it (README: the chain is walked with a bound); \
                 ip6tables follows the whole chain and judges the packet by its port."
            }
            Known::Jumbogram => {
                "An IPv6 packet whose payload length is 0 behind a hop-by-hop header without a \
                 jumbo payload option: fw drops it (README: jumbograms are dropped); the kernel \
                 takes the length from the frame, and ip6tables judges it by its port."
            }
            Known::Icmpv6Redirect => {
                "An ICMPv6 redirect, under ip6tables rules that drop INVALID before they accept \
                 neighbour discovery: conntrack leaves neighbour discovery and MLD untracked, but \
                 calls redirects INVALID. fw passes every neighbour discovery type (130-137, \
                 143); the kernel itself ignores redirects that do not come from the on-link \
                 router. (`fw export iptables` accepts neighbour discovery before the INVALID \
                 drop, so its rules agree with fw.)"
            }
            Known::DhcpReply => {
                "A DHCP or DHCPv6 reply to the client port, with dhcp_client = true, where the \
                 iptables rules have no rule for it (imported rules): fw lets it in so the host \
                 keeps its lease. A DHCPv4 client reads from a packet socket, before iptables, \
                 so there the rules never stopped it; a DHCPv6 client behind these ip6tables \
                 rules would get no reply."
            }
            Known::NftAh => {
                "Only with `--iptables nft`: an IPv6 packet with an authentication header (AH) \
                 before its TCP or UDP header. nftables, and so iptables-nft, takes AH for the \
                 transport protocol, so `-p tcp --dport N` does not match and the packet falls \
                 to the DROP policy; legacy ip6tables and fw look through AH to the port. (The \
                 host's stack then drops it anyway unless it has an IPsec association for it.)"
            }
            Known::OtherProtoReply => {
                "A reply to (or an ICMP error about) a packet of another protocol than TCP, UDP \
                 and ICMP that the host sent (GRE, protocol 253): conntrack tracks every \
                 protocol and accepts the reply as ESTABLISHED or RELATED. fw tracks TCP, UDP and \
                 ICMP only and drops it (allow the protocol's traffic some other way)."
            }
        }
    }
}

/// The documented difference this probe's difference is, if any (`nft`: the iptables host
/// runs iptables-nft).
pub fn explain(p: &Probe, o: &Outcome, policy: &Policy, nft: bool) -> Option<Known> {
    let fw_passes = o.fw.passed() && !o.ipt.passed();
    let t = p.traits;
    let has = |b: u32| t & b != 0;
    let opt = &policy.options;
    let untracked = !has(tr::TRACKED);
    let candidates: [(Known, bool); 15] = [
        (Known::TcpWindow, has(tr::BAD_SEQ)),
        (Known::Handshake, has(tr::HANDSHAKE) && opt.new_requires_syn),
        (
            Known::NoConnDropped,
            has(tr::NO_CONN_CLOSE) && untracked && opt.new_requires_syn,
        ),
        (
            Known::NoConnPassed,
            has(tr::NO_CONN_CLOSE) && untracked && !opt.new_requires_syn,
        ),
        (
            Known::StrictFlags,
            has(tr::INVALID_FLAGS) && opt.strict_tcp_flags,
        ),
        (Known::BadChecksum, has(tr::BAD_L4_CSUM)),
        (Known::MalformedL4, has(tr::MALFORMED_L4)),
        (Known::TinyFragment, has(tr::TINY_FRAGMENT)),
        (Known::DupFirstFragment, has(tr::DUP_FIRST_FRAGMENT)),
        (Known::LongExtChain, has(tr::LONG_EXT_CHAIN)),
        (Known::Jumbogram, has(tr::JUMBOGRAM)),
        (Known::Icmpv6Redirect, has(tr::ICMPV6_REDIRECT)),
        (Known::DhcpReply, has(tr::DHCP_REPLY) && opt.dhcp_client),
        (Known::OtherProtoReply, has(tr::OTHER_PROTO_REPLY)),
        (Known::NftAh, has(tr::V6_AH) && nft),
    ];
    candidates
        .iter()
        .find(|(k, applies)| *applies && k.fw_passes() == fw_passes)
        .map(|(k, _)| *k)
}
