//! Abstract packets, and what an iptables INPUT chain and an fw policy each decide for them.
//!
//! The packets are chosen so that every distinction the rules can make shows up: each port and
//! source boundary the rules mention (and the values just outside), every TCP flag combination,
//! each conntrack state a packet of that kind can have, ICMP types, other protocols.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fw_common::{
    decide::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST},
    tcp::{self, FlagClass, classify},
};

use super::{
    Family,
    rule::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Spec, Target, ct, proto_name},
};
use crate::policy::{Cidr, Policy, Proto};

/// Conntrack's view of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4 {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    Icmp { ty: u8, code: u8 },
    Other(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pkt {
    pub family: Family,
    pub src: IpAddr,
    pub l4: L4,
    pub ct: Ct,
}

fn icmp_proto(f: Family) -> u8 {
    match f {
        Family::V4 => IPPROTO_ICMP,
        Family::V6 => IPPROTO_ICMPV6,
    }
}

fn echo_types(f: Family) -> (u8, u8) {
    match f {
        Family::V4 => (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
        Family::V6 => (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
    }
}

fn is_icmp_error(f: Family, ty: u8) -> bool {
    match f {
        Family::V4 => matches!(ty, 3 | 4 | 5 | 11 | 12),
        Family::V6 => matches!(ty, 1..=4),
    }
}

/// ICMP types that open a conntrack "connection" (requests).
fn is_icmp_request(f: Family, ty: u8) -> bool {
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

pub(crate) fn flag_letters(f: u8) -> String {
    let names = [
        (tcp::SYN, "SYN"),
        (tcp::ACK, "ACK"),
        (tcp::FIN, "FIN"),
        (tcp::RST, "RST"),
        (tcp::PSH, "PSH"),
        (tcp::URG, "URG"),
        (tcp::ECE, "ECE"),
        (tcp::CWR, "CWR"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "no flags (NULL)".into()
    } else {
        v.join("+")
    }
}

impl Pkt {
    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::Icmp { .. } => icmp_proto(self.family),
            L4::Other(p) => p,
        }
    }

    fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
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
        let src = self.src;
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let what = match (classify(flags), self.ct) {
                    (FlagClass::Syn, _) => "a new TCP connection (SYN)".to_string(),
                    (_, Ct::InvalidTracked) => {
                        format!("a TCP {} on a connection fw tracks", flag_letters(flags))
                    }
                    (_, Ct::New) => format!(
                        "a TCP {} that belongs to no connection",
                        flag_letters(flags)
                    ),
                    _ => format!("a {state} TCP {}", flag_letters(flags)),
                };
                let sp = if sport == 40000 {
                    String::new()
                } else {
                    format!(" from source port {sport}")
                };
                format!("{what} to port {dport} from {src}{sp}")
            }
            L4::Udp { sport, dport } => {
                let sp = if sport == 40000 {
                    String::new()
                } else {
                    format!(" from source port {sport}")
                };
                format!("a {state} UDP packet to port {dport} from {src}{sp}")
            }
            L4::Icmp { ty, code } => {
                let c = if code == 0 {
                    String::new()
                } else {
                    format!(" (code {code})")
                };
                format!(
                    "a {state} ICMP {}{c} from {src}",
                    icmp_name(self.family, ty)
                )
            }
            L4::Other(p) => format!("a {state} {} packet from {src}", proto_name(p)),
        }
    }

    /// Packets fw lets through whatever the policy says, on purpose: DHCP replies (when
    /// `dhcp_client`, judged separately) and IPv6 neighbour discovery / MLD.
    pub(crate) fn not_compared(&self) -> bool {
        match (self.family, self.l4) {
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
            (Family::V6, L4::Icmp { ty, .. }) => fw_common::decide::is_icmpv6_link_essential(ty),
            _ => false,
        }
    }

    /// When fw and iptables disagree on this packet (fw accepts it: `fw_accepts`), whether that
    /// is harmless, and in which words.
    pub(crate) fn harmless(&self, fw_accepts: bool) -> Option<&'static str> {
        if fw_accepts {
            return match (self.l4, self.ct) {
                (L4::Tcp { .. }, Ct::InvalidTracked) => Some(
                    "TCP packets with invalid flag combinations on connections it tracks (conntrack calls them INVALID; strict_tcp_flags = true drops them)",
                ),
                _ => None,
            };
        }
        match (self.l4, self.ct) {
            (L4::Tcp { .. }, Ct::Invalid | Ct::InvalidTracked) => Some(
                "TCP packets with flag combinations no real stack sends (SYN+FIN, FIN alone, ...)",
            ),
            (L4::Icmp { .. }, Ct::Invalid) => Some(
                "ICMP errors and echo replies that belong to no connection of this host (conntrack INVALID)",
            ),
            (L4::Icmp { ty, .. }, _)
                if !is_icmp_error(self.family, ty)
                    && ty != echo_types(self.family).0
                    && ty != echo_types(self.family).1 =>
            {
                Some(
                    "ICMP types other than echo and errors (timestamp, address mask, router discovery)",
                )
            }
            (L4::Other(_), Ct::Established | Ct::Related) => Some(
                "replies of protocols other than TCP, UDP and ICMP (fw tracks connections of those three only)",
            ),
            _ => None,
        }
    }
}

/// Does the iptables rule match the packet?
pub(crate) fn matches(s: &Spec, p: &Pkt) -> bool {
    if let Some((neg, proto)) = s.proto
        && (p.proto() == proto) == neg
    {
        return false;
    }
    if let Some((neg, list)) = &s.src
        && list.iter().any(|c| c.contains(&p.src)) == *neg
    {
        return false;
    }
    if let Some((neg, name)) = &s.in_iface {
        // fw never sees loopback; other interfaces are refused before this.
        let is_lo = name == "lo" || name == "lo+";
        if is_lo != *neg {
            return false;
        }
    }
    if s.fragment == Some(false) {
        // Conntrack reassembles fragments before the filter table sees them.
        return false;
    }
    let in_ranges = |v: u16, r: &[(u16, u16)]| r.iter().any(|(lo, hi)| *lo <= v && v <= *hi);
    for (neg, r) in &s.dports {
        match p.ports() {
            Some((_, d)) if in_ranges(d, r) != *neg => {}
            _ => return false,
        }
    }
    for (neg, r) in &s.sports {
        match p.ports() {
            Some((sp, _)) if in_ranges(sp, r) != *neg => {}
            _ => return false,
        }
    }
    for (neg, mask, comp) in &s.tcp_flags {
        match p.l4 {
            L4::Tcp { flags, .. } if ((flags & mask) == *comp) != *neg => {}
            _ => return false,
        }
    }
    if let Some((neg, ty, code)) = s.icmp {
        match p.l4 {
            L4::Icmp { ty: t, code: c }
                if (t == ty && code.is_none_or(|x| x == c)) != neg
                    && p.proto() == icmp_proto(p.family) => {}
            _ => return false,
        }
    }
    for (neg, bits) in &s.states {
        if (p.ct.bit() & bits != 0) == *neg {
            return false;
        }
    }
    true
}

/// iptables' verdict: accept?, and the index of the deciding rule (`None`: the policy).
pub(crate) fn iptables_verdict(
    rules: &[&Spec],
    policy_accept: bool,
    p: &Pkt,
) -> (bool, Option<usize>) {
    for (i, s) in rules.iter().enumerate() {
        let Some(t) = &s.target else {
            continue;
        };
        if matches(s, p) {
            return (*t == Target::Accept, Some(i));
        }
    }
    (policy_accept, None)
}

/// Why fw decides as it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FwWhy {
    Scan,
    Strict,
    NotSyn,
    Established,
    Rule(usize),
    IcmpEcho,
    /// A port allowed only from other sources.
    SourceNotAllowed,
    Default,
    /// Not compared (DHCP, neighbour discovery).
    Fixed,
}

/// fw's verdict, following `fw_common::decide` with conntrack's view of the packet standing in
/// for fw's own connection tables.
pub(crate) fn fw_verdict(policy: &Policy, p: &Pkt) -> (bool, FwWhy) {
    let o = &policy.options;
    if p.not_compared() {
        return (true, FwWhy::Fixed);
    }
    let port = |proto: Proto, dport: u16| -> (bool, FwWhy) {
        let mut restricted = false;
        for (i, r) in policy.rules.iter().enumerate() {
            if r.proto != proto || !r.ports.contains(dport) {
                continue;
            }
            if r.from.is_empty() || r.from.iter().any(|c| c.contains(&p.src)) {
                return (true, FwWhy::Rule(i));
            }
            restricted = true;
        }
        (
            false,
            if restricted {
                FwWhy::SourceNotAllowed
            } else {
                FwWhy::Default
            },
        )
    };
    let tracked = matches!(p.ct, Ct::Established | Ct::InvalidTracked);
    match p.l4 {
        L4::Tcp { dport, flags, .. } => match classify(flags) {
            FlagClass::Null | FlagClass::Xmas => (false, FwWhy::Scan),
            FlagClass::Invalid if o.strict_tcp_flags => (false, FwWhy::Strict),
            FlagClass::Syn => port(Proto::Tcp, dport),
            _ => {
                if o.established {
                    if tracked {
                        return (true, FwWhy::Established);
                    }
                    if o.new_requires_syn {
                        return (false, FwWhy::NotSyn);
                    }
                }
                port(Proto::Tcp, dport)
            }
        },
        L4::Udp { dport, .. } => {
            let d = port(Proto::Udp, dport);
            if d.0 || !o.established || !tracked {
                return d;
            }
            (true, FwWhy::Established)
        }
        L4::Icmp { ty, .. } => {
            let (req, rep) = echo_types(p.family);
            if ty == req {
                return if o.icmp_echo {
                    (true, FwWhy::IcmpEcho)
                } else {
                    (false, FwWhy::Default)
                };
            }
            if !o.established {
                return (false, FwWhy::Default);
            }
            let ok = (ty == rep && p.ct == Ct::Established)
                || (is_icmp_error(p.family, ty) && p.ct == Ct::Related);
            if ok {
                (true, FwWhy::Established)
            } else {
                (false, FwWhy::Default)
            }
        }
        L4::Other(_) => (false, FwWhy::Default),
    }
}

/// Sample sources: a documentation address, and for every CIDR its first and last address and
/// the addresses just outside.
fn sources(family: Family, cidrs: &[Cidr]) -> Vec<IpAddr> {
    let mut out: BTreeSet<IpAddr> = BTreeSet::new();
    match family {
        Family::V4 => {
            out.insert(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23)));
        }
        Family::V6 => {
            out.insert(IpAddr::V6(Ipv6Addr::new(
                0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x23,
            )));
        }
    }
    for c in cidrs {
        match *c {
            Cidr::V4(a, len) if family == Family::V4 => {
                let net = u32::from_be_bytes(a);
                let host = if len == 0 {
                    u32::MAX
                } else {
                    (1u32 << (32 - len as u32)).wrapping_sub(1)
                };
                let last = net | host;
                for v in [
                    Some(net),
                    Some(last),
                    net.checked_sub(1),
                    last.checked_add(1),
                ]
                .into_iter()
                .flatten()
                {
                    out.insert(IpAddr::V4(Ipv4Addr::from(v)));
                }
            }
            Cidr::V6(a, len) if family == Family::V6 => {
                let net = u128::from_be_bytes(a);
                let host = if len == 0 {
                    u128::MAX
                } else {
                    (1u128 << (128 - len as u32)).wrapping_sub(1)
                };
                let last = net | host;
                for v in [
                    Some(net),
                    Some(last),
                    net.checked_sub(1),
                    last.checked_add(1),
                ]
                .into_iter()
                .flatten()
                {
                    out.insert(IpAddr::V6(Ipv6Addr::from(v)));
                }
            }
            _ => {}
        }
    }
    out.into_iter().collect()
}

fn boundaries(ranges: impl Iterator<Item = (u16, u16)>, base: &[u16]) -> Vec<u16> {
    let mut out: BTreeSet<u16> = base.iter().copied().collect();
    for (lo, hi) in ranges {
        out.insert(lo);
        out.insert(hi);
        if let Some(x) = lo.checked_sub(1) {
            out.insert(x);
        }
        if let Some(x) = hi.checked_add(1) {
            out.insert(x);
        }
    }
    out.remove(&0);
    out.into_iter().collect()
}

/// The packets to compare on, for the rules of one family (and the fw policy's rules).
pub(crate) fn packets(family: Family, rules: &[&Spec], policy: &Policy) -> Vec<Pkt> {
    let mut cidrs: Vec<Cidr> = Vec::new();
    let mut dranges: Vec<(u16, u16)> = Vec::new();
    let mut sranges: Vec<(u16, u16)> = Vec::new();
    let mut icmp: BTreeSet<(u8, u8)> = BTreeSet::new();
    let mut protos: BTreeSet<u8> = BTreeSet::from([47]);
    let mut wide_flags = false;
    let base_icmp: &[u8] = match family {
        Family::V4 => &[8, 0, 3, 11, 13],
        Family::V6 => &[128, 129, 1, 2, 3, 135],
    };
    for t in base_icmp {
        icmp.insert((*t, 0));
    }
    for s in rules {
        if let Some((_, list)) = &s.src {
            cidrs.extend(list);
        }
        for (_, r) in &s.dports {
            dranges.extend(r);
        }
        for (_, r) in &s.sports {
            sranges.extend(r);
        }
        if let Some((_, t, c)) = s.icmp {
            icmp.insert((t, 0));
            if let Some(c) = c {
                icmp.insert((t, c));
            }
        }
        if let Some((_, p)) = s.proto
            && !matches!(p, IPPROTO_TCP | IPPROTO_UDP)
            && p != icmp_proto(family)
        {
            protos.insert(p);
        }
        wide_flags |= s.tcp_flags.iter().any(|(_, m, _)| m & !tcp::ALL != 0);
    }
    for r in &policy.rules {
        dranges.push((r.ports.lo, r.ports.hi));
        cidrs.extend(&r.from);
    }
    let dports = boundaries(dranges.into_iter(), &[1, 33333, 65535]);
    let sports = boundaries(sranges.into_iter(), &[40000]);
    let srcs = sources(family, &cidrs);
    // Real traffic first, so the first difference found makes a readable example.
    let mut flags: Vec<u8> = vec![
        tcp::SYN,
        tcp::ACK,
        tcp::ACK | tcp::PSH,
        tcp::SYN | tcp::ACK,
        tcp::FIN | tcp::ACK,
        tcp::RST,
    ];
    let top: u16 = if wide_flags { 256 } else { 64 };
    for f in 0..top {
        let f = f as u8;
        if !flags.contains(&f) {
            flags.push(f);
        }
    }
    let mut out = Vec::new();
    for &src in &srcs {
        for &dport in &dports {
            for &sport in &sports {
                for &f in &flags {
                    let states: &[Ct] = match classify(f) {
                        FlagClass::Null | FlagClass::Xmas | FlagClass::Invalid => {
                            &[Ct::Invalid, Ct::InvalidTracked]
                        }
                        FlagClass::Syn => &[Ct::New],
                        FlagClass::Other => &[Ct::New, Ct::Established],
                    };
                    for &c in states {
                        out.push(Pkt {
                            family,
                            src,
                            l4: L4::Tcp {
                                sport,
                                dport,
                                flags: f,
                            },
                            ct: c,
                        });
                    }
                }
                for c in [Ct::New, Ct::Established] {
                    out.push(Pkt {
                        family,
                        src,
                        l4: L4::Udp { sport, dport },
                        ct: c,
                    });
                }
            }
        }
        for &(ty, code) in &icmp {
            let states: &[Ct] =
                if family == Family::V6 && fw_common::decide::is_icmpv6_link_essential(ty) {
                    &[Ct::Untracked]
                } else if is_icmp_error(family, ty) {
                    &[Ct::Related, Ct::Invalid]
                } else if is_icmp_request(family, ty) {
                    &[Ct::New]
                } else if ty == echo_types(family).1 {
                    &[Ct::Established, Ct::Invalid]
                } else {
                    &[Ct::New, Ct::Invalid]
                };
            for &c in states {
                out.push(Pkt {
                    family,
                    src,
                    l4: L4::Icmp { ty, code },
                    ct: c,
                });
            }
        }
        for &p in &protos {
            for c in [Ct::New, Ct::Established] {
                out.push(Pkt {
                    family,
                    src,
                    l4: L4::Other(p),
                    ct: c,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compiled::Compiled,
        packet_builder::{L4Spec, PacketSpec},
        policy::{SEED_POLICY, parse_policy},
    };

    /// The model agrees with the real `decide()` wherever no connection state is involved
    /// (new packets: every flow lookup misses).
    #[test]
    fn fw_model_matches_decide_for_new_packets() {
        let mut p = parse_policy("seed", SEED_POLICY).unwrap();
        p.rules[8].from = vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/48".parse().unwrap(),
        ];
        for strict in [false, true] {
            for nrs in [false, true] {
                for echo in [false, true] {
                    p.options.strict_tcp_flags = strict;
                    p.options.new_requires_syn = nrs;
                    p.options.icmp_echo = echo;
                    let c = Compiled::new(&p, 0);
                    for fam in [Family::V4, Family::V6] {
                        for pkt in packets(fam, &[], &p) {
                            if !matches!(pkt.ct, Ct::New | Ct::Invalid) {
                                continue;
                            }
                            let (src, dst) = match fam {
                                Family::V4 => (pkt.src.to_string(), "192.0.2.1".to_string()),
                                Family::V6 => (pkt.src.to_string(), "2001:db8::1".to_string()),
                            };
                            let l4 = match pkt.l4 {
                                L4::Tcp {
                                    sport,
                                    dport,
                                    flags,
                                } => L4Spec::Tcp {
                                    sport,
                                    dport,
                                    flags,
                                },
                                L4::Udp { sport, dport } => L4Spec::Udp { sport, dport },
                                // Errors need a quoted packet; the builder makes none.
                                L4::Icmp { ty, .. } if is_icmp_error(fam, ty) => continue,
                                L4::Icmp { ty, code } => L4Spec::Icmp { ty, code },
                                L4::Other(proto) => L4Spec::Raw { proto },
                            };
                            let frame = PacketSpec::new(&src, &dst, l4).build();
                            let real = fw_common::decide(&frame[..], &c);
                            let (model, why) = fw_verdict(&p, &pkt);
                            assert_eq!(
                                real.pass,
                                model,
                                "{} (strict {strict}, nrs {nrs}, echo {echo}): decide {:?}, model {why:?}",
                                pkt.describe(),
                                real.why()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn samples_cover_cidr_edges() {
        let s = sources(Family::V4, &["10.0.0.0/8".parse().unwrap()]);
        for a in ["9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0"] {
            assert!(s.contains(&a.parse().unwrap()), "{a} missing from {s:?}");
        }
        let s = sources(Family::V6, &["::/0".parse().unwrap()]);
        assert!(s.contains(&"::".parse().unwrap()));
    }
}
