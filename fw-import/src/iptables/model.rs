//! Abstract packets, and what an iptables INPUT chain and an fw policy each decide for them.
//!
//! The packets are chosen so that every distinction the rules can make shows up: each port and
//! source boundary the rules mention (and the values just outside), every TCP flag combination,
//! each conntrack state a packet of that kind can have, ICMP types, other protocols.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use fw_common::{
    decide::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST},
    tcp::{self, FlagClass, classify},
};

use super::{
    Family,
    addrset::{AddrSet, example_addr},
    rule::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SYN_MASK, Spec, Target, ct,
        proto_name,
    },
};
use fw_policy::{Policy, Proto};

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
        if fw_accepts {
            return match (self.l4, self.ct) {
                (L4::Tcp { .. }, Ct::InvalidTracked) => Some(
                    "TCP packets with invalid flag combinations on connections it tracks (conntrack calls them INVALID; strict_tcp_flags = true drops them)",
                ),
                (L4::Icmp { ty: 137, .. }, Ct::Invalid) if self.family == Family::V6 => Some(
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
        match (self.l4, self.ct) {
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

/// Does the iptables rule match the packet, sources aside?
pub(crate) fn matches_except_src(s: &Spec, p: &Pkt) -> bool {
    if let Some((neg, proto)) = s.proto
        && (p.proto() == proto) == neg
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
    if let Some((sport, dport)) = p.ports() {
        if !ports_can_match(s, sport, dport) {
            return false;
        }
    } else if !s.dports.is_empty() || !s.sports.is_empty() {
        return false;
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

/// Does the iptables rule match the packet? (What [`walk`] computes over sets.)
#[cfg(test)]
fn matches(s: &Spec, p: &Pkt) -> bool {
    if let Some((neg, list)) = &s.src
        && list.iter().any(|c| c.contains(&p.src)) == *neg
    {
        return false;
    }
    matches_except_src(s, p)
}

/// iptables' verdicts: for every kind of packet (skeleton × the source sets the rules tell
/// apart), whether it is accepted and the index of the deciding rule (`None`: the policy).
pub(crate) struct Walked {
    pub verdicts: Vec<(Pkt, bool, Option<usize>)>,
    /// Source sets each rule decides (only whether it is zero matters).
    pub decided: Vec<usize>,
}

/// A verdict for a set of sources: accepted?, deciding rule, an address of the set.
type Entry = (bool, Option<usize>, IpAddr);

/// Deciding rules kept per source part and verdict: enough to name the first lines involved.
const KEEP: usize = 4;

pub(crate) fn walk(family: Family, rules: &[&Spec], policy_accept: bool) -> Walked {
    let sets: Vec<Option<AddrSet>> = rules
        .iter()
        .map(|s| {
            s.src.as_ref().map(|(neg, list)| {
                let a = AddrSet::of(list, family);
                if *neg { a.complement(family) } else { a }
            })
        })
        .collect();
    let mut decided = vec![0; rules.len()];
    let mut verdicts = Vec::new();
    // Packets that reach the same rules over the same source parts get the same verdicts.
    let mut cache: HashMap<(Vec<u32>, Vec<u32>), Vec<Entry>> = HashMap::new();
    for skel in skeletons(family, rules, &Policy::default()) {
        let matching: Vec<u32> = (0..rules.len())
            .filter(|&i| rules[i].target.is_some() && matches_except_src(rules[i], &skel))
            .map(|i| i as u32)
            .collect();
        // The sources fw can tell apart for this packet: those of accept rules for its port.
        let candidates: Vec<u32> = match skel.ports() {
            Some((sport, dport)) => (0..rules.len())
                .filter(|&i| {
                    let s = rules[i];
                    s.target == Some(Target::Accept)
                        && matches!(s.src, Some((false, _)))
                        && s.proto.is_none_or(|(neg, p)| (p == skel.proto()) != neg)
                        && ports_can_match(s, sport, dport)
                })
                .map(|i| i as u32)
                .collect(),
            None => Vec::new(),
        };
        let entries =
            cache
                .entry((candidates, matching))
                .or_insert_with_key(|(candidates, matching)| {
                    let mut parts = vec![AddrSet::full(family)];
                    for &c in candidates {
                        let Some(cs) = &sets[c as usize] else {
                            continue;
                        };
                        parts = parts
                            .into_iter()
                            .flat_map(|mut p| {
                                let inside = p.take(cs);
                                [inside, p]
                            })
                            .filter(|p| !p.is_empty())
                            .collect();
                    }
                    let mut out = Vec::new();
                    for mut remaining in parts {
                        let mut kept = [0usize; 2];
                        for &i in matching {
                            let i = i as usize;
                            let piece = match &sets[i] {
                                None => remaining.take_all(),
                                Some(s) => remaining.take(s),
                            };
                            if piece.is_empty() {
                                continue;
                            }
                            decided[i] += 1;
                            let acc = rules[i].target == Some(Target::Accept);
                            if kept[acc as usize] < KEEP {
                                kept[acc as usize] += 1;
                                out.push((acc, Some(i), piece.pick(family)));
                            }
                            if remaining.is_empty() {
                                break;
                            }
                        }
                        if !remaining.is_empty() {
                            out.push((policy_accept, None, remaining.pick(family)));
                        }
                    }
                    out
                });
        for &(acc, by, src) in entries.iter() {
            verdicts.push((Pkt { src, ..skel }, acc, by));
        }
    }
    Walked { verdicts, decided }
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
            // Without strict checks fw judges them as conntrack's INVALID: by the ports alone.
            FlagClass::Syn | FlagClass::Invalid => port(Proto::Tcp, dport),
            FlagClass::Other => {
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
            if p.family == Family::V6 && fw_common::decide::is_icmpv6_link_essential(ty) {
                return (true, FwWhy::Fixed);
            }
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

/// Keep the first of each group of values with the same signature.
fn dedup_by_signature<T: Copy>(values: Vec<T>, sig: impl Fn(&T) -> Vec<bool>) -> Vec<T> {
    let mut seen: BTreeSet<Vec<bool>> = BTreeSet::new();
    values.into_iter().filter(|v| seen.insert(sig(v))).collect()
}

fn in_ranges(v: u16, r: &[(u16, u16)]) -> bool {
    r.iter().any(|(lo, hi)| *lo <= v && v <= *hi)
}

/// Ports at and around every range boundary, one per distinct answer to "which ranges hold it".
fn ports(ranges: &[(u16, u16)], base: &[u16]) -> Vec<u16> {
    let mut all: BTreeSet<u16> = base.iter().copied().collect();
    for &(lo, hi) in ranges {
        all.insert(lo);
        all.insert(hi);
        if let Some(x) = lo.checked_sub(1) {
            all.insert(x);
        }
        if let Some(x) = hi.checked_add(1) {
            all.insert(x);
        }
    }
    all.remove(&0);
    // The base ports first, so that "some other port" examples read naturally.
    let mut v: Vec<u16> = base.to_vec();
    v.extend(all.into_iter().filter(|p| !base.contains(p)));
    dedup_by_signature(v, |p| ranges.iter().map(|r| in_ranges(*p, &[*r])).collect())
}

/// Whether a rule's port conditions can hold for these ports (protocol aside).
fn ports_can_match(s: &Spec, sport: u16, dport: u16) -> bool {
    s.dports.iter().all(|(neg, r)| in_ranges(dport, r) != *neg)
        && s.sports.iter().all(|(neg, r)| in_ranges(sport, r) != *neg)
}

/// Every kind of packet the rules of one family (and the fw policy's rules) tell apart,
/// sources aside (the example address stands in).
pub(crate) fn skeletons(family: Family, rules: &[&Spec], policy: &Policy) -> Vec<Pkt> {
    let mut dranges: Vec<(u16, u16)> = Vec::new();
    let mut sranges: Vec<(u16, u16)> = Vec::new();
    let mut icmp: BTreeSet<(u8, u8)> = BTreeSet::new();
    let mut protos: BTreeSet<u8> = BTreeSet::from([47]);
    let mut conds: BTreeSet<(bool, u8, u8)> = BTreeSet::new();
    let base_icmp: &[u8] = match family {
        Family::V4 => &[8, 0, 3, 11, 13],
        Family::V6 => &[128, 129, 1, 2, 3, 135],
    };
    for t in base_icmp {
        icmp.insert((*t, 0));
    }
    for s in rules {
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
        conds.extend(s.tcp_flags.iter().copied());
    }
    for r in &policy.rules {
        dranges.push((r.ports.lo, r.ports.hi));
    }
    dranges.sort_unstable();
    dranges.dedup();
    sranges.sort_unstable();
    sranges.dedup();
    let dports = ports(&dranges, &[33333, 1, 65535]);
    let sports = ports(&sranges, &[40000]);
    // Real traffic first, so the first difference found makes a readable example; then one
    // flag byte per distinct answer to everything that looks at flags.
    let mut flags: Vec<u8> = vec![
        tcp::SYN,
        tcp::ACK,
        tcp::ACK | tcp::PSH,
        tcp::SYN | tcp::ACK,
        tcp::FIN | tcp::ACK,
        tcp::RST,
        tcp::SYN | tcp::FIN,
        tcp::FIN,
        tcp::FIN | tcp::PSH | tcp::URG,
    ];
    let rest: Vec<u8> = (0..=255u8).filter(|f| !flags.contains(f)).collect();
    flags.extend(rest);
    let flags = dedup_by_signature(flags, |&f| {
        let mut sig = vec![
            classify(f) == FlagClass::Null,
            classify(f) == FlagClass::Xmas,
            classify(f) == FlagClass::Invalid,
            classify(f) == FlagClass::Syn,
            f & SYN_MASK == tcp::SYN,
            // Untracked, conntrack picks up a plain ACK but calls RST/FIN/SYN+ACK INVALID.
            f & (tcp::RST | tcp::FIN | tcp::SYN) != 0,
        ];
        sig.extend(conds.iter().map(|(_, m, c)| f & m == *c));
        sig
    });
    let mut out = Vec::new();
    for &dport in &dports {
        for &sport in &sports {
            let src = example_addr(family);
            {
                for &f in &flags {
                    let states: &[Ct] = match classify(f) {
                        FlagClass::Null | FlagClass::Xmas | FlagClass::Invalid => {
                            &[Ct::Invalid, Ct::InvalidTracked]
                        }
                        FlagClass::Syn => &[Ct::New],
                        // Conntrack picks up a plain ACK mid-stream (NEW), but calls an RST,
                        // FIN or SYN+ACK that belongs to no connection INVALID.
                        FlagClass::Other if f & (tcp::RST | tcp::FIN | tcp::SYN) != 0 => {
                            &[Ct::Invalid, Ct::Established]
                        }
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
    }
    let src = example_addr(family);
    {
        for &(ty, code) in &icmp {
            let states: &[Ct] = if family == Family::V6 && ty == 137 {
                // conntrack calls an ICMPv6 redirect INVALID (nf_conntrack_proto_icmpv6).
                &[Ct::Invalid]
            } else if family == Family::V6 && fw_common::decide::is_icmpv6_link_essential(ty) {
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
    use fw_common::frame::{L4Spec, PacketSpec};
    use fw_policy::Compiled;
    use fw_policy::{SEED_POLICY, parse_policy};

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
                        let srcs: Vec<IpAddr> =
                            ["198.51.100.23", "203.0.113.5", "2001:db8::5", "2001:db9::1"]
                                .iter()
                                .map(|a| a.parse().unwrap())
                                .filter(|a: &IpAddr| a.is_ipv6() == (fam == Family::V6))
                                .collect();
                        let pkts = skeletons(fam, &[], &p)
                            .into_iter()
                            .flat_map(|k| srcs.iter().map(move |&src| Pkt { src, ..k }));
                        for pkt in pkts {
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

    /// The walk over source sets agrees with plain first-match evaluation of sample addresses.
    #[test]
    fn walk_agrees_with_first_match_on_samples() {
        let text = "\
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 10.0.0.0/8 -p tcp --dport 22 -j ACCEPT
-A INPUT -s 10.1.0.0/16 -j DROP
-A INPUT ! -s 192.0.2.0/24 -p udp --dport 53 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,8000:8100 -s 198.51.100.0/25,203.0.113.9 -j ACCEPT
-A INPUT -p tcp ! --syn -m state --state NEW -j DROP
-A INPUT -p tcp --dport 8050 -j REJECT
-A INPUT -p icmp --icmp-type echo-request -s 10.0.0.0/8 -j ACCEPT";
        let specs: Vec<Spec> = text
            .lines()
            .map(|l| {
                let w: Vec<String> = l.split_whitespace().map(String::from).collect();
                super::super::rule::parse_command(&w, Family::V4)
                    .unwrap()
                    .spec
            })
            .collect();
        let refs: Vec<&Spec> = specs.iter().collect();
        let samples: Vec<IpAddr> = [
            "10.0.0.1",
            "10.1.0.1",
            "10.2.0.0",
            "9.255.255.255",
            "192.0.2.5",
            "198.51.100.1",
            "198.51.100.200",
            "203.0.113.9",
            "203.0.113.10",
            "198.51.100.23",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let first_match = |p: &Pkt| {
            refs.iter()
                .position(|s| s.target.is_some() && matches(s, p))
                .map_or((false, None), |i| {
                    (refs[i].target == Some(Target::Accept), Some(i))
                })
        };
        let w = walk(Family::V4, &refs, false);
        for (pkt, acc, by) in &w.verdicts {
            assert_eq!(first_match(pkt), (*acc, *by), "{}", pkt.describe());
        }
        for skel in skeletons(Family::V4, &refs, &Policy::default()) {
            for &src in &samples {
                let p = Pkt { src, ..skel };
                let want = first_match(&p);
                assert!(
                    w.verdicts
                        .iter()
                        .any(|(q, acc, by)| q.l4 == p.l4 && q.ct == p.ct && (*acc, *by) == want),
                    "{} ({want:?}) has no verdict of its kind",
                    p.describe()
                );
            }
        }
        assert!(w.decided.iter().all(|d| *d > 0), "{:?}", w.decided);
    }

    #[test]
    fn ports_keep_one_sample_per_range_answer() {
        let p = ports(&[(22, 22), (80, 90)], &[33333]);
        assert_eq!(p, [33333, 22, 80]);
    }
}
