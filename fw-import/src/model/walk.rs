//! iptables' side of the check: the packet kinds the rules tell apart (port classes by an
//! interval sweep, flag and state classes, ICMP types, protocols), and for each the painting of
//! the source space by first match, shared between kinds that reach the same rules.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet, HashMap},
    rc::Rc,
};

use fw_common::{
    Family, L4,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    tcp::{self, FlagClass, classify},
};

use super::{
    Ct, Pkt, echo_types, icmp_proto, is_ct_icmp_error, is_icmp_request, matches_except_src,
};
use crate::{
    addrset::AddrSet,
    iptables::rule::{SYN_MASK, Spec, Target},
};

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
    use crate::addrset::value;

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
