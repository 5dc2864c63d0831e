//! Structural cases: DHCP and DHCPv6 replies to this host's client (`dhcp_client`).

use super::prelude::*;

/// DHCP replies to this host's client.
pub fn replies(t: &mut Table, e: &Env) {
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
}
