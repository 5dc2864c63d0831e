//! Abstract packets and what a chain of iptables-style rules decides for each kind of them.
//!
//! The packets are chosen so that every distinction the rules can make shows up: each port and
//! source boundary the rules mention, every TCP flag combination, each conntrack state a packet
//! of that kind can have, ICMP types, other protocols. Sources are not sampled: for each packet
//! kind (a *skeleton*) the chain is walked over sets of sources, and the result is a
//! *painting*: the whole address space cut into pieces, each with the verdict and the rule that
//! gave it. fw's side is judged elsewhere ([`crate::judge`]) by fw's own `decide()`.
//!
//! Cost: the skeletons are the port classes (rules sharing a port), times the flag and state
//! classes; each skeleton looks only at the rules without port conditions and those of its
//! port (an interval sweep finds them), and skeletons that reach the same rules share one
//! painting. Ten rules or 100,000 rules, the work grows with the rules a packet kind reaches,
//! not with their square ([`Walk::work`] counts it; a test holds it to that).

use std::net::IpAddr;

use fw_common::{
    Family, Fragment, Ip, L4, Quoted,
    decide::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    tcp::{self, FlagClass, classify},
};

use crate::{
    addrset::{addr, example_addr, ip_bytes, value},
    iptables::rule::{Spec, ct, proto_name},
};

mod walk;

pub(crate) use walk::{Seg, Walk};

/// Conntrack's view of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ct {
    New,
    Established,
    Related,
    Invalid,
    /// Conntrack says INVALID (invalid TCP flags), but the packet belongs to a connection fw
    /// tracks.
    InvalidTracked,
    /// Neighbour discovery and MLD: conntrack leaves them untracked.
    Untracked,
}

impl Ct {
    fn bit(self) -> u8 {
        match self {
            Ct::New => ct::NEW,
            Ct::Established => ct::ESTABLISHED,
            Ct::Related => ct::RELATED,
            Ct::Invalid | Ct::InvalidTracked => ct::INVALID,
            Ct::Untracked => ct::UNTRACKED,
        }
    }
}

/// A packet arriving at the host: the facts `decide()` reads (fw-common's own [`Ip`]), the
/// conntrack state, and the destination port iptables' INPUT chain sees when the nat table
/// redirected it (fw sees the packet before NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pkt {
    pub ip: Ip,
    pub ct: Ct,
    pub nat_dport: Option<u16>,
}

pub(crate) fn icmp_proto(f: Family) -> u8 {
    match f {
        Family::V4 => IPPROTO_ICMP,
        Family::V6 => IPPROTO_ICMPV6,
    }
}

pub(crate) fn echo_types(f: Family) -> (u8, u8) {
    match f {
        Family::V4 => (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        Family::V6 => (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
    }
}

/// ICMP types conntrack treats as errors about a connection (RELATED or INVALID).
pub(crate) fn is_ct_icmp_error(f: Family, ty: u8) -> bool {
    match f {
        Family::V4 => matches!(ty, 3 | 4 | 5 | 11 | 12),
        Family::V6 => matches!(ty, 1..=4),
    }
}

/// ICMP types fw's parser reads a quoted packet from.
fn is_fw_icmp_error(f: Family, ty: u8) -> bool {
    match f {
        Family::V4 => fw_common::packet::is_icmp_error(ty),
        Family::V6 => fw_common::packet::is_icmpv6_error(ty),
    }
}

/// ICMP types that open a conntrack "connection" (requests).
pub(crate) fn is_icmp_request(f: Family, ty: u8) -> bool {
    match f {
        Family::V4 => matches!(ty, 8 | 13 | 15 | 17),
        Family::V6 => matches!(ty, 128 | 139),
    }
}

fn icmp_name(f: Family, ty: u8) -> String {
    let n = match (f, ty) {
        (Family::V4, 0) | (Family::V6, 129) => "echo reply",
        (Family::V4, 8) | (Family::V6, 128) => "echo request (ping)",
        (Family::V4, 3) | (Family::V6, 1) => "destination-unreachable",
        (Family::V6, 2) => "packet-too-big",
        (Family::V4, 11) | (Family::V6, 3) => "time-exceeded",
        (Family::V4, 13) => "timestamp request",
        (Family::V6, 135) => "neighbour solicitation",
        _ => return format!("type {ty}"),
    };
    n.to_string()
}

/// `SYN+ACK`, or `no flags (NULL)`.
pub(crate) fn flag_letters(f: u8) -> String {
    let v: Vec<&str> = tcp::flag_names(f).collect();
    if v.is_empty() {
        "no flags (NULL)".into()
    } else {
        v.join("+")
    }
}

/// "a" or "an" before a word.
pub(crate) fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// The address examples use for this host (the destination of every modelled packet).
fn host_addr(f: Family) -> [u8; 16] {
    match f {
        Family::V4 => ip_bytes(f, 0xc000_0201),
        Family::V6 => ip_bytes(f, 0x2001_0db8_0000_0000_0000_0000_0000_0001),
    }
}

impl Pkt {
    /// A skeleton: the example source stands in until a piece of the source space is chosen.
    fn new(family: Family, proto: u8, l4: L4, ct: Ct) -> Self {
        Pkt {
            ip: Ip {
                family,
                proto,
                src: ip_bytes(family, value(example_addr(family))),
                dst: host_addr(family),
                frag: Fragment::No,
                l4,
            },
            ct,
            nat_dport: None,
        }
    }

    fn tcp(family: Family, sport: u16, dport: u16, flags: u8, ct: Ct) -> Self {
        let l4 = L4::Tcp {
            sport,
            dport,
            flags,
            seq: 0,
            ack: 0,
            len: 0,
        };
        Pkt::new(family, IPPROTO_TCP, l4, ct)
    }

    fn udp(family: Family, sport: u16, dport: u16, ct: Ct) -> Self {
        Pkt::new(family, IPPROTO_UDP, L4::Udp { sport, dport }, ct)
    }

    fn icmp(family: Family, ty: u8, code: u8, ct: Ct) -> Self {
        // An error quotes a packet this host sent; whether its flow is tracked is the state.
        let quoted = is_fw_icmp_error(family, ty).then(|| Quoted {
            proto: IPPROTO_TCP,
            src: host_addr(family),
            dst: ip_bytes(family, value(example_addr(family))),
            sport: 40000,
            dport: 443,
        });
        let l4 = L4::Icmp {
            ty,
            code,
            id: 0,
            quoted,
        };
        Pkt::new(family, icmp_proto(family), l4, ct)
    }

    pub(crate) fn family(&self) -> Family {
        self.ip.family
    }

    pub(crate) fn proto(&self) -> u8 {
        self.ip.proto
    }

    pub(crate) fn src(&self) -> IpAddr {
        let f = self.family();
        let mut v: u128 = 0;
        let n = if f == Family::V4 { 4 } else { 16 };
        for b in &self.ip.src[..n] {
            v = (v << 8) | *b as u128;
        }
        addr(f, v)
    }

    pub(crate) fn with_src(mut self, v: u128) -> Self {
        self.ip.src = ip_bytes(self.family(), v);
        self
    }

    /// Source and destination port as fw sees them (before NAT).
    pub(crate) fn ports(&self) -> Option<(u16, u16)> {
        match self.ip.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            _ => None,
        }
    }

    /// Source and destination port as iptables' INPUT chain sees them (after NAT).
    fn ipt_ports(&self) -> Option<(u16, u16)> {
        self.ports().map(|(s, d)| (s, self.nat_dport.unwrap_or(d)))
    }

    pub(crate) fn tcp_flags(&self) -> Option<u8> {
        match self.ip.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }

    pub(crate) fn icmp_type(&self) -> Option<(u8, u8)> {
        match self.ip.l4 {
            L4::Icmp { ty, code, .. } => Some((ty, code)),
            _ => None,
        }
    }

    /// In words, for error messages.
    pub(crate) fn describe(&self) -> String {
        let state = match self.ct {
            Ct::New => "new",
            Ct::Established => "ESTABLISHED",
            Ct::Related => "RELATED",
            Ct::Invalid => "conntrack-INVALID",
            Ct::InvalidTracked => "conntrack-INVALID (but fw-tracked)",
            Ct::Untracked => "untracked",
        };
        let a = article(state);
        let src = self.src();
        let sp = |sport: u16| {
            if sport == 40000 {
                String::new()
            } else {
                format!(" from source port {sport}")
            }
        };
        let nat = self
            .nat_dport
            .map(|p| format!(" (redirected to port {p})"))
            .unwrap_or_default();
        match self.ip.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                ..
            } => {
                let what = match (classify(flags), self.ct) {
                    (FlagClass::Syn, _) if flags == tcp::SYN => {
                        "a new TCP connection (SYN)".to_string()
                    }
                    (FlagClass::Syn, _) => {
                        format!("a new TCP connection ({})", flag_letters(flags))
                    }
                    (_, Ct::InvalidTracked) => {
                        format!("a TCP {} on a connection fw tracks", flag_letters(flags))
                    }
                    (_, Ct::New) => format!(
                        "a TCP {} that belongs to no connection",
                        flag_letters(flags)
                    ),
                    _ => format!("{a} {state} TCP {}", flag_letters(flags)),
                };
                format!("{what} to port {dport}{nat} from {src}{}", sp(sport))
            }
            L4::Udp { sport, dport } => {
                format!(
                    "{a} {state} UDP packet to port {dport}{nat} from {src}{}",
                    sp(sport)
                )
            }
            L4::Icmp { ty, code, .. } => {
                let c = if code == 0 {
                    String::new()
                } else {
                    format!(" (code {code})")
                };
                format!(
                    "{a} {state} ICMP {}{c} from {src}",
                    icmp_name(self.family(), ty)
                )
            }
            L4::None => format!("{a} {state} {} packet from {src}", proto_name(self.proto())),
        }
    }

    /// Packets fw lets through whatever the policy says, on purpose: DHCP replies (when
    /// `dhcp_client`, judged separately) and IPv6 neighbour discovery / MLD.
    pub(crate) fn not_compared(&self) -> bool {
        match (self.family(), self.ip.l4) {
            (
                Family::V4,
                L4::Udp {
                    sport: 67,
                    dport: 68,
                },
            ) => true,
            (
                Family::V6,
                L4::Udp {
                    sport: 547,
                    dport: 546,
                },
            ) => true,
            // fw always passes neighbour discovery; only the redirect, which conntrack calls
            // INVALID, is compared (and noted where rules drop it).
            (Family::V6, L4::Icmp { ty, .. }) => {
                fw_common::decide::is_icmpv6_link_essential(ty)
                    && !(ty == 137 && self.ct == Ct::Invalid)
            }
            _ => false,
        }
    }

    /// When fw and iptables disagree on this packet (fw accepts it: `fw_accepts`), whether that
    /// is harmless, and in which words.
    pub(crate) fn harmless(&self, fw_accepts: bool) -> Option<&'static str> {
        let f = self.family();
        if fw_accepts {
            return match (self.ip.l4, self.ct) {
                (L4::Tcp { flags, .. }, Ct::New)
                    if classify(flags) == FlagClass::Syn && flags & tcp::URG != 0 =>
                {
                    Some(
                        "a SYN with URG set (conntrack and fw take it for a connection attempt; no common TCP stack sends it)",
                    )
                }
                (L4::Tcp { .. }, Ct::InvalidTracked) => Some(
                    "TCP packets with invalid flag combinations on connections it tracks (conntrack calls them INVALID; strict_tcp_flags = true drops them)",
                ),
                (L4::Icmp { ty: 137, .. }, Ct::Invalid) if f == Family::V6 => Some(
                    "ICMPv6 redirects (conntrack calls them INVALID; fw always passes neighbour discovery, which redirects are part of)",
                ),
                (L4::Tcp { flags, .. }, Ct::Invalid) if classify(flags) == FlagClass::Other => {
                    Some(
                        "TCP RST, FIN or SYN+ACK that belongs to no connection (conntrack calls them INVALID; the host's TCP stack ignores them; new_requires_syn = true drops them)",
                    )
                }
                _ => None,
            };
        }
        match (self.ip.l4, self.ct) {
            (L4::Tcp { flags, .. }, Ct::Invalid) if classify(flags) == FlagClass::Other => Some(
                "TCP RST, FIN or SYN+ACK that belongs to no connection (conntrack calls them INVALID, not NEW)",
            ),
            (L4::Tcp { .. }, Ct::Invalid | Ct::InvalidTracked) => Some(
                "TCP packets with flag combinations no real stack sends (SYN+FIN, FIN alone, ...)",
            ),
            (L4::Icmp { .. }, Ct::Invalid) => Some(
                "ICMP errors and echo replies that belong to no connection of this host (conntrack INVALID)",
            ),
            (L4::Icmp { ty, .. }, _)
                if !is_fw_icmp_error(f, ty) && ty != echo_types(f).0 && ty != echo_types(f).1 =>
            {
                Some(
                    "ICMP types other than echo and errors (timestamp, address mask, router discovery, redirect, source quench)",
                )
            }
            (L4::None, Ct::Established | Ct::Related) => Some(
                "replies of protocols other than TCP, UDP and ICMP (fw tracks connections of those three only)",
            ),
            _ => None,
        }
    }
}

fn in_ranges(v: u16, r: &[(u16, u16)]) -> bool {
    r.iter().any(|(lo, hi)| *lo <= v && v <= *hi)
}

/// Whether a rule's port conditions can hold for these ports (protocol aside).
pub(crate) fn ports_can_match(s: &Spec, sport: u16, dport: u16) -> bool {
    s.dports.iter().all(|(neg, r)| in_ranges(dport, r) != *neg)
        && s.sports.iter().all(|(neg, r)| in_ranges(sport, r) != *neg)
}

/// Does the rule match the packet, sources aside?
pub(crate) fn matches_except_src(s: &Spec, p: &Pkt) -> bool {
    if let Some((neg, proto)) = s.proto
        && (p.proto() == proto) == neg
    {
        return false;
    }
    if let Some((neg, name)) = &s.in_iface {
        // fw never sees loopback; other interfaces are resolved before this.
        let is_lo = name == "lo" || name == "lo+";
        if is_lo != *neg {
            return false;
        }
    }
    if s.fragment == Some(false) {
        // Conntrack reassembles fragments before the filter table sees them.
        return false;
    }
    if let Some((sport, dport)) = p.ipt_ports() {
        if !ports_can_match(s, sport, dport) {
            return false;
        }
    } else if !s.dports.is_empty() || !s.sports.is_empty() {
        return false;
    }
    for (neg, mask, comp) in &s.tcp_flags {
        match p.tcp_flags() {
            Some(flags) if ((flags & mask) == *comp) != *neg => {}
            _ => return false,
        }
    }
    if let Some((neg, ty, code)) = s.icmp {
        match p.icmp_type() {
            Some((t, c)) if (t == ty && code.is_none_or(|x| x == c)) != neg => {}
            _ => return false,
        }
    }
    let bits = p.ct.bit() | if p.nat_dport.is_some() { ct::NAT } else { 0 };
    for (neg, want) in &s.states {
        if (bits & want != 0) == *neg {
            return false;
        }
    }
    true
}
