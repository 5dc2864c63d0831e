//! Structural cases: the IPv4 header — versions, lengths, options, malformed fields.

use super::prelude::*;

/// IPv4 header.
pub fn header(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    let uport = e.udp_port();
    let uok = e.udp_ok();
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
}
