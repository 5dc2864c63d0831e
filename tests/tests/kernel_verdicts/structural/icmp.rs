//! Structural cases: ICMP and ICMPv6 messages (echo, neighbour discovery, MLD), and ICMP
//! errors with their quotes.

use super::prelude::*;

/// ICMP.
pub fn messages(t: &mut Table, e: &Env) {
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
}

/// ICMP errors: they quote a packet this host sent; RELATED only if its flow is tracked
/// (never here: the flow tables are empty), and a malformed quote is a malformed packet.
pub fn errors(t: &mut Table, e: &Env) {
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
}
