//! Unit tier (a test module of fw-policy): `decide()` on a table of packets, and stateful sequences through the userspace
//! mirror (egress recording + ingress decisions), with the verdict and reason each must get.

use fw_common::{
    Decision, Reason, Tables, decide, egress,
    flow::state,
    frame::{FragSpec, L4Spec, PacketSpec, arp_frame},
    maps::rule_slot,
    tcp::{ACK, FIN, PSH, RST, SYN, URG},
};

use crate::{Compiled, SEED_POLICY, mirror::Mirror, parse_policy};

const HOST4: &str = "192.0.2.1";
const PEER4: &str = "198.51.100.7";
const HOST6: &str = "2001:db8::1";
const PEER6: &str = "2001:db8:1::7";

fn seed() -> Compiled {
    Compiled::new(&parse_policy("seed", SEED_POLICY).unwrap(), 0)
}

fn policy(text: &str) -> Compiled {
    Compiled::new(&parse_policy("test", text).unwrap(), 0)
}

fn reason(d: Decision) -> Option<Reason> {
    d.why()
}

#[test]
fn seed_policy_table() {
    let t = seed();
    // (what, frame, expected: Ok(rule index) or Err(reason))
    let cases: Vec<(&str, Vec<u8>, Result<u32, Reason>)> = vec![
        (
            "SYN to 80",
            PacketSpec::syn(PEER4, HOST4, 80).build(),
            Ok(0),
        ),
        (
            "SYN to 22 over IPv6",
            PacketSpec::syn(PEER6, HOST6, 22).build(),
            Ok(8),
        ),
        (
            "SYN to 993",
            PacketSpec::syn(PEER4, HOST4, 993).build(),
            Ok(7),
        ),
        (
            "SYN to 8080",
            PacketSpec::syn(PEER4, HOST4, 8080).build(),
            Err(Reason::DefaultDrop),
        ),
        (
            "NULL to 80",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, 0).build(),
            Err(Reason::TcpNull),
        ),
        (
            "XMAS to 80",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, 0x3f).build(),
            Err(Reason::TcpXmas),
        ),
        (
            "nmap XMAS (FIN PSH URG) to 80",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, FIN | PSH | URG).build(),
            Err(Reason::TcpBadFlags),
        ),
        (
            "SYN+FIN to 80",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, SYN | FIN).build(),
            Err(Reason::TcpBadFlags),
        ),
        (
            "FIN to 80 (nmap -sF)",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, FIN).build(),
            Err(Reason::TcpBadFlags),
        ),
        (
            "ACK to 80 without a connection (nmap -sA)",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, ACK).build(),
            Err(Reason::TcpNotSyn),
        ),
        (
            "SYN+ACK to 80 without a connection",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, SYN | ACK).build(),
            Err(Reason::TcpNotSyn),
        ),
        (
            "RST to 80 without a connection",
            PacketSpec::tcp(PEER4, HOST4, 1, 80, RST).build(),
            Err(Reason::TcpNotSyn),
        ),
        (
            "UDP to 53",
            PacketSpec::udp(PEER4, HOST4, 5000, 53).build(),
            Err(Reason::DefaultDrop),
        ),
        (
            "DHCP reply",
            PacketSpec::udp(PEER4, HOST4, 67, 68).build(),
            Err(Reason::DhcpClient),
        ),
        (
            "DHCPv6 reply",
            PacketSpec::udp(PEER6, HOST6, 547, 546).build(),
            Err(Reason::DhcpClient),
        ),
        (
            "ping",
            PacketSpec::icmp(PEER4, HOST4, 8, 0).build(),
            Err(Reason::DefaultDrop),
        ),
        (
            "ping6",
            PacketSpec::icmp(PEER6, HOST6, 128, 0).build(),
            Err(Reason::DefaultDrop),
        ),
        (
            "neighbour solicitation",
            PacketSpec::icmp(PEER6, HOST6, 135, 0).build(),
            Err(Reason::Ndp),
        ),
        (
            "router advertisement",
            PacketSpec::icmp(PEER6, HOST6, 134, 0).build(),
            Err(Reason::Ndp),
        ),
        ("ARP", arp_frame(), Err(Reason::NonIp)),
        (
            "SYN to 80 in two VLAN tags",
            PacketSpec::syn(PEER4, HOST4, 80).vlans(&[10, 20]).build(),
            Ok(0),
        ),
        (
            "SYN to 8080 in a VLAN tag",
            PacketSpec::syn(PEER4, HOST4, 8080).vlans(&[10]).build(),
            Err(Reason::DefaultDrop),
        ),
        (
            "three VLAN tags",
            PacketSpec::syn(PEER4, HOST4, 80).vlans(&[1, 2, 3]).build(),
            Err(Reason::TooManyVlans),
        ),
        (
            "IPv4 options",
            PacketSpec::syn(PEER4, HOST4, 443).options(40).build(),
            Ok(1),
        ),
        (
            "IPv6 ext headers",
            PacketSpec::syn(PEER6, HOST6, 443)
                .ext(&[0, 43, 60, 51])
                .build(),
            Ok(1),
        ),
        (
            "IPv6 7 ext headers",
            PacketSpec::syn(PEER6, HOST6, 443)
                .ext(&[0, 60, 60, 60, 60, 60, 60])
                .build(),
            Err(Reason::ExtHeaders),
        ),
        (
            "first fragment with TCP header",
            PacketSpec::syn(PEER4, HOST4, 80)
                .frag(FragSpec::First)
                .build(),
            Ok(0),
        ),
        (
            "later fragment",
            PacketSpec::syn(PEER4, HOST4, 80)
                .frag(FragSpec::Later(100))
                .build(),
            Err(Reason::FragmentPassed),
        ),
        (
            "TCP fragment at offset 8",
            PacketSpec::syn(PEER4, HOST4, 80)
                .frag(FragSpec::Later(1))
                .build(),
            Err(Reason::TinyFragment),
        ),
        (
            "IPv6 later fragment",
            PacketSpec::udp(PEER6, HOST6, 1, 53)
                .frag(FragSpec::Later(10))
                .build(),
            Err(Reason::FragmentPassed),
        ),
        (
            "GRE",
            PacketSpec::new(PEER4, HOST4, L4Spec::Raw { proto: 47 })
                .payload(8)
                .build(),
            Err(Reason::DefaultDrop),
        ),
        (
            "ICMP error about nothing we sent",
            icmp_error_v4(HOST4, PEER4, 40000, 443),
            Err(Reason::IcmpUnrelated),
        ),
    ];
    for (what, frame, want) in cases {
        let d = decide(frame.as_slice(), &t);
        match want {
            Ok(rule) => assert_eq!(d, Decision::rule(rule_slot(0, rule)), "{what}"),
            Err(r) => assert_eq!(reason(d), Some(r), "{what}: {d:?}"),
        }
    }
}

#[test]
fn tiny_first_fragment_is_dropped() {
    let t = seed();
    let mut f = PacketSpec::syn(PEER4, HOST4, 80)
        .frag(FragSpec::First)
        .build();
    // Cut the datagram inside the TCP header and fix up the IPv4 total length.
    f.truncate(14 + 20 + 8);
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    assert_eq!(reason(decide(f.as_slice(), &t)), Some(Reason::TinyFragment));
}

#[test]
fn every_truncation_of_a_packet_drops_or_passes_as_non_ip() {
    let t = seed();
    let f = PacketSpec::syn(PEER6, HOST6, 22).ext(&[0, 60]).build();
    for len in 0..f.len() {
        let d = decide(&f[..len], &t);
        assert!(!d.pass, "truncated to {len} bytes passed: {d:?}");
    }
    assert!(decide(f.as_slice(), &t).pass);
}

#[test]
fn seed_flags_only_mode_keeps_exactly_the_two_seed_rules() {
    let t = policy(
        "[options]\nstrict_tcp_flags = false\nestablished = false\nnew_requires_syn = false\n[[allow]]\nports = [80]\n",
    );
    let d = |f: u8| {
        decide(
            PacketSpec::tcp(PEER4, HOST4, 1, 80, f).build().as_slice(),
            &t,
        )
    };
    assert_eq!(reason(d(0)), Some(Reason::TcpNull));
    assert_eq!(reason(d(0x3f)), Some(Reason::TcpXmas));
    // What the seed's iptables rules let through: everything else to an open port.
    for f in [FIN | PSH | URG, SYN | FIN, FIN, ACK] {
        assert!(d(f).pass, "flags {f:#x}");
    }
}

#[test]
fn source_restricted_ssh() {
    let t = policy("[[allow]]\nports = [22]\nfrom = [\"203.0.113.0/24\", \"2001:db8:aa::/48\"]\n");
    assert_eq!(
        decide(
            PacketSpec::syn("203.0.113.9", HOST4, 22).build().as_slice(),
            &t
        ),
        Decision::rule(rule_slot(0, 0))
    );
    assert_eq!(
        reason(decide(
            PacketSpec::syn(PEER4, HOST4, 22).build().as_slice(),
            &t
        )),
        Some(Reason::SourceNotAllowed)
    );
    assert!(
        decide(
            PacketSpec::syn("2001:db8:aa:1::5", HOST6, 22)
                .build()
                .as_slice(),
            &t
        )
        .pass
    );
    assert_eq!(
        reason(decide(
            PacketSpec::syn(PEER6, HOST6, 22).build().as_slice(),
            &t
        )),
        Some(Reason::SourceNotAllowed)
    );
    assert_eq!(
        reason(decide(
            PacketSpec::syn("203.0.113.9", HOST4, 23).build().as_slice(),
            &t
        )),
        Some(Reason::DefaultDrop)
    );
}

#[test]
fn options_switch_behaviour() {
    let t = policy(
        "[options]\nicmp_echo = true\nfragments = \"drop\"\ndhcp_client = false\n[[allow]]\nproto = \"udp\"\nports = [\"5000-5010\"]\n",
    );
    assert_eq!(
        reason(decide(
            PacketSpec::icmp(PEER4, HOST4, 8, 0).build().as_slice(),
            &t
        )),
        Some(Reason::IcmpEcho)
    );
    assert_eq!(
        reason(decide(
            PacketSpec::icmp(PEER6, HOST6, 128, 0).build().as_slice(),
            &t
        )),
        Some(Reason::IcmpEcho)
    );
    assert_eq!(
        reason(decide(
            PacketSpec::udp(PEER4, HOST4, 1, 53)
                .frag(FragSpec::Later(3))
                .build()
                .as_slice(),
            &t
        )),
        Some(Reason::FragmentDropped)
    );
    assert_eq!(
        reason(decide(
            PacketSpec::udp(PEER4, HOST4, 67, 68).build().as_slice(),
            &t
        )),
        Some(Reason::DefaultDrop)
    );
    assert!(
        decide(
            PacketSpec::udp(PEER4, HOST4, 1, 5005).build().as_slice(),
            &t
        )
        .pass
    );
    assert!(
        !decide(
            PacketSpec::udp(PEER4, HOST4, 1, 5011).build().as_slice(),
            &t
        )
        .pass
    );
    let flushed = t.clone().flushed();
    assert_eq!(
        reason(decide(
            PacketSpec::tcp(PEER4, HOST4, 1, 9, 0).build().as_slice(),
            &flushed
        )),
        Some(Reason::Flushed)
    );
}

// --- Connection state, through the mirror: what the egress program records, then what XDP decides.

fn mirror() -> Mirror {
    let m = Mirror::new(seed());
    m.now.set(1_000_000_000_000);
    m
}

fn out(m: &Mirror, frame: Vec<u8>) {
    egress::record(frame.as_slice(), m);
}

fn inn(m: &Mirror, frame: Vec<u8>) -> Decision {
    decide(frame.as_slice(), m)
}

#[test]
fn replies_to_our_tcp_connection_pass_and_unsolicited_ones_do_not() {
    let m = mirror();
    assert_eq!(
        reason(inn(
            &m,
            PacketSpec::tcp(PEER4, HOST4, 443, 40001, SYN | ACK).build()
        )),
        Some(Reason::TcpNotSyn)
    );
    out(
        &m,
        PacketSpec::tcp(HOST4, PEER4, 40001, 443, SYN)
            .seq_ack(1000, 0)
            .build(),
    );
    assert_eq!(
        reason(inn(
            &m,
            PacketSpec::tcp(PEER4, HOST4, 443, 40001, SYN | ACK)
                .seq_ack(5000, 1001)
                .build()
        )),
        Some(Reason::Established)
    );
    out(
        &m,
        PacketSpec::tcp(HOST4, PEER4, 40001, 443, ACK)
            .seq_ack(1001, 5001)
            .build(),
    );
    assert_eq!(
        reason(inn(
            &m,
            PacketSpec::tcp(PEER4, HOST4, 443, 40001, ACK | PSH)
                .seq_ack(5001, 1001)
                .payload(10)
                .build()
        )),
        Some(Reason::Established)
    );
    // Another port of the same peer is not part of it.
    assert_eq!(
        reason(inn(
            &m,
            PacketSpec::tcp(PEER4, HOST4, 444, 40001, ACK).build()
        )),
        Some(Reason::TcpNotSyn)
    );
    let key = fw_common::decide::ingress_key(
        &ip(&PacketSpec::tcp(PEER4, HOST4, 443, 40001, ACK).build()),
        443,
        40001,
    );
    // A RST with another sequence number than the next expected (5011) passes (the stack
    // ignores it or answers with a challenge ACK) and changes nothing.
    for seq in [5001, 5010, 5012, 0, 5011 + (1 << 31)] {
        let rst = PacketSpec::tcp(PEER4, HOST4, 443, 40001, RST)
            .seq_ack(seq, 0)
            .build();
        assert!(inn(&m, rst).pass);
        let st = m.flow(fw_common::FlowTable::Out, &key).unwrap();
        assert_eq!(st.state, state::ESTABLISHED, "after a RST at {seq}");
    }
    // The exact one ends the connection at once.
    let rst = PacketSpec::tcp(PEER4, HOST4, 443, 40001, RST)
        .seq_ack(5011, 0)
        .build();
    assert!(inn(&m, rst).pass);
    assert!(m.flow(fw_common::FlowTable::Out, &key).is_none());
    assert_eq!(
        reason(inn(
            &m,
            PacketSpec::tcp(PEER4, HOST4, 443, 40001, ACK).build()
        )),
        Some(Reason::TcpNotSyn)
    );
    assert!(m.flows.borrow().is_empty(), "closed entry removed");
}

fn ip(frame: &[u8]) -> fw_common::Ip {
    match fw_common::parse(frame) {
        Ok(fw_common::Parsed::Ip(ip)) => ip,
        other => panic!("{other:?}"),
    }
}

#[test]
fn inbound_connection_needs_the_right_handshake_ack() {
    let m = mirror();
    assert!(inn(&m, PacketSpec::syn(PEER4, HOST4, 80).build()).pass);
    // The host answers with SYN+ACK, seq 5000: the client must acknowledge 5001.
    out(
        &m,
        PacketSpec::tcp(HOST4, PEER4, 80, 40000, SYN | ACK)
            .seq_ack(5000, 2)
            .build(),
    );
    let blind = PacketSpec::tcp(PEER4, HOST4, 40000, 80, ACK)
        .seq_ack(2, 12345)
        .build();
    assert_eq!(
        reason(inn(&m, blind)),
        Some(Reason::TcpNotSyn),
        "blind ACK must not promote"
    );
    let good = PacketSpec::tcp(PEER4, HOST4, 40000, 80, ACK)
        .seq_ack(2, 5001)
        .build();
    assert_eq!(reason(inn(&m, good)), Some(Reason::Established));
    // Promoted: later data with any ack passes.
    let data = PacketSpec::tcp(PEER4, HOST4, 40000, 80, ACK | PSH)
        .seq_ack(2, 9999)
        .build();
    assert_eq!(reason(inn(&m, data)), Some(Reason::Established));
    assert_eq!(
        m.flows
            .borrow()
            .keys()
            .filter(|(t, _)| *t == fw_common::FlowTable::In)
            .count(),
        1
    );
    assert_eq!(
        m.flows
            .borrow()
            .keys()
            .filter(|(t, _)| *t == fw_common::FlowTable::Embryo)
            .count(),
        0
    );
}

#[test]
fn udp_and_ping_replies_and_expiry() {
    let m = mirror();
    assert!(!inn(&m, PacketSpec::udp(PEER4, HOST4, 53, 33333).build()).pass);
    out(&m, PacketSpec::udp(HOST4, PEER4, 33333, 53).build());
    assert_eq!(
        reason(inn(&m, PacketSpec::udp(PEER4, HOST4, 53, 33333).build())),
        Some(Reason::Established)
    );
    // Idle longer than the UDP timeout (120 s after a reply): gone.
    m.now.set(m.now.get() + 121_000_000_000);
    assert!(!inn(&m, PacketSpec::udp(PEER4, HOST4, 53, 33333).build()).pass);

    let echo = |ty: u8, id: u16, src: &str, dst: &str| {
        let mut f = PacketSpec::icmp(src, dst, ty, 0).build();
        let at = f.len() - 4;
        f[at..at + 2].copy_from_slice(&id.to_be_bytes());
        f
    };
    assert!(!inn(&m, echo(0, 7, PEER4, HOST4)).pass);
    out(&m, echo(8, 7, HOST4, PEER4));
    assert_eq!(
        reason(inn(&m, echo(0, 7, PEER4, HOST4))),
        Some(Reason::Established)
    );
    assert!(!inn(&m, echo(0, 8, PEER4, HOST4)).pass, "another echo id");
    out(&m, echo(128, 9, HOST6, PEER6));
    assert_eq!(
        reason(inn(&m, echo(129, 9, PEER6, HOST6))),
        Some(Reason::Established)
    );
}

#[test]
fn udp_server_replies_are_not_recorded() {
    let m = Mirror::new(policy("[[allow]]\nproto = \"udp\"\nports = [53]\n"));
    out(&m, PacketSpec::udp(HOST4, PEER4, 53, 40000).build());
    assert!(m.flows.borrow().is_empty());
}

/// An ICMP (v4) destination-unreachable/fragmentation-needed quoting a TCP packet from
/// `local:lport` to `remote:rport`, sent by `remote`'s router back to `local`.
fn icmp_error_v4(local: &str, remote: &str, lport: u16, rport: u16) -> Vec<u8> {
    let quoted = PacketSpec::tcp(local, remote, lport, rport, ACK).build();
    let inner = &quoted[14..14 + 20 + 8];
    let mut f = PacketSpec::icmp(remote, local, 3, 4)
        .payload(inner.len())
        .build();
    let start = f.len() - inner.len();
    f[start..].copy_from_slice(inner);
    f
}

fn icmp_error_v6(local: &str, remote: &str, lport: u16, rport: u16) -> Vec<u8> {
    let quoted = PacketSpec::udp(local, remote, lport, rport).build();
    let inner = &quoted[14..14 + 40 + 8];
    let mut f = PacketSpec::icmp(remote, local, 2, 0)
        .payload(inner.len())
        .build();
    let start = f.len() - inner.len();
    f[start..].copy_from_slice(inner);
    f
}

#[test]
fn icmp_errors_about_tracked_flows_are_related() {
    let m = mirror();
    assert_eq!(
        reason(inn(&m, icmp_error_v4(HOST4, PEER4, 40000, 443))),
        Some(Reason::IcmpUnrelated)
    );
    out(&m, PacketSpec::tcp(HOST4, PEER4, 40000, 443, SYN).build());
    assert_eq!(
        reason(inn(&m, icmp_error_v4(HOST4, PEER4, 40000, 443))),
        Some(Reason::Related)
    );
    assert_eq!(
        reason(inn(&m, icmp_error_v4(HOST4, PEER4, 40001, 443))),
        Some(Reason::IcmpUnrelated)
    );
    // IPv6 packet too big about a UDP flow.
    assert_eq!(
        reason(inn(&m, icmp_error_v6(HOST6, PEER6, 5000, 4433))),
        Some(Reason::IcmpUnrelated)
    );
    out(&m, PacketSpec::udp(HOST6, PEER6, 5000, 4433).build());
    assert_eq!(
        reason(inn(&m, icmp_error_v6(HOST6, PEER6, 5000, 4433))),
        Some(Reason::Related)
    );
}

#[test]
fn stateless_policy_lets_acks_to_open_ports_through() {
    let t = policy(
        "[options]\nestablished = false\nnew_requires_syn = false\n[[allow]]\nports = [80]\n",
    );
    assert!(
        decide(
            PacketSpec::tcp(PEER4, HOST4, 1, 80, ACK).build().as_slice(),
            &t
        )
        .pass
    );
    assert!(
        !decide(
            PacketSpec::tcp(PEER4, HOST4, 1, 81, ACK).build().as_slice(),
            &t
        )
        .pass
    );
    assert!(!decide(icmp_error_v4(HOST4, PEER4, 1, 2).as_slice(), &t).pass);
}

#[test]
fn without_strict_flags_invalid_combinations_are_judged_by_ports_like_conntrack_invalid() {
    let t = policy("[options]\nstrict_tcp_flags = false\n[[allow]]\nports = [80]\n");
    let d = |port: u16, f: u8| {
        decide(
            PacketSpec::tcp(PEER4, HOST4, 1, port, f).build().as_slice(),
            &t,
        )
    };
    // The seed's iptables: INVALID is neither ESTABLISHED nor NEW, so the port ACCEPT takes it.
    assert_eq!(d(80, SYN | FIN), Decision::rule(rule_slot(0, 0)));
    assert_eq!(reason(d(81, SYN | FIN)), Some(Reason::DefaultDrop));
    assert_eq!(d(80, FIN | PSH | URG), Decision::rule(rule_slot(0, 0)));
    // A valid non-SYN packet without a connection is still dropped (new_requires_syn).
    assert_eq!(reason(d(80, ACK)), Some(Reason::TcpNotSyn));
    assert_eq!(reason(d(80, 0)), Some(Reason::TcpNull));
}

#[test]
fn a_client_refusing_our_syn_ack_with_rst_gets_through_and_ends_the_embryo() {
    let m = mirror();
    let rst = || {
        PacketSpec::tcp(PEER4, HOST4, 40000, 80, RST)
            .seq_ack(2, 0)
            .build()
    };
    assert_eq!(
        reason(inn(&m, rst())),
        Some(Reason::TcpNotSyn),
        "no embryo yet"
    );
    out(
        &m,
        PacketSpec::tcp(HOST4, PEER4, 80, 40000, SYN | ACK)
            .seq_ack(5000, 2)
            .build(),
    );
    assert_eq!(reason(inn(&m, rst())), Some(Reason::Established));
    assert!(m.flows.borrow().is_empty(), "the embryo is gone");
    assert_eq!(reason(inn(&m, rst())), Some(Reason::TcpNotSyn));
}
