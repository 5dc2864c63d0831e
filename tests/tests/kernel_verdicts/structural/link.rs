//! Structural cases: the link layer — non-IP frames, and Ethernet headers cut short.

use super::prelude::*;

/// Link layer: non-IP always passes; the link needs it.
pub fn cases(t: &mut Table, _: &Env) {
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
}
