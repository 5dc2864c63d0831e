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

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    rc::Rc,
};

use fw_common::{
    Family, Fragment, Ip, L4, Quoted,
    decide::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    tcp::{self, FlagClass, classify},
};

use crate::{
    addrset::{AddrSet, addr, example_addr, ip_bytes, value},
    iptables::rule::{SYN_MASK, Spec, Target, ct, proto_name},
};

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
fn is_ct_icmp_error(f: Family, ty: u8) -> bool {
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

/// A piece of the source space and what iptables does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    pub lo: u128,
    pub hi: u128,
    pub accept: bool,
    /// The deciding rule (`None`: the chain's policy).
    pub by: Option<u32>,
}

/// The whole source space of one family, cut into pieces in address order.
#[derive(Debug, Default)]
pub(crate) struct Painting {
    pub segs: Vec<Seg>,
}

/// Destination ports (or source ports) that no rule tells apart share a class.
#[derive(Clone, Debug)]
pub(crate) struct PortClass {
    /// The port examples use.
    pub rep: u16,
    /// The ports of the class.
    pub ranges: Vec<(u16, u16)>,
    /// The indexed rules whose port condition holds for every port of the class.
    pub active: Vec<u32>,
}

/// Cut 1..=65535 into classes of ports that the `ranges` (range, owner) treat alike.
fn port_classes(ranges: &[(u16, u16, u32)], preferred: &[u16]) -> Vec<PortClass> {
    let mut starts: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut ends: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(lo, hi, id) in ranges {
        let lo = lo.max(1) as u32;
        if (hi as u32) < lo {
            continue;
        }
        starts.entry(lo).or_default().push(id);
        ends.entry(hi as u32 + 1).or_default().push(id);
    }
    let mut cuts: BTreeSet<u32> = BTreeSet::from([1, 65536]);
    cuts.extend(starts.keys().copied());
    cuts.extend(ends.keys().copied());
    let mut active: BTreeMap<u32, u32> = BTreeMap::new();
    let mut classes: Vec<PortClass> = Vec::new();
    let mut by_sig: HashMap<Vec<u32>, usize> = HashMap::new();
    let cuts: Vec<u32> = cuts.into_iter().collect();
    for w in cuts.windows(2) {
        let (lo, next) = (w[0], w[1]);
        for id in ends.get(&lo).into_iter().flatten() {
            if let Some(n) = active.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    active.remove(id);
                }
            }
        }
        for id in starts.get(&lo).into_iter().flatten() {
            *active.entry(*id).or_insert(0) += 1;
        }
        let hi = (next - 1) as u16;
        let lo = lo as u16;
        let sig: Vec<u32> = active.keys().copied().collect();
        let k = *by_sig.entry(sig.clone()).or_insert_with(|| {
            classes.push(PortClass {
                rep: lo,
                ranges: Vec::new(),
                active: sig,
            });
            classes.len() - 1
        });
        classes[k].ranges.push((lo, hi));
        if let Some(p) = preferred.iter().find(|p| lo <= **p && **p <= hi) {
            classes[k].rep = *p;
        }
    }
    classes
}

/// iptables' side of one family: the chain, the classes of packets it tells apart, and the
/// paintings of the packet kinds walked so far.
pub(crate) struct Walk<'a> {
    family: Family,
    rules: Vec<&'a Spec>,
    sets: Vec<Option<AddrSet>>,
    policy_accept: bool,
    /// Redirects in the nat table: (protocol, pre-NAT port) → the port INPUT sees.
    nat: &'a BTreeMap<(u8, u16), u16>,
    /// Destination port classes for TCP and UDP.
    pub dclasses: [Vec<PortClass>; 2],
    /// Source port classes (every rule's source-port ranges).
    sclasses: Vec<PortClass>,
    /// Rules a TCP or UDP packet reaches whatever its port (not indexed by port).
    agnostic: [Vec<u32>; 2],
    flags: Vec<u8>,
    icmp: BTreeSet<(u8, u8)>,
    protos: BTreeSet<u8>,
    memo: RefCell<HashMap<Vec<u32>, Rc<Painting>>>,
    /// Rules that decide some packet.
    pub decided: RefCell<Vec<bool>>,
    /// Units of work: rules looked at and pieces painted (what the scale test bounds).
    pub work: Cell<u64>,
}

/// One packet kind, with what iptables does with each piece of the source space.
pub(crate) struct Skel {
    pub pkt: Pkt,
    pub painting: Rc<Painting>,
    /// The destination port class (TCP and UDP).
    pub dclass: Option<usize>,
    /// Whether this is the source-port class of ordinary clients (port 40000).
    pub client_sport: bool,
}

/// The indexed port condition of a rule: a single positive `--dport` list on TCP or UDP.
fn indexed_ports(s: &Spec) -> Option<(usize, &[(u16, u16)])> {
    let p = match s.proto {
        Some((false, IPPROTO_TCP)) => 0,
        Some((false, IPPROTO_UDP)) => 1,
        _ => return None,
    };
    match s.dports.as_slice() {
        [(false, r)] => Some((p, r.as_slice())),
        _ => None,
    }
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
        family: Family,
        rules: Vec<&'a Spec>,
        policy_accept: bool,
        nat: &'a BTreeMap<(u8, u16), u16>,
        extra_dports: &[(u8, u16, u16)],
    ) -> Self {
        let n = rules.len();
        let sets = rules
            .iter()
            .map(|s| {
                s.src.as_ref().map(|(neg, list)| {
                    let a = AddrSet::of(list, family);
                    if *neg { a.complement(family) } else { a }
                })
            })
            .collect();
        let mut dranges: [Vec<(u16, u16, u32)>; 2] = [Vec::new(), Vec::new()];
        // Ids from rules.len() on mark port ranges that are no rule's own.
        let mut pseudo = rules.len() as u32;
        let mut next_pseudo = || {
            pseudo += 1;
            pseudo
        };
        let mut agnostic: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut sranges: Vec<(u16, u16, u32)> = Vec::new();
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
        for (i, s) in rules.iter().enumerate() {
            let i = i as u32;
            if s.target.is_none() {
                continue;
            }
            match indexed_ports(s) {
                Some((p, r)) => {
                    for &(lo, hi) in r {
                        dranges[p].push((lo, hi, i));
                    }
                }
                None => {
                    for (p, proto) in [IPPROTO_TCP, IPPROTO_UDP].into_iter().enumerate() {
                        if s.proto.is_none_or(|(neg, x)| (x == proto) != neg) {
                            agnostic[p].push(i);
                        }
                    }
                    // Every other port condition cuts the port space too.
                    for (_, r) in &s.dports {
                        for &(lo, hi) in r {
                            let id = next_pseudo();
                            dranges[0].push((lo, hi, id));
                            dranges[1].push((lo, hi, id));
                        }
                    }
                }
            }
            for (_, r) in &s.sports {
                for &(lo, hi) in r {
                    sranges.push((lo, hi, i));
                }
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
        // Ports the fw side tells apart on its own: redirected ports, ports added for them.
        for (&(proto, from), &to) in nat {
            let p = usize::from(proto == IPPROTO_UDP);
            dranges[p].push((from, from, next_pseudo()));
            dranges[p].push((to, to, next_pseudo()));
        }
        for &(proto, lo, hi) in extra_dports {
            let p = usize::from(proto == IPPROTO_UDP);
            dranges[p].push((lo, hi, next_pseudo()));
        }
        let preferred = [33333u16];
        let dclasses = [
            port_classes(&dranges[0], &preferred),
            port_classes(&dranges[1], &preferred),
        ];
        let sclasses = port_classes(&sranges, &[40000]);
        Walk {
            family,
            rules,
            sets,
            policy_accept,
            nat,
            dclasses,
            sclasses,
            agnostic,
            flags: flag_classes(&conds),
            icmp,
            protos,
            memo: RefCell::new(HashMap::new()),
            decided: RefCell::new(vec![false; n]),
            work: Cell::new(0),
        }
    }

    fn add_work(&self, n: usize) {
        self.work.set(self.work.get() + n as u64);
    }

    /// Every packet kind, with its painting, in an order that makes first examples readable
    /// (real traffic first).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Skel)) {
        let fam = self.family;
        for (pi, proto) in [IPPROTO_TCP, IPPROTO_UDP].into_iter().enumerate() {
            for (dc, class) in self.dclasses[pi].iter().enumerate() {
                let dport = class.rep;
                let ipt_dport = self.nat.get(&(proto, dport)).copied();
                // The rules this port class reaches, in chain order.
                let cands = merge(&self.agnostic[pi], &self.port_rules(pi, ipt_dport, class));
                self.add_work(cands.len());
                for sclass in &self.sclasses {
                    let sport = sclass.rep;
                    let client = sport == 40000;
                    let mut emit = |mut pkt: Pkt| {
                        pkt.nat_dport = ipt_dport;
                        let painting = self.painting(&cands, &pkt);
                        f(&Skel {
                            pkt,
                            painting,
                            dclass: Some(dc),
                            client_sport: client,
                        });
                    };
                    if proto == IPPROTO_TCP {
                        for &fl in &self.flags {
                            for &c in tcp_states(fl) {
                                emit(Pkt::tcp(fam, sport, dport, fl, c));
                            }
                        }
                    } else {
                        for c in [Ct::New, Ct::Established] {
                            emit(Pkt::udp(fam, sport, dport, c));
                        }
                    }
                }
            }
        }
        let all: Vec<u32> = (0..self.rules.len() as u32).collect();
        let mut emit = |pkt: Pkt| {
            let painting = self.painting(&all, &pkt);
            f(&Skel {
                pkt,
                painting,
                dclass: None,
                client_sport: true,
            });
        };
        for &(ty, code) in &self.icmp {
            for &c in icmp_states(fam, ty) {
                emit(Pkt::icmp(fam, ty, code, c));
            }
        }
        for &p in &self.protos {
            for c in [Ct::New, Ct::Established] {
                emit(Pkt::new(fam, p, L4::None, c));
            }
        }
    }

    /// The indexed rules of a port class, or of the port a redirect leads to.
    fn port_rules(&self, pi: usize, ipt_dport: Option<u16>, class: &PortClass) -> Vec<u32> {
        let n = self.rules.len() as u32;
        let own = |c: &PortClass| c.active.iter().copied().filter(|i| *i < n).collect();
        let Some(to) = ipt_dport else {
            return own(class);
        };
        self.dclasses[pi]
            .iter()
            .find(|c| c.ranges.iter().any(|(lo, hi)| *lo <= to && to <= *hi))
            .map(own)
            .unwrap_or_default()
    }

    /// The painting for `pkt` over the candidate rules `cands` (shared by every packet kind
    /// that reaches the same rules).
    fn painting(&self, cands: &[u32], pkt: &Pkt) -> Rc<Painting> {
        let matching: Vec<u32> = cands
            .iter()
            .copied()
            .filter(|&i| {
                let s = self.rules[i as usize];
                s.target.is_some() && matches_except_src(s, pkt)
            })
            .collect();
        self.add_work(cands.len());
        if let Some(p) = self.memo.borrow().get(&matching) {
            return p.clone();
        }
        let p = Rc::new(self.paint(&matching));
        self.memo.borrow_mut().insert(matching, p.clone());
        p
    }

    /// First match over source sets: each rule takes the sources still undecided that it
    /// matches; a RETURN sets its sources aside until the end of its chain's block.
    fn paint(&self, matching: &[u32]) -> Painting {
        let fam = self.family;
        let mut remaining = AddrSet::full(fam);
        let mut pending: BTreeMap<u32, AddrSet> = BTreeMap::new();
        let mut segs: Vec<Seg> = Vec::new();
        let mut decided = self.decided.borrow_mut();
        for &i in matching {
            while let Some(e) = pending.first_entry() {
                if *e.key() > i {
                    break;
                }
                remaining.union(&e.remove());
            }
            if remaining.is_empty() {
                if pending.is_empty() {
                    break;
                }
                continue;
            }
            let piece = match &self.sets[i as usize] {
                None => remaining.take_all(),
                Some(s) => remaining.take(s),
            };
            self.add_work(1 + piece.len());
            if piece.is_empty() {
                continue;
            }
            match &self.rules[i as usize].target {
                Some(Target::Skip(end)) => {
                    pending.entry(*end as u32).or_default().union(&piece);
                }
                Some(t) => {
                    decided[i as usize] = true;
                    let accept = *t == Target::Accept;
                    segs.extend(piece.intervals().map(|(lo, hi)| Seg {
                        lo,
                        hi,
                        accept,
                        by: Some(i),
                    }));
                }
                None => {}
            }
        }
        for (_, p) in pending {
            remaining.union(&p);
        }
        segs.extend(remaining.intervals().map(|(lo, hi)| Seg {
            lo,
            hi,
            accept: self.policy_accept,
            by: None,
        }));
        segs.sort_unstable_by_key(|s| s.lo);
        self.add_work(segs.len());
        Painting { segs }
    }

    pub(crate) fn live(&self, i: usize) -> bool {
        self.decided.borrow()[i]
    }

    /// The port INPUT sees for a packet the nat table redirects from `pre`.
    pub(crate) fn nat_target(&self, proto: fw_policy::Proto, pre: u16) -> u16 {
        let p = match proto {
            fw_policy::Proto::Tcp => IPPROTO_TCP,
            fw_policy::Proto::Udp => IPPROTO_UDP,
        };
        self.nat.get(&(p, pre)).copied().unwrap_or(pre)
    }
}

/// Two sorted index lists as one.
fn merge(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j == b.len() || (i < a.len() && a[i] < b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.dedup();
    out
}

fn tcp_states(f: u8) -> &'static [Ct] {
    match classify(f) {
        FlagClass::Null | FlagClass::Xmas | FlagClass::Invalid => {
            &[Ct::Invalid, Ct::InvalidTracked]
        }
        FlagClass::Syn => &[Ct::New],
        // Conntrack picks up a plain ACK mid-stream (NEW), but calls an RST, FIN or SYN+ACK
        // that belongs to no connection INVALID.
        FlagClass::Other if f & (tcp::RST | tcp::FIN | tcp::SYN) != 0 => {
            &[Ct::Invalid, Ct::Established]
        }
        FlagClass::Other => &[Ct::New, Ct::Established],
    }
}

fn icmp_states(family: Family, ty: u8) -> &'static [Ct] {
    if family == Family::V6 && ty == 137 {
        // conntrack calls an ICMPv6 redirect INVALID (nf_conntrack_proto_icmpv6).
        &[Ct::Invalid]
    } else if family == Family::V6 && fw_common::decide::is_icmpv6_link_essential(ty) {
        &[Ct::Untracked]
    } else if is_ct_icmp_error(family, ty) {
        &[Ct::Related, Ct::Invalid]
    } else if is_icmp_request(family, ty) {
        &[Ct::New]
    } else if ty == echo_types(family).1 {
        &[Ct::Established, Ct::Invalid]
    } else {
        &[Ct::New, Ct::Invalid]
    }
}

/// One flag byte per distinct answer to everything that looks at flags, real traffic first.
fn flag_classes(conds: &BTreeSet<(bool, u8, u8)>) -> Vec<u8> {
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
    let mut seen: BTreeSet<Vec<bool>> = BTreeSet::new();
    flags
        .into_iter()
        .filter(|&f| {
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
            seen.insert(sig)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(l: &str) -> Spec {
        let w: Vec<String> = l.split_whitespace().map(String::from).collect();
        crate::iptables::rule::parse_command(&w, Family::V4)
            .unwrap()
            .spec
    }

    /// First-match evaluation of one packet with a concrete source, the definition the walk
    /// over source sets must agree with.
    fn first_match(rules: &[&Spec], p: &Pkt) -> (bool, Option<u32>) {
        let src = p.src();
        for (i, s) in rules.iter().enumerate() {
            let src_ok = s
                .src
                .as_ref()
                .is_none_or(|(neg, list)| list.iter().any(|c| c.contains(&src)) != *neg);
            if s.target.is_some() && src_ok && matches_except_src(s, p) {
                return (s.target == Some(Target::Accept), Some(i as u32));
            }
        }
        (false, None)
    }

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
-A INPUT -p tcp ! --dport 1:1000 -s 10.0.0.0/8 -j ACCEPT
-A INPUT -p icmp --icmp-type echo-request -s 10.0.0.0/8 -j ACCEPT";
        let specs: Vec<Spec> = text.lines().map(spec).collect();
        let refs: Vec<&Spec> = specs.iter().collect();
        let samples: Vec<u128> = [
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
        .map(|a| value(a.parse().unwrap()))
        .collect();
        let nat = BTreeMap::new();
        let w = Walk::new(Family::V4, refs.clone(), false, &nat, &[]);
        let mut n = 0;
        w.for_each(|k| {
            for &src in &samples {
                let p = k.pkt.with_src(src);
                let seg = k
                    .painting
                    .segs
                    .iter()
                    .find(|s| s.lo <= src && src <= s.hi)
                    .unwrap();
                assert_eq!(
                    first_match(&refs, &p),
                    (seg.accept, seg.by),
                    "{}",
                    p.describe()
                );
                n += 1;
            }
        });
        assert!(n > 500, "{n}");
        assert!(w.decided.borrow().iter().all(|d| *d));
    }

    #[test]
    fn port_classes_keep_one_class_per_answer() {
        let c = port_classes(&[(22, 22, 0), (80, 90, 1), (85, 85, 2)], &[33333]);
        let reps: Vec<u16> = c.iter().map(|c| c.rep).collect();
        assert_eq!(reps, [33333, 22, 80, 85]);
        assert_eq!(c[0].ranges, [(1, 21), (23, 79), (91, 65535)]);
        assert_eq!(c[2].ranges, [(80, 84), (86, 90)]);
        assert_eq!(c[3].active, [1, 2]);
    }
}
