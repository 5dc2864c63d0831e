//! The tables of whole policies: the structural cases, plus each rule's ports and what is
//! special about the policy (the seed's scans, source restrictions, every option changed).

use std::net::IpAddr;

use fw_common::{Reason, tcp};
use fw_lab::{
    fixtures::SEED_RULES,
    frames::{Ext, FragSpec, PacketSpec, v6_chain},
};
use fw_policy::Policy;
use fw_testrun::Expect::{Is, Rule};

use crate::{
    env::Env,
    structural::structural,
    table::{D4, D6, S4, S6, Table, syn4, syn6},
};

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

pub fn seed_table(p: &Policy) -> Table {
    let e = Env::of(p);
    let mut t = structural(&e);
    open_ports(&mut t, &e, &SEED_RULES);
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

pub fn ssh_from(src: &str, dport: u16) -> Vec<u8> {
    let dst = if src.parse::<IpAddr>().unwrap().is_ipv4() {
        D4
    } else {
        D6
    };
    PacketSpec::syn(src, dst, dport).build()
}

pub fn restricted_table(p: &Policy) -> Table {
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

pub fn options_table(p: &Policy) -> Table {
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
