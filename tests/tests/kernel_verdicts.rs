//! Tier 2: the real compiled XDP program, run with BPF_PROG_TEST_RUN, against the userspace
//! `decide()` on the same bytes. Needs root and bpffs; fails loudly without them.
//!
//! For every named packet: the kernel's return value is the verdict `decide()` gives (never
//! XDP_ABORTED), the kernel counted the packet in the slot `decide()` names, and both say what
//! the table says the policy does (so a bug shared by both sides is caught too). Every prefix
//! of every packet (14 bytes to full length) must get the same answer from both sides.
//!
//! Run: `cargo build -p fw-user && cargo test -p tests --test kernel_verdicts -- --nocapture`

use std::net::IpAddr;

use fw::loader::Variant;
use fw_common::frame::{FragSpec, L4Spec, PacketSpec, arp_frame};
use fw_common::{Config, Reason, packet as pkt, tcp};
use fw_policy::{Policy, SEED_POLICY, parse_policy};
use tests::testrun::{Expect, KernelFilter, MIN_FRAME, Rng, Tally, require_root};

use Expect::{Is, Rule};

// ---------------------------------------------------------------------------------------------
// Policies

fn seed() -> Policy {
    parse_policy("seed", SEED_POLICY).expect("the seed policy parses")
}

/// Rule ids of the seed policy, in file order.
const SEED_PORTS: [(u16, u32); 9] = [
    (80, 0),
    (443, 1),
    (25, 2),
    (465, 3),
    (110, 4),
    (995, 5),
    (143, 6),
    (993, 7),
    (22, 8),
];

/// Web open to all; SSH and a few other ports restricted to sources, nested CIDRs so the
/// longest prefix decides which rule counts.
const RESTRICTED: &str = r#"
[[allow]]
ports = [80, 443]                 # rules 0, 1
[[allow]]
ports = [22]                      # rule 2
from = ["203.0.113.7", "198.51.100.0/24", "2001:db8:1::/48", "2001:db8::7"]
[[allow]]
ports = [22]                      # rule 3: inside rule 2's CIDRs, longer prefixes
from = ["198.51.100.128/25", "2001:db8:1:2::/64"]
[[allow]]
ports = [2222]                    # rule 4
from = ["10.0.0.0/8"]
[[allow]]
proto = "udp"
ports = [53]                      # rule 5
from = ["192.0.2.0/24"]
[[allow]]
ports = [3000]                    # rule 6: every IPv6 source, no IPv4 one
from = ["::/0"]
[[allow]]
ports = [4000]                    # rule 7: every IPv4 source, no IPv6 one
from = ["0.0.0.0/0"]
"#;

/// Every option away from its default (stateless), UDP ranges.
const OPTIONS: &str = r#"
[options]
strict_tcp_flags = false
icmp_echo = true
fragments = "drop"
dhcp_client = false
established = false
new_requires_syn = false

[[allow]]
proto = "udp"
ports = [53, "6000-6010"]         # rules 0, 1
[[allow]]
ports = [80]                      # rule 2
[[allow]]
proto = "udp"
ports = ["60000-65535"]           # rule 3
[[allow]]
ports = ["1-21"]                  # rule 4
"#;

fn policy(name: &str, text: &str) -> Policy {
    parse_policy(name, text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What a policy's options and one open TCP port make of the structural cases.
#[derive(Clone, Copy)]
struct Env {
    strict: bool,
    echo: bool,
    frag_pass: bool,
    dhcp: bool,
    /// Connection state in use (ESTABLISHED/RELATED).
    stateful: bool,
    /// TCP that is not a SYN needs a tracked connection.
    syn_only: bool,
    /// An open-to-all TCP port and its rule id; `None`: no TCP port is open (the structural
    /// cases then go to [`Self::closed`]).
    tcp: Option<(u16, u32)>,
    /// An open-to-all UDP port and its rule id.
    udp: Option<(u16, u32)>,
    /// A TCP/UDP port no rule mentions.
    closed: u16,
}

impl Env {
    fn of(p: &Policy) -> Self {
        let c = p.options.config();
        let open = |proto: fw_policy::Proto| {
            p.rules
                .iter()
                .find(|r| r.proto == proto && r.from.is_empty())
                .map(|r| (r.ports.lo, r.id))
        };
        Env {
            strict: c.has(Config::STRICT_TCP_FLAGS),
            echo: c.has(Config::ICMP_ECHO),
            frag_pass: c.has(Config::FRAGMENTS_PASS),
            dhcp: c.has(Config::DHCP_CLIENT),
            stateful: c.has(Config::ESTABLISHED),
            syn_only: c.has(Config::ESTABLISHED | Config::NEW_REQUIRES_SYN)
                && c.has(Config::NEW_REQUIRES_SYN),
            tcp: open(fw_policy::Proto::Tcp),
            udp: open(fw_policy::Proto::Udp),
            closed: (9..)
                .find(|n| !p.rules.iter().any(|r| r.ports.contains(*n)))
                .expect("a port no rule mentions"),
        }
    }

    fn tcp_port(&self) -> u16 {
        self.tcp.map_or(self.closed, |t| t.0)
    }

    /// A well-formed SYN to [`Self::tcp_port`].
    fn tcp_ok(&self) -> Expect {
        self.tcp.map_or(Is(Reason::DefaultDrop), |t| Rule(t.1))
    }

    fn udp_port(&self) -> u16 {
        self.udp.map_or(self.closed, |u| u.0)
    }

    fn udp_ok(&self) -> Expect {
        self.udp.map_or(Is(Reason::DefaultDrop), |u| Rule(u.1))
    }

    fn later_fragment(&self) -> Expect {
        Is(if self.frag_pass {
            Reason::FragmentPassed
        } else {
            Reason::FragmentDropped
        })
    }

    fn echo(&self) -> Expect {
        Is(if self.echo {
            Reason::IcmpEcho
        } else {
            Reason::DefaultDrop
        })
    }

    fn dhcp(&self) -> Expect {
        Is(if self.dhcp {
            Reason::DhcpClient
        } else {
            Reason::DefaultDrop
        })
    }

    /// An ICMP error quoting a well-formed packet of no tracked flow (these tables start with
    /// empty flow tables).
    fn icmp_error(&self) -> Expect {
        Is(if self.stateful {
            Reason::IcmpUnrelated
        } else {
            Reason::DefaultDrop
        })
    }

    /// TCP with `flags` to a port whose well-formed SYN gets `ok`, with no tracked flow.
    ///
    /// Written from Linux conntrack's `tcp_valid_flags` table, independently of
    /// `fw_common::tcp`: PSH, ECE and CWR may accompany any valid combination. A SYN (without
    /// ACK) goes to the port lookup; any other combination the strict check lets through is
    /// not a new connection, so with `new_requires_syn` it is dropped (no flow is tracked
    /// here), and without it goes to the port lookup too.
    fn tcp_flags(&self, flags: u8, ok: Expect) -> Expect {
        let six = flags & 0x3f;
        if six == 0 {
            return Is(Reason::TcpNull);
        }
        if six == 0x3f {
            return Is(Reason::TcpXmas);
        }
        let base = flags & !(tcp::PSH | tcp::ECE | tcp::CWR);
        const VALID: [u8; 9] = [
            0x02, // SYN
            0x22, // SYN URG
            0x12, // SYN ACK
            0x04, // RST
            0x14, // RST ACK
            0x11, // FIN ACK
            0x31, // FIN ACK URG
            0x10, // ACK
            0x30, // ACK URG
        ];
        let valid = VALID.contains(&base);
        if self.strict && !valid {
            return Is(Reason::TcpBadFlags);
        }
        let syn = valid && base & (tcp::SYN | tcp::ACK) == tcp::SYN;
        if !syn && self.syn_only {
            return Is(Reason::TcpNotSyn);
        }
        ok
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

const S4: &str = "198.51.100.77";
const D4: &str = "192.0.2.1";
const S6: &str = "2001:db8:ff::77";
const D6: &str = "2001:db8::1";

fn syn4(dport: u16) -> PacketSpec {
    PacketSpec::syn(S4, D4, dport)
}

fn syn6(dport: u16) -> PacketSpec {
    PacketSpec::syn(S6, D6, dport)
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the IP header (after the VLAN tags the builder wrote).
fn l3(f: &[u8]) -> usize {
    let mut off = 12;
    for _ in 0..8 {
        if off + 2 > f.len() {
            break;
        }
        let t = be16(f, off);
        if t == pkt::ETH_P_8021Q || t == pkt::ETH_P_8021AD {
            off += 4;
        } else {
            break;
        }
    }
    off + 2
}

/// Offset of the transport header of an IPv4 frame from the builder.
fn l4_v4(f: &[u8]) -> usize {
    let o = l3(f);
    o + (f[o] & 0x0f) as usize * 4
}

/// Make the IP length field say the datagram ends where the frame ends.
fn fix_len(mut f: Vec<u8>) -> Vec<u8> {
    let o = l3(&f);
    let len = f.len();
    match f.get(o).map(|b| b >> 4) {
        Some(4) if len >= o + 4 => put16(&mut f, o + 2, (len - o) as u16),
        Some(6) if len >= o + 40 => put16(&mut f, o + 4, (len - o - 40) as u16),
        _ => {}
    }
    f
}

/// Cut the frame to `len` bytes and make the IP length agree.
fn cut(f: Vec<u8>, len: usize) -> Vec<u8> {
    let mut f = f;
    f.truncate(len);
    fix_len(f)
}

/// Ethernet padding: bytes after the IP datagram that its length does not cover.
fn padded(mut f: Vec<u8>, n: usize, byte: u8) -> Vec<u8> {
    f.resize(f.len() + n, byte);
    f
}

/// Replace tag TPIDs (outermost first) with these.
fn tpids(mut f: Vec<u8>, t: &[u16]) -> Vec<u8> {
    for (i, v) in t.iter().enumerate() {
        put16(&mut f, 12 + 4 * i, *v);
    }
    f
}

fn with_ethertype(t: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&t.to_be_bytes());
    f.resize(14 + payload, 0x5a);
    f
}

/// An ICMP (ICMPv6 for IPv6) error from `from` to `to` quoting the IP packet of `quoted` (a
/// frame), cut to `keep` bytes.
fn icmp_error(from: &str, to: &str, ty: u8, code: u8, quoted: &[u8], keep: usize) -> Vec<u8> {
    let q = &quoted[l3(quoted)..];
    let q = &q[..keep.min(q.len())];
    let mut f = PacketSpec::icmp(from, to, ty, code)
        .payload(q.len())
        .build();
    let n = f.len();
    f[n - q.len()..].copy_from_slice(q);
    f
}

/// An IPv6 extension header for [`v6_chain`]: type and total length in bytes.
#[derive(Clone, Copy)]
enum Ext {
    Hbh(usize),
    Rt(usize),
    Dst(usize),
    Ah(usize),
    Frag { offset: u16, more: bool },
}

/// An IPv6 frame from the builder (without `ext`/`frag`), with these extension headers
/// inserted before its transport header; the payload length is fixed up.
fn v6_chain(spec: PacketSpec, chain: &[Ext]) -> Vec<u8> {
    v6_chain_frame(spec.build(), chain)
}

/// An IPv6 frame with these extension headers inserted after its fixed header.
fn v6_chain_frame(f: Vec<u8>, chain: &[Ext]) -> Vec<u8> {
    let o = l3(&f);
    assert_eq!(f[o] >> 4, 6, "v6_chain needs an IPv6 spec");
    let proto = f[o + 6];
    let mut out = f[..o + 40].to_vec();
    let ty = |e: &Ext| match e {
        Ext::Hbh(_) => pkt::IPPROTO_HOPOPTS,
        Ext::Rt(_) => pkt::IPPROTO_ROUTING,
        Ext::Dst(_) => pkt::IPPROTO_DSTOPTS,
        Ext::Ah(_) => pkt::IPPROTO_AH,
        Ext::Frag { .. } => pkt::IPPROTO_FRAGMENT,
    };
    out[o + 6] = chain.first().map_or(proto, ty);
    for (i, e) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(proto, ty);
        match *e {
            Ext::Hbh(n) | Ext::Rt(n) | Ext::Dst(n) => {
                assert!(n >= 8 && n % 8 == 0 && n <= 2048);
                out.extend_from_slice(&[next, (n / 8 - 1) as u8]);
                // Pad1 options (zeros) fill the rest; a routing header of type 0, segments 0.
                out.resize(out.len() + n - 2, 0);
            }
            Ext::Ah(n) => {
                assert!(n >= 8 && n % 4 == 0 && n <= 1028);
                out.extend_from_slice(&[next, (n / 4 - 2) as u8]);
                out.resize(out.len() + n - 2, 0);
            }
            Ext::Frag { offset, more } => {
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&f[o + 40..]);
    fix_len(out)
}

/// A named packet and what the policy does with it.
struct Case {
    name: String,
    frame: Vec<u8>,
    expect: Expect,
    /// Every strict prefix must be dropped as truncated (a well-formed datagram, no padding).
    prefixes_truncated: bool,
}

#[derive(Default)]
struct Table(Vec<Case>);

impl Table {
    /// A well-formed packet: its every prefix is a truncated datagram.
    fn ok(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect) {
        self.push(name, frame, expect, true);
    }

    /// A packet whose prefixes need only kernel/userspace agreement.
    fn odd(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect) {
        self.push(name, frame, expect, false);
    }

    fn push(&mut self, name: impl Into<String>, frame: Vec<u8>, expect: Expect, pt: bool) {
        assert!(frame.len() >= MIN_FRAME);
        self.0.push(Case {
            name: name.into(),
            frame,
            expect,
            prefixes_truncated: pt,
        });
    }
}

/// Cases whose verdict follows from the policy's options and one open port: link layer,
/// malformed headers, extension headers, fragments, TCP flags, ICMP, DHCP.
fn structural(e: &Env) -> Table {
    let mut t = Table::default();
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    let uport = e.udp_port();
    let uok = e.udp_ok();

    // Link layer: non-IP always passes; the link needs it.
    t.odd("ARP request", arp_frame(), Is(Reason::NonIp));
    t.odd(
        "ARP in an 802.1Q tag",
        {
            let a = arp_frame();
            let mut f = a[..12].to_vec();
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            f.extend_from_slice(&a[12..]);
            f
        },
        Is(Reason::NonIp),
    );
    for (name, ty) in [
        ("LLDP", 0x88cc),
        ("ethertype 0x0000", 0x0000),
        ("ethertype 0xffff", 0xffff),
        ("802.3 length field 0x05dc", 0x05dc),
        ("IPX", 0x8137),
        ("EAPOL", 0x888e),
        ("MPLS", 0x8847),
        ("PPPoE session", 0x8864),
        ("802.1AE MACsec", 0x88e5),
    ] {
        t.odd(name, with_ethertype(ty, 46), Is(Reason::NonIp));
    }
    t.odd(
        "bare Ethernet header, IPv4 ethertype",
        with_ethertype(pkt::ETH_P_IPV4, 0),
        Is(Reason::Truncated),
    );
    t.odd(
        "bare Ethernet header, IPv6 ethertype",
        with_ethertype(pkt::ETH_P_IPV6, 0),
        Is(Reason::Truncated),
    );
    t.odd(
        "bare Ethernet header, 802.1Q ethertype",
        with_ethertype(pkt::ETH_P_8021Q, 0),
        Is(Reason::Truncated),
    );
    t.odd(
        "802.1Q tag then nothing",
        with_ethertype(pkt::ETH_P_8021Q, 2),
        Is(Reason::Truncated),
    );

    // VLAN tags: up to two (802.1Q or 802.1ad outer) are looked through, a third is refused.
    for (v6, name) in [(false, "v4"), (true, "v6")] {
        let s = |tags: &[u16]| if v6 { syn6(port) } else { syn4(port) }.vlans(tags);
        t.ok(format!("{name} SYN, no VLAN tag"), s(&[]).build(), ok);
        t.ok(format!("{name} SYN, one 802.1Q tag"), s(&[7]).build(), ok);
        t.ok(
            format!("{name} SYN, one 802.1ad tag"),
            tpids(s(&[7]).build(), &[pkt::ETH_P_8021AD]),
            ok,
        );
        t.ok(
            format!("{name} SYN, 802.1Q in 802.1Q"),
            s(&[7, 8]).build(),
            ok,
        );
        t.ok(
            format!("{name} SYN, 802.1Q in 802.1ad (QinQ)"),
            tpids(s(&[7, 8]).build(), &[pkt::ETH_P_8021AD]),
            ok,
        );
        t.ok(
            format!("{name} SYN, 802.1ad in 802.1ad"),
            tpids(s(&[7, 8]).build(), &[pkt::ETH_P_8021AD, pkt::ETH_P_8021AD]),
            ok,
        );
        t.odd(
            format!("{name} SYN, three 802.1Q tags"),
            s(&[7, 8, 9]).build(),
            Is(Reason::TooManyVlans),
        );
        t.odd(
            format!("{name} SYN, three tags 802.1ad/802.1Q/802.1Q"),
            tpids(s(&[7, 8, 9]).build(), &[pkt::ETH_P_8021AD]),
            Is(Reason::TooManyVlans),
        );
        t.odd(
            format!("{name} SYN, three 802.1ad tags"),
            tpids(s(&[7, 8, 9]).build(), &[pkt::ETH_P_8021AD; 3]),
            Is(Reason::TooManyVlans),
        );
        t.odd(
            format!("{name} SYN to a closed port, two tags"),
            if v6 { syn6(e.closed) } else { syn4(e.closed) }
                .vlans(&[1, 2])
                .build(),
            Is(Reason::DefaultDrop),
        );
    }

    // IPv4 header.
    for ihl in 5..=15usize {
        t.ok(
            format!("v4 SYN, ihl {ihl} ({} option bytes)", (ihl - 5) * 4),
            syn4(port).options((ihl - 5) * 4).build(),
            ok,
        );
        t.ok(
            format!("v4 SYN, ihl {ihl}, two VLAN tags"),
            syn4(port).options((ihl - 5) * 4).vlans(&[3, 4]).build(),
            ok,
        );
    }
    for ihl in 0..5u8 {
        let mut f = syn4(port).build();
        f[14] = 0x40 | ihl;
        t.odd(format!("v4 ihl {ihl}"), f, Is(Reason::BadHeader));
    }
    for ver in [0u8, 1, 5, 6, 15] {
        let mut f = syn4(port).build();
        f[14] = (ver << 4) | 5;
        t.odd(
            format!("IPv4 ethertype, IP version {ver}"),
            f,
            Is(Reason::BadHeader),
        );
    }
    let full = syn4(port).build();
    let total = full.len() - 14;
    for (tl, r) in [
        (0usize, Reason::BadHeader),
        (19, Reason::BadHeader),
        (20, Reason::Truncated),
        (total - 1, Reason::Truncated),
        (total + 1, Reason::Truncated),
        (1500, Reason::Truncated),
        (65535, Reason::Truncated),
    ] {
        let mut f = full.clone();
        put16(&mut f, 16, tl as u16);
        t.odd(
            format!("v4 SYN, total length {tl} (frame holds {total})"),
            f,
            Is(r),
        );
    }
    {
        let mut f = syn4(port).options(4).build();
        put16(&mut f, 16, 22);
        t.odd("v4 ihl 6, total length 22", f, Is(Reason::BadHeader));
    }
    t.odd(
        "v4 SYN + 6 bytes of Ethernet padding (60-byte frame)",
        padded(syn4(port).build(), 6, 0),
        ok,
    );
    t.odd(
        "v4 SYN + 200 bytes of non-zero padding",
        padded(syn4(port).build(), 200, 0xee),
        ok,
    );
    t.odd(
        "v4 SYN with payload + padding",
        padded(syn4(port).payload(30).build(), 17, 0x11),
        ok,
    );
    t.odd(
        "v4 UDP + padding",
        padded(PacketSpec::udp(S4, D4, 1000, uport).build(), 14, 0),
        uok,
    );
    for (proto, name) in [
        (0u8, "proto 0"),
        (2, "IGMP"),
        (4, "IP-in-IP"),
        (41, "IPv6-in-IPv4"),
        (47, "GRE"),
        (50, "ESP"),
        (51, "AH in IPv4"),
        (58, "ICMPv6 number in IPv4"),
        (132, "SCTP"),
        (255, "proto 255"),
    ] {
        t.ok(
            format!("v4 {name}"),
            PacketSpec::new(S4, D4, L4Spec::Raw { proto })
                .payload(24)
                .build(),
            Is(Reason::DefaultDrop),
        );
    }

    // IPv6 header.
    {
        let mut f = syn6(port).build();
        f[14] = 0x40;
        t.odd("IPv6 ethertype, IP version 4", f, Is(Reason::BadHeader));
        let mut f = syn6(port).build();
        f[14] = 0x00;
        t.odd("IPv6 ethertype, IP version 0", f, Is(Reason::BadHeader));
        let mut f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        put16(&mut f, 18, 0);
        t.odd(
            "v6 jumbogram (payload 0, hop-by-hop)",
            f,
            Is(Reason::BadHeader),
        );
        let mut f = syn6(port).build();
        put16(&mut f, 18, 0);
        t.odd("v6 TCP, payload length 0", f, Is(Reason::Truncated));
        let mut f = syn6(port).build();
        put16(&mut f, 18, 21);
        t.odd(
            "v6 TCP, payload length one too long",
            f,
            Is(Reason::Truncated),
        );
        let mut f = syn6(port).build();
        put16(&mut f, 18, 19);
        t.odd(
            "v6 TCP, payload length one too short",
            f,
            Is(Reason::Truncated),
        );
        let mut f = syn6(port).build();
        put16(&mut f, 18, 0xffff);
        t.odd("v6 TCP, payload length 65535", f, Is(Reason::Truncated));
    }
    t.odd(
        "v6 SYN + 30 bytes of Ethernet padding",
        padded(syn6(port).build(), 30, 0),
        ok,
    );
    t.ok(
        "v6 no next header (59)",
        PacketSpec::new(S6, D6, L4Spec::Raw { proto: 59 })
            .payload(8)
            .build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v6 ESP",
        PacketSpec::new(S6, D6, L4Spec::Raw { proto: 50 })
            .payload(40)
            .build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v6 ICMP (v4 number 1) is not ICMPv6",
        PacketSpec::new(S6, D6, L4Spec::Raw { proto: 1 })
            .payload(8)
            .build(),
        Is(Reason::DefaultDrop),
    );

    // IPv6 extension headers.
    for (name, x) in [
        ("hop-by-hop", Ext::Hbh(8)),
        ("routing", Ext::Rt(24)),
        ("destination options", Ext::Dst(16)),
        ("AH (12 bytes)", Ext::Ah(12)),
        ("AH (24 bytes)", Ext::Ah(24)),
        (
            "atomic fragment",
            Ext::Frag {
                offset: 0,
                more: false,
            },
        ),
    ] {
        t.ok(
            format!("v6 SYN behind {name}"),
            v6_chain(syn6(port), &[x]),
            ok,
        );
        t.ok(
            format!("v6 UDP behind {name}"),
            v6_chain(PacketSpec::udp(S6, D6, 1000, uport), &[x]),
            uok,
        );
        t.ok(
            format!("v6 SYN to a closed port behind {name}"),
            v6_chain(syn6(e.closed), &[x]),
            Is(Reason::DefaultDrop),
        );
    }
    let h = |n: usize| Ext::Dst(8 * n);
    let six = [
        Ext::Hbh(8),
        Ext::Dst(8),
        Ext::Rt(8),
        Ext::Ah(16),
        Ext::Dst(16),
        Ext::Dst(8),
    ];
    t.ok("v6 SYN behind a chain of 6", v6_chain(syn6(port), &six), ok);
    t.ok(
        "v6 SYN behind a chain of 6, two VLAN tags",
        v6_chain(syn6(port).vlans(&[1, 2]), &six),
        ok,
    );
    let mut seven = six.to_vec();
    seven.push(Ext::Rt(8));
    t.ok(
        "v6 SYN behind a chain of 7",
        v6_chain(syn6(port), &seven),
        Is(Reason::ExtHeaders),
    );
    let mut five_frag = six[..5].to_vec();
    five_frag.push(Ext::Frag {
        offset: 0,
        more: true,
    });
    t.ok(
        "v6 first fragment behind a chain of 5 (6 headers)",
        v6_chain(syn6(port), &five_frag),
        ok,
    );
    let mut six_frag = six.to_vec();
    six_frag.push(Ext::Frag {
        offset: 0,
        more: true,
    });
    t.ok(
        "v6 first fragment behind a chain of 6 (7 headers)",
        v6_chain(syn6(port), &six_frag),
        Is(Reason::ExtHeaders),
    );
    let mut six_later = six.to_vec();
    six_later.push(Ext::Frag {
        offset: 100,
        more: false,
    });
    t.ok(
        "v6 later fragment behind a chain of 6 (7 headers)",
        v6_chain(syn6(port), &six_later),
        Is(Reason::ExtHeaders),
    );
    // The transport header must start within 512 bytes of the frame start: 14 + 40 + 456 = 510
    // passes, 518 does not.
    t.ok(
        "v6 SYN, ext headers end at byte 510",
        v6_chain(syn6(port), &[h(57)]),
        ok,
    );
    t.ok(
        "v6 SYN, ext headers end at byte 518",
        v6_chain(syn6(port), &[h(58)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, two ext headers end at byte 510",
        v6_chain(syn6(port), &[Ext::Hbh(256), h(25)]),
        ok,
    );
    t.ok(
        "v6 SYN, two ext headers end at byte 518",
        v6_chain(syn6(port), &[Ext::Hbh(256), h(26)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, a 2048-byte hop-by-hop header",
        v6_chain(syn6(port), &[Ext::Hbh(2048)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, a 1028-byte AH",
        v6_chain(syn6(port), &[Ext::Ah(1028)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, ext headers end at 510 with one VLAN tag (514)",
        v6_chain(syn6(port).vlans(&[5]), &[h(57)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, ext headers end at 510 with a VLAN tag and 8 bytes less",
        v6_chain(syn6(port).vlans(&[5]), &[h(56)]),
        ok,
    );
    {
        // The datagram ends inside an extension header.
        let f = v6_chain(syn6(port), &[Ext::Hbh(8), Ext::Dst(64)]);
        t.odd(
            "v6 datagram ends inside the 2nd ext header",
            cut(f, 14 + 40 + 8 + 20),
            Is(Reason::Truncated),
        );
        let f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        t.odd(
            "v6 datagram ends 4 bytes into an ext header",
            cut(f, 14 + 40 + 4),
            Is(Reason::Truncated),
        );
        let f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        t.odd(
            "v6 datagram ends right after an ext header",
            cut(f, 14 + 40 + 8),
            Is(Reason::Truncated),
        );
        // Header length field running past the datagram.
        let mut f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        f[14 + 40 + 1] = 10;
        t.odd(
            "v6 hop-by-hop length field past the datagram",
            f,
            Is(Reason::Truncated),
        );
    }

    // Fragments, IPv4.
    t.ok(
        "v4 first fragment, full TCP header",
        syn4(port).frag(FragSpec::First).payload(16).build(),
        ok,
    );
    t.ok(
        "v4 first fragment, full TCP header, closed port",
        syn4(e.closed).frag(FragSpec::First).payload(16).build(),
        Is(Reason::DefaultDrop),
    );
    for keep in [0usize, 1, 8, 19] {
        t.odd(
            format!("v4 tiny first fragment, {keep} TCP bytes"),
            cut(syn4(port).frag(FragSpec::First).build(), 14 + 20 + keep),
            Is(Reason::TinyFragment),
        );
    }
    {
        // Data offset 8 (32-byte header), only 24 bytes in the first fragment.
        let mut f = syn4(port).frag(FragSpec::First).payload(12).build();
        let o = l4_v4(&f);
        f[o + 12] = 8 << 4;
        t.odd(
            "v4 first fragment cutting the TCP options",
            cut(f, 14 + 20 + 24),
            Is(Reason::TinyFragment),
        );
    }
    for keep in [0usize, 4, 7] {
        t.odd(
            format!("v4 tiny first fragment, {keep} UDP bytes"),
            cut(
                PacketSpec::udp(S4, D4, 1000, uport)
                    .frag(FragSpec::First)
                    .build(),
                14 + 20 + keep,
            ),
            Is(Reason::TinyFragment),
        );
    }
    t.odd(
        "v4 tiny first fragment, 4 ICMP bytes",
        cut(
            PacketSpec::icmp(S4, D4, 8, 0).frag(FragSpec::First).build(),
            14 + 24,
        ),
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v4 first fragment, UDP length beyond the fragment",
        {
            let mut f = PacketSpec::udp(S4, D4, 1000, uport)
                .frag(FragSpec::First)
                .payload(8)
                .build();
            let o = l4_v4(&f);
            put16(&mut f, o + 4, 1400);
            f
        },
        uok,
    );
    t.ok(
        "v4 TCP fragment at offset 1 (RFC 1858 flag rewrite)",
        syn4(port).frag(FragSpec::Later(1)).build(),
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v4 TCP fragment at offset 1 with more fragments",
        {
            let mut f = syn4(port).frag(FragSpec::Later(1)).build();
            f[20] |= 0x20;
            f
        },
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v4 TCP fragment at offset 2",
        syn4(port).frag(FragSpec::Later(2)).build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 UDP fragment at offset 1",
        PacketSpec::udp(S4, D4, 1000, uport)
            .frag(FragSpec::Later(1))
            .build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 later TCP fragment (offset 185)",
        syn4(port).frag(FragSpec::Later(185)).payload(100).build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment at the last offset (8191)",
        PacketSpec::udp(S4, D4, 1000, uport)
            .frag(FragSpec::Later(0x1fff))
            .build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment with more fragments, closed port",
        {
            let mut f = syn4(e.closed).frag(FragSpec::Later(3)).build();
            f[20] |= 0x20;
            f
        },
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment, no payload",
        cut(syn4(port).frag(FragSpec::Later(7)).build(), 34),
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment, 3 payload bytes (TCP)",
        cut(syn4(port).frag(FragSpec::Later(7)).build(), 37),
        e.later_fragment(),
    );
    t.ok(
        "v4 later ICMP fragment",
        PacketSpec::icmp(S4, D4, 8, 0)
            .frag(FragSpec::Later(20))
            .build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 DF set, offset 0 (not a fragment)",
        syn4(port).build(),
        ok,
    );

    // Fragments, IPv6.
    t.ok(
        "v6 first fragment, full TCP header",
        syn6(port).frag(FragSpec::First).payload(16).build(),
        ok,
    );
    t.ok(
        "v6 first fragment, then destination options, then TCP",
        v6_chain(
            syn6(port),
            &[
                Ext::Frag {
                    offset: 0,
                    more: true,
                },
                Ext::Dst(8),
            ],
        ),
        ok,
    );
    for keep in [0usize, 8, 19] {
        t.odd(
            format!("v6 tiny first fragment, {keep} TCP bytes"),
            cut(syn6(port).frag(FragSpec::First).build(), 14 + 48 + keep),
            Is(Reason::TinyFragment),
        );
    }
    t.odd(
        "v6 tiny first fragment, 4 UDP bytes",
        cut(
            PacketSpec::udp(S6, D6, 1000, uport)
                .frag(FragSpec::First)
                .build(),
            14 + 48 + 4,
        ),
        Is(Reason::TinyFragment),
    );
    t.odd(
        "v6 tiny first fragment behind a hop-by-hop, 10 TCP bytes",
        cut(
            v6_chain(
                syn6(port),
                &[
                    Ext::Hbh(8),
                    Ext::Frag {
                        offset: 0,
                        more: true,
                    },
                ],
            ),
            14 + 56 + 10,
        ),
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v6 later fragment (offset 185)",
        syn6(port).frag(FragSpec::Later(185)).payload(64).build(),
        e.later_fragment(),
    );
    t.ok(
        "v6 TCP fragment at offset 1",
        syn6(port).frag(FragSpec::Later(1)).build(),
        e.later_fragment(),
    );
    t.ok(
        "v6 later fragment behind a hop-by-hop",
        v6_chain(
            syn6(port),
            &[
                Ext::Hbh(8),
                Ext::Frag {
                    offset: 50,
                    more: true,
                },
            ],
        ),
        e.later_fragment(),
    );
    t.ok(
        "v6 later fragment, nothing after the fragment header",
        cut(syn6(port).frag(FragSpec::Later(9)).build(), 14 + 48),
        e.later_fragment(),
    );

    // TCP header.
    for doff in 0..5u8 {
        let mut f = syn4(port).build();
        let o = l4_v4(&f);
        f[o + 12] = doff << 4;
        t.odd(
            format!("v4 TCP data offset {doff}"),
            f,
            Is(Reason::BadHeader),
        );
        let mut f = syn6(port).build();
        f[14 + 40 + 12] = doff << 4;
        t.odd(
            format!("v6 TCP data offset {doff}"),
            f,
            Is(Reason::BadHeader),
        );
    }
    for doff in [6u8, 10, 15] {
        let opt = (doff as usize - 5) * 4;
        let mut f = syn4(port).payload(opt).build();
        let o = l4_v4(&f);
        f[o + 12] = doff << 4;
        t.ok(format!("v4 TCP data offset {doff}"), f, ok);
        let mut f = syn4(port).payload(opt - 1).build();
        f[o + 12] = doff << 4;
        t.odd(
            format!("v4 TCP data offset {doff}, header one byte short"),
            f,
            Is(Reason::Truncated),
        );
    }
    t.odd(
        "v4 TCP header of 19 bytes",
        cut(syn4(port).build(), 14 + 20 + 19),
        Is(Reason::Truncated),
    );
    t.odd(
        "v6 TCP header of 12 bytes",
        cut(syn6(port).build(), 14 + 40 + 12),
        Is(Reason::Truncated),
    );
    t.ok(
        "v4 SYN with 1000 payload bytes",
        syn4(port).payload(1000).build(),
        ok,
    );
    t.ok("v4 SYN to port 0", syn4(0).build(), Is(Reason::DefaultDrop));
    t.ok(
        "v6 SYN to port 65535",
        syn6(65535).build(),
        Is(Reason::DefaultDrop),
    );

    // UDP header.
    let u4 = || PacketSpec::udp(S4, D4, 1000, uport);
    for ulen in 0..8u16 {
        let mut f = u4().payload(4).build();
        let o = l4_v4(&f);
        put16(&mut f, o + 4, ulen);
        t.odd(format!("v4 UDP length {ulen}"), f, Is(Reason::BadHeader));
    }
    {
        let mut f = u4().payload(4).build();
        let o = l4_v4(&f);
        put16(&mut f, o + 4, 13);
        t.odd(
            "v4 UDP length one past the datagram",
            f,
            Is(Reason::BadHeader),
        );
        let mut f = u4().payload(4).build();
        put16(&mut f, o + 4, 65535);
        t.odd("v4 UDP length 65535", f, Is(Reason::BadHeader));
        let mut f = u4().payload(4).build();
        put16(&mut f, o + 4, 8);
        t.odd("v4 UDP length shorter than the datagram", f, uok);
        let mut f = PacketSpec::udp(S6, D6, 1000, uport).payload(4).build();
        put16(&mut f, 14 + 40 + 4, 40);
        t.odd("v6 UDP length past the datagram", f, Is(Reason::BadHeader));
        let mut f = PacketSpec::udp(S6, D6, 1000, uport).payload(4).build();
        put16(&mut f, 14 + 40 + 4, 0);
        t.odd("v6 UDP length 0 (jumbo)", f, Is(Reason::BadHeader));
    }
    t.ok("v4 UDP, empty", u4().build(), uok);
    t.ok("v4 UDP with payload", u4().payload(100).build(), uok);
    t.ok(
        "v6 UDP with payload",
        PacketSpec::udp(S6, D6, 1000, uport).payload(100).build(),
        uok,
    );
    t.ok(
        "v4 UDP to a closed port",
        PacketSpec::udp(S4, D4, 1000, e.closed).build(),
        Is(Reason::DefaultDrop),
    );
    t.odd(
        "v4 UDP header of 7 bytes",
        cut(u4().build(), 14 + 20 + 7),
        Is(Reason::Truncated),
    );

    // ICMP.
    let echo = e.echo();
    t.ok(
        "v4 echo request",
        PacketSpec::icmp(S4, D4, 8, 0).payload(56).build(),
        echo,
    );
    t.ok(
        "v6 echo request",
        PacketSpec::icmp(S6, D6, 128, 0).payload(56).build(),
        echo,
    );
    t.ok(
        "v4 echo request, nonzero code",
        PacketSpec::icmp(S4, D4, 8, 5).build(),
        echo,
    );
    for (ty, name) in [
        (0u8, "echo reply (no ping of ours is tracked)"),
        (4, "source quench"),
        (5, "redirect"),
        (13, "timestamp"),
        (128, "type 128 (the ICMPv6 echo number)"),
        (135, "type 135 (the ICMPv6 NS number)"),
    ] {
        t.ok(
            format!("v4 ICMP {name}"),
            PacketSpec::icmp(S4, D4, ty, 0).payload(28).build(),
            Is(Reason::DefaultDrop),
        );
    }
    for (ty, name) in [
        (8u8, "type 8 (the ICMPv4 echo number)"),
        (129, "echo reply (no ping of ours is tracked)"),
        (138, "router renumbering"),
        (139, "node information query"),
        (142, "inverse ND advertisement"),
        (144, "home agent discovery"),
        (255, "type 255"),
    ] {
        t.ok(
            format!("v6 ICMPv6 {name}"),
            PacketSpec::icmp(S6, D6, ty, 0).payload(40).build(),
            Is(Reason::DefaultDrop),
        );
    }
    for (ty, name) in [
        (130u8, "MLD query"),
        (131, "MLD report"),
        (132, "MLD done"),
        (133, "router solicitation"),
        (134, "router advertisement"),
        (135, "neighbour solicitation"),
        (136, "neighbour advertisement"),
        (137, "redirect"),
        (143, "MLDv2 report"),
    ] {
        t.ok(
            format!("v6 ICMPv6 {name}"),
            PacketSpec::icmp("fe80::1", "ff02::1", ty, 0)
                .payload(24)
                .build(),
            Is(Reason::Ndp),
        );
        t.ok(
            format!("v6 ICMPv6 {name}, one VLAN tag"),
            PacketSpec::icmp("fe80::1", "ff02::1", ty, 0)
                .payload(24)
                .vlans(&[9])
                .build(),
            Is(Reason::Ndp),
        );
    }
    // MLD is sent behind a hop-by-hop header with the router alert option.
    for ty in [130u8, 131, 132, 143] {
        t.ok(
            format!("v6 ICMPv6 type {ty} (MLD) behind hop-by-hop"),
            v6_chain(
                PacketSpec::icmp("fe80::1", "ff02::16", ty, 0).payload(20),
                &[Ext::Hbh(8)],
            ),
            Is(Reason::Ndp),
        );
    }
    t.odd(
        "v4 ICMP header of 4 bytes",
        cut(PacketSpec::icmp(S4, D4, 8, 0).build(), 14 + 20 + 4),
        Is(Reason::Truncated),
    );
    t.odd(
        "v6 NS with a 7-byte ICMPv6 header",
        cut(
            PacketSpec::icmp("fe80::1", "ff02::1", 135, 0).build(),
            14 + 40 + 7,
        ),
        Is(Reason::Truncated),
    );

    // ICMP errors: they quote a packet this host sent; RELATED only if its flow is tracked
    // (never here: the flow tables are empty), and a malformed quote is a malformed packet.
    let err = e.icmp_error();
    let out4 = PacketSpec::syn(D4, S4, 443).build();
    let out6 = PacketSpec::syn(D6, S6, 443).build();
    for (ty, code, name) in [
        (3u8, 4u8, "fragmentation needed"),
        (3, 1, "host unreachable"),
        (3, 3, "port unreachable"),
        (11, 0, "time exceeded"),
        (12, 0, "parameter problem"),
    ] {
        t.ok(
            format!("v4 ICMP {name} quoting IP header + 8 bytes"),
            icmp_error(S4, D4, ty, code, &out4, 28),
            err,
        );
        t.ok(
            format!("v4 ICMP {name} quoting the whole packet"),
            icmp_error(S4, D4, ty, code, &out4, 999),
            err,
        );
    }
    t.ok(
        "v4 ICMP port unreachable quoting a UDP datagram",
        icmp_error(
            S4,
            D4,
            3,
            3,
            &PacketSpec::udp(D4, S4, 5353, 53).payload(20).build(),
            999,
        ),
        err,
    );
    t.ok(
        "v4 ICMP time exceeded quoting an echo request",
        icmp_error(S4, D4, 11, 0, &PacketSpec::icmp(D4, S4, 8, 0).build(), 28),
        err,
    );
    t.ok(
        "v4 ICMP error quoting IP options",
        icmp_error(
            S4,
            D4,
            3,
            4,
            &PacketSpec::syn(D4, S4, 443).options(4).build(),
            32,
        ),
        err,
    );
    t.ok(
        "v4 ICMP error quoting a protocol without ports (GRE)",
        icmp_error(
            S4,
            D4,
            3,
            2,
            &PacketSpec::new(D4, S4, L4Spec::Raw { proto: 47 })
                .payload(8)
                .build(),
            28,
        ),
        err,
    );
    for (keep, what) in [
        (0usize, "nothing"),
        (19, "19 bytes"),
        (20, "the IP header only"),
        (27, "27 bytes"),
    ] {
        t.ok(
            format!("v4 ICMP error quoting {what}"),
            icmp_error(S4, D4, 3, 4, &out4, keep),
            Is(Reason::Truncated),
        );
    }
    t.ok(
        "v4 ICMP error quoting ihl 6 with 8 bytes after 20",
        icmp_error(
            S4,
            D4,
            3,
            4,
            &PacketSpec::syn(D4, S4, 443).options(4).build(),
            28,
        ),
        Is(Reason::Truncated),
    );
    {
        let mut q = out4.clone();
        q[14] = 0x65;
        t.ok(
            "v4 ICMP error quoting IP version 6",
            icmp_error(S4, D4, 3, 4, &q, 28),
            Is(Reason::BadHeader),
        );
        q[14] = 0x44;
        t.ok(
            "v4 ICMP error quoting ihl 4",
            icmp_error(S4, D4, 3, 4, &q, 28),
            Is(Reason::BadHeader),
        );
        t.ok(
            "v4 ICMP error quoting an IPv6 packet",
            icmp_error(S4, D4, 3, 4, &out6, 48),
            Is(Reason::BadHeader),
        );
    }
    t.ok(
        "v4 ICMP error in a first fragment (the quote is not parsed)",
        {
            let mut f = icmp_error(S4, D4, 3, 4, &out4, 28);
            f[20] = 0x20;
            f
        },
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v4 ICMP redirect quoting a packet (not an error type)",
        icmp_error(S4, D4, 5, 1, &out4, 28),
        Is(Reason::DefaultDrop),
    );
    for (ty, code, name) in [
        (1u8, 4u8, "port unreachable"),
        (2, 0, "packet too big"),
        (3, 0, "time exceeded"),
        (4, 1, "parameter problem"),
    ] {
        t.ok(
            format!("v6 ICMPv6 {name} quoting header + 8 bytes"),
            icmp_error(S6, D6, ty, code, &out6, 48),
            err,
        );
        t.ok(
            format!("v6 ICMPv6 {name} quoting the whole packet"),
            icmp_error(S6, D6, ty, code, &out6, 999),
            err,
        );
    }
    t.ok(
        "v6 ICMPv6 error quoting an echo request",
        icmp_error(S6, D6, 1, 0, &PacketSpec::icmp(D6, S6, 128, 0).build(), 48),
        err,
    );
    t.ok(
        "v6 ICMPv6 error quoting a packet with a hop-by-hop header",
        icmp_error(
            S6,
            D6,
            2,
            0,
            &v6_chain(PacketSpec::syn(D6, S6, 443), &[Ext::Hbh(8)]),
            56,
        ),
        err,
    );
    for keep in [0usize, 39, 40, 47] {
        t.ok(
            format!("v6 ICMPv6 error quoting {keep} bytes"),
            icmp_error(S6, D6, 1, 0, &out6, keep),
            Is(Reason::Truncated),
        );
    }
    t.ok(
        "v6 ICMPv6 error quoting an IPv4 packet",
        icmp_error(S6, D6, 1, 0, &padded(out4.clone(), 20, 0), 48),
        Is(Reason::BadHeader),
    );
    t.ok(
        "v6 ICMPv6 error behind a fragment header (first fragment: not parsed)",
        v6_chain_frame(
            icmp_error(S6, D6, 2, 0, &out6, 48),
            &[Ext::Frag {
                offset: 0,
                more: true,
            }],
        ),
        Is(Reason::DefaultDrop),
    );

    // DHCP replies to this host's client.
    let dhcp = e.dhcp();
    t.ok(
        "DHCP reply 67 -> 68",
        PacketSpec::udp("192.0.2.254", "255.255.255.255", 67, 68)
            .payload(300)
            .build(),
        dhcp,
    );
    t.ok(
        "DHCP reply 67 -> 68 in a VLAN",
        PacketSpec::udp("192.0.2.254", D4, 67, 68)
            .payload(300)
            .vlans(&[100])
            .build(),
        dhcp,
    );
    t.ok(
        "DHCPv6 reply 547 -> 546",
        PacketSpec::udp("fe80::1", "fe80::2", 547, 546)
            .payload(100)
            .build(),
        dhcp,
    );
    t.ok(
        "DHCP request 68 -> 67 (a server's port)",
        PacketSpec::udp(S4, "255.255.255.255", 68, 67)
            .payload(300)
            .build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "DHCPv6 ports over IPv4",
        PacketSpec::udp(S4, D4, 547, 546).build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "DHCPv4 ports over IPv6",
        PacketSpec::udp(S6, D6, 67, 68).build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "TCP 67 -> 68",
        PacketSpec::tcp(S4, D4, 67, 68, tcp::SYN).build(),
        Is(Reason::DefaultDrop),
    );
    {
        let mut f = PacketSpec::udp("192.0.2.254", D4, 67, 68)
            .payload(4)
            .build();
        let o = l4_v4(&f);
        put16(&mut f, o + 4, 4);
        t.odd("DHCP reply with UDP length 4", f, Is(Reason::BadHeader));
    }
    t.ok(
        "DHCP reply, first fragment",
        PacketSpec::udp("192.0.2.254", D4, 67, 68)
            .payload(300)
            .frag(FragSpec::First)
            .build(),
        dhcp,
    );

    // Every TCP flag byte, to the open port and to a closed one, both families.
    for flags in 0..=255u8 {
        let tk = |s: &str, d: &str, dport| {
            PacketSpec::tcp(s, d, 40000, dport, flags)
                .payload(4)
                .build()
        };
        t.ok(
            format!("v4 TCP flags {flags:#04x} to port {port}"),
            tk(S4, D4, port),
            e.tcp_flags(flags, ok),
        );
        t.ok(
            format!("v6 TCP flags {flags:#04x} to port {port}"),
            tk(S6, D6, port),
            e.tcp_flags(flags, ok),
        );
        t.ok(
            format!("v4 TCP flags {flags:#04x} to closed port {}", e.closed),
            tk(S4, D4, e.closed),
            e.tcp_flags(flags, Is(Reason::DefaultDrop)),
        );
    }
    t
}

/// Each rule's ports with SYNs from both families, and the ports next to them.
fn open_ports(t: &mut Table, e: &Env, ports: &[(u16, u32)]) {
    for &(port, id) in ports {
        t.ok(format!("v4 SYN to {port}"), syn4(port).build(), Rule(id));
        t.ok(format!("v6 SYN to {port}"), syn6(port).build(), Rule(id));
        t.ok(
            format!("v4 SYN+ACK to {port}"),
            PacketSpec::tcp(S4, D4, 40000, port, tcp::SYN | tcp::ACK).build(),
            e.tcp_flags(tcp::SYN | tcp::ACK, Rule(id)),
        );
        t.ok(
            format!("v6 ACK to {port}"),
            PacketSpec::tcp(S6, D6, 40000, port, tcp::ACK).build(),
            e.tcp_flags(tcp::ACK, Rule(id)),
        );
        t.ok(
            format!("v4 NULL scan to {port}"),
            PacketSpec::tcp(S4, D4, 40000, port, 0).build(),
            Is(Reason::TcpNull),
        );
        t.ok(
            format!("v6 XMAS scan to {port}"),
            PacketSpec::tcp(S6, D6, 40000, port, tcp::ALL).build(),
            Is(Reason::TcpXmas),
        );
        t.ok(
            format!("v4 UDP to TCP port {port}"),
            PacketSpec::udp(S4, D4, 40000, port).build(),
            Is(Reason::DefaultDrop),
        );
        for n in [port.wrapping_sub(1), port.wrapping_add(1)] {
            if !ports.iter().any(|(p, _)| *p == n) {
                t.ok(
                    format!("v4 SYN to {n} (next to {port})"),
                    syn4(n).build(),
                    Is(Reason::DefaultDrop),
                );
            }
        }
    }
}

fn seed_table(p: &Policy) -> Table {
    let e = Env::of(p);
    let mut t = structural(&e);
    open_ports(&mut t, &e, &SEED_PORTS);
    t.ok(
        "nmap -sX (FIN PSH URG) to 80",
        PacketSpec::tcp(S4, D4, 40000, 80, tcp::FIN | tcp::PSH | tcp::URG).build(),
        Is(Reason::TcpBadFlags),
    );
    t.ok(
        "ACK to 80 with no connection (the seed's `! --syn -m state --state NEW -j DROP`)",
        PacketSpec::tcp(S4, D4, 40000, 80, tcp::ACK).build(),
        Is(Reason::TcpNotSyn),
    );
    t.ok(
        "nmap -sF (FIN) to 22",
        PacketSpec::tcp(S4, D4, 40000, 22, tcp::FIN).build(),
        Is(Reason::TcpBadFlags),
    );
    t.ok(
        "SYN+FIN to 443",
        PacketSpec::tcp(S6, D6, 40000, 443, tcp::SYN | tcp::FIN).build(),
        Is(Reason::TcpBadFlags),
    );
    t.ok(
        "SSH from anywhere (no source restriction in the seed)",
        PacketSpec::syn("203.0.113.99", D4, 22).build(),
        Rule(8),
    );
    t.ok(
        "v4 SYN to 8080",
        syn4(8080).build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v6 SYN to 3306",
        syn6(3306).build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v4 UDP to 53",
        PacketSpec::udp(S4, D4, 5353, 53).build(),
        Is(Reason::DefaultDrop),
    );
    t
}

fn ssh_from(src: &str, dport: u16) -> Vec<u8> {
    let dst = if src.parse::<IpAddr>().unwrap().is_ipv4() {
        D4
    } else {
        D6
    };
    PacketSpec::syn(src, dst, dport).build()
}

fn restricted_table(p: &Policy) -> Table {
    let e = Env::of(p);
    let mut t = structural(&e);
    open_ports(&mut t, &e, &[(80, 0), (443, 1)]);
    let deny = Is(Reason::SourceNotAllowed);
    for (src, port, want, why) in [
        ("203.0.113.7", 22, Rule(2), "the one allowed v4 host"),
        ("203.0.113.8", 22, deny, "the host next to it"),
        ("203.0.113.6", 22, deny, "the host before it"),
        ("198.51.100.0", 22, Rule(2), "the /24's first address"),
        ("198.51.100.5", 22, Rule(2), "inside the /24"),
        ("198.51.100.127", 22, Rule(2), "last address before the /25"),
        ("198.51.100.128", 22, Rule(3), "the /25 (longest prefix)"),
        ("198.51.100.255", 22, Rule(3), "the /25's last address"),
        ("198.51.101.1", 22, deny, "outside the /24"),
        ("198.51.99.255", 22, deny, "just below the /24"),
        ("10.0.0.1", 22, deny, "a 2222-only source"),
        ("0.0.0.0", 22, deny, "0.0.0.0"),
        ("255.255.255.255", 22, deny, "broadcast"),
        ("2001:db8:1::5", 22, Rule(2), "inside the v6 /48"),
        (
            "2001:db8:1:ffff:ffff:ffff:ffff:ffff",
            22,
            Rule(2),
            "the /48's last address",
        ),
        (
            "2001:db8:1:2::5",
            22,
            Rule(3),
            "the v6 /64 (longest prefix)",
        ),
        ("2001:db8:1:3::5", 22, Rule(2), "the /48 outside the /64"),
        ("2001:db8:2::1", 22, deny, "outside the /48"),
        ("2001:db8::7", 22, Rule(2), "the v6 /128"),
        ("2001:db8::8", 22, deny, "next to the v6 /128"),
        ("::", 22, deny, "::"),
        ("::ffff:203.0.113.7", 22, deny, "v4-mapped allowed host"),
        ("10.1.2.3", 2222, Rule(4), "inside 10/8"),
        ("10.255.255.255", 2222, Rule(4), "10/8's last address"),
        ("11.0.0.0", 2222, deny, "just past 10/8"),
        ("9.255.255.255", 2222, deny, "just below 10/8"),
        ("203.0.113.7", 2222, deny, "an SSH-only source"),
        ("2001:db8:1::5", 2222, deny, "v6 on a v4-only port"),
        ("2001:db8:77::1", 3000, Rule(6), "any v6 source (::/0)"),
        ("::1", 3000, Rule(6), "::1 (::/0)"),
        ("198.51.100.5", 3000, deny, "v4 on a ::/0 port"),
        ("198.51.100.5", 4000, Rule(7), "any v4 source (0.0.0.0/0)"),
        ("0.0.0.0", 4000, Rule(7), "0.0.0.0 (0.0.0.0/0)"),
        ("2001:db8:77::1", 4000, deny, "v6 on a 0.0.0.0/0 port"),
        ("203.0.113.7", 23, Is(Reason::DefaultDrop), "port 23"),
        ("203.0.113.7", 21, Is(Reason::DefaultDrop), "port 21"),
    ] {
        t.ok(
            format!("SYN from {src} to {port}: {why}"),
            ssh_from(src, port),
            want,
        );
    }
    t.ok(
        "SSH from an allowed host, two VLAN tags",
        PacketSpec::syn("203.0.113.7", D4, 22)
            .vlans(&[1, 2])
            .build(),
        Rule(2),
    );
    t.ok(
        "SSH from the v6 /64 behind a destination options header",
        v6_chain(PacketSpec::syn("2001:db8:1:2::9", D6, 22), &[Ext::Dst(8)]),
        Rule(3),
    );
    t.ok(
        "NULL scan to 22 from an allowed host",
        PacketSpec::tcp("203.0.113.7", D4, 1, 22, 0).build(),
        Is(Reason::TcpNull),
    );
    t.ok(
        "SYN+RST to 22 from an allowed host",
        PacketSpec::tcp("203.0.113.7", D4, 1, 22, tcp::SYN | tcp::RST).build(),
        Is(Reason::TcpBadFlags),
    );
    t.ok(
        "ACK to 22 from a refused host",
        PacketSpec::tcp("203.0.113.9", D4, 1, 22, tcp::ACK).build(),
        e.tcp_flags(tcp::ACK, deny),
    );
    t.ok(
        "SSH first fragment from a refused host",
        PacketSpec::syn("203.0.113.9", D4, 22)
            .frag(FragSpec::First)
            .build(),
        deny,
    );
    for (src, want) in [
        ("192.0.2.9", Rule(5)),
        ("192.0.2.255", Rule(5)),
        ("192.0.3.1", deny),
        ("2001:db8:1::5", deny),
    ] {
        let dst = if src.contains(':') { D6 } else { D4 };
        t.ok(
            format!("UDP from {src} to 53"),
            PacketSpec::udp(src, dst, 5353, 53).payload(30).build(),
            want,
        );
    }
    t.ok(
        "TCP from 192.0.2.9 to 53 (the rule is UDP)",
        PacketSpec::syn("192.0.2.9", D4, 53).build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "UDP from 203.0.113.7 to 22 (the rule is TCP)",
        PacketSpec::udp("203.0.113.7", D4, 5353, 22).build(),
        Is(Reason::DefaultDrop),
    );
    t
}

fn options_table(p: &Policy) -> Table {
    let e = Env::of(p);
    let mut t = structural(&e);
    open_ports(&mut t, &e, &[(80, 2)]);
    for (port, want) in [
        (53u16, Rule(0)),
        (52, Is(Reason::DefaultDrop)),
        (54, Is(Reason::DefaultDrop)),
        (5999, Is(Reason::DefaultDrop)),
        (6000, Rule(1)),
        (6005, Rule(1)),
        (6010, Rule(1)),
        (6011, Is(Reason::DefaultDrop)),
        (59999, Is(Reason::DefaultDrop)),
        (60000, Rule(3)),
        (65535, Rule(3)),
        (0, Is(Reason::DefaultDrop)),
    ] {
        t.ok(
            format!("v4 UDP to {port}"),
            PacketSpec::udp(S4, D4, 1234, port).payload(12).build(),
            want,
        );
        t.ok(
            format!("v6 UDP to {port}"),
            PacketSpec::udp(S6, D6, 1234, port).payload(12).build(),
            want,
        );
    }
    for (port, want) in [
        (1u16, Rule(4)),
        (21, Rule(4)),
        (22, Is(Reason::DefaultDrop)),
        (6000, Is(Reason::DefaultDrop)),
        (53, Is(Reason::DefaultDrop)),
    ] {
        t.ok(format!("v4 SYN to {port}"), syn4(port).build(), want);
    }
    t.ok(
        "nmap -sX (FIN PSH URG) to 80, strict flags off",
        PacketSpec::tcp(S4, D4, 40000, 80, tcp::FIN | tcp::PSH | tcp::URG).build(),
        Rule(2),
    );
    t.ok(
        "SYN+FIN to 80, strict flags off",
        PacketSpec::tcp(S4, D4, 40000, 80, tcp::SYN | tcp::FIN).build(),
        Rule(2),
    );
    t.ok(
        "NULL to 80, strict flags off (still a seed rule)",
        PacketSpec::tcp(S4, D4, 40000, 80, 0).build(),
        Is(Reason::TcpNull),
    );
    t
}

// ---------------------------------------------------------------------------------------------
// Running tables

/// Every case, then every prefix of every case.
fn run_table(tally: &mut Tally, f: &KernelFilter, t: &Table) {
    for c in &t.0 {
        tally.packet(f, &c.name, &c.frame, c.expect);
    }
    for c in &t.0 {
        let pt = c.prefixes_truncated && !f.mirror().config.has(Config::PASS_ALL);
        tally.truncations(f, &c.name, &c.frame, pt);
    }
    // Nothing here belongs to a connection: neither side may have recorded one.
    tally.flows(f, "after the table");
    match f.kernel_flows() {
        Ok(k) if k.is_empty() => {}
        Ok(k) => tally.fail(format!("the table left {} kernel flow entries", k.len())),
        Err(e) => tally.fail(format!("{e:#}")),
    }
}

fn load(p: &Policy) -> KernelFilter {
    require_root();
    KernelFilter::load(p).unwrap_or_else(|e| panic!("loading the fw XDP program: {e:#}"))
}

/// Both builds of the XDP program: multi-buffer (`xdp.frags`, what fw loads on Linux ≥ 5.18)
/// and single-buffer (older kernels). The tables must come out the same for both.
fn variants() -> Vec<Variant> {
    let mut v = vec![Variant::Linear];
    if fw::probe::xdp_frags() {
        v.insert(0, Variant::Frags);
    } else {
        eprintln!("this kernel has no multi-buffer XDP: only the single-buffer build runs");
    }
    v
}

/// Run `table` for `policy` through each build of the program.
fn run_both(name: &str, p: &Policy, table: &Table) {
    require_root();
    for v in variants() {
        let f = KernelFilter::load_variant(p, v)
            .unwrap_or_else(|e| panic!("loading the {v:?} build: {e:#}"));
        let mut tally = Tally::new(format!("{name} ({v:?})"));
        run_table(&mut tally, &f, table);
        tally.finish();
    }
}

#[test]
fn seed_policy_verdicts() {
    let p = seed();
    run_both("seed", &p, &seed_table(&p));
}

#[test]
fn source_restricted_policy_verdicts() {
    let p = policy("restricted", RESTRICTED);
    run_both("ssh-restricted", &p, &restricted_table(&p));
}

#[test]
fn options_policy_verdicts() {
    let p = policy("options", OPTIONS);
    run_both("options", &p, &options_table(&p));
}

#[test]
fn empty_policy_verdicts() {
    let p = policy("empty", "");
    let mut t = structural(&Env::of(&p));
    for port in [22u16, 80, 443] {
        t.ok(
            format!("v4 SYN to {port}"),
            syn4(port).build(),
            Is(Reason::DefaultDrop),
        );
    }
    run_both("empty", &p, &t);
}

/// `fw flush`: everything passes, counted as flushed; unflushing restores the policy.
#[test]
fn flush_passes_everything() {
    let p = seed();
    let mut f = load(&p);
    let table = seed_table(&p);
    let mut tally = Tally::new("flushed");
    f.set_flushed(true).expect("flush");
    let flushed: Vec<_> = table
        .0
        .iter()
        .map(|c| Case {
            name: format!("flushed: {}", c.name),
            frame: c.frame.clone(),
            expect: Is(Reason::Flushed),
            prefixes_truncated: false,
        })
        .collect();
    let flushed = Table(flushed);
    run_table(&mut tally, &f, &flushed);
    // Random bytes with an IP ethertype pass too.
    let mut rng = Rng::new(0xf105);
    for i in 0..200 {
        let mut fr: Vec<u8> = (0..14 + rng.below(200)).map(|_| rng.byte()).collect();
        put16(
            &mut fr,
            12,
            *rng.pick(&[pkt::ETH_P_IPV4, pkt::ETH_P_IPV6, pkt::ETH_P_8021Q]),
        );
        tally.packet(
            &f,
            &format!("flushed random frame {i}"),
            &fr,
            Is(Reason::Flushed),
        );
    }
    f.set_flushed(false).expect("unflush");
    run_table(&mut tally, &f, &table);
    tally.finish();
}

/// Two generations in the kernel: fill the inactive one, flip, and the verdicts follow; the
/// other generation's entries (LPM included) never leak into the active one.
#[test]
fn generation_flip() {
    let seed = seed();
    let restricted = policy("restricted", RESTRICTED);
    // Another source-restricted policy for generation 0, overlapping generation 1's ports.
    let other = policy(
        "other",
        r#"
[[allow]]
ports = [22]
from = ["198.51.100.0/24"]
[[allow]]
ports = [8080]
"#,
    );
    let mut f = load(&seed);
    let mut tally = Tally::new("generations");
    let seed_t = seed_table(&seed);
    let restricted_t = restricted_table(&restricted);
    let mut other_t = structural(&Env::of(&other));
    for (src, port, want) in [
        ("198.51.100.5", 22, Rule(0)),
        ("198.51.100.200", 22, Rule(0)),
        ("203.0.113.7", 22, Is(Reason::SourceNotAllowed)),
        ("2001:db8:1::5", 22, Is(Reason::SourceNotAllowed)),
        ("10.1.2.3", 2222, Is(Reason::DefaultDrop)),
        ("203.0.113.7", 8080, Rule(1)),
        ("2001:db8:1::5", 8080, Rule(1)),
        ("203.0.113.7", 80, Is(Reason::DefaultDrop)),
    ] {
        other_t.ok(
            format!("SYN from {src} to {port}"),
            ssh_from(src, port),
            want,
        );
    }

    let phase = |f: &KernelFilter, label: &str, t: &Table, tally: &mut Tally| {
        let before = (tally.packets, tally.truncations);
        for c in &t.0 {
            tally.packet(f, &format!("{label}: {}", c.name), &c.frame, c.expect);
        }
        for c in t.0.iter().filter(|c| !c.name.contains("TCP flags")) {
            tally.truncations(
                f,
                &format!("{label}: {}", c.name),
                &c.frame,
                c.prefixes_truncated,
            );
        }
        println!(
            "  {label}: gen {} active, {} packets, {} truncations",
            f.active_generation(),
            tally.packets - before.0,
            tally.truncations - before.1
        );
    };

    assert_eq!(f.active_generation(), 0);
    phase(&f, "gen 0 = seed", &seed_t, &mut tally);
    f.write_generation(&restricted, 1).expect("write gen 1");
    phase(&f, "gen 1 written, gen 0 still active", &seed_t, &mut tally);
    f.set_active(1).expect("flip to 1");
    phase(
        &f,
        "flipped to gen 1 = restricted",
        &restricted_t,
        &mut tally,
    );
    // Gen 1's rules count in gen 1's slots: check one directly.
    let slot = fw_common::maps::rule_slot(1, 2);
    let c0 = f.counter(slot).expect("counter").packets;
    f.run(&ssh_from("203.0.113.7", 22)).expect("run");
    assert_eq!(
        f.counter(slot).expect("counter").packets,
        c0 + 1,
        "gen 1 rule 2 counter"
    );
    f.write_generation(&other, 0).expect("write gen 0");
    phase(
        &f,
        "gen 0 rewritten, gen 1 still active",
        &restricted_t,
        &mut tally,
    );
    f.set_active(0).expect("flip to 0");
    phase(&f, "flipped to gen 0 = other", &other_t, &mut tally);
    f.set_active(1).expect("flip back to 1");
    phase(&f, "flipped back to gen 1", &restricted_t, &mut tally);
    assert_eq!(f.apply(&seed).expect("apply"), 0);
    phase(&f, "apply(seed) into gen 0", &seed_t, &mut tally);
    tally.finish();
}

// ---------------------------------------------------------------------------------------------
// Randomized differential test

/// Byte values that steer the parser: IP versions/ihl, protocols and next headers, TPIDs.
const INTERESTING: [u8; 20] = [
    0x00, 0x01, 0x02, 0x05, 0x06, 0x08, 0x11, 0x20, 0x2b, 0x2c, 0x33, 0x3a, 0x3b, 0x3c, 0x45, 0x4f,
    0x60, 0x81, 0x86, 0xff,
];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let hot = f.len().min(96);
        let i = if rng.chance(4, 5) {
            rng.below(hot)
        } else {
            rng.below(f.len())
        };
        match rng.below(8) {
            0 | 1 => f[i] = rng.byte(),
            2 => f[i] ^= 1 << rng.below(8),
            3 | 4 => f[i] = *rng.pick(&INTERESTING),
            5 => {
                // Insert or delete a few bytes (shifts every header after them).
                let k = 1 + rng.below(8);
                if rng.chance(1, 2) {
                    for _ in 0..k {
                        f.insert(i, rng.byte());
                    }
                } else {
                    let end = (i + k).min(f.len());
                    f.drain(i..end);
                }
            }
            6 => f.resize(f.len() + rng.below(64), rng.byte()),
            _ => {
                // A 16-bit field: a length, a port, an ethertype.
                let v = *rng.pick(&[
                    0u16, 1, 7, 8, 19, 20, 40, 0x0800, 0x86dd, 0x8100, 0x88a8, 0xffff,
                ]);
                if i + 1 < f.len() {
                    put16(&mut f, i, v);
                }
            }
        }
        if f.len() < MIN_FRAME {
            f.resize(MIN_FRAME, 0);
        }
    }
    if rng.chance(1, 2) {
        f = fix_len(f);
    }
    if rng.chance(1, 4) {
        let len = MIN_FRAME + rng.below(f.len() - MIN_FRAME + 1);
        f.truncate(len);
    }
    f
}

/// A random address near one of the policy's CIDRs (or anywhere), for LPM coverage.
fn near(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let bases: [[u8; 16]; 3] = [
            "2001:db8:1::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8:1:2::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        ];
        let mut a = *rng.pick(&bases);
        let from = 4 + rng.below(12);
        for b in &mut a[from..] {
            *b = rng.byte();
        }
        if rng.chance(1, 3) {
            a[rng.below(8)] ^= 1 << rng.below(8);
        }
        if rng.chance(1, 8) {
            a = std::array::from_fn(|_| rng.byte());
        }
        IpAddr::from(a)
    } else {
        let bases = [
            [203u8, 0, 113, 7],
            [198, 51, 100, 0],
            [10, 0, 0, 0],
            [192, 0, 2, 0],
        ];
        let mut a = *rng.pick(&bases);
        a[3] = rng.byte();
        if rng.chance(1, 3) {
            a[2] = rng.byte();
        }
        if rng.chance(1, 4) {
            a[rng.below(3)] ^= 1 << rng.below(8);
        }
        if rng.chance(1, 8) {
            a = std::array::from_fn(|_| rng.byte());
        }
        IpAddr::from(a)
    }
}

#[test]
fn random_differential() {
    require_root();
    const MUTATED: usize = 4000;
    const RANDOM: usize = 500;
    const SOURCES: usize = 1000;
    let policies = [
        ("seed", seed()),
        ("restricted", policy("restricted", RESTRICTED)),
        ("options", policy("options", OPTIONS)),
    ];
    let bases: Vec<Vec<u8>> = {
        let mut b: Vec<Vec<u8>> = seed_table(&policies[0].1)
            .0
            .into_iter()
            .filter(|c| !c.name.contains("TCP flags"))
            .map(|c| c.frame)
            .collect();
        b.extend(
            restricted_table(&policies[1].1)
                .0
                .into_iter()
                .rev()
                .take(60)
                .map(|c| c.frame),
        );
        b
    };
    let mut f = load(&policies[0].1);
    let mut tally = Tally::new("random");
    let mut rng = Rng::new(0x5eed_f00d_1234_abcd);
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    for (i, (name, pol)) in policies.iter().enumerate() {
        if i > 0 {
            f.apply(pol).expect("apply");
        }
        for n in 0..MUTATED {
            let base = rng.pick(&bases);
            let fr = mutate(&mut rng, base);
            if let Some(d) = tally.any(&f, &format!("{name}: mutated frame {n}"), &fr) {
                *verdicts.entry(tests::testrun::describe(&d)).or_default() += 1;
            }
        }
        for n in 0..RANDOM {
            let len = MIN_FRAME + rng.below(300);
            let mut fr: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if rng.chance(3, 4) {
                put16(
                    &mut fr,
                    12,
                    *rng.pick(&[pkt::ETH_P_IPV4, pkt::ETH_P_IPV6, pkt::ETH_P_8021Q]),
                );
            }
            if rng.chance(1, 2) && fr.len() > 14 {
                fr[14] = *rng.pick(&[0x45, 0x46, 0x4f, 0x60, 0x81]);
                fr = fix_len(fr);
            }
            tally.any(&f, &format!("{name}: random frame {n}"), &fr);
        }
        for _ in 0..SOURCES {
            let v6 = rng.chance(1, 2);
            let src = near(&mut rng, v6);
            let dport = *rng.pick(&[22u16, 2222, 3000, 4000, 53, 80]);
            let (dst, l4): (IpAddr, L4Spec) = (
                if v6 {
                    D6.parse().unwrap()
                } else {
                    D4.parse().unwrap()
                },
                if rng.chance(3, 4) {
                    L4Spec::Tcp {
                        sport: 40000,
                        dport,
                        flags: *rng.pick(&[tcp::SYN, tcp::ACK, tcp::SYN | tcp::ACK, 0, tcp::FIN]),
                    }
                } else {
                    L4Spec::Udp { sport: 5353, dport }
                },
            );
            let mut spec = PacketSpec::new(D4, D4, l4);
            spec.src = src;
            spec.dst = dst;
            let fr = spec.build();
            if let Some(d) = tally.any(&f, &format!("{name}: SYN from {src} to {dport}"), &fr) {
                *verdicts.entry(tests::testrun::describe(&d)).or_default() += 1;
            }
        }
    }
    println!("[random] verdicts seen: {verdicts:?}");
    tally.finish();
}

/// The harness leaves no pins behind: not after a normal drop, not after a panic.
#[test]
fn pins_are_removed() {
    let p = seed();
    let f = load(&p);
    let (pins, state) = (f.pins_dir().to_path_buf(), f.state_dir().to_path_buf());
    assert!(
        pins.join(fw_common::maps::MAP_PORTS).exists(),
        "maps are pinned"
    );
    drop(f);
    assert!(!pins.exists(), "{} left behind", pins.display());
    assert!(!state.exists(), "{} left behind", state.display());

    let dirs = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let f = load(&p);
        *dirs.lock().unwrap() = Some((f.pins_dir().to_path_buf(), f.state_dir().to_path_buf()));
        panic!("(expected) a test failing while the filter is loaded");
    });
    assert!(r.is_err());
    let (pins, state) = dirs.lock().unwrap().take().expect("filter was loaded");
    assert!(
        !pins.exists(),
        "{} left behind after a panic",
        pins.display()
    );
    assert!(
        !state.exists(),
        "{} left behind after a panic",
        state.display()
    );
}

/// The harness notices a kernel that disagrees with the mirror: in the verdict, and in the
/// counter slot alone (same verdict, another slot).
#[test]
fn harness_detects_disagreement() {
    let p = seed();
    let mut f = load(&p);
    let ping = PacketSpec::icmp(S4, D4, 8, 0).payload(56).build();
    let web = syn4(80).build();
    assert!(f.check(&ping).unwrap().is_ok() && f.check(&web).unwrap().is_ok());

    let g = f.active_generation();
    let mut cfg = f.mirror().config;
    cfg.flags |= Config::ICMP_ECHO;
    f.kernel_maps_mut()
        .set_config(g, cfg)
        .expect("kernel-only config");
    let m = f
        .check(&ping)
        .unwrap()
        .expect_err("echo: kernel passes, decide() drops");
    assert_eq!(
        (m.kernel_ret, m.slot_delta),
        (tests::testrun::XDP_PASS, (0, 0)),
        "{m}"
    );
    assert!(!m.user.pass);

    cfg.flags |= Config::PASS_ALL;
    f.kernel_maps_mut()
        .set_config(g, cfg)
        .expect("kernel-only config");
    let m = f
        .check(&web)
        .unwrap()
        .expect_err("kernel counts flushed, decide() rule 0");
    assert_eq!(
        (m.kernel_ret, m.slot_delta),
        (tests::testrun::XDP_PASS, (0, 0)),
        "{m}"
    );
    assert!(m.user.pass);

    let mut tally = Tally::new("self-test");
    tally.packet(&f, "wrong on purpose", &web, Rule(0));
    assert_eq!(tally.failures(), 1, "a disagreement is a failure");
    f.set_config(f.mirror().config).expect("restore");
    tally = Tally::new("self-test");
    tally.packet(&f, "web SYN, table says rule 1 on purpose", &web, Rule(1));
    assert_eq!(tally.failures(), 1, "a wrong expectation is a failure");
    tally = Tally::new("self-test");
    tally.packet(&f, "web SYN", &web, Rule(0));
    tally.packet(&f, "ping", &ping, Is(Reason::DefaultDrop));
    tally.finish();
}
