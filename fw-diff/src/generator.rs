//! The seeded generator: from a policy, the probes of every class (the same seed gives the
//! same probes), and the scripts of the stateful flows.
//!
//! Each class first walks its systematic list (every flag combination, every port boundary,
//! every ICMP type, ...) and then keeps drawing random variations of it (sources, ports,
//! payload sizes, sequence numbers) until it has its share of `--packets`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fw_common::tcp::{self, ACK, FIN, FlagClass, PSH, RST, SYN, URG, classify};
use fw_policy::{Cidr, Policy, Proto};

use super::{
    flows::{AckRef, FlowKind, FlowSpec, SeqRef, Step, Tweak},
    frames::{
        self, AH, DSTOPTS, Dgram, FRAGMENT, HOPOPTS, ICMP, ICMPV6, MSS_OPT, NONXT, ROUTING, TCP,
        UDP,
    },
    probes::{Body, Class, Probe, traits as tr},
};
use fw_lab::Rng;

/// The host under test's addresses (the same in both hosts).
pub const H4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const H6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// The sender's side of the link: the host's gateway (a permanent neighbour entry).
pub const PEER4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
/// The host's ephemeral ports (set in both hosts): generated sources stay out of it.
pub const EPHEMERAL: (u16, u16) = (40000, 49999);

pub fn host(v6: bool) -> IpAddr {
    if v6 { H6.into() } else { H4.into() }
}

/// Ports worth probing besides the policy's own boundaries.
const COMMON_PORTS: [u16; 56] = [
    1, 7, 20, 21, 22, 23, 25, 53, 67, 68, 69, 80, 110, 111, 123, 135, 137, 139, 143, 161, 389, 443,
    445, 465, 500, 514, 546, 547, 587, 631, 873, 993, 995, 1080, 1194, 1433, 1723, 2049, 3000,
    3306, 3389, 5060, 5353, 5432, 5900, 6379, 6443, 8080, 8443, 9000, 9100, 11211, 27017, 33333,
    60000, 65535,
];

/// What a policy lets in, per protocol and family, in the shape the generator needs.
#[derive(Clone, Debug, Default)]
pub struct PortSets {
    /// Ports open to every source.
    pub open: Vec<u16>,
    /// Ports open to some sources only, with those sources.
    pub restricted: Vec<(u16, Vec<Cidr>)>,
    /// Ports open to nobody.
    pub closed: Vec<u16>,
}

pub struct Ctx {
    pub policy: Policy,
    /// [proto tcp/udp][family v4/v6].
    pub sets: [[PortSets; 2]; 2],
}

fn pidx(p: Proto) -> usize {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
    }
}

fn fidx(v6: bool) -> usize {
    usize::from(v6)
}

fn cidr_family_v6(c: &Cidr) -> bool {
    matches!(c, Cidr::V6(..))
}

impl Ctx {
    pub fn new(policy: &Policy) -> Ctx {
        let mut sets: [[PortSets; 2]; 2] = Default::default();
        for proto in [Proto::Tcp, Proto::Udp] {
            let mut cand: Vec<u16> = COMMON_PORTS.to_vec();
            for r in policy.rules.iter().filter(|r| r.proto == proto) {
                let (lo, hi) = (r.ports.lo, r.ports.hi);
                cand.extend([lo, hi, lo + (hi - lo) / 2]);
                cand.extend(lo.checked_sub(1).filter(|p| *p > 0));
                cand.extend(hi.checked_add(1));
            }
            cand.sort_unstable();
            cand.dedup();
            for v6 in [false, true] {
                let s = &mut sets[pidx(proto)][fidx(v6)];
                for &port in &cand {
                    match port_access(policy, proto, port, v6) {
                        Access::All => s.open.push(port),
                        Access::Some(c) => s.restricted.push((port, c)),
                        Access::None => s.closed.push(port),
                    }
                }
            }
        }
        Ctx {
            policy: policy.clone(),
            sets,
        }
    }

    pub fn set(&self, proto: Proto, v6: bool) -> &PortSets {
        &self.sets[pidx(proto)][fidx(v6)]
    }

    /// Whether the policy lets a new connection of `proto` from `src` to `port` in.
    pub fn allows(&self, proto: Proto, port: u16, src: IpAddr) -> bool {
        self.policy.rules.iter().any(|r| {
            r.proto == proto
                && r.ports.contains(port)
                && (r.from.is_empty() || r.from.iter().any(|c| c.contains(&src)))
        })
    }

    /// "open", "closed", "restricted, source allowed" / "restricted, source refused".
    pub fn port_words(&self, proto: Proto, port: u16, src: IpAddr) -> &'static str {
        match port_access(&self.policy, proto, port, src.is_ipv6()) {
            Access::All => "open",
            Access::None => "closed",
            Access::Some(_) if self.allows(proto, port, src) => "restricted, source allowed",
            Access::Some(_) => "restricted, source refused",
        }
    }
}

enum Access {
    All,
    Some(Vec<Cidr>),
    None,
}

fn port_access(policy: &Policy, proto: Proto, port: u16, v6: bool) -> Access {
    let mut cidrs = Vec::new();
    for r in policy
        .rules
        .iter()
        .filter(|r| r.proto == proto && r.ports.contains(port))
    {
        if r.from.is_empty() {
            return Access::All;
        }
        for c in r.from.iter().filter(|c| cidr_family_v6(c) == v6) {
            if c.prefix_len() == 0 {
                return Access::All;
            }
            cidrs.push(*c);
        }
    }
    if cidrs.is_empty() {
        Access::None
    } else {
        Access::Some(cidrs)
    }
}

fn cidr_bounds(c: &Cidr) -> (u128, u128, bool) {
    match *c {
        Cidr::V4(a, len) => {
            let net = u128::from(u32::from_be_bytes(a));
            let host = u128::from(u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
            (net, net | host, false)
        }
        Cidr::V6(a, len) => {
            let net = u128::from_be_bytes(a);
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            (net, net | host, true)
        }
    }
}

fn addr_of(v: u128, v6: bool) -> IpAddr {
    if v6 {
        Ipv6Addr::from(v).into()
    } else {
        Ipv4Addr::from(v as u32).into()
    }
}

/// Whether a generated source address is usable: not in the test link's subnet, not an
/// address the stack refuses as a source anyway (those have their own malformed probes).
fn usable_source(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            let o = a.octets();
            // 198.51.100.250-255 and .1: the stateful scripts' "another address" and router.
            let reserved = o[..3] == [198, 51, 100] && (o[3] >= 250 || o[3] <= 1);
            !(o[0] == 0
                || o[0] == 127
                || o[0] >= 224
                || (o[0] == 10 && o[1] == 77)
                || (o[0] == 169 && o[1] == 254)
                || reserved)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (s[0] == 0xfd00 && s[1] == 0x77)
                || (s[0] == 0x2001 && s[1] == 0xdb8 && s[2] == 0xffff)
                || (s[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some()
                || s[0] == 0)
        }
    }
}

/// Allocates probe keys: IPv4 identifications (bit 15 set only for fragmented datagrams, so
/// a reassembly queue left by one probe never meets another's fragments), IPv6 flow labels,
/// IPv6 fragment identifications.
#[derive(Default)]
pub struct Keys {
    next: u32,
    frag4: u32,
}

impl Keys {
    /// (key, IPv6 fragment identification).
    pub fn take(&mut self, v6: bool, fragmented: bool) -> (u32, u32) {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        if v6 {
            (n & 0x000f_ffff, 0x8000_0000 | n)
        } else if fragmented {
            let f = self.frag4;
            self.frag4 = self.frag4.wrapping_add(1);
            (0x8000 | (f & 0x7fff), 0)
        } else {
            (n & 0x7fff, 0)
        }
    }
}

pub struct Gen {
    pub rng: Rng,
    pub ctx: Ctx,
    pub keys: Keys,
    sport_next: u32,
    flow_port_next: u32,
}

/// Where a TCP/UDP probe goes: (port, source, words).
struct Target {
    port: u16,
    src: IpAddr,
    words: &'static str,
}

fn fam(v6: bool) -> &'static str {
    if v6 { "v6" } else { "v4" }
}

/// TCP flags in words: "SYN+ACK", "NULL".
pub fn flag_names(f: u8) -> String {
    let names = [
        (SYN, "SYN"),
        (ACK, "ACK"),
        (FIN, "FIN"),
        (RST, "RST"),
        (PSH, "PSH"),
        (URG, "URG"),
        (tcp::ECE, "ECE"),
        (tcp::CWR, "CWR"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "NULL".into()
    } else {
        v.join("+")
    }
}

/// conntrack's view of a TCP flag byte on a packet that belongs to no connection: the traits
/// that follow from it.
pub fn tcp_new_traits(flags: u8) -> u32 {
    match classify(flags) {
        FlagClass::Null | FlagClass::Xmas | FlagClass::Invalid => tr::INVALID_FLAGS,
        FlagClass::Syn => 0,
        FlagClass::Other => {
            if flags & (RST | FIN) != 0 || flags & (SYN | ACK) == SYN | ACK {
                tr::NO_CONN_CLOSE
            } else {
                0
            }
        }
    }
}

impl Gen {
    pub fn new(policy: &Policy, seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            ctx: Ctx::new(policy),
            keys: Keys::default(),
            sport_next: 0,
            flow_port_next: 0,
        }
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.rng.chance(num, den)
    }

    fn u32(&mut self) -> u32 {
        self.rng.next_u64() as u32
    }

    /// A source port, distinct for a long while (so every probe is its own 5-tuple), outside
    /// the host's ephemeral range and the DHCP ports.
    pub fn sport(&mut self) -> u16 {
        let n = self.sport_next;
        self.sport_next = self.sport_next.wrapping_add(1);
        // 1024..=39999 then 50000..=65535: 54,512 ports.
        let k = n % 54_512;
        if k < 38_976 {
            1024 + k as u16
        } else {
            50_000 + (k - 38_976) as u16
        }
    }

    /// A source from anywhere (documentation ranges and random public addresses).
    pub fn any_src(&mut self, v6: bool) -> IpAddr {
        for _ in 0..64 {
            let a: IpAddr = if v6 {
                if self.chance(1, 2) {
                    let mut s = [0u16; 8];
                    s[0] = 0x2001;
                    s[1] = 0xdb8;
                    for x in s.iter_mut().skip(2) {
                        *x = self.rng.next_u64() as u16;
                    }
                    Ipv6Addr::from(s).into()
                } else {
                    let v =
                        (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64());
                    // 2000::/3, global unicast.
                    Ipv6Addr::from((v & !(0b111u128 << 125)) | (0b001u128 << 125)).into()
                }
            } else {
                match self.rng.below(4) {
                    0 => Ipv4Addr::new(198, 51, 100, self.rng.byte()).into(),
                    1 => Ipv4Addr::new(203, 0, 113, self.rng.byte()).into(),
                    _ => Ipv4Addr::from(self.u32()).into(),
                }
            };
            if usable_source(a) {
                return a;
            }
        }
        if v6 {
            "2001:db8::77".parse().expect("literal")
        } else {
            "198.51.100.77".parse().expect("literal")
        }
    }

    /// A source inside one of `cidrs` (near an edge, or anywhere inside).
    fn inside(&mut self, cidrs: &[Cidr]) -> IpAddr {
        let c = *self.rng.pick(cidrs);
        let (lo, hi, v6) = cidr_bounds(&c);
        for _ in 0..16 {
            let span = hi - lo;
            let v = match self.rng.below(4) {
                0 => lo + u128::from(span >= 2),
                1 => hi - u128::from(span >= 2),
                _ => {
                    lo + (((u128::from(self.rng.next_u64()) << 64)
                        | u128::from(self.rng.next_u64()))
                        % (span + 1))
                }
            };
            let a = addr_of(v, v6);
            if usable_source(a) {
                return a;
            }
        }
        addr_of(lo, v6)
    }

    /// A source outside all of `cidrs`: just below or above one, or anywhere.
    fn outside(&mut self, cidrs: &[Cidr], v6: bool) -> IpAddr {
        for _ in 0..64 {
            let a = match self.rng.below(3) {
                0 | 1 => {
                    let c = *self.rng.pick(cidrs);
                    let (lo, hi, v6c) = cidr_bounds(&c);
                    let v = if self.chance(1, 2) {
                        lo.checked_sub(1)
                    } else {
                        hi.checked_add(1)
                            .filter(|v| v6c || *v <= u128::from(u32::MAX))
                    };
                    match v {
                        Some(v) => addr_of(v, v6c),
                        None => continue,
                    }
                }
                _ => self.any_src(v6),
            };
            if a.is_ipv6() == v6 && usable_source(a) && !cidrs.iter().any(|c| c.contains(&a)) {
                return a;
            }
        }
        self.any_src(v6)
    }

    fn random_port_in(&mut self, list: &[u16]) -> Option<u16> {
        (!list.is_empty()).then(|| *self.rng.pick(list))
    }

    /// A closed port: from the list, or random.
    fn closed_port(&mut self, proto: Proto, v6: bool) -> u16 {
        if self.chance(1, 2)
            && let Some(p) = self.random_port_in(&self.ctx.set(proto, v6).closed.clone())
        {
            return p;
        }
        for _ in 0..64 {
            let p = 1 + self.rng.below(65535) as u16;
            let src = self.any_src(v6);
            if !self.ctx.allows(proto, p, src)
                && matches!(port_access(&self.ctx.policy, proto, p, v6), Access::None)
            {
                return p;
            }
        }
        33333
    }

    /// 0: open to all; 1: closed; 2: restricted, allowed source; 3: restricted, refused source.
    /// Falls back to open/closed when the policy has no such port.
    fn target(&mut self, proto: Proto, v6: bool, kind: usize) -> Target {
        let set = self.ctx.set(proto, v6).clone();
        let mut kind = kind;
        if kind >= 2 && set.restricted.is_empty() {
            kind -= 2;
        }
        if kind == 0 && set.open.is_empty() {
            kind = 1;
        }
        let (port, src) = match kind {
            0 => (*self.rng.pick(&set.open), self.any_src(v6)),
            1 => (self.closed_port(proto, v6), self.any_src(v6)),
            2 => {
                let (p, c) = self.rng.pick(&set.restricted).clone();
                (p, self.inside(&c))
            }
            _ => {
                let (p, c) = self.rng.pick(&set.restricted).clone();
                (p, self.outside(&c, v6))
            }
        };
        Target {
            port,
            src,
            words: self.ctx.port_words(proto, port, src),
        }
    }

    fn payload(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.below(max + 1);
        (0..n).map(|_| self.rng.byte()).collect()
    }

    fn probe(
        &self,
        class: Class,
        v6: bool,
        key: u32,
        traits: u32,
        what: String,
        frames: Vec<Vec<u8>>,
    ) -> Probe {
        Probe {
            class,
            v6,
            key,
            traits,
            what,
            body: Body::Frames(frames),
        }
    }

    /// A whole TCP segment to the host.
    #[allow(clippy::too_many_arguments)]
    fn tcp_dgram(
        &mut self,
        v6: bool,
        src: IpAddr,
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
        key: u32,
    ) -> Dgram {
        let opts: &[u8] = if flags & SYN != 0 { &MSS_OPT } else { &[] };
        Dgram::new(
            src,
            host(v6),
            TCP,
            frames::tcp(sport, dport, seq, ack, flags, opts, payload),
            key,
        )
    }

    // -----------------------------------------------------------------------------------------
    // Stateless classes

    pub fn stateless(&mut self, class: Class, i: usize) -> Probe {
        match class {
            Class::TcpFlags => self.tcp_flags(i),
            Class::TcpPorts => self.tcp_ports(i),
            Class::TcpSources => self.tcp_sources(i),
            Class::Unrelated => self.unrelated(i),
            Class::Udp => self.udp(i),
            Class::Icmp => self.icmp(i),
            Class::OtherProto => self.other_proto(i),
            Class::Ipv4Options => self.ipv4_options(i),
            Class::Ipv6ExtHeaders => self.ipv6_ext(i),
            Class::Fragments => self.fragments(i),
            Class::Malformed => self.malformed(i),
            c => panic!("{c} is stateful"),
        }
    }

    fn tcp_flags(&mut self, i: usize) -> Probe {
        let v6 = i % 2 == 1;
        let six = ((i / 2) % 64) as u8;
        let kind = (i / 128) % 4;
        let extra = if i >= 512 && self.chance(1, 4) {
            self.rng.byte() & (tcp::ECE | tcp::CWR)
        } else {
            0
        };
        let flags = six | extra;
        let t = self.target(Proto::Tcp, v6, kind);
        let sport = self.sport();
        let seq = self.u32();
        let ack = if flags & ACK != 0 { self.u32() } else { 0 };
        let payload = if i >= 512 && self.chance(1, 4) {
            self.payload(40)
        } else {
            Vec::new()
        };
        let (key, _) = self.keys.take(v6, false);
        let d = self.tcp_dgram(v6, t.src, sport, t.port, flags, seq, ack, &payload, key);
        let what = format!(
            "{} TCP {} {}:{sport} -> {} ({}){}",
            fam(v6),
            flag_names(flags),
            t.src,
            t.port,
            t.words,
            if payload.is_empty() {
                String::new()
            } else {
                format!(", {} bytes", payload.len())
            }
        );
        self.probe(
            Class::TcpFlags,
            v6,
            key,
            tcp_new_traits(flags),
            what,
            vec![d.frame()],
        )
    }

    fn tcp_ports(&mut self, i: usize) -> Probe {
        let v6 = i % 2 == 1;
        // The systematic part: every candidate port of both sets, as a SYN from anywhere.
        let set = self.ctx.set(Proto::Tcp, v6).clone();
        let all: Vec<u16> = set
            .open
            .iter()
            .copied()
            .chain(set.restricted.iter().map(|(p, _)| *p))
            .chain(set.closed.iter().copied())
            .collect();
        let j = i / 2;
        let port = if j < all.len() {
            all[j]
        } else if self.chance(1, 3) {
            1 + self.rng.below(65535) as u16
        } else {
            *self.rng.pick(&all)
        };
        let src = match set.restricted.iter().find(|(p, _)| *p == port) {
            Some((_, c)) if self.chance(1, 2) => {
                let c = c.clone();
                self.inside(&c)
            }
            Some((_, c)) => {
                let c = c.clone();
                self.outside(&c, v6)
            }
            None => self.any_src(v6),
        };
        let flags = match self.rng.below(6) {
            0 => SYN | tcp::ECE | tcp::CWR,
            1 => SYN | PSH,
            _ => SYN,
        };
        let sport = self.sport();
        let seq = self.u32();
        let (key, _) = self.keys.take(v6, false);
        let d = self.tcp_dgram(v6, src, sport, port, flags, seq, 0, &[], key);
        let what = format!(
            "{} TCP {} {src}:{sport} -> {port} ({})",
            fam(v6),
            flag_names(flags),
            self.ctx.port_words(Proto::Tcp, port, src)
        );
        self.probe(Class::TcpPorts, v6, key, 0, what, vec![d.frame()])
    }

    fn tcp_sources(&mut self, i: usize) -> Probe {
        let v6 = i % 2 == 1;
        let set = self.ctx.set(Proto::Tcp, v6).clone();
        if set.restricted.is_empty() {
            // No source-restricted port in this family: sources against open and closed ports.
            return self.tcp_ports(i);
        }
        let (port, cidrs) = set.restricted[(i / 2) % set.restricted.len()].clone();
        let src = if (i / 2 / set.restricted.len()).is_multiple_of(2) {
            self.inside(&cidrs)
        } else {
            self.outside(&cidrs, v6)
        };
        let flags = if self.chance(1, 5) { ACK } else { SYN };
        let sport = self.sport();
        let seq = self.u32();
        let ack = if flags & ACK != 0 { self.u32() } else { 0 };
        let (key, _) = self.keys.take(v6, false);
        let d = self.tcp_dgram(v6, src, sport, port, flags, seq, ack, &[], key);
        let what = format!(
            "{} TCP {} {src}:{sport} -> {port} ({})",
            fam(v6),
            flag_names(flags),
            self.ctx.port_words(Proto::Tcp, port, src)
        );
        self.probe(
            Class::TcpSources,
            v6,
            key,
            tcp_new_traits(flags),
            what,
            vec![d.frame()],
        )
    }

    fn unrelated(&mut self, i: usize) -> Probe {
        const FLAGS: [u8; 10] = [
            ACK,
            PSH | ACK,
            FIN | ACK,
            FIN | PSH | ACK,
            RST,
            RST | ACK,
            SYN | ACK,
            URG | ACK,
            ACK | tcp::ECE,
            ACK | tcp::CWR,
        ];
        let flags = FLAGS[i % FLAGS.len()];
        let kind = (i / FLAGS.len()) % 3;
        let v6 = (i / (FLAGS.len() * 3)) % 2 == 1;
        let t = self.target(Proto::Tcp, v6, kind);
        let sport = self.sport();
        let seq = self.u32();
        let ack = if flags & ACK != 0 { self.u32() } else { 0 };
        let payload = if flags & PSH != 0 {
            let mut p = self.payload(100);
            p.push(b'\n');
            p
        } else {
            Vec::new()
        };
        let (key, _) = self.keys.take(v6, false);
        let d = self.tcp_dgram(v6, t.src, sport, t.port, flags, seq, ack, &payload, key);
        let what = format!(
            "{} TCP {} {}:{sport} -> {} ({}), no connection",
            fam(v6),
            flag_names(flags),
            t.src,
            t.port,
            t.words
        );
        self.probe(
            Class::Unrelated,
            v6,
            key,
            tcp_new_traits(flags),
            what,
            vec![d.frame()],
        )
    }

    fn udp(&mut self, i: usize) -> Probe {
        let v6 = i % 2 == 1;
        let variant = (i / 2) % 8;
        let (src, sport, dst, dport, words, traits): (IpAddr, u16, IpAddr, u16, String, u32) =
            match variant {
                0..=2 => {
                    let t = self.target(Proto::Udp, v6, variant.min(2));
                    let sp = self.sport();
                    (t.src, sp, host(v6), t.port, t.words.to_string(), 0)
                }
                3 => {
                    let t = self.target(Proto::Udp, v6, 3);
                    let sp = self.sport();
                    (t.src, sp, host(v6), t.port, t.words.to_string(), 0)
                }
                4 => {
                    // A DHCP reply to the host's client (unicast, or broadcast as servers send it).
                    let (sp, dp) = if v6 { (547, 546) } else { (67, 68) };
                    let dst = if self.chance(1, 2) {
                        host(v6)
                    } else if v6 {
                        "ff02::1".parse().expect("literal")
                    } else {
                        Ipv4Addr::BROADCAST.into()
                    };
                    let src = if v6 {
                        "fe80::1".parse().expect("literal")
                    } else {
                        self.any_src(false)
                    };
                    (src, sp, dst, dp, "DHCP reply".into(), tr::DHCP_REPLY)
                }
                5 => {
                    // An answer nobody asked for (DNS, NTP) to a high port.
                    let sp = if self.chance(1, 2) { 53 } else { 123 };
                    let dp = EPHEMERAL.0 + self.rng.below(10_000) as u16;
                    let src = self.any_src(v6);
                    (src, sp, host(v6), dp, "unsolicited answer".into(), 0)
                }
                6 => {
                    // To a broadcast / multicast address.
                    let dst: IpAddr = if v6 {
                        "ff02::1".parse().expect("literal")
                    } else if self.chance(1, 2) {
                        Ipv4Addr::BROADCAST.into()
                    } else {
                        Ipv4Addr::new(10, 77, 0, 255).into()
                    };
                    let t = {
                        let k = self.rng.below(2);
                        self.target(Proto::Udp, v6, k)
                    };
                    let sp = self.sport();
                    let src = if v6 {
                        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99).into()
                    } else {
                        t.src
                    };
                    (
                        src,
                        sp,
                        dst,
                        t.port,
                        format!("{} port, to {dst}", t.words),
                        0,
                    )
                }
                _ => {
                    let src = self.any_src(v6);
                    let dp = 1 + self.rng.below(65535) as u16;
                    let sp = self.sport();
                    let w = self.ctx.port_words(Proto::Udp, dp, src);
                    (src, sp, host(v6), dp, w.to_string(), 0)
                }
            };
        let payload = self.payload(200);
        let (key, _) = self.keys.take(v6, false);
        let d = Dgram::new(src, dst, UDP, frames::udp(sport, dport, &payload), key);
        let what = format!(
            "{} UDP {src}:{sport} -> {dst}:{dport} ({words}), {} bytes",
            fam(v6),
            payload.len()
        );
        self.probe(Class::Udp, v6, key, traits, what, vec![d.frame()])
    }

    /// An IP packet the host could have sent to somewhere (for ICMP errors to quote): its
    /// header and the first 8 bytes of its transport header.
    fn quoted(&mut self, v6: bool, proto: u8, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
        let l4 = match proto {
            TCP => frames::tcp(sport, dport, self.u32(), 0, SYN, &[], &[]),
            UDP => frames::udp(sport, dport, &[0; 12]),
            _ => frames::icmp(
                if v6 { 128 } else { 8 },
                0,
                [(sport >> 8) as u8, sport as u8, 0, 1],
                &[],
            ),
        };
        let d = Dgram::new(host(v6), dst, proto, l4, self.u32());
        let f = d.frame();
        let ip = &f[frames::ETH_HLEN..];
        let hl = if v6 { 40 } else { 20 };
        ip[..(hl + 8).min(ip.len())].to_vec()
    }

    fn icmp(&mut self, i: usize) -> Probe {
        const V4: [u8; 24] = [
            0, 3, 3, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 30, 37, 40, 42, 43, 253,
            255,
        ];
        const V6: [u8; 28] = [
            1, 1, 2, 3, 4, 100, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139,
            140, 141, 142, 143, 151, 152, 153, 200, 255,
        ];
        let v6 = i % 2 == 1;
        let j = i / 2;
        let ty = if v6 {
            V6[j % V6.len()]
        } else {
            V4[j % V4.len()]
        };
        let code = match (v6, ty) {
            (false, 3) => [0u8, 1, 3, 4][(j / V4.len()) % 4],
            (true, 1) => [0u8, 1, 3, 4][(j / V6.len()) % 4],
            _ if j >= V4.len() * 4 && self.chance(1, 4) => self.rng.byte(),
            _ => 0,
        };
        let src = if v6 && (133..=137).contains(&ty) && self.chance(1, 2) {
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99).into()
        } else {
            self.any_src(v6)
        };
        let dst: IpAddr = if self.chance(1, 6) {
            if v6 {
                "ff02::1".parse().expect("literal")
            } else {
                Ipv4Addr::new(10, 77, 0, 255).into()
            }
        } else {
            host(v6)
        };
        let error = if v6 {
            (1..=4).contains(&ty)
        } else {
            matches!(ty, 3 | 4 | 5 | 11 | 12)
        };
        let (rest, body): ([u8; 4], Vec<u8>) = if error {
            let proto = *self.rng.pick(&[TCP, UDP, if v6 { ICMPV6 } else { ICMP }]);
            let far = self.any_src(v6);
            let (sp, dp) = (
                EPHEMERAL.0 + self.rng.below(10_000) as u16,
                *self.rng.pick(&[53u16, 80, 443, 123]),
            );
            let q = self.quoted(v6, proto, far, sp, dp);
            let rest = match (v6, ty) {
                (false, 3) if code == 4 => [0, 0, 0x05, 0x00],
                (true, 2) => 1280u32.to_be_bytes(),
                _ => [0; 4],
            };
            (rest, q)
        } else if v6 && ty == 135 {
            // Neighbour solicitation for the host's address.
            (
                [0; 4],
                H6.octets()
                    .iter()
                    .copied()
                    .chain([1, 1, 2, 0x77, 0, 0, 0, 0xaa])
                    .collect(),
            )
        } else if v6 && ty == 136 {
            (
                [0x60, 0, 0, 0],
                Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 9)
                    .octets()
                    .to_vec(),
            )
        } else {
            let id = self.rng.next_u64() as u16;
            let p = self.payload(56);
            ([(id >> 8) as u8, id as u8, 0, 1], p)
        };
        let proto = if v6 { ICMPV6 } else { ICMP };
        let (key, _) = self.keys.take(v6, false);
        let mut d = Dgram::new(src, dst, proto, frames::icmp(ty, code, rest, &body), key);
        if v6 && (130..=143).contains(&ty) {
            d.ttl = if (130..=132).contains(&ty) || ty == 143 {
                1
            } else {
                255
            };
        }
        let traits = if v6 && ty == 137 {
            tr::ICMPV6_REDIRECT
        } else {
            0
        };
        let what = format!(
            "{} ICMP type {ty} code {code} {src} -> {dst}{}",
            fam(v6),
            if error {
                " (quoting a flow nobody opened)"
            } else {
                ""
            }
        );
        self.probe(Class::Icmp, v6, key, traits, what, vec![d.frame()])
    }

    fn other_proto(&mut self, i: usize) -> Probe {
        const V4: [u8; 16] = [
            0, 2, 4, 41, 47, 50, 51, 58, 89, 103, 112, 132, 136, 253, 254, 255,
        ];
        const V6: [u8; 12] = [4, 41, 47, 50, 59, 89, 103, 112, 132, 136, 253, 255];
        let v6 = i % 2 == 1;
        let j = i / 2;
        let proto = if v6 {
            V6[j % V6.len()]
        } else {
            V4[j % V4.len()]
        };
        let src = self.any_src(v6);
        let payload = if proto == NONXT {
            Vec::new()
        } else {
            let mut p = self.payload(64);
            p.resize(p.len().max(8), 0);
            p
        };
        let (key, _) = self.keys.take(v6, false);
        let d = Dgram::new(src, host(v6), proto, payload.clone(), key);
        let what = format!(
            "{} protocol {proto} from {src}, {} bytes",
            fam(v6),
            payload.len()
        );
        self.probe(Class::OtherProto, v6, key, 0, what, vec![d.frame()])
    }

    fn ipv4_options(&mut self, i: usize) -> Probe {
        // (bytes, name)
        let opts: [(Vec<u8>, &str); 12] = [
            (vec![1, 1, 1, 1], "4 NOPs"),
            (vec![1; 40], "40 NOPs"),
            (vec![0, 0, 0, 0], "EOL"),
            (vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0], "record route"),
            (vec![68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0], "timestamp"),
            (vec![148, 4, 0, 0], "router alert"),
            (vec![131, 7, 4, 198, 51, 100, 1], "loose source route"),
            (vec![137, 7, 4, 198, 51, 100, 1], "strict source route"),
            (vec![130, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0], "security"),
            (vec![0x9e, 4, 0, 0], "unknown option 158"),
            (vec![7, 0, 4, 0], "option length 0"),
            (vec![68, 40, 5, 0], "option longer than the header"),
        ];
        let (o, name) = opts[i % opts.len()].clone();
        let kind = (i / opts.len()) % 3;
        let (proto, t) = if kind == 2 {
            (Proto::Udp, {
                let k = self.rng.below(2);
                self.target(Proto::Udp, false, k)
            })
        } else {
            (Proto::Tcp, self.target(Proto::Tcp, false, kind))
        };
        let sport = self.sport();
        let (key, _) = self.keys.take(false, false);
        let mut d = if proto == Proto::Tcp {
            let seq = self.u32();
            self.tcp_dgram(false, t.src, sport, t.port, SYN, seq, 0, &[], key)
        } else {
            let p = self.payload(40);
            Dgram::new(t.src, host(false), UDP, frames::udp(sport, t.port, &p), key)
        };
        d.v4_opts = o;
        let what = format!(
            "v4 {} {}:{sport} -> {} ({}) with IP options: {name}",
            if proto == Proto::Tcp {
                "TCP SYN"
            } else {
                "UDP"
            },
            t.src,
            t.port,
            t.words
        );
        self.probe(Class::Ipv4Options, false, key, 0, what, vec![d.frame()])
    }

    fn ipv6_ext(&mut self, i: usize) -> Probe {
        // Chain length 1..=9 (fw walks 6), types and sizes drawn.
        let n = 1 + (i % 9);
        let mut chain: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut words = Vec::new();
        for k in 0..n {
            // Hop-by-hop first half the time, and now and then later (the stack refuses that).
            let hop = if k == 0 {
                self.chance(1, 2)
            } else {
                self.chance(1, 12)
            };
            let ty = if hop {
                HOPOPTS
            } else {
                *self.rng.pick(&[DSTOPTS, DSTOPTS, ROUTING, AH])
            };
            let big = self.chance(1, 8);
            let len8 = if ty == AH {
                2
            } else {
                1 + self.rng.below(if big { 20 } else { 3 })
            };
            chain.push((ty, frames::v6_ext(ty, len8)));
            words.push(match ty {
                HOPOPTS => "hop-by-hop",
                DSTOPTS => "dest-opts",
                ROUTING => "routing",
                _ => "AH",
            });
        }
        let ext_len: usize = chain.iter().map(|(_, b)| b.len()).sum();
        let kind = (i / 9) % 5;
        let src = self.any_src(true);
        let (key, _) = self.keys.take(true, false);
        let (d, what_l4) = match kind {
            0..=2 => {
                let t = self.target(Proto::Tcp, true, kind.min(1));
                let sport = self.sport();
                let seq = self.u32();
                let d = self.tcp_dgram(true, t.src, sport, t.port, SYN, seq, 0, &[], key);
                (d, format!("TCP SYN -> {} ({})", t.port, t.words))
            }
            3 => {
                let t = {
                    let k = self.rng.below(2);
                    self.target(Proto::Udp, true, k)
                };
                let sport = self.sport();
                let p = self.payload(40);
                (
                    Dgram::new(t.src, host(true), UDP, frames::udp(sport, t.port, &p), key),
                    format!("UDP -> {} ({})", t.port, t.words),
                )
            }
            _ => (
                Dgram::new(src, host(true), NONXT, Vec::new(), key),
                "no next header".into(),
            ),
        };
        let mut d = d;
        d.v6_ext = chain;
        let hop_later = d.v6_ext.iter().skip(1).any(|(t, _)| *t == HOPOPTS);
        let long = n > fw_common::packet::MAX_EXT_HEADERS
            || frames::ETH_HLEN + 40 + ext_len > fw_common::packet::MAX_L4_OFFSET;
        let what = format!(
            "v6 {what_l4} behind {n} extension headers ({}; {ext_len} bytes){}",
            words.join(", "),
            if hop_later {
                ", hop-by-hop not first"
            } else {
                ""
            }
        );
        let mut traits = if long { tr::LONG_EXT_CHAIN } else { 0 };
        if d.v6_ext.iter().any(|(t, _)| *t == AH) {
            traits |= tr::V6_AH;
        }
        self.probe(
            Class::Ipv6ExtHeaders,
            true,
            key,
            traits,
            what,
            vec![d.frame()],
        )
    }

    fn fragments(&mut self, i: usize) -> Probe {
        const SCENARIOS: usize = 17;
        let sc = i % SCENARIOS;
        let v6 = (i / SCENARIOS) % 2 == 1;
        let (key, frag_id) = self.keys.take(v6, true);
        let sport = self.sport();
        let seq = self.u32();
        let mut traits = 0;
        // The datagrams the scenarios cut.
        let tcp_to = |g: &mut Gen, kind: usize| -> (Dgram, String) {
            let t = g.target(Proto::Tcp, v6, kind);
            let payload: Vec<u8> = (0..40).map(|_| g.rng.byte()).collect();
            let d = g.tcp_dgram(v6, t.src, sport, t.port, SYN, seq, 0, &payload, key);
            (
                d,
                format!("TCP SYN {}:{sport} -> {} ({})", t.src, t.port, t.words),
            )
        };
        let (frames, what): (Vec<Vec<u8>>, String) = match sc {
            // Whole datagrams in two or three fragments, in order and reversed.
            0..=3 => {
                let (d, w) = tcp_to(self, sc);
                let n = d.l4.len();
                (
                    d.fragments(&[(0, 24), (24, n)], frag_id),
                    format!("{w}, 2 fragments"),
                )
            }
            4 => {
                let (d, w) = tcp_to(self, 0);
                let n = d.l4.len();
                (
                    d.fragments(&[(48, n), (24, 48), (0, 24)], frag_id),
                    format!("{w}, 3 fragments, last first"),
                )
            }
            5 | 6 => {
                let t = self.target(Proto::Udp, v6, sc - 5);
                let p: Vec<u8> = (0..64).map(|_| self.rng.byte()).collect();
                let d = Dgram::new(t.src, host(v6), UDP, frames::udp(sport, t.port, &p), key);
                let n = d.l4.len();
                (
                    d.fragments(&[(0, 16), (16, n)], frag_id),
                    format!(
                        "UDP {}:{sport} -> {} ({}), 2 fragments",
                        t.src, t.port, t.words
                    ),
                )
            }
            7 => {
                let src = self.any_src(v6);
                let (ty, proto) = if v6 { (128, ICMPV6) } else { (8, ICMP) };
                let p: Vec<u8> = (0..64).map(|_| self.rng.byte()).collect();
                let d = Dgram::new(
                    src,
                    host(v6),
                    proto,
                    frames::icmp(ty, 0, [0, 9, 0, 1], &p),
                    key,
                );
                let n = d.l4.len();
                (
                    d.fragments(&[(0, 32), (32, n)], frag_id),
                    format!("echo request from {src}, 2 fragments"),
                )
            }
            // A first fragment that does not hold the whole TCP header (RFC 1858).
            8 | 9 => {
                let (d, w) = tcp_to(self, 0);
                let n = d.l4.len();
                let cut = if sc == 8 { 8 } else { 16 };
                traits |= tr::TINY_FRAGMENT;
                (
                    d.fragments(&[(0, cut), (cut, n)], frag_id),
                    format!("{w}, first fragment only {cut} bytes of TCP header"),
                )
            }
            // Overlaps: a fragment at offset 8 rewriting the flags, a second first fragment
            // with another port.
            10 => {
                let (d, w) = tcp_to(self, 0);
                let n = d.l4.len();
                let mut other = d.clone();
                other.l4[13] = ACK | PSH;
                frames::set_l4_checksum(TCP, other.src, other.dst, &mut other.l4);
                let f = vec![
                    d.fragment(0, 24, true, frag_id),
                    other.fragment(8, n, false, frag_id),
                ];
                (
                    f,
                    format!("{w}, then a fragment at offset 8 rewriting the flags"),
                )
            }
            11 => {
                let (d, w) = tcp_to(self, 0);
                let n = d.l4.len();
                let (closed, _) = tcp_to(self, 1);
                let mut other = d.clone();
                other.l4[2..4].copy_from_slice(&closed.l4[2..4]);
                let f = vec![
                    d.fragment(0, 24, true, frag_id),
                    other.fragment(0, 24, true, frag_id),
                    d.fragment(24, n, false, frag_id),
                ];
                (
                    f,
                    format!("{w}, and an overlapping first fragment to another port"),
                )
            }
            16 => {
                // The same first fragment twice, to a closed port and then to an open one: the
                // kernel keeps the first of two fragments with the same range.
                let (d, w) = tcp_to(self, 0);
                let n = d.l4.len();
                let (closed, _) = tcp_to(self, 1);
                let mut first = d.clone();
                first.l4[2..4].copy_from_slice(&closed.l4[2..4]);
                frames::set_l4_checksum(TCP, first.src, first.dst, &mut first.l4);
                let f = vec![
                    first.fragment(0, 24, true, frag_id),
                    d.fragment(0, 24, true, frag_id),
                    d.fragment(24, n, false, frag_id),
                ];
                traits |= tr::DUP_FIRST_FRAGMENT;
                (
                    f,
                    format!("{w}, after a first fragment with the same range to a closed port"),
                )
            }
            // Parts that never make a datagram.
            12 => {
                let (d, w) = tcp_to(self, 0);
                (
                    vec![d.fragment(0, 24, true, frag_id)],
                    format!("{w}, first fragment alone"),
                )
            }
            13 => {
                let (d, w) = {
                    let k = self.rng.below(2);
                    tcp_to(self, k)
                };
                let n = d.l4.len();
                (
                    vec![d.fragment(24, n, false, frag_id)],
                    format!("{w}, last fragment alone"),
                )
            }
            14 => {
                if v6 {
                    let (d, w) = {
                        let k = self.rng.below(2);
                        tcp_to(self, k)
                    };
                    (
                        vec![d.atomic_fragment(frag_id)],
                        format!("{w}, atomic fragment"),
                    )
                } else {
                    let (d, w) = tcp_to(self, 0);
                    let n = d.l4.len();
                    // An offset-8 TCP fragment alone (it could only rewrite the flags).
                    (
                        vec![d.fragment(8, n, false, frag_id)],
                        format!("{w}, offset-8 fragment alone"),
                    )
                }
            }
            _ => {
                if v6 {
                    // The header chain does not end in the first fragment: destination options
                    // (16 bytes) in front of TCP, cut after 8 of them.
                    let (d, w) = tcp_to(self, 0);
                    let mut inner = frames::v6_ext(DSTOPTS, 2);
                    inner[0] = TCP;
                    inner.extend_from_slice(&d.l4);
                    let mut dd = d.clone();
                    dd.proto = DSTOPTS;
                    dd.l4 = inner;
                    let n = dd.l4.len();
                    traits |= tr::TINY_FRAGMENT;
                    (
                        dd.fragments(&[(0, 8), (8, n)], frag_id),
                        format!("{w}, header chain continues into the second fragment"),
                    )
                } else {
                    // Fragments of a datagram longer than 65535 bytes (ping of death).
                    let src = self.any_src(false);
                    let p = vec![0u8; 64];
                    let d = Dgram::new(
                        src,
                        host(false),
                        ICMP,
                        frames::icmp(8, 0, [0, 9, 0, 1], &p),
                        key,
                    );
                    let mut f = d.fragment(0, 32, true, frag_id);
                    let mut last = d.fragment(32, 72, false, frag_id);
                    // Offset 65528: the datagram would end beyond 65535 bytes.
                    last[frames::ETH_HLEN + 6..frames::ETH_HLEN + 8]
                        .copy_from_slice(&(65528u16 / 8).to_be_bytes());
                    frames::fix_v4_header_checksum(&mut last);
                    let _ = &mut f;
                    (
                        vec![f, last],
                        format!("echo request from {src}, last fragment at offset 65528"),
                    )
                }
            }
        };
        let what = format!("{} {what}", fam(v6));
        self.probe(Class::Fragments, v6, key, traits, what, frames)
    }

    fn malformed(&mut self, i: usize) -> Probe {
        const V4: usize = 22;
        const V6: usize = 14;
        let v6 = i % 2 == 1;
        let j = i / 2;
        let sc = if v6 { j % V6 } else { j % V4 };
        let (key, _) = self.keys.take(v6, false);
        let sport = self.sport();
        let seq = self.u32();
        // The base: a SYN to an open port (or closed, now and then), or a UDP datagram.
        let kind = if self.chance(1, 4) { 1 } else { 0 };
        let t = self.target(Proto::Tcp, v6, kind);
        let base = self.tcp_dgram(v6, t.src, sport, t.port, SYN, seq, 0, &[], key);
        let words = format!("TCP SYN {}:{sport} -> {} ({})", t.src, t.port, t.words);
        let ut = {
            let k = self.rng.below(2);
            self.target(Proto::Udp, v6, k)
        };
        let up = self.payload(40);
        let ubase = Dgram::new(ut.src, host(v6), UDP, frames::udp(sport, ut.port, &up), key);
        let uwords = format!("UDP {}:{sport} -> {} ({})", ut.src, ut.port, ut.words);
        let ip = frames::ETH_HLEN;
        let l4 = if v6 { ip + 40 } else { ip + 20 };
        let mut traits = 0;
        let (frame, what): (Vec<u8>, String) = if !v6 {
            match sc {
                0..=2 => {
                    // Cut anywhere (IP header, TCP header, options).
                    let f = base.frame();
                    let cut = ip + 1 + self.rng.below(f.len() - ip - 1);
                    (
                        f[..cut].to_vec(),
                        format!("{words}, frame cut to {cut} of {} bytes", f.len()),
                    )
                }
                3 => {
                    let mut f = base.frame();
                    f[ip] = 0x65;
                    frames::fix_v4_header_checksum(&mut f);
                    (f, format!("{words}, IP version 6 in an IPv4 frame"))
                }
                4 => {
                    let mut f = base.frame();
                    let ihl = self.rng.below(5) as u8;
                    f[ip] = 0x40 | ihl;
                    (f, format!("{words}, IHL {ihl}"))
                }
                5 => {
                    let mut f = base.frame();
                    f[ip] = 0x4f;
                    (
                        f,
                        format!("{words}, IHL 15 (60 bytes) over a 20-byte header"),
                    )
                }
                6 => {
                    let mut f = base.frame();
                    let tot = 10u16;
                    f[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
                    frames::fix_v4_header_checksum(&mut f);
                    (f, format!("{words}, total length {tot} (under the header)"))
                }
                7 => {
                    let mut f = base.frame();
                    let tot = 20 + 12u16;
                    f[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
                    frames::fix_v4_header_checksum(&mut f);
                    traits |= tr::MALFORMED_L4;
                    (
                        f,
                        format!("{words}, total length cuts the TCP header to 12 bytes"),
                    )
                }
                8 => {
                    let mut f = base.frame();
                    let tot = (f.len() - ip + 30) as u16;
                    f[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
                    frames::fix_v4_header_checksum(&mut f);
                    (
                        f,
                        format!("{words}, total length 30 bytes beyond the frame"),
                    )
                }
                9 => {
                    let mut f = base.frame();
                    f[ip + 10] ^= 0x5a;
                    (f, format!("{words}, bad IP header checksum"))
                }
                10 => {
                    let mut f = base.frame();
                    f.extend_from_slice(&[0u8; 18]);
                    (f, format!("{words}, 18 bytes of Ethernet padding"))
                }
                11 => {
                    let mut d = base.clone();
                    let martians: [Ipv4Addr; 5] = [
                        Ipv4Addr::LOCALHOST,
                        Ipv4Addr::UNSPECIFIED,
                        Ipv4Addr::new(224, 0, 0, 1),
                        Ipv4Addr::BROADCAST,
                        H4,
                    ];
                    d.src = (*self.rng.pick(&martians)).into();
                    d.l4 = frames::tcp(sport, t.port, seq, 0, SYN, &MSS_OPT, &[]);
                    frames::set_l4_checksum(TCP, d.src, d.dst, &mut d.l4);
                    (
                        d.frame(),
                        format!("TCP SYN from {} (martian source) -> {}", d.src, t.port),
                    )
                }
                12 => {
                    let mut f = base.frame();
                    let doff = self.rng.below(5) as u8;
                    f[l4 + 12] = doff << 4;
                    let (s, dd) = (base.src, base.dst);
                    frames::set_l4_checksum(TCP, s, dd, &mut f[l4..]);
                    traits |= tr::MALFORMED_L4;
                    (f, format!("{words}, TCP data offset {doff}"))
                }
                13 => {
                    let mut f = base.frame();
                    f[l4 + 12] = 15 << 4;
                    let (s, dd) = (base.src, base.dst);
                    frames::set_l4_checksum(TCP, s, dd, &mut f[l4..]);
                    traits |= tr::MALFORMED_L4;
                    (f, format!("{words}, TCP data offset 15 beyond the segment"))
                }
                14 => {
                    let mut f = base.frame();
                    f[l4 + 16] ^= 0x33;
                    traits |= tr::BAD_L4_CSUM;
                    (f, format!("{words}, bad TCP checksum"))
                }
                15 => {
                    let mut f = ubase.frame();
                    f[l4 + 6] ^= 0x33;
                    traits |= tr::BAD_L4_CSUM;
                    (f, format!("{uwords}, bad UDP checksum"))
                }
                16 => {
                    let mut f = ubase.frame();
                    f[l4 + 6] = 0;
                    f[l4 + 7] = 0;
                    (f, format!("{uwords}, no UDP checksum (0)"))
                }
                17 => {
                    let mut f = ubase.frame();
                    let ulen = (ubase.l4.len() + 20) as u16;
                    f[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
                    let (s, dd) = (ubase.src, ubase.dst);
                    frames::set_l4_checksum(UDP, s, dd, &mut f[l4..]);
                    traits |= tr::MALFORMED_L4;
                    (
                        f,
                        format!("{uwords}, UDP length 20 bytes beyond the datagram"),
                    )
                }
                18 => {
                    let mut f = ubase.frame();
                    f[l4 + 4..l4 + 6].copy_from_slice(&4u16.to_be_bytes());
                    let (s, dd) = (ubase.src, ubase.dst);
                    frames::set_l4_checksum(UDP, s, dd, &mut f[l4..]);
                    traits |= tr::MALFORMED_L4;
                    (f, format!("{uwords}, UDP length 4"))
                }
                19 => {
                    let src = self.any_src(false);
                    let mut d = Dgram::new(
                        src,
                        host(false),
                        ICMP,
                        frames::icmp(8, 0, [0, 1, 0, 1], b"ping"),
                        key,
                    );
                    d.l4[2] ^= 0x44;
                    traits |= tr::BAD_L4_CSUM;
                    (
                        d.frame(),
                        format!("echo request from {src}, bad ICMP checksum"),
                    )
                }
                20 => {
                    let src = self.any_src(false);
                    let d = Dgram::new(src, host(false), ICMP, vec![8, 0, 0xf7, 0xff], key);
                    (d.frame(), format!("ICMP from {src}, 4 bytes"))
                }
                _ => {
                    // An 802.1Q tag the host has no VLAN device for.
                    let mut f = base.frame();
                    let tag = [0x81, 0x00, 0x00, 0x05];
                    f.splice(12..12, tag);
                    (f, format!("{words}, in VLAN 5"))
                }
            }
        } else {
            match sc {
                0..=2 => {
                    let f = base.frame();
                    let cut = ip + 1 + self.rng.below(f.len() - ip - 1);
                    (
                        f[..cut].to_vec(),
                        format!("{words}, frame cut to {cut} of {} bytes", f.len()),
                    )
                }
                3 => {
                    let mut f = base.frame();
                    f[ip] = (f[ip] & 0x0f) | 0x40;
                    (f, format!("{words}, IP version 4 in an IPv6 frame"))
                }
                4 => {
                    let mut f = base.frame();
                    let plen = (f.len() - l4 + 30) as u16;
                    f[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
                    (
                        f,
                        format!("{words}, payload length 30 bytes beyond the frame"),
                    )
                }
                5 => {
                    let mut f = base.frame();
                    f[ip + 4..ip + 6].copy_from_slice(&12u16.to_be_bytes());
                    traits |= tr::MALFORMED_L4;
                    (
                        f,
                        format!("{words}, payload length cuts the TCP header to 12 bytes"),
                    )
                }
                6 => {
                    let mut f = base.frame();
                    f.extend_from_slice(&[0u8; 18]);
                    (f, format!("{words}, 18 bytes of Ethernet padding"))
                }
                7 => {
                    let mut d = base.clone();
                    let martians: [Ipv6Addr; 4] = [
                        Ipv6Addr::LOCALHOST,
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                        Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(),
                        H6,
                    ];
                    d.src = (*self.rng.pick(&martians)).into();
                    d.l4 = frames::tcp(sport, t.port, seq, 0, SYN, &MSS_OPT, &[]);
                    frames::set_l4_checksum(TCP, d.src, d.dst, &mut d.l4);
                    (
                        d.frame(),
                        format!("TCP SYN from {} (martian source) -> {}", d.src, t.port),
                    )
                }
                8 => {
                    let mut f = base.frame();
                    f[l4 + 12] = 15 << 4;
                    let (s, dd) = (base.src, base.dst);
                    frames::set_l4_checksum(TCP, s, dd, &mut f[l4..]);
                    traits |= tr::MALFORMED_L4;
                    (f, format!("{words}, TCP data offset 15 beyond the segment"))
                }
                9 => {
                    let mut f = base.frame();
                    f[l4 + 16] ^= 0x33;
                    traits |= tr::BAD_L4_CSUM;
                    (f, format!("{words}, bad TCP checksum"))
                }
                10 => {
                    let mut f = ubase.frame();
                    f[l4 + 6] = 0;
                    f[l4 + 7] = 0;
                    traits |= tr::BAD_L4_CSUM;
                    (f, format!("{uwords}, UDP checksum 0 (not allowed in IPv6)"))
                }
                11 => {
                    let mut f = ubase.frame();
                    let ulen = (ubase.l4.len() + 20) as u16;
                    f[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
                    let (s, dd) = (ubase.src, ubase.dst);
                    frames::set_l4_checksum(UDP, s, dd, &mut f[l4..]);
                    traits |= tr::MALFORMED_L4;
                    (
                        f,
                        format!("{uwords}, UDP length 20 bytes beyond the datagram"),
                    )
                }
                12 => {
                    // Payload length 0 with a hop-by-hop header: a jumbogram without the option.
                    let mut d = base.clone();
                    d.v6_ext = vec![(HOPOPTS, frames::v6_ext(HOPOPTS, 1))];
                    let mut f = d.frame();
                    f[ip + 4] = 0;
                    f[ip + 5] = 0;
                    traits |= tr::JUMBOGRAM;
                    (
                        f,
                        format!("{words}, payload length 0 behind hop-by-hop (jumbogram)"),
                    )
                }
                _ => {
                    let mut f = base.frame();
                    let tag = [0x81, 0x00, 0x00, 0x05];
                    f.splice(12..12, tag);
                    (f, format!("{words}, in VLAN 5"))
                }
            }
        };
        let _ = FRAGMENT;
        self.probe(
            Class::Malformed,
            v6,
            key,
            traits,
            format!("{} {what}", fam(v6)),
            vec![frame],
        )
    }

    // -----------------------------------------------------------------------------------------
    // Stateful flows

    /// The server port of a flow the host opens: a different one for every flow, so that
    /// no two flows share a 4-tuple even when the host reuses an ephemeral port (the new flow
    /// would meet the old one's conntrack and fw state). Outside the hosts' ephemeral range,
    /// where the scripts' "another source port" comes from.
    fn remote_port(&mut self) -> u16 {
        let n = self.flow_port_next;
        self.flow_port_next = self.flow_port_next.wrapping_add(1);
        // 1..=39999 then 50000..=65535: 55,535 ports.
        let k = (n % 55_535) as u16;
        if k < 39_999 {
            1 + k
        } else {
            50_000 + (k - 39_999)
        }
    }

    /// A server somewhere the host talks to: the gateway itself, or an address behind it.
    fn remote(&mut self, v6: bool) -> IpAddr {
        if self.chance(1, 4) {
            if v6 { PEER6.into() } else { PEER4.into() }
        } else {
            self.any_src(v6)
        }
    }

    /// The flows of `class`, numbered from `first_flow`, with `wanted` probes between them
    /// (at least); each step gets its key.
    pub fn flows(&mut self, class: Class, wanted: usize) -> Vec<FlowSpec> {
        let mut out: Vec<FlowSpec> = Vec::new();
        let mut n = 0usize;
        let mut i = 0usize;
        while n < wanted {
            let f = match class {
                Class::ReplyTcp => self.reply_tcp(i),
                Class::ReplyUdp => self.reply_udp(i),
                Class::ReplyIcmp => self.reply_icmp(i),
                Class::ReplyOther => self.reply_other(i),
                Class::InboundTcp => match self.inbound_tcp(i) {
                    Some(f) => f,
                    None => return out,
                },
                c => panic!("{c} is not stateful"),
            };
            i += 1;
            n += f.steps.len();
            out.push(f);
        }
        out
    }

    fn keyed(&mut self, v6: bool, steps: Vec<Step>) -> Vec<(Step, u32)> {
        steps
            .into_iter()
            .map(|s| {
                let frag = matches!(
                    s,
                    Step::Udp {
                        fragmented: true,
                        ..
                    }
                );
                (s, self.keys.take(v6, frag).0)
            })
            .collect()
    }

    fn reply_tcp(&mut self, i: usize) -> FlowSpec {
        use AckRef as A;
        use SeqRef as S;
        let v6 = i % 2 == 1;
        let j = i / 2;
        let synack = Step::tcp(SYN | ACK, S::Isn, A::HostNext, 0);
        let data = |n: u16| Step::tcp(PSH | ACK, S::Next, A::HostNext, n);
        const FAR: u32 = 0x4000_0000;
        // The first 64 scripts: every flag combination on an established connection; then
        // the handshake and closing variants, and runs of data.
        let (label, steps): (String, Vec<Step>) = if j.is_multiple_of(2) {
            let f = ((j / 2) % 64) as u8;
            let mut s = Step::tcp(
                f,
                S::Next,
                A::HostNext,
                if f & (SYN | RST) == 0 { 8 } else { 0 },
            );
            let mut t = tr::TRACKED;
            if matches!(
                classify(f),
                FlagClass::Null | FlagClass::Xmas | FlagClass::Invalid
            ) {
                t |= tr::INVALID_FLAGS;
            }
            if classify(f) == FlagClass::Syn {
                t |= tr::SYN_ON_TRACKED;
            }
            s.set_traits(t);
            (
                format!("{} after the handshake", flag_names(f)),
                vec![synack, s],
            )
        } else {
            match (j / 2) % 22 {
                0 => ("SYN+ACK".into(), vec![synack]),
                1 => ("SYN+ACK, data".into(), vec![synack, data(10)]),
                2 => (
                    "SYN+ACK, ACK".into(),
                    vec![synack, Step::tcp(ACK, S::Next, A::HostNext, 0)],
                ),
                3 => (
                    "SYN+ACK, FIN+ACK".into(),
                    vec![synack, Step::tcp(FIN | ACK, S::Next, A::HostNext, 0)],
                ),
                4 => (
                    "SYN+ACK, RST".into(),
                    vec![synack, Step::tcp(RST, S::Next, A::Zero, 0)],
                ),
                5 => (
                    "SYN+ACK, RST+ACK".into(),
                    vec![synack, Step::tcp(RST | ACK, S::Next, A::HostNext, 0)],
                ),
                6 => (
                    "SYN+ACK, data far beyond the window".into(),
                    vec![
                        synack,
                        Step::tcp(PSH | ACK, S::NextPlus(FAR), A::HostNext, 10)
                            .with(tr::BAD_SEQ | tr::TRACKED),
                    ],
                ),
                7 => (
                    "SYN+ACK, data acknowledging what the host never sent".into(),
                    vec![
                        synack,
                        Step::tcp(PSH | ACK, S::Next, A::HostNextPlus(FAR), 10)
                            .with(tr::BAD_SEQ | tr::TRACKED),
                    ],
                ),
                8 => (
                    "SYN+ACK acknowledging the wrong sequence number".into(),
                    vec![
                        Step::tcp(SYN | ACK, S::Isn, A::HostNextPlus(1000), 0)
                            .with(tr::BAD_SEQ | tr::TRACKED),
                    ],
                ),
                9 => (
                    "ACK before any SYN+ACK".into(),
                    vec![Step::tcp(ACK, S::Next, A::HostNext, 0).with(tr::BAD_SEQ | tr::TRACKED)],
                ),
                10 => (
                    "RST+ACK refusing the SYN".into(),
                    vec![Step::tcp(RST | ACK, S::Isn, A::HostNext, 0)],
                ),
                11 => (
                    "RST+ACK with the wrong acknowledgment".into(),
                    vec![
                        Step::tcp(RST | ACK, S::Isn, A::HostNextPlus(FAR), 0)
                            .with(tr::BAD_SEQ | tr::TRACKED),
                    ],
                ),
                12 => (
                    "SYN+ACK twice".into(),
                    vec![synack, Step::tcp(SYN | ACK, S::Isn, A::HostNext, 0)],
                ),
                13 => (
                    "SYN+ACK, data, FIN+ACK, ACK".into(),
                    vec![
                        synack,
                        data(20),
                        Step::tcp(FIN | ACK, S::Next, A::HostNext, 0),
                        Step::tcp(ACK, S::Next, A::HostNext, 0),
                    ],
                ),
                14 => (
                    "SYN+ACK, RST, data".into(),
                    vec![synack, Step::tcp(RST, S::Next, A::Zero, 0), data(10)],
                ),
                15 => (
                    "SYN+ACK, data from another source port".into(),
                    vec![synack, data(10).tweak(Tweak::WrongSport)],
                ),
                16 => (
                    "SYN+ACK, data to another port".into(),
                    vec![synack, data(10).tweak(Tweak::WrongDport)],
                ),
                17 => (
                    "SYN+ACK, data from another address".into(),
                    vec![synack, data(10).tweak(Tweak::WrongSrc)],
                ),
                18 => (
                    "SYN+ACK, ICMP unreachable about the connection".into(),
                    vec![
                        synack,
                        Step::IcmpError {
                            ty: if v6 { 1 } else { 3 },
                            code: if v6 { 4 } else { 3 },
                            from_router: false,
                            inner_port_delta: 0,
                            traits: tr::TRACKED,
                        },
                    ],
                ),
                19 => (
                    "ICMP port unreachable about the SYN".into(),
                    vec![Step::IcmpError {
                        ty: if v6 { 1 } else { 3 },
                        code: if v6 { 4 } else { 3 },
                        from_router: false,
                        inner_port_delta: 0,
                        traits: tr::TRACKED,
                    }],
                ),
                20 => (
                    "ICMP fragmentation needed from a router, SYN+ACK".into(),
                    vec![
                        Step::IcmpError {
                            ty: if v6 { 2 } else { 3 },
                            code: if v6 { 0 } else { 4 },
                            from_router: true,
                            inner_port_delta: 0,
                            traits: tr::TRACKED,
                        },
                        synack,
                    ],
                ),
                _ => (
                    "SYN+ACK, data x4".into(),
                    vec![synack, data(100), data(100), data(1), data(50)],
                ),
            }
        };
        let remote = self.remote(v6);
        let port = self.remote_port();
        let steps = self.keyed(v6, steps);
        FlowSpec {
            class: Class::ReplyTcp,
            v6,
            kind: FlowKind::Tcp,
            remote,
            remote_port: port,
            local_port: 0,
            echo_id: 0,
            s_isn: self.u32(),
            steps,
            label: format!("host connects to {remote}:{port}; {label}"),
        }
    }

    fn reply_udp(&mut self, i: usize) -> FlowSpec {
        let v6 = i % 2 == 1;
        let ok = || Step::Udp {
            payload: 48,
            tweak: Tweak::None,
            bad_csum: false,
            fragmented: false,
            traits: tr::TRACKED,
        };
        let unreach = |delta| Step::IcmpError {
            ty: if v6 { 1 } else { 3 },
            code: if v6 { 4 } else { 3 },
            from_router: false,
            inner_port_delta: delta,
            traits: tr::TRACKED,
        };
        let (label, steps): (&str, Vec<Step>) = match (i / 2) % 10 {
            0 => ("reply", vec![ok()]),
            1 => ("two replies", vec![ok(), ok()]),
            2 => (
                "reply from another source port",
                vec![Step::Udp {
                    payload: 48,
                    tweak: Tweak::WrongSport,
                    bad_csum: false,
                    fragmented: false,
                    traits: 0,
                }],
            ),
            3 => (
                "reply to another port",
                vec![Step::Udp {
                    payload: 48,
                    tweak: Tweak::WrongDport,
                    bad_csum: false,
                    fragmented: false,
                    traits: 0,
                }],
            ),
            4 => (
                "reply from another address",
                vec![Step::Udp {
                    payload: 48,
                    tweak: Tweak::WrongSrc,
                    bad_csum: false,
                    fragmented: false,
                    traits: 0,
                }],
            ),
            5 => ("ICMP port unreachable about it", vec![unreach(0)]),
            6 => (
                "ICMP unreachable quoting another port",
                vec![Step::IcmpError {
                    ty: if v6 { 1 } else { 3 },
                    code: if v6 { 4 } else { 3 },
                    from_router: false,
                    inner_port_delta: 7,
                    traits: 0,
                }],
            ),
            7 => ("reply, then ICMP unreachable", vec![ok(), unreach(0)]),
            8 => (
                "reply in two fragments",
                vec![Step::Udp {
                    payload: 600,
                    tweak: Tweak::None,
                    bad_csum: false,
                    fragmented: true,
                    traits: tr::TRACKED,
                }],
            ),
            _ => (
                "reply with a bad checksum",
                vec![Step::Udp {
                    payload: 48,
                    tweak: Tweak::None,
                    bad_csum: true,
                    fragmented: false,
                    traits: tr::TRACKED | tr::BAD_L4_CSUM,
                }],
            ),
        };
        let remote = self.remote(v6);
        let port = self.remote_port();
        let steps = self.keyed(v6, steps);
        FlowSpec {
            class: Class::ReplyUdp,
            v6,
            kind: FlowKind::Udp,
            remote,
            remote_port: port,
            local_port: 0,
            echo_id: 0,
            s_isn: 0,
            steps,
            label: format!("host sends UDP to {remote}:{port}; {label}"),
        }
    }

    fn reply_icmp(&mut self, i: usize) -> FlowSpec {
        let v6 = i % 2 == 1;
        let echo = |reply, delta, tweak, traits| Step::Echo {
            reply,
            id_delta: delta,
            tweak,
            traits,
        };
        let (label, steps): (&str, Vec<Step>) = match (i / 2) % 7 {
            0 => ("echo reply", vec![echo(true, 0, Tweak::None, tr::TRACKED)]),
            1 => (
                "two echo replies",
                vec![
                    echo(true, 0, Tweak::None, tr::TRACKED),
                    echo(true, 0, Tweak::None, tr::TRACKED),
                ],
            ),
            2 => (
                "echo reply with another identifier",
                vec![echo(true, 1, Tweak::None, 0)],
            ),
            3 => (
                "echo reply from another address",
                vec![echo(true, 0, Tweak::WrongSrc, 0)],
            ),
            4 => (
                "destination unreachable about the ping",
                vec![Step::IcmpError {
                    ty: if v6 { 1 } else { 3 },
                    code: if v6 { 3 } else { 1 },
                    from_router: true,
                    inner_port_delta: 0,
                    traits: tr::TRACKED,
                }],
            ),
            5 => (
                "time exceeded about the ping",
                vec![Step::IcmpError {
                    ty: if v6 { 3 } else { 11 },
                    code: 0,
                    from_router: true,
                    inner_port_delta: 0,
                    traits: tr::TRACKED,
                }],
            ),
            _ => (
                "an echo request back with the same identifier",
                vec![echo(false, 0, Tweak::None, 0)],
            ),
        };
        let remote = self.remote(v6);
        let id = 0x4000 | (i as u16 & 0x3fff);
        let steps = self.keyed(v6, steps);
        FlowSpec {
            class: Class::ReplyIcmp,
            v6,
            kind: FlowKind::Echo,
            remote,
            remote_port: 0,
            local_port: 0,
            echo_id: id,
            s_isn: 0,
            steps,
            label: format!("host pings {remote} (id {id}); {label}"),
        }
    }

    fn reply_other(&mut self, i: usize) -> FlowSpec {
        let v6 = i % 2 == 1;
        let proto = if (i / 2).is_multiple_of(2) { 253 } else { 47 };
        let (label, steps): (&str, Vec<Step>) = match (i / 4) % 3 {
            0 => (
                "reply",
                vec![Step::Other {
                    tweak: Tweak::None,
                    traits: tr::OTHER_PROTO_REPLY | tr::TRACKED,
                }],
            ),
            1 => (
                "reply from another address",
                vec![Step::Other {
                    tweak: Tweak::WrongSrc,
                    traits: 0,
                }],
            ),
            _ => (
                "ICMP unreachable about it",
                vec![Step::IcmpError {
                    ty: if v6 { 1 } else { 3 },
                    code: if v6 { 4 } else { 2 },
                    from_router: false,
                    inner_port_delta: 0,
                    traits: tr::OTHER_PROTO_REPLY | tr::TRACKED,
                }],
            ),
        };
        let remote = self.remote(v6);
        let steps = self.keyed(v6, steps);
        FlowSpec {
            class: Class::ReplyOther,
            v6,
            kind: FlowKind::Other(proto),
            remote,
            remote_port: 0,
            local_port: 0,
            echo_id: 0,
            s_isn: 0,
            steps,
            label: format!("host sends protocol {proto} to {remote}; {label}"),
        }
    }

    /// Connections to the host's listening sockets, on TCP ports the policy opens (to
    /// everyone, or from an allowed source), and on refused ones.
    fn inbound_tcp(&mut self, i: usize) -> Option<FlowSpec> {
        use AckRef as A;
        use SeqRef as S;
        let v6 = i % 2 == 1;
        let j = i / 2;
        let set = self.ctx.set(Proto::Tcp, v6).clone();
        let other = self.ctx.set(Proto::Tcp, !v6).clone();
        // Nothing to connect to in either family: no inbound flows. (Nothing in this family
        // only: refused connections, from anywhere.)
        if set.open.is_empty()
            && set.restricted.is_empty()
            && other.open.is_empty()
            && other.restricted.is_empty()
        {
            return None;
        }
        let syn = Step::tcp(SYN, S::Isn, A::Zero, 0);
        let hs = Step::tcp(ACK, S::Next, A::HostNext, 0);
        let (label, steps): (String, Vec<Step>) = if j.is_multiple_of(2) {
            let f = ((j / 2) % 64) as u8;
            let mut s = Step::tcp(
                f,
                S::Next,
                A::HostNext,
                if f & (SYN | RST) == 0 { 8 } else { 0 },
            );
            let mut t = tr::TRACKED;
            if matches!(
                classify(f),
                FlagClass::Null | FlagClass::Xmas | FlagClass::Invalid
            ) {
                t |= tr::INVALID_FLAGS;
            }
            if classify(f) == FlagClass::Syn {
                t |= tr::SYN_ON_TRACKED;
            }
            if f & (SYN | ACK | RST) == SYN | ACK {
                // A SYN+ACK from the client: no step of its side of the handshake.
                t |= tr::BAD_SEQ;
            }
            s.set_traits(t);
            (
                format!("handshake, then {}", flag_names(f)),
                vec![syn, hs, s],
            )
        } else {
            match (j / 2) % 12 {
                0 => ("SYN, handshake ACK".into(), vec![syn, hs]),
                1 => (
                    "handshake, data".into(),
                    vec![syn, hs, Step::tcp(PSH | ACK, S::Next, A::HostNext, 30)],
                ),
                2 => (
                    "handshake, FIN+ACK".into(),
                    vec![syn, hs, Step::tcp(FIN | ACK, S::Next, A::HostNext, 0)],
                ),
                3 => (
                    "handshake, RST".into(),
                    vec![syn, hs, Step::tcp(RST, S::Next, A::Zero, 0)],
                ),
                4 => (
                    "SYN, handshake ACK with the wrong acknowledgment".into(),
                    vec![
                        syn,
                        Step::tcp(ACK, S::Next, A::HostNextPlus(5000), 0)
                            .with(tr::BAD_SEQ | tr::HANDSHAKE),
                    ],
                ),
                5 => (
                    "SYN, data with the handshake's acknowledgment".into(),
                    vec![syn, Step::tcp(PSH | ACK, S::Next, A::HostNext, 20)],
                ),
                6 => (
                    "SYN twice".into(),
                    vec![syn, Step::tcp(SYN, S::Isn, A::Zero, 0)],
                ),
                7 => (
                    "SYN, RST".into(),
                    vec![syn, Step::tcp(RST, S::Next, A::Zero, 0).with(tr::HANDSHAKE)],
                ),
                8 => (
                    "handshake, data far beyond the window".into(),
                    vec![
                        syn,
                        hs,
                        Step::tcp(PSH | ACK, S::NextPlus(0x4000_0000), A::HostNext, 10)
                            .with(tr::BAD_SEQ | tr::TRACKED),
                    ],
                ),
                9 => (
                    "handshake, data from another source port".into(),
                    vec![
                        syn,
                        hs,
                        Step::tcp(PSH | ACK, S::Next, A::HostNext, 10).tweak(Tweak::WrongSport),
                    ],
                ),
                10 => (
                    "handshake, data x3".into(),
                    vec![
                        syn,
                        hs,
                        Step::tcp(PSH | ACK, S::Next, A::HostNext, 100),
                        Step::tcp(PSH | ACK, S::Next, A::HostNext, 100),
                        Step::tcp(PSH | ACK, S::Next, A::HostNext, 100),
                    ],
                ),
                _ => (
                    "SYN, SYN+ACK from the client".into(),
                    vec![
                        syn,
                        Step::tcp(SYN | ACK, S::Isn, A::HostNext, 0)
                            .with(tr::BAD_SEQ | tr::HANDSHAKE),
                    ],
                ),
            }
        };
        // Where: a port open to everyone, a restricted one from inside, or from outside.
        let pick = self.rng.below(4);
        let (port, src, words) = if !set.restricted.is_empty() && pick >= 2 {
            let (p, c) = self.rng.pick(&set.restricted).clone();
            if pick == 2 {
                (p, self.inside(&c), "restricted, source allowed")
            } else {
                (p, self.outside(&c, v6), "restricted, source refused")
            }
        } else if !set.open.is_empty() {
            (*self.rng.pick(&set.open), self.any_src(v6), "open")
        } else if let Some((p, c)) = set.restricted.first().cloned() {
            (p, self.inside(&c), "restricted, source allowed")
        } else {
            let p = other
                .open
                .first()
                .copied()
                .or(other.restricted.first().map(|r| r.0))
                .unwrap_or(80);
            (p, self.any_src(v6), "closed")
        };
        let sport = self.sport();
        let steps = self.keyed(v6, steps);
        Some(FlowSpec {
            class: Class::InboundTcp,
            v6,
            kind: FlowKind::Inbound,
            remote: src,
            remote_port: sport,
            local_port: port,
            echo_id: 0,
            s_isn: self.u32(),
            steps,
            label: format!(
                "{src}:{sport} connects to {port} ({words}, a listening socket); {label}"
            ),
        })
    }
}
